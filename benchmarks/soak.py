"""Soak benchmark: the collector at its measured peak, then the whole pipeline at a steady rate,
with every process's memory sampled all along.

    .venv/bin/python benchmarks/soak.py [--quick] [--json OUT]

Starts an isolated stack (Kafka, Redis, Triton with tiny random ``item_encoder`` and
``bert_scorer`` versions over the Diginetica items, as ``benchmarks/faults.py`` does).

- Phase 1, the collector alone: its peak is found by stepping the number of concurrent closed-loop
  clients (1, 2, 4, 8, 16; 10 s each) that POST batches of 100 real Diginetica events; the best
  step's accepted events/s is ``collector_peak_events_per_s`` (the client runs on the same
  machine and takes CPU from it). Then that many clients keep the collector at its peak for
  10 minutes (3 with ``--quick``).
- Phase 2, the pipeline: streams worker, recs worker and API started (their groups at the log
  ends), the catalog loaded, then Diginetica events at 300 events/s through the collector (open
  loop, 503 batches retried with the same ids) and an API prober (20 requests/s) for 30 minutes
  (3 with ``--quick``). ``max_lag`` is the largest total lag (records) of the streams and recs
  groups, read with ``streamrec.lag`` every 5 s.

``soak_errors``: answers other than 202 from the collector and other than 200 from the API, and
refused connections, over both phases (nothing here is deliberate). RSS (the process and its
children: Triton's Python backend stubs) of the collector, workers, API, Kafka, Redis and Triton
is sampled every 5 s; ``rss_growth_pct_max`` is the largest (RSS at the end − RSS after warm-up)
/ RSS after warm-up over the processes, warm-up being the first minute of each phase (30 s with
``--quick``); a process is measured over the phases it runs in. Target ≤ 10 %. The curves go to
``docs/images/soak-rss.png`` when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, print_report, write_json  # noqa: E402
from benchmarks.pipeline import (  # noqa: E402
    MODELS, ApiProber, LoadGenerator, Pipeline, load_catalog, replay_events, tiny_model_repo,
)
from streamrec.datasets.loaders import load  # noqa: E402
from streamrec.datasets.replay import interaction_event  # noqa: E402
from streamrec.events import encode  # noqa: E402
from streamrec.lag import LagReader  # noqa: E402
from streamrec.settings import REPO_ROOT  # noqa: E402
from streamrec.stack import LocalStack  # noqa: E402
from streamrec.topics import INTERACTION_TOPICS, Topic  # noqa: E402

TARGETS = {"rss_growth_pct_max": 10.0, "soak_errors": 0.0}
PIPELINE_RATE = 300.0
PEAK_CLIENTS = (1, 2, 4, 8, 16)
STEP_S = 10.0
SAMPLE_S = 5.0
BATCH = 100
console = Console(highlight=False)


class MemorySampler:
    """RSS (MiB) of named processes and their children every ``SAMPLE_S``: name -> [(t, MiB)]."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.pids[name] = pid

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            now = time.monotonic() - self.started
            for name, pid in list(self.pids.items()):
                try:
                    process = psutil.Process(pid)
                    rss = process.memory_info().rss + sum(child.memory_info().rss for child in process.children(recursive=True))
                except psutil.Error:
                    continue
                self.series.setdefault(name, []).append((now, rss / 2**20))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def growth(series: list[tuple[float, float]], since: float, until: float, warmup_s: float) -> float | None:
    """(RSS at ``until`` − RSS after warm-up) / RSS after warm-up, in %, over [since, until]."""
    window = [(t, rss) for t, rss in series if since + warmup_s <= t <= until]
    if len(window) < 2:
        return None
    return (window[-1][1] - window[0][1]) / window[0][1] * 100


