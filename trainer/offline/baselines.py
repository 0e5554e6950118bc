"""Non-BERT rankers counted on training sequences: item popularity and item co-visitation.

They are the baselines the BERT models must beat, and the source of hard negatives for
fine-tuning (popular items and items bought near the positive look like plausible next items,
so the model has to read the text to tell them apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Popularity:
    """Items ranked by how often they occur in the training sequences."""

    def __init__(self, sequences: Sequence[Sequence[int]], n_items: int) -> None:
        counts = np.zeros(n_items, dtype=np.float64)
        for sequence in sequences:
            np.add.at(counts, np.asarray(sequence, dtype=np.int64), 1.0)
        self.counts = counts
        self.ranked = np.argsort(-counts, kind="stable")

    def scores(self, history: Sequence[int] = ()) -> np.ndarray:
        return self.counts.copy()

    def top(self, n: int) -> np.ndarray:
        return self.ranked[:n]


class CoVisitation:
    """Items bought near each other by one user, weighted by how near.

    ``weights[i, j]`` sums ``1 / distance`` over every pair of positions at most ``window`` apart
    in a training sequence; a step backwards (j before i) counts ``backward`` times as much.
    A user's score for item j sums the rows of their recent items, newest weighted most
    (``recency ** age``); ties (most items score 0) are broken by popularity.
    """

    def __init__(
        self,
        sequences: Sequence[Sequence[int]],
        n_items: int,
        *,
        window: int = 3,
        backward: float = 0.5,
        recent: int = 5,
        recency: float = 0.7,
    ) -> None:
        weights = np.zeros((n_items, n_items), dtype=np.float32)
        for sequence in sequences:
            for p, i in enumerate(sequence):
                for q in range(max(0, p - window), min(len(sequence), p + window + 1)):
                    j = sequence[q]
                    if q == p or j == i:
                        continue
                    distance = abs(q - p)
                    weights[i, j] += (1.0 if q > p else backward) / distance
        self.weights = weights
        self.popularity = Popularity(sequences, n_items)
        self._tiebreak = self.popularity.counts / (self.popularity.counts.max() + 1.0) * 1e-3
        self.recent = recent
        self.recency = recency

    def scores(self, history: Sequence[int]) -> np.ndarray:
        total = np.zeros(self.weights.shape[0], dtype=np.float64)
        for age, item in enumerate(reversed(list(history)[-self.recent :])):
            total += self.recency**age * self.weights[item]
        return total + self._tiebreak

    def neighbours(self, item: int, n: int) -> np.ndarray:
        """Items most co-visited with ``item`` (strictly positive weight only)."""
        row = self.weights[item]
        order = np.argsort(-row, kind="stable")[:n]
        return order[row[order] > 0]
