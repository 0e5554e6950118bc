"""Cross-encoder benchmark: 100-candidate text requests through Triton and in-process torch, same model, same inputs.

    .venv/bin/python benchmarks/cross_encoder.py [--quick] --json OUT

(The sequence ``bert_scorer`` is ``benchmarks/scorer.py``; this one measures the text cross-encoders.)

Every request is one user's context with 100 candidate items, built from the Amazon
Scientific catalog (synthetic text when the shared data are absent) so that every pair fills
**128 tokens** after truncation. The models are the production architectures: ``cross_encoder``
(all-MiniLM-L6-v2 cross-encoder) and ``cross_encoder_student`` (the distilled student); speed does
not depend on the weights, so by default freshly initialised versions are used
(``--teacher``/``--student`` take trained version folders instead). The benchmarked versions
are published with ``max_length`` 128 into a temporary model repository served by a private
Triton on free ports (so a developer's stack is never touched), with the project's configs
(``configs/gpu.pbtxt`` when a GPU is present).

Metrics (median of 3 runs):

- ``triton_pairs_per_s`` — closed loop, ``--concurrency`` clients sending 100-candidate text
  requests back to back (gRPC, tokenised in Triton); the primary model: the student on CPU,
  the MiniLM scorer on GPU.
- ``inprocess_pairs_per_s`` — the same model and inputs scored in this process, one
  100-candidate batch at a time (tokenisation included, same tokeniser as the backend).
- ``p50_ms_100_candidates`` / ``p99_ms_100_candidates`` — latency of 100-candidate requests
  through Triton at half of the measured peak (open loop: latency counts from the scheduled
  send time).
- ``student_cpu_pairs_per_s`` — the student in-process on CPU, in its served precision.
- extras: the teacher on this device (Triton and in-process), the student in fp32, the
  tokenisation placement (Hugging Face call vs the cached tokeniser; texts vs client-tokenised
  ids through Triton) and ``triton_vs_inprocess`` (ratio, same process, same inputs).
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc.aio as grpcclient
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, open_loop_latencies, print_report, write_json  # noqa: E402
from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, load_folder, publish
from streamrec.model.bootstrap import first_scorers
from streamrec.model.inference import (
    CachedTokenizer,
    InProcessScorer,
    Precision,
    tokenize_pairs,
)
from streamrec.settings import REPO_ROOT, StackSettings
from streamrec.stack import LocalStack
from streamrec.stack.process import free_port

RUNS = 3
CANDIDATES = 100
SEQUENCE = 128
TARGETS = {
    "gpu": {"triton_pairs_per_s": 50_000, "p99_ms_100_candidates": 20},
    "cpu": {"student_cpu_pairs_per_s": 1_000},
}
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
console = Console(highlight=False)


# -- inputs -----------------------------------------------------------------------------------


def requests_128(tokenizer, count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``count`` (context, 100 items) requests whose pairs all reach 128 tokens."""
    try:
        from streamrec.datasets.amazon_pairs import load_catalog

        catalog = load_catalog(DATA_DIR)
        titles, texts = list(catalog.titles), list(catalog.texts)
    except FileNotFoundError:
        rng = np.random.default_rng(seed)
        words = [f"word{i}" for i in range(2000)]
        titles = [" ".join(rng.choice(words, 20)) for _ in range(1500)]
        texts = [" ".join(rng.choice(words, 60)) for _ in range(1500)]
    rng = np.random.default_rng(seed)
    counter = CachedTokenizer(tokenizer, 10_000)
    long_texts = [t for t, ids in zip(texts, counter.ids(texts)) if len(ids) >= 64] or texts
    out = []
    for _ in range(count):
        context = " ; ".join(titles[i] for i in rng.choice(len(titles), 8, replace=False))
        items = [long_texts[i] for i in rng.choice(len(long_texts), CANDIDATES, replace=False)]
        out.append((context, items))
    widths = CachedTokenizer(tokenizer, SEQUENCE).pairs([out[0][0]] * CANDIDATES, out[0][1])["attention_mask"].sum(1)
    assert int(widths.min()) == SEQUENCE, f"pairs shorter than {SEQUENCE} tokens: {int(widths.min())}"
    return out


# -- models and the private Triton ------------------------------------------------------------


def versions_to_benchmark(teacher_dir: Path | None, student_dir: Path | None):
    teacher, student = first_scorers()
    tokenizer = None
    if teacher_dir:
        teacher, tokenizer, _ = load_folder(teacher_dir)
    if student_dir:
        student, tokenizer, _ = load_folder(student_dir)
    if tokenizer is None:
        from transformers import AutoTokenizer

        from streamrec.model.networks import pretrained_minilm_path

        tokenizer = AutoTokenizer.from_pretrained(str(pretrained_minilm_path()), local_files_only=True)
    return {contract.CROSS_ENCODER: teacher.eval(), contract.CROSS_ENCODER_STUDENT: student.eval()}, tokenizer


