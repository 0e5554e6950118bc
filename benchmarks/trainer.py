"""Trainer benchmark: cycle time from 10,000 new events to the new sequence version serving, and whether
successive versions beat the frozen initial model on the next slice of a time-ordered replay.

    .venv/bin/python benchmarks/trainer.py [--quick] --json bench-out/trainer.json

On a fresh isolated stack (Kafka, Redis, Triton) with ``bert_scorer`` version 1 an untrained
sequence model over the Amazon Scientific catalog (``first_sequence_model``: its items' MiniLM
text embeddings, no co-visitation counts yet, so it ranks by text until it learns), the catalog
in Redis with those embeddings, the purchase sequences are replayed in time order (real per-user
order; the source has no timestamps, so spacing is synthetic) in slices: the first 10,000
events, then the rest in ``--slices`` parts. Each slice goes through a real streams worker (raw
topics -> cleaning -> ``events.accepted``, its late-event limit widened to the replay's span);
once the worker has accepted the slice, one real trainer cycle runs
(``trainer.incremental.cycle.run_cycle``: consume, sequences, fine-tune, gate, publish to Triton)
and is timed until the new version serves (the streams pass is not part of ``cycle_s``). Then the
served version and the frozen version 1 rank the whole catalog for every purchase of the *next*
slice (history: the user's earlier items; history removed from the ranking): NDCG@10 of each,
their paired difference and its standard error.

Metrics: ``cycle_s`` (the 10,000-event cycle), ``versions_published``, ``versions_rejected``,
``ndcg10_gain_vs_frozen`` (mean over the evaluated slices; each slice is in ``slices``).
Targets: ``cycle_s`` <= 60 with ``--quick``; every evaluated slice's gain > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, print_report, write_json  # noqa: E402
from streamrec.components import ComponentProcess  # noqa: E402
from streamrec.datasets.amazon_pairs import load_catalog  # noqa: E402
from streamrec.datasets.loaders import load_amazon  # noqa: E402
from streamrec.events import PurchaseEvent  # noqa: E402
from streamrec.kafka_admin import commit_groups_at_end  # noqa: E402
from streamrec.lag import LagReader  # noqa: E402
from streamrec.model import contract  # noqa: E402
from streamrec.model.artifacts import VersionMetadata, publish_sequence  # noqa: E402
from streamrec.model.bootstrap import first_sequence_model  # noqa: E402
from streamrec.model.served_sequence import ServedSequence, load_version  # noqa: E402
from streamrec.producer import EventProducer  # noqa: E402
from streamrec.settings import REPO_ROOT, RedisSettings, Settings, TrainerSettings  # noqa: E402
from streamrec.stack.isolated import stack_environment  # noqa: E402
from streamrec.stack.process import free_port  # noqa: E402
from streamrec.store.catalog import CatalogRecord  # noqa: E402
from streamrec.store.catalog_store import CatalogStore  # noqa: E402
from streamrec.store.connection import connect  # noqa: E402
from streamrec.topics import INTERACTION_TOPICS  # noqa: E402
from trainer.incremental.cycle import registry_for, run_cycle  # noqa: E402
from trainer.incremental.gate import row_figures  # noqa: E402
from trainer.incremental.sequences import HeldOut, paired_ndcg  # noqa: E402
from trainer.offline.sequence_train import text_vectors  # noqa: E402

DAY_MS = 86_400_000
FIRST_SLICE = 10_000
QUICK_TARGET_CYCLE_S = 60.0


def initial_model(repo: Path, item_ids: list[str], text: np.ndarray) -> str:
    """Version 1 of ``bert_scorer`` in ``repo``: untrained, over the whole catalog, no counts."""
    target = repo / contract.BERT_SCORER
    target.mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "model_repo" / contract.BERT_SCORER / "config.pbtxt", target / "config.pbtxt")
    served = first_sequence_model(item_ids, text, [])
    metadata = VersionMetadata(kind="sequence", base="untrained (text signals only)", max_length=served.max_history,
                               lineage={"untrained": True, "items": len(item_ids)})
    publish_sequence(repo, contract.BERT_SCORER, served, metadata, version=1)
    return f"untrained first_sequence_model over {len(item_ids):,} items"


def load_catalog_into_redis(redis_settings: RedisSettings, catalog, item_ids: list[str], text: np.ndarray) -> None:
    """Every item with its text embedding (float16 unit vector), as the streams worker stores it."""
    now = int(time.time() * 1000)
    vectors = {item_id: row for item_id, row in zip(item_ids, text, strict=True)}
    records = [CatalogRecord(item.item_id, item.title, tuple(item.category_path), item.brand, None, None, True, now,
                             embedding=(vectors[item.item_id] / np.linalg.norm(vectors[item.item_id])).astype(np.float16))
               for item in catalog if item.item_id in vectors]

    async def write() -> None:
        client = connect(redis_settings)
        try:
            await CatalogStore(client).write(records, stored_at_ms=now)
        finally:
            await client.aclose()

    asyncio.run(write())


def streams_worker(settings: Settings, log_path: Path, max_late_s: float) -> ComponentProcess:
    """A streams worker (interactions only) that accepts the replay onto events.accepted."""
    commit_groups_at_end(settings.kafka, {settings.streams.app_id: [t.value for t in INTERACTION_TOPICS]})
    env = {**stack_environment(settings.stack), "STREAMREC_STREAMS__AGENTS": '["interactions"]',
           "STREAMREC_STREAMS__WEB_PORT": str(free_port()), "STREAMREC_STREAMS__MAX_LATE_S": str(max_late_s)}
    return ComponentProcess(["streams", "worker"], log_path, env).start()


def wait_accepted(settings: Settings, worker: ComponentProcess, timeout_s: float = 900) -> float:
    """Seconds until the streams worker committed past every raw event (so all are on events.accepted)."""
    began = time.monotonic()
    topics = [t.value for t in INTERACTION_TOPICS]
    reader = LagReader(settings.kafka)
    try:
        while sum(row.lag for row in reader.read([settings.streams.app_id], sample_s=0, topics=topics) if row.topic in topics):
            if not worker.alive() or time.monotonic() - began > timeout_s:
                raise RuntimeError(f"the streams worker did not accept the slice:\n{worker.log_tail()}")
            time.sleep(0.5)
    finally:
        reader.close()
    return time.monotonic() - began


def next_slice_rows(history, upcoming) -> list[HeldOut]:
    """One row per purchase of ``upcoming`` whose user has earlier items: (their items so far -> it)."""
    past: dict[str, list[str]] = {}
    for event in history:
        items = past.setdefault(event.user_id, [])
        if not items or items[-1] != event.item_id:
            items.append(event.item_id)
    rows = []
    for event in upcoming:
        items = past.setdefault(event.user_id, [])
        if items:
            rows.append(HeldOut(event.user_id, tuple(items), event.item_id, event.time_ms))
        if not items or items[-1] != event.item_id:
            items.append(event.item_id)
    return rows


def next_slice_ndcg(frozen: ServedSequence, served: ServedSequence, rows: list[HeldOut]) -> dict:
    stats = paired_ndcg(row_figures(served, rows), row_figures(frozen, rows))
    return {"rows": stats["rows"], "served_ndcg10": stats["challenger"], "frozen_ndcg10": stats["champion"],
            "gain": stats["difference"], "gain_se": stats["se"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer epochs per cycle (a few minutes in all).")
    parser.add_argument("--json", help="Write {'metrics': ...} here.")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--slices", type=int, default=3, help="Slices after the first 10,000 events.")
    args = parser.parse_args()
    torch.set_num_threads(2)

    dataset = load_amazon(args.data_dir)
    amazon = load_catalog(args.data_dir)
    item_ids = list(amazon.item_ids)
    text = text_vectors(amazon.texts, REPO_ROOT / ".cache" / "text").numpy()
    events = sorted(dataset.events, key=lambda e: e.time_ms)
    rest = np.array_split(np.arange(FIRST_SLICE, len(events)), args.slices)
    bounds = [(0, FIRST_SLICE), *((int(part[0]), int(part[-1]) + 1) for part in rest if part.size)]
    base_ms = int(time.time() * 1000) - events[-1].time_ms - DAY_MS
    # The replay spans years of synthetic days: the streams worker must not quarantine it as late.
    max_late_s = (events[-1].time_ms - events[0].time_ms) / 1000 + 2 * DAY_MS / 1000
    trainer_options = dict(min_events=100, epochs=2 if args.quick else 4, max_minutes=1.0 if args.quick else 5.0,
                           context_events=20_000)

    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as folder:
        repo = Path(folder) / "model_repo"
        initial = initial_model(repo, item_ids, text)
        print(f"initial model: {initial}; {len(events):,} events in slices {bounds}")
        with isolated_stack(model_repo=repo, triton_load_models=[contract.BERT_SCORER]) as stack:
            settings = stack.model_copy(update={"trainer": TrainerSettings(**trainer_options)})
            load_catalog_into_redis(settings.redis, dataset.catalog, item_ids, text)
            registry = registry_for(settings, say=print)
            frozen = load_version(repo / contract.BERT_SCORER / "1")
            worker = streams_worker(settings, Path(folder) / "streams.log", max_late_s)
            try:
                cycles, slices = [], []
                for number, (start, stop) in enumerate(bounds):
                    with EventProducer.from_settings(settings) as producer:
                        for event in events[start:stop]:
                            producer.produce(PurchaseEvent(user_id=event.user_id, item_id=event.item_id, session_id=event.session_id,
                                                           order_id=event.order_id or f"o{start}", ts=base_ms + event.time_ms))
                        producer.flush(60)
                    streams_s = wait_accepted(settings, worker)
                    began = time.monotonic()
                    result = run_cycle(settings, say=print)
                    seconds = time.monotonic() - began
                    served = registry.served_version()
                    cycles.append({"slice": number, "events": stop - start, "status": result.status, "version": result.version,
                                   "served": served, "cycle_s": round(seconds, 1), "streams_s": round(streams_s, 1),
                                   "events_used": result.events_used, "unreadable": result.unreadable, "timings": result.timings,
                                   "counts": result.counts, "gate": result.gate, "reason": result.reason})
                    print(f"slice {number}: accepted in {streams_s:.1f} s; {result.status} v{result.version} in {seconds:.1f} s {result.timings}")
                    if number + 1 < len(bounds):
                        next_start, next_stop = bounds[number + 1]
                        rows = next_slice_rows(events[:next_start], events[next_start:next_stop])
                        figures = next_slice_ndcg(frozen, load_version(repo / contract.BERT_SCORER / str(served)), rows)
                        slices.append({"after_slice": number, "served_version": served, **figures})
                        print(f"next slice {number + 1}: served v{served} NDCG@10 {figures['served_ndcg10']:.4f} "
                              f"vs frozen {figures['frozen_ndcg10']:.4f} ({figures['gain']:+.4f} ± {figures['gain_se']:.4f})")
            finally:
                worker.stop()

    metrics = {
        "cycle_s": cycles[0]["cycle_s"],
        "versions_published": sum(c["status"] == "published" for c in cycles),
        "versions_rejected": sum(c["status"] in ("rejected", "failed") for c in cycles),
        "ndcg10_gain_vs_frozen": float(np.mean([s["gain"] for s in slices])) if slices else 0.0,
    }
    # One cycle per slice, not repeated runs: cycle_s is the first (10,000 new events); all are listed below.
    print_report("trainer" + (" (quick)" if args.quick else ""), {},
                 {k: v for k, v in metrics.items() if k != "ndcg10_gain_vs_frozen"}, {})
    print("cycles: " + ", ".join(f"{c['cycle_s']:.1f} s ({c['status']})" for c in cycles))
    if args.quick:
        met = "met" if metrics["cycle_s"] <= QUICK_TARGET_CYCLE_S else "missed"
        print(f"cycle_s {metrics['cycle_s']:.1f} s (--quick target <= {QUICK_TARGET_CYCLE_S:.0f} s: {met})")
    beaten = sum(s["gain"] > 0 for s in slices)
    print(f"ndcg10_gain_vs_frozen {metrics['ndcg10_gain_vs_frozen']:+.4f}; served beat frozen on {beaten} of {len(slices)} next slices")
    for entry in slices:
        print(f"after slice {entry['after_slice']}: v{entry['served_version']} next-slice NDCG@10 "
              f"{entry['served_ndcg10']:.4f} vs frozen {entry['frozen_ndcg10']:.4f} on {entry['rows']} rows")
    write_json(args.json, metrics, cycles=cycles, slices=slices, initial_model=initial, machine=machine(),
               quick=args.quick, trainer=trainer_options, evaluation="whole catalog, history removed, every next-slice purchase",
               data="amazon_scientific: real per-user order, synthetic spacing")


if __name__ == "__main__":
    main()
