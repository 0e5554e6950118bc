"""``streamrec keys create|list|revoke`` on the session's real Redis: the key is printed once, the
list never shows it, and a revoked key is marked."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from streamrec.store.connection import connect_blocking
from streamrec.cli import app
from streamrec.settings import RedisSettings

pytestmark = pytest.mark.stack


@pytest.fixture
def cli_settings(settings):
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.Random().randint(2, 15)}"
    client = connect_blocking(RedisSettings(url=url))
    client.flushdb()
    yield settings.model_copy(update={"redis": RedisSettings(url=url)})
    client.flushdb()
    client.close()


def run(settings, *args: str):
    return CliRunner().invoke(app, list(args), obj=settings)


def words(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_keys_are_shown_once_listed_without_secrets_and_revoked(cli_settings):
    created = run(cli_settings, "keys", "create", "--kind", "publishable", "--name", "shop web",
                  "--origin", "https://shop.example", "--json")
    assert created.exit_code == 0, created.output
    shop = json.loads(created.output)
    assert shop["key"].startswith(f"sr_pk_{shop['id']}_") and shop["scopes"] == ["events:write"]
    human = run(cli_settings, "keys", "create", "--kind", "secret", "--name", "backend", "--scope", "recs:read", "--scope", "events:write")
    assert human.exit_code == 0, human.output
    [backend_key] = [line for line in human.output.splitlines() if line.startswith("sr_sk_")]
    backend_id = backend_key.split("_")[2]
    assert "not shown again" in words(human.output)

    listed = run(cli_settings, "keys", "list")
    as_json = run(cli_settings, "keys", "list", "--json")
    assert listed.exit_code == 0 and shop["id"] in listed.output and backend_id in listed.output
    for output in (listed.output, as_json.output):
        assert shop["key"].split("_", 3)[3] not in output and backend_key.split("_", 3)[3] not in output
    assert [(k["id"], k["revoked_at"]) for k in json.loads(as_json.output)] == [(shop["id"], None), (backend_id, None)]

    revoked = run(cli_settings, "keys", "revoke", shop["id"])
    assert revoked.exit_code == 0 and "within 5 s" in words(revoked.output)
    assert json.loads(run(cli_settings, "keys", "list", "--json").output)[0]["revoked_at"] is not None
    assert run(cli_settings, "keys", "revoke", "0123456789ab").exit_code == 1

    bad = run(cli_settings, "keys", "create", "--kind", "publishable", "--name", "x", "--scope", "admin", "--origin", "https://a.example")
    assert bad.exit_code == 2 and "only have the scope events:write" in words(bad.output)
    unknown = run(cli_settings, "keys", "create", "--kind", "secret", "--name", "x", "--scope", "recs:write")
    assert unknown.exit_code == 2 and "unknown scope" in words(unknown.output)
