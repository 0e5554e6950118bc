"""Recommendation quality: every method ranks the whole catalog on every row of the evaluation file.

    .venv/bin/python benchmarks/quality.py [--quick] [--eval-file F] [--seeds N] [--methods M,...] --json OUT

Protocol (``trainer.offline.sequence_eval``): every method fits only on the histories in the
evaluation file F (default ``Scientific.valid.inter``; any later split of the same format works)
plus the training file's sequences of users F does not have: never on F's targets. Model
selection uses the held-back last item of each of those sequences: neural methods choose their
epoch count there (one run, seed 0), then each seed trains on the full sequences for that many
epochs. Nothing is selected or early-stopped on F.

Methods (JSON keys ``<metric>_<method>``; metrics ``ndcg10``, ``hr10``, ``mrr20`` with the
history removed, the same with ``_all`` over all items; neural rows are means over seeds, with
``ndcg10_<method>_std``; ``heldback_ndcg10_<method>`` is the selection score):

- ``popularity``, ``covisit`` (``trainer.offline.baselines``), ``text_similarity`` (MiniLM cosine
  of each item with the recency-weighted mean of the newest five history items);
- ``sasrec_id`` — plain ID-only SASRec, full softmax (``ID_ONLY_CONFIG``), the reference;
- ``scorer`` — the sequence BERT as served (``CPU_CONFIG``); ``scorer_ensemble`` averages the
  log-softmax of its seeds' networks (``sasrec_id_ensemble`` likewise);
- ``scorer_int8`` — the same networks with int8 dynamic quantisation of their linear layers
  (compression: ``details.scorer_int8.kept`` is the share of NDCG@10 kept);
- ``pipeline`` — serving's own recommender code (``trainer.offline.pipeline_eval``): candidates
  from the signals and the scorer's top 100, the blend fitted on the held-back rows with a scorer
  trained without them, diversity, a list of 20; also ``candidates_recall_<source>_pipeline``
  (share of rows whose target that source put among the candidates);
- ablations, only when named in ``--methods``: ``sasrec_text`` (text + ID item vectors, no
  signals), ``scorer_base_signals`` (without the text-smoothed co-visitation and max text
  similarity), ``scorer_no_leave_out`` (co-visitation counts include the training row's own
  user), ``scorer_cloze`` (BERT4Rec masking instead of next-item).

Headlines: ``scorer_over_best_baseline`` (target ≥ 1.2) and ``pipeline_over_best_baseline``
(≥ 1.25), NDCG@10 with the history removed against the best of popularity, covisit and
text_similarity; ``seconds_total`` is the wall time. ``--quick``: one seed, at most 30 epochs,
patience 4. Full mode: 3 seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_json  # noqa: E402
from streamrec.datasets.amazon_pairs import FOLDER, TRAIN_FILE, VALID_FILE, load_catalog, load_examples  # noqa: E402
from streamrec.model.sequence import (  # noqa: E402
    BASE_SIGNALS,
    CPU_CONFIG,
    ID_ONLY_CONFIG,
    Ensemble,
    SequenceConfig,
    SequenceRecommender,
)
from streamrec.settings import REPO_ROOT  # noqa: E402
from trainer.offline.offline_report import baseline_scores  # noqa: E402
from trainer.offline.pipeline_eval import pipeline_rows  # noqa: E402
from trainer.offline.sequence_eval import build_protocol, evaluate  # noqa: E402
from trainer.offline.sequence_train import (  # noqa: E402
    MODEL_TRAIN,
    TrainConfig,
    select_epochs,
    text_vectors,
    train_model,
)

TARGETS = {"scorer_over_best_baseline": 1.2, "pipeline_over_best_baseline": 1.25}
PIPELINE_K = 20
BASELINES = ("popularity", "covisit", "text_similarity")
REQUIRED = ("sasrec_id", "scorer")
NEURAL: dict[str, tuple[SequenceConfig, TrainConfig]] = {
    "sasrec_id": (ID_ONLY_CONFIG, TrainConfig()),  # SASRec's usual lr 1e-3
    "sasrec_text": (replace(CPU_CONFIG, signals=()), MODEL_TRAIN),
    "scorer_base_signals": (replace(CPU_CONFIG, signals=BASE_SIGNALS), MODEL_TRAIN),
    "scorer_no_leave_out": (CPU_CONFIG, replace(MODEL_TRAIN, leave_user_out=False)),
    "scorer_cloze": (replace(CPU_CONFIG, masking="cloze"), MODEL_TRAIN),
    "scorer": (CPU_CONFIG, MODEL_TRAIN),
}
ENSEMBLED = ("sasrec_id", "scorer")
KEYS = ("ndcg10", "hr10", "mrr20", "ndcg10_all", "hr10_all", "mrr20_all")
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")
console = Console(highlight=False, width=150)


def cpu_flags() -> list[str]:
    """The CPU's vector/matrix extensions that decide which precision is fast (fp32 is used here)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in INTERESTING_FLAGS if flag in present]
    except OSError:
        pass
    return []


