"""Announce a model version on ``model.updates``: the one way the trainer's publish and a
rollback tell the rest of the system which scorer version serves now."""

from __future__ import annotations

from streamrec.messages import ModelUpdate
from streamrec.producer import deliver
from streamrec.settings import Settings


def announce(settings: Settings, update: ModelUpdate, *, timeout_s: float = 30.0) -> None:
    """Deliver ``update`` (keyed by model name); raises ``RuntimeError`` when Kafka did not acknowledge it."""
    deliver(settings, [update.to_kafka()], client="model-updates", timeout_s=timeout_s)
