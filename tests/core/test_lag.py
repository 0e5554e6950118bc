"""Lag in messages and seconds, and Burrow's statuses, against consumer groups on the real broker.

Each test makes a topic of its own and writes records with chosen timestamps, commits offsets
for a group by hand, and reads what the monitor says: the exact lag in seconds, and each status
rule (a group that stops, stalls, rewinds, falls behind, and recovers).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.kafka_client import client_config
from streamrec.lag import LagMonitor, LagReader, Status, Thresholds
from streamrec.lag.status import Sample, judge_partition
from streamrec.settings import KafkaSettings
from streamrec.stack.isolated import stack_environment

LOOSE = Thresholds(warn_lag_s=1e9, err_lag_s=1e9, window=3)


class Topic:
    """A fresh topic with records stamped ``stamps[i]`` (epoch ms) on partition ``i % partitions``."""

    def __init__(self, kafka: KafkaSettings, partitions: int = 1) -> None:
        self.name = f"lag.check.{uuid.uuid4().hex[:8]}"
        self.partitions = partitions
        admin = AdminClient(client_config(kafka, client="test"))  # kept alive until the topic exists
        admin.create_topics([NewTopic(self.name, partitions, 1)])[self.name].result(30)
        self._producer = Producer({**client_config(kafka, client="test"), "acks": "all", "linger.ms": 0})

    def write(self, stamps_ms: list[int], partition: int = 0) -> None:
        for n, stamp in enumerate(stamps_ms):
            self._producer.produce(self.name, f"m{n}".encode(), partition=partition, timestamp=stamp)
        assert self._producer.flush(30) == 0


def commit(kafka: KafkaSettings, group: str, topic: str, offset: int, partition: int = 0) -> None:
    consumer = Consumer({**client_config(kafka, client="test"), "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    consumer.close()


def group_name() -> str:
    return f"lag-group-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def reader(settings):
    reader = LagReader(settings.kafka)
    yield reader
    reader.close()


def test_lag_seconds_is_the_age_of_the_record_at_the_committed_offset(settings, reader):
    topic, group = Topic(settings.kafka, partitions=2), group_name()
    now_ms = int(time.time() * 1000)
    stamps = [now_ms - (100 - n) * 1000 for n in range(10)]  # 100 s old down to 91 s old
    topic.write(stamps, partition=0)
    topic.write(stamps[:5], partition=1)
    commit(settings.kafka, group, topic.name, 4)

    [snapshot] = reader.snapshot([group], topics=[topic.name])
    rows = {p.partition: p for p in snapshot.partitions}
    assert (rows[0].committed, rows[0].log_end, rows[0].lag) == (4, 10, 6)
    expected = (snapshot.at * 1000 - stamps[4]) / 1000  # offset 4 is the oldest unread record
    assert abs(rows[0].lag_seconds - expected) < 1.0 and rows[0].lag_seconds_exact
    assert rows[1].committed is None and rows[1].lag == 5  # never committed: from log start, its first record
    assert abs(rows[1].lag_seconds - (snapshot.at * 1000 - stamps[0]) / 1000) < 1.0
    assert snapshot.state == "EMPTY" and not snapshot.active

    commit(settings.kafka, group, topic.name, 10)
    [caught_up] = reader.snapshot([group])  # every partition of a topic it consumes, committed or not
    assert [(p.partition, p.lag, p.lag_seconds == 0.0) for p in caught_up.partitions] == [(0, 0, True), (1, 5, False)]


def test_a_group_that_stops_is_STOP_and_recovers_to_OK(settings, reader):
    topic, group = Topic(settings.kafka), group_name()
    topic.write([int(time.time() * 1000)] * 10)
    commit(settings.kafka, group, topic.name, 3)
    monitor = LagMonitor(reader, LOOSE, groups=[group])
    statuses = [monitor.sample()[0].status for _ in range(3)]
    assert statuses == [Status.OK, Status.OK, Status.STOP]  # the window must fill before the movement rules judge
    commit(settings.kafka, group, topic.name, 10)
    recovered = monitor.sample()[0]
    assert recovered.status is Status.OK and recovered.lag == 0


def test_a_live_member_that_does_not_move_is_STALL(settings, reader):
    topic, group = Topic(settings.kafka), group_name()
    topic.write([int(time.time() * 1000)] * 10)
    member = Consumer({**client_config(settings.kafka, client="test"), "group.id": group, "enable.auto.commit": False,
                       "auto.offset.reset": "earliest"})
    member.subscribe([topic.name])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        member.commit(offsets=[TopicPartition(topic.name, 0, 2)], asynchronous=False)
        monitor = LagMonitor(reader, LOOSE, groups=[group])
        reports = [monitor.sample()[0] for _ in range(3)]
        assert reports[-1].members == 1 and reports[-1].status is Status.STALL, reports[-1]
        assert "does not move" in reports[-1].rule
    finally:
        member.close()


def test_an_offset_that_goes_back_is_REWIND(settings, reader):
    topic, group = Topic(settings.kafka), group_name()
    topic.write([int(time.time() * 1000)] * 10)
    commit(settings.kafka, group, topic.name, 8)
    monitor = LagMonitor(reader, LOOSE, groups=[group])
    assert monitor.sample()[0].status is Status.OK
    commit(settings.kafka, group, topic.name, 3)
    assert monitor.sample()[0].status is Status.REWIND  # at once: no full window needed


def test_a_consumer_falling_behind_is_WARN_and_an_old_backlog_is_ERR(settings, reader):
    topic, group = Topic(settings.kafka), group_name()
    topic.write([int(time.time() * 1000)] * 5)
    monitor = LagMonitor(reader, LOOSE, groups=[group])
    offset = 1
    for _ in range(3):  # moves one record per sample while three arrive
        commit(settings.kafka, group, topic.name, offset)
        topic.write([int(time.time() * 1000)] * 3)
        report = monitor.sample()[0]
        offset += 1
    assert report.status is Status.WARN and "never falls" in report.rule
    assert report.partitions[0].lag_trend > 0 and math.isinf(report.catch_up_s)

    old, fresh_group = Topic(settings.kafka), group_name()
    old.write([int(time.time() * 1000) - 120_000] * 5)  # two minutes old
    commit(settings.kafka, fresh_group, old.name, 1)
    strict = LagMonitor(reader, Thresholds(warn_lag_s=30, err_lag_s=90, window=3), groups=[fresh_group])
    judged = strict.sample()[0]
    assert judged.status is Status.ERR and "90 s" in judged.rule


def test_the_movement_rules_follow_burrow():
    """Pure rule checks on hand-made windows (the broker tests above cover the readings)."""
    def window(*pairs: tuple[int, int]) -> list[Sample]:
        return [Sample(at=float(n), committed=c, log_end=c + lag, lag=lag, lag_seconds=1.0) for n, (c, lag) in enumerate(pairs)]

    judge = lambda samples, active=True: judge_partition(samples, group_active=active, thresholds=LOOSE)  # noqa: E731
    assert judge(window((5, 3), (6, 0), (6, 4))).status is Status.OK  # zero lag inside the window
    assert judge(window((5, 3), (7, 2), (9, 1))).status is Status.OK  # catching up
    assert judge(window((5, 3), (6, 3), (7, 5))).status is Status.WARN
    assert judge(window((5, 3), (5, 3), (5, 3))).status is Status.STALL
    assert judge(window((5, 3), (5, 3), (5, 3)), active=False).status is Status.STOP
    assert judge(window((5, 3), (4, 4))).status is Status.REWIND
    caught = judge(window((5, 30), (7, 20), (9, 10)))
    assert caught.catch_up_s == pytest.approx(1.0) and caught.consume_rate == pytest.approx(2.0)


def test_cli_json_and_exit_codes(settings):
    topic, group = Topic(settings.kafka), group_name()
    stamp_ms = int(time.time() * 1000) - 50_000
    topic.write([stamp_ms] * 10)
    commit(settings.kafka, group, topic.name, 4)
    # The records keep ageing while each command starts (seconds on a loaded CI machine), so the
    # seconds thresholds are set far away except where a test is about them.
    far = {"STREAMREC_OPS__WARN_LAG_S": "100000", "STREAMREC_OPS__ERR_LAG_S": "200000"}

    def run(*extra: str, env: dict[str, str] = far) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streamrec", "lag", "--group", group, "--sample-s", "0", *extra],
            env={**stack_environment(settings.stack), **env}, capture_output=True, text=True, timeout=60,
        )

    started_ms = time.time() * 1000
    result = run("--json")
    ended_ms = time.time() * 1000
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)
    [row] = [p for p in report["partitions"] if p["topic"] == topic.name]
    assert (row["committed"], row["log_end"], row["lag"]) == (4, 10, 6)
    # the age of the record at offset 4 at some moment while the command ran
    assert (started_ms - stamp_ms) / 1000 - 0.5 < row["lag_seconds"] < (ended_ms - stamp_ms) / 1000 + 0.5
    assert report["status"] == "OK"
    assert row["catch_up_s"] is None  # not moving: no estimate

    assert run("--max-lag", "5").returncode == 2 and "exceeds" in run("--max-lag", "5").stdout
    assert run("--max-lag", "6").returncode == 0
    assert run("--max-lag-s", "30").returncode == 2
    warn = run(env={"STREAMREC_OPS__WARN_LAG_S": "30", "STREAMREC_OPS__ERR_LAG_S": "100000"})
    assert warn.returncode == 1 and "WARN" in warn.stdout
    watched = run("--watch", "--interval", "0.2", "--count", "3")
    assert watched.returncode == 0 and "consumer lag" in watched.stdout


def test_an_external_consumer_of_recommendations_is_judged_too(settings, reader):
    """kcat, a client nobody here wrote, consumes in a group of its own; the monitor sees it."""
    import shutil

    from streamrec.stack.system import SystemPackage, ensure_installed

    ensure_installed([SystemPackage("kcat", "kcat")], say=print)
    topic, group = Topic(settings.kafka), f"shop-service-{uuid.uuid4().hex[:6]}"
    now_ms = int(time.time() * 1000)
    topic.write([now_ms] * 8)
    # A balanced consumer (-G) that reads to the end, commits and exits.
    consumed = subprocess.run(
        [shutil.which("kcat"), "-b", settings.bootstrap_servers, "-G", group, "-o", "beginning", "-e", "-q",
         "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100", topic.name],
        capture_output=True, text=True, timeout=60,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert len(consumed.stdout.split()) == 8
    topic.write([now_ms + 1000] * 3)  # three more that kcat never read
    [report] = LagMonitor(reader, LOOSE, groups=[group]).sample()
    [row] = report.partitions
    assert (row.offsets.committed, row.offsets.lag) == (8, 3)
    assert abs(row.offsets.lag_seconds - (report.at * 1000 - (now_ms + 1000)) / 1000) < 1.0
    assert report.members == 0 and report.status is Status.OK  # one sample: too few to call it stopped
