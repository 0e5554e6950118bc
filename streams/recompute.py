"""Batch recomputation of profiles and item statistics from the events in Kafka.

The crash tests and the fault benchmark compare the worker's incremental Redis
state with this: the same rules and arithmetic applied once to every event, in
topic order, with item statistics in closed form (``Σ w · exp(-(t_max - t) / τ)``).
It is never run by the worker itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, TopicPartition

from streamrec.events import CartEvent, ClickEvent, EventValidator, InvalidEvent, PurchaseEvent, is_canary
from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings, StreamsSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import UserProfile
from streamrec.topics import INTERACTION_TOPICS
from streams.cleaning import check_click_rate, check_duplicate, check_price, check_timestamp, fill_from_catalog
from streamrec.profile_fold import apply_interaction


@dataclass
class Expected:
    profiles: dict[str, UserProfile] = field(default_factory=dict)
    item_events: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    covisits: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # rule -> count
    accepted: list[str] = field(default_factory=list)  # event ids applied, in topic order
    records: int = 0

    def popularity(self, item_id: str, tau_ms: float) -> tuple[float, int]:
        events = self.item_events[item_id]
        newest = max(ts for ts, _ in events)
        return sum(w * math.exp(-(newest - ts) / tau_ms) for ts, w in events), newest


def read_interactions(kafka: KafkaSettings, start: dict[tuple[str, int], int] | None = None) -> list[tuple[str, int, int, int, bytes]]:
    """Interaction records from ``start`` (default: the log start): (topic, partition, offset, kafka ts ms, value)."""
    consumer = Consumer({**client_config(kafka, client="test"), "group.id": "recompute", "enable.auto.commit": False})
    records = []
    try:
        metadata = consumer.list_topics(timeout=10).topics
        for topic in INTERACTION_TOPICS:
            for partition in sorted(metadata[topic.value].partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic.value, partition), timeout=10)
                low = max(low, (start or {}).get((topic.value, partition), low))
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic.value, partition, low)])
                while True:
                    message = consumer.poll(5)
                    if message is None:
                        raise TimeoutError(f"timed out reading {topic.value}[{partition}]")
                    if message.error():
                        continue
                    records.append((topic.value, partition, message.offset(), message.timestamp()[1], message.value()))
                    if message.offset() >= high - 1:
                        break
    finally:
        consumer.close()
    return records


def recompute(records, catalog: dict[str, CatalogRecord], settings: StreamsSettings) -> Expected:
    expected = Expected(records=len(records))
    validator = EventValidator(max_future_skew_s=None)
    for topic, _, _, kafka_ts, value in records:
        try:
            event = validator.parse(orjson.loads(value))
        except (orjson.JSONDecodeError, InvalidEvent):
            expected.rejected["malformed"] += 1
            continue
        if not isinstance(event, (ClickEvent, CartEvent, PurchaseEvent)):
            raise ValueError(f"{topic} holds a {type(event).__name__}")
        profile = expected.profiles.setdefault(event.user_id, UserProfile())
        item = catalog.get(event.item_id)
        rejection = (
            check_timestamp(event.ts, kafka_ts, settings)
            or check_duplicate(profile, event.event_id, event.ts, settings)
            or (check_click_rate(profile, event.ts, settings) if isinstance(event, ClickEvent) else None)
            or (check_price(event, item, settings) if isinstance(event, PurchaseEvent) else None)
        )
        if rejection is not None:
            expected.rejected[rejection.rule.value] += 1
            continue
        if isinstance(event, PurchaseEvent):
            event = fill_from_catalog(event, item)
        expected.accepted.append(str(event.event_id))
        applied = apply_interaction(
            profile, user_id=event.user_id, event_type=event.type, item_id=event.item_id, ts=event.ts,
            category=item.category if item else None, embedding=item.embedding if item else None, settings=settings,
        )
        if is_canary(event.user_id):
            continue  # a profile, but no item statistics
        expected.item_events[event.item_id].append((event.ts, applied.weight))
        for neighbour in applied.covisits:
            expected.covisits[(event.item_id, neighbour)] += 1
            expected.covisits[(neighbour, event.item_id)] += 1
    return expected
