"""The key store, the key check with its cache and the shared rate limiter on the session's real Redis."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
import redis.asyncio as redis

from streamrec.settings import RedisSettings
from streamrec.store.connection import connect
from streamrec.auth.authenticator import INVALID, MISSING, REVOKED, AccessDenied, Authenticator
from streamrec.auth.keys import InvalidKeySpec, digest
from streamrec.auth.ratelimit import Rate, RateLimiter
from streamrec.auth.store import KeyStore
from streamrec.stack.process import free_port
from streamrec.store import functions

pytestmark = pytest.mark.stack


@pytest.fixture
async def client(settings):
    """A Redis database of its own, emptied before and after (so every value in it is this test's)."""
    connection = connect(RedisSettings(url=settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"))
    await connection.flushdb()
    await functions.load_functions(connection)
    yield connection
    await connection.flushdb()
    await connection.aclose()


async def everything_stored(client: redis.Redis) -> bytes:
    """Every key and value in the database, as one blob to search."""
    parts = []
    async for key in client.scan_iter():
        parts.append(key)
        kind = (await client.type(key)).decode()
        if kind == "hash":
            parts.extend(b for pair in (await client.hgetall(key)).items() for b in pair)
        elif kind == "set":
            parts.extend(await client.smembers(key))
        elif kind == "string":
            parts.append(await client.get(key))
    return b"\n".join(parts)


async def test_keys_are_stored_hashed_and_listed_without_their_secret(client):
    store = KeyStore(client)
    shop, shop_key = await store.create("publishable", "shop web", set(), ["https://shop.example"])
    backend, backend_key = await store.create("secret", "recs backend", {"recs:read", "events:write"}, [])

    blob = await everything_stored(client)
    for text in (shop_key, backend_key):
        secret = text.split("_", 3)[3]
        assert text.encode() not in blob and secret.encode() not in blob  # the plaintext appears nowhere
        assert digest(text).encode() in blob
    stored = await client.hgetall(f"ak:{backend.key_id}")
    assert set(stored) == {b"name", b"kind", b"scopes", b"origins", b"created", b"sha256"}
    assert stored[b"sha256"] == digest(backend_key).encode()

    assert await store.get(shop.key_id) == shop and shop.scopes == {"events:write"}
    assert await store.get(backend.key_id) == backend
    assert await store.get("0123456789ab") is None
    assert [record.key_id for record in await store.list()] == [shop.key_id, backend.key_id]

    revoked = await store.revoke(shop.key_id)
    assert revoked.revoked and revoked.revoked_at >= shop.created_at
    again = await store.revoke(shop.key_id)
    assert again.revoked_at == revoked.revoked_at  # the first revocation time stays
    assert await store.revoke("0123456789ab") is None
    assert [record.revoked for record in await store.list()] == [True, False]  # revoked keys stay listed

    with pytest.raises(InvalidKeySpec):
        await store.create("publishable", "bad", {"admin"}, ["https://shop.example"])


async def test_the_check_refuses_alike_what_it_cannot_vouch_for_and_sees_revocation_within_cache_s(client):
    store = KeyStore(client)
    reader, reader_key = await store.create("secret", "reader", {"recs:read"}, [])
    _, shop_key = await store.create("publishable", "shop", set(), ["https://shop.example"])
    bootstrap = f"bootstrap-{uuid.uuid4()}"
    keys = Authenticator(store, cache_s=0.5, bootstrap_key=bootstrap)

    async def denied(text, scope="recs:read", origin=None, in_url=False) -> tuple[int, str]:
        with pytest.raises(AccessDenied) as error:
            await keys.authenticate(text, scope=scope, origin=origin, in_url=in_url)
        return error.value.status, error.value.message

    assert (await keys.authenticate(reader_key, scope="recs:read", origin=None)).key_id == reader.key_id
    assert await denied(None) == (401, MISSING)
    wrong_secret = reader_key[:-4] + ("AAAA" if not reader_key.endswith("AAAA") else "BBBB")
    unknown_id = "sr_sk_0123456789ab_" + reader_key.split("_", 3)[3]
    assert await denied(wrong_secret) == await denied(unknown_id) == await denied("not-a-key") == (401, INVALID)
    assert (await denied(reader_key, scope="admin"))[0] == 403
    assert (await denied(reader_key, in_url=True))[0] == 401  # a secret key never rides in a URL
    assert (await keys.authenticate(shop_key, scope="events:write", origin="https://shop.example", in_url=True)).kind == "publishable"
    assert (await denied(shop_key, scope="events:write", origin="https://evil.example"))[0] == 403
    assert (await denied(shop_key, scope="events:write"))[0] == 403
    assert (await keys.authenticate(bootstrap, scope="admin", origin=None)).key_id == "bootstrap"

    await keys.authenticate(reader_key, scope="recs:read", origin=None)  # cached from here
    await store.revoke(reader.key_id)
    revoked_at = time.monotonic()
    await keys.authenticate(reader_key, scope="recs:read", origin=None)  # still cached: no Redis round trip
    while True:
        try:
            await keys.authenticate(reader_key, scope="recs:read", origin=None)
        except AccessDenied as error:
            assert (error.status, error.message) == (401, REVOKED)
            break
        assert time.monotonic() - revoked_at < 0.5 + 0.2, "revocation not seen within cache_s"
        await asyncio.sleep(0.02)


async def test_the_check_fails_closed_when_the_key_store_is_away():
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    keys = Authenticator(KeyStore(dead), cache_s=5)
    with pytest.raises(AccessDenied) as error:
        await keys.authenticate("sr_sk_0123456789ab_" + "a" * 43, scope="recs:read", origin=None)
    assert error.value.status == 503
    await dead.aclose()


async def test_the_rate_limit_is_shared_by_replicas_and_recovers_after_retry_after(client):
    subject = uuid.uuid4().hex
    replicas = [RateLimiter(client), RateLimiter(client)]
    rate = Rate(per_s=1, burst=3)
    verdicts = [await replicas[n % 2].hit("test", subject, rate) for n in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]  # the burst, counted across both
    assert all(v.checked for v in verdicts) and verdicts[-1].retry_after_s == 1
    assert (await replicas[0].hit("test", f"{subject}-other", rate)).allowed  # every subject has its own
    assert 0 < await client.pttl(f"rl:test:{subject}") <= 3001  # idle limits expire

    await asyncio.sleep(verdicts[-1].retry_after_s)
    assert (await replicas[1].hit("test", subject, rate)).allowed
    assert not (await replicas[0].hit("test", subject, rate)).allowed  # one interval bought one request

    fast = Rate(per_s=50, burst=1)
    assert (await replicas[0].hit("fast", subject, fast)).allowed
    assert (refused := await replicas[0].hit("fast", subject, fast)).retry_after_s == 1  # whole seconds, at least 1
    assert (await replicas[0].hit("none", subject, Rate(per_s=0, burst=1))).allowed  # 0: unlimited, no Redis call
    assert not refused.allowed


async def test_the_rate_limit_fails_open_when_redis_is_away():
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    limiter = RateLimiter(dead, pause_s=60)
    first = await limiter.hit("test", "x", Rate(per_s=1, burst=1))
    started = time.monotonic()
    second = await limiter.hit("test", "x", Rate(per_s=1, burst=1))
    assert first.allowed and not first.checked
    assert second.allowed and not second.checked and time.monotonic() - started < 0.05  # paused: Redis not asked
    await dead.aclose()
