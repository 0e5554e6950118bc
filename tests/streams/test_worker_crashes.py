"""Crash tests of the streams worker against the session's real Kafka, Redis and Triton.

A 50,000-event replay of real data (Diginetica views and purchases, then
YooChoose clicks), plus injected duplicates, malformed records and events from
the future, is processed while workers are killed with SIGKILL at random
moments. The final Redis state must equal a batch recomputation from the same
events: counts exact, floats within 1e-6 (the float16 profile vector within
float16 resolution), nothing lost and nothing counted twice.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid

import httpx
import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from streamrec.settings import RedisSettings
from streamrec.datasets.loaders import load
from streamrec.datasets.replay import catalog_event, interaction_event
from streamrec.kafka_admin import commit_group_offsets, end_offsets
from streamrec.kafka_client import client_config
from streamrec.lag import LagReader
from streamrec.messages import AcceptedEvent
from streamrec.producer import EventProducer
from streamrec.settings import Settings, StreamsSettings
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.connection import connect_blocking
from streamrec.topics import INTERACTION_TOPICS, Topic
from streamrec.stack.isolated import stack_environment
from streams.recompute import read_interactions, recompute
from tests.streams.test_rules_and_arithmetic import vectors_agree

REPLAY_EVENTS = 50_000
COVISIT_TOP_N = 100_000  # no trimming, so co-visit counts can be compared exactly


class Worker:
    """One `streamrec streams worker` process."""

    def __init__(self, settings: Settings, *, app_id: str, redis_url: str, name: str, agents: str = '["interactions","catalog"]') -> None:
        self.name = name
        self.web_port = free_port()
        self.env = {
            **stack_environment(settings.stack),
            "STREAMREC_REDIS__URL": redis_url,
            "STREAMREC_STREAMS__APP_ID": app_id,
            "STREAMREC_STREAMS__WEB_PORT": str(self.web_port),
            "STREAMREC_STREAMS__COVISIT_TOP_N": str(COVISIT_TOP_N),
            "STREAMREC_STREAMS__SESSION_TIMEOUT_S": "6",
            "STREAMREC_STREAMS__AGENTS": agents,
        }
        self.process: subprocess.Popen | None = None
        self.log_path = f"/tmp/streamrec-test-worker-{app_id}-{name}.log"
        self.log = open(self.log_path, "ab")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "streams", "worker", "--loglevel", "warning"],
            env=self.env, stdout=self.log, stderr=self.log,
        )

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} died on its own"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5).text


def interaction_lag(settings: Settings, group: str) -> int:
    topics = [t.value for t in INTERACTION_TOPICS]
    reader = LagReader(settings.kafka)
    try:
        return sum(row.lag for row in reader.read([group], sample_s=0, topics=topics) if row.topic in topics)
    finally:
        reader.close()


def wait_caught_up(settings: Settings, group: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if interaction_lag(settings, group) == 0:
            return
        time.sleep(1)
    raise AssertionError(f"group {group} did not catch up within {timeout_s} s (lag {interaction_lag(settings, group)})")


@pytest.fixture(scope="module")
def replay_input(settings: Settings, data_dir) -> dict:
    """Catalog + 50,000 interaction events in Kafka (produced once for the module), with injected faults."""
    diginetica = load("diginetica", data_dir)
    yoochoose = load("yoochoose", data_dir)
    rows = (diginetica.events + yoochoose.events)[:REPLAY_EVENTS]
    # Where this module's input starts: other tests share the session's topics, and the workers
    # and the recomputation must see exactly this input, not what earlier tests produced.
    start = end_offsets(settings.kafka, [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)])
    now = int(time.time() * 1000)
    with EventProducer.from_settings(settings) as producer:
        for item in diginetica.catalog:
            producer.produce(catalog_event(item, now))
        producer.flush()
        events = [interaction_event(row, now + i // 100) for i, row in enumerate(rows)]
        for event in events:
            producer.produce(event)
        duplicates = random.Random(3).sample(events, 300)  # a client retrying: same event_id again
        for event in duplicates:
            producer.produce(event)
    raw = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})
    malformed = [b"{not json", b'{"type": "click", "user_id": "dg-x"}', b"\xff\xfe", b"[]", b'{"type":"click","user_id":"u","item_id":"i","ts":"x"}']
    for value in malformed:
        raw.produce(Topic.CLICKS.value, value, b"faulty-producer")
    future_ids = []
    for k in range(5):  # a producer with a broken clock, bypassing the SDK's own check
        event_id = str(uuid.uuid4())
        future_ids.append(event_id)
        event = {"type": "click", "event_id": event_id, "user_id": f"dg-future-{k}", "item_id": "dg-25911",
                 "ts": int(time.time() * 1000) + 3_600_000}
        raw.produce(Topic.CLICKS.value, orjson.dumps(event), event["user_id"].encode())
    assert raw.flush(30) == 0
    return {"duplicates": {str(e.event_id) for e in duplicates}, "future": set(future_ids), "catalog": len(diginetica.catalog),
            "start": start}


def load_catalog(settings: Settings, url: str, client: redis.Redis, replay_input: dict, timeout_s: float = 180) -> None:
    """Store the catalog first with a catalog-only worker, so every event finds its item (deterministic state)."""
    expected = replay_input["catalog"]
    group = f"catalog-{uuid.uuid4().hex[:8]}"
    commit_group_offsets(settings.kafka, group, replay_input["start"])
    loader = Worker(settings, app_id=group, redis_url=url, name="catalog", agents='["catalog"]')
    loader.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(1 for _ in client.scan_iter(layout.item_key("dg-*"), count=5000)) >= expected:
                return
            time.sleep(1)
        raise AssertionError("catalog not stored in time")
    finally:
        loader.stop()


def read_accepted(settings: Settings, start: dict[tuple[str, int], int]) -> list[tuple[bytes, AcceptedEvent]]:
    """(key, message) of every ``events.accepted`` message after ``start``, up to today's log end."""
    ends = end_offsets(settings.kafka, [Topic.ACCEPTED.value])
    consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": f"accepted-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    found = []
    try:
        pending = {tp for tp, end in ends.items() if end > start.get(tp, 0)}
        consumer.assign([TopicPartition(*tp, start.get(tp, 0)) for tp in pending])
        while pending:
            message = consumer.poll(10)
            assert message is not None, f"timed out reading {Topic.ACCEPTED.value} {sorted(pending)}"
            if message.error():
                continue
            tp = (message.topic(), message.partition())
            if message.offset() < ends[tp]:
                found.append((message.key(), AcceptedEvent.decode(message.value())))
            if message.offset() + 1 >= ends[tp]:
                pending.discard(tp)
    finally:
        consumer.close()
    return found


