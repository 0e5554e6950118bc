"""Keys, scopes and rate limits on every route of the collector, the API and the operations service.

The three apps run in-process (lifespans included) on the session's Kafka, Triton and a Redis
database of their own, where the keys are created as `streamrec keys create` creates them. Each
protected route is tried without a key, with a wrong, an unknown, a malformed, a revoked and a
wrong-scope key, then with the right one; publishable keys from their own and a foreign origin;
rate limits until 429 and back; X-Forwarded-For from a trusted and an untrusted peer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from serving.api.app import create_app as create_api
from serving.collector.app import create_app as create_collector
from serving.ops.app import create_app as create_ops
from streamrec.store.connection import connect
from streamrec.auth.authenticator import INVALID, MISSING, REVOKED
from streamrec.auth.keys import SCOPES
from streamrec.auth.store import KeyStore
from streamrec.settings import AuthSettings, RedisSettings, Settings
from streamrec.stack.process import free_port
from streamrec.store import functions
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.topics import Topic
from tests.serving.collector.test_app import click, read_dead_letters, read_user

pytestmark = pytest.mark.stack

SHOP = "https://shop.example"
ITEM = f"access-item-{uuid.uuid4().hex[:8]}"


def configured(settings: Settings, redis_url: str, **auth: object) -> Settings:
    """The session's settings with keys on (unless ``auth`` says otherwise), this module's Redis
    database, the shop's origin allowed by CORS and no canary."""
    return settings.model_copy(update={
        "auth": AuthSettings(**{"enabled": True, "cache_s": 1.0, **auth}),
        "redis": RedisSettings(url=redis_url),
        "collector": settings.collector.model_copy(update={"cors_origins": [SHOP]}),
        "ops": settings.ops.model_copy(update={"canary_interval_s": 0.0}),
    })


@asynccontextmanager
async def serving(app: FastAPI, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running, and a client whose requests come from ``peer``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30) as client:
            yield client


@dataclass
class World:
    settings: Settings
    redis_url: str
    store: KeyStore
    keys: dict[str, str]  # scope -> secret key with that scope alone
    revoked: dict[str, str]  # scope -> revoked secret key with that scope
    publishable: str
    publishable_id: str
    bootstrap: str
    clients: dict[str, httpx.AsyncClient]


@pytest.fixture(scope="module")
async def world(settings) -> AsyncIterator[World]:
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"
    client = connect(RedisSettings(url=redis_url))
    await client.flushdb()
    await functions.load_functions(client)
    store = KeyStore(client)
    keys = {scope: (await store.create("secret", f"{scope} backend", {scope}, []))[1] for scope in SCOPES}
    revoked = {}
    for scope in SCOPES:
        record, revoked[scope] = await store.create("secret", f"revoked {scope}", {scope}, [])
        await store.revoke(record.key_id)
    shop, publishable = await store.create("publishable", "shop", set(), [SHOP])
    vector = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    embedding = (vector / np.linalg.norm(vector)).astype(np.float16)
    now = int(time.time() * 1000)
    await CatalogStore(client).write([CatalogRecord(ITEM, "Nitrile gloves", ("Lab", "Gloves"), None, None, None, True, now, embedding),
                                      CatalogRecord(f"{ITEM}-b", "Latex gloves", ("Lab", "Gloves"), None, None, None, True, now, embedding)],
                                     stored_at_ms=now)
    bootstrap = uuid.uuid4().hex + uuid.uuid4().hex
    app_settings = configured(settings, redis_url, bootstrap_admin_key=bootstrap)
    apps = {"collector": create_collector(app_settings), "api": create_api(app_settings), "ops": create_ops(app_settings)}
    async with AsyncExitStack() as running:
        clients = {name: await running.enter_async_context(serving(app)) for name, app in apps.items()}
        yield World(app_settings, redis_url, store, keys, revoked, publishable, shop.key_id, bootstrap, clients)
    await client.flushdb()
    await client.aclose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# route -> (app, method, path, scope, what a request sends, status of a request that got through)
