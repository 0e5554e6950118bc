"""Guardrail counts of served lists per experiment and variant (``xg:{experiment}:{variant}``).

The recs worker and the API add every list they serve: how many, how many degraded (the scorer
missed its budget or was down), how many empty, and a histogram of the time to compute it. The
experiment report reads them to show that a variant that wins on clicks does not do so by being
slow or broken. Written outside any transaction (a crash may lose a few counts; these are
operational figures, not the experiment's outcome).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from streamrec.store import layout

log = logging.getLogger(__name__)
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass(frozen=True)
class ServedList:
    experiment: str
    variant: str
    degraded: bool
    empty: bool
    seconds: float


@dataclass(frozen=True)
class Guardrails:
    lists: int
    degraded: int
    empty: int
    p99_ms: float  # the upper bound of the bucket holding the 99th percentile (inf past the last)

    @property
    def degraded_share(self) -> float:
        return self.degraded / self.lists if self.lists else 0.0

    @property
    def empty_share(self) -> float:
        return self.empty / self.lists if self.lists else 0.0


def bucket_of(seconds: float) -> str:
    ms = seconds * 1000
    return next((f"le{bound}" for bound in LATENCY_BUCKETS_MS if ms <= bound), "le_inf")


class GuardrailStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def add(self, served: list[ServedList]) -> None:
        """Count ``served``; a Redis error is logged, never raised: a list already delivered (or
        about to be answered) must not be retried or degraded for want of a guardrail count."""
        if not served:
            return
        try:
            await self._add(served)
        except RedisError as error:
            log.warning("%d guardrail samples not counted: %s", len(served), error)

    async def _add(self, served: list[ServedList]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in served:
                key = layout.guardrails_key(entry.experiment, entry.variant)
                pipe.hincrby(key, "lists", 1)
                if entry.degraded:
                    pipe.hincrby(key, "degraded", 1)
                if entry.empty:
                    pipe.hincrby(key, "empty", 1)
                pipe.hincrby(key, bucket_of(entry.seconds), 1)
            await pipe.execute()

    async def read(self, experiment: str, variant: str) -> Guardrails:
        raw = {key.decode(): int(value) for key, value in (await self._redis.hgetall(layout.guardrails_key(experiment, variant))).items()}
        lists = raw.get("lists", 0)
        p99 = 0.0
        if lists:
            cumulative, target = 0, math.ceil(0.99 * lists)
            p99 = math.inf
            for bound in LATENCY_BUCKETS_MS:
                cumulative += raw.get(f"le{bound}", 0)
                if cumulative >= target:
                    p99 = float(bound)
                    break
        return Guardrails(lists, raw.get("degraded", 0), raw.get("empty", 0), p99)
