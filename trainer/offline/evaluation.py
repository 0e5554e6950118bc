"""Ranking metrics for next-item prediction: HR@k, NDCG@k and MRR@k over the whole catalog.

Written here rather than taken from ``ranx``: with one relevant item per row each is one line of
the target's rank, and ranx pulls pandas 3, which needs numpy 2 where ``nvidia-pytriton`` pins
numpy below 2. The tests check them against values worked out by hand.

One relevant item per row (the item that came next). Every method ranks all items; items the
user already has are excluded (the shop does not recommend them again; a target that is in its
own history therefore counts as a miss, identically for every method). Ties are broken by one
fixed random order of the items, the same for every method, so no method profits from ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


def tiebreak_order(n_items: int, seed: int = 0) -> np.ndarray:
    """A fixed random priority per item (lower wins a tie)."""
    return np.random.default_rng(seed).permutation(n_items)


def target_rank(scores: np.ndarray, target: int, exclude: Iterable[int], tiebreak: np.ndarray) -> float:
    """1-based rank of ``target`` among all items (``inf`` when it is excluded)."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    excluded = np.fromiter(exclude, dtype=np.int64)
    if excluded.size and np.isin(target, excluded):
        return float("inf")
    if excluded.size:
        scores[excluded] = -np.inf
    value = scores[target]
    ahead = np.count_nonzero(scores > value)
    ties = np.count_nonzero((scores == value) & (tiebreak < tiebreak[target]))
    return float(1 + ahead + ties)


@dataclass
class RankingMetrics:
    """Accumulates ranks; ``summary()`` gives hr10, ndcg10 and mrr20 (means over rows)."""

    ranks: list[float] = field(default_factory=list)

    def add(self, rank: float) -> None:
        self.ranks.append(rank)

    def extend(self, ranks: Sequence[float]) -> None:
        self.ranks.extend(ranks)

    def summary(self) -> dict[str, float]:
        return summarise(self.ranks)


def row_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of each row from its target's 1-based rank (one relevant item: the ideal DCG is 1;
    ``inf``, a removed target, scores 0)."""
    r = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def row_ndcg10(ranks: np.ndarray) -> np.ndarray:
    """NDCG@10 of each row (what selection, the gate and the paired tests compare)."""
    return row_ndcg(ranks, 10)


def row_hit(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the target is in the top ``k``."""
    return (np.asarray(ranks, dtype=np.float64) <= k).astype(np.float64)


def row_reciprocal_rank(ranks: np.ndarray, k: int = 20) -> np.ndarray:
    """1 / rank within the top ``k``, else 0 (MRR@k is its mean)."""
    r = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(r <= k, 1.0 / r, 0.0)


ROW_METRICS = {
    "ndcg10": lambda r: row_ndcg(r, 10),
    "ndcg20": lambda r: row_ndcg(r, 20),
    "hr10": lambda r: row_hit(r, 10),
    "hr20": lambda r: row_hit(r, 20),
    "mrr20": lambda r: row_reciprocal_rank(r, 20),
}
"""Per-row accuracy metrics by name, from 1-based target ranks: the benchmark, the trainer's gate
and the offline report all read these."""


def summarise(ranks: Sequence[float]) -> dict[str, float]:
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {"hr10": 0.0, "ndcg10": 0.0, "mrr20": 0.0, "users": 0}
    return {**{name: float(np.mean(ROW_METRICS[name](r))) for name in ("hr10", "ndcg10", "mrr20")}, "users": int(r.size)}


def rerank(first_stage: np.ndarray, candidates: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """Full-catalog scores after re-ranking ``candidates`` (the first stage's top) by a second stage.

    The re-ranked candidates come first, in second-stage order; every other item keeps its
    first-stage order behind them.
    """
    out = np.asarray(first_stage, dtype=np.float64).copy()
    finite = np.isfinite(out)  # excluded items may be -inf and stay so
    if finite.any():
        out[finite] -= out[finite].min()  # every kept item >= 0 ...
    top = (out[finite].max() if finite.any() else 0.0) + 1.0
    cs = np.asarray(candidate_scores, dtype=np.float64)
    if cs.size:
        out[candidates] = top + cs - cs.min()  # ... so the re-ranked candidates stay on top
    return out
