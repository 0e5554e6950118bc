"""The whole pipeline as real processes for the fault and soak benchmarks: an isolated stack with
tiny models, collector, streams worker, recs worker and API, a load generator that POSTs real
events through the collector (retrying 503 batches with the same event ids), an API prober, and
the end checks (acknowledged events on their topics, Redis against a batch recomputation,
a current list for every user)."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import orjson
import redis

from streamrec.components import ComponentProcess
from streamrec.datasets.loaders import Dataset
from streamrec.datasets.replay import catalog_event, interaction_event
from streamrec.events import ClickEvent, encode
from streamrec.kafka_admin import commit_groups_at_end, end_offsets
from streamrec.lag import LagReader
from streamrec.messages import Recommendations
from streamrec.model import contract
from streamrec.producer import EventProducer
from streamrec.settings import REPO_ROOT, Settings, StreamsSettings
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.connection import connect_blocking
from streamrec.topics import INTERACTION_TOPICS, Topic
from streams.recompute import read_interactions, recompute

MODELS = [contract.ITEM_ENCODER, contract.BERT_SCORER]


def tiny_model_repo(target: Path, dataset: Dataset) -> Path:
    """The project's configs with tiny random versions of the encoder and the sequence scorer over
    the dataset's items: the ranking is meaningless, the serving path (Triton, batching, the
    degraded fallback) is the real one, and it loads in seconds on a small CPU."""
    from streamrec.model.bootstrap import init_item_encoder, init_sequence_scorer

    for model in MODELS:
        (target / model).mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / "model_repo" / model / "config.pbtxt", target / model / "config.pbtxt")
    init_item_encoder(target, tiny=True)
    ids = [item.item_id for item in dataset.catalog]
    rng = np.random.default_rng(0)
    text = rng.normal(size=(len(ids), 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    by_session: dict[str, list[str]] = {}
    for event in dataset.events:
        by_session.setdefault(event.session_id, []).append(event.item_id)
    init_sequence_scorer(target, ids, text, list(by_session.values()), tiny=True)
    return target


class Pipeline:
    """Collector, streams worker, recs worker and API as ``streamrec`` subprocesses on ``settings``."""

    NAMES = ("collector", "streams", "recs", "api")
    ARGS = {"collector": ["collector", "serve"], "streams": ["streams", "worker"], "recs": ["recs", "worker"], "api": ["api", "serve"]}

    def __init__(self, settings: Settings, logs: Path, extra_env: dict[str, str] | None = None) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.streams_group, self.recs_group = f"bench-streams-{suffix}", f"bench-recs-{suffix}"
        self.ports = {name: free_port() for name in self.NAMES}
        self.settings = settings
        self.logs = logs
        self.env = {
            **stack_environment(settings.stack),
            "STREAMREC_STREAMS__APP_ID": self.streams_group, "STREAMREC_RECS__APP_ID": self.recs_group,
            "STREAMREC_COLLECTOR__PORT": str(self.ports["collector"]), "STREAMREC_API__PORT": str(self.ports["api"]),
            "STREAMREC_STREAMS__WEB_PORT": str(self.ports["streams"]), "STREAMREC_RECS__WEB_PORT": str(self.ports["recs"]),
            # A member that died is replaced after this long (Kafka's default of 45 s would dominate
            # every worker-kill figure); the crash tests use the same.
            "STREAMREC_STREAMS__SESSION_TIMEOUT_S": "6", "STREAMREC_RECS__SESSION_TIMEOUT_S": "6",
            **(extra_env or {}),
        }
        self.processes: dict[str, ComponentProcess] = {}
        self.collector_url = f"http://127.0.0.1:{self.ports['collector']}"
        self.api_url = f"http://127.0.0.1:{self.ports['api']}"

    def start(self, name: str) -> ComponentProcess:
        process = ComponentProcess(self.ARGS[name], self.logs / f"{name}.log", self.env).start()
        self.processes[name] = process
        return process

    def restart(self, name: str) -> ComponentProcess:
        """SIGKILL ``name`` and start it again at once."""
        self.processes[name].kill()
        return self.start(name)

    def up(self, names: tuple[str, ...] = NAMES) -> None:
        """Start ``names``; the workers' groups start at the current log ends (no backlog)."""
        topics = {self.streams_group: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
                  self.recs_group: [Topic.PROFILES_UPDATED.value]}
        if "streams" in names or "recs" in names:
            commit_groups_at_end(self.settings.kafka, topics)
        for name in names:
            self.start(name)
        urls = {"collector": f"{self.collector_url}/healthz", "api": f"{self.api_url}/healthz",
                "streams": f"http://127.0.0.1:{self.ports['streams']}/metrics", "recs": f"http://127.0.0.1:{self.ports['recs']}/metrics"}
        for name in names:
            self.processes[name].wait_http(urls[name], timeout_s=120)

    def pids(self) -> dict[str, int]:
        return {name: p.process.pid for name, p in self.processes.items() if p.alive()}

    def down(self) -> None:
        for name in reversed(self.NAMES):
            if name in self.processes:
                self.processes[name].stop()

    def streams_counter(self, prefix: str) -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.ports['streams']}/metrics", timeout=5).text
        except httpx.HTTPError:
            return float("nan")
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def load_catalog(settings: Settings, dataset: Dataset, timeout_s: float = 900) -> None:
    """The catalog straight into Kafka first (the workers embed it on Triton), until every item is stored."""
    client = connect_blocking(settings.redis)
    now = int(time.time() * 1000)
    with EventProducer.from_settings(settings, client="bench-catalog") as producer:
        for item in dataset.catalog:
            producer.produce(catalog_event(item, now))
        producer.flush()
    deadline = time.monotonic() + timeout_s
    while client.zcard(layout.CATALOG_CHANGES_KEY) < len(dataset.catalog):
        if time.monotonic() > deadline:
            raise RuntimeError(f"catalog not embedded within {timeout_s:.0f} s")
        time.sleep(1)
    client.close()


