"""The batch processors against the session's real Redis and Kafka (no Faust), and the metrics they feed."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client import generate_latest

from streamrec.data_quality import scorecard_from_metrics
from streamrec.events import CANARY_USER_PREFIX, CatalogItem, ClickEvent, PurchaseEvent, encode
from streamrec.kafka_client import client_config
from streamrec.messages import AcceptedEvent
from streamrec.quality_metrics import CATALOG_FIELDS
from streamrec.settings import StreamsSettings
from streamrec.store import layout
from streamrec.store.catalog import CatalogRecord
from streamrec.store.connection import connect
from streamrec.store.functions import load_functions
from streamrec.topics import Topic
from streams.catalog import CatalogProcessor
from streams.metrics import StreamsMetrics
from streams.processor import InteractionProcessor, Record
from streams.rewind import KafkaOffsets


@pytest.fixture
async def client(settings):
    connection = connect(settings.redis.model_copy(update={"url": settings.redis_url.rsplit("/", 1)[0] + "/1"}))
    await load_functions(connection)
    yield connection
    await connection.aclose()


@pytest.fixture
def offsets(settings):
    reader = KafkaOffsets(client_config(settings.kafka, client="test"), group=f"g-{uuid.uuid4().hex}")
    yield reader
    reader.close()


@pytest.fixture
def publish(settings):
    producer = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})

    async def publish_many(messages):
        for topic, key, value in messages:
            producer.produce(topic, value, key)
        assert await asyncio.to_thread(producer.flush, 30) == 0

    return publish_many


def records(events, *, topic: str = Topic.CLICKS.value, partition: int = 0, first_offset: int = 0) -> list[Record]:
    now = int(time.time() * 1000)
    return [
        Record(topic, partition, first_offset + n, now, event.user_id.encode(), encode(event))
        for n, event in enumerate(events)
    ]


async def test_a_replayed_batch_is_skipped_by_the_watermark(client, publish, offsets):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish, offsets=offsets)
    user = f"u-{uuid.uuid4().hex}"
    clicks = [ClickEvent(user_id=user, item_id=f"t-{n}") for n in range(5)]
    batch = records(clicks)
    first = await processor.process(batch)
    assert len(first.applied) == 5 and first.skipped == 0
    stored = await client.get(layout.profile_key(user))
    again = await processor.process(batch)  # a worker restarted before its offsets were committed
    assert again.applied == [] and again.skipped == 5
    # ... and maybe before it told the recommender: the user is signalled again, with the same newest event
    assert again.updated_users == first.updated_users == {user: max(click.ts for click in clicks)}
    assert await client.get(layout.profile_key(user)) == stored
    overlapping = await processor.process(batch[3:] + records([ClickEvent(user_id=user, item_id="t-9")], first_offset=5))
    assert overlapping.skipped == 2 and len(overlapping.applied) == 1
    assert layout.decode_profile(await client.get(layout.profile_key(user))).counts["click"] == 6


async def test_profiles_expire_after_their_ttl(client, publish, offsets):
    processor = InteractionProcessor(
        client=client, settings=StreamsSettings(profile_ttl_s=1), group=f"g-{uuid.uuid4().hex}", publish=publish,
        offsets=offsets,
    )
    user = f"u-{uuid.uuid4().hex}"
    await processor.process(records([ClickEvent(user_id=user, item_id="t-1")]))
    assert 0 < await client.pttl(layout.profile_key(user)) <= 1000
    await asyncio.sleep(1.5)
    assert await client.get(layout.profile_key(user)) is None


async def test_rejected_events_reach_their_topics_with_reasons(client, publish, kafka_reader, offsets):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish, offsets=offsets)
    user = f"u-{uuid.uuid4().hex}"
    click = ClickEvent(user_id=user, item_id="t-1")
    batch = records([click, click])  # the same event twice
    batch.append(Record(Topic.CLICKS.value, 0, 2, batch[0].timestamp_ms, user.encode(), b'{"type": "click", "user_id": "' + user.encode() + b'"}'))
    result = await processor.process(batch)
    assert sorted(rejection.rule.value for _, rejection in result.rejected) == ["duplicate", "malformed"]
    quarantined = kafka_reader.read(Topic.QUARANTINE, match=lambda v: v.get("event", {}).get("user_id") == user, expected=1)
    assert quarantined[0]["rule"] == "duplicate" and str(click.event_id) in quarantined[0]["reason"]
    dead = kafka_reader.read(Topic.DLQ, match=lambda v: user in v.get("raw", ""), expected=1)
    assert dead[0]["reason"].startswith("item_id") and dead[0]["source"] == "streams:events.clicks"


async def test_an_unreadable_profile_is_counted_and_started_afresh(client, publish, offsets):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish, offsets=offsets)
    user = f"u-{uuid.uuid4().hex}"
    await client.set(layout.profile_key(user), b"\x81\xa1f\x01")  # a profile of format 1: not readable here
    result = await processor.process(records([ClickEvent(user_id=user, item_id="t-1")]))
    assert len(result.applied) == 1 and processor.unreadable_profiles == 1
    rebuilt = layout.decode_profile(await client.get(layout.profile_key(user)))
    assert rebuilt.counts["click"] == 1 and [i.item_id for i in rebuilt.recent] == ["t-1"]


async def test_applied_events_reach_events_accepted_as_applied_before_the_redis_commit(client, settings, kafka_reader, offsets):
    group = f"g-{uuid.uuid4().hex}"
    user, item = f"u-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    watermark = layout.watermark_key(group, Topic.PURCHASES.value, 0)
    record = CatalogRecord(item, "Pipette", ("Lab",), None, 4.5, "EUR", True, int(time.time() * 1000))
    await client.hset(layout.item_key(item), mapping=layout.encode_catalog(record))
    producer = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})
    committed_while_publishing = []

    async def publish_many(messages):
        committed_while_publishing.append(await client.get(watermark))  # what Redis holds during the delivery
        for topic, key, value in messages:
            producer.produce(topic, value, key)
        assert await asyncio.to_thread(producer.flush, 30) == 0

    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=group, publish=publish_many, offsets=offsets)
    purchase = PurchaseEvent(user_id=user, item_id=item, order_id="o1")  # no price: the catalog's is filled in
    result = await processor.process(records([purchase], topic=Topic.PURCHASES.value))
    assert [message.event.event_id for message in result.accepted] == [purchase.event_id]
    assert committed_while_publishing == [None] and await client.get(watermark) == b"0"  # delivered before the EXEC
    accepted = kafka_reader.read(Topic.ACCEPTED, match=lambda v: v.get("event", {}).get("user_id") == user, expected=1)
    assert len(accepted) == 1 and accepted[0]["_key"] == user
    assert AcceptedEvent.decode(orjson.dumps({k: v for k, v in accepted[0].items() if not k.startswith("_")})).event == \
        purchase.model_copy(update={"price": 4.5, "currency": "EUR"})
    assert (accepted[0]["topic"], accepted[0]["partition"], accepted[0]["offset"]) == (Topic.PURCHASES.value, 0, 0)


class UnitEncoder:
    """The item encoder's contract (unit vectors of 384 dimensions) without Triton."""

    async def encode(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), 384), 1 / np.sqrt(384), dtype=np.float32)


