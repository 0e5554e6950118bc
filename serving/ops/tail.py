"""The newest records of the topics an operator reads by example: dead letters, quarantine, model updates.

Counts come from the processes' metrics (exact and bounded); what a person needs besides a count
is an example of what went wrong and the trainer's latest decisions. A thread reads each topic
from a little before its end and keeps the newest records per topic, decoded with the core
schemas, so a malformed record on these topics is shown as such rather than breaking the page.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings
from streamrec.topics import Topic

TAILED = (Topic.DLQ, Topic.QUARANTINE, Topic.MODEL_UPDATES)


class TopicTail:
    def __init__(self, kafka: KafkaSettings, keep: int = 200) -> None:
        self._consumer = Consumer({
            **client_config(kafka, client="ops-tail"), "group.id": f"streamrec-lag-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 200,
        })
        self._keep = keep
        self._records: dict[str, deque[dict[str, Any]]] = {topic.value: deque(maxlen=keep) for topic in TAILED}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _assign(self) -> None:
        names = [topic.value for topic in TAILED]
        metadata = self._consumer.list_topics(timeout=30).topics
        assignment = []
        for name in names:
            if name not in metadata:
                continue
            for partition in metadata[name].partitions:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                assignment.append(TopicPartition(name, partition, max(low, high - self._keep)))
        self._consumer.assign(assignment)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._assign()
                break
            except Exception:  # noqa: BLE001 - Kafka away at start: no examples until it is back
                self._stop.wait(5)
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=500, timeout=0.5):
                if message.error():
                    continue
                try:
                    value = orjson.loads(message.value())
                except orjson.JSONDecodeError:
                    value = {"unreadable": message.value()[:200].decode("utf-8", "replace")}
                record = {"topic": message.topic(), "partition": message.partition(), "offset": message.offset(),
                          "timestamp_ms": message.timestamp()[1], "value": value}
                with self._lock:
                    self._records[message.topic()].append(record)
        self._consumer.close()

    def newest(self, topic: Topic, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` records of ``topic``, newest first."""
        with self._lock:
            records = list(self._records[topic.value])
        return sorted(records, key=lambda record: record["timestamp_ms"], reverse=True)[:count]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
