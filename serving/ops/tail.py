"""The newest records of the topics an operator reads by example: dead letters, quarantine, model updates.

Counts come from the processes' metrics (exact and bounded); what a person needs besides a count
is an example of what went wrong and the trainer's latest decisions. A thread reads each topic
from a little before its end and keeps the newest records per topic, decoded with the core
schemas, so a malformed record on these topics is shown as such rather than breaking the page.

A record its topic's contract cannot read (not JSON, another shape, no value) is kept as
``{"unreadable": <the first bytes>, "reason": ...}``, counted through ``on_unreadable`` (the
operations service's ``streamrec_ops_unreadable_records{topic}``) and logged; the thread goes
on with the next record. Counted and skipped rather than dead-lettered: this is a viewer that
rereads the topics' ends at every start, so it would dead-letter the same record again each
time, and a dead letter that cannot be read cannot go back to ``events.dlq``, where it already is.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from pydantic import BaseModel, ValidationError

from streamrec.deadletter import DeadLetter
from streamrec.events import describe
from streamrec.messages import ModelUpdate, QuarantinedEvent
from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings
from streamrec.topics import Topic

log = logging.getLogger(__name__)

TAILED = (Topic.DLQ, Topic.QUARANTINE, Topic.MODEL_UPDATES)
CONTRACTS: dict[str, type[BaseModel]] = {Topic.DLQ.value: DeadLetter, Topic.QUARANTINE.value: QuarantinedEvent,
                                         Topic.MODEL_UPDATES.value: ModelUpdate}
SHOWN_BYTES = 200

OnUnreadable = Callable[[str, str], None]
"""``(topic, reason)`` for each record that could not be read."""


def read_record(topic: str, value: bytes | None) -> tuple[dict[str, Any], str | None]:
    """The record's value as the page shows it, and why it is unreadable (None when it is not)."""
    if value is None:
        reason = "no value (a tombstone)"
    else:
        try:
            return CONTRACTS[topic].model_validate_json(value).model_dump(mode="json", exclude_none=True), None
        except ValidationError as error:
            reason = f"breaks the {topic} contract: {describe(error, whole='(message)')[0]}"
        except Exception as error:  # noqa: BLE001 - whatever a record holds, the tail goes on
            reason = f"unreadable: {type(error).__name__}: {error}"
    return {"unreadable": (value or b"")[:SHOWN_BYTES].decode("utf-8", "replace"), "reason": reason}, reason


class TopicTail:
    def __init__(self, kafka: KafkaSettings, keep: int = 200, on_unreadable: OnUnreadable | None = None) -> None:
        self._consumer = Consumer({
            **client_config(kafka, client="ops-tail"), "group.id": f"streamrec-lag-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 200,
        })
        self._keep = keep
        self._on_unreadable = on_unreadable or (lambda topic, reason: None)
        self._records: dict[str, deque[dict[str, Any]]] = {topic.value: deque(maxlen=keep) for topic in TAILED}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

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
                value, reason = read_record(message.topic(), message.value())
                if reason is not None:
                    self._on_unreadable(message.topic(), reason)
                    log.warning("unreadable record at %s:%d@%d: %s", message.topic(), message.partition(), message.offset(), reason)
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
