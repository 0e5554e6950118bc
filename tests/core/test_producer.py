"""The producer SDK against the session's real Kafka broker."""

from __future__ import annotations

import uuid

import pytest

from streamrec.events import CatalogItem, ClickEvent, InvalidEvent, PurchaseEvent
from streamrec.producer import EventProducer
from streamrec.topics import Topic


def test_round_trip_routes_by_type_and_keys_by_user(settings, kafka_reader):
    user = f"user-{uuid.uuid4()}"
    events = [
        ClickEvent(user_id=user, item_id="i1", session_id="s1"),
        PurchaseEvent(user_id=user, item_id="i1", order_id="o1", price=9.5, quantity=2, currency="EUR"),
        ClickEvent(user_id=user, item_id="i2", session_id="s1"),
    ]
    with EventProducer.from_settings(settings) as producer:
        futures = [producer.send(event) for event in events]
        producer.flush()
    results = [future.result(timeout=5) for future in futures]
    assert all(result.ok for result in results)
    assert [result.topic for result in results] == [Topic.CLICKS, Topic.PURCHASES, Topic.CLICKS]

    clicks = kafka_reader.read(Topic.CLICKS, match=lambda v: v.get("user_id") == user, expected=2)
    assert [c["item_id"] for c in clicks] == ["i1", "i2"]  # per-user order kept
    assert {c["_key"] for c in clicks} == {user}
    assert len({c["_partition"] for c in clicks}) == 1
    purchases = kafka_reader.read(Topic.PURCHASES, match=lambda v: v.get("user_id") == user, expected=1)
    assert purchases[0]["price"] == 9.5 and purchases[0]["quantity"] == 2
    assert purchases[0]["event_id"] == str(events[1].event_id)


def test_catalog_items_are_keyed_by_item(settings, kafka_reader):
    item_id = f"item-{uuid.uuid4()}"
    with EventProducer.from_settings(settings) as producer:
        producer.produce(CatalogItem(item_id=item_id, title="Lab goggles", category_path=["Safety", "Eyewear"]))
    items = kafka_reader.read(Topic.CATALOG, match=lambda v: v.get("item_id") == item_id, expected=1)
    assert items[0]["_key"] == item_id and items[0]["category_path"] == ["Safety", "Eyewear"]


def test_invalid_events_raise_before_sending(settings):
    with EventProducer.from_settings(settings) as producer:
        with pytest.raises(InvalidEvent, match="price"):
            producer.produce({"type": "purchase", "user_id": "u", "item_id": "i", "order_id": "o", "price": -1})
        with pytest.raises(InvalidEvent, match="future"):
            producer.produce({"type": "click", "user_id": "u", "item_id": "i", "ts": 4_000_000_000_000})
        assert producer.totals().pending == 0


def test_delivery_failures_are_surfaced(settings):
    producer = EventProducer.from_settings(settings, extra_config={"message.timeout.ms": 1500})
    producer._queue("no.such.topic", b"k", b"{}", None)  # auto-creation is off on the broker
    with pytest.raises(Exception, match="failed"):
        producer.flush(timeout=10)
    assert producer.totals().failed == 1