def replay_events(dataset: Dataset):
    """Real interaction events, stamped at send time, in dataset order; each further round gives
    the users a round suffix (new users, new event ids), so the replay never runs dry."""
    for round_ in itertools.count():
        for row in dataset.events:
            yield row if round_ == 0 else replace(row, user_id=f"{row.user_id}-r{round_}", session_id=f"{row.session_id}-r{round_}")


@dataclass
class LoadStats:
    acknowledged: set[str] = field(default_factory=set)  # event ids answered 202 with status "accepted"
    users: dict[str, int] = field(default_factory=dict)  # user -> newest acknowledged event ts
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or "transport") per POST
    retries: int = 0  # batches posted again after a 503 or a transport error
    rejected: int = 0  # events the collector rejected (to the DLQ): the replay's own bad rows
    batches: int = 0
    events_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LoadGenerator:
    """POSTs ``rate`` events/s in batches of ``batch`` to the collector, open loop (a slow answer
    never delays the next batch); a 503 (or a lost connection) posts the same batch again after
    a second, so an event is acknowledged at most once per id however often it is sent."""

    def __init__(self, url: str, events, rate: float, batch: int = 50, workers: int = 48, retry_s: float = 1.0) -> None:
        self.url, self.events, self.rate, self.batch, self.retry_s = f"{url}/v1/events", events, rate, batch, retry_s
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._local = threading.local()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=60)
        return self._local.client

    def _run(self) -> None:
        started, n = time.monotonic(), 0
        interval = self.batch / self.rate
        while not self._stop.is_set():
            due = started + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                if self._stop.is_set():
                    break
            now = int(time.time() * 1000)
            events = [interaction_event(next(self.events), now) for _ in range(self.batch)]
            self._pool.submit(self.post, events)
            n += 1

    def post(self, events) -> None:
        """One batch until it is answered 202 (or refused for good)."""
        body = b"[" + b",".join(encode(event) for event in events) + b"]"
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.events_sent += len(events)
        first = True
        while True:
            if not first:
                with self.stats.lock:
                    self.stats.retries += 1
            first = False
            try:
                response = self._client().post(self.url, content=body, headers={"Content-Type": "application/json"})
            except httpx.TransportError:
                with self.stats.lock:
                    self.stats.statuses["transport"] += 1
                time.sleep(self.retry_s)
                continue
            with self.stats.lock:
                self.stats.statuses[response.status_code] += 1
            if response.status_code == 503:
                time.sleep(self.retry_s)
                continue
            if response.status_code == 202:
                by_id = {str(event.event_id): event for event in events}
                with self.stats.lock:
                    for result in response.json()["results"]:
                        if result["status"] == "accepted":
                            self.stats.acknowledged.add(result["event_id"])
                            event = by_id[result["event_id"]]
                            self.stats.users[event.user_id] = max(self.stats.users.get(event.user_id, 0), event.ts)
                        else:
                            self.stats.rejected += 1
            return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)


