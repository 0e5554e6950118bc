"""Properties of the contracts every component reads through (pure logic, no services).

Whatever arrives — any JSON value, any bytes, no value at all — the event validator and the
internal topics' decoders answer with a result or with their own error carrying a reason; a
dead letter can always be built from it and stays small enough for Kafka. Valid events always
pass, and what the contract encodes reads back as the same event.
"""

from __future__ import annotations

import time
import uuid

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.deadletter import MAX_ERRORS, MAX_REASON_CHARS, DeadLetter
from streamrec.events import EVENT_TYPES, CatalogItem, EventValidator, InvalidEvent, encode, json_schemas, key_for, topic_for
from streamrec.messages import TOPIC_MESSAGES, UnreadableMessage
from tests.strategies import any_json, near_events, valid_events

validator = EventValidator(max_future_skew_s=300, clock_ms=lambda: int(time.time() * 1000))
SCHEMAS = {name: jsonschema.validators.validator_for(schema)(schema) for name, schema in json_schemas().items()}
RAW_CAP = 4096


def refused(raw: object) -> InvalidEvent | None:
    """The validator's error for ``raw``, None when it passes; anything else it raises fails the test."""
    try:
        validator.parse(raw)
    except InvalidEvent as error:
        return error
    return None


def assert_explained(error: InvalidEvent) -> None:
    assert isinstance(error.reason, str) and error.reason.strip()
    assert all(isinstance(detail, dict) and all(isinstance(v, str) for v in detail.values()) for detail in error.errors)


@settings(max_examples=200, deadline=None)
@given(any_json)
def test_any_json_value_is_an_event_or_refused_with_a_reason(raw):
    error = refused(raw)
    if error is not None:
        assert_explained(error)


@settings(max_examples=250, deadline=None)
@given(near_events)
def test_objects_made_of_the_contracts_fields_are_an_event_or_refused_with_a_reason(raw):
    error = refused(raw)
    if error is None:
        assert raw["type"] in EVENT_TYPES
    else:
        assert_explained(error)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
def test_any_bytes_decode_to_json_or_fail_as_json(body):
    """What the streams workers do with a record: ``orjson`` either gives a value or its own error."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    error = refused(raw)
    if error is not None:
        assert_explained(error)


@settings(max_examples=200, deadline=None)
@given(valid_events)
def test_valid_events_pass_and_round_trip(raw):
    event = validator.parse(raw)
    assert event.type == raw["type"] and isinstance(event, EVENT_TYPES[raw["type"]])
    dumped = event.model_dump(mode="json", exclude_none=True)
    assert {key: dumped.get(key) for key in raw} == raw  # what was sent is what the event holds
    uuid.UUID(dumped["event_id"])  # filled in when the sender sent none
    wire = encode(event)
    assert validator.parse(orjson.loads(wire)) == event
    SCHEMAS[event.type].validate(orjson.loads(wire))  # what non-Python consumers check
    assert topic_for(event).value.startswith("catalog" if isinstance(event, CatalogItem) else "events.")
    assert key_for(event) == (event.item_id if isinstance(event, CatalogItem) else event.user_id).encode()


@settings(max_examples=100, deadline=None)
@given(valid_events, st.sampled_from(["schema_version", "type", "ts", "event_id"]), any_json)
def test_a_valid_event_with_one_field_spoilt_is_refused_or_still_valid(raw, name, value):
    error = refused({**raw, name: value})
    if error is not None:
        assert_explained(error)


@pytest.mark.parametrize("topic", sorted(TOPIC_MESSAGES, key=str))
@settings(max_examples=60, deadline=None)
@given(value=st.none() | st.binary(max_size=200) | any_json.map(orjson.dumps) | near_events.map(orjson.dumps))
def test_internal_messages_decode_or_say_why(topic, value):
    model = TOPIC_MESSAGES[topic]
    try:
        message = model.decode(value)
    except UnreadableMessage as error:
        assert error.reason.startswith(f"breaks the {topic.value} contract: ") and error.errors
        if value is None:
            assert "tombstone" in error.reason
        letter = DeadLetter.wrap(value, reason=error.reason, errors=error.errors, source="test", max_raw_bytes=RAW_CAP)
        assert DeadLetter.model_validate_json(letter.encode()) == letter
        return
    assert model.decode(message.encode()) == message


@settings(max_examples=100, deadline=None)
@given(raw=st.none() | st.binary(max_size=6000), reason=st.text(max_size=3000),
       errors=st.lists(st.dictionaries(st.sampled_from(["loc", "msg", "type"]), st.text(max_size=500)), max_size=60))
def test_a_dead_letter_keeps_a_prefix_of_anything_and_stays_small(raw, reason, errors):
    letter = DeadLetter.wrap(raw, reason=reason, errors=errors, source="test", max_raw_bytes=RAW_CAP)
    payload = raw or b""
    assert payload.startswith(letter.raw_payload()) and len(letter.raw_payload()) == min(len(payload), RAW_CAP)
    assert letter.raw_bytes == len(payload) and letter.raw_truncated == (len(payload) > RAW_CAP)
    assert len(letter.reason) <= MAX_REASON_CHARS and len(letter.errors) <= MAX_ERRORS
    assert DeadLetter.model_validate_json(letter.encode()) == letter
    # Worst case: a base64 payload at the cap plus capped details, far below Kafka's 1 MB default.
    assert len(letter.encode()) < 2 * RAW_CAP + MAX_REASON_CHARS * 6 + MAX_ERRORS * 3 * 300 * 6 + 1000
