"""Fault benchmark: the whole pipeline under a steady replay of real events while services are
killed, stopped and restored, one fault after another; then nothing lost, nothing counted twice.

    .venv/bin/python benchmarks/faults.py [--quick] [--json OUT]

Starts an isolated stack (Kafka, Redis with AOF everysec as the local stack runs it, Triton with
tiny random versions of ``item_encoder`` and ``bert_scorer`` over the Diginetica items) and the
collector, streams worker, recs worker and API as real processes. The Diginetica catalog goes in
first (embedded on Triton); then a load generator POSTs Diginetica's real views and purchases,
stamped at send time, through the collector at 500 events/s (``--rate``; batches of 50, open
loop); a 503 batch is posted again a second later with the same event ids (``load_retries`` counts them).
An API prober calls ``GET /v1/users/{id}/recommendations`` 20 times a second for users with
acknowledged events. Faults, each 3 times (once with ``--quick``), 10 s of steady load apart:

- ``redis_kill``: SIGKILL of redis-server, restarted by the stack (it replays its AOF).
- ``redis_snapshot``: an RDB snapshot is taken, 10 s of load later Redis is SIGKILLed, its AOF
  removed and the snapshot put back (a failover to a lagging replica): the streams worker must
  find that Redis lost records and apply them again from Kafka (its
  ``streamrec_streams_reread_records_total`` must grow).
- ``kafka_term`` / ``kafka_kill``: the broker stopped with SIGTERM / SIGKILL, kept down 10 s,
  restarted; the collector must answer only 202 or 503 meanwhile.
- ``triton_kill``: SIGKILL of Triton, down 10 s, restarted (models load at start): lists degrade
  and must come back scored.
- ``streams_kill`` / ``recs_kill`` / ``api_kill``: SIGKILL of that process, started again at once.

``recovery_s_<fault>`` is the time from the fault's end (the service restarted and healthy) until
a marker click by a new user, posted then through the collector (retried on 503), is in its Redis
profile and a list reflecting it is cached (for ``triton_kill``: a scored, not degraded, list;
for ``redis_snapshot``: also the re-read counter grew); the worst of a kind's repeats.
``profile_recovery_s_<fault>`` is the same until the marker is in its profile (the streams stage
alone: a list can wait behind a backlog of the recs worker's, the slowest stage). A fault is
survived when it recovered within 120 s, the collector answered nothing but 202/503 during it,
and the end checks below pass.

After the run (load stopped, workers caught up: Redis watermarks at the log ends, no lag):
``events_lost`` counts acknowledged events (answered 202 with status ``accepted``) that are on no
interaction topic; ``events_double_counted`` the interactions Redis profiles count beyond a batch
recomputation from the topics (``streams.recompute``, the crash tests' rules and arithmetic;
``events_missing_in_redis`` the other way); ``users_without_current_list`` the users with an
applied event whose cached list does not reflect their newest event; ``api_5xx`` the prober's
5xx answers (a refused connection while the API process itself is dead is counted apart, in
``api_refused_while_down``). Out of scope on this machine: a full disk under Kafka's or Redis's
data folder (no separate filesystem to fill without affecting the other work on it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, print_report, write_json
from benchmarks.pipeline import (
    MODELS,
    ApiProber,
    LoadGenerator,
    Pipeline,
    end_checks,
    load_catalog,
    marker_list,
    marker_profile,
    post_marker,
    replay_events,
    tiny_model_repo,
    wait_caught_up,
)
from streamrec.datasets.loaders import load
from streamrec.settings import REPO_ROOT, RedisSettings, Settings
from streamrec.stack import LocalStack
from streamrec.store.connection import connect_blocking

FAULTS = ("redis_kill", "redis_snapshot", "kafka_term", "kafka_kill", "triton_kill", "streams_kill", "recs_kill", "api_kill")
RATE = 500.0
RECOVERY_LIMIT_S = 120.0
DOWN_S = 10.0
STEADY_S = 10.0
CATCH_UP_LIMIT_S = 300.0
REREAD = "streamrec_streams_reread_records_total{"
console = Console(highlight=False)


def wait_gone(pid: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.1)
    raise RuntimeError(f"pid {pid} still alive after {timeout_s:.0f} s")


def signal_service(stack: LocalStack, name: str, sig: signal.Signals) -> None:
    """``sig`` to the service's process group (the stack starts each in a group of its own)."""
    pid = stack.service(name).process().pid()
    assert pid is not None, f"{name} is not running"
    os.killpg(pid, sig)
    wait_gone(pid)


