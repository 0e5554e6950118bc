"""Quality benchmark: next-item ranking on real shop data, every method in one run.

    .venv/bin/python benchmarks/quality.py --dataset amazon_scientific \
        --eval-file ../shared/data/amazon_scientific/Scientific.valid.inter [--users N] [--quick] --json OUT

Training uses ``Scientific.train.inter`` only; the evaluation file is an argument (same format
as ``Scientific.valid.inter``: ``user \\t history \\t next item``), so the same command evaluates
any split. Every method ranks all 1,585 items for each evaluation row; the user's own history
items are excluded (identically for every method); ties are broken by one fixed random order.

Methods (JSON keys ``hr10_<m>``, ``ndcg10_<m>``, ``mrr20_<m>``):

- ``popularity`` — item frequency in the training sequences;
- ``covisit`` — items bought near the user's recent items in training sequences (recency-weighted);
- ``encoder_pretrained`` — all-MiniLM-L6-v2 as is: cosine(user context, item text);
- ``encoder_finetuned`` — the fine-tuned item encoder, same retrieval;
- ``scorer`` — the fine-tuned MiniLM cross-encoder (teacher) re-ranking the fine-tuned encoder's
  top 100;
- ``student`` — the distilled 2-layer student re-ranking the same top 100;
- ``pipeline`` — the recommender as served (``streamrec.ranking.recommender.Recommender`` over the signals
  of ``trainer.offline.pipeline``: candidates → blend with the packaged weights → student re-ranks the
  blend's top ``rerank_top`` → MMR, default settings) asked for a list of ``PIPELINE_K`` items;
  an item outside the list counts as a miss.

The first four run on every evaluation row. The re-rankers and the pipeline cost forward passes
per row, so on a CPU they run on a fixed random sample of rows (``--users``, seed 0; every
method is also reported on that sample as ``<metric>_<m>_sample``, and the headline ratios
``scorer_vs_best_baseline_ndcg10`` and ``pipeline_vs_best_baseline_ndcg10`` compare with the
best non-BERT baseline on the same sample).

Models: the newest versions in ``--models`` (a model repository; written by
``streamrec trainer train-scorer`` or by this script). When a model is missing there (or with
``--retrain``), this script trains all three with the recipe (``trainer.offline.recipe``) first
— about 70 minutes on a 2-core CPU with the default budgets, minutes with ``--quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from streamrec.ranking.blender import Blender
from streamrec.ranking.item_index import ItemIndex
from trainer.offline.pipeline import (
    NamedScorer,
    OfflinePipeline,
    OfflineSignals,
    amazon_records,
    rank_in_list,
)
from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE
from streamrec.datasets.sequences import train_sequences
from streamrec.model import contract
from streamrec.model.artifacts import load_folder, versions
from trainer.offline.baselines import CoVisitation, Popularity
from trainer.offline.evaluation import rerank, summarise, target_rank, tiebreak_order
from trainer.offline.finetune import ContextWriter
from streamrec.model.inference import InProcessScorer
from streamrec.model.networks import TextEncoder, load_backbone, pretrained_minilm_path
from trainer.offline.recipe import (
    Plan,
    load_corpus,
    embed,
    retrieval_scores,
    score_lists,
    top_k,
    train_models,
)
from streamrec.settings import REPO_ROOT, RecsSettings, StreamsSettings

METHODS = ("popularity", "covisit", "encoder_pretrained", "encoder_finetuned", "scorer", "student", "pipeline")
SAMPLED = ("scorer", "student", "pipeline")
BASELINES = ("popularity", "covisit")
TARGET_RATIO = 1.2
RETRIEVE = 100
PIPELINE_K = 100  # list length asked of the served pipeline (its candidates are about 200)
console = Console(highlight=False)


def trained_folders(repo: Path) -> dict[str, Path] | None:
    out = {}
    for model in (contract.ITEM_ENCODER, contract.CROSS_ENCODER, contract.CROSS_ENCODER_STUDENT):
        found = versions(repo / model)
        if not found:
            return None
        out[model] = repo / model / str(found[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon_scientific", choices=["amazon_scientific"])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--eval-file", type=Path, help="Rows to evaluate (default: Scientific.valid.inter).")
    parser.add_argument("--json", type=Path, help="Write {'metrics': ...} here.")
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "bench-out" / "models",
                        help="Model repository with trained versions (trained here when missing).")
    parser.add_argument("--retrain", action="store_true", help="Train new versions even when --models has some.")
    parser.add_argument("--users", type=int, help="Rows re-ranked by the scorers (default 500; --quick 60).")
    parser.add_argument("--quick", action="store_true", help="Few re-ranked rows; short training budgets if training.")
    parser.add_argument("--teacher-precision", default="bf16", choices=["fp32", "bf16"],
                        help="The teacher as served on GPU (bf16) or in fp32.")
    parser.add_argument("--student-precision", default="bf16", choices=["fp32", "bf16"],
                        help="The student as served on CPU (bf16, see model_repo/cross_encoder_student/config.pbtxt).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    eval_file = args.eval_file or args.data_dir / FOLDER / VALID_FILE
    corpus = load_corpus(args.data_dir, valid_file=eval_file)
    n_items = len(corpus.item_texts)
    rows = list(corpus.valid)
    console.print(f"{args.dataset}: {n_items:,} items, {len(corpus.train):,} training rows, "
                  f"{len(rows):,} evaluation rows from {eval_file}")

    # -- models ----------------------------------------------------------------------------
    folders = None if args.retrain else trained_folders(args.models)
    training = None
    if folders is None:
        plan = Plan()
        budgets = (2.0, 4.0, 1.5) if args.quick else (20.0, 40.0, 10.0)
        plan.encoder.max_minutes, plan.scorer.max_minutes, plan.distill.max_minutes = budgets
        if args.quick:
            plan.validation_users, plan.distill.queries = 100, 300
        console.print(f"training into {args.models} (budgets {budgets} minutes)")
        trained = train_models(corpus, args.models, plan, say=console.print, lineage={"dataset": args.dataset})
        training = trained.reports
        folders = trained_folders(args.models)
    assert folders is not None
    encoder, tokenizer, encoder_meta = load_folder(folders[contract.ITEM_ENCODER])
    teacher, _, teacher_meta = load_folder(folders[contract.CROSS_ENCODER])
    student, _, student_meta = load_folder(folders[contract.CROSS_ENCODER_STUDENT])
    console.print("models: " + ", ".join(f"{name} {folder}" for name, folder in folders.items()))

    tiebreak = tiebreak_order(n_items)
    histories = [row.history for row in rows]
    targets = [row.target for row in rows]
    rng = np.random.default_rng(0)
    n_sample = min(len(rows), args.users or (60 if args.quick else 500))
    sample = np.sort(rng.choice(len(rows), size=n_sample, replace=False))
    ranks: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    def rank_all(name: str, scores: np.ndarray, which: np.ndarray | None = None) -> None:
        index = np.arange(len(rows)) if which is None else which
        ranks[name] = np.array([target_rank(s, targets[i], histories[i], tiebreak) for s, i in zip(scores, index)])

    # -- baselines (all rows) ----------------------------------------------------------------
    sequences = train_sequences(corpus.train)
    t = time.monotonic()
    popularity = Popularity(sequences, n_items)
    rank_all("popularity", np.stack([popularity.scores()] * len(rows)))
    covisit = CoVisitation(sequences, n_items)
    rank_all("covisit", np.stack([covisit.scores(h) for h in histories]))
    seconds["baselines"] = time.monotonic() - t

    # -- encoders (all rows) -----------------------------------------------------------------
    budget = Plan().encoder.context_budget
    writer = ContextWriter(corpus.titles, tokenizer, budget)
    contexts = [writer(h) for h in histories]
    first_stage, item_vectors = None, None
    for name, module, length in (
        ("encoder_pretrained", TextEncoder(load_backbone(pretrained_minilm_path())).eval(), 128),
        ("encoder_finetuned", encoder, encoder_meta.max_length),
    ):
        t = time.monotonic()
        items = embed(module, tokenizer, corpus.item_texts, max_length=length)
        users = embed(module, tokenizer, contexts, max_length=length)
        scores = retrieval_scores(users, items, histories)
        rank_all(name, scores)
        seconds[name] = time.monotonic() - t
        console.print(f"{name}: {summarise(ranks[name])} ({seconds[name]:.0f} s)")
        if name == "encoder_finetuned":
            first_stage, item_vectors = scores, items

    # -- re-rankers (sample) -------------------------------------------------------------------
    assert first_stage is not None
    candidates = top_k(first_stage[sample], RETRIEVE)
    recall = float(np.mean([targets[i] in set(c) for i, c in zip(sample, candidates)]))
    for name, module, meta, precision in (
        ("student", student, student_meta, args.student_precision),
        ("scorer", teacher, teacher_meta, args.teacher_precision),
    ):
        t = time.monotonic()
        lists = score_lists(
            module, tokenizer, [contexts[i] for i in sample],
            [[corpus.item_texts[j] for j in row] for row in candidates],
            max_length=meta.max_length, precision=precision,  # type: ignore[arg-type]
        )
        scores = np.stack([rerank(first_stage[i], c, s) for i, c, s in zip(sample, candidates, lists)])
        rank_all(name, scores, sample)
        seconds[name] = time.monotonic() - t
        console.print(f"{name}: {summarise(ranks[name])} ({seconds[name]:.0f} s, "
                      f"{len(sample) * RETRIEVE / seconds[name]:,.0f} pairs/s)")

    # -- the served pipeline (sample) ------------------------------------------------------------
    assert item_vectors is not None
    t = time.monotonic()
    recs, streams = RecsSettings(), StreamsSettings()
    records = amazon_records(args.data_dir, item_vectors)
    item_ids = [record.item_id for record in records]
    blender = Blender.load(recs.blender_weights)
    pipeline = OfflinePipeline(
        ItemIndex.from_records(records),
        OfflineSignals.from_sequences([[item_ids[i] for i in sequence] for sequence in sequences], streams),
        NamedScorer(InProcessScorer(student, tokenizer, max_length=student_meta.max_length,
                                    precision=args.student_precision), contract.CROSS_ENCODER_STUDENT),  # type: ignore[arg-type]
        blender, recs, streams,
    )

    async def served_lists() -> list[list[str]]:
        return [await pipeline.recommend([item_ids[j] for j in histories[i]], k=PIPELINE_K) for i in sample]

    lists = asyncio.run(served_lists())
    ranks["pipeline"] = np.array([rank_in_list(items, item_ids[targets[i]]) for items, i in zip(lists, sample)])
    seconds["pipeline"] = time.monotonic() - t
    console.print(f"pipeline: {summarise(ranks['pipeline'])} ({seconds['pipeline']:.0f} s, "
                  f"{np.mean([len(items) for items in lists]):.0f} items per list)")

    # -- report --------------------------------------------------------------------------------
    metrics: dict[str, float] = {}
    for name in METHODS:
        whole = summarise(ranks[name])
        on_sample = whole if name in SAMPLED else summarise(ranks[name][sample])
        for key in ("hr10", "ndcg10", "mrr20"):
            metrics[f"{key}_{name}"] = whole[key]
            metrics[f"{key}_{name}_sample"] = on_sample[key]
        metrics[f"rows_{name}"] = whole["users"]
    best_baseline = max(BASELINES, key=lambda m: metrics[f"ndcg10_{m}_sample"])
    metrics["scorer_vs_best_baseline_ndcg10"] = metrics["ndcg10_scorer"] / max(metrics[f"ndcg10_{best_baseline}_sample"], 1e-12)
    metrics["pipeline_vs_best_baseline_ndcg10"] = metrics["ndcg10_pipeline"] / max(metrics[f"ndcg10_{best_baseline}_sample"], 1e-12)
    metrics["student_vs_scorer_ndcg10"] = metrics["ndcg10_student"] / max(metrics["ndcg10_scorer"], 1e-12)
    metrics["recall100_encoder_finetuned_sample"] = recall
    metrics["sample_users"] = int(n_sample)

    table = Table(title=f"quality on {eval_file.name}: all {n_items:,} items ranked; re-rankers and pipeline on {n_sample} of {len(rows)} rows")
    for column in ("method", "rows", "HR@10", "NDCG@10", "MRR@20", "NDCG@10 (sample)"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for name in METHODS:
        table.add_row(name, f"{metrics[f'rows_{name}']:,}", f"{metrics[f'hr10_{name}']:.4f}",
                      f"{metrics[f'ndcg10_{name}']:.4f}", f"{metrics[f'mrr20_{name}']:.4f}",
                      f"{metrics[f'ndcg10_{name}_sample']:.4f}")
    console.print(table)
    ratio = metrics["scorer_vs_best_baseline_ndcg10"]
    verdict = "[green]met[/green]" if ratio >= TARGET_RATIO else "[red]missed[/red]"
    console.print(f"scorer NDCG@10 / best baseline ({best_baseline}) on the same rows: {ratio:.2f} "
                  f"(target ≥ {TARGET_RATIO}) {verdict}; student / scorer: {metrics['student_vs_scorer_ndcg10']:.2f}; "
                  f"pipeline / best baseline: {metrics['pipeline_vs_best_baseline_ndcg10']:.2f}; "
                  f"encoder recall@100 {recall:.3f}; finished in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "metrics": metrics,
            "best_baseline": best_baseline,
            "target": {"scorer_vs_best_baseline_ndcg10": TARGET_RATIO},
            "config": {
                "dataset": args.dataset, "eval_file": str(eval_file), "train_file": "Scientific.train.inter",
                "rows": len(rows), "items": n_items, "sample_users": int(n_sample), "sample_seed": 0,
                "retrieve": RETRIEVE, "exclude_history": True, "context_token_budget": budget,
                "teacher_precision": args.teacher_precision, "student_precision": args.student_precision,
                "max_length": {"encoder_pretrained": 128, "encoder_finetuned": encoder_meta.max_length,
                               "scorer": teacher_meta.max_length, "student": student_meta.max_length},
                "models": {name: str(folder) for name, folder in folders.items()},
                "lineage": {"encoder": encoder_meta.lineage, "scorer": teacher_meta.lineage, "student": student_meta.lineage},
                "quick": args.quick,
                "pipeline": {"k": PIPELINE_K, "scorer": contract.CROSS_ENCODER_STUDENT, "exclude": "the user's history",
                             "settings": recs.model_dump(mode="json"), "blender": {"weights": blender.weights,
                             "bias": blender.bias, "fitted_on": blender.fitted_on}},
            },
            "seconds": {**seconds, "total": time.monotonic() - started},
            "training": training,
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