def closed_loop(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads each POSTing the next body as soon as the last one is answered."""
    counts = {"events": 0, "requests": 0, "errors": 0}
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def loop(offset: int) -> None:
        n = offset
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < until:
                try:
                    response = client.post(f"{url}/v1/events", content=bodies[n % len(bodies)],
                                           headers={"Content-Type": "application/json"})
                    ok = response.status_code == 202
                    accepted = response.json()["accepted"] if ok else 0
                except httpx.HTTPError:
                    ok, accepted = False, 0
                with lock:
                    counts["requests"] += 1
                    counts["events"] += accepted
                    counts["errors"] += not ok
                n += clients

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {**counts, "events_per_s": counts["events"] / elapsed, "seconds": elapsed}


def total_lag(reader: LagReader, pipeline: Pipeline) -> int:
    groups = {pipeline.streams_group: [t.value for t in INTERACTION_TOPICS], pipeline.recs_group: [Topic.PROFILES_UPDATED.value]}
    return sum(row.lag for group, topics in groups.items() for row in reader.read([group], sample_s=0, topics=topics))


def plot(series: dict[str, list[tuple[float, float]]], phases: list[tuple[str, float, float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for name, points in sorted(series.items()):
        axis.plot([t / 60 for t, _ in points], [rss for _, rss in points], label=name)
    for label, since, _ in phases:
        axis.axvline(since / 60, color="grey", linestyle=":")
        axis.text(since / 60, axis.get_ylim()[1] * 0.95, f" {label}", color="grey")
    axis.set_xlabel("minutes")
    axis.set_ylabel("RSS (MiB)")
    axis.set_yscale("log")
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 minutes per phase (10 and 30 otherwise), 30 s warm-up.")
    parser.add_argument("--json", help="Write {'metrics': ...} here.")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--minutes", type=float, help="Minutes per phase instead (a shorter soak when time is short).")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "images" / "soak-rss.png")
    args = parser.parse_args()
    peak_s, pipeline_s = (180.0, 180.0) if args.quick else (600.0, 1800.0)
    if args.minutes:
        peak_s = pipeline_s = args.minutes * 60
    warmup_s = 30.0 if args.quick or (args.minutes or 99) < 5 else 60.0
    facts = machine()
    console.print(f"machine: {facts}")
    dataset = load("diginetica", args.data_dir)
    events = replay_events(dataset)
    now = int(time.time() * 1000)
    bodies = [b"[" + b",".join(encode(interaction_event(next(events), now)) for _ in range(BATCH)) + b"]" for _ in range(300)]
    sampler = MemorySampler()
    errors = 0
    lags: list[int] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-soak-") as folder:
        folder = Path(folder)
        repo = tiny_model_repo(folder / "model_repo", dataset)
        with isolated_stack(say=console.print, model_repo=repo, triton_load_models=MODELS, start_timeout_s=300) as settings:
            stack = LocalStack(settings.stack)
            for service in ("kafka", "redis", "triton"):
                sampler.watch(service, stack.service(service).process().pid())
            pipeline = Pipeline(settings, folder / "logs")
            pipeline.up(("collector",))
            sampler.watch("collector", pipeline.processes["collector"].process.pid)
            sampler.start()
            try:
                steps = []
                for clients in PEAK_CLIENTS:
                    steps.append({"clients": clients, **closed_loop(pipeline.collector_url, bodies, clients, STEP_S)})
                    console.print(f"collector, {clients} clients: {steps[-1]['events_per_s']:,.0f} events/s")
                    errors += steps[-1]["errors"]
                best = max(steps, key=lambda step: step["events_per_s"])
                phase1_start = time.monotonic() - sampler.started
                console.print(f"phase 1: {best['clients']} clients for {peak_s:.0f} s …")
                soak1 = closed_loop(pipeline.collector_url, bodies, best["clients"], peak_s)
                errors += soak1["errors"]
                phase1_end = time.monotonic() - sampler.started
                console.print(f"phase 1: {soak1['events_per_s']:,.0f} events/s, {soak1['errors']} errors")

                console.print("phase 2: workers and API, catalog …")
                pipeline.up(("streams", "recs", "api"))
                for name in ("streams", "recs", "api"):
                    sampler.watch(name, pipeline.processes[name].process.pid)
                load_catalog(settings, dataset)
                phase2_start = time.monotonic() - sampler.started
                generator = LoadGenerator(pipeline.collector_url, events, PIPELINE_RATE).start()
                prober = ApiProber(pipeline.api_url, generator.stats).start()
                reader = LagReader(settings.kafka)
                until = time.monotonic() + pipeline_s
                while time.monotonic() < until:
                    time.sleep(SAMPLE_S)
                    try:
                        lags.append(total_lag(reader, pipeline))
                    except Exception as error:  # noqa: BLE001 - a missed reading, reported
                        console.print(f"lag reading failed: {error}")
                generator.stop()
                prober.stop()
                reader.close()
                phase2_end = time.monotonic() - sampler.started
                stats = generator.stats
                phase2_errors = (sum(v for k, v in stats.statuses.items() if k != 202)
                                 + sum(v for k, v in prober.statuses.items() if k != 200)
                                 + prober.refused_while_up + prober.refused_while_down)
                errors += phase2_errors
                crashed = [name for name, process in pipeline.processes.items() if not process.alive()]
            finally:
                sampler.stop()
                pipeline.down()
    phases = {"collector": (phase1_start, phase1_end)}
    growths: dict[str, float] = {}
    for name, points in sampler.series.items():
        windows = [(phase1_start, phase1_end), (phase2_start, phase2_end)] if name in ("kafka", "redis", "triton", "collector") \
            else [(phase2_start, phase2_end)]
        values = [g for since, until in windows if (g := growth(points, since, until, warmup_s)) is not None]
        if values:
            growths[name] = max(values)
    del phases
    metrics = {
        "collector_peak_events_per_s": best["events_per_s"],
        "soak_errors": errors,
        "rss_growth_pct_max": max(growths.values()),
        "max_lag": max(lags) if lags else float("nan"),
        "soak_minutes": (peak_s + pipeline_s) / 60,
        "collector_soak_events_per_s": soak1["events_per_s"],
        "pipeline_offered_events_per_s": stats.events_sent / pipeline_s,
        "pipeline_events_acknowledged": len(stats.acknowledged),
        "pipeline_503": stats.statuses.get(503, 0),
        "api_requests": sum(prober.statuses.values()),
        **{f"rss_growth_pct_{name}": value for name, value in sorted(growths.items())},
    }
    plotted = plot(sampler.series, [("peak", phase1_start, phase1_end), ("pipeline", phase2_start, phase2_end)], args.plot)
    console.print(f"CPU: {facts['cpu']} ({facts['cores']} cores; flags: {facts['cpu_flags']}); "
                  f"processes that died on their own: {crashed or 'none'}; RSS plot: {args.plot if plotted else 'matplotlib not installed'}")
    print_report(f"soak ({metrics['soak_minutes']:.0f} minutes)", {}, metrics, TARGETS, lower=frozenset(TARGETS))
    write_json(args.json, metrics, machine=facts, quick=args.quick, peak_steps=steps, phase1=soak1, crashed=crashed,
               rss_mib={name: points for name, points in sampler.series.items()}, lag_samples=lags,
               collector_statuses={str(k): v for k, v in stats.statuses.items()}, api_statuses={str(k): v for k, v in prober.statuses.items()},
               config={"peak_s": peak_s, "pipeline_s": pipeline_s, "warmup_s": warmup_s, "pipeline_rate": PIPELINE_RATE,
                       "batch": BATCH, "peak_clients": PEAK_CLIENTS, "step_s": STEP_S, "plot": str(args.plot) if plotted else None})


if __name__ == "__main__":
    main()