def wait_healthy(stack: LocalStack, name: str, timeout_s: float = 180) -> None:
    service = stack.service(name)
    deadline = time.monotonic() + timeout_s
    while (problem := service.probe(timeout_s=2.0)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not healthy after restart: {problem}")
        time.sleep(0.25)


def restart_service(stack: LocalStack, name: str) -> None:
    """Start the stopped service as ``streamrec up`` would (same config and data folder)."""
    service = stack.service(name)
    service.cleanup()
    service.process().start()
    wait_healthy(stack, name)


def restore_redis_snapshot(stack: LocalStack, snapshot: Path) -> None:
    """Redis back from ``snapshot`` alone: the AOF (newer than the snapshot) is gone, as on a
    replica that lagged. Redis ignores an RDB while AOF is on, so it starts with AOF off, loads
    the snapshot, and turns AOF on again (which writes a fresh AOF from what it loaded)."""
    service = stack.service("redis")
    data = service.data_dir
    shutil.rmtree(data / "appendonlydir", ignore_errors=True)
    shutil.copy2(snapshot, data / "dump.rdb")
    process = service.process()
    replace(process, argv=[*process.argv, "--appendonly", "no"]).start()
    wait_healthy(stack, "redis")
    client = connect_blocking(RedisSettings(url=service.address()))
    client.config_set("appendonly", "yes")
    while client.info("persistence").get("aof_rewrite_in_progress") or client.info("persistence").get("aof_rewrite_scheduled"):
        time.sleep(0.2)
    client.close()


def inject(fault: str, stack: LocalStack, pipeline: Pipeline, prober: ApiProber, folder: Path) -> None:
    """Cause ``fault`` and undo it (restart); returns when the service is back (the fault's end)."""
    if fault == "redis_kill":
        signal_service(stack, "redis", signal.SIGKILL)
        time.sleep(2)
        restart_service(stack, "redis")
    elif fault == "redis_snapshot":
        client = connect_blocking(RedisSettings(url=stack.service("redis").address()))
        client.save()
        client.close()
        snapshot = folder / "older.rdb"
        shutil.copy2(stack.service("redis").data_dir / "dump.rdb", snapshot)
        time.sleep(10)  # the worker writes on; the snapshot falls behind
        signal_service(stack, "redis", signal.SIGKILL)
        restore_redis_snapshot(stack, snapshot)
    elif fault in ("kafka_term", "kafka_kill"):
        signal_service(stack, "kafka", signal.SIGTERM if fault == "kafka_term" else signal.SIGKILL)
        time.sleep(DOWN_S)
        restart_service(stack, "kafka")
    elif fault == "triton_kill":
        signal_service(stack, "triton", signal.SIGKILL)
        time.sleep(DOWN_S)
        restart_service(stack, "triton")
    else:
        name = fault.removesuffix("_kill")
        if name == "api":
            prober.api_down.set()
        started = pipeline.restart(name)
        if name == "api":
            started.wait_http(f"{pipeline.api_url}/healthz", timeout_s=90)
            prober.api_down.clear()


def recover(fault: str, settings: Settings, pipeline: Pipeline, load_stats, item_id: str,
            reread_before: float) -> tuple[float, float]:
    """Seconds from now (the fault's end) until a marker click has a fresh list, and until it is
    in its profile (the streams stage alone: a list can wait behind the recs worker's backlog)."""
    started = time.monotonic()
    user, ts = post_marker(pipeline.collector_url, item_id, load_stats, fault, timeout_s=RECOVERY_LIMIT_S)
    client = connect_blocking(settings.redis, socket_timeout=5)
    profile_s = float("inf")
    try:
        while time.monotonic() - started < RECOVERY_LIMIT_S:
            if profile_s == float("inf") and marker_profile(client, user, ts):
                profile_s = time.monotonic() - started
            if marker_list(client, user, ts, scored=fault == "triton_kill") and (
                    fault != "redis_snapshot" or pipeline.streams_counter(REREAD) > reread_before):
                return time.monotonic() - started, min(profile_s, time.monotonic() - started)
            time.sleep(0.1)
    finally:
        client.close()
    return float("inf"), profile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Each fault once (3 times otherwise).")
    parser.add_argument("--json", help="Write {'metrics': ...} here.")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--rate", type=float, default=RATE, help="Events per second offered to the collector.")
    parser.add_argument("--faults", default=",".join(FAULTS), help="Comma-separated subset of: " + ", ".join(FAULTS))
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    faults = [fault for fault in args.faults.split(",") if fault]
    facts = machine()
    console.print(f"machine: {facts}")
    dataset = load("diginetica", args.data_dir)
    outcomes: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-faults-") as folder:
        folder = Path(folder)
        repo = tiny_model_repo(folder / "model_repo", dataset)
        with (isolated_stack(say=console.print, model_repo=repo, triton_load_models=MODELS, start_timeout_s=300) as settings,
              contextlib.ExitStack() as cleanup):
            stack = LocalStack(settings.stack)  # the same services (PID files), for kills and restarts
            pipeline = Pipeline(settings, folder / "logs")
            cleanup.callback(pipeline.down)  # also when the catalog load or a check fails: no orphaned workers
            pipeline.up()
            console.print(f"catalog: {len(dataset.catalog):,} items …")
            load_catalog(settings, dataset)
            item_id = dataset.catalog[0].item_id
            generator = LoadGenerator(pipeline.collector_url, replay_events(dataset), args.rate).start()
            prober = ApiProber(pipeline.api_url, generator.stats).start()
            started = time.monotonic()
            try:
                time.sleep(STEADY_S)
                for round_ in range(repeats):
                    for fault in faults:
                        statuses_before = dict(generator.stats.statuses)
                        api_before = prober.errors_5xx
                        reread_before = pipeline.streams_counter(REREAD)
                        console.print(f"[{time.monotonic() - started:6.0f} s] {fault} (round {round_ + 1}) …")
                        fault_started = time.monotonic()
                        try:
                            inject(fault, stack, pipeline, prober, folder)
                            fault_s = time.monotonic() - fault_started
                            recovery, profile_s = recover(fault, settings, pipeline, generator.stats, item_id, reread_before)
                            error = None
                        except Exception as problem:  # noqa: BLE001 - reported as not survived, the run goes on
                            fault_s, recovery, profile_s, error = time.monotonic() - fault_started, float("inf"), float("inf"), repr(problem)
                        statuses = {str(k): v - statuses_before.get(k, 0) for k, v in generator.stats.statuses.items()}
                        other = {k: v for k, v in statuses.items() if k not in ("202", "503") and v}
                        outcomes.append({"fault": fault, "round": round_ + 1, "fault_s": fault_s, "recovery_s": recovery, "profile_recovery_s": profile_s,
                                         "collector_answers": statuses, "collector_other": other,
                                         "api_5xx": prober.errors_5xx - api_before, "error": error,
                                         "reread_records": pipeline.streams_counter(REREAD) - reread_before})
                        console.print(f"  restarted after {fault_s:.1f} s, recovered {recovery:.1f} s later (profile {profile_s:.1f} s); "
                                      f"collector {statuses}; api 5xx {outcomes[-1]['api_5xx']}" + (f"; {error}" if error else ""))
                        time.sleep(STEADY_S)
            finally:
                generator.stop()
                prober.stop()
            load_s = time.monotonic() - started
            console.print("load stopped; waiting for the workers to catch up …")
            try:
                catch_up_s = wait_caught_up(settings, pipeline, timeout_s=CATCH_UP_LIMIT_S)
            except RuntimeError as problem:  # the end checks still run: they show what is missing
                console.print(f"[red]{problem}[/red]")
                catch_up_s = float("inf")
            time.sleep(3)  # the recs worker's last debounced batch
            checks = end_checks(settings, generator.stats, pipeline.api_url)
            crashed = [name for name, process in pipeline.processes.items() if not process.alive()]
    stats = generator.stats
    passed = (checks["events_lost"] == 0 and checks["events_double_counted"] == 0 and checks["events_missing_in_redis"] == 0
              and checks["users_without_current_list"] == 0 and prober.errors_5xx == 0 and not crashed)
    for outcome in outcomes:
        outcome["survived"] = passed and outcome["recovery_s"] <= RECOVERY_LIMIT_S and not outcome["collector_other"] and not outcome["error"]
    metrics: dict[str, float] = {
        "faults_tried": len(outcomes),
        "faults_survived": sum(outcome["survived"] for outcome in outcomes),
        "events_lost": checks["events_lost"],
        "events_double_counted": checks["events_double_counted"],
        "api_5xx": prober.errors_5xx,
        "max_recovery_s": max(outcome["recovery_s"] for outcome in outcomes),
    }
    runs: dict[str, list[float]] = {}
    for fault in faults:
        values = [outcome["recovery_s"] for outcome in outcomes if outcome["fault"] == fault]
        metrics[f"recovery_s_{fault}"], runs[f"recovery_s_{fault}"] = max(values), values
    for fault in faults:
        metrics[f"profile_recovery_s_{fault}"] = max(o["profile_recovery_s"] for o in outcomes if o["fault"] == fault)
    metrics.update({
        "events_missing_in_redis": checks["events_missing_in_redis"],
        "users_without_current_list": checks["users_without_current_list"],
        "events_acknowledged": checks["events_acknowledged"],
        "events_offered_per_s": stats.events_sent / load_s,
        "load_retries": stats.retries,
        "collector_503": stats.statuses.get(503, 0),
        "collector_other_5xx": sum(v for k, v in stats.statuses.items() if isinstance(k, int) and k >= 500 and k != 503),
        "collector_transport_errors": stats.statuses.get("transport", 0),
        "api_refused_while_down": prober.refused_while_down,
        "api_refused_while_up": prober.refused_while_up,
        "api_degraded_answers": prober.degraded,
        "catch_up_s": catch_up_s,
    })
    console.print(f"CPU: {facts['cpu']} ({facts['cores']} cores; flags: {facts['cpu_flags']})")
    console.print(f"end checks: {checks}; processes that died on their own: {crashed or 'none'}")
    print_report("faults (worst recovery of each kind; end checks after the run)", runs, metrics,
                 {"events_lost": 0, "events_double_counted": 0, "api_5xx": 0, "max_recovery_s": RECOVERY_LIMIT_S},
                 lower=frozenset({"events_lost", "events_double_counted", "api_5xx", "max_recovery_s"}))
    write_json(args.json, metrics, machine=facts, quick=args.quick, outcomes=outcomes, checks=checks,
               collector_statuses={str(k): v for k, v in stats.statuses.items()}, api_statuses={str(k): v for k, v in prober.statuses.items()},
               crashed=crashed, config={"rate": args.rate, "down_s": DOWN_S, "steady_s": STEADY_S, "recovery_limit_s": RECOVERY_LIMIT_S,
                                        "repeats": repeats, "faults": faults, "disk_full": "out of scope on this machine"})


if __name__ == "__main__":
    main()
