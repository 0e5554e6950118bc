"""The internal topics' contracts: one pydantic model per topic, for its producer and every consumer.

The event contract (``streamrec/events.py``) is what shops send in; these are what streamrec's
own components send each other. A message is built from its model and read back through it,
never formatted by hand or assembled as an ad-hoc dict, so an id with a quote, a backslash or
an emoji travels intact, and a message that breaks the contract is caught where it is read
instead of being half understood (the recs worker and the trainer dead-letter it; the API treats
an unreadable cached list as a cache miss).

Each model names its topic (``TOPIC``) and its key (``key()``); ``to_kafka()`` gives the
``(topic, key, value)`` a producer sends. Every message carries ``schema_version`` (currently
1), like the events; a reader accepts a message without it as version 1. ``events.dlq`` has its
own contract, :class:`streamrec.deadletter.DeadLetter`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamrec.deadletter import DeadLetter
from streamrec.events import CartEvent, ClickEvent, EpochMillis, Identifier, PurchaseEvent, describe
from streamrec.topics import Topic

SCHEMA_VERSION = 1

InteractionEvent = Annotated[ClickEvent | CartEvent | PurchaseEvent, Field(discriminator="type")]


class UnreadableMessage(ValueError):
    """A message that breaks its topic's contract; ``reason`` is one line, ``errors`` the details."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


class _Part(BaseModel):
    # Ids pass through untouched (no whitespace stripping): a message repeats what was accepted.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Message(_Part):
    TOPIC: ClassVar[Topic]
    schema_version: Literal[1] = SCHEMA_VERSION

    def key(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    def to_kafka(self) -> tuple[str, bytes, bytes]:
        """``(topic, key, value)``, what a producer sends."""
        return self.TOPIC.value, self.key(), self.encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Self:
        """The message in ``raw``; raises :class:`UnreadableMessage` (not JSON, not this contract,
        or no value at all: these topics are not compacted, so a tombstone means nothing here)."""
        if raw is None:
            raise UnreadableMessage(f"breaks the {cls.TOPIC.value} contract: no value (a tombstone); this topic has no deletes",
                                    [{"loc": "(message)", "msg": "the record has no value", "type": "tombstone"}])
        try:
            return cls.model_validate_json(raw)
        except ValidationError as error:
            reason, errors = describe(error, whole="(message)")
            raise UnreadableMessage(f"breaks the {cls.TOPIC.value} contract: {reason}", errors) from None


class ProfileUpdated(_Message):
    """A user's profile changed (``profiles.updated``, keyed by user): the recs worker recomputes their list."""

    TOPIC: ClassVar[Topic] = Topic.PROFILES_UPDATED
    user_id: Identifier
    newest_event_ts: EpochMillis = Field(description="The newest event the profile has applied (epoch ms).")

    def key(self) -> bytes:
        return self.user_id.encode()


class RecommendedItem(_Part):
    item_id: str
    score: float
    reason: str = Field(description='Why it is recommended, e.g. "because you viewed X" or "trending in Y".')
    reason_item: str | None = Field(default=None, description="The history item the reason names.")
    sources: list[str] = Field(default_factory=list, description="Candidate sources that proposed it.")
    team: Literal["a", "b"] | None = Field(
        default=None, description="In an interleaved list, the variant that contributed the item (echo it in the impression)."
    )


class Recommendations(_Message):
    """One user's list (``recommendations``, keyed by user); the same JSON is cached in Redis (``r:{user}``)."""

    TOPIC: ClassVar[Topic] = Topic.RECOMMENDATIONS
    user_id: str
    rec_id: str = Field(description="Unique per computed list; echo it with clicks to attribute them.")
    items: list[RecommendedItem]
    model_version: str
    variant: str
    experiment: str | None = Field(default=None, description="The running experiment that chose the variant, if any.")
    generated_at: int = Field(description="When the list was computed (ms since the epoch).")
    source_event_ts: int | None = Field(description="The user's newest event the list reflects (ms), null for unknown users.")
    degraded: bool = Field(description="True when the scorer was unavailable or too slow: the list is in signal order.")
    degraded_reason: str | None = Field(default=None, description="Why the list is degraded.")

    def key(self) -> bytes:
        return self.user_id.encode()


class _RawTopicEvent(_Message):
    """An interaction event with the raw-topic position it was read from, keyed by its user."""

    event: InteractionEvent
    topic: str = Field(description="Raw topic the event was read from.")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)

    def key(self) -> bytes:
        return self.event.user_id.encode()

    def encode(self) -> bytes:
        # The event as the event contract encodes it on the raw topics: unset fields left out.
        return self.model_dump_json(exclude_none=True).encode()


class AcceptedEvent(_RawTopicEvent):
    """An interaction the streams worker applied (``events.accepted``, keyed by user), as applied:
    cleaned and filled (a purchase's missing price comes from the catalog).

    Published before the worker's Redis transaction commits, so a crash can repeat a message but
    never lose one: consumers dedupe by ``event.event_id``.
    """

    TOPIC: ClassVar[Topic] = Topic.ACCEPTED


class QuarantinedEvent(_RawTopicEvent):
    """A readable event a cleaning rule set aside (``events.quarantine``, keyed by user), with why."""

    TOPIC: ClassVar[Topic] = Topic.QUARANTINE
    rule: str = Field(min_length=1, description="The rule that caught it, e.g. duplicate, bot_click_rate, price_mismatch.")
    reason: str = Field(description="One line a person can act on.")


class ModelUpdate(_Message):
    """A scorer version was published or rolled back to, or a challenger was rejected (``model.updates``, keyed by model name).

    The lineage fields are set by the trainer's publish; a rollback carries only the version
    served now and its metrics; a rejection names the version that keeps serving (``version``)
    and the gate's figures that refused the challenger.
    """

    TOPIC: ClassVar[Topic] = Topic.MODEL_UPDATES
    event: Literal["published", "rolled_back", "rejected"]
    model: str
    version: int = Field(ge=1)
    metrics: dict[str, float] = Field(default_factory=dict, description="The version's hold-out metrics.")
    parent: int | None = Field(default=None, description="The version it was fine-tuned from.")
    gate: dict[str, Any] | None = Field(default=None, description="The gate's decision with both models' figures.")
    offsets: dict[str, int] | None = Field(
        default=None, description='Next offset to read per "topic:partition" of events.accepted: what the version has learnt from.'
    )
    events_used: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, ge=0, description="Length of the cycle that produced it.")

    def key(self) -> bytes:
        return self.model.encode()


TOPIC_MESSAGES: dict[Topic, type[_Message]] = {
    model.TOPIC: model for model in (ProfileUpdated, Recommendations, AcceptedEvent, QuarantinedEvent, ModelUpdate)
}


def json_schemas() -> dict[str, dict]:
    """JSON Schema per internal topic (dead letters included), for docs/schemas and for consumers
    in other languages."""
    schemas = {topic.value: model.model_json_schema() for topic, model in TOPIC_MESSAGES.items()}
    schemas[Topic.DLQ.value] = DeadLetter.model_json_schema()
    return schemas
