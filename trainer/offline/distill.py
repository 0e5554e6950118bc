"""A small student cross-encoder for CPU serving, distilled from the fine-tuned teacher.

The student is the same :class:`~streamrec.model.networks.CrossEncoderScorer` on a smaller BERT
(default 2 layers, hidden 128, 2 heads, intermediate 512; same vocabulary and tokenizer). Its
embeddings start as the teacher's projected onto their top principal directions, so it begins
with the teacher's notion of which word pieces are alike; the transformer layers start random.

Distillation runs in two phases: the teacher scores a fixed set of training groups once
(positive, in-batch, co-visited, popular and, when given, first-stage retrieved items), then the
student is trained on those logits for several epochs with MSE on the logits plus a listwise KL
term (the order within a group is what re-ranking uses), early-stopped on validation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from streamrec.datasets.sequences import Example
from trainer.offline.finetune import (
    ContextWriter,
    FinetuneConfig,
    NegativeSampler,
    Say,
    TrainingTexts,
    TrainReport,
    scorer_groups,
    train_loop,
)
from streamrec.model.inference import CachedTokenizer, Runner
from streamrec.model.networks import CrossEncoderScorer




@dataclass
class DistillConfig:
    lr: float = 3e-4
    """Higher than fine-tuning: the student's layers start from random."""
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    batch_size: int = 32
    """Groups per step."""
    epochs: float = 6.0
    max_minutes: float | None = None
    max_length: int = 64
    context_budget: int = 40
    queries: int = 2500
    """Training examples the teacher scores (one group each)."""
    retrieved: int = 8
    """First-stage candidates added to each group (when retrieval is given)."""
    kl_weight: float = 1.0
    temperature: float = 1.0
    eval_every: int = 200
    patience: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeacherTargets:
    contexts: list[str]
    groups: list[list[int]]
    logits: list[np.ndarray]


def teacher_targets(
    teacher: CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    data: TrainingTexts,
    config: DistillConfig,
    sampler_config: FinetuneConfig,
    *,
    retrieve: Callable[[Sequence[Example]], list[list[int]]] | None = None,
    say: Say = print,
) -> TeacherTargets:
    """The teacher's logits for one group per sampled training example (scored once)."""
    rng = np.random.default_rng(config.seed)
    chosen = [examples[i] for i in rng.choice(len(examples), size=min(config.queries, len(examples)), replace=False)]
    sampler = NegativeSampler(data.covisit, data.popularity, sampler_config)
    contexts_of = ContextWriter(data.titles, tokenizer, config.context_budget)
    groups: list[list[int]] = []
    for start in range(0, len(chosen), sampler_config.batch_size):
        groups.extend(scorer_groups(list(chosen[start : start + sampler_config.batch_size]), sampler, sampler_config, rng))
    if retrieve is not None and config.retrieved:
        for group, candidates in zip(groups, retrieve(chosen)):
            group.extend(i for i in candidates[: config.retrieved] if i not in group)
    contexts = [contexts_of(example.history) for example in chosen]
    tokens = CachedTokenizer(tokenizer, config.max_length)
    runner = Runner(teacher, device=next(teacher.parameters()).device, precision="bf16")
    pair_contexts = [c for c, g in zip(contexts, groups) for _ in g]
    pair_items = [data.item_texts[i] for g in groups for i in g]
    scores = np.concatenate(
        [runner(tokens.pairs(pair_contexts[s : s + 256], pair_items[s : s + 256])) for s in range(0, len(pair_items), 256)]
    )
    say(f"distill: teacher scored {len(pair_items):,} pairs for {len(groups):,} groups")
    logits, start = [], 0
    for group in groups:
        logits.append(scores[start : start + len(group)])
        start += len(group)
    return TeacherTargets(contexts, groups, logits)


def distill_scorer(
    student: CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    targets: TeacherTargets,
    data: TrainingTexts,
    config: DistillConfig,
    *,
    validate: Callable[[], float] | None = None,
    say: Say = print,
) -> TrainReport:
    tokens = CachedTokenizer(tokenizer, config.max_length)
    device = next(student.parameters()).device
    loop = FinetuneConfig(
        lr=config.lr,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        epochs=config.epochs,
        max_minutes=config.max_minutes,
        eval_every=config.eval_every,
        patience=config.patience,
        precision="fp32",
        seed=config.seed,
        head_lr=None,
        freeze_word_embeddings=False,  # the projected embeddings are a start, not the answer
    )

    def step_loss(batch: list[int], rng: np.random.Generator) -> torch.Tensor:
        pair_contexts = [targets.contexts[g] for g in batch for _ in targets.groups[g]]
        pair_items = [data.item_texts[i] for g in batch for i in targets.groups[g]]
        logits = student(**{k: v.to(device) for k, v in tokens.pairs(pair_contexts, pair_items).items()}).float()
        teacher = torch.from_numpy(np.concatenate([targets.logits[g] for g in batch])).to(device)
        loss = nn.functional.mse_loss(logits, teacher)
        start, kl = 0, torch.zeros((), device=device)
        for g in batch:
            size = len(targets.groups[g])
            s = logits[start : start + size] / config.temperature
            t = teacher[start : start + size] / config.temperature
            kl = kl + nn.functional.kl_div(s.log_softmax(0), t.log_softmax(0), log_target=True, reduction="sum")
            start += size
        return loss + config.kl_weight * kl / len(batch)

    indices = list(range(len(targets.groups)))
    return train_loop(student, step_loss, indices, loop, validate=validate, say=say, label="student")  # type: ignore[arg-type]