@contextmanager
def private_triton(modules: dict, tokenizer, gpu: bool) -> Iterator[tuple[StackSettings, dict[str, dict]]]:
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        repo = Path(tmp) / "model_repo"
        configs = {}
        for name, module in modules.items():
            source = REPO_ROOT / "model_repo" / name
            config = source / "configs" / "gpu.pbtxt" if gpu and (source / "configs" / "gpu.pbtxt").exists() else source / "config.pbtxt"
            (repo / name).mkdir(parents=True)
            shutil.copy2(config, repo / name / "config.pbtxt")
            configs[name] = {"file": str(config.relative_to(REPO_ROOT)), "text": config.read_text()}
            publish(repo, name, module, tokenizer, VersionMetadata(kind="scorer", base="benchmark", max_length=SEQUENCE))
        settings = StackSettings(
            state_dir=Path(tmp) / "state",
            services=["triton"],
            model_repo=repo,
            triton_load_models=list(modules),
            triton_http_port=free_port(),
            triton_grpc_port=free_port(),
            triton_metrics_port=free_port(),
            start_timeout_s=300,
        )
        stack = LocalStack(settings, say=lambda m: console.print(f"[dim]· {m}[/dim]"))
        try:
            stack.up()
            yield settings, configs
        finally:
            stack.down()


def precision_of(config_text: str) -> Precision | None:
    marker = 'key: "precision" value: { string_value: "'
    if marker in config_text:
        return config_text.split(marker, 1)[1].split('"', 1)[0]  # type: ignore[return-value]
    return None


# -- measurements -----------------------------------------------------------------------------


