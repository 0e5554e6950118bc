"""Redis is the source of truth for what was applied: writes Redis lost are read again from Kafka.

Redis replication and ``appendfsync everysec`` are asynchronous: a failover to a lagging replica
or a host crash loses the last writes, watermarks included, while Kafka already holds the
offsets of those events as committed. Nothing would read them again, and they would be missing
from every profile without a trace. So the watermark in Redis, not the committed offset, says
where a partition stands. Two checks find a watermark behind Kafka:

* **a batch that starts past its watermark + 1** (after a restart, Faust positions the consumer
  at the committed offset; while running, Redis may lose writes between two batches);
* **a periodic comparison** of each assigned partition's watermark with what this process knows
  was applied (or, for a partition it has not processed yet, the group's committed offset), so
  a quiet partition is repaired too, not only when its next event arrives.

The missing records are then read straight from Kafka by :class:`KafkaOffsets` and applied
before the batch, in chunks, through the same transaction as any batch. The worker's Faust
consumer is not moved: seeking it back would race the records it has already fetched.

A partition with no watermark at all has never been applied into this Redis by this group (a
new group that starts at the log end, a new database): it starts where the group stands, and
nothing before is read. Redis emptied completely looks the same from Redis alone; the worker
warns when a partition it has applied loses its watermark, and re-reading it all is the
operator's call (reset the group's offsets).

A gap is not always lost writes: offsets are missing where a transactional producer left
commit markers, or where retention deleted the start of the log; reading the range then finds
no records, and the batch goes on. Records Redis lost that retention has already deleted cannot
be recovered: they are counted and logged, never hidden.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from streamrec.store.watermarks import WatermarkStore

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)
POLL_S = 0.1  # one poll's wait; what a partition's end costs a read


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Reread:
    """Records of ``partition`` read again because Redis held it applied only up to ``applied_up_to``."""

    partition: Partition
    applied_up_to: int
    records: tuple[KafkaRecord, ...]
    unrecoverable: int = 0  # records after the watermark that retention already deleted


class KafkaOffsets:
    """Blocking Kafka reads the checks need, run in a thread: records of a range, committed offsets.

    One consumer that never subscribes nor commits, created with the worker's group id only so
    that :meth:`committed` can read the group's offsets. ``read_committed`` skips transaction
    markers and aborted records, as the worker's own consumer does not deliver them either.
    """

    def __init__(self, config: Mapping[str, object], *, group: str, timeout_s: float = 10.0) -> None:
        self._consumer = Consumer({
            **config,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        })
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()

    def close(self) -> None:
        self._consumer.close()

    async def read(self, partition: Partition, start: int, end: int, *, limit: int) -> tuple[list[KafkaRecord], int]:
        """(up to ``limit`` readable records with ``start <= offset < end``, the partition's log start)."""
        async with self._lock:
            return await asyncio.to_thread(self._read, partition, start, end, limit)

    async def committed(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The group's committed offsets (partitions without one are left out)."""
        wanted = [TopicPartition(topic, number) for topic, number in partitions]
        if not wanted:
            return {}
        async with self._lock:
            found = await asyncio.to_thread(self._consumer.committed, wanted, timeout=self._timeout_s)
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset != OFFSET_INVALID and tp.offset >= 0}

    def _read(self, partition: Partition, start: int, end: int, limit: int) -> tuple[list[KafkaRecord], int]:
        """Short polls, not one long one: ``consume`` waits its whole timeout for a full batch, end
        of partition or not, so a long timeout made every short range cost that long. A poll that
        brings nothing asks where the consumer stands: past the range's end (a commit marker or
        aborted records closed it) is done; no progress for the whole timeout is an error."""
        topic, number = partition
        assigned = TopicPartition(topic, number)
        low, high = self._consumer.get_watermark_offsets(assigned, timeout=self._timeout_s)
        position = max(start, low)
        stop = min(end, high)
        found: list[KafkaRecord] = []
        if position >= stop:
            return found, low
        self._consumer.assign([TopicPartition(topic, number, position)])
        try:
            progress_at = time.monotonic()
            while len(found) < limit:
                messages = self._consumer.consume(min(limit - len(found), 5000), POLL_S)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return found, low
                        raise KafkaException(error)
                    if message.offset() >= stop:
                        return found, low
                    found.append(KafkaRecord(message.offset(), message.timestamp()[1], message.key(), message.value()))
                    if len(found) >= limit:
                        break
                if messages:
                    progress_at = time.monotonic()
                    continue
                (current,) = self._consumer.position([assigned])
                if current.offset >= stop:
                    return found, low
                if time.monotonic() - progress_at > self._timeout_s:
                    raise TimeoutError(f"no answer from Kafka reading {topic}[{number}] at {position}")
        finally:
            self._consumer.unassign()
        return found, low


def first_offsets_beyond(
    offsets: Iterable[tuple[Partition, int]], applied_up_to: Mapping[Partition, int]
) -> dict[Partition, int]:
    """Per partition that has a watermark, the lowest of ``offsets`` that it does not cover yet.
    A partition without one is new to this Redis: it starts where the group stands."""
    first: dict[Partition, int] = {}
    for partition, offset in offsets:
        if partition not in applied_up_to:
            continue
        if offset > applied_up_to[partition] and offset < first.get(partition, offset + 1):
            first[partition] = offset
    return first


async def lost_before(batch: Iterable[tuple[Partition, int]], watermarks: WatermarkStore) -> dict[Partition, int]:
    """Per partition of a batch of ``(partition, offset)``, the batch's first offset beyond the
    watermark when Redis holds one: the records before it, down to the watermark, are what Redis
    lost (the ``until`` of :func:`reapply_missing`)."""
    offsets = list(batch)
    applied_up_to = await watermarks.stored(sorted({partition for partition, _ in offsets}))
    return first_offsets_beyond(offsets, applied_up_to)


async def missing_records(
    until: Mapping[Partition, int], applied_up_to: Mapping[Partition, int], offsets: KafkaOffsets, *, limit: int
) -> dict[Partition, Reread]:
    """Records Kafka holds between each partition's watermark + 1 and ``until`` (exclusive), at
    most ``limit`` per partition (the caller applies them and asks again). Partitions without a
    watermark are left out (see :func:`first_offsets_beyond`)."""
    found: dict[Partition, Reread] = {}
    for partition, end in until.items():
        if partition not in applied_up_to:
            continue
        applied = applied_up_to[partition]
        if end <= applied + 1:
            continue
        records, log_start = await offsets.read(partition, applied + 1, end, limit=limit)
        if records:
            found[partition] = Reread(partition, applied, tuple(records), max(0, log_start - (applied + 1)))
    return found


async def reapply_missing(
    until: Mapping[Partition, int],
    *,
    watermarks: WatermarkStore,
    offsets: KafkaOffsets,
    limit: int,
    apply: Callable[[dict[Partition, Reread]], Awaitable[None]],
) -> None:
    """Hand ``apply`` what Kafka holds between each partition's watermark and ``until``, a chunk
    of at most ``limit`` records per partition at a time, until nothing is missing; each
    partition's loss is logged once."""
    logged: set[Partition] = set()
    while until:
        applied_up_to = await watermarks.stored(sorted(until))
        missing = await missing_records(until, applied_up_to, offsets, limit=limit)
        if not missing:
            return
        for partition, reread in missing.items():
            if partition not in logged:
                log.warning(describe(reread))
                logged.add(partition)
        await apply(missing)


def describe(reread: Reread) -> str:
    topic, number = reread.partition
    text = (
        f"Redis holds {topic}[{number}] applied only up to offset {reread.applied_up_to}, but Kafka is further: "
        f"Redis lost writes (a failover to a lagging replica, or a restore from an older snapshot); "
        f"applying {len(reread.records)} records again from offset {reread.records[0].offset}"
    )
    if reread.unrecoverable:
        text += f"; {reread.unrecoverable} records before it were already deleted by retention and cannot be re-applied"
    return text
