"""`streamrec lag` against a consumer group with known committed offsets on the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.stack.isolated import stack_environment


def test_lag_reports_committed_log_end_and_lag_per_partition(settings):
    topic, group = f"lag.check.{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    for partition, count in ((0, 10), (1, 5)):
        for n in range(count):
            producer.produce(topic, f"m{n}".encode(), partition=partition)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group, "enable.auto.commit": False})
    # Kafka's committed offset is the next one to read: 4 means offsets 0..3 are done.
    consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    consumer.close()

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streamrec", "lag", "--group", group, "--sample-s", "0", *extra],
            env=stack_environment(settings.stack), capture_output=True, text=True, timeout=60,
        )

    result = run("--json")
    assert result.returncode == 0, result.stderr
    rows = {row["partition"]: row for row in json.loads(result.stdout) if row["topic"] == topic}
    assert rows[0]["committed"] == 4 and rows[0]["log_end"] == 10 and rows[0]["lag"] == 6
    assert rows[1]["committed"] is None and rows[1]["lag"] == 5  # never committed: counted from log start
    assert rows[0]["catch_up_s"] is None  # not moving: no estimate

    alert = run("--max-lag", "5")
    assert alert.returncode == 2 and "exceeds" in alert.stdout
    assert run("--max-lag", "6").returncode == 0
