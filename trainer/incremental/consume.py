"""Read the interaction events that arrived since the last published version.

The trainer assigns the interaction topics' partitions itself (no group rebalancing) and starts
each one at the offset recorded in the served version's metadata (``lineage.offsets``), so a
trainer killed at any point re-reads exactly the events the served model has not learnt from.
Partitions without a recorded offset start at the trainer group's committed offset, else at
the beginning. The group's offsets are committed after a publish too, so ``streamrec lag``
shows how far behind the trainer is; the version's metadata stays the source of truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from streamrec.topics import INTERACTION_TOPICS

Offsets = dict[str, int]
"""``"topic:partition"`` -> next offset to read."""


def offset_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def parse_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


@dataclass(frozen=True, slots=True)
class RawInteraction:
    user_id: str
    item_id: str
    type: str
    ts: int
    topic: str
    partition: int
    offset: int


@dataclass
class EventBatch:
    events: list[RawInteraction]
    start: Offsets
    end: Offsets
    skipped: int = 0
    """Messages that were not interaction events (unreadable JSON, missing fields)."""
    reached_end: bool = True
    """False when ``max_events`` cut the read short (more events are waiting)."""
    seconds: float = 0.0
    per_topic: dict[str, int] = field(default_factory=dict)


def _consumer(bootstrap_servers: str, group_id: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )


def _retrying(call, timeout_s: float = 60.0):
    """``call()``, retried while a fresh broker has no partition leader or group coordinator yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def watermarks(consumer: Consumer, partition: TopicPartition, timeout_s: float = 60.0) -> tuple[int, int]:
    """(low, high) offsets of ``partition``."""
    return _retrying(lambda: consumer.get_watermark_offsets(partition, timeout=10), timeout_s)


def _decode(message) -> RawInteraction | None:
    try:
        value = orjson.loads(message.value())
        return RawInteraction(
            user_id=str(value["user_id"]),
            item_id=str(value["item_id"]),
            type=str(value["type"]),
            ts=int(value["ts"]),
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def read_new_events(
    bootstrap_servers: str,
    group_id: str,
    start: Offsets | None,
    *,
    max_events: int,
    stop: Offsets | None = None,
    timeout_s: float = 60.0,
) -> EventBatch:
    """Every interaction event from ``start`` up to the log end seen when the read began (or
    ``stop``; at most ``max_events``), with the offsets to resume from."""
    began = time.monotonic()
    consumer = _consumer(bootstrap_servers, group_id)
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(topic.value, p)
            for topic in INTERACTION_TOPICS
            if topic.value in metadata.topics
            for p in sorted(metadata.topics[topic.value].partitions)
        ]
        committed = {offset_key(tp.topic, tp.partition): tp.offset for tp in _retrying(lambda: consumer.committed(partitions, timeout=10))}
        first: Offsets = {}
        last: Offsets = {}
        for tp in partitions:
            key = offset_key(tp.topic, tp.partition)
            low, high = watermarks(consumer, tp)
            recorded = (start or {}).get(key)
            if recorded is None:
                recorded = committed.get(key, OFFSET_INVALID)
                recorded = low if recorded is None or recorded < 0 else recorded
            first[key] = max(low, recorded)
            last[key] = high if stop is None else min(high, stop.get(key, high))
        end = dict(first)
        pending = {key for key in first if first[key] < last[key]}
        events: list[RawInteraction] = []
        skipped = 0
        if pending:
            consumer.assign([TopicPartition(*parse_key(key), first[key]) for key in pending])
        deadline = time.monotonic() + timeout_s
        while pending and len(events) < max_events and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=min(1000, max_events - len(events)), timeout=0.5):
                if message.error():
                    continue
                key = offset_key(message.topic(), message.partition())
                if key not in pending or message.offset() >= last[key]:
                    continue
                end[key] = message.offset() + 1
                if end[key] >= last[key]:
                    pending.discard(key)
                event = _decode(message)
                if event is None:
                    skipped += 1
                else:
                    events.append(event)
                if len(events) >= max_events:
                    break
        per_topic: dict[str, int] = {}
        for event in events:
            per_topic[event.topic] = per_topic.get(event.topic, 0) + 1
        return EventBatch(events, first, end, skipped, reached_end=not pending, seconds=time.monotonic() - began, per_topic=per_topic)
    finally:
        consumer.close()


def read_context(bootstrap_servers: str, group_id: str, before: Offsets, per_partition: int) -> list[RawInteraction]:
    """Up to ``per_partition`` events before ``before`` on each partition: context only (the
    histories of users whose new events continue older ones), never training targets."""
    if per_partition <= 0 or not before:
        return []
    start = {key: max(0, offset - per_partition) for key, offset in before.items()}
    batch = read_new_events(bootstrap_servers, group_id, start, max_events=per_partition * len(before), stop=before)
    return batch.events


def commit_offsets(bootstrap_servers: str, group_id: str, offsets: Offsets) -> None:
    """Record ``offsets`` as the trainer group's position (for lag monitoring)."""
    if not offsets:
        return
    consumer = _consumer(bootstrap_servers, group_id)
    try:
        positions = [TopicPartition(*parse_key(key), offset) for key, offset in offsets.items()]
        _retrying(lambda: consumer.commit(offsets=positions, asynchronous=False))
    finally:
        consumer.close()
