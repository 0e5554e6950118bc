"""Read the accepted interactions that arrived since the last published version.

The trainer learns from ``events.accepted``: what the streams workers applied, after their
cleaning rules (so duplicates, bot bursts and price outliers never reach it) and filling. It
assigns the topic's partitions itself (no group rebalancing) and starts each one at the offset
recorded in the served version's metadata (``lineage.offsets``), so a trainer killed at any
point re-reads exactly the events the served model has not learnt from. Partitions without a
recorded offset start at the trainer group's committed offset, else at the beginning. The
group's offsets are committed after a publish too, so ``streamrec lag`` shows how far behind
the trainer is; the version's metadata stays the source of truth.

A streams worker that crashed after publishing a batch publishes it again, so events are
deduplicated by ``event_id``. A message that breaks the ``events.accepted`` contract (not JSON,
another shape, an event of an unknown type, no value at all) is kept, with why, for the cycle to
dead-letter: it is never dropped with only a log line. Dead-lettered rather than only counted,
although the topic is internal: the event it stood for is one the model will never learn from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from streamrec.kafka_client import client_config
from streamrec.messages import AcceptedEvent, UnreadableMessage
from streamrec.settings import KafkaSettings
from streamrec.topics import Topic

Offsets = dict[str, int]
"""``"topic:partition"`` -> next offset to read."""


def offset_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def parse_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


@dataclass(frozen=True, slots=True)
class AcceptedInteraction:
    """What the trainer keeps of an accepted event; ``topic``/``partition``/``offset`` are its
    position on ``events.accepted``."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A message on ``events.accepted`` that breaks its contract, as it arrived, with why."""

    raw: bytes
    error: UnreadableMessage
    topic: str
    partition: int
    offset: int


@dataclass
class EventBatch:
    events: list[AcceptedInteraction]
    start: Offsets
    end: Offsets
    unreadable: list[Unreadable] = field(default_factory=list)
    duplicates: int = 0
    """Repeated ``event_id``s left out (a streams worker replayed a batch after a crash)."""
    reached_end: bool = True
    """False when ``max_events`` cut the read short (more events are waiting)."""
    seconds: float = 0.0
    per_type: dict[str, int] = field(default_factory=dict)


def _consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    return Consumer(
        {
            **client_config(kafka, client="trainer"),
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


def _decode(message) -> AcceptedInteraction | Unreadable:
    try:
        event = AcceptedEvent.decode(message.value()).event
    except UnreadableMessage as error:
        return Unreadable(message.value() or b"", error, message.topic(), message.partition(), message.offset())
    return AcceptedInteraction(
        event_id=str(event.event_id),
        user_id=event.user_id,
        item_id=event.item_id,
        type=event.type,
        ts=event.ts,
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
    )


def read_new_events(
    kafka: KafkaSettings,
    group_id: str,
    start: Offsets | None,
    *,
    max_events: int,
    stop: Offsets | None = None,
    timeout_s: float = 60.0,
) -> EventBatch:
    """Every accepted event from ``start`` up to the log end seen when the read began (or
    ``stop``; at most ``max_events``), each ``event_id`` once, with the offsets to resume from."""
    began = time.monotonic()
    consumer = _consumer(kafka, group_id)
    try:
        metadata = consumer.list_topics(timeout=10)
        topic = Topic.ACCEPTED.value
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)] if topic in metadata.topics else []
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
        events: list[AcceptedInteraction] = []
        unreadable: list[Unreadable] = []
        seen: set[str] = set()
        duplicates = 0
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
                if isinstance(event, Unreadable):
                    unreadable.append(event)
                elif event.event_id in seen:
                    duplicates += 1
                else:
                    seen.add(event.event_id)
                    events.append(event)
                if len(events) >= max_events:
                    break
        per_type: dict[str, int] = {}
        for event in events:
            per_type[event.type] = per_type.get(event.type, 0) + 1
        return EventBatch(events, first, end, unreadable, duplicates, reached_end=not pending, seconds=time.monotonic() - began,
                          per_type=per_type)
    finally:
        consumer.close()


def read_context(kafka: KafkaSettings, group_id: str, before: Offsets, per_partition: int) -> list[AcceptedInteraction]:
    """Up to ``per_partition`` events before ``before`` on each partition: context only (the
    histories of users whose new events continue older ones), never training targets."""
    if per_partition <= 0 or not before:
        return []
    start = {key: max(0, offset - per_partition) for key, offset in before.items()}
    batch = read_new_events(kafka, group_id, start, max_events=per_partition * len(before), stop=before)
    return batch.events


def commit_offsets(kafka: KafkaSettings, group_id: str, offsets: Offsets) -> None:
    """Record ``offsets`` as the trainer group's position (for lag monitoring)."""
    if not offsets:
        return
    consumer = _consumer(kafka, group_id)
    try:
        positions = [TopicPartition(*parse_key(key), offset) for key, offset in offsets.items()]
        _retrying(lambda: consumer.commit(offsets=positions, asynchronous=False))
    finally:
        consumer.close()
