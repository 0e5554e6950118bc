"""The event contract: versioned JSON events that shops send into streamrec.

Every event carries ``schema_version`` (currently 1) and a ``type`` that selects
its model. Interactions (click, add-to-cart, purchase) share ``event_id`` (a UUID
and the dedup key), ``user_id``, ``session_id``, ``item_id``, ``ts`` (epoch
milliseconds, UTC) and a ``context`` that records where the interaction happened
and, when it came from a served recommendation, its ``rec_id``, ``variant`` and
``experiment`` for attribution. An impression says which items of which served list a
user was shown, at which positions: the attribution worker counts lists' reach and
credits purchases of shown items to them. Catalog items describe an item for the catalog
topic.

Models reject unknown fields (``extra="forbid"``) so that a misspelt field is a
clear error at the edge rather than silently missing data downstream.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamrec.topics import Topic

SCHEMA_VERSION = 1
# 2001-09-09 in epoch ms: anything smaller is almost certainly seconds, not milliseconds.
MIN_TS_MS = 1_000_000_000_000

CANARY_USER_PREFIX = "canary:"


def is_canary(user_id: str) -> bool:
    """Whether ``user_id`` belongs to the end-to-end probe, whose ids are reserved with this prefix.

    The operations service sends such a user's click through the collector and times how long
    its list takes to reach ``recommendations``. For that measurement the user needs a profile
    (so a list is computed), but its clicks are not shopper behaviour: they must not move item
    statistics, data-quality figures or what the trainer learns.
    """
    return user_id.startswith(CANARY_USER_PREFIX)


Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]
EpochMillis = Annotated[
    int,
    Field(
        ge=MIN_TS_MS,
        lt=10**14,
        description="Event time in epoch milliseconds (UTC).",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class EventContext(_Model):
    """Where the interaction happened; ``rec_id``/``variant`` attribute it to a recommendation."""

    page: Annotated[str, Field(max_length=2048)] | None = None
    query: Annotated[str, Field(max_length=1024)] | None = None
    position: Annotated[int, Field(ge=0)] | None = None
    rec_id: Identifier | None = None
    variant: Identifier | None = None
    experiment: Identifier | None = None


class _EventBase(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event; the dedup key.")
    item_id: Identifier
    ts: EpochMillis = Field(default_factory=lambda: int(time.time() * 1000))


class _InteractionBase(_EventBase):
    user_id: Identifier
    session_id: Identifier | None = None
    context: EventContext = EventContext()


class ClickEvent(_InteractionBase):
    """A user viewed or clicked an item."""

    type: Literal["click"] = "click"


class CartEvent(_InteractionBase):
    """A user added an item to the cart."""

    type: Literal["add_to_cart"] = "add_to_cart"
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]
Price = Annotated[float, Field(ge=0, lt=1e9, allow_inf_nan=False, description="Unit price; never negative.")]


class PurchaseEvent(_InteractionBase):
    """A user bought ``quantity`` units of an item in order ``order_id``.

    ``price`` (unit price) and ``currency`` may be unknown (replayed research data
    has none); the streams layer fills them from the catalog when missing.
    """

    type: Literal["purchase"] = "purchase"
    order_id: Identifier
    price: Price | None = None
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    currency: Currency | None = None


class CatalogItem(_EventBase):
    """An item upsert for the catalog (compacted topic, keyed by ``item_id``)."""

    type: Literal["catalog_item"] = "catalog_item"
    title: Annotated[str, Field(min_length=1, max_length=1024)]
    description: Annotated[str, Field(max_length=20_000)] = ""
    category_path: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=16, description="Root first, e.g. ['Industrial & Scientific', 'Tapes']."
    )
    brand: Annotated[str, Field(max_length=256)] | None = None
    price: Price | None = None
    currency: Currency | None = None
    available: bool = True

    @field_validator("category_path")
    @classmethod
    def _no_blank_levels(cls, path: list[str]) -> list[str]:
        if any(not level.strip() for level in path):
            raise ValueError("category_path levels must not be blank")
        return path


class ShownItem(_Model):
    item_id: Identifier
    position: Annotated[int, Field(ge=0, description="0 for the first item shown.")]
    team: Literal["a", "b"] | None = Field(default=None, description="The list item's team, in an interleaved list.")


class ImpressionEvent(_Model):
    """A user was shown ``items`` of the served list ``rec_id`` (send it when the list renders).

    ``variant`` and ``experiment`` repeat the list's labels; the attribution worker counts the
    impression under them, and a later purchase of a shown item counts as view-through.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["impression"] = "impression"
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event; the dedup key.")
    user_id: Identifier
    session_id: Identifier | None = None
    ts: EpochMillis = Field(default_factory=lambda: int(time.time() * 1000))
    rec_id: Identifier
    variant: Identifier
    experiment: Identifier | None = None
    items: list[ShownItem] = Field(min_length=1, max_length=200)
    page: Annotated[str, Field(max_length=2048)] | None = None

    @field_validator("items")
    @classmethod
    def _distinct_positions(cls, items: list[ShownItem]) -> list[ShownItem]:
        if len({item.position for item in items}) != len(items):
            raise ValueError("two items at one position")
        return items


