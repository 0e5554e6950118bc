"""The trainer learns only from what a real streams worker accepted (raw events -> streams ->
events.accepted -> the trainer's consume step), each event once, and keeps broken messages for
the dead-letter topic instead of dropping them."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from streamrec.events import CatalogItem, ClickEvent, PurchaseEvent
from streamrec.kafka_client import client_config
from streamrec.messages import AcceptedEvent, QuarantinedEvent
from streamrec.producer import EventProducer
from streamrec.topics import Topic
from tests.trainer.incremental.conftest import log_ends, read_since
from trainer.incremental import consume

pytestmark = pytest.mark.stack

CATALOG_PRICE = 10.0


def test_duplicates_bot_bursts_and_price_outliers_never_reach_the_trainer(settings, accepting_worker):
    rules = accepting_worker.rules
    run = uuid.uuid4().hex[:6]
    plain, pricey = f"acc-{run}-plain", f"acc-{run}-pricey"
    with EventProducer.from_settings(settings) as producer:  # sold at CATALOG_PRICE: the price rule and the filling read it
        producer.produce(CatalogItem(item_id=pricey, title="Pipette tips, 1000 pcs", category_path=["Lab"], price=CATALOG_PRICE,
                                     currency="EUR"))
    accepting_worker.wait_applied(settings)  # stored by the catalog agent before any purchase of it
    shopper, bot, buyer = f"acc-{run}-shopper", f"acc-{run}-bot", f"acc-{run}-buyer"
    accepted_start, quarantine_start = log_ends(settings), log_ends(settings, Topic.QUARANTINE)
    now = int(time.time() * 1000)

    browsing = [ClickEvent(user_id=shopper, item_id=plain, ts=now), ClickEvent(user_id=shopper, item_id=pricey, ts=now + 1)]
    duplicate = browsing[0]  # a client retrying: the same event_id again
    burst = [ClickEvent(user_id=bot, item_id=plain, ts=now + n) for n in range(rules.bot_max_clicks + 3)]  # 1 ms apart
    fair = PurchaseEvent(user_id=buyer, item_id=pricey, order_id=f"o-{run}-1", ts=now)  # no price: filled from the catalog
    outlier = PurchaseEvent(user_id=buyer, item_id=pricey, order_id=f"o-{run}-2", currency="EUR", ts=now + 1,
                            price=CATALOG_PRICE * (1 + rules.price_tolerance) * 2)
    buyer_click = ClickEvent(user_id=buyer, item_id=plain, ts=now + 2)
    with EventProducer.from_settings(settings) as producer:
        for event in (*browsing, duplicate, *burst, outlier):
            producer.produce(event)
        fair_delivery = producer.send(fair)
        producer.produce(buyer_click)
        producer.flush()
    accepting_worker.wait_applied(settings)

    batch = consume.read_new_events(settings.kafka, f"trainer-probe-{run}", accepted_start, max_events=100_000)
    mine = [event for event in batch.events if event.user_id in (shopper, bot, buyer)]
    normal = [*browsing, *burst[: rules.bot_max_clicks], fair, buyer_click]
    assert sorted(event.event_id for event in mine) == sorted(str(event.event_id) for event in normal)
    assert [(e.user_id, e.item_id, e.type, e.ts) for e in mine if e.event_id == str(fair.event_id)] == [(buyer, pricey, "purchase", now)]
    kept_out = {str(duplicate.event_id): "duplicate", str(outlier.event_id): "price_mismatch",
                **{str(event.event_id): "bot_click_rate" for event in burst[rules.bot_max_clicks :]}}
    assert sum(event.event_id == str(duplicate.event_id) for event in batch.events) == 1  # the original only
    assert not (set(kept_out) - {str(duplicate.event_id)}) & {event.event_id for event in batch.events}

    # What the trainer never saw is on the quarantine, with the rule that caught it.
    quarantined = [QuarantinedEvent.decode(value) for _, value in read_since(settings, Topic.QUARANTINE, quarantine_start)]
    caught = {str(message.event.event_id): message.rule for message in quarantined if message.event.user_id in (shopper, bot, buyer)}
    assert caught == kept_out

    # events.accepted carries each event as applied (the purchase's price filled) and where it came from.
    accepted = {str(message.event.event_id): (key, message) for key, value in read_since(settings, Topic.ACCEPTED, accepted_start)
                if (message := AcceptedEvent.decode(value)).event.user_id in (shopper, bot, buyer)}
    key, filled = accepted[str(fair.event_id)]
    delivered = fair_delivery.result(timeout=10)
    assert key == buyer.encode()
    assert (filled.event.price, filled.event.currency) == (CATALOG_PRICE, "EUR") and fair.price is None
    assert (filled.topic, filled.partition, filled.offset) == (Topic.PURCHASES.value, delivered.partition, delivered.offset)


def test_a_repeated_accepted_event_is_read_once_and_a_broken_message_is_kept_with_why(settings):
    """A streams worker killed after publishing a batch publishes it again; a broken message is not dropped."""
    run = uuid.uuid4().hex[:8]
    start = log_ends(settings)
    user = f"repeat-{run}"
    message = AcceptedEvent(event=ClickEvent(user_id=user, item_id="x", ts=int(time.time() * 1000)), topic=Topic.CLICKS.value,
                            partition=0, offset=12)
    broken = b'{"event": {"type": "click", "user_id": "' + run.encode() + b'"'
    producer = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})
    topic, key, value = message.to_kafka()
    for _ in range(2):
        producer.produce(topic, value, key)
    producer.produce(Topic.ACCEPTED.value, broken, key)
    assert producer.flush(30) == 0

    batch = consume.read_new_events(settings.kafka, f"trainer-probe-{run}", start, max_events=100_000)
    assert [event.user_id for event in batch.events if event.user_id == user] == [user]
    assert batch.duplicates == 1
    kept = [unreadable for unreadable in batch.unreadable if run.encode() in unreadable.raw]
    assert len(kept) == 1 and kept[0].raw == broken and kept[0].topic == Topic.ACCEPTED.value
    assert kept[0].error.reason.startswith("breaks the events.accepted contract: (message): Invalid JSON")
    assert batch.end == log_ends(settings)  # the read moved past both