class ApiProber:
    """Calls GET /v1/users/{id}/recommendations for users with acknowledged events, ``rate`` a
    second, counting answers by status; a refused connection while the API process is known
    dead (``api_down`` set) is counted apart from one while it should be up."""

    def __init__(self, url: str, stats: LoadStats, rate: float = 20.0) -> None:
        self.url, self.stats, self.rate = url, stats, rate
        self.statuses: Counter = Counter()
        self.refused_while_down = 0
        self.refused_while_up = 0
        self.degraded = 0
        self.api_down = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ApiProber:
        self._thread.start()
        return self

    def _run(self) -> None:
        client = httpx.Client(timeout=10)
        rng = np.random.default_rng(1)
        while not self._stop.wait(1 / self.rate):
            with self.stats.lock:
                users = list(itertools.islice(reversed(self.stats.users), 2000)) if self.stats.users else []
            if not users:
                continue
            user = users[int(rng.integers(len(users)))]
            try:
                response = client.get(f"{self.url}/v1/users/{user}/recommendations", params={"k": "10"})
            except httpx.TransportError:
                if self.api_down.is_set():
                    self.refused_while_down += 1
                else:
                    self.refused_while_up += 1
                continue
            self.statuses[response.status_code] += 1
            if response.status_code == 200 and response.json().get("degraded"):
                self.degraded += 1
        client.close()

    @property
    def errors_5xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if 500 <= status < 600)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def post_marker(collector_url: str, item_id: str, stats: LoadStats, name: str, timeout_s: float = 120) -> tuple[str, int]:
    """One click by a new user, posted until the collector acknowledges it; (user, ts)."""
    user = f"marker-{name}-{uuid.uuid4().hex[:6]}"
    event = ClickEvent(user_id=user, session_id=user, item_id=item_id, ts=int(time.time() * 1000))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                response = client.post(f"{collector_url}/v1/events", content=b"[" + encode(event) + b"]",
                                       headers={"Content-Type": "application/json"})
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            with stats.lock:
                stats.statuses[response.status_code] += 1
            if response.status_code == 202 and response.json()["results"][0]["status"] == "accepted":
                with stats.lock:
                    stats.acknowledged.add(str(event.event_id))
                    stats.users[user] = event.ts
                return user, event.ts
            time.sleep(0.5)
    raise TimeoutError(f"marker {name} not acknowledged within {timeout_s:.0f} s")


def marker_profile(client: redis.Redis, user: str, ts: int) -> bool:
    """The marker's click is applied to its Redis profile (the streams stage alone)."""
    try:
        raw = client.get(layout.profile_key(user))
    except redis.RedisError:
        return False
    return raw is not None and layout.decode_profile(raw).last_seen >= ts


def marker_list(client: redis.Redis, user: str, ts: int, *, scored: bool) -> bool:
    """The marker's click reached the profile and a list reflecting it is cached (scored: not degraded)."""
    try:
        profile_raw, list_raw = client.get(layout.profile_key(user)), client.get(layout.recommendations_key(user))
    except redis.RedisError:
        return False
    if profile_raw is None or list_raw is None or layout.decode_profile(profile_raw).last_seen < ts:
        return False
    recs = Recommendations.decode(list_raw)
    return (recs.source_event_ts or 0) >= ts and not (scored and recs.degraded)


