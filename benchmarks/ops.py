"""Operations benchmark: lag in seconds against ground truth, time to a STALL/STOP status, canary
freshness, and what the operations service costs.

    .venv/bin/python benchmarks/ops.py [--quick] [--json OUT]

Starts an isolated stack (Kafka, Redis, Triton) and measures:

- ``lag_seconds_error_ms``: 12 consumer groups with random committed offsets on a 6-partition
  topic whose records carry known timestamps (one every 100 ms, the oldest 10 minutes old). The
  figure is the largest |reported - true| over every partition of every group, where true is now
  minus the timestamp written for the record at the committed offset. Now is taken when the
  reading is in the caller's hands, so the error includes how long the reading took (the figure's
  staleness); the error against the moment the offsets were read is in the JSON too
  (``lag_seconds_error_at_read_ms_runs``: zero when the right record is read).
  Median of 5 readings (3 with ``--quick``). Target ≤ 1,000 ms.
- ``status_detect_s``: a real consumer (a group member) consumes a topic that a producer feeds at
  50 records/s, committing every second; then it stops consuming but stays in the group. The
  figure is the time from that moment until a ``LagMonitor`` with the production defaults
  (``ops.interval_s`` 5 s, ``ops.window`` 6 samples, WARN/ERR at 60/300 s behind) reports STALL
  or ERR; median of 3 runs (2 with ``--quick``). ``stop_detect_s``: the same with the consumer
  closed (no member left: STOP). Target ≤ 60 s.
- ``ops_cpu_core_share``: ``streamrec ops serve`` as its own process (canary off) watching 100
  groups x 6 partitions whose offsets move every 5 s while records arrive; its CPU time (user +
  system, from /proc) over 60 s (30 s with ``--quick``) after a 15 s warm-up, divided by wall
  time; the median of 3 such windows. Target ≤ 0.05 (5 % of a core).
- ``canary_p50_ms`` / ``canary_p99_ms``: collector, streams worker, recs worker (the sequence
  ``bert_scorer`` trained on Amazon Scientific, as ``benchmarks/freshness.py`` uses) and the
  operations service with a canary every 2 s; 40 probes (15 with ``--quick``), from POST to the
  collector until the list's record on ``recommendations``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, print_report, quantile, write_json  # noqa: E402
from benchmarks.freshness import model_repo, trained_scorer  # noqa: E402
from streamrec.components import ComponentProcess  # noqa: E402
from streamrec.datasets.loaders import load  # noqa: E402
from streamrec.datasets.replay import catalog_event  # noqa: E402
from streamrec.kafka_admin import commit_groups_at_end  # noqa: E402
from streamrec.kafka_client import client_config  # noqa: E402
from streamrec.lag import LagReader, Status, monitor_for  # noqa: E402
from streamrec.model import contract  # noqa: E402
from streamrec.producer import EventProducer  # noqa: E402
from streamrec.quickstart import load_models  # noqa: E402
from streamrec.settings import REPO_ROOT, Settings  # noqa: E402
from streamrec.stack.isolated import stack_environment  # noqa: E402
from streamrec.stack.process import free_port  # noqa: E402
from streamrec.store import layout  # noqa: E402
from streamrec.store.connection import connect_blocking  # noqa: E402
from streamrec.topics import INTERACTION_TOPICS, Topic  # noqa: E402

TARGETS = {"lag_seconds_error_ms": 1000.0, "status_detect_s": 60.0, "stop_detect_s": 60.0, "ops_cpu_core_share": 0.05}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
console = Console(highlight=False)


def make_topic(settings: Settings, partitions: int = 6) -> str:
    """A new topic, returned once every partition has a leader (reads before that fail)."""
    name = f"ops.bench.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(settings.kafka, client="bench-ops"))
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if topic is not None and len(topic.partitions) == partitions and all(p.leader >= 0 for p in topic.partitions.values()):
            consumer = Consumer({**client_config(settings.kafka, client="bench-ops"), "group.id": "ops-bench-probe"})
            try:
                for p in range(partitions):
                    consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                return name
            except KafkaException:
                pass
            finally:
                consumer.close()
        time.sleep(0.2)
    raise RuntimeError(f"topic {name} has no leaders after 30 s")


def lag_seconds_error(settings: Settings, readings: int) -> tuple[float, dict]:
    topic, partitions, per_partition = make_topic(settings), 6, 6000
    base_ms = int(time.time() * 1000) - 600_000
    producer = Producer({**client_config(settings.kafka, client="bench-ops"), "linger.ms": 20})
    stamps = {p: [base_ms + n * 100 for n in range(per_partition)] for p in range(partitions)}
    for p, series in stamps.items():
        for n, stamp in enumerate(series):
            producer.produce(topic, f"r{n}".encode(), partition=p, timestamp=stamp)
            if n % 2000 == 0:
                producer.poll(0)
    assert producer.flush(60) == 0
    rng = random.Random(7)
    admin = AdminClient(client_config(settings.kafka, client="bench-ops"))
    groups = [f"ops-bench-lag-{n}-{uuid.uuid4().hex[:6]}" for n in range(12)]
    committed = {group: {p: rng.randrange(per_partition) for p in range(partitions)} for group in groups}
    for group in groups:
        offsets = [TopicPartition(topic, p, offset) for p, offset in committed[group].items()]
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group].result(30)
    reader = LagReader(settings.kafka)
    errors, at_read = [], []
    try:
        for _ in range(readings):
            worst = worst_at_read = 0.0
            snapshots = reader.snapshot(groups)
            delivered_ms = time.time() * 1000  # when a caller has the figures in hand
            for snapshot in snapshots:
                for row in snapshot.partitions:
                    stamp = stamps[row.partition][committed[snapshot.group][row.partition]]
                    worst = max(worst, abs(row.lag_seconds * 1000 - (delivered_ms - stamp)))
                    worst_at_read = max(worst_at_read, abs(row.lag_seconds * 1000 - (snapshot.at * 1000 - stamp)))
            errors.append(worst)
            at_read.append(worst_at_read)
            time.sleep(1)
    finally:
        reader.close()
    return statistics.median(errors), {"lag_seconds_error_ms_runs": errors, "lag_seconds_error_at_read_ms_runs": at_read,
                                       "partitions_checked": len(groups) * partitions}


class Feeder:
    """Writes ``rate`` records/s to a topic, stamped now, until stopped."""

    def __init__(self, settings: Settings, topic: str, rate: float) -> None:
        self._producer = Producer({**client_config(settings.kafka, client="bench-ops"), "linger.ms": 5})
        self._topic, self._rate = topic, rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        started = time.monotonic()
        while not self._stop.is_set():
            self._producer.produce(self._topic, f"f{n}".encode(), key=str(n % 64).encode())
            n += 1
            self._producer.poll(0)
            time.sleep(max(0.0, started + n / self._rate - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.flush(10)


def detect_once(settings: Settings, close_consumer: bool) -> float:
    """Seconds from a consumer stopping until the monitor (production defaults) says so."""
    defaults = Settings().ops
    topic, group = make_topic(settings), f"ops-bench-stall-{uuid.uuid4().hex[:6]}"
    feeder = Feeder(settings, topic, 50.0)
    consumer = Consumer({**client_config(settings.kafka, client="bench-ops"), "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    reader = LagReader(settings.kafka)
    monitor = monitor_for(reader, defaults, groups=[group])
    try:
        healthy_until = time.monotonic() + defaults.interval_s * (defaults.window + 1)
        last_commit, next_sample = time.monotonic(), time.monotonic()
        while time.monotonic() < healthy_until:  # a healthy window first: the monitor sees it consume
            consumer.poll(0.05)
            if time.monotonic() - last_commit >= 1.0:
                try:
                    consumer.commit(asynchronous=False)
                except Exception:  # noqa: BLE001 - nothing consumed yet to commit
                    pass
                last_commit = time.monotonic()
            if time.monotonic() >= next_sample:
                status = monitor.sample()[0].status
                next_sample += defaults.interval_s
        assert status is Status.OK, f"a consuming group should be OK before the stall, got {status.name}"
        if close_consumer:
            consumer.close()
        stopped = time.monotonic()
        next_sample = stopped
        while True:  # the consumer no longer polls nor commits; librdkafka keeps its membership alive
            time.sleep(max(0.0, next_sample - time.monotonic()))
            report = monitor.sample()[0]
            if report.status in (Status.STALL, Status.STOP, Status.ERR):
                expected = Status.STOP if close_consumer else Status.STALL
                assert report.status in (expected, Status.ERR), report
                return time.monotonic() - stopped
            if time.monotonic() - stopped > 300:
                raise RuntimeError(f"no STALL/STOP within 300 s: {report}")
            next_sample += defaults.interval_s
    finally:
        feeder.stop()
        if not close_consumer:
            consumer.close()
        reader.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def ops_cost(settings: Settings, folder: Path, window_s: float, windows: int) -> tuple[float, dict]:
    topic, partitions = make_topic(settings), 6
    groups = [f"ops-bench-cost-{n:03d}" for n in range(100)]
    admin = AdminClient(client_config(settings.kafka, client="bench-ops"))
    feeder = Feeder(settings, topic, 100.0)
    rounds: list[float] = []
    failure: list[Exception] = []
    stop = threading.Event()

    def advance() -> None:  # every group's offsets move every 5 s (the service sees commits, not consumers)
        consumer = Consumer({**client_config(settings.kafka, client="bench-ops"), "group.id": "ops-bench-probe"})
        try:
            while not stop.is_set():
                ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
                futures = []
                for group in groups:
                    offsets = [TopicPartition(topic, p, max(0, end - random.randrange(0, 50))) for p, end in enumerate(ends)]
                    futures.extend(admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)]).values())
                for future in futures:
                    future.result(30)
                rounds.append(time.monotonic())
                stop.wait(5)
        except Exception as error:  # noqa: BLE001 - reported: a cost measured on still offsets would be wrong
            failure.append(error)
        finally:
            consumer.close()

    mover = threading.Thread(target=advance, daemon=True)
    mover.start()
    port = free_port()
    env = {**stack_environment(settings.stack), "STREAMREC_OPS__PORT": str(port), "STREAMREC_OPS__CANARY_INTERVAL_S": "0"}
    service = ComponentProcess(["ops", "serve"], folder / "ops-cost.log", env).start()
    shares = []
    try:
        service.wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60)
        time.sleep(15)  # warm-up: every group read once, imports done
        pid = service.process.pid
        for _ in track(range(windows), description="ops service CPU", console=console):
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            time.sleep(window_s)
            shares.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0))
        if failure or not mover.is_alive():
            raise RuntimeError(f"the offsets stopped moving during the measurement: {failure}")
        exported = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        series = sum(1 for line in exported.splitlines() if line.startswith("streamrec_lag_seconds{"))
        sample_count = next((float(line.split()[-1]) for line in exported.splitlines()
                             if line.startswith("streamrec_ops_lag_sample_seconds_count")), 0.0)
        sample_sum = next((float(line.split()[-1]) for line in exported.splitlines()
                           if line.startswith("streamrec_ops_lag_sample_seconds_sum")), 0.0)
    finally:
        stop.set()
        mover.join(timeout=30)
        feeder.stop()
        service.stop()
    return statistics.median(shares), {"ops_cpu_core_share_runs": shares, "lag_series_exported": series, "offset_rounds": len(rounds),
                                       "mean_sample_s": sample_sum / sample_count if sample_count else None}


def canary(settings: Settings, folder: Path, probes: int, data_dir: Path) -> tuple[dict, dict]:
    dataset = load("amazon_scientific", data_dir)
    suffix = uuid.uuid4().hex[:6]
    groups = {f"ops-bench-streams-{suffix}": [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
              f"ops-bench-recs-{suffix}": [Topic.PROFILES_UPDATED.value]}
    commit_groups_at_end(settings.kafka, groups)
    streams_group, recs_group = groups
    ports = {name: free_port() for name in ("collector", "streams", "recs", "ops")}
    env = {**stack_environment(settings.stack), "STREAMREC_STREAMS__APP_ID": streams_group, "STREAMREC_RECS__APP_ID": recs_group,
           "STREAMREC_COLLECTOR__PORT": str(ports["collector"]), "STREAMREC_STREAMS__WEB_PORT": str(ports["streams"]),
           "STREAMREC_RECS__WEB_PORT": str(ports["recs"]), "STREAMREC_OPS__PORT": str(ports["ops"]),
           "STREAMREC_OPS__CANARY_INTERVAL_S": "2", "STREAMREC_OPS__CANARY_TIMEOUT_S": "20", "STREAMREC_OPS__INTERVAL_S": "5"}
    components = [ComponentProcess([*args], folder / f"{args[0]}-canary.log", env).start()
                  for args in (["collector", "serve"], ["streams", "worker"], ["recs", "worker"])]
    client = connect_blocking(settings.redis)
    producer = EventProducer.from_settings(settings, client="bench-ops")
    try:
        catalog = dataset.catalog[:2000]
        now = int(time.time() * 1000)
        for item in catalog:
            producer.produce(catalog_event(item, now))
        producer.flush()
        deadline = time.monotonic() + 600
        while client.zcard(layout.CATALOG_CHANGES_KEY) < len(catalog):
            if time.monotonic() > deadline or not components[1].alive():
                raise RuntimeError(f"catalog not embedded:\n{components[1].log_tail()}")
            time.sleep(1)
        components[0].wait_http(f"http://127.0.0.1:{ports['collector']}/healthz")
        components.append(ComponentProcess(["ops", "serve"], folder / "ops-canary.log", env).start())
        ops = f"http://127.0.0.1:{ports['ops']}"
        components[-1].wait_http(f"{ops}/healthz", timeout_s=60)
        seen: list[dict] = []
        deadline = time.monotonic() + probes * 2 * 3 + 120
        while len(seen) < probes + 2 and time.monotonic() < deadline:  # the first two warm the path, not counted
            time.sleep(2)
            overview = httpx.get(f"{ops}/api/overview", timeout=10).json()
            last = overview["canary"]["last"]
            if last and (not seen or last["at"] != seen[-1]["at"]):
                seen.append(last)
        counted = seen[2:]
        seconds = [row["seconds"] for row in counted if row["ok"]]
        failures = sum(not row["ok"] for row in counted)
    finally:
        producer.close()
        for component in reversed(components):
            component.stop()
    if not seconds:
        raise RuntimeError(f"no canary list arrived: {seen[-3:]}")
    return ({"canary_p50_ms": statistics.median(seconds) * 1000, "canary_p99_ms": quantile(seconds, 0.99) * 1000},
            {"canary_probes": len(counted), "canary_failures": failures, "canary_seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer readings and runs, 30 s CPU windows, 15 canary probes.")
    parser.add_argument("--json", help="Write {'metrics': ...} here.")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "bench-out" / "models",
                        help="Where the trained bert_scorer is kept (trained here unless its newest version is).")
    parser.add_argument("--skip-canary", action="store_true", help="Leave out the canary (no models needed).")
    args = parser.parse_args()
    facts = machine()
    console.print(f"machine: {facts}")
    runs: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    extra: dict[str, object] = {}
    scorer_version = None if args.skip_canary else trained_scorer(args.models, args.data_dir)
    with tempfile.TemporaryDirectory(prefix="streamrec-ops-") as folder:
        folder = Path(folder)
        repo = model_repo(folder / "model_repo", contract.BERT_SCORER, scorer_version) if scorer_version else None
        with isolated_stack(**({"model_repo": repo} if repo else {"services": ["kafka", "redis"]})) as settings:
            console.print("lag in seconds against known timestamps …")
            metrics["lag_seconds_error_ms"], details = lag_seconds_error(settings, 3 if args.quick else 5)
            runs["lag_seconds_error_ms"] = details["lag_seconds_error_ms_runs"]
            extra.update(details)
            for name, close in (("status_detect_s", False), ("stop_detect_s", True)):
                values = []
                for _ in range(2 if args.quick else 3):
                    values.append(detect_once(settings, close))
                    console.print(f"{name}: {values[-1]:.1f} s")
                runs[name], metrics[name] = values, statistics.median(values)
            console.print("operations service cost at 100 groups x 6 partitions …")
            metrics["ops_cpu_core_share"], details = ops_cost(settings, folder, 30.0 if args.quick else 60.0, 3)
            runs["ops_cpu_core_share"] = details["ops_cpu_core_share_runs"]
            extra.update(details)
            if repo is not None:
                load_models(settings, [contract.ITEM_ENCODER, contract.BERT_SCORER])
                console.print("canary through collector, streams and recs …")
                figures, details = canary(settings, folder, 15 if args.quick else 40, args.data_dir)
                metrics.update(figures)
                extra.update(details)
    print_report("operations (median of runs)", runs, metrics, TARGETS, lower=frozenset(TARGETS))
    write_json(args.json, metrics, runs=runs, machine=facts, quick=args.quick, details=extra)


if __name__ == "__main__":
    main()
