"""Running streamrec components as real processes in tests, and placing their consumer groups."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient


class Component:
    """One ``streamrec ...`` subprocess with its own environment and log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Component":
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen([sys.executable, "-m", "streamrec", *self.args], env=self.env, stdout=log, stderr=log)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_http(url: str, component: Component, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert component.alive(), f"{component.args} exited:\n{component.log_tail()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not up within {timeout_s} s:\n{component.log_tail()}")


def commit_groups_at_end(bootstrap_servers: str, groups: dict[str, list[str]]) -> None:
    """Commit each group's offsets at the current end of its topics.

    The session's topics are shared by every test; a component started under such a group
    reads only what is produced from now on, with no race against its group join.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "offsets-probe", "enable.auto.commit": False})
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        for group, topics in groups.items():
            partitions = []
            for topic in topics:
                metadata = consumer.list_topics(topic, timeout=10)
                for partition in metadata.topics[topic].partitions:
                    _, high = _watermark(consumer, TopicPartition(topic, partition))
                    partitions.append(TopicPartition(topic, partition, high))
            futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])
            for future in futures.values():
                future.result(timeout=30)
    finally:
        consumer.close()


def _watermark(consumer: Consumer, partition: TopicPartition, timeout_s: float = 30) -> tuple[int, int]:
    """High watermark, retried: a topic created moments ago may not have a leader yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
