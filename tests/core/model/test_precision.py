"""CPU precision is chosen at load time from what the processor supports and what a warm-up
measures, never assumed."""

from __future__ import annotations

import time

import torch

from streamrec.model import inference, precision
from streamrec.model.networks import CrossEncoderScorer, load_backbone, tiny_bert_config

AVX2_ONLY = frozenset({"avx", "avx2", "fma"})
NATIVE_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})


def test_bf16_is_tried_only_where_the_processor_has_it():
    assert precision.cpu_candidates(AVX2_ONLY) == ["fp32"]
    assert precision.cpu_candidates(NATIVE_BF16) == ["fp32", "bf16"]
    assert precision.cpu_candidates({"amx_bf16"}) == ["fp32", "bf16"]


def test_fastest_keeps_the_candidate_that_measured_faster():
    delays = {"fp32": 0.004, "bf16": 0.0005}
    calls = []

    def run(choice):
        calls.append(choice)
        time.sleep(delays[choice])

    assert precision.fastest(["fp32", "bf16"], run, repeats=2) == "bf16"
    assert calls.count("fp32") == calls.count("bf16") == 3  # one warm-up and two timed runs each
    delays.update(fp32=0.0005, bf16=0.004)
    assert precision.fastest(["fp32", "bf16"], run, repeats=2) == "fp32"
    assert precision.fastest(["fp32"], lambda choice: (_ for _ in ()).throw(AssertionError("timed")), repeats=2) == "fp32"


def _runner(**options) -> inference.Runner:
    torch.manual_seed(0)
    return inference.Runner(CrossEncoderScorer(load_backbone(config=tiny_bert_config())), **options)


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 2000, (8, 12))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def test_auto_on_an_avx2_only_cpu_runs_fp32(monkeypatch):
    monkeypatch.setattr(inference, "cpu_facts", lambda: ("AMD EPYC (AVX2 only)", AVX2_ONLY))
    runner = _runner()
    assert runner.precision is None
    scores = runner(_inputs())
    assert runner.precision == "fp32" and scores.shape == (8,)


def test_auto_with_native_bf16_times_both_and_keeps_its_choice(monkeypatch):
    monkeypatch.setattr(inference, "cpu_facts", lambda: ("Xeon with AVX512-BF16", NATIVE_BF16))
    timed = []
    monkeypatch.setattr(inference, "fastest", lambda candidates, run: timed.append(list(candidates)) or "bf16")
    runner = _runner()
    runner(_inputs())
    runner(_inputs())
    assert timed == [["fp32", "bf16"]] and runner.precision == "bf16"


def test_a_fixed_precision_is_never_timed(monkeypatch):
    monkeypatch.setattr(inference, "fastest", lambda *args: (_ for _ in ()).throw(AssertionError("timed")))
    runner = _runner(precision="fp32")
    runner(_inputs())
    assert runner.precision == "fp32"
