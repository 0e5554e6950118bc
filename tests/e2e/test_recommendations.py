"""The whole loop on the real stack: events in, recommendations out on the topic and the API.

A streams worker, a recs worker and the API run as real processes against the session's
Kafka, Redis (a database of their own) and Triton (tiny random models: the ranking is
meaningless, the plumbing is real). Amazon Scientific supplies real item texts and real
user sequences.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from serving.collector.app import create_app as create_collector
from streamrec.deadletter import DeadLetter
from streamrec.kafka_client import client_config
from streamrec.messages import Recommendations
from streamrec.store.connection import connect_blocking

from streamrec.datasets.loaders import load
from streamrec.datasets.replay import catalog_event
from streamrec.events import ClickEvent, PurchaseEvent
from streamrec.experiments.definition import Experiment
from streamrec.producer import EventProducer
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.topics import INTERACTION_TOPICS, Topic
from streamrec.components import ComponentProcess
from streamrec.kafka_admin import commit_groups_at_end

pytestmark = pytest.mark.stack

BACKGROUND_USERS = 300  # real sequences that build co-visitation before the users under test
TEST_USERS = 6


@pytest.fixture(scope="module")
def amazon(data_dir):
    return load("amazon_scientific", data_dir)


@pytest.fixture(scope="module")
def loop(settings, amazon, tmp_path_factory):
    """Streams worker + recs worker + API on a Redis database of their own, catalog loaded."""
    root = tmp_path_factory.mktemp("loop")
    db = random.Random().randint(2, 15)
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = connect_blocking(settings.redis.model_copy(update={"url": redis_url}))
    client.flushdb()
    suffix = uuid.uuid4().hex[:8]
    streams_group, recs_group = f"e2e-streams-{suffix}", f"e2e-recs-{suffix}"
    attribution_group = f"e2e-attribution-{suffix}"
    commit_groups_at_end(
        settings.kafka,
        {
            streams_group: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
            recs_group: [Topic.PROFILES_UPDATED.value],
            attribution_group: [Topic.IMPRESSIONS.value, Topic.ACCEPTED.value],
        },
    )
    api_port = free_port()
    env = {
        **stack_environment(settings.stack),
        "STREAMREC_REDIS__URL": redis_url,
        "STREAMREC_STREAMS__APP_ID": streams_group,
        "STREAMREC_STREAMS__WEB_PORT": str(free_port()),
        "STREAMREC_RECS__APP_ID": recs_group,
        "STREAMREC_RECS__WEB_PORT": str(free_port()),
        "STREAMREC_RECS__INDEX_REFRESH_S": "0.5",
        "STREAMREC_RECS__SCORER_BUDGET_MS": "5000",  # a loaded 2-core CI machine; degradation has its own test
        "STREAMREC_API__PORT": str(api_port),
        "STREAMREC_API__COMPUTE_BUDGET_MS": "5000",
        "STREAMREC_RECS__EXPERIMENTS_REFRESH_S": "0.5",
        "STREAMREC_ATTRIBUTION__APP_ID": attribution_group,
        "STREAMREC_ATTRIBUTION__WEB_PORT": str(free_port()),
    }
    components = [
        ComponentProcess(["streams", "worker"], root / "streams.log", env).start(),
        ComponentProcess(["recs", "worker"], root / "recs.log", env).start(),
        ComponentProcess(["api", "serve"], root / "api.log", env).start(),
        ComponentProcess(["streams", "attribution"], root / "attribution.log", env).start(),
    ]
    producer = EventProducer.from_settings(settings)
    try:
        now = int(time.time() * 1000)
        for item in amazon.catalog:
            producer.produce(catalog_event(item, now))
        producer.flush()
        deadline = time.monotonic() + 180
        while client.zcard(layout.CATALOG_CHANGES_KEY) < len(amazon.catalog) and time.monotonic() < deadline:
            assert all(c.alive() for c in components), "\n\n".join(c.log_tail() for c in components)
            time.sleep(0.5)
        assert client.zcard(layout.CATALOG_CHANGES_KEY) == len(amazon.catalog), components[0].log_tail()
        api = f"http://127.0.0.1:{api_port}"
        components[2].wait_http(f"{api}/healthz")
        yield {"settings": settings, "redis": client, "api": api, "producer": producer, "components": components, "env": env}
    finally:
        producer.close()
        for component in components:
            component.stop()
        client.flushdb()
        client.close()


@asynccontextmanager
async def running_collector(settings) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP collector in-process (its lifespan running) on the session's Kafka, and a client for it."""
    app = create_collector(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector", timeout=30) as client:
            yield client


def sequences(amazon, count: int, offset: int = 0) -> list[tuple[str, list[str]]]:
    by_user: dict[str, list[str]] = {}
    for event in amazon.events:
        by_user.setdefault(event.user_id, []).append(event.item_id)
    users = [(user, items) for user, items in by_user.items() if len(items) >= 4]
    return users[offset : offset + count]


def test_events_in_recommendations_out_on_the_topic_and_the_api(loop, amazon, kafka_reader):
    producer, client, api = loop["producer"], loop["redis"], loop["api"]
    run = uuid.uuid4().hex[:6]
    now = int(time.time() * 1000)
    # Background shoppers: real sequences, so co-visitation links real items.
    for user, items in sequences(amazon, BACKGROUND_USERS, offset=TEST_USERS):
        for step, item in enumerate(items):
            producer.produce(ClickEvent(user_id=f"bg-{run}-{user}", session_id=f"s-{user}", item_id=item, ts=now - 60_000 + step))
    producer.flush()
    time.sleep(2)
    # Users under test: clicks on a real sequence, then a purchase of one of its items.
    purchased: dict[str, str] = {}
    last_ts: dict[str, int] = {}
    for k, (user, items) in enumerate(sequences(amazon, TEST_USERS)):
        user_id = f"e2e-{run}-{k}"
        ts = int(time.time() * 1000)
        for step, item in enumerate(items[:-1]):
            producer.produce(ClickEvent(user_id=user_id, session_id=f"s-{run}-{k}", item_id=item, ts=ts + step))
        producer.produce(
            PurchaseEvent(user_id=user_id, session_id=f"s-{run}-{k}", item_id=items[0], order_id=f"o-{run}-{k}", ts=ts + 100)
        )
        purchased[user_id] = items[0]
        last_ts[user_id] = ts + 100
    producer.flush()

    # On the topic: a list reflecting each user's newest event, keyed by user.
    found = kafka_reader.read(
        Topic.RECOMMENDATIONS,
        match=lambda v: v.get("user_id") in last_ts and v.get("source_event_ts") == last_ts[v["user_id"]],
        expected=len(last_ts),
        timeout_s=120,
    )
    latest = {message["user_id"]: message for message in found}
    assert set(latest) == set(last_ts)
    for user_id, message in latest.items():
        assert message["_key"] == user_id
        assert message["items"], f"empty list for {user_id}"
        item_ids = [item["item_id"] for item in message["items"]]
        assert purchased[user_id] not in item_ids, "a purchased item was recommended"
        assert len(item_ids) == len(set(item_ids))
        assert all(item["reason"] for item in message["items"])
        assert any(item["reason"].startswith("because you") for item in message["items"]), message["items"][:3]
        assert set(message) >= {"rec_id", "model_version", "variant", "generated_at", "source_event_ts", "degraded"}
        assert message["degraded"] is False, message.get("degraded_reason")
    every_rec_id = [message["rec_id"] for message in kafka_reader.read(
        Topic.RECOMMENDATIONS, match=lambda v: str(v.get("user_id", "")).startswith(f"e2e-{run}"), expected=len(found), timeout_s=10
    )]
    assert len(every_rec_id) == len(set(every_rec_id)), "rec_id repeated"

    # In Redis and on the API: the cached list, with the same exclusions.
    for user_id in last_ts:
        assert client.get(layout.recommendations_key(user_id)) is not None
        response = httpx.get(f"{api}/v1/users/{user_id}/recommendations", params={"k": 5}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["cached"] is True
        assert len(body["items"]) == 5
        assert purchased[user_id] not in [item["item_id"] for item in body["items"]]
        excluded = body["items"][0]["item_id"]
        again = httpx.get(f"{api}/v1/users/{user_id}/recommendations", params={"k": 5, "exclude": excluded}, timeout=30).json()
        assert excluded not in [item["item_id"] for item in again["items"]]

    # A category filter computes a fresh list within that category.
    some_user = next(iter(last_ts))
    category = amazon.catalog[0].category_path[-1] if amazon.catalog[0].category_path else None
    if category:
        body = httpx.get(f"{api}/v1/users/{some_user}/recommendations", params={"category": category, "k": 3}, timeout=30).json()
        assert body["cached"] is False
        titles = {item.item_id: item for item in amazon.catalog}
        assert all(titles[item["item_id"]].category_path[-1] == category for item in body["items"])


def test_unknown_users_get_trending_and_new_items_are_similar_searchable_at_once(loop, amazon):
    api, producer = loop["api"], loop["producer"]
    body = httpx.get(f"{api}/v1/users/never-seen-{uuid.uuid4().hex}/recommendations", timeout=30).json()
    assert body["items"], "an unknown user got nothing"
    assert all(item["reason"] == "trending now" for item in body["items"])
    assert body["source_event_ts"] is None

    base = amazon.catalog[5]
    new_item = f"new-{uuid.uuid4().hex[:8]}"
    producer.produce(
        catalog_event(type(base)(item_id=new_item, title=base.title + " (2026 edition)", category_path=base.category_path,
                                 brand=base.brand), int(time.time() * 1000))
    )
    producer.flush()
    deadline = time.monotonic() + 60
    response = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{api}/v1/items/{new_item}/similar", params={"k": 5}, timeout=30)
        if response.status_code == 200:
            break
        assert response.status_code == 404
        time.sleep(0.3)
    assert response is not None and response.status_code == 200, response.text if response else None
    similar = response.json()["items"]
    assert len(similar) == 5 and new_item not in [item["item_id"] for item in similar]
    assert similar[0]["item_id"] == base.item_id, "the item it was copied from should be the nearest"
    assert httpx.get(f"{api}/v1/items/no-such-item/similar", timeout=30).status_code == 404
    schema = httpx.get(f"{api}/openapi.json", timeout=30).json()
    assert "/v1/users/{user_id}/recommendations" in schema["paths"]


def test_recommendations_degrade_while_triton_is_down_and_recover_without_restarts(loop, amazon, settings, kafka_reader, tmp_path):
    """A recs worker on a Triton of its own: stop it mid-run, lists keep flowing marked degraded."""
    from streamrec.stack import LocalStack
    from streamrec.stack.isolated import isolated_stack_settings

    triton_settings = isolated_stack_settings(
        tmp_path / "triton", services=["triton"], model_repo=settings.stack.model_repo,
        triton_load_models=list(settings.stack.triton_load_models),
    )
    triton = LocalStack(triton_settings)
    triton.up()
    variant = f"degradation-{uuid.uuid4().hex[:6]}"
    group = f"e2e-recs-{variant}"
    commit_groups_at_end(settings.kafka, {group: [Topic.PROFILES_UPDATED.value]})
    env = {
        **loop["components"][1].env,
        "STREAMREC_RECS__APP_ID": group,
        "STREAMREC_RECS__WEB_PORT": str(free_port()),
        "STREAMREC_RECS__VARIANT": variant,
        "STREAMREC_RECS__SCORER_BUDGET_MS": "3000",
        "STREAMREC_TRITON__GRPC_URL": f"127.0.0.1:{triton_settings.triton_grpc_port}",
        "STREAMREC_TRITON__HTTP_URL": f"127.0.0.1:{triton_settings.triton_http_port}",
    }
    worker = ComponentProcess(["recs", "worker"], tmp_path / "recs.log", env).start()
    producer = loop["producer"]
    _, items = sequences(amazon, 1, offset=TEST_USERS + BACKGROUND_USERS)[0]
    user_id = f"degrade-{variant}"

    def click_and_read(step: int) -> dict:
        ts = int(time.time() * 1000)
        producer.produce(ClickEvent(user_id=user_id, session_id=variant, item_id=items[step % len(items)], ts=ts))
        producer.flush()
        found = kafka_reader.read(
            Topic.RECOMMENDATIONS,
            match=lambda v: v.get("variant") == variant and v.get("source_event_ts") == ts,
            expected=1,
            timeout_s=90,
            settle_s=0.1,
        )
        assert found, f"no list for step {step}:\n{worker.log_tail()}"
        return found[0]

    try:
        first = click_and_read(0)
        assert first["degraded"] is False, first.get("degraded_reason")
        triton.service("triton").process().stop(10)
        down = [click_and_read(step) for step in (1, 2)]
        assert all(message["degraded"] for message in down), [m.get("degraded_reason") for m in down]
        assert all(message["items"] for message in down), "degraded lists must still carry items"
        assert all(message["model_version"] == "signals" for message in down)
        triton.up()  # the same ports and models; the worker is not touched
        deadline = time.monotonic() + 60
        recovered = None
        step = 3
        while time.monotonic() < deadline:
            recovered = click_and_read(step)
            if not recovered["degraded"]:
                break
            step += 1
            time.sleep(1)
        assert recovered is not None and recovered["degraded"] is False, recovered
        assert worker.alive()
        metrics = httpx.get(f"http://127.0.0.1:{env['STREAMREC_RECS__WEB_PORT']}/metrics", timeout=10).text
        degraded = [line for line in metrics.splitlines() if line.startswith('streamrec_recs_degraded_total{origin="stream"}')]
        assert degraded and float(degraded[0].split()[-1]) >= 2
    finally:
        worker.stop()
        triton.down()


ODD_USERS = ['kcat"q', "back\\slash", "Jürgen-ß", "用户", "🛒user"]
ODD_ITEMS = ['item"q', "item\\back", "Größe-Artikel", "商品", "🧪item"]


async def test_ids_with_quotes_backslashes_and_other_scripts_go_through_every_topic_to_a_list(loop, amazon, kafka_reader):
    """Odd user and item ids, sent through the real collector and the SDK, arrive intact on every
    topic, in Redis and on the API (a user id inside JSON written by hand once broke this)."""
    settings, producer, client, api = loop["settings"], loop["producer"], loop["redis"], loop["api"]
    run = uuid.uuid4().hex[:6]
    users = [f"{odd}-{run}" for odd in ODD_USERS]
    items = [f"{odd}-{run}" for odd in ODD_ITEMS]
    now = int(time.time() * 1000)
    for item_id, base in zip(items, amazon.catalog[20:], strict=False):  # real texts under odd ids
        producer.produce(catalog_event(type(base)(item_id=item_id, title=base.title, category_path=base.category_path,
                                                  brand=base.brand), now))
    producer.flush()
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        deadline = time.monotonic() + 90
        for item_id in items:  # embedded by the streams worker, then in the API's item index
            while (await http.get(f"/v1/items/{quote(item_id, safe='')}/similar")).status_code != 200:
                assert time.monotonic() < deadline, f"{item_id!r} never became searchable"
                await asyncio.sleep(0.3)
    for step, item_id in enumerate(items):  # one shopper co-visits them all: they are each other's candidates
        producer.produce(ClickEvent(user_id=f"odd-bg-{run}", session_id=run, item_id=item_id, ts=now + step))
    producer.flush()
    await asyncio.sleep(2)

    # Each user clicks an odd item through the collector (JSON over HTTP), then a real item through the SDK.
    first_clicks = {user: {"type": "click", "event_id": str(uuid.uuid4()), "user_id": user, "item_id": item_id,
                           "session_id": f"s-{run}", "ts": int(time.time() * 1000)} for user, item_id in zip(users, items)}
    async with running_collector(settings) as collector:
        response = await collector.post("/v1/events", json=list(first_clicks.values()))
        assert response.status_code == 202 and response.json()["accepted"] == len(users), response.text
        last_ts = {}
        for user, click in first_clicks.items():
            last_ts[user] = click["ts"] + 1
            producer.produce(ClickEvent(user_id=user, session_id=f"s-{run}", item_id=amazon.catalog[0].item_id, ts=last_ts[user]))
        producer.flush()

        accepted = kafka_reader.read(Topic.ACCEPTED, match=lambda v: v.get("event", {}).get("user_id") in last_ts,
                                     expected=2 * len(users), timeout_s=120)
        assert sorted((m["event"]["user_id"], m["event"]["ts"]) for m in accepted) == sorted(
            (user, ts) for user, click in first_clicks.items() for ts in (click["ts"], last_ts[user]))
        assert all(message["_key"] == message["event"]["user_id"] for message in accepted)
        assert {m["event"]["item_id"] for m in accepted if m["event"]["event_id"] in {c["event_id"] for c in first_clicks.values()}} \
            == set(items)

        updates = kafka_reader.read(Topic.PROFILES_UPDATED, match=lambda v: last_ts.get(v.get("user_id")) == v.get("newest_event_ts"),
                                    expected=len(users), timeout_s=60)
        assert {message["user_id"] for message in updates} == set(users)
        assert all(message["_key"] == message["user_id"] for message in updates)

        lists = kafka_reader.read(Topic.RECOMMENDATIONS, match=lambda v: last_ts.get(v.get("user_id")) == v.get("source_event_ts"),
                                  expected=len(users), timeout_s=120)
        assert {message["user_id"] for message in lists} == set(users)
        assert all(message["_key"] == message["user_id"] and message["items"] for message in lists)
        listed = {item["item_id"] for message in lists for item in message["items"]}
        assert listed & set(items), "no odd item id reached a list"

        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            for user in users:
                cached = Recommendations.decode(client.get(layout.recommendations_key(user)))
                assert cached.user_id == user and cached.source_event_ts == last_ts[user]
                response = await http.get(f"/v1/users/{quote(user, safe='')}/recommendations", params={"k": 5})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["user_id"] == user and body["cached"] is True and body["rec_id"] == cached.rec_id

        # The collector retrying one click: the duplicate lands on the quarantine with the ids intact.
        duplicate = first_clicks[users[0]]
        response = await collector.post("/v1/events", json=[duplicate])
        assert response.status_code == 202, response.text
    quarantined = kafka_reader.read(Topic.QUARANTINE, match=lambda v: v.get("event", {}).get("event_id") == duplicate["event_id"],
                                    expected=1, timeout_s=60)
    assert len(quarantined) == 1 and quarantined[0]["rule"] == "duplicate"
    assert quarantined[0]["_key"] == users[0]
    assert (quarantined[0]["event"]["user_id"], quarantined[0]["event"]["item_id"]) == (users[0], items[0])


def test_a_malformed_profile_update_is_dead_lettered_and_the_recs_worker_goes_on(loop, amazon, kafka_reader):
    settings, producer = loop["settings"], loop["producer"]
    marker = uuid.uuid4().hex
    cap = settings.deadletters.raw_max_bytes
    broken = [
        b'{"user_id":"kcat"q-' + marker.encode() + b'","newest_event_ts":1790000000000}',  # JSON written by hand around a quote
        orjson.dumps({"user_id": f"no-ts-{marker}"}),
        marker.encode() + b"\xff" * (cap + 1000),  # not UTF-8, and over the dead letters' cap
    ]
    raw = Producer({**client_config(settings.kafka, client="test"), "acks": "all"})
    for value in broken:
        raw.produce(Topic.PROFILES_UPDATED.value, value, b"faulty-producer")
    assert raw.flush(30) == 0
    user_id, ts = f"after-broken-{marker}", int(time.time() * 1000)
    producer.produce(ClickEvent(user_id=user_id, item_id=amazon.catalog[1].item_id, ts=ts))
    producer.flush()

    assert kafka_reader.read(Topic.RECOMMENDATIONS, match=lambda v: v.get("user_id") == user_id, expected=1, timeout_s=90), \
        "the recs worker stopped after the broken updates"
    letters = kafka_reader.read(
        Topic.DLQ, match=lambda v: v.get("source") == f"recs:{Topic.PROFILES_UPDATED.value}" and marker.encode() in raw_payload(v),
        expected=len(broken), timeout_s=60,
    )
    assert sorted(letter["raw_bytes"] for letter in letters) == sorted(len(value) for value in broken)
    assert all(letter["reason"].startswith("breaks the profiles.updated contract") for letter in letters)
    by_size = {letter["raw_bytes"]: letter for letter in letters}
    big = by_size[len(broken[2])]
    assert big["raw_truncated"] is True and big["raw_encoding"] == "base64" and len(raw_payload(big)) == cap
    assert big["raw_sha256"] == hashlib.sha256(broken[2]).hexdigest()
    assert raw_payload(by_size[len(broken[0])]) == broken[0] and by_size[len(broken[0])]["raw_truncated"] is False

    port = loop["components"][1].env["STREAMREC_RECS__WEB_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    counted = [line for line in metrics.splitlines() if line.startswith('streamrec_recs_dead_letters_total{topic="profiles.updated"}')]
    assert counted and float(counted[0].split()[-1]) >= len(broken), counted


def raw_payload(letter: dict) -> bytes:
    return DeadLetter.model_validate({k: v for k, v in letter.items() if not k.startswith("_")}).raw_payload()


def streamrec_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streamrec", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_an_experiment_splits_users_labels_their_lists_and_its_report_counts_their_clicks(loop, amazon, kafka_reader):
    """Started with the CLI: the recs worker and the API serve each user their variant's ranking,
    labelled; an impression and a click sent through the collector reach the report; stopped, the
    default lists come back."""
    producer, client, api, env = loop["producer"], loop["redis"], loop["api"], loop["env"]
    run = uuid.uuid4().hex[:6]
    name = f"e2e-{run}"
    streamrec_cli(env, "experiments", "create", "--name", name, "--salt", run,
                  "--variant", "popular=popularity:0.5", "--variant", "covisit=covisit:0.5")
    experiment = Experiment.model_validate_json(client.get(layout.experiment_key(name)))
    time.sleep(2)  # every process reads the running experiment within recs.experiments_refresh_s
    users = {}
    now = int(time.time() * 1000)
    for k, (user, items) in enumerate(sequences(amazon, 10, offset=50)):
        user_id = f"xp-{run}-{k}"
        for step, item in enumerate(items):
            producer.produce(ClickEvent(user_id=user_id, item_id=item, ts=now + step))
        users[user_id] = now + len(items) - 1
    producer.flush()
    assert len({experiment.assign(user).name for user in users}) == 2, "pick a salt that gives both variants users"

    found = kafka_reader.read(Topic.RECOMMENDATIONS, expected=len(users), timeout_s=120,
                              match=lambda v: v.get("user_id") in users and v.get("source_event_ts") == users[v["user_id"]])
    for message in found:
        variant = experiment.assign(message["user_id"])
        assert (message["experiment"], message["variant"], message["model_version"]) == (name, variant.name, variant.ranking)
    for user_id in users:
        body = httpx.get(f"{api}/v1/users/{user_id}/recommendations", params={"k": 5}, timeout=30).json()
        assert body["cached"] is True and (body["experiment"], body["variant"]) == (name, experiment.assign(user_id).name)

    # A shopper is shown their list and clicks its second item, through the collector.
    shopper = next(iter(users))
    shown = httpx.get(f"{api}/v1/users/{shopper}/recommendations", params={"k": 5}, timeout=30).json()
    clicked = shown["items"][1]["item_id"]
    async with running_collector(loop["settings"]) as collector:
        impression = {"type": "impression", "user_id": shopper, "rec_id": shown["rec_id"], "variant": shown["variant"],
                      "experiment": name, "items": [{"item_id": item["item_id"], "position": p} for p, item in enumerate(shown["items"])]}
        click = {"type": "click", "user_id": shopper, "item_id": clicked,
                 "context": {"rec_id": shown["rec_id"], "variant": shown["variant"], "experiment": name, "position": 1}}
        for event in (impression, click):
            response = await collector.post("/v1/events", content=orjson.dumps([event]))
            assert response.status_code == 202 and response.json()["accepted"] == 1, response.text
    clicks_key = layout.experiment_counts_key(name, shown["variant"], "clicks")
    deadline = time.monotonic() + 60
    while client.hget(clicks_key, shopper) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    report = orjson.loads(streamrec_cli(env, "experiments", "report", name, "--json"))
    by_variant = {variant["name"]: variant for variant in report["variants"]}
    assert by_variant[shown["variant"]]["totals"]["clicks"] == 1 and by_variant[shown["variant"]]["totals"]["impressions"] == 1
    assert by_variant[shown["variant"]]["estimates"]["ctr"]["value"] == 1.0
    assert sum(variant["guardrails"]["lists"] for variant in report["variants"]) >= len(users)
    assert report["sample_ratio"]["observed"] == [int(by_variant[v.name]["totals"]["users"]) for v in experiment.variants]

    streamrec_cli(env, "experiments", "stop", name)
    time.sleep(2)
    body = httpx.get(f"{api}/v1/users/{shopper}/recommendations", params={"k": 5}, timeout=30).json()
    assert body["experiment"] is None and body["variant"] == loop["settings"].recs.variant and body["cached"] is False
