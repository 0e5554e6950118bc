"""Rate limits shared by every replica of a service: one Redis function call per check.

The limit is GCRA (see ``streamrec_rate_limit`` in ``streamrec/store/functions.lua``): a rate
per second and a burst, kept in Redis as one number per limit and subject (a key id or a client
address, :func:`streamrec.store.layout.rate_limit_key`), read and updated in one call on
Redis's clock, so replicas agree without talking to each other and a key never spans two
Redis Cluster slots.

**Fails open.** A limiter that cannot reach Redis lets the request through and says so
(``Verdict.checked`` is False; the services count these in
``streamrec_rate_limit_unchecked_total``): turning every request into an error while Redis is
away would make the limiter an outage of its own. After a failure it stops asking for
``pause_s``, so requests do not each wait for Redis's timeout meanwhile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from streamrec.store import functions
from streamrec.store.layout import rate_limit_key


@dataclass(frozen=True)
class Rate:
    """``per_s`` requests a second on average, ``burst`` at once; a rate of 0 is unlimited."""

    per_s: float
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_s <= 0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0  # whole seconds, at least 1 when refused (HTTP Retry-After)
    checked: bool = True  # False: Redis did not answer and the request was let through


class RateLimiter:
    def __init__(self, client: redis.Redis, *, pause_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = client
        self._pause_s = pause_s
        self._clock = clock
        self._paused_until = 0.0

    async def hit(self, limit: str, subject: str, rate: Rate) -> Verdict:
        """Count one request of ``subject`` against ``limit``."""
        if rate.unlimited:
            return Verdict(True)
        if self._clock() < self._paused_until:
            return Verdict(True, checked=False)
        interval_us = max(1, round(1_000_000 / rate.per_s))
        key = rate_limit_key(limit, subject)
        try:
            try:
                allowed, wait_us = await self._redis.fcall(functions.RATE_LIMIT, 1, key, interval_us, rate.burst)
            except ResponseError as error:
                if "function not found" not in str(error).lower():
                    raise
                await functions.load_functions(self._redis)
                allowed, wait_us = await self._redis.fcall(functions.RATE_LIMIT, 1, key, interval_us, rate.burst)
        except (RedisError, OSError, TimeoutError):
            self._paused_until = self._clock() + self._pause_s
            return Verdict(True, checked=False)
        if allowed:
            return Verdict(True)
        return Verdict(False, retry_after_s=max(1, math.ceil(int(wait_us) / 1_000_000)))
