"""The API while Redis cannot be read: degraded lists from the last trending read, never a 500.

Redis is a server of the test's own, so it can be killed and brought back without touching the
session's.
"""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import asynccontextmanager

import httpx
import numpy as np

from serving.api.app import create_app
from streamrec.settings import RecsSettings, RedisSettings
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.catalog import CatalogRecord
from streamrec.store.connection import connect_blocking


@asynccontextmanager
async def serving(app):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
            yield client


def add_trending(client, scores: dict[str, float]) -> None:
    """Items in the catalog (the API serves only those) and in the short-term popularity ranking."""
    now = int(time.time() * 1000)
    for n, item in enumerate(scores):
        vector = np.random.default_rng(n).standard_normal(384).astype(np.float32)
        record = CatalogRecord(item, f"Item {item}", ("Lab",), None, None, None, True, now,
                               (vector / np.linalg.norm(vector)).astype(np.float16))
        client.hset(layout.item_key(item), mapping=layout.encode_catalog(record))
        client.zadd(layout.CATALOG_CHANGES_KEY, {item: now})
    client.zadd(layout.POPULARITY_SHORT_KEY, scores)


def start_redis(port: int, folder) -> subprocess.Popen:
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                                "--appendonly", "no", "--save", ""], stdout=subprocess.DEVNULL)
    client = connect_blocking(RedisSettings(url=f"redis://127.0.0.1:{port}/0"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.1)
    raise AssertionError("redis-server did not start")


async def test_lists_degrade_to_the_last_trending_while_redis_is_down_and_recover(settings, tmp_path):
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    client = connect_blocking(RedisSettings(url=url))
    add_trending(client, {"hot-1": 3.0, "hot-2": 2.0, "hot-3": 1.0})
    app_settings = settings.model_copy(update={
        "redis": RedisSettings(url=url), "recs": RecsSettings(**{**settings.recs.model_dump(), "scorer_enabled": False}),
    })
    try:
        async with serving(create_app(app_settings)) as api:
            up = await api.get("/v1/users/someone/recommendations", params={"k": 3})
            assert up.status_code == 200 and [item["item_id"] for item in up.json()["items"]] == ["hot-1", "hot-2", "hot-3"]

            redis_process.send_signal(signal.SIGKILL)
            redis_process.wait()
            down = await api.get("/v1/users/someone/recommendations", params={"k": 2, "exclude": "hot-1"})
            assert down.status_code == 200, down.text
            body = down.json()
            assert body["degraded"] and "store unavailable" in body["degraded_reason"]
            assert [item["item_id"] for item in body["items"]] == ["hot-2", "hot-3"]
            assert (await api.get("/healthz")).status_code == 503
            assert (await api.get("/v1/items/hot-1/similar")).status_code == 200  # from the item index in memory
            metrics = (await api.get("/metrics")).text
            assert "streamrec_api_store_unavailable_total 1.0" in metrics

            redis_process = start_redis(port, tmp_path)
            add_trending(connect_blocking(RedisSettings(url=url)), {"hot-1": 3.0})  # an empty Redis again, then data
            deadline = time.monotonic() + 20
            while True:
                again = await api.get("/v1/users/someone/recommendations", params={"k": 1})
                if again.status_code == 200 and not again.json()["degraded"]:
                    break
                assert time.monotonic() < deadline, again.text
            assert again.json()["model_version"] != "fallback" and again.json()["items"]
    finally:
        redis_process.kill()
        redis_process.wait()