def assert_state_equals_recomputation(settings: Settings, client: redis.Redis, start: dict[tuple[str, int], int],
                                      accepted_start: dict[tuple[str, int], int] | None = None) -> None:
    """Redis equals the recomputation; with ``accepted_start``, so does what reached ``events.accepted``
    after it: every applied event at least once (a kill may repeat one, never lose one), nothing else."""
    records = read_interactions(settings.kafka, start)
    assert len(records) >= REPLAY_EVENTS + 300 + 10
    catalog = {}
    for key in client.scan_iter(layout.item_key("*"), count=5000):
        item_id = key.decode().removeprefix(layout.ITEM_PREFIX)
        catalog[item_id] = layout.decode_catalog(item_id, client.hmget(key, layout.CATALOG_FIELDS))
    streams_settings = StreamsSettings(covisit_top_n=COVISIT_TOP_N)
    expected = recompute(records, catalog, streams_settings)
    if accepted_start is not None:
        accepted = read_accepted(settings, accepted_start)
        assert {str(message.event.event_id) for _, message in accepted} == set(expected.accepted)
        assert len(accepted) >= len(expected.accepted) and all(key == message.event.user_id.encode() for key, message in accepted)
    assert expected.rejected["duplicate"] >= 300 and expected.rejected["future_timestamp"] >= 5
    assert expected.rejected["malformed"] >= 5

    users = sorted(expected.profiles)
    stored = dict(zip(users, client.mget([layout.profile_key(u) for u in users]), strict=True))
    mismatches = []
    for user in users:
        want, raw = expected.profiles[user], stored[user]
        assert raw is not None, f"profile of {user} missing"
        got = layout.decode_profile(raw)
        if got.counts != want.counts or got.recent != want.recent or set(got.purchased) != set(want.purchased):
            mismatches.append(user)
            continue
        assert got.affinities.keys() == want.affinities.keys(), user
        for category, value in want.affinities.items():
            assert abs(got.affinities[category] - value) <= 1e-6 * max(1.0, abs(value)), (user, category)
        if want.vector is not None:
            assert vectors_agree(got.vector, want.vector), user
    assert not mismatches, f"{len(mismatches)} profiles differ, e.g. {mismatches[:3]}"

    items = sorted(expected.item_events)
    with client.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hmget(layout.item_stats_key(item), layout.POPULARITY_FIELDS)
        stats = pipe.execute()
    for item, (short, long_, newest) in zip(items, stats, strict=True):
        want_short, want_newest = expected.popularity(item, streams_settings.popularity_short_s * 1000)
        want_long, _ = expected.popularity(item, streams_settings.popularity_long_s * 1000)
        assert int(newest) == want_newest, item
        assert abs(float(short) - want_short) <= 1e-6 * max(1.0, want_short), item
        assert abs(float(long_) - want_long) <= 1e-6 * max(1.0, want_long), item

    pairs = sorted(expected.covisits)
    with client.pipeline(transaction=False) as pipe:
        for source, neighbour in pairs:
            pipe.zscore(layout.covisit_key(source), neighbour)
        scores = pipe.execute()
    wrong = [(pair, score) for pair, score in zip(pairs, scores, strict=True) if score != expected.covisits[pair]]
    assert not wrong, f"{len(wrong)} co-visit counts differ, e.g. {wrong[:3]}"
    stored_pairs = sum(client.zcard(key) for key in client.scan_iter(layout.covisit_key("*"), count=5000))
    assert stored_pairs == len(pairs), "co-visit pairs that the events do not explain"


