"""Kafka topic names and their configuration: the one place they are spelled.

Events are keyed by ``user_id`` so that one user's events stay in order on one
partition; catalog items are keyed by ``item_id`` on a compacted topic so the
latest version of every item survives retention. What each internal topic carries is defined
once, in ``streamrec/messages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Topic(StrEnum):
    CLICKS = "events.clicks"
    CARTS = "events.carts"
    PURCHASES = "events.purchases"
    IMPRESSIONS = "events.impressions"
    CATALOG = "catalog.items"
    ACCEPTED = "events.accepted"
    RECOMMENDATIONS = "recommendations"
    DLQ = "events.dlq"
    QUARANTINE = "events.quarantine"
    PROFILES_UPDATED = "profiles.updated"
    MODEL_UPDATES = "model.updates"


@dataclass(frozen=True)
class TopicSpec:
    name: Topic
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        base = {"cleanup.policy": "compact"} if self.compacted else {}
        return {**base, **self.config}


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.CLICKS),
    TopicSpec(Topic.CARTS),
    TopicSpec(Topic.PURCHASES),
    TopicSpec(Topic.CATALOG, compacted=True),
    # Which lists users were shown (the attribution worker reads them with events.accepted).
    TopicSpec(Topic.IMPRESSIONS),
    # Every interaction the streams workers applied, cleaned and filled, keyed by user; the trainer
    # learns from it. A week, like the raw interaction topics (Kafka's default).
    TopicSpec(Topic.ACCEPTED, config={"retention.ms": str(7 * 24 * 3600 * 1000)}),
    TopicSpec(Topic.RECOMMENDATIONS),
    # Dead letters keep their raw payloads for a month so that nothing is lost.
    TopicSpec(Topic.DLQ, config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
    # Outliers the streams workers set aside, with the rule that caught them.
    TopicSpec(Topic.QUARANTINE, config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
    # One message per profile change (streamrec.messages.ProfileUpdated); serving refreshes on it.
    TopicSpec(Topic.PROFILES_UPDATED, config={"retention.ms": str(24 * 3600 * 1000)}),
    # One message per published or rolled-back model version (the trainer's lineage): kept 90 days.
    TopicSpec(Topic.MODEL_UPDATES, config={"retention.ms": str(90 * 24 * 3600 * 1000)}),
)

INTERACTION_TOPICS: tuple[Topic, ...] = (Topic.CLICKS, Topic.CARTS, Topic.PURCHASES)
