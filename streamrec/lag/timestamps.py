"""The timestamp of the record at a given offset, read from the partition itself.

Lag in seconds is "now minus the time of the oldest record the group has not read", and
that record is the one at the committed offset (Kafka's committed offset is the next one to
read). Reading it is exact; guessing it from rates is not. One consumer, never committing,
is assigned every wanted (partition, offset) at once and takes the first record it gets from
each; an offset whose record is compacted away or a transaction marker yields the next record,
which is the right answer (nothing unread lies between them). Offsets are immutable, so what
was read once is cached: idle groups cost nothing per sample.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings

Wanted = tuple[str, int, int]  # topic, partition, offset


class RecordTimestamps:
    def __init__(self, kafka: KafkaSettings, *, cache_size: int = 50_000, timeout_s: float = 5.0) -> None:
        self._consumer = Consumer({
            **client_config(kafka, client="lag-timestamps"),
            "group.id": "streamrec-lag-timestamps",  # never joins: assign() only, no commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # One record per partition is all that is wanted: keep fetches small and quick.
            "max.partition.fetch.bytes": 65_536,
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 8_192,
        })
        self._cache: OrderedDict[Wanted, int] = OrderedDict()
        self._cache_size = cache_size
        self._timeout_s = timeout_s
        self.reads = 0  # records fetched from the broker (not from the cache), for the cost figures

    def lookup(self, wanted: Iterable[Wanted]) -> dict[Wanted, int]:
        """Epoch ms of the record at each wanted offset (or the next one); missing when unreadable in time."""
        wanted = set(wanted)
        found = {key: self._cache[key] for key in wanted if key in self._cache}
        for key in found:
            self._cache.move_to_end(key)
        pending = sorted(wanted - found.keys())
        while pending:
            # One offset per partition per round: the smallest; later ones are often met on the way.
            first: dict[tuple[str, int], int] = {}
            for topic, partition, offset in pending:
                first.setdefault((topic, partition), offset)
            got, exhausted = self._read_round(first, set(pending))
            if not got:
                break  # nothing arrived within the timeout: report what is known
            found.update(got)
            for key, ts in got.items():
                self._remember(key, ts)
            pending = [key for key in pending if key not in found and (key[0], key[1]) not in exhausted]
        return found

    def _read_round(
        self, first: dict[tuple[str, int], int], pending: set[Wanted]
    ) -> tuple[dict[Wanted, int], set[tuple[str, int]]]:
        """Assign each partition at its offset; take the first record of each (and any pending offset met).

        Also returns the partitions found at their end: nothing at or after the offset yet.
        """
        exhausted: set[tuple[str, int]] = set()
        self._consumer.assign([TopicPartition(topic, partition, offset) for (topic, partition), offset in first.items()])
        got: dict[Wanted, int] = {}
        waiting = set(first)
        deadline = time.monotonic() + self._timeout_s
        try:
            while waiting and time.monotonic() < deadline:
                for message in self._consumer.consume(num_messages=500, timeout=0.2):
                    tp = (message.topic(), message.partition())
                    if message.error():
                        if message.error().code() == KafkaError._PARTITION_EOF and tp in waiting:
                            waiting.discard(tp)
                            exhausted.add(tp)
                        continue
                    start = first.get(tp)
                    if start is None or message.offset() < start:
                        continue  # left over from an earlier assignment
                    self.reads += 1
                    ts = message.timestamp()[1]
                    if tp in waiting:  # the first record at or after the assigned offset
                        got[(tp[0], tp[1], start)] = ts
                        waiting.discard(tp)
                    key = (tp[0], tp[1], message.offset())
                    if key in pending:
                        got[key] = ts
        finally:
            self._consumer.unassign()
        return got, exhausted

    def _remember(self, key: Wanted, ts: int) -> None:
        self._cache[key] = ts
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        self._consumer.close()
