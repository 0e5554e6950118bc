"""Browsers may post events only from the shop's own origins (CORS), checked with headless Chromium.

A page served from an allowed origin and one from another origin both try to POST a click to
a real collector process; the browser itself must let the first through and block the second.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from streamrec.components import ComponentProcess
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.topics import Topic
from tests.browser import Page, chromium, element_text
from tests.serving.collector.test_app import click, read_user, running_collector

PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
fetch("%(collector)s/v1/events", {method: "POST", headers: {"Content-Type": "application/json"}, body: %(body)s})
  .then(r => r.json().then(j => document.getElementById("out").textContent = "status " + r.status + " accepted " + j.accepted))
  .catch(e => document.getElementById("out").textContent = "blocked " + e.name);
</script></body></html>"""


async def test_preflight_names_only_the_allowed_origin(settings):
    async with running_collector(settings, cors_origins=["https://shop.example"]) as client:
        allowed = await client.options("/v1/events", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        other = await client.options("/v1/events", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        posted = await client.post("/v1/events", json=[click(f"user-{uuid.uuid4()}")], headers={"Origin": "https://shop.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert posted.status_code == 202 and posted.headers["access-control-allow-origin"] == "https://shop.example"


def test_a_browser_posts_from_the_allowed_origin_and_is_blocked_from_another(settings, kafka_reader, tmp_path: Path):
    browser = chromium()
    port, run = free_port(), uuid.uuid4().hex[:8]
    collector_url = f"http://127.0.0.1:{port}"
    pages = {}
    for name in ("shop", "other"):
        body = json.dumps(json.dumps([click(f"cors-{run}-{name}")]))
        pages[name] = Page(PAGE % {"collector": collector_url, "body": body})
    env = {**stack_environment(settings.stack), "STREAMREC_COLLECTOR__PORT": str(port),
           "STREAMREC_COLLECTOR__CORS_ORIGINS": json.dumps([pages["shop"].origin])}
    server = ComponentProcess(["collector", "serve"], tmp_path / "collector.log", env).start()
    try:
        server.wait_http(f"{collector_url}/healthz")
        seen = {}
        for name, page in pages.items():
            seen[name] = element_text(browser, page.origin + "/")
    finally:
        server.stop()
        for page in pages.values():
            page.close()
    assert seen["shop"] == "status 202 accepted 1", seen
    assert seen["other"].startswith("blocked"), seen
    # The browser sends a simple-looking JSON POST only after a preflight, so the blocked page's
    # event never reached Kafka; the allowed one did, once.
    assert len(read_user(kafka_reader, Topic.CLICKS, f"cors-{run}-shop", expected=1)) == 1
    assert read_user(kafka_reader, Topic.CLICKS, f"cors-{run}-other", expected=0, timeout_s=3) == []
