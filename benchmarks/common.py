"""Shared pieces of the benchmarks: an isolated local stack, machine facts, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streamrec.kafka_admin import create_topics
from streamrec.settings import Settings, StackSettings
from streamrec.stack import LocalStack
from streamrec.stack.process import free_port

PORT_FIELDS = (
    "kafka_port",
    "kafka_controller_port",
    "redis_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
)


@contextmanager
def isolated_stack(**stack_overrides) -> Iterator[Settings]:
    """A fresh Kafka/Redis/Triton on free ports in a temporary folder (never a developer's stack)."""
    # SIGTERM (a timeout, Ctrl-C from a supervisor) must still run the `finally` that stops the stack.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as folder:
        ports = {name: free_port() for name in PORT_FIELDS}
        stack_settings = StackSettings(state_dir=Path(folder) / "state", **{**ports, **stack_overrides})
        stack = LocalStack(stack_settings, say=lambda message: print(f"  · {message}"))
        try:
            stack.up()
            settings = Settings(stack=stack_settings)
            create_topics(settings)
            yield settings
        finally:
            stack.down()


def stack_environment(settings: Settings) -> dict[str, str]:
    """Environment for a `streamrec` subprocess that should use ``settings``' stack."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMREC_")}
    for name in ("state_dir", *PORT_FIELDS):
        env[f"STREAMREC_STACK__{name.upper()}"] = str(getattr(settings.stack, name))
    env["STREAMREC_STACK__MODEL_REPO"] = str(settings.stack.model_repo)
    return env


def machine() -> dict[str, object]:
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "gpu": "none",
        "date": time.strftime("%Y-%m-%d"),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def write_json(path: str | None, metrics: dict[str, float], **extra: object) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"metrics": metrics, **extra}, indent=2, default=str) + "\n")
