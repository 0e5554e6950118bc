"""The offline evaluation report: every method ranks the whole catalog on every row of an
evaluation file, and the report says how well, for whom, and whether the differences are real.

The protocol is the quality benchmark's (:mod:`trainer.offline.sequence_eval`): methods fit on
the histories before the file's targets; the scorer's epoch count is chosen on the held-back
split, never on the file. Accuracy (NDCG@10/20, HR@10/20, MRR@20, history removed) comes from
the target ranks through the same per-row functions the benchmark and the trainer's gate use;
the beyond-accuracy figures from each row's top 10 (:mod:`trainer.offline.beyond_accuracy`).
Every method is compared with the best baseline (the highest NDCG@10 of popularity,
co-visitation and text similarity) row by row (:mod:`trainer.offline.significance`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from streamrec.datasets.sequences import Example
from trainer.offline.beyond_accuracy import BEYOND_ACCURACY, beyond_accuracy, item_counts, top_lists
from trainer.offline.segments import SEGMENT_ORDER, segment_labels
from trainer.offline.sequence_eval import ROW_METRICS, Protocol, target_ranks
from trainer.offline.significance import holm, mean_interval, paired

Say = Callable[[str], None]
BASELINES = ("popularity", "covisit", "text_similarity")
METHODS = (*BASELINES, "scorer")
LIST_K = 10  # the beyond-accuracy figures judge each row's top 10
ACCURACY = tuple(ROW_METRICS)
RANK_BINS = (1, 2, 4, 11, 21, 51, 101, 501)  # lower edges: 1, 2-3, 4-10, 11-20, 21-50, 51-100, 101-500, 501+


@dataclass
class MethodResult:
    name: str
    ranks: np.ndarray  # 1-based target rank per row, history removed (inf: the target was in it)
    per_row: dict[str, np.ndarray]  # metric -> value per row
    summary: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)


def baseline_scores(name: str, protocol: Protocol, text) -> np.ndarray:
    """(rows, items) full-catalog scores of a baseline (one of :data:`BASELINES`) for the evaluation rows."""
    import torch

    from streamrec.model.sequence import CPU_CONFIG, SequenceRecommender, recent_items
    from trainer.offline.baselines import CoVisitation, Popularity

    split = protocol.evaluation
    histories = [row.history for row in split.rows]
    n_items = text.shape[0]
    if name == "popularity":
        return np.broadcast_to(Popularity(split.fit_sequences, n_items).scores(), (len(histories), n_items))
    if name == "covisit":
        covisit = CoVisitation(split.fit_sequences, n_items)
        return np.stack([covisit.scores(history) for history in histories])
    if name == "text_similarity":
        model = SequenceRecommender(replace(CPU_CONFIG, signals=("text_recent",)), text)
        with torch.no_grad():
            return model.signals(recent_items(histories, CPU_CONFIG.recent))[:, 0].numpy()
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def score_method(name: str, protocol: Protocol, text, *, scorer_epochs: int | None, max_epochs: int, seed: int,
                 say: Say) -> tuple[np.ndarray, dict[str, object]]:
    """(rows, items) full-catalog scores of one method for the evaluation rows, and what it chose."""
    import torch

    from streamrec.model.sequence import CPU_CONFIG
    from trainer.offline.sequence_train import MODEL_TRAIN, select_epochs, train_model

    if name in BASELINES:
        return baseline_scores(name, protocol, text), {}
    split = protocol.evaluation
    histories = [row.history for row in split.rows]
    if name == "scorer":
        train = replace(MODEL_TRAIN, seed=seed, max_epochs=max_epochs, patience=4)
        notes: dict[str, object] = {"config": "CPU_CONFIG", "seed": seed}
        if scorer_epochs is None:
            say("scorer: choosing the epoch count on the held-back split (never on the evaluation file) …")
            chosen = select_epochs(protocol.selection, text, CPU_CONFIG, train, say=say)
            scorer_epochs = max(chosen.best_epoch or 1, 1)
            notes["heldback_ndcg10"] = chosen.best_selection_ndcg10
        notes["epochs"] = scorer_epochs
        started = time.monotonic()
        model, _ = train_model(split.fit_sequences, text, CPU_CONFIG, train, epochs=scorer_epochs, say=say)
        notes["fit_s"] = round(time.monotonic() - started, 1)
        with torch.no_grad():
            return model.score(histories).float().numpy(), notes
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


def judge(name: str, scores: np.ndarray, rows: Sequence[Example], counts: np.ndarray, text: np.ndarray,
          *, k: int = LIST_K) -> MethodResult:
    """Per-row accuracy and beyond-accuracy values of one method's scores, and their means."""
    ranks = target_ranks(scores, rows, remove_history=True)
    per_row = {metric: function(ranks) for metric, function in ROW_METRICS.items()}
    extra, extra_rows = beyond_accuracy(top_lists(scores, rows, k), counts, text)
    per_row.update(extra_rows)
    summary = {metric: float(values.mean()) for metric, values in per_row.items()}
    summary["coverage"] = extra["coverage"]
    return MethodResult(name, ranks, per_row, summary)


