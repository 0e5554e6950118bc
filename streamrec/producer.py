"""Producer SDK for shop backends: validated events into Kafka with acks=all.

``EventProducer`` wraps confluent-kafka's idempotent producer: events are
validated before they are queued (a bad event raises :class:`InvalidEvent`
at the call site, never reaches Kafka), batched by librdkafka (``linger_ms``),
routed to their topic and keyed by user (or item, for the catalog). Delivery
results reach the caller three ways: a per-event ``on_delivery`` callback, a
future from :meth:`EventProducer.send`, and the totals returned by
:meth:`EventProducer.flush`, which raises if anything failed or is still pending.

Callbacks run on the thread that calls :meth:`poll`/:meth:`flush`, or on the
producer's own poll thread when it is built with ``poll_thread=True`` (the
collector does this so that an asyncio loop never blocks on Kafka).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamrec.deadletter import DeadLetter
from streamrec.events import Event, EventValidator, encode, key_for, topic_for
from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings, Settings
from streamrec.topics import Topic


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    topic: str
    key: bytes | None
    partition: int | None
    offset: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class DeliveryTotals:
    delivered: int
    failed: int
    pending: int


class DeliveryError(RuntimeError):
    """Raised by :meth:`EventProducer.flush` when events failed or did not finish in time."""

    def __init__(self, totals: DeliveryTotals, failures: list[DeliveryResult]) -> None:
        first = f"; first: {failures[0].error}" if failures else ""
        super().__init__(f"{totals.failed} events failed and {totals.pending} still pending{first}")
        self.totals = totals
        self.failures = failures


def _result(err: KafkaError | None, msg: Message) -> DeliveryResult:
    if err is not None:
        return DeliveryResult(msg.topic(), msg.key(), None, None, err.str())
    return DeliveryResult(msg.topic(), msg.key(), msg.partition(), msg.offset(), None)


class EventProducer:
    """Validating, idempotent Kafka producer for streamrec events."""

    def __init__(
        self,
        *,
        kafka: KafkaSettings,
        validator: EventValidator,
        client: str = "sdk",
        linger_ms: float = 5.0,
        compression: str = "lz4",
        poll_thread: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._validator = validator
        config: dict[str, Any] = {
            **client_config(kafka, client=client),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "compression.type": compression,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            **(extra_config or {}),
        }
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self._delivered = 0
        self._failed = 0
        self._failures: deque[DeliveryResult] = deque(maxlen=1000)
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        if poll_thread:
            self._poller = threading.Thread(target=self._poll_forever, name="streamrec-producer-poll", daemon=True)
            self._poller.start()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> "EventProducer":
        validator = EventValidator(max_future_skew_s=settings.events.max_future_skew_s)
        return cls(kafka=settings.kafka, validator=validator, **kwargs)

    # -- producing -------------------------------------------------------------------------

    def produce(
        self,
        event: Event | dict[str, Any],
        *,
        on_delivery: Callable[[DeliveryResult], None] | None = None,
    ) -> Event:
        """Validate and queue one event; returns the validated event (with defaults filled).

        Raises :class:`streamrec.events.InvalidEvent` if the event breaks the contract.
        """
        if isinstance(event, dict):
            event = self._validator.parse(event)
        else:
            self._validator.check(event)
        self._queue(topic_for(event), key_for(event), encode(event), on_delivery)
        return event

    def send(self, event: Event | dict[str, Any]) -> Future[DeliveryResult]:
        """Like :meth:`produce`, returning a future that resolves when Kafka acknowledges."""
        future: Future[DeliveryResult] = Future()
        self.produce(event, on_delivery=future.set_result)
        return future

    def produce_dead_letter(
        self, letter: DeadLetter, *, on_delivery: Callable[[DeliveryResult], None] | None = None
    ) -> None:
        """Queue a rejected input on the dead-letter topic (keyed by event id when known)."""
        key = letter.event_id.encode() if letter.event_id else None
        self._queue(Topic.DLQ, key, letter.encode(), on_delivery)

    def _queue(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        on_delivery: Callable[[DeliveryResult], None] | None,
    ) -> None:
        callback = self._count if on_delivery is None else self._counting(on_delivery)
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                # librdkafka's queue is full: serve delivery reports to make room (back-pressure).
                self._producer.poll(0.05)

    def _count(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered += 1
            return
        with self._lock:
            self._failed += 1
            self._failures.append(_result(err, msg))

    def _counting(self, on_delivery: Callable[[DeliveryResult], None]) -> Callable[[KafkaError | None, Message], None]:
        def callback(err: KafkaError | None, msg: Message) -> None:
            self._count(err, msg)
            on_delivery(_result(err, msg))

        return callback

    # -- delivery --------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served."""
        return self._producer.poll(timeout)

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def totals(self) -> DeliveryTotals:
        return DeliveryTotals(self._delivered, self._failed, len(self._producer))

    def failures(self) -> list[DeliveryResult]:
        with self._lock:
            return list(self._failures)

    def flush(self, timeout: float = 30.0) -> DeliveryTotals:
        """Wait for every queued event; raise :class:`DeliveryError` if any failed or is pending."""
        self._producer.flush(timeout)
        totals = self.totals()
        if totals.failed or totals.pending:
            raise DeliveryError(totals, self.failures())
        return totals

    def close(self, timeout: float = 30.0) -> DeliveryTotals:
        try:
            return self.flush(timeout)
        finally:
            self._closed.set()
            if self._poller is not None:
                self._poller.join(timeout=1.0)

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def deliver(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes]], *, client: str, timeout_s: float = 30.0
) -> None:
    """Send ``(topic, key, value)`` messages with an idempotent producer and return once Kafka
    acknowledged every one; raises ``RuntimeError`` naming what was not delivered.

    For the few messages a process sends outside a stream (a model announcement, a cycle's dead
    letters), where a long-lived producer would only hold a connection open.
    """
    if not messages:
        return
    producer = Producer({**client_config(settings.kafka, client=client), "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: failures.append(str(err)) if err else None)
    remaining = producer.flush(timeout_s)
    if remaining or failures:
        topics = ", ".join(sorted({topic for topic, _, _ in messages}))
        raise RuntimeError(f"{topics} not delivered: {failures or f'{remaining} pending'}")
