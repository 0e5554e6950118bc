"""Consumer lag per group, topic and partition, from Kafka's own bookkeeping.

Committed offsets come from the group coordinator (AdminClient
``list_consumer_group_offsets``), log-end offsets from the partition leaders.
Kafka's committed offset is the *next* offset the group will read, and
faust-streaming commits ``last processed + 1`` (``Consumer._new_offset``), so
``lag = log_end - committed`` with no off-by-one. A partition with no commit
yet counts from its log-start offset. The catch-up estimate divides the lag by
the group's consumption rate, measured over a short sampling interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed on this partition
    log_end: int
    lag: int
    rate_per_s: float  # messages consumed per second during the sample
    catch_up_s: float  # lag / rate; 0 when there is no lag, inf when the group is not moving

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["catch_up_s"] = None if math.isinf(self.catch_up_s) else round(self.catch_up_s, 1)
        return data


class LagReader:
    def __init__(self, bootstrap_servers: str, timeout_s: float = 10.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap_servers, "group.id": "streamrec-lag-reader", "enable.auto.commit": False}
        )
        self._timeout_s = timeout_s

    def groups(self) -> list[str]:
        result = self._admin.list_consumer_groups(request_timeout=self._timeout_s).result()
        return sorted(group.group_id for group in result.valid)

    def committed(self, group: str) -> dict[tuple[str, int], int | None]:
        request = [ConsumerGroupTopicPartitions(group)]
        future = self._admin.list_consumer_group_offsets(request, request_timeout=self._timeout_s)[group]
        offsets: dict[tuple[str, int], int | None] = {}
        for tp in future.result().topic_partitions:
            offsets[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        return offsets

    def _bounds(self, topic: str, partition: int) -> tuple[int, int]:
        return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self._timeout_s)

    def _partitions_of(self, topics: set[str]) -> list[tuple[str, int]]:
        metadata = self._consumer.list_topics(timeout=self._timeout_s).topics
        return [(topic, p) for topic in sorted(topics) if topic in metadata for p in sorted(metadata[topic].partitions)]

    def read(
        self, groups: list[str] | None = None, sample_s: float = 2.0, topics: list[str] | None = None
    ) -> list[PartitionLag]:
        """Lag rows; ``topics`` adds partitions the group never committed on (counted from log start)."""
        groups = groups or self.groups()
        first = {group: self.committed(group) for group in groups}
        started = time.monotonic()
        if sample_s > 0:
            time.sleep(sample_s)
        second = {group: self.committed(group) for group in groups}
        elapsed = max(time.monotonic() - started, 1e-9)
        rows: list[PartitionLag] = []
        for group in groups:
            for topic, partition in self._partitions_of({topic for topic, _ in second[group]} | set(topics or ())):
                low, high = self._bounds(topic, partition)
                committed = second[group].get((topic, partition))
                before = first[group].get((topic, partition))
                lag = max(0, high - (committed if committed is not None else low))
                rate = (committed - before) / elapsed if committed is not None and before is not None else 0.0
                catch_up = 0.0 if lag == 0 else (lag / rate if rate > 0 else math.inf)
                rows.append(PartitionLag(group, topic, partition, committed, high, lag, rate, catch_up))
        return rows

    def close(self) -> None:
        self._consumer.close()
