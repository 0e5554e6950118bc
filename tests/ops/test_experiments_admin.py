"""Experiments over the operations service's HTTP side, on the session's real Redis: starting and
stopping need an admin key, listing and reports a reader's; no key, a wrong, a revoked or a
reader's key changes nothing."""

from __future__ import annotations

import random
import uuid

import httpx

from serving.ops.app import create_app
from streamrec.auth.store import KeyStore
from streamrec.settings import AuthSettings, RedisSettings
from streamrec.store.connection import connect


async def test_admin_key_starts_and_stops_an_experiment_and_a_reader_reads_its_report(settings):
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"
    client = connect(RedisSettings(url=redis_url))
    await client.flushdb()
    store = KeyStore(client)
    _, admin = await store.create("secret", "operator", {"admin"}, [])
    revoked_record, revoked = await store.create("secret", "former operator", {"admin"}, [])
    await store.revoke(revoked_record.key_id)
    _, reader = await store.create("secret", "dashboard", {"ops:read"}, [])
    ops_settings = settings.model_copy(update={
        "auth": AuthSettings(enabled=True), "redis": RedisSettings(url=redis_url),
        "ops": settings.ops.model_copy(update={"canary_interval_s": 0.0}),
    })
    name = f"x{uuid.uuid4().hex[:8]}"
    body = {"name": name, "salt": "s", "variants": [{"name": "popular", "ranking": "popularity", "share": 0.5},
                                                    {"name": "bert", "ranking": "full", "share": 0.5}]}
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    app = create_app(ops_settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops", timeout=60) as ops:
                refused = [await ops.post("/api/admin/experiments", json=body, headers=headers)
                           for headers in ({}, bearer("sk_wrong"), bearer(revoked), bearer(reader))]
                assert (await ops.get("/api/experiments", headers=bearer(reader))).json() == []
                created = await ops.post("/api/admin/experiments", json=body, headers=bearer(admin))
                twice = await ops.post("/api/admin/experiments", json=body, headers=bearer(admin))
                invalid = await ops.post("/api/admin/experiments", headers=bearer(admin),
                                         json={**body, "name": "y", "variants": body["variants"][:1]})
                listed = (await ops.get("/api/experiments", headers=bearer(reader))).json()
                report = await ops.get(f"/api/experiments/{name}/report", headers=bearer(reader))
                stop_by_reader = await ops.post(f"/api/admin/experiments/{name}/stop", headers=bearer(reader))
                stopped = await ops.post(f"/api/admin/experiments/{name}/stop", headers=bearer(admin))
                missing = await ops.get("/api/experiments/nope/report", headers=bearer(reader))
    finally:
        await client.flushdb()
        await client.aclose()

    assert [r.status_code for r in refused] == [401, 401, 401, 403]
    assert created.status_code == 201 and created.json()["status"] == "running" and created.json()["version"] == 1
    assert twice.status_code == 409 and "exists already" in twice.json()["error"]
    assert invalid.status_code == 422
    assert [e["name"] for e in listed] == [name]
    assert report.status_code == 200 and [v["name"] for v in report.json()["variants"]] == ["popular", "bert"]
    assert report.json()["sample_ratio"]["observed"] == [0, 0]
    assert stop_by_reader.status_code == 403
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped" and stopped.json()["version"] == 2
    assert missing.status_code == 404