async def test_the_quality_counters_count_exactly_the_mix_sent_and_the_scorecard_reads_them(client, publish, offsets):
    tag = uuid.uuid4().hex
    known, bare = f"known-{tag}", f"bare-{tag}"
    metrics = StreamsMetrics()
    catalog = CatalogProcessor(client=client, encoder=UnitEncoder(), publish=publish, group=f"g-{tag}", offsets=offsets)
    items = [CatalogItem(item_id=known, title="Pipette", category_path=["Lab"], brand="Eppendorf", price=4.5, currency="EUR"),
             CatalogItem(item_id=bare, title="Beaker")]  # no category, brand, price or currency
    metrics.observe_catalog(await catalog.process(
        [Record(Topic.CATALOG.value, 0, n, 0, item.item_id.encode(), encode(item)) for n, item in enumerate(items)]))

    user, canary = f"u-{tag}", f"{CANARY_USER_PREFIX}{tag}"
    now = int(time.time() * 1000)
    first = ClickEvent(user_id=user, item_id=known, ts=now - 1_500)
    canary_click = ClickEvent(user_id=canary, item_id=known, ts=now - 1_000)
    sent = [  # (event or raw bytes, Kafka timestamp)
        (first, now),  # in the catalog, 1.5 s late
        (ClickEvent(user_id=user, item_id=f"unknown-1-{tag}", ts=now - 1_500), now),
        (ClickEvent(user_id=user, item_id=f"unknown-2-{tag}", ts=now - 90_000), now),  # 90 s late
        (first, now),  # a duplicate
        (ClickEvent(user_id=user, item_id=known, ts=now - 8 * 86_400_000), now),  # beyond max_late_s (7 days)
        (PurchaseEvent(user_id=user, item_id=known, order_id="o1", price=100.0, ts=now - 50), now),  # a price outlier
        (PurchaseEvent(user_id=user, item_id=known, order_id="o2", price=4.5, ts=now - 50), now),
        (b'{"type": "click", "user_id": "' + user.encode() + b'"}', now),  # malformed: no item
        (canary_click, now), (canary_click, now),  # the canary's: applied once, then a duplicate
    ]
    offsets: dict[str, int] = {}
    batch = []
    for event, kafka_ts in sent:
        topic = Topic.PURCHASES.value if isinstance(event, PurchaseEvent) else Topic.CLICKS.value
        offsets[topic] = offsets.get(topic, -1) + 1
        value = event if isinstance(event, bytes) else encode(event)
        batch.append(Record(topic, 0, offsets[topic], kafka_ts, user.encode(), value))
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{tag}", publish=publish, offsets=offsets)
    metrics.observe_batch(len(batch), await processor.process(batch), now_ms=time.time() * 1000)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("streamrec_streams_events_total", type="click") == 3
    assert value("streamrec_streams_events_total", type="purchase") == 1
    assert {rule: value("streamrec_streams_rejections_total", rule=rule) for rule in
            ("malformed", "duplicate", "late_timestamp", "future_timestamp", "bot_click_rate", "price_mismatch")} == \
        {"malformed": 1, "duplicate": 1, "late_timestamp": 1, "future_timestamp": 0, "bot_click_rate": 0, "price_mismatch": 1}
    assert value("streamrec_streams_item_lookups_total", found="true") == 2
    assert value("streamrec_streams_item_lookups_total", found="false") == 2
    assert [value("streamrec_streams_event_delay_seconds_bucket", le=le) for le in ("0.1", "1.0", "2.0", "60.0", "120.0", "+Inf")] == \
        [1, 1, 3, 3, 4, 4]
    assert value("streamrec_streams_canary_events_total", outcome="applied") == 1
    assert value("streamrec_streams_canary_events_total", outcome="duplicate") == 1
    assert value("streamrec_streams_catalog_items_total") == 2
    assert {f: value("streamrec_streams_catalog_fields_missing_total", field=f) for f in CATALOG_FIELDS} == \
        {"title": 0, "category": 1, "brand": 1, "price": 1, "currency": 1}

    card = scorecard_from_metrics(generate_latest(metrics.registry).decode())
    figures = {check.name: check.value for check in card.checks}
    assert card.events_seen == 8  # 4 applied + 4 set aside; the canary's two are not among them
    assert figures["events_item_in_catalog"] == 2 / 4
    assert figures["catalog_items_with_price"] == figures["catalog_items_with_category"] == 1 / 2
    assert figures["catalog_items_with_title"] == 1.0
    assert figures["events_malformed"] == figures["events_duplicate"] == figures["events_late_or_future"] == 1 / 8
    assert figures["purchases_price_outlier"] == 1 / 2
    assert figures["event_delay_p99_seconds"] == pytest.approx(60 + 60 * (0.99 * 4 - 3))  # rank 3.96 in (60, 120]


