"""CPU precision is chosen at load time from what the processor supports, never assumed, and the
same way in every process on one machine (so served and in-process scores agree)."""

from __future__ import annotations

import pytest
import torch

from streamrec.model import inference, precision
from streamrec.model.networks import CrossEncoderScorer, load_backbone, tiny_bert_config

AVX2_ONLY = frozenset({"avx", "avx2", "fma"})
NATIVE_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})


def test_bf16_only_where_the_processor_has_it():
    assert precision.cpu_precision(AVX2_ONLY) == "fp32"
    assert precision.cpu_precision(NATIVE_BF16) == "bf16"
    assert precision.cpu_precision({"avx2", "amx_bf16"}) == "bf16"
    assert precision.cpu_precision(set()) == "fp32"


def test_this_machines_facts_are_read():
    model, flags = precision.cpu_facts()
    assert model and isinstance(flags, frozenset)


def _runner(**options) -> inference.Runner:
    torch.manual_seed(0)
    return inference.Runner(CrossEncoderScorer(load_backbone(config=tiny_bert_config())), **options)


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 2000, (8, 12))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "fp32"), (NATIVE_BF16, "bf16")])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(inference, "cpu_facts", lambda: ("a CPU", flags))
    runner = _runner()
    assert runner.precision == expected
    assert runner(_inputs()).shape == (8,)


def test_a_fixed_precision_is_kept_and_a_wrong_one_refused(monkeypatch):
    monkeypatch.setattr(inference, "cpu_facts", lambda: ("a CPU", NATIVE_BF16))
    assert _runner(precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        _runner(precision="int4")