def rank_distribution(ranks: np.ndarray) -> dict[str, float]:
    """Share of rows whose target landed in each rank band (``removed``: it was in the history)."""
    finite = ranks[np.isfinite(ranks)]
    edges = [*RANK_BINS, np.inf]
    bands = {}
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        label = f"{int(low)}" if high == low + 1 else (f"{int(low)}+" if high == np.inf else f"{int(low)}-{int(high) - 1}")
        bands[label] = np.count_nonzero((finite >= low) & (finite < high)) / max(len(ranks), 1)
    bands["removed"] = float(np.mean(~np.isfinite(ranks))) if len(ranks) else 0.0
    return bands


def build_report(protocol: Protocol, text: np.ndarray, returning_users: set[str], *, methods: Sequence[str] = METHODS,
                 scorer_epochs: int | None = None, max_epochs: int = 30, seed: int = 0, resamples: int = 2000,
                 row_limit: int | None = None, say: Say = lambda message: None) -> dict:
    """Everything the HTML and JSON report show, as plain data."""
    import torch

    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    if row_limit is not None:
        protocol = replace(protocol, evaluation=replace(protocol.evaluation, rows=protocol.evaluation.rows[:row_limit]))
    rows = protocol.evaluation.rows
    n_items = text.shape[0]
    counts = item_counts(protocol.evaluation.fit_sequences, n_items)
    text_np = text.numpy() if isinstance(text, torch.Tensor) else np.asarray(text)
    text_t = torch.as_tensor(text_np)
    results: dict[str, MethodResult] = {}
    for name in methods:
        started = time.monotonic()
        scores, notes = score_method(name, protocol, text_t, scorer_epochs=scorer_epochs, max_epochs=max_epochs,
                                     seed=seed, say=say)
        result = judge(name, np.asarray(scores), rows, counts, text_np)
        result.notes = {**notes, "seconds": round(time.monotonic() - started, 1)}
        result.intervals = {metric: mean_interval(result.per_row[metric], resamples=resamples, seed=seed)
                            for metric in ("ndcg10", "hr10", "mrr20")}
        results[name] = result
        low, high = result.intervals["ndcg10"]
        say(f"{name}: NDCG@10 {result.summary['ndcg10']:.4f} [{low:.4f}, {high:.4f}]  "
            f"coverage {result.summary['coverage']:.3f}  ({result.notes['seconds']:.0f} s)")

    baselines = [name for name in BASELINES if name in results]
    best = max(baselines or results, key=lambda name: results[name].summary["ndcg10"])
    comparisons: dict[str, dict[str, dict]] = {}
    for name, result in results.items():
        if name == best:
            continue
        comparisons[name] = {metric: paired(result.per_row[metric], results[best].per_row[metric], resamples=resamples,
                                            seed=seed).to_dict()
                             for metric in ("ndcg10", "hr10", "mrr20")}
    adjusted = holm({name: values["ndcg10"]["p_value"] for name, values in comparisons.items()})
    for name, p_value in adjusted.items():
        comparisons[name]["ndcg10"]["p_value_holm"] = p_value

    labels = segment_labels(rows, returning_users, counts)
    segments: dict[str, dict[str, dict]] = {}
    for grouping, order in SEGMENT_ORDER.items():
        segments[grouping] = {}
        for bucket in order:
            mask = labels[grouping] == bucket
            if not mask.any():
                continue
            entry: dict[str, object] = {"rows": int(mask.sum())}
            for name, result in results.items():
                entry[name] = {metric: float(result.per_row[metric][mask].mean())
                               for metric in ("ndcg10", "hr10", "diversity", "novelty", "popularity_bias")}
            if best in results:
                for name, result in results.items():
                    if name != best and mask.sum() >= 2:
                        entry[name]["vs_best_baseline"] = paired(result.per_row["ndcg10"][mask],
                                                                 results[best].per_row["ndcg10"][mask],
                                                                 resamples=min(resamples, 1000), seed=seed).to_dict()
            segments[grouping][bucket] = entry

    return {
        "rows": len(rows),
        "items": n_items,
        "fit_sequences": len(protocol.evaluation.fit_sequences),
        "list_k": LIST_K,
        "best_baseline": best,
        "methods": {name: {"summary": result.summary, "intervals": result.intervals, "notes": result.notes,
                           "rank_distribution": rank_distribution(result.ranks)}
                    for name, result in results.items()},
        "comparisons": comparisons,
        "segments": segments,
        "metrics_order": [*ACCURACY, *BEYOND_ACCURACY],
    }


def flat_metrics(report: dict) -> dict[str, float]:
    """``<metric>_<method>`` and ``<method>_over_best_baseline`` (NDCG@10): the JSON's headline figures."""
    out: dict[str, float] = {}
    for name, method in report["methods"].items():
        for metric, value in method["summary"].items():
            out[f"{metric}_{name}"] = value
    best = report["methods"][report["best_baseline"]]["summary"]["ndcg10"]
    for name, method in report["methods"].items():
        if best:
            out[f"{name}_over_best_baseline"] = method["summary"]["ndcg10"] / best
    for name, comparison in report["comparisons"].items():
        out[f"p_value_ndcg10_{name}"] = comparison["ndcg10"]["p_value"]
    return out


def default_output(root: Path) -> Path:
    return root / "reports" / "offline"
