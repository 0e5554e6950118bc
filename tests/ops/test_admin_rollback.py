"""``POST /api/admin/model/rollback`` on the operations service does what ``streamrec model rollback``
does, with an admin key only: on the session's real Triton, a model of this test's own with two tiny
versions goes back to the first, the second is retired, and ``model.updates`` says so."""

from __future__ import annotations

import random
import uuid

import httpx
import pytest
import tritonclient.grpc as grpcclient

from serving.ops.app import create_app
from streamrec.store.connection import connect
from streamrec.auth.store import KeyStore
from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, publish_sequence
from streamrec.model.bootstrap import first_sequence_model
from streamrec.model.registry import ModelRegistry
from streamrec.settings import AuthSettings, RedisSettings, TrainerSettings
from streamrec.topics import Topic
from tests.conftest import tiny_catalog

pytestmark = pytest.mark.stack


def two_version_model(settings, name: str) -> ModelRegistry:
    """``<repo>/<name>``: bert_scorer's config under another name (not following the catalog), two
    tiny untrained versions, version 2 served."""
    repo = settings.stack.model_repo
    (repo / name).mkdir()
    config = (repo / contract.BERT_SCORER / "config.pbtxt").read_text()
    config = config.replace(f'name: "{contract.BERT_SCORER}"', f'name: "{name}"')
    config = config.replace('key: "catalog_refresh_s" value: { string_value: "2" }', 'key: "catalog_refresh_s" value: { string_value: "0" }')
    (repo / name / "config.pbtxt").write_text(config)
    served = first_sequence_model(*tiny_catalog(), tiny=True)
    for version in (1, 2):
        metadata = VersionMetadata(kind="sequence", base="untrained (tests)", max_length=served.max_history,
                                   metrics={"holdout_ndcg10": 0.1 * version}, lineage={"untrained": True})
        publish_sequence(repo, name, served, metadata, version=version)
    registry = ModelRegistry(repo, name, settings.triton.grpc_url or "", load_timeout_s=120)
    registry.activate(2)
    return registry


async def test_admin_key_rolls_the_model_back_and_others_cannot(settings, kafka_reader):
    name = f"admin_rollback_{uuid.uuid4().hex[:6]}"
    registry = two_version_model(settings, name)
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"
    client = connect(RedisSettings(url=redis_url))
    store = KeyStore(client)
    _, admin = await store.create("secret", "operator", {"admin"}, [])
    _, reader = await store.create("secret", "dashboard", {"ops:read"}, [])
    ops_settings = settings.model_copy(update={
        "auth": AuthSettings(enabled=True),
        "redis": RedisSettings(url=redis_url),
        "trainer": TrainerSettings(model=name, model_repo=settings.stack.model_repo, load_timeout_s=120),
        "recs": settings.recs.model_copy(update={"scorer_model": name}),
        "ops": settings.ops.model_copy(update={"canary_interval_s": 0.0}),
    })
    app = create_app(ops_settings)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops", timeout=180) as ops:
                anonymous = await ops.post("/api/admin/model/rollback")
                read_only = await ops.post("/api/admin/model/rollback", headers={"Authorization": f"Bearer {reader}"})
                assert registry.served_version() == 2  # neither changed anything
                done = await ops.post("/api/admin/model/rollback", headers={"Authorization": f"Bearer {admin}"})
                served_after = registry.served_version()
                again = await ops.post("/api/admin/model/rollback", json={"to": 2}, headers={"Authorization": f"Bearer {admin}"})
    finally:
        await client.aclose()
        with grpcclient.InferenceServerClient(settings.triton.grpc_url) as triton:
            triton.unload_model(name)  # its Python stub holds a torch process; the session needs the memory

    assert anonymous.status_code == 401 and anonymous.headers.get_list("www-authenticate")[0] == "Bearer"
    assert read_only.status_code == 403 and read_only.json() == {"error": "this key lacks the scope admin"}
    assert done.status_code == 200, done.text
    assert done.json() == {"model": name, "version": 1, "announced": True, "announce_error": None}
    assert served_after == 1 and registry.versions() == [1] and registry.retired() == [2]
    # Version 2 is retired: going "back" to it is refused, as the CLI refuses it.
    assert again.status_code == 409 and "version 2 is not a complete version here" in again.json()["error"]
    [update] = kafka_reader.read(Topic.MODEL_UPDATES, match=lambda v: v.get("model") == name, expected=1, timeout_s=15)
    assert (update["event"], update["version"], update["metrics"]) == ("rolled_back", 1, {"holdout_ndcg10": 0.1})