async def test_a_canary_click_makes_a_profile_but_moves_no_item_statistics(client, publish, offsets):
    tag = uuid.uuid4().hex
    canary, shopper = f"{CANARY_USER_PREFIX}{tag}", f"u-{tag}"
    probed, also_probed = f"probed-{tag}", f"probed-2-{tag}"
    bought, also_bought = f"bought-{tag}", f"bought-2-{tag}"
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{tag}", publish=publish, offsets=offsets)
    now = int(time.time() * 1000)
    result = await processor.process(records([
        ClickEvent(user_id=canary, item_id=probed, ts=now), ClickEvent(user_id=canary, item_id=also_probed, ts=now + 1),  # co-visits
        ClickEvent(user_id=shopper, item_id=bought, ts=now), ClickEvent(user_id=shopper, item_id=also_bought, ts=now + 1),
    ]))
    assert len(result.applied) == 4 and canary in result.updated_users  # the recs worker is told: a list gets computed
    profile = layout.decode_profile(await client.get(layout.profile_key(canary)))
    assert profile.counts["click"] == 2 and [i.item_id for i in profile.recent] == [probed, also_probed]
    for item in (probed, also_probed):
        assert not await client.exists(layout.item_stats_key(item), layout.covisit_key(item))
        assert await client.zscore(layout.POPULARITY_SHORT_KEY, item) is None
    for item in (bought, also_bought):  # the same batch's shopper does move them
        assert await client.exists(layout.item_stats_key(item), layout.covisit_key(item)) == 2
        assert await client.zscore(layout.POPULARITY_SHORT_KEY, item) is not None
    assert result.quality.canary == {"applied": 2} and sum(result.quality.applied.values()) == 2