def text_inputs(context: str, items: list[str]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, texts in ((contract.SCORER_INPUT_CONTEXT, [context] * len(items)), (contract.SCORER_INPUT_ITEM, items)):
        payload = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(name, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        inputs.append(tensor)
    return inputs


def token_inputs(tokens: CachedTokenizer, context: str, items: list[str]) -> list[grpcclient.InferInput]:
    encoded = tokens.pairs([context] * len(items), items)
    inputs = []
    for name, key in ((contract.SCORER_INPUT_IDS, "input_ids"), (contract.SCORER_INPUT_MASK, "attention_mask"),
                      (contract.SCORER_INPUT_TYPES, "token_type_ids")):
        tensor = grpcclient.InferInput(name, list(encoded[key].shape), "INT64")
        tensor.set_data_from_numpy(encoded[key].numpy())
        inputs.append(tensor)
    return inputs


async def closed_loop(url: str, model: str, requests: list, concurrency: int, tokens: CachedTokenizer | None) -> float:
    """Pairs/s with ``concurrency`` clients sending back to back; ``tokens``: tokenise in the client."""
    client = grpcclient.InferenceServerClient(url)
    queue = list(range(len(requests)))

    async def worker() -> None:
        while queue:
            context, items = requests[queue.pop()]
            inputs = token_inputs(tokens, context, items) if tokens else text_inputs(context, items)
            await client.infer(model, inputs)

    try:
        await client.infer(model, text_inputs(*requests[0]))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(requests) * CANDIDATES / (time.perf_counter() - started)
    finally:
        await client.close()


async def open_loop(url: str, model: str, requests: list, rate: float, seconds: float) -> tuple[float, float, int]:
    """p50/p99 ms of requests sent at ``rate`` per second, timed from their scheduled send time."""
    client = grpcclient.InferenceServerClient(url)
    prepared = [text_inputs(c, i) for c, i in requests]
    count = max(1, int(rate * seconds))
    try:
        latencies = await open_loop_latencies(lambda index: client.infer(model, prepared[index % len(prepared)]), count, rate)
    finally:
        await client.close()
    ms = np.asarray(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), count


def in_process(scorer: InProcessScorer, requests: list) -> tuple[float, list[float]]:
    """Pairs/s scoring one 100-candidate request at a time, and each request's ms."""
    scorer.score_pairs([requests[0][0]] * CANDIDATES, requests[0][1])  # warm-up
    times = []
    started = time.perf_counter()
    for context, items in requests:
        began = time.perf_counter()
        scorer.score_pairs([context] * len(items), items)
        times.append((time.perf_counter() - began) * 1000)
    return len(requests) * CANDIDATES / (time.perf_counter() - started), times


def tokenise_rates(tokenizer, requests: list) -> dict[str, float]:
    cached = CachedTokenizer(tokenizer, SEQUENCE)
    for context, items in requests:
        cached.ids(items)  # catalog texts are warm in a serving process
    out = {}
    for name, call in (
        ("tokenise_hf_pairs_per_s", lambda c, i: tokenize_pairs(tokenizer, [c] * len(i), i, SEQUENCE)),
        ("tokenise_cached_pairs_per_s", lambda c, i: cached.pairs([c] * len(i), i)),
    ):
        started = time.perf_counter()
        for context, items in requests:
            call(context + " ", items)  # a context not seen before, as for a new event
        out[name] = len(requests) * CANDIDATES / (time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer requests per run (a few minutes on a 2-core CPU).")
    parser.add_argument("--json", type=Path, help="Write {'metrics': ..., 'runs': ...} here.")
    parser.add_argument("--teacher", type=Path, help="A trained cross_encoder version folder (default: fresh MiniLM scorer).")
    parser.add_argument("--student", type=Path, help="A trained cross_encoder_student version folder.")
    parser.add_argument("--concurrency", type=int, help="Closed-loop clients (default 4 on CPU, 32 on GPU).")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16), help="torch threads in-process.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    concurrency = args.concurrency or (32 if gpu else 4)
    primary = contract.CROSS_ENCODER if gpu else contract.CROSS_ENCODER_STUDENT
    targets = TARGETS["gpu" if gpu else "cpu"]
    n_student = (20 if args.quick else 60) * (10 if gpu else 1)
    n_teacher = (3 if args.quick else 6) * (100 if gpu else 1)
    started = time.monotonic()

    modules, tokenizer = versions_to_benchmark(args.teacher, args.student)
    requests = requests_128(tokenizer, max(n_student, n_teacher))
    console.print(f"{len(requests)} requests of {CANDIDATES} candidates, every pair {SEQUENCE} tokens; device {device}")
    runs: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    # Tokenisation placement: the Hugging Face call vs the backend's cached tokeniser.
    for _ in range(RUNS):
        for name, value in tokenise_rates(tokenizer, requests[:n_student]).items():
            add(name, value)

    with private_triton(modules, tokenizer, gpu) as (stack, configs):
        url = f"{stack.host}:{stack.triton_grpc_port}"
        for model, count, prefix in ((primary, n_student if primary == contract.CROSS_ENCODER_STUDENT else n_teacher, ""),
                                     (contract.CROSS_ENCODER if primary != contract.CROSS_ENCODER else contract.CROSS_ENCODER_STUDENT,
                                      n_teacher if primary == contract.CROSS_ENCODER_STUDENT else n_student,
                                      "teacher_" if primary == contract.CROSS_ENCODER_STUDENT else "student_")):
            precision = precision_of(configs[model]["text"])
            scorer = InProcessScorer(modules[model], tokenizer, max_length=SEQUENCE, device=device, precision=precision)
            subset = requests[:count]
            console.print(f"[bold]{model}[/bold] ({precision or 'default precision'}): {count} requests per run")
            for run in range(RUNS):
                rate, times = in_process(scorer, subset)
                add(f"{prefix}inprocess_pairs_per_s", rate)
                add(f"{prefix}inprocess_p50_ms", float(np.percentile(times, 50)))
                served = asyncio.run(closed_loop(url, model, subset, concurrency, None))
                add(f"{prefix}triton_pairs_per_s", served)
                add(f"{prefix}triton_vs_inprocess", served / rate)
                console.print(f"  run {run + 1}: in-process {rate:,.0f} pairs/s, Triton {served:,.0f} pairs/s")
                if not prefix:
                    tokenised = asyncio.run(closed_loop(url, model, subset, concurrency, CachedTokenizer(tokenizer, SEQUENCE)))
                    add("triton_client_tokenised_pairs_per_s", tokenised)
                    seconds = 8.0 if args.quick else 20.0
                    p50, p99, count_sent = asyncio.run(open_loop(url, model, subset, 0.5 * served / CANDIDATES, seconds))
                    add("p50_ms_100_candidates", p50)
                    add("p99_ms_100_candidates", p99)
                    console.print(f"         client-tokenised {tokenised:,.0f} pairs/s; at half load "
                                  f"({0.5 * served / CANDIDATES:.1f} req/s, {count_sent} requests) p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            del scorer

    # The CPU student in-process (the CPU default), in its served precision and in fp32.
    student_config = (REPO_ROOT / "model_repo" / contract.CROSS_ENCODER_STUDENT / "config.pbtxt").read_text()
    for label, precision in (("student_cpu_pairs_per_s", precision_of(student_config)), ("student_cpu_fp32_pairs_per_s", "fp32")):
        scorer = InProcessScorer(modules[contract.CROSS_ENCODER_STUDENT].cpu(), tokenizer, max_length=SEQUENCE, precision=precision)
        for _ in range(RUNS):
            add(label, in_process(scorer, requests[:n_student])[0])

    metrics = {name: statistics.median(values) for name, values in runs.items()}
    order = ["triton_pairs_per_s", "inprocess_pairs_per_s", "p99_ms_100_candidates", "student_cpu_pairs_per_s"]
    metrics = {**{k: metrics[k] for k in order}, **{k: v for k, v in metrics.items() if k not in order}}
    print_report(f"streamrec scorer benchmark (100-candidate requests, {SEQUENCE} tokens per pair; median of runs)", runs, metrics, targets)
    console.print(f"primary model: {primary}; finished in {time.monotonic() - started:.0f} s")
    if args.json:
        report = {
            "metrics": metrics,
            "runs": runs,
            "targets": targets,
            "config": {
                "quick": args.quick, "primary_model": primary, "device": device, "candidates": CANDIDATES,
                "sequence_length": SEQUENCE, "concurrency": concurrency, "requests_per_run": {"primary": n_student if not gpu else n_teacher},
                "teacher": str(args.teacher or "fresh all-MiniLM-L6-v2 scorer"),
                "student": str(args.student or "fresh projected student"),
                "triton_configs": {name: c["file"] for name, c in configs.items()},
            },
            "machine": machine(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(args.json, **report)
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
