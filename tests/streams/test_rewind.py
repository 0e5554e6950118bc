"""Lost Redis writes are found against real Kafka and Redis, and gaps that are not lost writes are not.

Each test writes real records into a topic of its own, so what Kafka holds (log start,
transaction markers) is known exactly, then feeds the processor those records as Faust would.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.settings import RedisSettings
from streamrec.store.connection import connect
from streamrec.kafka_client import client_config
from streamrec.events import ClickEvent, encode
from streamrec.settings import StreamsSettings
from streamrec.store import layout
from streamrec.store.functions import load_functions
from streams.processor import InteractionProcessor, Record
from streams.rewind import KafkaOffsets


@pytest.fixture
async def client(settings):
    connection = connect(RedisSettings(url=settings.redis_url.rsplit("/", 1)[0] + "/1"))
    await load_functions(connection)
    yield connection
    await connection.aclose()


@pytest.fixture
def topic(settings):
    """A one-partition topic of the test's own (deleted afterwards)."""
    name = f"rewind-{uuid.uuid4().hex[:10]}"
    admin = AdminClient(client_config(settings.kafka, client="test"))
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


@pytest.fixture
def group():
    return f"g-{uuid.uuid4().hex}"


@pytest.fixture
def offsets(settings, group):
    reader = KafkaOffsets(client_config(settings.kafka, client="test"), group=group)
    yield reader
    reader.close()


def produce(settings, topic: str, count: int, user: str, *, transactional: bool = False) -> None:
    """``count`` clicks of ``user``; with ``transactional``, one transaction per 3 records (each leaves a marker)."""
    config = {**client_config(settings.kafka, client="test"), "acks": "all"}
    if transactional:
        config["transactional.id"] = f"tx-{uuid.uuid4().hex}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
    events = [ClickEvent(user_id=user, item_id=f"t-{n}") for n in range(count)]
    for start in range(0, count, 3 if transactional else count):
        if transactional:
            producer.begin_transaction()
        for event in events[start:start + (3 if transactional else count)]:
            producer.produce(topic, encode(event), user.encode())
        if transactional:
            producer.commit_transaction(30)
    assert producer.flush(30) == 0


def consume(settings, topic: str) -> list[Record]:
    """Every readable record of the topic, as the worker receives them (markers are not delivered)."""
    consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": f"read-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Record] = []
    try:
        while True:
            message = consumer.poll(10)
            assert message is not None, f"timed out reading {topic}"
            if message.error():
                break  # the end of the partition
            found.append(Record(topic, 0, message.offset(), message.timestamp()[1], message.key(), message.value()))
    finally:
        consumer.close()
    return found


def processor(client, group, offsets, publish=None) -> InteractionProcessor:
    async def nowhere(messages):  # the outcomes' topics are not what these tests look at
        return None

    return InteractionProcessor(client=client, settings=StreamsSettings(), group=group, publish=publish or nowhere, offsets=offsets)


async def profile_counts(client, user: str) -> int:
    raw = await client.get(layout.profile_key(user))
    return sum(layout.decode_profile(raw).counts.values()) if raw else 0


async def apply_then_lose(client, worker: InteractionProcessor, user: str, group: str, topic: str,
                          kept: list[Record], lost: list[Record]) -> None:
    """Apply ``kept`` then ``lost``, then restore Redis to the snapshot taken between them
    (profile and watermark together): the writes of ``lost`` are gone, Kafka still holds them."""
    keys = [layout.profile_key(user), layout.watermark_key(group, topic, 0)]
    await worker.process(kept)
    snapshot = {key: await client.dump(key) for key in keys}
    await worker.process(lost)
    for key, value in snapshot.items():
        await client.restore(key, 0, value, replace=True)


