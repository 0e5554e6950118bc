"""The operations service on the real stack, read by a real browser.

A collector, a streams worker, a recs worker, the API, a trainer and the operations service run
as processes on the session's Kafka, Redis and Triton. Real shop events go in through the
collector (one malformed among them); the canary must get its list back; the page, loaded in
Debian's headless Chromium, must show the figures the metrics endpoints give; and every metric
the alert rules and the Grafana dashboard read must exist on one of these running processes.
"""

from __future__ import annotations

import html.parser
import os
import random
import shutil
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.components import ComponentProcess
from streamrec.datasets.loaders import load
from streamrec.datasets.replay import catalog_event
from streamrec.kafka_admin import commit_groups_at_end
from streamrec.producer import EventProducer
from streamrec.settings import REPO_ROOT
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.connection import connect_blocking
from streamrec.topics import INTERACTION_TOPICS, Topic
from tests.browser import browse, chromium
from tests.ops.monitoring import monitoring_metric_names

pytestmark = pytest.mark.stack

CATALOG_ITEMS = 150
SCREENSHOT = REPO_ROOT / "docs" / "images" / "ops-page.png"


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def metric_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def ops_stack(settings, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    amazon = load("amazon_scientific", data_dir)
    db = random.Random().randint(2, 15)
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = connect_blocking(settings.redis.model_copy(update={"url": redis_url}))
    client.flushdb()
    suffix = uuid.uuid4().hex[:8]
    streams_group, recs_group, trainer_group = f"ops-streams-{suffix}", f"ops-recs-{suffix}", f"ops-trainer-{suffix}"
    attribution_group = f"ops-attribution-{suffix}"
    commit_groups_at_end(settings.kafka, {
        streams_group: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
        recs_group: [Topic.PROFILES_UPDATED.value],
        trainer_group: [Topic.ACCEPTED.value],
        attribution_group: [Topic.IMPRESSIONS.value, Topic.ACCEPTED.value],
    })
    ports = {name: free_port() for name in ("collector", "streams", "recs", "api", "trainer", "ops", "attribution")}
    env = {
        **stack_environment(settings.stack),
        "STREAMREC_REDIS__URL": redis_url,
        "STREAMREC_COLLECTOR__PORT": str(ports["collector"]),
        "STREAMREC_STREAMS__APP_ID": streams_group,
        "STREAMREC_STREAMS__WEB_PORT": str(ports["streams"]),
        "STREAMREC_RECS__APP_ID": recs_group,
        "STREAMREC_ATTRIBUTION__APP_ID": attribution_group,
        "STREAMREC_ATTRIBUTION__WEB_PORT": str(ports["attribution"]),
        "STREAMREC_RECS__WEB_PORT": str(ports["recs"]),
        "STREAMREC_RECS__INDEX_REFRESH_S": "0.5",
        "STREAMREC_RECS__SCORER_BUDGET_MS": "5000",
        "STREAMREC_API__PORT": str(ports["api"]),
        "STREAMREC_TRAINER__GROUP_ID": trainer_group,
        "STREAMREC_TRAINER__METRICS_PORT": str(ports["trainer"]),
        "STREAMREC_TRAINER__MIN_EVENTS": "1000000000",  # its metrics, not its training, are under test here
        "STREAMREC_TRAINER__MODEL_REPO": str(root / "unused-model-repo"),
        "STREAMREC_OPS__PORT": str(ports["ops"]),
        "STREAMREC_OPS__PERIODIC_GROUPS": f'["{trainer_group}"]',
        "STREAMREC_OPS__INTERVAL_S": "1",
        # Faust commits about every 3 s: a window much shorter than that would call a busy group stalled.
        "STREAMREC_OPS__WINDOW": "8",
        "STREAMREC_OPS__CANARY_INTERVAL_S": "2",
        "STREAMREC_OPS__CANARY_TIMEOUT_S": "20",
    }
    components = {
        "collector": ComponentProcess(["collector", "serve"], root / "collector.log", env).start(),
        "streams": ComponentProcess(["streams", "worker"], root / "streams.log", env).start(),
        "recs": ComponentProcess(["recs", "worker"], root / "recs.log", env).start(),
        "attribution": ComponentProcess(["streams", "attribution"], root / "attribution.log", env).start(),
        "api": ComponentProcess(["api", "serve"], root / "api.log", env).start(),
        "trainer": ComponentProcess(["trainer", "run", "--interval", "1h"], root / "trainer.log", env).start(),
        "ops": ComponentProcess(["ops", "serve"], root / "ops.log", env).start(),
    }
    producer = EventProducer.from_settings(settings)
    try:
        now = int(time.time() * 1000)
        for item in amazon.catalog[:CATALOG_ITEMS]:
            producer.produce(catalog_event(item, now))
        producer.flush()
        deadline = time.monotonic() + 180
        while client.zcard(layout.CATALOG_CHANGES_KEY) < CATALOG_ITEMS and time.monotonic() < deadline:
            assert all(c.alive() for c in components.values()), "\n\n".join(c.log_tail() for c in components.values())
            time.sleep(0.5)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        components["collector"].wait_http(f"{urls['collector']}/healthz")
        components["api"].wait_http(f"{urls['api']}/healthz")
        components["trainer"].wait_http(f"{urls['trainer']}/metrics", timeout_s=120)
        components["attribution"].wait_http(f"{urls['attribution']}/metrics", timeout_s=120)
        components["ops"].wait_http(f"{urls['ops']}/healthz")
        yield {"urls": urls, "amazon": amazon, "components": components, "groups": (streams_group, recs_group),
               "ports": ports, "settings": settings}
    finally:
        producer.close()
        for component in components.values():
            component.stop()
        client.flushdb()
        client.close()


def post_shop_events(ops_stack) -> int:
    """Real sequences of the loaded items through the collector, plus one malformed event."""
    known = {item.item_id for item in ops_stack["amazon"].catalog[:CATALOG_ITEMS]}
    run = uuid.uuid4().hex[:6]
    now = int(time.time() * 1000)
    events = [
        {"type": "click", "event_id": str(uuid.uuid4()), "user_id": f"ops-{run}-{e.user_id}", "item_id": e.item_id, "ts": now + n}
        for n, e in enumerate(ops_stack["amazon"].events) if e.item_id in known
    ][:400]
    events.append({"type": "click", "user_id": f"ops-{run}-bad", "ts": now})  # no item_id: dead-lettered
    response = httpx.post(f"{ops_stack['urls']['collector']}/v1/events", json=events, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["rejected"] == 1
    return len(events) - 1


def wait_for(predicate, what: str, timeout_s: float = 90.0, components=None):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    logs = "\n\n".join(f"== {name}\n{c.log_tail()}" for name, c in (components or {}).items())
    raise AssertionError(f"timed out waiting for {what}; last: {last}\n{logs}")


def overview(ops_stack) -> dict:
    return httpx.get(f"{ops_stack['urls']['ops']}/api/overview", timeout=10).json()


def test_canary_lag_status_and_scorecard_reach_the_metrics(ops_stack):
    accepted = post_shop_events(ops_stack)
    streams_group, recs_group = ops_stack["groups"]
    components = ops_stack["components"]

    def settled():
        o = overview(ops_stack)
        groups = {g["group"]: g for g in o["groups"]}
        canary_ok = o["canary"]["last"] is not None and o["canary"]["last"]["ok"]
        quality = o["data_quality"]
        if canary_ok and streams_group in groups and recs_group in groups and quality and quality["events_seen"] >= accepted:
            return o
        return None

    o = wait_for(settled, "canary list, both groups and the scorecard", components=components)
    assert 0 < o["canary"]["last"]["seconds"] < 20
    groups = {g["group"]: g for g in o["groups"]}
    assert groups[streams_group]["status"] in ("OK", "WARN"), groups[streams_group]
    assert groups[streams_group]["members"] >= 1

    text = httpx.get(f"{ops_stack['urls']['ops']}/metrics", timeout=10).text
    values = metric_values(text)
    assert values[("streamrec_canary_freshness_seconds_count", ())] >= 1
    statuses = {dict(labels)["status"]: value for (name, labels), value in values.items()
                if name == "streamrec_group_status" and dict(labels)["group"] == streams_group}
    assert sum(statuses.values()) == 1 and set(statuses) == {"OK", "WARN", "ERR", "STOP", "STALL", "REWIND"}
    assert values[("streamrec_data_quality_level", ())] == o["data_quality"]["level"]
    assert values[("streamrec_ops_target_up", (("job", "trainer"),))] == 1
    # The canary's clicks are not counted as shop data.
    assert o["data_quality"]["events_seen"] < accepted + o["canary"]["probes"]


def test_every_metric_of_the_alerts_and_the_dashboard_exists_on_a_running_process(ops_stack):
    urls, settings = ops_stack["urls"], ops_stack["settings"]
    post_shop_events(ops_stack)  # histograms and labelled counters get their first samples
    endpoints = {
        "collector": f"{urls['collector']}/metrics", "streams": f"{urls['streams']}/metrics", "recs": f"{urls['recs']}/metrics",
        "attribution": f"{urls['attribution']}/metrics",
        "api": f"{urls['api']}/metrics", "trainer": f"{urls['trainer']}/metrics", "ops": f"{urls['ops']}/metrics",
        "triton": f"http://127.0.0.1:{settings.stack.triton_metrics_port}/metrics",
    }
    httpx.get(f"{urls['api']}/v1/users/someone/recommendations", timeout=30)  # one API request observed
    wait_for(lambda: overview(ops_stack)["canary"]["probes"] >= 1, "a canary probe", components=ops_stack["components"])
    exported: set[str] = {"up"}  # Prometheus's own, for every target
    for job, url in endpoints.items():
        exported |= metric_names(httpx.get(url, timeout=10).text)
    missing = sorted(name for name in monitoring_metric_names() if name not in exported)
    assert not missing, f"rules or dashboard read metrics no process exports: {missing}"


class _Dom(html.parser.HTMLParser):
    """Text of elements by id, and of [data-field] cells inside rows keyed by a data-* attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        self._stack: list[tuple[str, str | None, tuple[str, str] | None, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        row = next(((key, value) for key, value in attrs.items() if key in ("data-group", "data-model", "data-check", "data-job")), None)
        parent_row = next((entry[2] for entry in reversed(self._stack) if entry[2] is not None), None)
        if attrs.get("id"):
            self.attrs_by_id[attrs["id"]] = attrs
        self._stack.append((tag, attrs.get("id"), row or parent_row, attrs.get("data-field")))
        if tag in ("br", "img", "meta", "link", "input"):
            self._stack.pop()

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, element_id, _, _ in self._stack:
            if element_id:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data
        if self._stack:
            _, _, row, field = self._stack[-1]
            if row is not None and field is not None:
                self.rows.setdefault(row, {})[field] = self.rows.get(row, {}).get(field, "") + data


def test_the_page_shows_the_live_figures_in_a_real_browser(ops_stack, tmp_path):
    browser = chromium()
    post_shop_events(ops_stack)
    urls = ops_stack["urls"]
    streams_group, _ = ops_stack["groups"]
    wait_for(lambda: (o := overview(ops_stack))["data_quality"] and o["canary"]["last"] and o["triton"]["models"]
             and o["dead_letters"]["counts"], "live figures", components=ops_stack["components"])

    wait_for(lambda: next((g["lag"] == 0 for g in overview(ops_stack)["groups"] if g["group"] == streams_group), False),
             "the streams worker to catch up", components=ops_stack["components"])

    def load_page() -> tuple[_Dom, dict, dict]:
        before = metric_values(httpx.get(f"{urls['ops']}/metrics", timeout=10).text)
        dumped = browse(browser, f"{urls['ops']}/", "--dump-dom")
        after = metric_values(httpx.get(f"{urls['ops']}/metrics", timeout=10).text)
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        dom = _Dom()
        dom.feed(dumped.stdout)
        assert "never" not in dom.by_id.get("updated-at", "never"), "the page never loaded its figures"
        return dom, before, after

    def mismatches(dom: _Dom, before: dict, after: dict) -> list[str]:
        """Figures on the page that neither the metrics read just before nor just after it give."""
        shown = [("streamrec_group_lag_messages", (("group", streams_group),), dom.rows[("data-group", streams_group)]["lag"]),
                 ("streamrec_data_quality_level", (), dom.attrs_by_id["dq-level-pill"]["data-level"])]
        models = {name: row["version"] for (kind, name), row in dom.rows.items() if kind == "data-model" and row.get("version", "–") != "–"}
        assert models, "no Triton model on the page"
        shown += [("streamrec_triton_model_version", (("model", model),), version) for model, version in models.items()]
        return [f"{name}{dict(labels)}: page {value}, metrics {before.get((name, labels))}/{after.get((name, labels))}"
                for name, labels, value in shown
                if float(value.replace(",", "")) not in {before.get((name, labels)), after.get((name, labels))}]

    # A figure can change between the page's request and the metrics' (a canary click moves the
    # lag for a moment): a mismatch must repeat three times to count.
    for attempt in range(3):
        dom, before, after = load_page()
        wrong = mismatches(dom, before, after)
        if not wrong:
            break
    assert not wrong, wrong
    canary_probes = int(dom.by_id["canary-probes"])
    assert canary_probes >= 1 and "ok" in dom.by_id["canary-last"]
    collector_rejected = metric_values(httpx.get(f"{urls['collector']}/metrics", timeout=10).text)
    rejected = sum(v for (name, labels), v in collector_rejected.items()
                   if name == "streamrec_collector_events_total" and ("outcome", "rejected") in labels)
    assert rejected >= 1 and str(int(rejected)) in dom.by_id["dlq"]

    shot = tmp_path / "ops-page.png"
    taken = browse(browser, f"{urls['ops']}/", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    if os.environ.get("STREAMREC_SAVE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, SCREENSHOT)
