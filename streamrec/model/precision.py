"""Which numeric precision a model runs in, chosen for the processor it runs on, at load time.

bf16 autocast is fast only where the processor computes bf16 natively (AVX512-BF16 or AMX on
x86): on a machine of the same kind with AVX2 alone the student scorer ran 5x slower in bf16
than in fp32 (90 against 473 pairs/s). So ``auto`` never assumes: on a CPU it tries bf16 only
when the flags say the processor has it, times a short warm-up in each candidate precision and
keeps the faster; on a GPU it takes bf16 where the device supports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_facts() -> tuple[str, frozenset[str]]:
    """The CPU model name and its flags, from /proc/cpuinfo (empty where there is none)."""
    model, flags = "unknown", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_candidates(flags: frozenset[str] | set[str]) -> list[Precision]:
    """Precisions worth timing on a CPU with these flags: fp32 always, bf16 only where native."""
    return ["fp32", "bf16"] if NATIVE_BF16 & set(flags) else ["fp32"]


def fastest(candidates: Sequence[Precision], run: Callable[[Precision], object], *, repeats: int = 3) -> Precision:
    """The candidate whose best of ``repeats`` timed runs (after one untimed run each) is shortest."""
    if len(candidates) == 1:
        return candidates[0]
    timings: dict[Precision, float] = {}
    for precision in candidates:
        run(precision)  # warm-up: first calls allocate and pick kernels
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            run(precision)
            best = min(best, time.perf_counter() - started)
        timings[precision] = best
    return min(candidates, key=lambda precision: (timings[precision], candidates.index(precision)))