async def test_a_batch_past_a_lost_watermark_first_applies_what_redis_lost(settings, client, topic, group, offsets):
    user = f"u-{uuid.uuid4().hex}"
    produce(settings, topic, 10, user)
    records = consume(settings, topic)
    assert [r.offset for r in records] == list(range(10))
    worker = processor(client, group, offsets)
    keys = [layout.profile_key(user), layout.watermark_key(group, topic, 0)]
    await worker.process(records[:2])
    snapshot = {key: await client.dump(key) for key in keys}  # an older snapshot: profile and watermark together
    await worker.process(records[2:6])
    assert await profile_counts(client, user) == 6
    for key, value in snapshot.items():  # Redis restored from it (a failover to a lagging replica)
        await client.restore(key, 0, value, replace=True)
    result = await worker.process(records[6:])  # the next batch, as Kafka delivers it after the committed offset
    assert result.reread == {topic: 4} and len(result.applied) == 8
    assert [applied.item_id for applied in result.applied] == [f"t-{n}" for n in range(2, 10)]
    assert await profile_counts(client, user) == 10
    again = await worker.process(records)  # a replay of everything: nothing counted twice
    assert again.skipped == 10 and not again.applied and not again.reread


async def test_gaps_left_by_transaction_markers_or_retention_are_not_lost_writes(settings, client, topic, group, offsets):
    user = f"u-{uuid.uuid4().hex}"
    produce(settings, topic, 9, user, transactional=True)  # 3 transactions: offsets 0-2, 4-6, 8-10 (markers 3, 7, 11)
    records = consume(settings, topic)
    assert [r.offset for r in records] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    worker = processor(client, group, offsets)
    for batch in (records[:3], records[3:6], records[6:]):  # each batch starts right after a marker
        result = await worker.process(batch)
        assert not result.reread and len(result.applied) == 3
    assert await profile_counts(client, user) == 9

    admin = AdminClient(client_config(settings.kafka, client="test"))
    for future in admin.delete_records([TopicPartition(topic, 0, 4)]).values():
        future.result(30)
    await client.delete(layout.profile_key(user))
    fresh = processor(client, f"{group}-new", offsets)
    result = await fresh.process(records[3:])  # a new group on a log that now starts at 4 (as after retention)
    assert not result.reread and not result.unrecoverable and len(result.applied) == 6


async def test_lost_writes_that_retention_already_deleted_are_counted_and_the_rest_applied(settings, client, topic, group, offsets):
    user = f"u-{uuid.uuid4().hex}"
    produce(settings, topic, 8, user)
    records = consume(settings, topic)
    worker = processor(client, group, offsets)
    await apply_then_lose(client, worker, user, group, topic, records[:3], records[3:])  # Redis back to offset 2
    admin = AdminClient(client_config(settings.kafka, client="test"))  # retention then deletes offsets 3 and 4
    for future in admin.delete_records([TopicPartition(topic, 0, 5)]).values():
        future.result(30)
    result = await worker.catch_up({(topic, 0): 8})
    assert result.reread == {topic: 3} and result.unrecoverable == {topic: 2}
    assert await profile_counts(client, user) == 6


async def test_writes_lost_on_a_quiet_partition_are_applied_again_by_the_check(settings, client, topic, group, offsets):
    user = f"u-{uuid.uuid4().hex}"
    produce(settings, topic, 8, user)
    records = consume(settings, topic)
    worker = processor(client, group, offsets)
    await apply_then_lose(client, worker, user, group, topic, records[:5], records[5:])
    # No new record arrives; the worker's periodic check knows it applied up to offset 8.
    result = await worker.catch_up({(topic, 0): 8})
    assert result.reread == {topic: 3} and await profile_counts(client, user) == 8
    assert not (await worker.catch_up({(topic, 0): 8})).reread
    # The group's committed offset stands for progress in a process that has applied nothing yet.
    consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 8)], asynchronous=False)
    consumer.close()
    assert await offsets.committed([(topic, 0)]) == {(topic, 0): 8}


async def test_a_group_new_to_this_redis_starts_where_it_stands_and_reads_nothing_before(settings, client, topic, group, offsets):
    """A group that starts at the log end (or a new database) has no watermark: what came before
    it was never applied here, so it is neither lost nor read again."""
    user = f"u-{uuid.uuid4().hex}"
    produce(settings, topic, 7, user)
    records = consume(settings, topic)
    worker = processor(client, group, offsets)
    assert not (await worker.catch_up({(topic, 0): 5})).reread  # the periodic check, before any batch
    result = await worker.process(records[5:])
    assert not result.reread and [applied.item_id for applied in result.applied] == ["t-5", "t-6"]
    assert await profile_counts(client, user) == 2
