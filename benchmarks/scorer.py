"""Sequence scorer benchmark: ``bert_scorer`` through Triton and in-process, same version, same users.

    .venv/bin/python benchmarks/scorer.py [--quick] --json OUT

The model is the CPU default (``streamrec.model.sequence.CPU_CONFIG``: hidden 64, 2 layers,
2 heads, history 50) over the Amazon Scientific catalog, built untrained by
``first_sequence_model`` (speed does not depend on the weights) with co-visitation counted from
the users' histories and MiniLM text embeddings of the catalog. The users are the rows of
``Scientific.valid.inter``: each history (row indices) sent as item ids, as a client sends them.
The version is published with ``publish_sequence`` into a temporary model repository (the
project's ``model_repo/bert_scorer/config.pbtxt``, ``catalog_refresh_s`` "0": no Redis) and served
by a private Triton on free ports (a developer's stack is never touched); the in-process side
loads the very same version folder with ``load_version``.

Metrics (median of the repeats; 3 in full mode, 2 with ``--quick``):

- ``topk_users_per_s`` — users per second for the top 100 over the whole catalog through
  Triton: gRPC async client, several requests in flight, a few users per request, dynamic
  batching on; the best (users per request, concurrency) of a short sweep, then the repeats at
  that setting. ``topk_users_per_s_inprocess``: ``ServedSequence.rank(k=100)`` on batches in
  this process, the better of 1 torch thread and all cores, each at its best batch size of a
  sweep, measured in every repeat (``..._inprocess_<n>_threads``: on a busy 2-core machine 2
  threads ran several times slower than 1, and which one wins changes within a minute).
- ``score100_users_per_s`` / ``score100_users_per_s_inprocess`` — the same for scoring 100 given
  candidates per user (K = 0).
- ``triton_over_inprocess`` / ``score100_triton_over_inprocess`` — ratio of the two, per repeat
  (target ≥ 0.9). The client runs on the same cores as Triton, so the Triton figure pays for the
  client's request building and response parsing too.
- ``topk_p50_ms`` / ``topk_p99_ms`` — latency of single-user top-100 requests, one in flight.

The text cross-encoders (``cross_encoder``, ``cross_encoder_student``) are measured by ``benchmarks/cross_encoder.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc.aio as aioclient
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, print_report, quantile, write_json  # noqa: E402
from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE, load_catalog, load_examples  # noqa: E402
from streamrec.model import contract  # noqa: E402
from streamrec.model.artifacts import VersionMetadata, publish_sequence  # noqa: E402
from streamrec.model.bootstrap import first_sequence_model  # noqa: E402
from streamrec.model.sequence_request import sequence_inputs  # noqa: E402
from streamrec.model.served_sequence import ServedSequence, load_version  # noqa: E402
from streamrec.settings import REPO_ROOT  # noqa: E402
from trainer.offline.sequence_train import text_vectors  # noqa: E402

K = 100
CANDIDATES = 100
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TARGETS = {
    "topk_users_per_s": 1_000,
    "score100_users_per_s": 1_000,
    "triton_over_inprocess": 0.9,
    "score100_triton_over_inprocess": 0.9,
}
USERS_PER_REQUEST = (4, 16, 32, 64)
CONCURRENCY = (2, 4, 8)
INPROCESS_BATCHES = (16, 64, 256)
INPROCESS_THREADS = tuple(sorted({1, os.cpu_count() or 1}))
console = Console(highlight=False)


# -- the model and the users ------------------------------------------------------------------


def users_and_model(data_dir: Path) -> tuple[ServedSequence, list[list[str]], list[list[str]]]:
    """The untrained CPU-default model over the catalog, each validation user's history as item ids,
    and 100 candidate ids per user (the held-out target among 99 random items)."""
    catalog = load_catalog(data_dir)
    vectors = text_vectors(list(catalog.texts), REPO_ROOT / ".cache" / "text")
    examples = load_examples(data_dir / FOLDER / VALID_FILE)
    ids = catalog.item_ids
    histories = [[ids[row] for row in example.history] for example in examples]
    served = first_sequence_model(ids, vectors.numpy(), histories)
    rng = np.random.default_rng(0)
    candidates = []
    for example in examples:
        others = rng.choice(len(ids), CANDIDATES - 1, replace=False)
        candidates.append([ids[example.target], *(ids[row] for row in others)])
    return served, histories, candidates


def served_config(text: str) -> str:
    """The project's config with the catalog follower off (this benchmark runs no Redis)."""
    marker = 'key: "catalog_refresh_s" value: { string_value: "'
    head, _, rest = text.partition(marker)
    if not rest:
        raise ValueError("config.pbtxt has no catalog_refresh_s parameter")
    return head + marker + "0" + rest[rest.index('"'):]


def serve_this_checkout(version: Path) -> None:
    """Make the version's ``model.py`` import this checkout's ``streamrec``.

    Triton's Python stub runs in isolated mode (``PYTHONPATH`` ignored) and finds ``streamrec``
    through the virtualenv's editable install, which may point at another checkout (a git
    worktree shares the main checkout's virtualenv): without this the benchmark would measure
    that checkout's serving code.
    """
    model_py = version / "model.py"
    model_py.write_text(f"import sys\n\nsys.path.insert(0, {str(REPO_ROOT)!r})\n" + model_py.read_text())


