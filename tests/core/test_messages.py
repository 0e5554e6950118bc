"""The internal topics' contracts as pure logic: ids survive any character, broken messages say why."""

from __future__ import annotations

import json

import jsonschema
import orjson
import pytest

from streamrec.deadletter import DeadLetter
from streamrec.events import ClickEvent, PurchaseEvent
from streamrec.messages import (
    TOPIC_MESSAGES,
    AcceptedEvent,
    ModelUpdate,
    ProfileUpdated,
    QuarantinedEvent,
    RecommendedItem,
    Recommendations,
    UnreadableMessage,
    json_schemas,
)
from streamrec.topics import TOPIC_SPECS, Topic

TS = 1_790_000_000_000
ODD_IDS = ['kcat"q', "back\\slash", "Jürgen-ß", "用户", "🛒user", 'all"of\\them 🛒 ß', "{\"user_id\":\"x\"}"]


def examples(user_id: str, item_id: str = "i1") -> list:
    click = ClickEvent(user_id=user_id, item_id=item_id, ts=TS)
    return [
        ProfileUpdated(user_id=user_id, newest_event_ts=TS),
        Recommendations(user_id=user_id, rec_id="r1", items=[RecommendedItem(item_id=item_id, score=1.5, reason="trending now",
                                                                           sources=["trending"])],
                        model_version="signals", variant="v", generated_at=TS, source_event_ts=None, degraded=False),
        AcceptedEvent(event=PurchaseEvent(user_id=user_id, item_id=item_id, order_id="o", price=9.5, ts=TS), topic="events.purchases",
                      partition=2, offset=7),
        QuarantinedEvent(rule="duplicate", reason="seen", event=click, topic="events.clicks", partition=0, offset=3),
        ModelUpdate(event="published", model="cross_encoder_student", version=2, metrics={"holdout_ndcg10": 0.3}, parent=1,
                    offsets={"events.accepted:0": 5}, events_used=5, duration_s=1.0),
    ]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_odd_ids_round_trip_through_every_topic_as_valid_json(odd):
    schemas = json_schemas()
    for message in examples(odd, item_id=odd):
        topic, key, value = message.to_kafka()
        assert topic == message.TOPIC.value
        decoded_json = orjson.loads(value)  # valid JSON, whatever the id holds
        jsonschema.validate(decoded_json, schemas[topic])
        assert type(message).decode(value) == message
        if not isinstance(message, ModelUpdate):
            assert key == odd.encode()


def test_every_internal_topic_has_a_contract_and_a_spec():
    assert set(TOPIC_MESSAGES) == {Topic.PROFILES_UPDATED, Topic.RECOMMENDATIONS, Topic.ACCEPTED, Topic.QUARANTINE, Topic.MODEL_UPDATES}
    assert set(json_schemas()) == {topic.value for topic in TOPIC_MESSAGES} | {Topic.DLQ.value}
    assert {spec.name for spec in TOPIC_SPECS} == set(Topic)
    assert all(message.schema_version == 1 for message in examples("u"))


def test_an_accepted_event_carries_the_event_as_applied_and_its_source():
    purchase = PurchaseEvent(user_id="u", item_id="i", order_id="o", price=12.0, currency="EUR", ts=TS)
    message = AcceptedEvent(event=purchase, topic="events.purchases", partition=1, offset=41)
    raw = orjson.loads(message.encode())
    assert raw["event"] == orjson.loads(purchase.model_dump_json(exclude_none=True))  # as the raw topics carry events
    assert (raw["topic"], raw["partition"], raw["offset"]) == ("events.purchases", 1, 41)
    assert AcceptedEvent.decode(message.encode()).event == purchase


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"user_id":"kcat"q","newest_event_ts":1790000000000}', "Invalid JSON"),  # what an f-string made of a quote
        (b"\xff\xfe", "Invalid JSON"),
        (b"[]", "Input should be an object"),
        (b'{"user_id":"u"}', "newest_event_ts: Field required"),
        (b'{"user_id":"","newest_event_ts":1790000000000}', "user_id: String should have at least 1 character"),
        (b'{"user_id":"u","newest_event_ts":1790000000}', "newest_event_ts: Input should be greater than or equal to"),
        (b'{"user_id":"u","newest_event_ts":1790000000000,"extra":1}', "extra: Extra inputs are not permitted"),
        (b'{"user_id":"u","newest_event_ts":1790000000000,"schema_version":2}', "schema_version: Input should be 1"),
    ],
)
def test_a_broken_message_says_why(raw, reason):
    with pytest.raises(UnreadableMessage) as caught:
        ProfileUpdated.decode(raw)
    assert caught.value.reason.startswith("breaks the profiles.updated contract: ")
    assert reason in caught.value.reason and caught.value.errors


def test_a_message_without_schema_version_reads_as_version_one():
    assert ProfileUpdated.decode(b'{"user_id":"u","newest_event_ts":1790000000000}').schema_version == 1


def test_an_accepted_message_must_carry_a_valid_interaction():
    good = orjson.loads(AcceptedEvent(event=ClickEvent(user_id="u", item_id="i", ts=TS), topic="events.clicks", partition=0,
                                      offset=0).encode())
    for broken, reason in (
        ({**good, "event": {**good["event"], "type": "catalog_item"}}, "event"),
        ({**good, "event": {**good["event"], "event_id": "nope"}}, "event.click.event_id"),
        ({**good, "offset": -1}, "offset"),
    ):
        with pytest.raises(UnreadableMessage) as caught:
            AcceptedEvent.decode(orjson.dumps(broken))
        assert reason in caught.value.reason


def test_the_dead_letter_schema_is_published_with_the_topics():
    letter = DeadLetter.wrap(b"{broken", reason="r", source="recs:profiles.updated", max_raw_bytes=1024)
    jsonschema.validate(json.loads(letter.encode()), json_schemas()[Topic.DLQ.value])
