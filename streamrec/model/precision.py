"""Which numeric precision a model runs in, chosen for the processor it runs on, at load time.

bf16 autocast is fast only where the processor computes bf16 natively (AVX512-BF16 or AMX on
x86): on a machine of the same kind with AVX2 alone the student scorer ran 5x slower in bf16
than in fp32 (90 against 473 pairs/s), and on one with AVX512-BF16 it ran 1,150 pairs/s in
bf16. So ``auto`` never assumes: on a CPU it is bf16 only where the flags say the processor has
it, fp32 otherwise; on a GPU, bf16 where the device supports it. The choice depends on the
machine alone, never on a timing, so every process on one machine (Triton, the trainer, a test's
in-process reference) settles on the same precision and their scores agree.
"""

from __future__ import annotations

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


def cpu_precision(flags: frozenset[str] | set[str]) -> Precision:
    """bf16 where the processor computes it natively, fp32 otherwise."""
    return "bf16" if NATIVE_BF16 & set(flags) else "fp32"
