"""The batch processor against the session's real Redis and Kafka (no Faust)."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
import redis.asyncio as redis
from confluent_kafka import Producer

from streamrec.events import ClickEvent, PurchaseEvent, encode
from streamrec.messages import AcceptedEvent
from streamrec.settings import StreamsSettings
from streamrec.store import layout
from streamrec.store.catalog import CatalogRecord
from streamrec.store.functions import load_functions
from streamrec.topics import Topic
from streams.processor import InteractionProcessor, Record


@pytest.fixture
async def client(settings):
    connection = redis.Redis.from_url(settings.redis_url.rsplit("/", 1)[0] + "/1")
    await load_functions(connection)
    yield connection
    await connection.aclose()


@pytest.fixture
def publish(settings):
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})

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


async def test_a_replayed_batch_is_skipped_by_the_watermark(client, publish):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish)
    user = f"u-{uuid.uuid4().hex}"
    batch = records([ClickEvent(user_id=user, item_id=f"t-{n}") for n in range(5)])
    first = await processor.process(batch)
    assert len(first.applied) == 5 and first.skipped == 0
    stored = await client.get(layout.profile_key(user))
    again = await processor.process(batch)  # a worker restarted before its offsets were committed
    assert again.applied == [] and again.skipped == 5
    assert await client.get(layout.profile_key(user)) == stored
    overlapping = await processor.process(batch[3:] + records([ClickEvent(user_id=user, item_id="t-9")], first_offset=5))
    assert overlapping.skipped == 2 and len(overlapping.applied) == 1
    assert layout.decode_profile(await client.get(layout.profile_key(user))).counts["click"] == 6


async def test_profiles_expire_after_their_ttl(client, publish):
    processor = InteractionProcessor(
        client=client, settings=StreamsSettings(profile_ttl_s=1), group=f"g-{uuid.uuid4().hex}", publish=publish
    )
    user = f"u-{uuid.uuid4().hex}"
    await processor.process(records([ClickEvent(user_id=user, item_id="t-1")]))
    assert 0 < await client.pttl(layout.profile_key(user)) <= 1000
    await asyncio.sleep(1.5)
    assert await client.get(layout.profile_key(user)) is None


async def test_rejected_events_reach_their_topics_with_reasons(client, publish, kafka_reader):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish)
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


async def test_an_unreadable_profile_is_counted_and_started_afresh(client, publish):
    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=f"g-{uuid.uuid4().hex}", publish=publish)
    user = f"u-{uuid.uuid4().hex}"
    await client.set(layout.profile_key(user), b"\x81\xa1f\x01")  # a profile of format 1: not readable here
    result = await processor.process(records([ClickEvent(user_id=user, item_id="t-1")]))
    assert len(result.applied) == 1 and processor.unreadable_profiles == 1
    rebuilt = layout.decode_profile(await client.get(layout.profile_key(user)))
    assert rebuilt.counts["click"] == 1 and [i.item_id for i in rebuilt.recent] == ["t-1"]


async def test_applied_events_reach_events_accepted_as_applied_before_the_redis_commit(client, settings, kafka_reader):
    group = f"g-{uuid.uuid4().hex}"
    user, item = f"u-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    watermark = layout.watermark_key(group, Topic.PURCHASES.value, 0)
    record = CatalogRecord(item, "Pipette", ("Lab",), None, 4.5, "EUR", True, int(time.time() * 1000))
    await client.hset(layout.item_key(item), mapping=layout.encode_catalog(record))
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    committed_while_publishing = []

    async def publish_many(messages):
        committed_while_publishing.append(await client.get(watermark))  # what Redis holds during the delivery
        for topic, key, value in messages:
            producer.produce(topic, value, key)
        assert await asyncio.to_thread(producer.flush, 30) == 0

    processor = InteractionProcessor(client=client, settings=StreamsSettings(), group=group, publish=publish_many)
    purchase = PurchaseEvent(user_id=user, item_id=item, order_id="o1")  # no price: the catalog's is filled in
    result = await processor.process(records([purchase], topic=Topic.PURCHASES.value))
    assert [message.event.event_id for message in result.accepted] == [purchase.event_id]
    assert committed_while_publishing == [None] and await client.get(watermark) == b"0"  # delivered before the EXEC
    accepted = kafka_reader.read(Topic.ACCEPTED, match=lambda v: v.get("event", {}).get("user_id") == user, expected=1)
    assert len(accepted) == 1 and accepted[0]["_key"] == user
    assert AcceptedEvent.decode(orjson.dumps({k: v for k, v in accepted[0].items() if not k.startswith("_")})).event == \
        purchase.model_copy(update={"price": 4.5, "currency": "EUR"})
    assert (accepted[0]["topic"], accepted[0]["partition"], accepted[0]["offset"]) == (Topic.PURCHASES.value, 0, 0)
