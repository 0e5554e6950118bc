"""The stores against the session's real Redis: what each writes is what it and the others read.

Every test uses keys of its own (uuid item and user ids) in a database that other tests share.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import numpy as np
import orjson
import pytest

from streamrec.store import functions, layout
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore, ChangeCursor
from streamrec.store.connection import connect
from streamrec.store.item_statistics import ItemObservations, ItemStatistics
from streamrec.store.profile import RecentInteraction, UserProfile
from streamrec.store.profile_store import ProfileStore
from streamrec.store.recommendation_cache import RecommendationCache
from streamrec.store.watermarks import WatermarkStore

pytestmark = pytest.mark.stack
TAU_SHORT_MS, TAU_LONG_MS = 3_600_000.0, 86_400_000.0


@pytest.fixture
async def client(settings):
    connection = connect(settings.redis.model_copy(update={"url": settings.redis_url.rsplit("/", 1)[0] + "/1"}))
    await functions.load_functions(connection)
    yield connection
    await connection.aclose()


def tag() -> str:
    return uuid.uuid4().hex[:10]


def record(item_id: str, *, embedding: bool = True) -> CatalogRecord:
    vector = np.random.default_rng(0).standard_normal(8).astype(np.float16) if embedding else None
    return CatalogRecord(item_id, f"title {item_id}", ("Lab", "Gloves"), "Brand" if embedding else None,
                         12.5 if embedding else None, "EUR" if embedding else None, embedding, 1_700_000_000_000, vector)


async def test_profiles_are_written_in_the_transaction_and_read_with_one_decode_path(client):
    profiles, run = ProfileStore(client), tag()
    known, missing, broken = f"u-{run}", f"u-{run}-missing", f"u-{run}-broken"
    profile = UserProfile(ref_ts=5_000, last_seen=5_000, recent=[RecentInteraction(5_000, "i1", "click")], affinities={"Lab": 1.0})
    profile.counts["click"] = 1
    await client.set(profiles.key(broken), b"\xc1")
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(profiles.key(known))
        assert await profiles.read_many([known], via=pipe) == {known: None}
        pipe.multi()
        profiles.queue_write(pipe, {known: profile}, ttl_ms=60_000)
        await pipe.execute()
    assert 0 < await client.pttl(profiles.key(known)) <= 60_000
    assert await profiles.read_many([known, missing, broken]) == {known: profile, missing: None, broken: None}
    assert await profiles.read(known) == profile
    assert profiles.unreadable == 1  # the broken one, once per read


async def test_item_statistics_apply_a_batch_and_serve_neighbours_and_trending(client):
    statistics, run = ItemStatistics(client, trending_ttl_s=0.0), tag()
    a, b, c = f"a-{run}", f"b-{run}", f"c-{run}"
    observations = ItemObservations()
    observations.add(a, 1_000, 1.0, [])
    observations.add(b, 2_000, 5.0, [a])
    observations.add(a, 500, 3.0, [b, c])  # late: added with its own decay
    async with client.pipeline(transaction=True) as pipe:
        pipe.multi()
        statistics.queue_apply(pipe, observations, tau_short_ms=TAU_SHORT_MS, tau_long_ms=TAU_LONG_MS, top_n=1)
        await pipe.execute()
    short, long_, newest = await client.hmget(layout.item_stats_key(a), layout.POPULARITY_FIELDS)
    assert int(newest) == 1_000
    assert float(short) == pytest.approx(1.0 + 3.0 * math.exp(-500 / TAU_SHORT_MS), rel=1e-12)
    assert float(long_) == pytest.approx(1.0 + 3.0 * math.exp(-500 / TAU_LONG_MS), rel=1e-12)
    rank = await client.zscore(layout.POPULARITY_SHORT_KEY, a)
    assert rank == pytest.approx(math.log(float(short)) + 1_000 / TAU_SHORT_MS, rel=1e-12)
    # a-b co-visited twice, a-c once; top_n=1 keeps each item's strongest neighbour only.
    assert await statistics.covisit([a, b, c], per_item=10) == [[(b, 2.0)], [(a, 2.0)], [(a, 1.0)]]
    pool = await statistics.trending(10_000)
    assert pool.index(b) < pool.index(a)  # b: one purchase (5) just now beats a's decayed 4
    assert c not in pool  # co-visited but never interacted with


async def test_the_redis_functions_touch_only_the_keys_they_are_given(client):
    """Called with keys of another naming, the functions write and read exactly those keys."""
    run = tag()
    elsewhere = {}

    def moved(key: str) -> str:
        elsewhere[key] = f"elsewhere-{run}:{key}"
        return elsewhere[key]

    a, b = f"a-{run}", f"b-{run}"
    observations = ItemObservations()
    observations.add(a, 1_000, 1.0, [])
    observations.add(b, 2_000, 1.0, [a])
    keys, argument = ItemStatistics.apply_arguments(observations, tau_short_ms=TAU_SHORT_MS, tau_long_ms=TAU_LONG_MS, top_n=5)
    assert await client.fcall(functions.APPLY_STATISTICS, len(keys), *(moved(key) for key in keys), argument) == 2
    profile_key = moved(layout.profile_key(f"u-{run}"))
    await client.fcall(functions.SET_PROFILES, 1, profile_key, 60_000, layout.encode_profile(UserProfile(ref_ts=1)))
    written = {key.decode() async for key in client.scan_iter(f"*{run}*", count=10_000)}
    assert written == set(elsewhere.values())
    assert await client.zscore(elsewhere[layout.POPULARITY_SHORT_KEY], b) is not None
    assert await client.zscore(layout.POPULARITY_SHORT_KEY, b) is None
    # Nothing reads a long-term ranking or a trending ratio, so none is written.
    assert await client.zscore("z:pop:long", b) is None and await client.zscore("z:trending", b) is None

    item_key = f"elsewhere-{run}:catalog"
    await client.hset(item_key, mapping=layout.encode_catalog(record(a)))
    [values] = await client.fcall_ro(functions.HASH_FIELDS, 1, item_key, *layout.CATALOG_FIELDS)
    assert _comparable(layout.decode_catalog(a, values)) == _comparable(record(a))


def _comparable(found: CatalogRecord) -> CatalogRecord:
    """Records hold arrays; compare their bytes."""
    return found if found.embedding is None else CatalogRecord(**{**found.__dict__, "embedding": found.embedding.tobytes()})


async def test_catalog_records_and_changes_round_trip_through_both_reads(client):
    catalog, run = CatalogStore(client), tag()
    with_embedding, without = record(f"a-{run}"), record(f"b-{run}", embedding=False)
    await catalog.write([with_embedding, without], stored_at_ms=7_000)
    wanted = [with_embedding.item_id, f"unknown-{run}", without.item_id]
    for found in (await catalog.read(wanted), await catalog.read_in_one_call(wanted)):
        assert list(found) == [with_embedding.item_id, without.item_id]
        assert _comparable(found[with_embedding.item_id]) == _comparable(with_embedding)
        assert found[without.item_id] == without
    changes = dict(await catalog.changes_since(7_000))
    assert changes[with_embedding.item_id] == 7_000.0 and changes[without.item_id] == 7_000.0
    assert with_embedding.item_id not in dict(await catalog.changes_since(7_001))


class CountingCatalog(CatalogStore):
    """The store, counting the change-log entries each range read returns (what a read costs)."""

    def __init__(self, client) -> None:
        super().__init__(client)
        self.returned: list[int] = []

    async def changes_since(self, since_ms: float) -> list[tuple[str, float]]:
        changed = await super().changes_since(since_ms)
        self.returned.append(len(changed))
        return changed


async def test_a_change_cursor_gives_each_change_once_and_a_quiet_catalog_costs_an_empty_read(client):
    catalog, run = CountingCatalog(client), tag()
    cursor = ChangeCursor(catalog, overlap_ms=300)
    now = int(time.time() * 1000)
    items = [f"c{n}-{run}" for n in range(50)]
    await catalog.write([record(item) for item in items], stored_at_ms=now)
    mine = lambda changes: [item for item, _ in changes if item.endswith(run)]
    assert sorted(mine(await cursor.read())) == sorted(items)
    assert sorted(mine(await cursor.read())) == sorted(items), "not committed (the load failed): the same changes again"
    cursor.commit()
    assert mine(await cursor.read()) == [], "inside the overlap: read again, not returned again"
    cursor.commit()
    await catalog.write([record(items[3])], stored_at_ms=now + 1)
    assert mine(await cursor.read()) == [items[3]], "stored again: a new change"
    cursor.commit()
    await asyncio.sleep(0.4)
    await cursor.read()
    cursor.commit()
    catalog.returned.clear()
    assert mine(await cursor.read()) == [] and catalog.returned == [0], (
        "the window follows the reader's clock: a catalog quiet for longer than the overlap is not read again")
    await catalog.write([record(items[7])], stored_at_ms=int(time.time() * 1000))
    assert mine(await cursor.read()) == [items[7]]


async def test_the_recommendation_cache_keeps_the_bytes_it_was_given_with_a_ttl(client):
    cache, profiles, run = RecommendationCache(client), ProfileStore(client), tag()
    user, other = f"u-{run}", f"v-{run}"
    payload = orjson.dumps({"user_id": user, "items": [{"item_id": "i1", "score": 0.5}], "source_event_ts": 9})
    await cache.write_many([(user, payload), (other, b"{}")], ttl_s=30)
    assert await cache.read(user) == payload and await cache.read(other) == b"{}"
    assert 0 < await client.pttl(cache.key(user)) <= 30_000
    assert await cache.read_with_profile(user, profiles) == (payload, None)
    profile = UserProfile(ref_ts=9, last_seen=9)
    await client.set(profiles.key(user), layout.encode_profile(profile))
    assert await cache.read_with_profile(user, profiles) == (payload, profile)
    assert await cache.read_with_profile(f"nobody-{run}", profiles) == (None, None)


async def test_watermarks_start_below_every_offset_and_advance_in_the_transaction(client):
    watermarks = WatermarkStore(client, group=f"g-{tag()}")
    partitions = [("events.clicks", 0), ("events.carts", 3)]
    assert await watermarks.read(partitions) == {partitions[0]: -1, partitions[1]: -1}
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(*watermarks.keys(partitions))
        assert await watermarks.read(partitions, via=pipe) == {partitions[0]: -1, partitions[1]: -1}
        pipe.multi()
        watermarks.queue_advance(pipe, {partitions[1]: 41})
        await pipe.execute()
    assert await watermarks.read(partitions) == {partitions[0]: -1, partitions[1]: 41}


async def test_calls_beyond_the_pool_wait_for_a_connection_instead_of_failing(settings):
    """Forty calls at once on a pool of four: each holds its connection for 0.2 s (BLPOP on an
    empty list), so most must wait; all of them succeed, and no more than four connections open."""
    small = settings.redis.model_copy(update={"url": settings.redis_url.rsplit("/", 1)[0] + "/1", "max_connections": 4})
    name = f"pool-{tag()}"
    client = connect(small, client_name=name)
    try:
        empty = f"empty-{tag()}"
        started = time.monotonic()
        answers = await asyncio.gather(*(client.blpop([empty], timeout=0.2) for _ in range(40)))
        elapsed = time.monotonic() - started
        assert answers == [None] * 40
        assert elapsed >= 40 / 4 * 0.2 * 0.9  # served four at a time
        opened = [entry for entry in await client.client_list() if entry["name"] == name]
        assert 1 <= len(opened) <= 4
    finally:
        await client.aclose()
