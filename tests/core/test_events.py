"""The event contract as pure logic (no services)."""

from __future__ import annotations

import json
import time
import uuid

import jsonschema
import pytest

from streamrec.events import (
    CartEvent,
    CatalogItem,
    ClickEvent,
    EventValidator,
    InvalidEvent,
    PurchaseEvent,
    json_schemas,
    key_for,
    topic_for,
)
from streamrec.schemas import schema_files
from streamrec.settings import REPO_ROOT
from streamrec.topics import INTERACTION_TOPICS, Topic

INTERNAL_TOPICS = [topic for topic in Topic if topic not in (*INTERACTION_TOPICS, Topic.CATALOG, Topic.IMPRESSIONS)]

NOW_MS = int(time.time() * 1000)
# The receiver's clock is the real one: events without a ts get "now" when they are built, which
# may be minutes after this module was imported when a long test session runs it late.
validator = EventValidator(max_future_skew_s=300, clock_ms=lambda: int(time.time() * 1000))


def click(**overrides):
    return {"type": "click", "user_id": "u1", "item_id": "i1", "ts": int(time.time() * 1000), **overrides}


def test_parses_each_type_and_routes_it():
    parsed = [
        validator.parse(click()),
        validator.parse({"type": "add_to_cart", "user_id": "u1", "item_id": "i1", "quantity": 3}),
        validator.parse(
            {"type": "purchase", "user_id": "u1", "item_id": "i1", "order_id": "o1", "price": 2.5, "currency": "USD"}
        ),
        validator.parse({"type": "catalog_item", "item_id": "i1", "title": "Pipette", "category_path": ["Lab"]}),
    ]
    assert [type(e) for e in parsed] == [ClickEvent, CartEvent, PurchaseEvent, CatalogItem]
    assert [topic_for(e) for e in parsed] == [Topic.CLICKS, Topic.CARTS, Topic.PURCHASES, Topic.CATALOG]
    assert [key_for(e) for e in parsed] == [b"u1", b"u1", b"u1", b"i1"]


def test_defaults_fill_event_id_ts_and_context():
    event = ClickEvent(user_id="u", item_id="i")
    assert isinstance(event.event_id, uuid.UUID) and event.ts > 1_700_000_000_000
    assert event.context.rec_id is None and event.schema_version == 1


def test_context_carries_attribution():
    event = validator.parse(click(context={"page": "/p/1", "position": 3, "rec_id": "r-9", "variant": "B"}))
    assert (event.context.rec_id, event.context.variant, event.context.position) == ("r-9", "B", 3)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"type": "click", "item_id": "i1"}, "user_id: Field required"),
        (click(user_id=123), "user_id: Input should be a valid string"),
        (click(ts="yesterday"), "ts: Input should be a valid integer"),
        (click(ts=1_700_000_000), "ts: Input should be greater than or equal to"),  # seconds, not ms
        (click(ts=NOW_MS + 3_600_000), "in the future"),
        (click(colour="red"), "colour: Extra inputs are not permitted"),
        (click(event_id="not-a-uuid"), "event_id: Input should be a valid UUID"),
        (click(schema_version=2), "schema_version: Input should be 1"),
        (click(user_id=""), "user_id: String should have at least 1 character"),
        ({"type": "purchase", "user_id": "u", "item_id": "i", "order_id": "o", "price": -1}, "price: Input should be greater than or equal to 0"),
        ({"type": "purchase", "user_id": "u", "item_id": "i", "order_id": "o", "currency": "euro"}, "currency: String should match pattern"),
        ({"type": "add_to_cart", "user_id": "u", "item_id": "i", "quantity": 0}, "quantity: Input should be greater than or equal to 1"),
        ({"type": "catalog_item", "item_id": "i", "title": "t", "category_path": ["a", " "]}, "category_path"),
        ({"type": "refund", "user_id": "u", "item_id": "i"}, "unknown event type 'refund'"),
        ({"user_id": "u", "item_id": "i"}, "unknown event type None"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_rejections_say_why(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        validator.parse(raw)
    assert reason in caught.value.reason


def test_small_clock_skew_is_tolerated():
    assert validator.parse(click(ts=NOW_MS + 60_000)).ts == NOW_MS + 60_000


def test_generated_json_schemas_accept_valid_and_reject_invalid_events():
    schemas = json_schemas()
    event = json.loads(PurchaseEvent(user_id="u", item_id="i", order_id="o", price=1.0).model_dump_json())
    jsonschema.validate(event, schemas["purchase"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**event, "price": -5}, schemas["purchase"])


def test_committed_schema_files_are_current():
    """docs/schemas is what non-Python producers and consumers read: it must match the models, the
    events' and every internal topic's (`streamrec schemas`)."""
    folder = REPO_ROOT / "docs" / "schemas"
    files = schema_files()
    assert {f"{name}.v1.schema.json" for name in json_schemas()} <= set(files)
    assert {f"{topic.value}.v1.schema.json" for topic in INTERNAL_TOPICS} <= set(files)
    for name, schema in files.items():
        path = folder / name
        assert path.exists(), f"{path} missing: run `streamrec schemas`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `streamrec schemas`"
    leftovers = {path.name for path in folder.glob("*.json")} - set(files)
    assert not leftovers, f"schema files no model writes: {sorted(leftovers)}"


def test_canary_users_are_those_with_the_reserved_prefix():
    from streamrec.events import CANARY_USER_PREFIX, is_canary

    assert CANARY_USER_PREFIX == "canary:" and is_canary("canary:probe-1")
    assert not any(is_canary(user) for user in ("canary", "Canary:x", "shop:canary:x", "u-1"))