def rejected_ids_on_side_topics(kafka_reader, ids: set[str]) -> set[str]:
    found = kafka_reader.read(
        Topic.QUARANTINE, match=lambda v: v.get("event", {}).get("event_id") in ids, expected=len(ids), timeout_s=60
    )
    return {v["event"]["event_id"] for v in found}


@pytest.fixture
def redis_db(settings: Settings):
    """A Redis database of its own for each crash scenario (the functions library is server-wide)."""
    db = random.Random().randint(2, 15)
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = connect_blocking(settings.redis.model_copy(update={"url": url}))
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def test_killed_worker_restarts_without_losing_or_double_counting(settings, replay_input, redis_db, kafka_reader):
    url, client = redis_db
    group = f"crash-one-{uuid.uuid4().hex[:8]}"
    worker = Worker(settings, app_id=group, redis_url=url, name="w1")
    rng = random.Random()
    kills = 0
    try:
        load_catalog(settings, url, client, replay_input)
        commit_group_offsets(settings.kafka, group, replay_input["start"])
        accepted_start = end_offsets(settings.kafka, [Topic.ACCEPTED.value])
        worker.start()
        while kills < 3:
            time.sleep(rng.uniform(1.5, 5.0))
            if interaction_lag(settings, group) == 0 and kills > 0:
                break
            worker.kill()
            kills += 1
            worker.start()
        assert kills == 3, "the replay finished before three kills; make it longer"
        wait_caught_up(settings, group)
        metrics = worker.metrics()
        assert "streamrec_streams_event_to_redis_seconds_bucket" in metrics
        assert "streamrec_streams_unreadable_profiles 0.0" in metrics
    finally:
        worker.stop()
    assert_state_equals_recomputation(settings, client, replay_input["start"], accepted_start)
    expected_rejected = replay_input["duplicates"] | replay_input["future"]
    assert rejected_ids_on_side_topics(kafka_reader, expected_rejected) == expected_rejected
    dead = kafka_reader.read(Topic.DLQ, match=lambda v: v.get("source") == "streams:events.clicks", expected=5, timeout_s=30)
    assert len({letter["raw_sha256"] for letter in dead}) >= 5 and all(letter["reason"] for letter in dead)
    updates = kafka_reader.read(Topic.PROFILES_UPDATED, match=lambda v: v.get("user_id", "").startswith("dg-"), expected=1, timeout_s=30, settle_s=0)
    assert updates and updates[0]["newest_event_ts"] > 0


