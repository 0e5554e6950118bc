"""Shared pieces of the benchmarks: an isolated local stack, machine facts, medians, JSON output."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streamrec.kafka_admin import create_topics
from streamrec.settings import Settings
from streamrec.stack import LocalStack
from streamrec.stack.isolated import isolated_stack_settings

@contextmanager
def isolated_stack(say=print, **stack_overrides) -> Iterator[Settings]:
    """A fresh Kafka/Redis/Triton on free ports in a temporary folder (never a developer's stack)."""
    # SIGTERM (a timeout, Ctrl-C from a supervisor) must still run the `finally` that stops the stack.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as folder:
        stack_settings = isolated_stack_settings(Path(folder) / "state", **stack_overrides)
        stack = LocalStack(stack_settings, say=lambda message: say(f"  · {message}"))
        try:
            stack.up()
            settings = Settings(stack=stack_settings)
            if "kafka" in stack_settings.services:
                create_topics(settings)
            yield settings
        finally:
            stack.down()


def machine() -> dict[str, object]:
    """Where a figure was measured: CPU model and the flags that decide precision, cores, memory,
    Python, GPU, date."""
    from streamrec.model.precision import FLAGS_THAT_MATTER, cpu_facts

    cpu, flags = cpu_facts()
    return {
        "cpu": cpu if cpu != "unknown" else platform.processor() or platform.machine(),
        "cpu_flags": " ".join(flag for flag in FLAGS_THAT_MATTER if flag in flags) or "none of " + " ".join(FLAGS_THAT_MATTER),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **_torch_facts(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _torch_facts() -> dict[str, object]:
    """GPU name and torch details when this benchmark uses torch (never imported just for this)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"gpu": "none"}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"gpu": gpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def median(values: list[float]) -> float:
    return statistics.median(values)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (no interpolation: a reported p99 was observed)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def verdict(name: str, value: float, targets: dict[str, float], lower: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(target as text, met or missed) for a metric; lower is better for latencies (``_ms``) and ``lower``."""
    target = targets.get(name)
    if target is None:
        return "-", ""
    lower_is_better = name.endswith("_ms") or name in lower
    met = value <= target if lower_is_better else value >= target
    return f"{'≤' if lower_is_better else '≥'} {target:,}", "[green]met[/green]" if met else "[red]missed[/red]"


def print_report(
    title: str, runs: dict[str, list[float]], metrics: dict[str, float], targets: dict[str, float],
    lower: frozenset[str] = frozenset(),
) -> None:
    """One row per metric: each run, the median, the target and whether it was met (``lower``: lower is better)."""
    table = Table(title=title)
    width = max((len(values) for values in runs.values()), default=0)
    table.add_column("metric")
    for column in (*(f"run {n + 1}" for n in range(width)), "median", "target"):
        table.add_column(column, justify="right")
    table.add_column("")
    for name, value in metrics.items():
        seconds = name.endswith(("_ms", "_s")) and "_per_" not in name  # durations, not rates per second
        fmt = "{:,.1f}" if seconds else ("{:.3f}" if "_vs_" in name or "_over_" in name or "share" in name else "{:,.0f}")
        values = runs.get(name, [])
        cells = [fmt.format(v) for v in values] + [""] * (width - len(values))
        table.add_row(name, *cells, fmt.format(value), *verdict(name, value, targets, lower))
    Console(highlight=False).print(table)


def write_json(path: str | Path | None, metrics: dict[str, float], **extra: object) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"metrics": metrics, **extra}, indent=2, default=str) + "\n")


async def open_loop_latencies(call: Callable[[int], Awaitable[object]], count: int, rate: float) -> list[float]:
    """Seconds per call of ``count`` calls started at ``rate`` per second, each timed from its
    scheduled start (open loop: a slow server makes later calls wait, and that wait counts)."""
    latencies: list[float] = []

    async def timed(index: int, scheduled: float) -> None:
        await call(index)
        latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter() + 0.05
    tasks = []
    for index in range(count):
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(timed(index, scheduled)))
    await asyncio.gather(*tasks)
    return latencies
