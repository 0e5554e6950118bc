"""Exactly-once watermarks (``wm:{group}:{topic}:{partition}``): the highest Kafka offset applied.

They are read through the batch's WATCH pipeline and advanced inside its MULTI/EXEC, so a
batch's writes and its watermark land together (see ``streams/processor.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from streamrec.store import layout

Partition = tuple[str, int]  # (topic, partition)


class WatermarkStore:
    def __init__(self, client: redis.Redis, *, group: str) -> None:
        self._redis = client
        self._group = group

    def key(self, partition: Partition) -> str:
        return layout.watermark_key(self._group, *partition)

    def keys(self, partitions: Sequence[Partition]) -> list[str]:
        return [self.key(partition) for partition in partitions]

    async def read(self, partitions: Sequence[Partition], *, via: Pipeline | None = None) -> dict[Partition, int]:
        """Offset applied up to, per partition (-1: nothing yet). ``via``: a WATCHing pipeline."""
        if not partitions:
            return {}
        reader = via if via is not None else self._redis
        values = await reader.mget(self.keys(partitions))
        return {
            partition: int(value) if value is not None else -1
            for partition, value in zip(partitions, values, strict=True)
        }

    async def stored(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The watermarks Redis holds, partitions without one left out: such a partition was never
        applied into this Redis by this group (a new group, a new database), so there is nothing
        Redis could have lost of it."""
        return {partition: offset for partition, offset in (await self.read(partitions)).items() if offset >= 0}

    def queue_advance(self, pipe: Pipeline, offsets: Mapping[Partition, int]) -> None:
        """Queue the new watermarks onto the batch's transaction."""
        for partition, offset in offsets.items():
            pipe.set(self.key(partition), offset)