def wait_caught_up(settings: Settings, pipeline: Pipeline, timeout_s: float = 600) -> float:
    """Until the streams group's Redis watermarks reach the log end of every interaction partition
    and both groups have no lag; seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    reader = LagReader(settings.kafka)
    client = connect_blocking(settings.redis)
    groups = {pipeline.streams_group: [t.value for t in INTERACTION_TOPICS], pipeline.recs_group: [Topic.PROFILES_UPDATED.value]}
    behind: object = None
    try:
        while time.monotonic() < deadline:
            try:
                ends = end_offsets(settings.kafka, [t.value for t in INTERACTION_TOPICS])
                keys = {tp: layout.watermark_key(pipeline.streams_group, *tp) for tp, end in ends.items() if end > 0}
                marks = dict(zip(keys, client.mget(list(keys.values())), strict=True))
                behind = {tp: v for tp, v in marks.items() if (int(v) if v else -1) < ends[tp] - 1}
                rows = [row for group, topics in groups.items() for row in reader.read([group], sample_s=0, topics=topics)]
                lagging = [row for row in rows if row.lag != 0]
                if not behind and rows and not lagging:
                    return time.monotonic() - started
                behind = behind or lagging
            except Exception as error:  # noqa: BLE001 - a service still coming back
                behind = error
            time.sleep(1)
    finally:
        reader.close()
        client.close()
    raise RuntimeError(f"pipeline still behind after {timeout_s:.0f} s: {behind}")


def end_checks(settings: Settings, stats: LoadStats, api_url: str) -> dict[str, float]:
    """What the run left behind: acknowledged events on their topics, Redis against a batch
    recomputation of the topics (per-user counts), and a current list per user."""
    records = read_interactions(settings.kafka)
    on_topic: Counter = Counter()
    for _, _, _, _, value in records:
        try:
            on_topic[orjson.loads(value).get("event_id")] += 1
        except (orjson.JSONDecodeError, AttributeError):
            continue
    acknowledged = stats.acknowledged
    lost = sum(1 for event_id in acknowledged if on_topic[event_id] == 0)
    repeated = sum(1 for event_id in acknowledged if on_topic[event_id] > 1)
    client = connect_blocking(settings.redis)
    catalog = {}
    for key in client.scan_iter(layout.item_key("*"), count=5000):
        item_id = key.decode().removeprefix(layout.ITEM_PREFIX)
        catalog[item_id] = layout.decode_catalog(item_id, client.hmget(key, layout.CATALOG_FIELDS))
    expected = recompute(records, catalog, StreamsSettings())
    users = sorted(expected.profiles)
    double = missing = users_differing = 0
    stored = []
    for start in range(0, len(users), 2000):
        stored.extend(client.mget([layout.profile_key(u) for u in users[start:start + 2000]]))
    lists = []
    for start in range(0, len(users), 2000):
        lists.extend(client.mget([layout.recommendations_key(u) for u in users[start:start + 2000]]))
    without_list = 0
    for user, raw, list_raw in zip(users, stored, lists, strict=True):
        want = expected.profiles[user].counts
        got = layout.decode_profile(raw).counts if raw is not None else dict.fromkeys(want, 0)
        extra = sum(max(0, got.get(kind, 0) - n) for kind, n in want.items())
        short = sum(max(0, n - got.get(kind, 0)) for kind, n in want.items())
        double, missing, users_differing = double + extra, missing + short, users_differing + bool(extra or short)
        if sum(want.values()) == 0:
            continue  # every event of this user was rejected (bot rule, duplicates): no list is owed
        newest = layout.decode_profile(raw).last_seen if raw is not None else 0
        if list_raw is None or (Recommendations.decode(list_raw).source_event_ts or 0) < newest:
            without_list += 1
    client.close()
    return {
        "events_acknowledged": len(acknowledged), "events_lost": lost, "events_on_topic_more_than_once": repeated,
        "events_double_counted": double, "events_missing_in_redis": missing, "users_differing": users_differing,
        "users_checked": len(users), "users_without_current_list": without_list,
        "records_on_topics": len(records), "events_applied_by_recomputation": len(expected.accepted),
        "events_rejected_by_recomputation": sum(expected.rejected.values()),
    }
