"""Raw messages from an asyncio worker into Kafka, acknowledged before the call returns.

The Faust workers publish what a batch produced (accepted events, dead letters, profile
signals, lists) and must know it is in Kafka before they write Redis and let the batch be
committed. Faust's own producer does that one Python future per message through aiokafka,
which cost the streams worker about 12 % of its CPU (py-spy). librdkafka batches, retries and
acknowledges in C: the messages of a call are queued and flushed in a thread, so the event loop
keeps serving the consumer meanwhile. One flush at a time (``flush`` waits for every queued
message, so callers would only wait on each other inside it anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaError, Message, Producer

Outgoing = tuple[str, bytes | None, bytes]  # (topic, key, value)


class DeliveryFailed(RuntimeError):
    """Kafka refused or timed out some of a call's messages (after librdkafka's own retries)."""


class KafkaDeliverer:
    """An idempotent, acks=all producer whose :meth:`send_all` returns once every message is acknowledged."""

    def __init__(self, config: Mapping[str, object], *, linger_ms: float = 2.0) -> None:
        self._producer = Producer({**config, "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms})
        self._lock = asyncio.Lock()

    async def send_all(self, messages: Sequence[Outgoing]) -> None:
        """Deliver ``messages``; raises :class:`DeliveryFailed` naming the first errors. While Kafka is
        away it waits (librdkafka retries until ``message.timeout.ms``) rather than fail early, so
        a retrying caller does not queue the same messages twice."""
        if not messages:
            return
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(f"{message.topic()}: {error.str()}")

        def produce_and_flush() -> None:
            for topic, key, value in messages:
                while True:
                    try:
                        self._producer.produce(topic, value, key, on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self._producer.poll(0.1)
            while self._producer.flush(1.0):
                pass

        async with self._lock:
            await asyncio.to_thread(produce_and_flush)
        if failures:
            raise DeliveryFailed(f"{len(failures)} of {len(messages)} messages not delivered: {'; '.join(failures[:3])}")

    def close(self) -> None:
        self._producer.flush(10.0)
