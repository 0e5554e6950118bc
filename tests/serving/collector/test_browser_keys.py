"""A publishable key in a real page (headless Chromium): ``fetch`` with the key in ``X-Streamrec-Key``
and ``navigator.sendBeacon`` with it in the URL both get events in from the key's own origin, and
neither does from another origin, even one that CORS allows."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from streamrec.auth.store import KeyStore
from streamrec.components import ComponentProcess
from streamrec.settings import RedisSettings
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store.connection import connect
from streamrec.topics import Topic
from tests.browser import Page, chromium, element_text
from tests.serving.collector.test_app import click, read_user

pytestmark = pytest.mark.stack

# The page takes the key from its own URL (?key=), as a shop's page would have it in its source.
PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const key = new URLSearchParams(location.search).get("key"), collector = %(collector)s;
navigator.sendBeacon(collector + "/v1/events?key=" + encodeURIComponent(key), %(beacon)s);
fetch(collector + "/v1/events", {method: "POST", headers: {"Content-Type": "application/json", "X-Streamrec-Key": key},
                                 body: %(fetched)s})
  .then(r => r.json().then(j => document.getElementById("out").textContent = "status " + r.status + " " + (j.error || "accepted " + j.accepted)))
  .catch(e => document.getElementById("out").textContent = "blocked " + e.name);
</script></body></html>"""


def create_key(redis_url: str, origin: str) -> str:
    async def create() -> str:
        client = connect(RedisSettings(url=redis_url))
        try:
            return (await KeyStore(client).create("publishable", "browser test", set(), [origin]))[1]
        finally:
            await client.aclose()

    return asyncio.run(create())


def test_a_publishable_key_works_from_its_own_pages_only(settings, kafka_reader, tmp_path: Path):
    browser = chromium()
    port, run = free_port(), uuid.uuid4().hex[:8]
    collector_url = f"http://127.0.0.1:{port}"
    pages = {
        name: Page(PAGE % {"collector": json.dumps(collector_url),
                           "beacon": json.dumps(json.dumps([click(f"beacon-{run}-{name}")])),
                           "fetched": json.dumps(json.dumps([click(f"fetch-{run}-{name}")]))})
        for name in ("shop", "other")
    }
    key = create_key(settings.redis_url, pages["shop"].origin)
    env = {**stack_environment(settings.stack), "STREAMREC_COLLECTOR__PORT": str(port), "STREAMREC_AUTH__ENABLED": "true",
           # CORS lets both pages call; only the key's binding keeps the other one out.
           "STREAMREC_COLLECTOR__CORS_ORIGINS": json.dumps([page.origin for page in pages.values()])}
    server = ComponentProcess(["collector", "serve"], tmp_path / "collector.log", env).start()
    try:
        server.wait_http(f"{collector_url}/healthz")
        seen = {}
        for name, page in pages.items():
            seen[name] = element_text(browser, f"{page.origin}/?key={quote(key)}")
    finally:
        server.stop()
        for page in pages.values():
            page.close()
    assert seen["shop"] == "status 202 accepted 1", seen
    assert seen["other"].startswith("status 403 a publishable key works only from its own web pages"), seen
    for way in ("beacon", "fetch"):
        assert len(read_user(kafka_reader, Topic.CLICKS, f"{way}-{run}-shop", expected=1)) == 1, way
        assert read_user(kafka_reader, Topic.CLICKS, f"{way}-{run}-other", expected=0, timeout_s=2) == [], way
