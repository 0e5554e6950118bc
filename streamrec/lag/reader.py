"""Consumer lag per group, topic and partition, from Kafka's own bookkeeping.

Committed offsets come from the group coordinator (AdminClient
``list_consumer_group_offsets``), log bounds from ``list_offsets`` and the groups' members from
``describe_consumer_groups``. Kafka's committed offset is the *next* offset the group will read,
and faust-streaming commits ``last processed + 1``, so ``lag = log_end - committed`` with no
off-by-one. A partition with no commit yet counts from its log-start offset.

Lag in seconds is now minus the timestamp of the record at the committed offset, read from the
partition (``RecordTimestamps``). Where that record is gone (retention deleted it: the committed
offset is below the log start) the oldest record still there stands in; it is younger than the
lost ones, so the figure is a lower bound and is flagged ``lag_seconds_exact = False``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamrec.kafka_client import client_config
from streamrec.lag.timestamps import RecordTimestamps
from streamrec.settings import KafkaSettings

ACTIVE_STATES = {ConsumerGroupState.STABLE, ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING}


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed on this partition
    log_start: int
    log_end: int
    lag: int
    lag_seconds: float
    lag_seconds_exact: bool


@dataclass(frozen=True)
class GroupOffsets:
    group: str
    state: str  # Kafka's group state: STABLE, EMPTY, DEAD, ...
    members: int
    active: bool  # someone is in the group (it can commit)
    at: float  # epoch seconds the offsets were read
    partitions: tuple[PartitionOffsets, ...]


@dataclass(frozen=True)
class PartitionLag:
    """One row of a one-off reading (``LagReader.read``): offsets plus a rate from two samples."""

    group: str
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int
    lag_seconds: float
    rate_per_s: float  # messages consumed per second during the sample
    catch_up_s: float  # lag / rate; 0 when there is no lag, inf when the group is not moving

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["catch_up_s"] = None if math.isinf(self.catch_up_s) else round(self.catch_up_s, 1)
        data["lag_seconds"] = round(self.lag_seconds, 3)
        return data


class LagReader:
    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
        self._admin = AdminClient(client_config(kafka, client="lag"))
        self._timestamps = RecordTimestamps(kafka, timeout_s=min(timeout_s, 5.0))
        self._timeout_s = timeout_s

    @property
    def records_read(self) -> int:
        return self._timestamps.reads

    def groups(self) -> list[str]:
        result = self._admin.list_consumer_groups(request_timeout=self._timeout_s).result()
        return sorted(group.group_id for group in result.valid if not group.group_id.startswith("streamrec-lag-"))

    def committed(self, groups: list[str]) -> dict[str, dict[tuple[str, int], int | None]]:
        """Committed offsets of each group, requested concurrently (the API takes one group per request)."""
        futures = {
            group: self._admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=self._timeout_s)[group]
            for group in groups
        }
        return {
            group: {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in future.result().topic_partitions}
            for group, future in futures.items()
        }

    def members(self, groups: list[str]) -> dict[str, tuple[str, int]]:
        """Kafka's state and member count per group."""
        if not groups:
            return {}
        futures = self._admin.describe_consumer_groups(groups, request_timeout=self._timeout_s)
        described = {}
        for group, future in futures.items():
            description = future.result()
            described[group] = (description.state, len(description.members))
        return {group: (state.name, members) for group, (state, members) in described.items()}

    def bounds(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(log start, log end) of each partition, in two batched requests."""
        if not partitions:
            return {}
        found: dict[tuple[str, int], list[int]] = {tp: [0, 0] for tp in partitions}
        for index, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
            request = {TopicPartition(topic, partition): spec for topic, partition in partitions}
            for tp, future in self._admin.list_offsets(request, request_timeout=self._timeout_s).items():
                found[(tp.topic, tp.partition)][index] = future.result().offset
        return {tp: (low, high) for tp, (low, high) in found.items()}

    def log_ends(self, topics: list[str]) -> dict[str, int]:
        """Sum of the log-end offsets of each topic's partitions (its records written so far)."""
        ends: dict[str, int] = {topic: 0 for topic in topics}
        for (topic, _), (_, high) in self.bounds(self._partitions_of(set(topics))).items():
            ends[topic] += high
        return ends

    def _partitions_of(self, topics: set[str]) -> list[tuple[str, int]]:
        metadata = self._admin.list_topics(timeout=self._timeout_s).topics
        return [(topic, p) for topic in sorted(topics) if topic in metadata for p in sorted(metadata[topic].partitions)]

    def snapshot(self, groups: list[str] | None = None, topics: list[str] | None = None) -> list[GroupOffsets]:
        """Offsets, lag in messages and seconds, and members of each group, read now.

        ``topics`` adds partitions a group never committed on (counted from log start).
        """
        groups = groups or self.groups()
        committed = self.committed(groups)
        members = self.members(groups)
        at = time.time()
        wanted = {group: self._partitions_of({topic for topic, _ in offsets} | set(topics or ())) for group, offsets in committed.items()}
        bounds = self.bounds(sorted({tp for tps in wanted.values() for tp in tps}))
        positions: dict[tuple[str, str, int], tuple[int | None, int, bool]] = {}
        for group, tps in wanted.items():
            for tp in tps:
                low, high = bounds[tp]
                offset = committed[group].get(tp)
                start = offset if offset is not None and offset >= low else low
                positions[(group, *tp)] = (offset, start, offset is None or offset >= low)
        lookups = {(topic, partition, start) for (group, topic, partition), (_, start, _) in positions.items()
                   if start < bounds[(topic, partition)][1]}
        stamps = self._timestamps.lookup(lookups)
        at_ms = at * 1000  # the age when the offsets were read (the lookup itself takes a moment)
        result = []
        for group, tps in wanted.items():
            rows = []
            for topic, partition in tps:
                low, high = bounds[(topic, partition)]
                offset, start, exact = positions[(group, topic, partition)]
                lag = max(0, high - (offset if offset is not None else low))
                if lag == 0:
                    seconds = 0.0
                else:
                    stamp = stamps.get((topic, partition, start))
                    seconds, exact = (max(0.0, (at_ms - stamp) / 1000), exact) if stamp is not None else (math.nan, False)
                rows.append(PartitionOffsets(topic, partition, offset, low, high, lag, seconds, exact))
            state, count = members.get(group, ("UNKNOWN", 0))
            result.append(GroupOffsets(group, state, count, state in {s.name for s in ACTIVE_STATES} and count > 0, at, tuple(rows)))
        return result

    def read(
        self, groups: list[str] | None = None, sample_s: float = 2.0, topics: list[str] | None = None
    ) -> list[PartitionLag]:
        """Lag rows; with ``sample_s`` > 0 two snapshots that far apart give the consumption rate."""
        groups = groups or self.groups()
        first = {g.group: g for g in self.snapshot(groups, topics)} if sample_s > 0 else {}
        if sample_s > 0:
            time.sleep(sample_s)
        rows: list[PartitionLag] = []
        for group in self.snapshot(groups, topics):
            before = {(p.topic, p.partition): p.committed for p in first[group.group].partitions} if group.group in first else {}
            elapsed = max(group.at - first[group.group].at, 1e-9) if group.group in first else 0.0
            for p in group.partitions:
                earlier = before.get((p.topic, p.partition))
                rate = (p.committed - earlier) / elapsed if elapsed and p.committed is not None and earlier is not None else 0.0
                catch_up = 0.0 if p.lag == 0 else (p.lag / rate if rate > 0 else math.inf)
                rows.append(PartitionLag(group.group, p.topic, p.partition, p.committed, p.log_end, p.lag, p.lag_seconds, rate, catch_up))
        return rows

    def close(self) -> None:
        self._timestamps.close()
