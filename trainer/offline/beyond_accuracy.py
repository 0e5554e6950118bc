"""What a list is besides right or wrong: how much of the catalog the lists reach, how varied and
how surprising each list is, and how far it leans on what is already popular.

Computed on the very lists the accuracy metrics judge: each row's top ``k`` over the whole
catalog with the user's history removed and ties broken by the same fixed item order as
:func:`trainer.offline.sequence_eval.target_ranks`, so a target at rank r <= k sits at position
r - 1 of its row's list.

Definitions (per row, then means over rows, except coverage):

- ``coverage``: share of the catalog that appears in at least one list.
- ``diversity`` (intra-list diversity): mean of 1 - cosine over the list's item pairs, with the
  item text embeddings (MiniLM), so two colours of one filament are near, a pipette and a
  microscope far.
- ``novelty``: mean self-information ``-log2 p(i)`` of the listed items, ``p`` the item's share
  of the fit events with add-one smoothing (Zhou et al. 2010); higher is less obvious.
- ``popularity_bias``: mean popularity percentile of the listed items (0 the least, 1 the most
  popular item of the fit events); popularity alone scores near 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.datasets.sequences import Example
from trainer.offline.evaluation import tiebreak_order

BEYOND_ACCURACY = ("coverage", "diversity", "novelty", "popularity_bias")


def top_lists(scores: np.ndarray, rows: Sequence[Example], k: int, *, seed: int = 0) -> np.ndarray:
    """(rows, k) item indices: each row's best ``k`` with its history removed, ties by the fixed order."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    for r, row in enumerate(rows):
        if row.history:
            scores[r, np.fromiter(row.history, dtype=np.int64)] = -np.inf
    tiebreak = tiebreak_order(scores.shape[1], seed)
    k = min(k, scores.shape[1])
    # Lexicographic (score desc, tiebreak asc) per row: argsort on the tiebreak order first, then a
    # stable sort by score keeps that order among equal scores.
    by_tie = np.argsort(tiebreak)
    ordered = by_tie[np.argsort(-scores[:, by_tie], axis=1, kind="stable")[:, :k]]
    return ordered


def item_counts(fit_sequences: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """How often each item occurs in the sequences the methods fit on."""
    flat = [item for sequence in fit_sequences for item in sequence]
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=n_items).astype(np.float64)


def row_diversity(lists: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Per row: mean 1 - cosine over the pairs of its list (unit ``text`` rows)."""
    vectors = text[lists]  # (rows, k, dim)
    k = lists.shape[1]
    if k < 2:
        return np.zeros(len(lists))
    cosine = np.einsum("rkd,rjd->rkj", vectors, vectors)
    upper = np.triu_indices(k, 1)
    return 1.0 - cosine[:, upper[0], upper[1]].mean(axis=1)


def row_novelty(lists: np.ndarray, counts: np.ndarray) -> np.ndarray:
    share = (counts + 1.0) / (counts.sum() + len(counts))
    return (-np.log2(share))[lists].mean(axis=1)


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile in [0, 1]; tied counts share their mean rank."""
    from scipy.stats import rankdata

    if len(counts) < 2:
        return np.zeros(len(counts))
    return (rankdata(counts, method="average") - 1.0) / (len(counts) - 1.0)


def row_popularity_bias(lists: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return popularity_percentiles(counts)[lists].mean(axis=1)


def coverage(lists: np.ndarray, n_items: int) -> float:
    return float(np.unique(lists).size / n_items) if n_items else 0.0


def beyond_accuracy(lists: np.ndarray, counts: np.ndarray, text: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The four figures, and the per-row values of the three that have one (for segments and CIs)."""
    per_row = {
        "diversity": row_diversity(lists, text),
        "novelty": row_novelty(lists, counts),
        "popularity_bias": row_popularity_bias(lists, counts),
    }
    summary = {"coverage": coverage(lists, len(counts)), **{name: float(values.mean()) for name, values in per_row.items()}}
    return summary, per_row