def quantise_int8(model: SequenceRecommender) -> SequenceRecommender:
    """Dynamic int8 quantisation of the network's linear layers (the attention and feed-forward
    weights); item tables, signals and the catalog product stay fp32."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notices that its quantisation moves to torchao
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--eval-file", type=Path, help="Rows to evaluate (default: Scientific.valid.inter).")
    parser.add_argument("--json", type=Path, help="Write {'metrics': ...} here.")
    parser.add_argument("--quick", action="store_true", help="One seed, required methods, at most 30 epochs.")
    parser.add_argument("--seeds", type=int, help="Seeds per neural method (default 3; --quick 1).")
    parser.add_argument("--methods", help=f"Comma-separated neural methods, ablations included ({','.join(REQUIRED)} "
                                          "always run).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    facts = {**machine(), "cpu_flags": cpu_flags()}
    console.print(f"CPU {facts['cpu']} ({facts['cores']} cores, torch threads {args.threads}); flags: "
                  f"{' '.join(facts['cpu_flags'])}; fp32 throughout")

    folder = args.data_dir / FOLDER
    eval_file = args.eval_file or folder / VALID_FILE
    catalog = load_catalog(args.data_dir)
    protocol = build_protocol(load_examples(folder / TRAIN_FILE), load_examples(eval_file))
    split, selection = protocol.evaluation, protocol.selection
    rows, histories = split.rows, [row.history for row in split.rows]
    n_items = len(catalog)
    console.print(f"{n_items:,} items; fit on {len(split.fit_sequences):,} sequences "
                  f"({sum(map(len, split.fit_sequences)):,} events); {len(rows):,} rows from {eval_file.name}; "
                  f"{len(selection.rows):,} held-back rows for selection")
    text = text_vectors(catalog.texts, REPO_ROOT / ".cache" / "text")

    results: dict[str, dict[str, float]] = {}
    spread: dict[str, float] = {}
    details: dict[str, dict] = {}
    trained: dict[str, list[SequenceRecommender]] = {}

    # -- baselines ---------------------------------------------------------------------------
    for name in BASELINES:  # the offline report's baselines, scored by the same code
        results[name] = evaluate(baseline_scores(name, protocol, text), rows)
        console.print(f"{name}: NDCG@10 {results[name]['ndcg10']:.4f}")

    # -- neural methods ----------------------------------------------------------------------
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    asked = set(args.methods.split(",")) if args.methods else set(REQUIRED)
    unknown = asked - set(NEURAL)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(NEURAL)}")
    methods = tuple(name for name in NEURAL if name in asked | set(REQUIRED))
    for name in methods:
        config, train = NEURAL[name]
        if args.quick:
            train = replace(train, max_epochs=30, patience=4)
        t = time.monotonic()
        chosen = select_epochs(selection, text, config, train, say=console.print)
        select_s = time.monotonic() - t
        epochs = max(chosen.best_epoch or 1, 1)
        runs, members, fit_s = [], [], []
        for seed in seeds:
            t = time.monotonic()
            model, _ = train_model(split.fit_sequences, text, config, replace(train, seed=seed), epochs=epochs)
            fit_s.append(time.monotonic() - t)
            runs.append(evaluate(model.score(histories).numpy(), rows))
            members.append(model)
        results[name] = {key: statistics.fmean(run[key] for run in runs) for key in KEYS}
        spread[name] = statistics.pstdev(run["ndcg10"] for run in runs) if len(runs) > 1 else 0.0
        details[name] = {"heldback_ndcg10": chosen.best_selection_ndcg10, "epochs": epochs, "select_s": select_s,
                         "fit_s": statistics.fmean(fit_s), "seeds_ndcg10": [run["ndcg10"] for run in runs],
                         "config": config.to_dict(), "train": train.to_dict()}
        console.print(f"{name}: NDCG@10 {results[name]['ndcg10']:.4f} ± {spread[name]:.4f} over {len(seeds)} seeds "
                      f"(held-back {chosen.best_selection_ndcg10:.4f} at {epochs} epochs; "
                      f"select {select_s:.0f} s, fit {statistics.fmean(fit_s):.0f} s per seed)")
        trained[name] = members
        if name in ENSEMBLED and len(members) > 1:
            results[f"{name}_ensemble"] = evaluate(Ensemble(members).score(histories).numpy(), rows)
            console.print(f"{name}_ensemble of {len(members)}: NDCG@10 {results[f'{name}_ensemble']['ndcg10']:.4f}")
    if "scorer_cloze" in trained and len(seeds) > 1:
        mixed = Ensemble(trained["scorer"] + trained["scorer_cloze"])
        results["scorer_mixed_ensemble"] = evaluate(mixed.score(histories).numpy(), rows)
        console.print(f"scorer_mixed_ensemble ({len(mixed.members)} networks): "
                      f"NDCG@10 {results['scorer_mixed_ensemble']['ndcg10']:.4f}")

    # -- compression: the scorer with int8 weights in its BERT layers -----------------------------
    quantised = [quantise_int8(model) for model in trained["scorer"]]
    runs = [evaluate(model.score(histories).numpy(), rows) for model in quantised]
    results["scorer_int8"] = {key: statistics.fmean(run[key] for run in runs) for key in KEYS}
    spread["scorer_int8"] = statistics.pstdev(run["ndcg10"] for run in runs) if len(runs) > 1 else 0.0
    details["scorer_int8"] = {"seeds_ndcg10": [run["ndcg10"] for run in runs],
                              "kept": results["scorer_int8"]["ndcg10"] / results["scorer"]["ndcg10"]}
    console.print(f"scorer_int8: NDCG@10 {results['scorer_int8']['ndcg10']:.4f} "
                  f"({details['scorer_int8']['kept']:.3f} of fp32)")

    # -- the served pipeline ------------------------------------------------------------------
    t = time.monotonic()
    held_model, _ = train_model(selection.fit_sequences, text, CPU_CONFIG, MODEL_TRAIN, epochs=details["scorer"]["epochs"])
    blender, pipeline_runs = pipeline_rows(args.data_dir, catalog, text, selection, split, held_model,
                                           trained["scorer"], k=PIPELINE_K, say=console.print)
    results["pipeline"] = {key: statistics.fmean(run[key] for run in pipeline_runs) for key in KEYS}
    spread["pipeline"] = statistics.pstdev(run["ndcg10"] for run in pipeline_runs) if len(pipeline_runs) > 1 else 0.0
    recall_keys = sorted({key for run in pipeline_runs for key in run if key.startswith("candidates_recall_")})
    recall = {f"{key}_pipeline": statistics.fmean(run.get(key, 0.0) for run in pipeline_runs) for key in recall_keys}
    details["pipeline"] = {"recall": recall, "blender": {"weights": blender.weights, "bias": blender.bias, **blender.fitted_on},
                           "seeds_ndcg10": [run["ndcg10"] for run in pipeline_runs], "k": PIPELINE_K,
                           "seconds": time.monotonic() - t}
    console.print(f"pipeline: NDCG@10 {results['pipeline']['ndcg10']:.4f} ± {spread['pipeline']:.4f} "
                  f"({time.monotonic() - t:.0f} s)")

    # -- report ------------------------------------------------------------------------------
    best_baseline = max(BASELINES, key=lambda m: results[m]["ndcg10"])
    metrics: dict[str, float] = {}
    for name, values in results.items():
        for key, value in values.items():
            metrics[f"{key}_{name}"] = value
    for name, value in spread.items():
        metrics[f"ndcg10_{name}_std"] = value
        if "heldback_ndcg10" in details[name]:
            metrics[f"heldback_ndcg10_{name}"] = details[name]["heldback_ndcg10"]
            metrics[f"train_s_{name}"] = details[name]["select_s"] + details[name]["fit_s"]
    best = results[best_baseline]["ndcg10"]
    metrics["scorer_over_best_baseline"] = results["scorer"]["ndcg10"] / best
    metrics["pipeline_over_best_baseline"] = results["pipeline"]["ndcg10"] / best
    metrics["scorer_over_sasrec_id"] = results["scorer"]["ndcg10"] / results["sasrec_id"]["ndcg10"]
    if "scorer_ensemble" in results:
        metrics["scorer_ensemble_over_best_baseline"] = results["scorer_ensemble"]["ndcg10"] / best
    metrics.update(details["pipeline"]["recall"])
    metrics["seconds_total"] = time.monotonic() - started

    table = Table(title=f"{eval_file.name}: all {n_items:,} items ranked on {len(rows):,} rows "
                        f"(neural: mean of {len(seeds)} seed{'s' * (len(seeds) > 1)})")
    for column in ("method", "NDCG@10", "± std", "NDCG@10 all", "HR@10", "MRR@20", "held-back NDCG@10", "epochs", "train s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, values in results.items():
        detail = details.get(name, {})
        table.add_row(
            name, f"{values['ndcg10']:.4f}", f"{spread[name]:.4f}" if name in spread else "",
            f"{values['ndcg10_all']:.4f}", f"{values['hr10']:.4f}", f"{values['mrr20']:.4f}",
            f"{detail['heldback_ndcg10']:.4f}" if "heldback_ndcg10" in detail else "", str(detail.get("epochs", "")),
            f"{detail['select_s'] + detail['fit_s']:.0f}" if "select_s" in detail else "",
        )
    console.print(table)
    for key, target in TARGETS.items():
        verdict = "[green]met[/green]" if metrics[key] >= target else "[red]missed[/red]"
        console.print(f"{key} (best baseline {best_baseline}): {metrics[key]:.3f} (target ≥ {target}) {verdict}")
    console.print(f"scorer / sasrec_id: {metrics['scorer_over_sasrec_id']:.3f}; finished in {metrics['seconds_total']:.0f} s")
    write_json(
        str(args.json) if args.json else None, metrics,
        best_baseline=best_baseline, target=TARGETS,
        config={"eval_file": str(eval_file), "train_file": TRAIN_FILE, "rows": len(rows), "items": n_items,
                "seeds": seeds, "quick": args.quick, "exclude_history": True, "precision": "fp32"},
        methods=details, machine=facts, date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if args.json:
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
