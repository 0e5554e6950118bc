"""Announce a model version on ``model.updates``: the one way the trainer's publish and a
rollback tell the rest of the system which scorer version serves now."""

from __future__ import annotations

from confluent_kafka import Producer

from streamrec.messages import ModelUpdate
from streamrec.settings import Settings


def announce(settings: Settings, update: ModelUpdate, *, timeout_s: float = 30.0) -> None:
    """Deliver ``update`` (keyed by model name); raises ``RuntimeError`` when Kafka did not acknowledge it."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.kafka.client_id}-model-updates",
                         "enable.idempotence": True, "acks": "all"})
    failures: list[str] = []
    topic, key, value = update.to_kafka()
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, msg: failures.append(str(err)) if err else None)
    remaining = producer.flush(timeout_s)
    if remaining or failures:
        raise RuntimeError(f"{topic} not delivered: {failures or f'{remaining} pending'}")
