"""Running the networks for inference, the same way everywhere: Triton's backend, benchmarks,
evaluation and the in-process scorer.

* :class:`CachedTokenizer` — the tokenisation used by Triton's backend, training and evaluation:
  each distinct text is tokenised once (catalog item texts repeat in every request) and pairs
  are assembled in numpy, with exactly the ids, truncation and padding of the Hugging Face
  call (:func:`tokenize_pairs`, :func:`tokenize_texts`; a test checks they agree). Measured on
  a 2-core CPU it is several times faster than the Hugging Face call, whose Python-side
  tensor conversion alone costs about as much as the student network;
* :class:`Runner` — a module on its device and precision under ``torch.inference_mode``:
  ``fp32``, ``bf16``/``fp16`` autocast (bf16 is the GPU default; on CPUs with native bf16,
  such as AVX512-BF16 or AMX, it is also the fast choice for the student) and an optional
  ``torch.compile``;
* :class:`Scorer` — the interface the serving code calls (the Triton client in ``serving/``
  and :class:`InProcessScorer` here implement it).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Literal, Protocol

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BatchEncoding, PreTrainedTokenizerBase

from streamrec.model.networks import CrossEncoderScorer, TextEncoder
from streamrec.model.precision import PRECISIONS, Precision, cpu_facts, cpu_precision



def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, contexts: list[str], items: list[str], max_length: int
) -> BatchEncoding:
    """``[CLS] context [SEP] item [SEP]``, padded to the longest pair, cut to ``max_length``
    (the longer side loses tokens first)."""
    return tokenizer(
        contexts,
        items,
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=True,
    )


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> BatchEncoding:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _truncated_lengths(a: int, b: int, budget: int) -> tuple[int, int]:
    """Lengths kept by the ``longest_first`` strategy of Hugging Face ``tokenizers`` for a pair."""
    if a + b <= budget:
        return a, b
    n1, n2 = (a, b) if a <= b else (b, a)
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n1, n2) if a <= b else (n2, n1)


class CachedTokenizer:
    """BERT tokenisation of texts and (context, item) pairs with a cache of token ids per text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, *, cache_size: int = 200_000) -> None:
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.max_length = max_length
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, one list per text (cached, least recently used evicted)."""
        cache = self._cache
        missing = list(dict.fromkeys(text for text in texts if text not in cache))
        fresh = {}
        if missing:
            encoded = self._backend.encode_batch(missing, add_special_tokens=False)
            fresh = {text: encoding.ids for text, encoding in zip(missing, encoded)}
        out = []
        for text in texts:
            ids = fresh.get(text)
            if ids is None:
                ids = cache[text]
                cache.move_to_end(text)
            out.append(ids)
        cache.update(fresh)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)
        return out

    def pairs(self, contexts: list[str], items: list[str]) -> dict[str, torch.Tensor]:
        """``[CLS] context [SEP] item [SEP]`` like :func:`tokenize_pairs`."""
        if len(contexts) != len(items):
            raise ValueError(f"{len(contexts)} contexts for {len(items)} items")
        budget = self.max_length - 3
        left, right = self.ids(contexts), self.ids(items)
        kept = [_truncated_lengths(len(a), len(b), budget) for a, b in zip(left, right)]
        width = max((n1 + n2 + 3 for n1, n2 in kept), default=3)
        input_ids = np.full((len(kept), width), self.pad_id, dtype=np.int64)
        token_types = np.zeros((len(kept), width), dtype=np.int64)
        mask = np.zeros((len(kept), width), dtype=np.int64)
        for row, ((n1, n2), a, b) in enumerate(zip(kept, left, right)):
            sequence = [self.cls_id, *a[:n1], self.sep_id, *b[:n2], self.sep_id]
            input_ids[row, : len(sequence)] = sequence
            token_types[row, n1 + 2 : len(sequence)] = 1
            mask[row, : len(sequence)] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(token_types),
        }

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``[CLS] text [SEP]`` like :func:`tokenize_texts`."""
        encoded = self.ids(texts)
        budget = self.max_length - 2
        width = max((min(len(ids), budget) + 2 for ids in encoded), default=2)
        input_ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, ids in enumerate(encoded):
            sequence = [self.cls_id, *ids[:budget], self.sep_id]
            input_ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.zeros_like(torch.from_numpy(input_ids)),
        }


class Runner:
    """A module ready for inference on one device, in one precision.

    ``precision="auto"`` (the default) is settled for the device: bf16 on a GPU that supports
    it; on a CPU bf16 only where the processor computes it natively, else fp32
    (:mod:`streamrec.model.precision`).
    """

    def __init__(
        self,
        module: TextEncoder | CrossEncoderScorer,
        *,
        device: str | torch.device = "cpu",
        precision: Precision | Literal["auto"] | None = None,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device)
        requested = precision or "auto"
        if requested not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {PRECISIONS} or auto, not {requested!r}")
        self.precision: Precision = requested if requested != "auto" else self._auto_precision()  # type: ignore[assignment]
        self.module = module.to(self.device).eval()
        self._forward = torch.compile(self.module, dynamic=True) if compile else self.module

    def _auto_precision(self) -> Precision:
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return cpu_precision(cpu_facts()[1])

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        names = ("input_ids", "attention_mask", "token_type_ids")
        if isinstance(self.module, TextEncoder):
            names = names[:2]
        with torch.inference_mode(), self._autocast():
            outputs = self._forward(**{name: inputs[name].to(self.device) for name in names})
        return outputs.float().cpu().numpy()


class Scorer(Protocol):
    """Relevance logits of candidate items for one user context (one score per item)."""

    async def score(self, context: str, items: list[str]) -> np.ndarray: ...


class InProcessScorer:
    """The scorer in this process: the reference the served scores are checked against."""

    def __init__(
        self,
        module: CrossEncoderScorer,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int = 128,
        device: str | torch.device = "cpu",
        precision: Precision | None = None,
    ) -> None:
        self.runner = Runner(module, device=device, precision=precision)
        self.tokenizer = tokenizer
        self.max_length = max_length
        # The backend's tokenisation (ids cached per text, equal to ``tokenize_pairs``, which a
        # unit test checks): the Hugging Face call alone caps a 2-core CPU near 1,800 pairs/s.
        self.tokens = CachedTokenizer(tokenizer, max_length)

    def score_pairs(self, contexts: list[str], items: list[str]) -> np.ndarray:
        if not items:
            return np.zeros(0, np.float32)
        return self.runner(self.tokens.pairs(contexts, items)).astype(np.float32)

    async def score(self, context: str, items: list[str]) -> np.ndarray:
        return self.score_pairs([context] * len(items), items)
