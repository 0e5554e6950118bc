"""The HTTP collector in-process (ASGI, lifespan included) against the session's real Kafka.

Every test marks its events with its own ids (user, item or a marker string) and
reads back only those, from the beginning of the shared topics.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.collector.app import create_app
from streamrec.events import ClickEvent, encode
from streamrec.settings import CollectorSettings, DeadLetterSettings, Settings
from streamrec.stack.process import free_port
from streamrec.topics import Topic

NOW_MS = int(time.time() * 1000)


@asynccontextmanager
async def running_collector(
    settings: Settings, *, raw_max_bytes: int | None = None, **collector: object
) -> AsyncIterator[httpx.AsyncClient]:
    """A collector app with its lifespan running (ASGITransport does not run it) and a client for it."""
    limits = CollectorSettings(**{**settings.collector.model_dump(), **collector})
    deadletters = DeadLetterSettings(raw_max_bytes=raw_max_bytes or settings.deadletters.raw_max_bytes)
    app = create_app(settings.model_copy(update={"collector": limits, "deadletters": deadletters}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector", timeout=30) as client:
            yield client


@pytest.fixture
async def collector(settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_collector(settings) as client:
        yield client


def click(user: str, item: str = "i1", **fields: object) -> dict:
    return {"type": "click", "event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "ts": NOW_MS, **fields}


def raw_of(letter: dict) -> bytes:
    raw = letter.get("raw", "")
    return base64.b64decode(raw) if letter.get("raw_encoding") == "base64" else raw.encode()


def read_dead_letters(kafka_reader, marker: str, expected: int, **kwargs: float) -> list[dict]:
    return kafka_reader.read(Topic.DLQ, match=lambda v: marker.encode() in raw_of(v), expected=expected, **kwargs)


def read_user(kafka_reader, topic: Topic, user: str, expected: int, **kwargs: float) -> list[dict]:
    return kafka_reader.read(topic, match=lambda v: v.get("user_id") == user, expected=expected, **kwargs)


# -- happy path ----------------------------------------------------------------------------


async def test_round_trip_routes_by_type_and_keys_by_user(collector, kafka_reader):
    user, item = f"user-{uuid.uuid4()}", f"item-{uuid.uuid4()}"
    batch = [
        click(user, "i1", session_id="s1", context={"page": "/p/i1", "rec_id": "r1", "variant": "B"}),
        {"type": "add_to_cart", "user_id": user, "item_id": "i1", "quantity": 2},
        {"type": "purchase", "user_id": user, "item_id": "i1", "order_id": "o1", "price": 9.5, "currency": "EUR"},
        click(user, "i2"),
        {"type": "catalog_item", "item_id": item, "title": "Lab goggles", "category_path": ["Safety", "Eyewear"]},
    ]
    response = await collector.post("/v1/events", content=orjson.dumps(batch))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 5 and body["rejected"] == 0
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert {r["status"] for r in body["results"]} == {"accepted"}
    assert body["results"][0]["event_id"] == batch[0]["event_id"]
    uuid.UUID(body["results"][1]["event_id"])  # filled in by the collector when the sender sent none

    clicks = read_user(kafka_reader, Topic.CLICKS, user, expected=2)
    assert [c["item_id"] for c in clicks] == ["i1", "i2"]  # per-user order kept
    assert {c["_key"] for c in clicks} == {user} and len({c["_partition"] for c in clicks}) == 1
    assert clicks[0]["context"] == {"page": "/p/i1", "rec_id": "r1", "variant": "B"}
    carts = read_user(kafka_reader, Topic.CARTS, user, expected=1)
    assert carts[0]["quantity"] == 2 and carts[0]["event_id"] == body["results"][1]["event_id"]
    purchases = read_user(kafka_reader, Topic.PURCHASES, user, expected=1)
    assert purchases[0]["price"] == 9.5 and purchases[0]["_key"] == user
    items = kafka_reader.read(Topic.CATALOG, match=lambda v: v.get("item_id") == item, expected=1)
    assert items[0]["_key"] == item and items[0]["category_path"] == ["Safety", "Eyewear"]
    assert read_dead_letters(kafka_reader, user, expected=0, timeout_s=2) == []


async def test_collector_writes_exactly_what_the_sdk_writes(collector, kafka_reader):
    """Events sent through the collector are byte-for-byte the SDK's encoding of the same event."""
    event = ClickEvent(user_id=f"user-{uuid.uuid4()}", item_id="i9", session_id="s9", context={"position": 3})
    response = await collector.post("/v1/events", json=[event.model_dump(mode="json")])
    assert response.status_code == 202, response.text

    [stored] = read_user(kafka_reader, Topic.CLICKS, event.user_id, expected=1)
    del stored["_key"], stored["_partition"]
    assert stored == orjson.loads(encode(event))


