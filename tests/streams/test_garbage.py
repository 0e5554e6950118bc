"""Garbage produced straight into the topics a real streams worker consumes (the three interaction
topics and the catalog): each record is dead-lettered with a reason, counted, and the good record
sent after it on the same partition is still applied. Plus the processor's parse as a property:
nothing a record holds makes it raise."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamrec.settings import RedisSettings
from streamrec.store.connection import connect_blocking
from streamrec.components import ComponentProcess
from streamrec.events import CartEvent, CatalogItem, ClickEvent, EventValidator, PurchaseEvent, encode
from streamrec.kafka_admin import commit_groups_at_end
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.topics import INTERACTION_TOPICS, Topic
from streams.processor import Record, _parse
from streams.cleaning import Rejection
from tests import garbage
from tests.strategies import any_json, valid_events

WORKER_TOPICS = (*INTERACTION_TOPICS, Topic.CATALOG)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.none() | st.binary(max_size=300) | any_json.map(orjson.dumps) | valid_events.map(orjson.dumps))
def test_parse_turns_any_record_into_an_interaction_or_a_rejection_with_a_reason(value):
    parsed = _parse(Record(Topic.CLICKS.value, 0, 0, 0, None, value), EventValidator(max_future_skew_s=None))
    if isinstance(parsed, Rejection):
        assert parsed.rule.value == "malformed" and parsed.reason
    else:
        assert parsed.type in ("click", "add_to_cart", "purchase")


@pytest.fixture(scope="module")
def worker(settings, tmp_path_factory) -> Iterator[dict]:
    """A real `streamrec streams worker` (both agents), a group of its own at today's log ends, its own Redis database."""
    group = f"garbage-streams-{uuid.uuid4().hex[:8]}"
    commit_groups_at_end(settings.kafka, {group: [t.value for t in WORKER_TOPICS]})
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"
    port = free_port()
    env = {**stack_environment(settings.stack), "STREAMREC_REDIS__URL": redis_url, "STREAMREC_STREAMS__APP_ID": group,
           "STREAMREC_STREAMS__WEB_PORT": str(port)}
    process = ComponentProcess(["streams", "worker"], tmp_path_factory.mktemp("garbage") / "streams.log", env).start()
    client = connect_blocking(RedisSettings(url=redis_url))
    try:
        process.wait_http(f"http://127.0.0.1:{port}/metrics", timeout_s=120)
        yield {"process": process, "redis": client, "metrics": f"http://127.0.0.1:{port}/metrics"}
    finally:
        process.stop()
        client.close()


def counter(url: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def wait_until(predicate, what: str, process: ComponentProcess, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.alive(), f"the worker died:\n{process.log_tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{process.log_tail()}"
        time.sleep(0.3)


def good_interaction(topic: Topic, user: str):
    common = dict(user_id=user, item_id=f"item-{user}")
    return {Topic.CLICKS: ClickEvent(**common), Topic.CARTS: CartEvent(**common, quantity=2),
            Topic.PURCHASES: PurchaseEvent(**common, order_id=f"o-{user}", price=1.0, currency="EUR")}[topic]


REASONS = {  # fragments each kind's dead letter must say
    "not JSON": "not JSON", "truncated JSON": "not JSON", "JSON of the wrong shape": "must be a JSON object",
    "a JSON string": "must be a JSON object", "many unknown fields": "more)",
    "huge": "not JSON", "empty": "not JSON", "tombstone": "tombstone",
}


@pytest.mark.parametrize("topic", WORKER_TOPICS, ids=lambda topic: topic.value)
def test_garbage_is_dead_lettered_with_a_reason_counted_and_the_next_record_applied(topic, worker, settings, kafka_reader):
    marker = uuid.uuid4().hex
    if topic is Topic.CATALOG:  # a click on the catalog topic, exactly as the contract encodes it
        wrong, wrong_reason = encode(ClickEvent(user_id=marker, item_id=marker)), f"a click event on {topic.value}"
        good = CatalogItem(item_id=f"item-{marker}", title=f"Good item {marker}")
    else:
        wrong = encode(CatalogItem(item_id=marker, title="an item on an interaction topic"))
        wrong_reason, good = f"a catalog_item event on interaction topic {topic.value}", good_interaction(topic, f"user-{marker}")
    unknown_type = orjson.dumps({"type": "refund", "user_id": marker, "item_id": marker})
    values = {**garbage.kinds(marker, wrong), "an unknown type": unknown_type}
    reasons = {**REASONS, "a wrong type field": wrong_reason, "an unknown type": "unknown event type 'refund'"}
    source = f"streams:{topic.value}"
    counted_before = counter(worker["metrics"], "streamrec_streams_dead_letters_total", topic=topic.value)

    keys = {name: f"{marker}-{n}".encode() for n, name in enumerate(values)}
    since = garbage.produce(settings, topic.value, [*((keys[name], value) for name, value in values.items()),
                                                    (good.item_id.encode() if topic is Topic.CATALOG else good.user_id.encode(),
                                                     encode(good))])

    if topic is Topic.CATALOG:
        applied = lambda: worker["redis"].exists(layout.item_key(good.item_id))  # noqa: E731
    else:
        applied = lambda: worker["redis"].exists(layout.profile_key(good.user_id))  # noqa: E731
    wait_until(applied, f"the good record after the garbage on {topic.value}", worker["process"])

    letters = garbage.read_letters(kafka_reader, source, since, expected=len(values))
    for name, value in values.items():
        letter = garbage.letter_for(letters, value)
        assert letter is not None, f"no dead letter for {name!r} on {topic.value}"
        assert reasons[name] in letter["reason"], (name, letter["reason"])
        assert letter["_key"] in (keys[name].decode(), letter.get("event_id"))  # found by its event_id, else its key
    huge = garbage.letter_for(letters, values["huge"])
    assert huge["raw_truncated"] and huge["raw_encoding"] == "base64" and huge["raw_bytes"] == len(values["huge"])

    counted = lambda: counter(worker["metrics"], "streamrec_streams_dead_letters_total", topic=topic.value)  # noqa: E731
    wait_until(lambda: counted() >= counted_before + len(values), "the dead letters' count", worker["process"], timeout_s=30)
    if topic is not Topic.CATALOG:
        assert counter(worker["metrics"], "streamrec_streams_rejections_total", rule="malformed") >= len(values)
    assert worker["process"].alive()
