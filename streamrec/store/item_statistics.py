"""Item statistics in Redis: decayed popularity (``is:{item}``, ranked in ``z:pop:short``) and
co-visitation neighbours (``cv:{item}``).

The streams worker applies a batch's observations inside its transaction, in one function
call that receives every key it touches; serving reads neighbours and trending through the
:class:`~streamrec.ranking.candidates.SignalStore` methods :meth:`ItemStatistics.covisit` and
:meth:`ItemStatistics.trending`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from streamrec.store import functions, layout


@dataclass
class ItemObservations:
    """What one batch adds to the item statistics."""

    events: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # item -> [ts, w, ts, w, ...]
    covisits: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # item -> neighbour -> count

    def add(self, item_id: str, ts: int, weight: float, neighbours: Sequence[str]) -> None:
        """One applied interaction; each co-visit counts for both items."""
        self.events[item_id] += [ts, weight]
        for neighbour in neighbours:
            self.covisits[item_id][neighbour] += 1
            self.covisits[neighbour][item_id] += 1


class ItemStatistics:
    def __init__(self, client: redis.Redis, *, trending_ttl_s: float = 1.0) -> None:
        self._redis = client
        self._trending_ttl_s = trending_ttl_s
        self._trending: tuple[float, int, list[str]] = (0.0, 0, [])  # (read at, count, items)

    @staticmethod
    def apply_arguments(
        observations: ItemObservations, *, tau_short_ms: float, tau_long_ms: float, top_n: int
    ) -> tuple[list[str], bytes]:
        """(KEYS, ARGV[1]) of ``streamrec_apply_statistics`` for these observations."""
        popular = list(observations.events)
        sources = list(observations.covisits)
        keys = [
            layout.POPULARITY_SHORT_KEY,
            *(layout.item_stats_key(item_id) for item_id in popular),
            *(layout.covisit_key(item_id) for item_id in sources),
        ]
        argument = orjson.dumps(
            {
                "tau_s": tau_short_ms,
                "tau_l": tau_long_ms,
                "top_n": top_n,
                "fields": layout.POPULARITY_FIELDS,
                "pop": [[item_id, observations.events[item_id]] for item_id in popular],
                "cv": [
                    [value for neighbour, count in observations.covisits[item_id].items() for value in (neighbour, count)]
                    for item_id in sources
                ],
            }
        )
        return keys, argument

    def queue_apply(
        self, pipe: Pipeline, observations: ItemObservations, *, tau_short_ms: float, tau_long_ms: float, top_n: int
    ) -> None:
        """Queue the batch's popularity and co-visits onto its transaction (one function call)."""
        if not observations.events and not observations.covisits:
            return
        keys, argument = self.apply_arguments(observations, tau_short_ms=tau_short_ms, tau_long_ms=tau_long_ms, top_n=top_n)
        pipe.fcall(functions.APPLY_STATISTICS, len(keys), *keys, argument)

    async def covisit(self, item_ids: Sequence[str], per_item: int) -> list[list[tuple[str, float]]]:
        """Co-visitation neighbours with their counts, strongest first, one list per item."""
        if not item_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.zrevrange(layout.covisit_key(item_id), 0, per_item - 1, withscores=True)
            rows = await pipe.execute()
        return [[(member.decode(), float(score)) for member, score in row] for row in rows]

    async def trending(self, count: int) -> list[str]:
        """The most popular items now (short term), most popular first.

        Read at most once per ``trending_ttl_s``: every list in a batch needs the same pool.
        """
        read_at, cached_count, items = self._trending
        now = time.monotonic()
        if now - read_at > self._trending_ttl_s or cached_count < count:
            items = [member.decode() for member in await self._redis.zrevrange(layout.POPULARITY_SHORT_KEY, 0, count - 1)]
            self._trending = (now, count, items)
        return items[:count]
