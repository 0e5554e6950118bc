#!/usr/bin/env python
"""Streams benchmark: events into profiles in Redis through the Faust worker.

    benchmarks/streams.py [--quick] --json OUT

Starts an isolated local stack (Kafka, Redis, Triton serving the MiniLM item
encoder), loads the real catalogs (Diginetica, Amazon Scientific), and replays
real events (Diginetica views and purchases, YooChoose clicks, Amazon
purchases), looped to the requested count. Rows beyond the real ones are
synthetic copies under new user ids (``~loopN``) and are reported as such.

Metrics: ``worker_events_per_s`` and ``two_workers_events_per_s`` (sustained:
committed-offset progress between 10% and 90% of the backlog), latency from
event time to the profile update at a fixed rate (``p50/p99_event_to_profile_ms``,
measured as event ts -> its ``profiles.updated`` signal, published right after
the Redis transaction), ``p99_event_to_profile_during_catalog_load_ms`` (the same, while one
worker with both agents also embeds the 15,936 Diginetica items again on Triton), and
``redis_bytes_per_user`` (MEMORY USAGE of profile
keys). ``worker_over_raw_consumer`` divides the worker's rate by that of a bare
confluent-kafka consumer that only decodes the same backlog, measured in the same run, so
that machines of different speed compare. Medians of repeated runs.

``--profile FILE`` records the first one-worker run with py-spy (collapsed stacks, which
speedscope and flamegraph.pl read); the profiler takes CPU from the worker on a small machine,
so that run's rate is lower than the others.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import orjson
import redis
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, median, quantile, write_json  # noqa: E402
from streamrec.stack.isolated import stack_environment  # noqa: E402
from streamrec.datasets.loaders import DatasetEvent, load  # noqa: E402
from streamrec.datasets.replay import catalog_event, interaction_event  # noqa: E402
from streamrec.faust_app import aiokafka_auth  # noqa: E402
from streamrec.kafka_client import client_config  # noqa: E402
from streamrec.lag import LagReader  # noqa: E402
from streamrec.model.bootstrap import init_item_encoder  # noqa: E402
from streamrec.producer import EventProducer  # noqa: E402
from streamrec.settings import REPO_ROOT, Settings  # noqa: E402
from streamrec.stack.process import free_port  # noqa: E402
from streamrec.store import layout  # noqa: E402
from streamrec.store.connection import connect_blocking  # noqa: E402
from streamrec.topics import INTERACTION_TOPICS, Topic  # noqa: E402

console = Console()
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
EVENT_SPAN_MS = 24 * 3600 * 1000  # real relative timing, compressed into the last 24 hours
CATALOG_LOAD_ITEMS = 16_000  # at most this many Diginetica items (it has 15,936) embedded again while the latency is measured


def build_events(total: int) -> tuple[list[DatasetEvent], list, int]:
    """Real events of three datasets in one time-ordered stream, looped to ``total``."""
    datasets = [load(name, DATA_DIR) for name in ("diginetica", "yoochoose", "amazon_scientific")]
    catalog = [item for dataset in datasets for item in dataset.catalog]
    real: list[DatasetEvent] = []
    for dataset in datasets:
        first, last = dataset.events[0].time_ms, dataset.events[-1].time_ms
        scale = EVENT_SPAN_MS / max(1, last - first)
        real += [replace(e, time_ms=int((e.time_ms - first) * scale)) for e in dataset.events]
    real.sort(key=lambda e: e.time_ms)
    events = list(real[:total])
    loop = 1
    while len(events) < total:
        for e in real[: total - len(events)]:
            events.append(replace(e, user_id=f"{e.user_id}~loop{loop}", session_id=f"{e.session_id}~loop{loop}"))
        loop += 1
    return events, catalog, min(len(real), total)


def produce(settings: Settings, events: list[DatasetEvent], catalog: list | None = None) -> None:
    now = int(time.time() * 1000)
    with EventProducer.from_settings(settings) as producer:
        for item in catalog or []:
            producer.produce(catalog_event(item, now))
        base = now - EVENT_SPAN_MS
        for count, event in enumerate(events, 1):
            producer.produce(interaction_event(event, base + event.time_ms))
            if count % 50_000 == 0:
                producer.poll(0)


class Worker:
    def __init__(self, settings: Settings, group: str, redis_url: str, agents: str, log: Path,
                 profile: Path | None = None) -> None:
        self.port = free_port()
        env = {
            **stack_environment(settings.stack),
            "STREAMREC_REDIS__URL": redis_url,
            "STREAMREC_STREAMS__APP_ID": group,
            "STREAMREC_STREAMS__WEB_PORT": str(self.port),
            "STREAMREC_STREAMS__AGENTS": agents,
        }
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "streams", "worker"], env=env, stdout=self.log, stderr=self.log
        )
        self.profiler = None
        if profile is not None:  # py-spy's collapsed stacks (flamegraph.pl and speedscope read them)
            self.profiler = subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--rate", "100", "--format", "raw",
                 "--output", str(profile), "--pid", str(self.process.pid)],
                stdout=self.log, stderr=self.log,
            )

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            self.profiler.wait(60)
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def consumed(settings: Settings, group: str) -> tuple[int, int]:
    """(committed, log end) summed over the interaction topics."""
    topics = [t.value for t in INTERACTION_TOPICS]
    reader = LagReader(settings.kafka)
    try:
        rows = [row for row in reader.read([group], sample_s=0, topics=topics) if row.topic in topics]
    finally:
        reader.close()
    return sum(row.log_end - row.lag for row in rows), sum(row.log_end for row in rows)


def start_at_log_end(settings: Settings, group: str, topics: tuple[Topic, ...] = INTERACTION_TOPICS) -> None:
    """Commit the log-end offsets for a new group, so its worker starts with no backlog."""
    consumer = Consumer({**client_config(settings.kafka, client="bench-streams"), "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        offsets = []
        for topic in topics:
            for partition in metadata[topic.value].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic.value, partition), timeout=10)
                offsets.append(TopicPartition(topic.value, partition, high))
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def clear_state(client: redis.Redis) -> None:
    """Drop profiles, statistics and watermarks; keep the catalog (i:*, z:catalog) for the next run."""
    patterns = (layout.PROFILE_PREFIX, layout.ITEM_STATS_PREFIX, layout.COVISIT_PREFIX, layout.WATERMARK_PREFIX)
    client.unlink(layout.POPULARITY_SHORT_KEY)
    for pattern in (prefix + "*" for prefix in patterns):
        batch = []
        for key in client.scan_iter(pattern, count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)


def throughput_run(settings: Settings, workers: int, redis_url: str, logs: Path, profile: Path | None = None) -> float:
    group = f"bench-{workers}w-{uuid.uuid4().hex[:6]}"
    started = [Worker(settings, group, redis_url, '["interactions"]', logs / f"{group}-{n}.log",
                      profile=profile.with_suffix(f".{n}.txt") if profile else None) for n in range(workers)]
    samples: list[tuple[float, int]] = []
    try:
        _, total = consumed(settings, group)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            done, total = consumed(settings, group)
            samples.append((time.monotonic(), done))
            if done >= total:
                break
            time.sleep(0.5)
    finally:
        for worker in started:
            worker.stop()
    t10 = next(t for t, done in samples if done >= 0.1 * total)
    t90 = next(t for t, done in samples if done >= 0.9 * total)
    return 0.8 * total / max(t90 - t10, 1e-9)


def raw_consumer_rate(settings: Settings) -> float:
    """Events/s of a bare confluent-kafka consumer that reads the same interaction backlog from the
    start and only decodes each value (orjson): the floor of any consumer on this machine, which
    the worker's rate is divided by so that machines of different speed compare."""
    consumer = Consumer({
        **client_config(settings.kafka, client="bench-raw"), "group.id": f"bench-raw-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": True,
        "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760,
    })
    try:
        metadata = consumer.list_topics(timeout=10).topics
        partitions = [TopicPartition(t.value, p, 0) for t in INTERACTION_TOPICS for p in metadata[t.value].partitions]
        consumer.assign(partitions)
        remaining, decoded, started = len(partitions), 0, time.perf_counter()
        while remaining:
            for message in consumer.consume(10_000, 1.0):
                if message.error() is not None:
                    remaining -= 1  # end of one partition
                    continue
                orjson.loads(message.value())
                decoded += 1
        return decoded / (time.perf_counter() - started)
    finally:
        consumer.close()