# -- in-process -------------------------------------------------------------------------------


def in_process(served: ServedSequence, histories: list, candidates: list | None, batch: int, threads: int) -> float:
    """Users/s of ``rank`` on batches of ``batch`` users (``threads`` torch threads): top K, or
    (``candidates``) 100 scores each."""
    torch.set_num_threads(threads)

    def call(start: int) -> None:
        chunk = histories[start : start + batch]
        if candidates is None:
            served.rank(chunk, k=K)
        else:
            served.rank(chunk, k=0, candidates=candidates[start : start + batch])

    call(0)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(histories), batch):
        call(start)
    return len(histories) / (time.perf_counter() - started)


# -- through Triton ---------------------------------------------------------------------------


def prepared_requests(histories: list, candidates: list | None, users: int) -> list[tuple[int, list]]:
    """(users, inputs) per request, built before the clock starts (as a serving loop would reuse them)."""
    out = []
    for start in range(0, len(histories), users):
        chunk = histories[start : start + users]
        wanted = None if candidates is None else candidates[start : start + users]
        inputs = sequence_inputs(chunk, k=0 if wanted is not None else K, candidates=wanted, module=aioclient)
        out.append((len(chunk), inputs))
    return out


async def closed_loop(url: str, requests: list[tuple[int, list]], concurrency: int) -> float:
    """Users/s with ``concurrency`` requests in flight, back to back, until every request was answered."""
    client = aioclient.InferenceServerClient(url)
    queue = list(reversed(range(len(requests))))

    async def worker() -> None:
        while queue:
            await client.infer(contract.BERT_SCORER, requests[queue.pop()][1], client_timeout=120)

    try:
        await client.infer(contract.BERT_SCORER, requests[0][1], client_timeout=120)  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sum(users for users, _ in requests) / (time.perf_counter() - started)
    finally:
        await client.close()


async def single_user_latency(url: str, histories: list, count: int) -> list[float]:
    """ms of single-user top-K requests, one in flight."""
    client = aioclient.InferenceServerClient(url)
    prepared = [sequence_inputs([history], k=K, module=aioclient) for history in histories[:count]]
    times = []
    try:
        await client.infer(contract.BERT_SCORER, prepared[0], client_timeout=60)
        for inputs in prepared:
            began = time.perf_counter()
            await client.infer(contract.BERT_SCORER, inputs, client_timeout=60)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        await client.close()
    return times