ROUTES = {
    "collector events": ("collector", "POST", "/v1/events", "events:write", {"json": "click"}, 202),
    "api recommendations": ("api", "GET", "/v1/users/access-someone/recommendations", "recs:read", {}, 200),
    "api similar": ("api", "GET", f"/v1/items/{ITEM}/similar", "recs:read", {}, 200),
    "ops page": ("ops", "GET", "/", "ops:read", {}, 200),
    "ops overview": ("ops", "GET", "/api/overview", "ops:read", {}, 200),
    "ops groups": ("ops", "GET", "/api/groups", "ops:read", {}, 200),
    # Through with the admin key; no such version, so nothing is rolled back (test_admin_rollback does that).
    "ops rollback": ("ops", "POST", "/api/admin/model/rollback", "admin", {"json": {"to": 999_999}}, 409),
}


@pytest.mark.parametrize("route", ROUTES)
async def test_every_route_needs_a_valid_key_of_its_scope(route, world, kafka_reader):
    app, method, path, scope, sends, through = ROUTES[route]
    client, user = world.clients[app], f"access-{uuid.uuid4()}"

    async def call(headers: dict[str, str]) -> httpx.Response:
        body = {"json": [click(user)]} if sends.get("json") == "click" else sends
        return await client.request(method, path, headers=headers, **body)

    key = world.keys[scope]
    key_id = key.split("_")[2]
    wrong_secret = f"sr_sk_{key_id}_" + "A" * 43
    unknown_id = "sr_sk_000000000000_" + key.split("_", 3)[3]
    other_scope = next(other for other in SCOPES if other != scope)
    unauthenticated = {
        "no key": await call({}),
        "not bearer": await call({"Authorization": f"Basic {key}"}),
        "wrong secret": await call(bearer(wrong_secret)),
        "unknown id": await call(bearer(unknown_id)),
        "malformed": await call(bearer("let-me-in")),
        "revoked": await call(bearer(world.revoked[scope])),
    }
    wrong_scope = await call(bearer(world.keys[other_scope]))
    right = await call(bearer(key))
    bootstrap = await call(bearer(world.bootstrap))

    for case, response in unauthenticated.items():
        assert response.status_code == 401, (case, response.text)
        assert response.headers.get_list("www-authenticate")[0] == "Bearer", case
        assert response.headers["content-type"] == "application/json"
    errors = {case: response.json()["error"] for case, response in unauthenticated.items()}
    assert errors["no key"] == errors["not bearer"] == MISSING
    # A wrong secret and an unknown id read the same, so ids cannot be probed.
    assert errors["wrong secret"] == errors["unknown id"] == errors["malformed"] == INVALID
    assert errors["revoked"] == REVOKED
    assert wrong_scope.status_code == 403 and wrong_scope.json() == {"error": f"this key lacks the scope {scope}"}
    assert right.status_code == through, right.text
    assert bootstrap.status_code == through, bootstrap.text
    if app == "collector":  # refused requests never reached Kafka, not even the dead-letter queue
        assert len(read_user(kafka_reader, Topic.CLICKS, user, expected=2)) == 2
        assert read_dead_letters(kafka_reader, user, expected=0, timeout_s=1) == []


async def test_health_and_metrics_stay_open(world):
    for name, client in world.clients.items():
        health, metrics = await client.get("/healthz"), await client.get("/metrics")
        assert health.status_code not in (401, 403), name
        assert metrics.status_code == 200 and "streamrec_access_refused" in metrics.text, name


