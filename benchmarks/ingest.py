"""Ingest benchmark: the producer SDK and the HTTP collector against a real local Kafka.

    .venv/bin/python benchmarks/ingest.py [--quick] --json OUT

Metrics (each the median of 3 runs):

- ``sdk_events_per_s``: ``EventProducer`` (acks=all, idempotent) sending pre-built ~200-byte
  click events, timed from the first ``produce`` until ``flush`` returns.
- ``collector_events_per_s``: ``streamrec collector serve`` (uvicorn, its own process) taking
  100-event batches from 4 concurrent clients (aiohttp, in another process), every request
  answered only after Kafka acknowledged its events.
- ``collector_p50_ms`` / ``collector_p99_ms``: request latency at a fixed 2,000 events/s
  (20 batches of 100 per second, open loop: latency counts from the scheduled send time, so a
  slow server cannot hide its queueing by slowing the client down).

The SDK and the collector each get one untimed warm-up run first: a freshly started broker
is slower until its JIT has warmed up. Unless ``--bootstrap-servers`` names a running broker,
the benchmark starts its own Kafka on free ports in a temporary state folder and stops it at
the end, so a developer's stack is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, median, open_loop_latencies, print_report, quantile, write_json  # noqa: E402
from streamrec.events import ClickEvent, EventContext, encode
from streamrec.kafka_admin import create_topics
from streamrec.producer import EventProducer
from streamrec.settings import Settings
from streamrec.stack.process import free_port

RUNS = 3
BATCH = 100
CLIENTS = 4
PACED_EVENTS_PER_S = 2_000
TARGETS = {"sdk_events_per_s": 100_000, "collector_events_per_s": 10_000, "collector_p99_ms": 50}
console = Console(highlight=False)


# -- stack and server ----------------------------------------------------------------------


@contextmanager
def kafka(bootstrap_servers: str | None) -> Iterator[Settings]:
    """Settings pointing at the given broker, or at a private Kafka started for this run."""
    if bootstrap_servers:
        settings = Settings(kafka={"bootstrap_servers": bootstrap_servers})
        create_topics(settings)
        yield settings
        return
    with isolated_stack(say=lambda message: console.print(f"[dim]{message}[/dim]"), services=["kafka"]) as settings:
        yield settings


@contextmanager
def collector_server(settings: Settings, log_path: Path) -> Iterator[str]:
    """``streamrec collector serve`` in its own process, configured through STREAMREC_* variables."""
    port = free_port()
    env = {
        **os.environ,
        "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMREC_COLLECTOR__HOST": "127.0.0.1",
        "STREAMREC_COLLECTOR__PORT": str(port),
    }
    streamrec = Path(sys.executable).parent / "streamrec"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([str(streamrec), "collector", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"collector did not start; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


# -- workloads -----------------------------------------------------------------------------


def click_events(count: int) -> list[ClickEvent]:
    """Distinct click events whose JSON encoding is about 200 bytes."""
    now = int(time.time() * 1000)
    return [
        ClickEvent(
            user_id=f"user-{i % 50_000:06d}",
            item_id=f"B{i % 100_000:09d}",
            session_id=f"s-{i % 20_000:06d}",
            ts=now,
            context=EventContext(page=f"/p/{i % 100_000}", position=i % 20),
        )
        for i in range(count)
    ]


def sdk_run(settings: Settings, events: list[ClickEvent], total: int) -> float:
    """Events per second from the first produce until every event is acknowledged (acks=all)."""
    producer = EventProducer.from_settings(settings, client="bench-sdk")
    producer.produce(events[0])
    producer.flush()  # connected and topic metadata known before the clock starts
    started = time.perf_counter()
    for i in range(total):
        producer.produce(events[i % len(events)])
    totals = producer.flush(timeout=120)
    seconds = time.perf_counter() - started
    producer.close()
    assert totals.delivered == total + 1, totals
    return total / seconds


def batch_bodies(count: int) -> list[bytes]:
    """Request bodies of 100 events each; ids are unique within a body (duplicates are rejected)."""
    now = int(time.time() * 1000)
    return [
        orjson.dumps(
            [
                {
                    "type": "click",
                    "event_id": str(uuid.uuid4()),
                    "user_id": f"user-{(b * BATCH + i) % 50_000:06d}",
                    "item_id": f"B{(b * 7919 + i) % 100_000:09d}",
                    "session_id": f"s-{b % 20_000:06d}",
                    "ts": now,
                    "context": {"page": f"/p/{i}", "position": i % 20},
                }
                for i in range(BATCH)
            ]
        )
        for b in range(count)
    ]


async def _post(session, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        payload = await response.read()
        if response.status != 202:
            raise RuntimeError(f"collector answered {response.status}: {payload[:300]!r}")
        return orjson.loads(payload)["accepted"]


async def _closed_loop(url: str, batches: int, clients: int) -> dict[str, float]:
    import aiohttp

    bodies = batch_bodies(64)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        for body in bodies[:clients]:  # warm-up: connections open, producer's metadata fetched
            await _post(session, url, body)
        queue = iter(range(batches))
        accepted = 0

        async def client() -> None:
            nonlocal accepted
            for n in queue:
                took = await _post(session, url, bodies[n % len(bodies)])
                accepted += took  # not `accepted += await ...`: that reads `accepted` before awaiting

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    assert accepted == batches * BATCH, accepted
    return {"events_per_s": accepted / seconds, "seconds": seconds, "events": accepted}


async def _open_loop(url: str, seconds: float, batches_per_s: float) -> dict[str, float]:
    import aiohttp

    bodies = batch_bodies(64)
    total = int(seconds * batches_per_s)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for body in bodies[:4]:
            await _post(session, url, body)
        latencies = await open_loop_latencies(lambda n: _post(session, url, bodies[n % len(bodies)]), total, batches_per_s)
    latencies.sort()
    return {
        "p50_ms": 1000 * quantile(latencies, 0.50),
        "p99_ms": 1000 * quantile(latencies, 0.99),
        "max_ms": 1000 * latencies[-1],
        "requests": len(latencies),
    }


def closed_loop(url: str, batches: int, clients: int) -> dict[str, float]:
    return asyncio.run(_closed_loop(url, batches, clients))


def open_loop(url: str, seconds: float, batches_per_s: float) -> dict[str, float]:
    return asyncio.run(_open_loop(url, seconds, batches_per_s))


# -- report --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smaller workloads (finishes in a few minutes).")
    parser.add_argument("--json", type=Path, help="Write {'metrics': ..., 'runs': ...} here.")
    parser.add_argument("--bootstrap-servers", help="Use this running broker instead of starting a private Kafka.")
    args = parser.parse_args()

    sdk_events = 100_000 if args.quick else 500_000
    closed_batches = 1_000 if args.quick else 3_000
    paced_seconds = 10.0 if args.quick else 30.0
    runs: dict[str, list[float]] = {
        "sdk_events_per_s": [],
        "collector_events_per_s": [],
        "collector_p50_ms": [],
        "collector_p99_ms": [],
    }
    details: list[dict[str, object]] = []
    started = time.monotonic()

    with kafka(args.bootstrap_servers) as settings, tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        console.print(f"Kafka at {settings.bootstrap_servers}")
        events = click_events(20_000)
        console.print(f"SDK: {sdk_events:,} events of {len(encode(events[0]))} bytes, acks=all")
        sdk_run(settings, events, len(events))  # warm-up: a fresh broker's JIT, page cache, segments
        for run in range(RUNS):
            runs["sdk_events_per_s"].append(sdk_run(settings, events, sdk_events))
            console.print(f"  run {run + 1}: {runs['sdk_events_per_s'][-1]:,.0f} events/s")

        log_path = Path(tmp) / "collector.log"
        spawn = multiprocessing.get_context("spawn")
        with collector_server(settings, log_path) as url, ProcessPoolExecutor(1, mp_context=spawn) as clients:
            endpoint = f"{url}/v1/events"
            console.print(f"collector: {closed_batches:,} batches of {BATCH} from {CLIENTS} concurrent clients")
            clients.submit(closed_loop, endpoint, closed_batches // 4, CLIENTS).result()  # warm-up
            for run in range(RUNS):
                result = clients.submit(closed_loop, endpoint, closed_batches, CLIENTS).result()
                runs["collector_events_per_s"].append(result["events_per_s"])
                details.append({"workload": "closed_loop", "run": run + 1, **result})
                console.print(f"  run {run + 1}: {result['events_per_s']:,.0f} events/s")
            rate = PACED_EVENTS_PER_S / BATCH
            console.print(f"collector latency: {rate:g} batches/s of {BATCH} for {paced_seconds:g} s")
            for run in range(RUNS):
                result = clients.submit(open_loop, endpoint, paced_seconds, rate).result()
                runs["collector_p50_ms"].append(result["p50_ms"])
                runs["collector_p99_ms"].append(result["p99_ms"])
                details.append({"workload": "open_loop", "run": run + 1, **result})
                console.print(f"  run {run + 1}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")

    metrics = {name: median(values) for name, values in runs.items()}
    print_report("streamrec ingest benchmark (median of 3 runs)", runs, metrics, TARGETS)
    console.print(f"finished in {time.monotonic() - started:.0f} s")
    if args.json:
        report = {
            "metrics": metrics,
            "runs": runs,
            "details": details,
            "targets": TARGETS,
            "config": {
                "quick": args.quick,
                "sdk_events": sdk_events,
                "sdk_event_bytes": len(encode(events[0])),
                "collector_batches": closed_batches,
                "batch_events": BATCH,
                "clients": CLIENTS,
                "paced_events_per_s": PACED_EVENTS_PER_S,
                "paced_seconds": paced_seconds,
            },
            "machine": machine(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(args.json, **report)
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