# -- malformed events inside a batch -------------------------------------------------------


def _duplicate(user: str, marker: str) -> list[dict]:
    first = click(user, "first")
    return [first, {**first, "item_id": marker}]


# name -> (bad events built from (user, marker), fragment of the reason); the marker is in the bad event's JSON
BAD_EVENTS: dict[str, tuple[Callable[[str, str], list[object]], str]] = {
    "missing field": (lambda user, m: [{"type": "click", "item_id": m}], "user_id: Field required"),
    "wrongly typed field": (
        lambda user, m: [{"type": "add_to_cart", "user_id": user, "item_id": m, "quantity": "lots"}],
        "quantity: Input should be a valid integer",
    ),
    "negative price": (
        lambda user, m: [{"type": "purchase", "user_id": user, "item_id": m, "order_id": "o", "price": -1}],
        "price: Input should be greater than or equal to 0",
    ),
    "timestamp far in the future": (
        lambda user, m: [click(user, m, ts=NOW_MS + 3_600_000)],
        "s in the future",
    ),
    "timestamp in seconds": (lambda user, m: [click(user, m, ts=NOW_MS // 1000)], "ts: Input should be greater"),
    "unknown event type": (lambda user, m: [click(user, m, type="like")], "unknown event type 'like'"),
    "event type not a string": (lambda user, m: [click(user, m, type=["click"])], "unknown event type ['click']"),
    "unknown field": (lambda user, m: [click(user, "i", colour=m)], "colour: Extra inputs are not permitted"),
    "not an object": (lambda user, m: [f"click {m}"], "event must be a JSON object, got str"),
    "duplicate event_id": (_duplicate, "duplicate event_id in batch"),
}


@pytest.mark.parametrize("kind", BAD_EVENTS)
async def test_bad_event_goes_to_dlq_and_its_neighbours_get_through(kind, collector, kafka_reader):
    build, reason = BAD_EVENTS[kind]
    user, marker = f"user-{uuid.uuid4()}", f"marker-{uuid.uuid4()}"
    bad = build(user, marker)
    batch = [click(user, "before"), *bad, click(user, "after")]
    bad_index = len(batch) - 2

    response = await collector.post("/v1/events", content=orjson.dumps(batch))

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (len(batch) - 1, 1)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["accepted"] * bad_index + ["rejected", "accepted"]
    assert reason in body["results"][bad_index]["reason"]

    good_items = [e["item_id"] for i, e in enumerate(batch) if i != bad_index]
    clicks = read_user(kafka_reader, Topic.CLICKS, user, expected=len(good_items))
    assert [c["item_id"] for c in clicks] == good_items  # nothing else lost, nothing bad let through
    [letter] = read_dead_letters(kafka_reader, marker, expected=1)
    assert reason in letter["reason"]
    assert letter["source"] == "collector" and letter["index"] == bad_index
    assert orjson.loads(raw_of(letter)) == batch[bad_index]  # the raw event, ready to replay
    if isinstance(batch[bad_index], dict) and "event_id" in batch[bad_index]:
        assert letter["event_id"] == letter["_key"] == batch[bad_index]["event_id"]


async def test_mixed_batch_rejects_only_the_bad_events(collector, kafka_reader):
    user, marker = f"user-{uuid.uuid4()}", f"marker-{uuid.uuid4()}"
    batch: list[object] = []
    for name, (build, _) in BAD_EVENTS.items():
        batch.append(click(user, f"good-{len(batch)}"))
        batch.extend(build(user, f"{marker}/{name}"))
    expected_bad = {i for i, e in enumerate(batch) if marker in orjson.dumps(e).decode()}
    expected_good = [e["item_id"] for i, e in enumerate(batch) if i not in expected_bad]

    response = await collector.post("/v1/events", content=orjson.dumps(batch))

    assert response.status_code == 202, response.text
    body = response.json()
    assert {r["index"] for r in body["results"] if r["status"] == "rejected"} == expected_bad
    assert body["accepted"] == len(expected_good) and body["rejected"] == len(BAD_EVENTS)
    clicks = read_user(kafka_reader, Topic.CLICKS, user, expected=len(expected_good))
    assert [c["item_id"] for c in clicks] == expected_good
    letters = read_dead_letters(kafka_reader, marker, expected=len(BAD_EVENTS))
    assert sorted(letter["index"] for letter in letters) == sorted(expected_bad)
    assert all(letter["reason"] for letter in letters)


# -- requests refused as a whole -----------------------------------------------------------


def _oversized_batch(user: str, marker: str) -> bytes:
    return orjson.dumps([click(user, marker) for _ in range(501)])


# name -> (body built from (user, marker), status, fragment of the error message and of the DLQ reason)
BAD_REQUESTS: dict[str, tuple[Callable[[str, str], bytes], int, str]] = {
    "bad JSON": (
        lambda user, m: f'[{{"type": "click", "user_id": "{user}", "item_id": "{m}"'.encode(),
        400,
        "request body is not valid JSON:",
    ),
    "invalid UTF-8": (
        lambda user, m: f'[{{"type": "click", "user_id": "{user}", "item_id": "{m}\xff"}}]'.encode("latin-1"),
        400,
        "request body is not valid UTF-8 (byte",
    ),
    "not an array": (
        lambda user, m: orjson.dumps(click(user, m)),
        400,
        "must be a JSON array of events, got a JSON object",
    ),
    "oversized batch": (_oversized_batch, 413, "batch has 501 events; the limit is 500 per request"),
    "oversized body": (
        lambda user, m: orjson.dumps([click(user, m, context={"page": "x" * 2048}) for _ in range(500)]),
        413,
        "request body too large",
    ),
}


@pytest.mark.parametrize("kind", BAD_REQUESTS)
async def test_bad_request_is_refused_whole_and_dead_lettered(kind, collector, kafka_reader, settings):
    build, status, message = BAD_REQUESTS[kind]
    user, marker = f"user-{uuid.uuid4()}", f"marker-{uuid.uuid4()}"
    body = build(user, marker)

    response = await collector.post("/v1/events", content=body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    [letter] = read_dead_letters(kafka_reader, marker, expected=1)
    assert message in letter["reason"] and letter["source"] == "collector"
    kept = raw_of(letter)
    assert body.startswith(kept) and letter["raw_bytes"] >= len(kept)
    if len(body) > settings.deadletters.raw_max_bytes:
        assert letter["raw_truncated"] and len(kept) == settings.deadletters.raw_max_bytes
    else:
        assert kept == body and not letter["raw_truncated"]
    if kind == "invalid UTF-8":
        assert letter["raw_encoding"] == "base64"
    assert read_user(kafka_reader, Topic.CLICKS, user, expected=0, timeout_s=2) == []


async def test_empty_batch_is_refused_and_dead_lettered(collector, kafka_reader):
    since = int(time.time() * 1000)
    response = await collector.post("/v1/events", content=b"[ ]")

    assert response.status_code == 400
    assert response.json() == {"error": "empty batch: send a JSON array with at least one event"}
    letters = kafka_reader.read(
        Topic.DLQ,
        match=lambda v: v.get("received_at", 0) >= since and v.get("reason", "").startswith("empty batch"),
        expected=1,
    )
    assert [raw_of(letter) for letter in letters] == [b"[ ]"]


async def test_body_over_the_limit_is_refused_without_reading_it_all(settings, kafka_reader):
    marker = f"marker-{uuid.uuid4()}"
    chunks_sent = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield f'[{{"item_id": "{marker}", "pad": "'.encode()
        for _ in range(2_000):  # 2 MB, far past the limit; a collector that reads it all fails below
            chunks_sent += 1
            yield b"x" * 1024

    async with running_collector(settings, max_body_bytes=10_000, raw_max_bytes=4096) as client:
        response = await client.post("/v1/events", content=endless_body())

    assert response.status_code == 413
    assert "the limit is 10,000 bytes" in response.json()["error"]
    assert chunks_sent <= 11  # stopped right after passing the limit
    [letter] = read_dead_letters(kafka_reader, marker, expected=1)
    assert letter["raw_truncated"] and len(raw_of(letter)) == 4096
    assert "unknown size, chunked" in letter["reason"]


# -- failures, operations ------------------------------------------------------------------


async def test_kafka_down_answers_503_so_the_client_retries(settings):
    dead_kafka = settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    unreachable = settings.model_copy(update={"kafka": dead_kafka})
    async with running_collector(unreachable, delivery_timeout_s=1.0) as client:
        events = await client.post("/v1/events", json=[click("u1"), {"type": "click"}])
        bad_json = await client.post("/v1/events", content=b"[{")
        health = await client.get("/healthz")

    assert events.status_code == 503 and events.headers["retry-after"] == "1"
    body = events.json()
    assert "retry the whole batch" in body["error"]
    assert body["accepted"] == 0 and body["failed"] == 1
    assert body["results"][0]["status"] == "failed"
    assert "Message timed out" in body["results"][0]["reason"]  # librdkafka gave up: no late write
    assert body["results"][1]["status"] == "rejected"
    assert bad_json.status_code == 503 and "not valid JSON" in bad_json.json()["error"]
    assert health.status_code == 503 and "Kafka not reachable" in health.json()["error"]


def sample(page: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(page):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None


async def test_health_and_metrics(collector):
    health = await collector.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    await collector.post("/v1/events", json=[click("u1"), click("u1"), {"type": "like"}, {"type": "click"}, click("canary:probe")])
    await collector.post("/v1/events", content=b"nope")
    page = (await collector.get("/metrics")).text

    events = "streamrec_collector_events_total"
    assert sample(page, events, outcome="accepted", kind="ok") == 2
    assert sample(page, events, outcome="accepted", kind="canary") == 1  # the probe's, kept out of the data-quality figures
    assert sample(page, events, outcome="rejected", kind="unknown_type") == 1
    assert sample(page, events, outcome="rejected", kind="missing") == 1
    assert sample(page, events, outcome="rejected", kind="invalid_json") == 1
    assert sample(page, "streamrec_collector_requests_total", status="202") == 1
    assert sample(page, "streamrec_collector_requests_total", status="400") == 1
    assert sample(page, "streamrec_collector_request_seconds_count") == 2


def test_cli_serves_the_collector_over_real_http(settings, kafka_reader, tmp_path: Path):
    """`streamrec collector serve` under uvicorn, configured only through STREAMREC_* variables."""
    port, user = free_port(), f"user-{uuid.uuid4()}"
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("STREAMREC_")},
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMREC_COLLECTOR__PORT": str(port),
        "STREAMREC_COLLECTOR__MAX_BODY_BYTES": "100000",
    }
    log = (tmp_path / "collector.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "streamrec"), "collector", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "collector.log").read_text()
                time.sleep(0.2)
            accepted = client.post("/v1/events", json=[click(user)])
            too_large = client.post("/v1/events", content=b"[" + b" " * 200_000 + b"]")
            after = client.post("/v1/events", json=[click(user, "i2")])
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    assert accepted.status_code == 202, accepted.text
    assert too_large.status_code == 413 and "the limit is 100,000 bytes" in too_large.json()["error"]
    assert after.status_code == 202
    assert [c["item_id"] for c in read_user(kafka_reader, Topic.CLICKS, user, expected=2)] == ["i1", "i2"]
    # uvicorn re-raises SIGTERM after its graceful shutdown, which closed (flushed) the producer.
    assert server.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "collector.log").read_text()


async def test_impressions_go_to_their_topic_keyed_by_user_and_a_broken_one_to_the_dlq(collector, kafka_reader):
    user = f"user-{uuid.uuid4()}"
    shown = {"type": "impression", "user_id": user, "rec_id": "r-1", "variant": "bert", "experiment": "rank-1",
             "items": [{"item_id": "i1", "position": 0}, {"item_id": "i2", "position": 1, "team": "b"}]}
    twice_at_one_position = {**shown, "items": [{"item_id": "i1", "position": 0}, {"item_id": "i2", "position": 0}]}
    response = await collector.post("/v1/events", content=orjson.dumps([shown, twice_at_one_position]))

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert "two items at one position" in results[1]["reason"]
    impressions = read_user(kafka_reader, Topic.IMPRESSIONS, user, expected=1)
    assert impressions[0]["_key"] == user and impressions[0]["items"][1] == {"item_id": "i2", "position": 1, "team": "b"}
    assert impressions[0]["experiment"] == "rank-1"
    assert len(read_dead_letters(kafka_reader, user, expected=1)) == 1