async def latency_run(settings: Settings, events: list[DatasetEvent], rate: float, seconds: float) -> list[float]:
    """Produce at ``rate`` events/s and time each profiles.updated signal against its event ts."""
    consumer = AIOKafkaConsumer(
        Topic.PROFILES_UPDATED.value, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="latest",
        group_id=f"bench-latency-{uuid.uuid4().hex[:6]}", **aiokafka_auth(settings.kafka),
    )
    await consumer.start()
    await asyncio.sleep(2)  # let the assignment settle so no signal is missed
    latencies: list[float] = []
    start_ms = int(time.time() * 1000)

    async def listen() -> None:
        async for message in consumer:
            signal = orjson.loads(message.value)
            if signal["newest_event_ts"] >= start_ms:
                latencies.append(time.time() * 1000 - signal["newest_event_ts"])

    listener = asyncio.create_task(listen())
    producer = EventProducer.from_settings(settings, linger_ms=1)
    tag = uuid.uuid4().hex[:6]
    count = int(rate * seconds)
    began = time.monotonic()
    for n in range(count):
        due = began + n / rate
        while (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(min(delay, 0.005))
        row = events[n % len(events)]
        producer.produce(interaction_event(replace(row, user_id=f"{row.user_id}~lat{tag}"), int(time.time() * 1000)))
        if n % 100 == 0:
            producer.poll(0)
    producer.flush()
    await asyncio.sleep(3)
    listener.cancel()
    await consumer.stop()
    return latencies


def produce_catalog_load(settings: Settings, items: list) -> None:
    """The catalog again with changed titles (so every item is embedded again), at full speed."""
    now = int(time.time() * 1000)
    with EventProducer.from_settings(settings) as producer:
        for count, item in enumerate(items, 1):
            producer.produce(catalog_event(replace(item, title=f"{item.title} (new season)"), now))
            if count % 1000 == 0:
                producer.poll(0)


@contextmanager
def live_worker(settings: Settings, redis_url: str, log: Path, agents: str, topics: tuple[Topic, ...],
                events: list[DatasetEvent], rate: float) -> Iterator[None]:
    """A worker of a new group that starts at the log end of ``topics`` (so only fresh events are
    timed, not the backlog), started, assigned and warmed up at ``rate`` for 5 s; stopped after."""
    group = f"bench-{log.stem}-{uuid.uuid4().hex[:6]}"
    start_at_log_end(settings, group, topics)
    worker = Worker(settings, group, redis_url, agents, log)
    try:
        time.sleep(8)  # worker start-up and partition assignment
        asyncio.run(latency_run(settings, events, rate, 5.0))  # warm-up, not timed
        yield
    finally:
        worker.stop()


def catalog_load_latencies(settings: Settings, events: list[DatasetEvent], items: list, rate: float,
                           seconds: float, redis_url: str, logs: Path) -> list[float]:
    """Event -> profile latencies at ``rate`` while one worker with both agents (the default) also
    embeds a catalog load of ``items`` on Triton."""
    with live_worker(settings, redis_url, logs / "catalog-load.log", '["interactions","catalog"]',
                     (*INTERACTION_TOPICS, Topic.CATALOG), events, rate):
        loader = threading.Thread(target=produce_catalog_load, args=(settings, items), daemon=True)
        loader.start()
        latencies = asyncio.run(latency_run(settings, events, rate, seconds))
        loader.join()
        return latencies


def bytes_per_user(client: redis.Redis, sample: int = 2000) -> float:
    keys = []
    for key in client.scan_iter(layout.profile_key("*"), count=10_000):
        keys.append(key)
        if len(keys) >= sample:
            break
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    return sum(sizes) / max(1, len(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k events, shorter latency phase")
    parser.add_argument("--json", help="write {'metrics': ...} here")
    parser.add_argument("--events", type=int, help="events to replay (default 500,000; quick 100,000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="record the first one-worker run with py-spy into this file (collapsed stacks)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s of the latency phase")
    args = parser.parse_args()
    total = args.events or (100_000 if args.quick else 500_000)
    latency_seconds = 10.0 if args.quick else 30.0

    facts = machine()
    console.print(f"machine: {facts['cpu']} ({facts['cpu_flags']}), {facts['cores']} cores, {facts['memory_gb']} GB")
    events, catalog, real_rows = build_events(total)
    console.print(f"replay: {total:,} events ({real_rows:,} real rows, {total - real_rows:,} synthetic loop copies)")
    logs = Path(tempfile.mkdtemp(prefix="streamrec-bench-logs-"))
    model_repo = Path(tempfile.mkdtemp(prefix="streamrec-bench-models-"))
    shutil.copytree(REPO_ROOT / "model_repo" / "item_encoder", model_repo / "item_encoder",
                    ignore=shutil.ignore_patterns("[0-9]*"))
    init_item_encoder(model_repo)  # the real MiniLM encoder: 384-dimension vectors, as in production
    runs: dict[str, list[float]] = {"worker_events_per_s": [], "two_workers_events_per_s": [], "p50": [], "p99": []}
    with isolated_stack(model_repo=model_repo, triton_load_models=["item_encoder"]) as settings:
        redis_url = settings.redis_url
        client = connect_blocking(settings.redis)
        console.print("producing catalog and events…")
        produce(settings, events, catalog)
        console.print(f"embedding {len(catalog):,} catalog items with MiniLM on Triton…")
        loader = Worker(settings, "bench-catalog", redis_url, '["catalog"]', logs / "catalog.log")
        while sum(1 for _ in client.scan_iter(layout.item_key("*"), count=10_000)) < len({item.item_id for item in catalog}):
            time.sleep(2)
        loader.stop()

        sizes = []
        runs["raw_consumer_events_per_s"] = []
        for run in range(args.runs):
            runs["raw_consumer_events_per_s"].append(raw_consumer_rate(settings))
            clear_state(client)
            rate = throughput_run(settings, 1, redis_url, logs, profile=args.profile if run == 0 else None)
            runs["worker_events_per_s"].append(rate)
            sizes.append(bytes_per_user(client))
            console.print(f"run {run + 1}: one worker {rate:,.0f} events/s, "
                          f"bare consumer {runs['raw_consumer_events_per_s'][-1]:,.0f} events/s")
        for run in range(args.runs):
            clear_state(client)
            rate = throughput_run(settings, 2, redis_url, logs)
            runs["two_workers_events_per_s"].append(rate)
            console.print(f"run {run + 1}: two workers {rate:,.0f} events/s")

        clear_state(client)
        with live_worker(settings, redis_url, logs / "latency.log", '["interactions"]', INTERACTION_TOPICS,
                         events[:real_rows], args.rate):
            for run in range(args.runs):
                latencies = asyncio.run(latency_run(settings, events[:real_rows], args.rate, latency_seconds))
                runs["p50"].append(quantile(latencies, 0.5))
                runs["p99"].append(quantile(latencies, 0.99))
                console.print(f"run {run + 1}: {len(latencies):,} signals, p50 {runs['p50'][-1]:.0f} ms, p99 {runs['p99'][-1]:.0f} ms")
        diginetica = [item for item in catalog if item.item_id.startswith("dg")][:CATALOG_LOAD_ITEMS] or catalog[:CATALOG_LOAD_ITEMS]
        runs["catalog_load_p99"] = []
        for run in range(args.runs):
            clear_state(client)
            latencies = catalog_load_latencies(settings, events[:real_rows], diginetica, args.rate, latency_seconds,
                                               redis_url, logs)
            # No signal at all within the window (the interactions held behind the load) has no p99: None.
            runs["catalog_load_p99"].append(quantile(latencies, 0.99) if latencies else None)
            runs.setdefault("catalog_load_signals", []).append(len(latencies))
            console.print(f"run {run + 1}: during a load of {len(diginetica):,} catalog items, {len(latencies):,} signals, "
                          f"p99 {runs['catalog_load_p99'][-1] or float('nan'):.0f} ms")
        client.close()

    metrics = {
        "worker_events_per_s": round(median(runs["worker_events_per_s"])),
        "worker_over_raw_consumer": round(median(
            [w / r for w, r in zip(runs["worker_events_per_s"], runs["raw_consumer_events_per_s"], strict=True)]), 3),
        "raw_consumer_events_per_s": round(median(runs["raw_consumer_events_per_s"])),
        "two_workers_events_per_s": round(median(runs["two_workers_events_per_s"])),
        "p50_event_to_profile_ms": round(median(runs["p50"]), 1),
        "p99_event_to_profile_ms": round(median(runs["p99"]), 1),
        "p99_event_to_profile_during_catalog_load_ms": (
            round(median(runs["catalog_load_p99"]), 1) if None not in runs["catalog_load_p99"] else None),
        "signals_during_catalog_load": round(median(runs["catalog_load_signals"])),
        "redis_bytes_per_user": round(median(sizes)),
    }
    targets = {
        "worker_events_per_s": ("≥ 10,000", metrics["worker_events_per_s"] >= 10_000),
        "worker_over_raw_consumer": ("(same run)", None),
        "raw_consumer_events_per_s": ("(baseline)", None),
        "two_workers_events_per_s": ("(scale-out)", None),
        "p50_event_to_profile_ms": ("", None),
        "p99_event_to_profile_ms": ("≤ 100 at 2,000/s", metrics["p99_event_to_profile_ms"] <= 100),
        "p99_event_to_profile_during_catalog_load_ms": (
            "≤ 250", (metrics["p99_event_to_profile_during_catalog_load_ms"] or float("inf")) <= 250),
        "signals_during_catalog_load": ("(of the window's events)", None),
        "redis_bytes_per_user": ("≤ 5,120", metrics["redis_bytes_per_user"] <= 5120),
    }
    table = Table(title=f"streams benchmark ({total:,} events, {total - real_rows:,} synthetic; medians of {args.runs})")
    for column in ("metric", "value", "target", "met"):
        table.add_column(column)
    for name, value in metrics.items():
        target, met = targets[name]
        table.add_row(name, "none" if value is None else f"{value:,}", target, "" if met is None else ("yes" if met else "[red]no[/red]"))
    console.print(table)
    write_json(args.json, metrics, runs=runs, events=total, real_rows=real_rows, synthetic_rows=total - real_rows,
               machine=facts, command=" ".join(sys.argv))
    shutil.rmtree(model_repo, ignore_errors=True)


if __name__ == "__main__":
    random.seed(0)
    main()