Interaction = ClickEvent | CartEvent | PurchaseEvent
Event = ClickEvent | CartEvent | PurchaseEvent | CatalogItem | ImpressionEvent
AnyEvent = Annotated[Union[ClickEvent, CartEvent, PurchaseEvent, CatalogItem, ImpressionEvent], Field(discriminator="type")]
EVENT_TYPES: dict[str, type[_Model]] = {
    "click": ClickEvent,
    "add_to_cart": CartEvent,
    "purchase": PurchaseEvent,
    "catalog_item": CatalogItem,
    "impression": ImpressionEvent,
}
_TOPIC_BY_TYPE: dict[str, Topic] = {
    "click": Topic.CLICKS,
    "add_to_cart": Topic.CARTS,
    "purchase": Topic.PURCHASES,
    "catalog_item": Topic.CATALOG,
    "impression": Topic.IMPRESSIONS,
}


def topic_for(event: Event) -> Topic:
    return _TOPIC_BY_TYPE[event.type]


def key_for(event: Event) -> bytes:
    """Per-user order for interactions and impressions, per-item latest-wins for the catalog."""
    if isinstance(event, CatalogItem):
        return event.item_id.encode()
    return event.user_id.encode()


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``reason`` is one line a person can act on."""

    def __init__(self, reason: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


def describe(error: ValidationError, whole: str = "(event)") -> tuple[str, list[dict[str, str]]]:
    """(one-line reason, field-level details) of a validation error, for rejections and dead letters;
    ``whole`` names the location of an error about the value as a whole."""
    details = [
        {"loc": ".".join(str(part) for part in e["loc"]) or whole, "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False)
    ]
    first = details[0]
    more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
    return f"{first['loc']}: {first['msg']}{more}", details


class EventValidator:
    """Turns raw JSON objects into events, applying the contract and the receiver's clock.

    The future-skew rule needs "now", so it lives here rather than in the models:
    a model stays a pure description of the data, the validator adds the checks
    that depend on who receives it and when.
    """

    def __init__(self, *, max_future_skew_s: float | None, clock_ms=lambda: int(time.time() * 1000)) -> None:
        """``max_future_skew_s=None`` turns the clock rule off (the streams layer judges time by Kafka's clock)."""
        self._max_future_skew_ms = None if max_future_skew_s is None else int(max_future_skew_s * 1000)
        self._clock_ms = clock_ms

    def parse(self, raw: object) -> Event:
        """Validate one decoded JSON value; raises :class:`InvalidEvent` with the reason."""
        if not isinstance(raw, dict):
            raise InvalidEvent(f"event must be a JSON object, got {type(raw).__name__}")
        event_type = raw.get("type")
        if not isinstance(event_type, str) or event_type not in EVENT_TYPES:  # a list or dict is unhashable
            known = ", ".join(EVENT_TYPES)
            raise InvalidEvent(f"unknown event type {event_type!r}; expected one of: {known}")
        try:
            # The model named by `type` (not the union): error locations read "price", not "purchase.price".
            event = EVENT_TYPES[event_type].model_validate(raw)
        except ValidationError as error:
            reason, details = describe(error)
            raise InvalidEvent(reason, details) from None
        self.check(event)
        return event

    def check(self, event: Event) -> None:
        """Rules that depend on the receiver, applied to an already-built event too."""
        if self._max_future_skew_ms is None:
            return
        ahead_ms = event.ts - self._clock_ms()
        if ahead_ms > self._max_future_skew_ms:
            raise InvalidEvent(
                f"ts: {ahead_ms / 1000:.0f} s in the future (limit {self._max_future_skew_ms / 1000:.0f} s); "
                "is the sender's clock wrong?",
                [{"loc": "ts", "msg": "timestamp too far in the future", "type": "future_timestamp"}],
            )


def json_schemas() -> dict[str, dict]:
    """JSON Schema per event type, for docs/schemas and for non-Python producers."""
    return {name: model.model_json_schema() for name, model in EVENT_TYPES.items()}