async def test_publishable_keys_post_events_only_from_their_origins(world, kafka_reader):
    collector, user = world.clients["collector"], f"access-{uuid.uuid4()}"
    key = world.publishable

    def post(headers: dict[str, str], url: str = "/v1/events") -> httpx.Response:
        return collector.post(url, json=[click(user)], headers=headers)

    as_bearer = await post({**bearer(key), "Origin": SHOP})
    as_header = await post({"X-Streamrec-Key": key, "Origin": SHOP})
    as_parameter = await post({"Origin": SHOP}, f"/v1/events?key={key}")  # what navigator.sendBeacon can send
    foreign = await post({"X-Streamrec-Key": key, "Origin": "https://evil.example"})
    no_origin = await post(bearer(key))  # a server using the page's key
    on_api = await world.clients["api"].get("/v1/users/x/recommendations", headers={**bearer(key), "Origin": SHOP})
    secret_in_url = await post({"Origin": SHOP}, f"/v1/events?key={world.keys['events:write']}")

    for response in (as_bearer, as_header, as_parameter):
        assert response.status_code == 202, response.text
        assert response.headers["access-control-allow-origin"] == SHOP
    assert foreign.status_code == 403 and "'https://evil.example' is not one of them" in foreign.json()["error"]
    assert no_origin.status_code == 403 and "no Origin header" in no_origin.json()["error"]
    assert on_api.status_code == 403 and on_api.json()["error"] == "this key lacks the scope recs:read"
    assert secret_in_url.status_code == 401 and "only as `Authorization: Bearer" in secret_in_url.json()["error"]
    assert len(read_user(kafka_reader, Topic.CLICKS, user, expected=3)) == 3

    preflight = await collector.options("/v1/events", headers={
        "Origin": SHOP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization, x-streamrec-key"})
    assert preflight.status_code == 200
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-streamrec-key" in allowed


async def test_a_revoked_key_stops_working_within_cache_s(world):
    ops = world.clients["ops"]
    record, key = await world.store.create("secret", "soon revoked", {"ops:read"}, [])
    assert (await ops.get("/api/groups", headers=bearer(key))).status_code == 200
    await world.store.revoke(record.key_id)
    revoked_at = time.monotonic()
    assert (await ops.get("/api/groups", headers=bearer(key))).status_code == 200  # cached: Redis not asked
    while (response := await ops.get("/api/groups", headers=bearer(key))).status_code == 200:
        assert time.monotonic() - revoked_at < world.settings.auth.cache_s + 0.3, "still accepted after cache_s"
    assert response.status_code == 401 and response.json() == {"error": REVOKED}


async def test_the_ops_page_asks_browsers_for_the_key_as_a_login(world):
    ops = world.clients["ops"]
    challenge = await ops.get("/")
    login = base64.b64encode(f"operator:{world.keys['ops:read']}".encode()).decode()
    page = await ops.get("/", headers={"Authorization": f"Basic {login}"})
    wrong = base64.b64encode(b"operator:guess").decode()
    assert challenge.status_code == 401
    assert challenge.headers.get_list("www-authenticate") == ["Bearer", 'Basic realm="streamrec ops", charset="UTF-8"']
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert (await ops.get("/", headers={"Authorization": f"Basic {wrong}"})).status_code == 401
    # Only the ops service takes a login; the collector does not.
    assert (await world.clients["collector"].post("/v1/events", json=[click("x")],
                                                  headers={"Authorization": f"Basic {login}"})).status_code == 401


def counter(page: str, name: str, **labels: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(page) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


async def test_rate_limits_answer_429_with_retry_after_and_recover(world):
    key = world.keys["events:write"]
    limited = world.settings.model_copy(update={"auth": world.settings.auth.model_copy(update={
        "collector_key_rate": 1.0, "collector_key_burst": 2})})
    async with serving(create_collector(limited)) as collector:
        post = lambda k: collector.post("/v1/events", json=[click(f"access-{uuid.uuid4()}")], headers=bearer(k))  # noqa: E731
        answers = [await post(key) for _ in range(3)]
        other_key = await post(world.bootstrap)  # another key has its own bucket
        assert [a.status_code for a in answers] == [202, 202, 429]
        refused = answers[-1]
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"error": "rate limit of 1 requests/s per key exceeded; retry after 1 s"}
        assert other_key.status_code == 202
        await asyncio.sleep(int(refused.headers["retry-after"]))
        assert (await post(key)).status_code == 202
        page = (await collector.get("/metrics")).text
        assert counter(page, "streamrec_access_refused_total", status="429", reason="rate_key") == 1


async def test_per_address_limits_apply_with_keys_off_and_honour_forwarded_for_only_from_trusted_proxies(world):
    open_limited = world.settings.model_copy(update={"auth": AuthSettings(
        enabled=False, collector_address_rate=1.0, collector_address_burst=1, trusted_proxies=["10.0.0.0/8"])})
    host = random.Random().randint(1, 250)

    async def post(client: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return (await client.post("/v1/events", json=[click(f"access-{uuid.uuid4()}")], headers=headers)).status_code

    app = create_collector(open_limited)
    async with serving(app, peer="10.0.0.5") as via_proxy:
        # Behind our proxy every client has its own bucket, named by the proxy's header.
        assert [await post(via_proxy, f"203.0.113.{host}"), await post(via_proxy, f"1.2.3.4, 203.0.113.{host + 1}")] == [202, 202]
        again = await via_proxy.post("/v1/events", json=[click("x")], headers={"X-Forwarded-For": f"203.0.113.{host}"})
        assert again.status_code == 429 and again.headers["retry-after"] == "1"
        assert "per client address" in again.json()["error"]
    peer = f"198.51.{random.Random().randint(0, 255)}.{host}"
    async with serving(create_collector(open_limited), peer=peer) as direct:
        # A client that is not a proxy of ours cannot pick a bucket by sending the header.
        assert [await post(direct, "192.0.2.1"), await post(direct, "192.0.2.2")] == [202, 429]
        await asyncio.sleep(1)
        assert await post(direct, "192.0.2.3") == 202


async def test_rate_limits_fail_open_and_keys_fail_closed_when_redis_is_away(world):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    auth = dict(collector_address_rate=1.0, collector_address_burst=1, redis_timeout_s=0.2)
    keys_off = world.settings.model_copy(update={"redis": RedisSettings(url=dead), "auth": AuthSettings(enabled=False, **auth)})
    async with serving(create_collector(keys_off)) as collector:
        statuses = [(await collector.post("/v1/events", json=[click(f"access-{uuid.uuid4()}")])).status_code for _ in range(3)]
        page = (await collector.get("/metrics")).text
    assert statuses == [202, 202, 202]  # over the limit, but the limiter could not check: let through
    assert counter(page, "streamrec_rate_limit_unchecked_total", limit="collector-address") == 3

    keys_on = world.settings.model_copy(update={"redis": RedisSettings(url=dead), "auth": AuthSettings(enabled=True, **auth)})
    async with serving(create_collector(keys_on)) as collector:
        refused = await collector.post("/v1/events", json=[click("x")], headers=bearer(world.keys["events:write"]))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "key store is unreachable" in refused.json()["error"]


@pytest.mark.parametrize("enabled", [False, True])
async def test_an_open_service_on_a_public_address_says_so_at_start(world, caplog, enabled):
    public = world.settings.model_copy(update={
        "auth": AuthSettings(enabled=enabled, bootstrap_admin_key=world.bootstrap),
        "collector": world.settings.collector.model_copy(update={"host": "0.0.0.0"}),
        "api": world.settings.api.model_copy(update={"host": "127.0.0.1"}),
    })
    with caplog.at_level(logging.WARNING, logger="serving.access"):
        async with serving(create_collector(public)):
            pass
        async with serving(create_api(public)):
            pass
    warnings = [record.getMessage() for record in caplog.records if record.name == "serving.access"]
    if enabled:
        assert warnings == []
    else:
        assert warnings == ["the collector binds 0.0.0.0 with API keys off: anyone who reaches it can use it; "
                            "set STREAMREC_AUTH__ENABLED=true"]