def test_two_workers_share_partitions_and_survive_one_being_killed(settings, replay_input, redis_db):
    url, client = redis_db
    group = f"crash-two-{uuid.uuid4().hex[:8]}"
    first = Worker(settings, app_id=group, redis_url=url, name="w1")
    second = Worker(settings, app_id=group, redis_url=url, name="w2")
    try:
        load_catalog(settings, url, client, replay_input)
        commit_group_offsets(settings.kafka, group, replay_input["start"])
        first.start()
        second.start()
        time.sleep(random.Random().uniform(2.0, 5.0))
        assert interaction_lag(settings, group) != 0, "the replay finished before the kill; make it longer"
        first.kill()
        wait_caught_up(settings, group)  # the survivor takes the dead worker's partitions over
    finally:
        first.stop()
        second.stop()
    assert_state_equals_recomputation(settings, client, replay_input["start"])


class RedisProcess:
    """A ``redis-server`` of the test's own, so it can be killed and restored from an older snapshot."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "no", "--save", "", "--logfile", str(self.folder / "redis.log")],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if connect_blocking(RedisSettings(url=self.url)).ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def snapshot(self, name: str) -> None:
        """A point-in-time copy of the data set (what a lagging replica or an older backup holds)."""
        client = connect_blocking(RedisSettings(url=self.url))
        client.save()
        client.close()
        (self.folder / "dump.rdb").rename(self.folder / name)

    def kill_and_restore(self, name: str) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        (self.folder / "dump.rdb").unlink(missing_ok=True)
        (self.folder / "dump.rdb").write_bytes((self.folder / name).read_bytes())
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_watermarks_at_end(settings: Settings, client: redis.Redis, group: str, start: dict[tuple[str, int], int],
                           timeout_s: float = 300) -> None:
    """Until Redis's watermarks reach the log end of every interaction partition that has records
    after ``start`` (where the group began): once Redis lost writes, committed offsets (and so
    lag) say nothing about what Redis holds."""
    ends = end_offsets(settings.kafka, [t.value for t in INTERACTION_TOPICS])
    keys = {tp: layout.watermark_key(group, *tp) for tp, end in ends.items() if end > start.get(tp, 0)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        values = dict(zip(keys, client.mget(list(keys.values())), strict=True))
        behind = {tp: int(v) if v else -1 for tp, v in values.items() if (int(v) if v else -1) < ends[tp] - 1}
        if not behind:
            return
        time.sleep(1)
    raise AssertionError(f"watermarks still behind the log end: {behind}")


def test_redis_restored_from_an_older_snapshot_is_repaired_by_reading_again(settings, replay_input, tmp_path):
    """Redis loses its last writes twice: once together with the worker (a host crash: the restarted
    worker finds its first batches past the watermarks), once under the running worker with no new
    events arriving (the periodic check finds it). Both times the state ends equal to the recomputation."""
    node = RedisProcess(tmp_path)
    node.start()
    client = connect_blocking(RedisSettings(url=node.url))
    group = f"crash-redis-{uuid.uuid4().hex[:8]}"
    worker = Worker(settings, app_id=group, redis_url=node.url, name="w1")
    try:
        load_catalog(settings, node.url, client, replay_input)
        commit_group_offsets(settings.kafka, group, replay_input["start"])
        total = interaction_lag(settings, group)
        worker.start()
        deadline = time.monotonic() + 120
        while interaction_lag(settings, group) > total * 0.7 and time.monotonic() < deadline:
            time.sleep(0.2)
        node.snapshot("older.rdb")
        while interaction_lag(settings, group) > total * 0.3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert interaction_lag(settings, group) > 0, "the replay finished before the crash; make it longer"
        worker.kill()  # the host goes: worker and Redis together, Redis comes back with the older data
        node.kill_and_restore("older.rdb")
        worker.start()
        wait_watermarks_at_end(settings, client, group, replay_input["start"])
        assert_state_equals_recomputation(settings, client, replay_input["start"])

        node.kill_and_restore("older.rdb")  # again, under the running worker, with no new events at all
        wait_watermarks_at_end(settings, client, group, replay_input["start"])
        reread = sum(float(line.split()[-1]) for line in worker.metrics().splitlines()
                     if line.startswith("streamrec_streams_reread_records_total{"))
        assert reread >= 1, "the running worker did not report reading records again"
        worker.stop()
        assert_state_equals_recomputation(settings, client, replay_input["start"])
    finally:
        worker.stop()
        client.close()
        node.stop()