async def agrees(url: str, served: ServedSequence, histories: list, candidates: list) -> None:
    """Triton answers what the in-process model answers (the benchmark measures the same work)."""
    client = aioclient.InferenceServerClient(url)
    try:
        result = await client.infer(contract.BERT_SCORER, sequence_inputs(histories, k=K, candidates=candidates,
                                                                           module=aioclient), client_timeout=60)
    finally:
        await client.close()
    expected = served.rank(histories, k=K, candidates=candidates)
    items = [[value.decode() for value in row] for row in result.as_numpy(contract.TOPK_ITEMS)]
    if items != expected.top_items:
        raise AssertionError("Triton's top K differs from the in-process model's")
    np.testing.assert_allclose(result.as_numpy(contract.CANDIDATE_SCORES), expected.candidate_scores, atol=1e-4, rtol=0)


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer users and repeats (a few minutes on a 2-core CPU).")
    parser.add_argument("--json", type=Path, help="Write {'metrics': ..., 'runs': ..., 'config': ...} here.")
    parser.add_argument("--threads", type=int, help="torch threads in-process (default: the best of 1 and all cores).")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="Folder holding amazon_scientific/.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    repeats = 2 if args.quick else 3
    started = time.monotonic()
    info = machine()
    console.print(f"CPU: {info['cpu']} ({info['cores']} cores); flags: {info['cpu_flags']}")
    thread_choices = (args.threads,) if args.threads else INPROCESS_THREADS

    built, histories, candidates = users_and_model(args.data)
    users = histories[:1024] if args.quick else histories
    wanted = candidates[: len(users)]
    console.print(f"{len(users)} users (Scientific.valid.inter, {np.mean([len(h) for h in users]):.1f} items on average), "
                  f"catalog {built.n_items} items; top {K}, or {CANDIDATES} candidates per user")
    runs: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    source = REPO_ROOT / "model_repo" / contract.BERT_SCORER / "config.pbtxt"
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-repo-") as folder:
        repo = Path(folder)
        (repo / contract.BERT_SCORER).mkdir()
        config_text = served_config(source.read_text())
        (repo / contract.BERT_SCORER / "config.pbtxt").write_text(config_text)
        metadata = VersionMetadata(kind="sequence", base="benchmark (untrained CPU default)", max_length=built.max_history)
        version = publish_sequence(repo, contract.BERT_SCORER, built, metadata)
        serve_this_checkout(version)
        served = load_version(version)
        shutil.rmtree(repo / ".staging", ignore_errors=True)
        with isolated_stack(say=lambda message: console.print(f"[dim]{message}[/dim]"), services=["triton"],
                            model_repo=repo, triton_load_models=[contract.BERT_SCORER], start_timeout_s=300) as settings:
            url = settings.triton.grpc_url
            asyncio.run(agrees(url, served, users[:8], wanted[:8]))
            console.print("Triton agrees with the in-process model (top K items, candidate scores)")

            # The sweep: one short pass per setting, the best setting kept for the repeats.
            sweep_users = users[: 512 if args.quick else 1024]
            chosen: dict[str, tuple[int, int]] = {}
            sweep: dict[str, dict[str, float]] = {}
            batches: dict[str, dict[int, int]] = {}
            for task, task_candidates in (("topk", None), ("score100", wanted)):
                sub = None if task_candidates is None else task_candidates[: len(sweep_users)]
                rates = {}
                for per_request in USERS_PER_REQUEST:
                    requests = prepared_requests(sweep_users, sub, per_request)
                    for concurrency in CONCURRENCY:
                        rates[(per_request, concurrency)] = asyncio.run(closed_loop(url, requests, concurrency))
                chosen[task] = max(rates, key=rates.get)
                sweep[task] = {f"{u}_users_x_{c}_in_flight": round(r, 1) for (u, c), r in rates.items()}
                inprocess = {(threads, batch): in_process(served, sweep_users, sub, batch, threads)
                             for threads in thread_choices for batch in INPROCESS_BATCHES}
                batches[task] = {threads: max(INPROCESS_BATCHES, key=lambda n: inprocess[(threads, n)])
                                 for threads in thread_choices}
                sweep[f"{task}_inprocess"] = {f"{t}_threads_x_{n}_users": round(r, 1) for (t, n), r in inprocess.items()}
                u, c = chosen[task]
                best = ", ".join(f"{t} threads: {n} users ({inprocess[(t, n)]:,.0f} users/s)" for t, n in batches[task].items())
                console.print(f"{task}: best Triton setting {u} users x {c} in flight ({rates[chosen[task]]:,.0f} users/s); "
                              f"in-process best batch, {best}")

            latency_count = 300 if args.quick else 1000
            for run in range(repeats):
                for task, task_candidates, prefix in (("topk", None, "topk"), ("score100", wanted, "score100")):
                    u, c = chosen[task]
                    local = 0.0
                    for threads, batch in batches[task].items():
                        rate = in_process(served, users, task_candidates, batch, threads)
                        add(f"{prefix}_users_per_s_inprocess_{threads}_threads", rate)
                        local = max(local, rate)
                    remote = asyncio.run(closed_loop(url, prepared_requests(users, task_candidates, u), c))
                    add(f"{prefix}_users_per_s", remote)
                    add(f"{prefix}_users_per_s_inprocess", local)
                    add("triton_over_inprocess" if task == "topk" else "score100_triton_over_inprocess", remote / local)
                    console.print(f"  run {run + 1} {task}: Triton {remote:,.0f} users/s, in-process {local:,.0f} users/s")
                times = asyncio.run(single_user_latency(url, users, latency_count))
                add("topk_p50_ms", quantile(times, 0.5))
                add("topk_p99_ms", quantile(times, 0.99))
                console.print(f"  run {run + 1} single-user top {K}: p50 {runs['topk_p50_ms'][-1]:.1f} ms, "
                              f"p99 {runs['topk_p99_ms'][-1]:.1f} ms ({latency_count} requests)")

    order = ["topk_users_per_s", "topk_users_per_s_inprocess", "triton_over_inprocess", "score100_users_per_s",
             "score100_users_per_s_inprocess", "score100_triton_over_inprocess", "topk_p50_ms", "topk_p99_ms"]
    order += [name for name in runs if name not in order]
    metrics = {name: statistics.median(runs[name]) for name in order}
    print_report(f"streamrec sequence scorer (bert_scorer, CPU default, {built.n_items} items; median of {repeats} runs)",
                 runs, metrics, TARGETS)
    console.print(f"CPU: {info['cpu']}; flags: {info['cpu_flags']}; finished in {time.monotonic() - started:.0f} s")
    write_json(
        str(args.json) if args.json else None, metrics,
        runs=runs,
        targets=TARGETS,
        config={
            "quick": args.quick,
            "model": "untrained CPU_CONFIG (hidden 64, 2 layers, 2 heads, history 50)",
            "items": built.n_items,
            "users": len(users),
            "mean_history": float(np.mean([len(h) for h in users])),
            "k": K,
            "candidates": CANDIDATES,
            "triton_setting": {task: {"users_per_request": u, "in_flight": c} for task, (u, c) in chosen.items()},
            "inprocess_users_per_batch": {task: {f"{t}_threads": n for t, n in best.items()} for task, best in batches.items()},
            "sweep_users_per_s": sweep,
            "triton_config": config_text,
            "latency_requests": latency_count,
        },
        machine=info,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if args.json:
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
