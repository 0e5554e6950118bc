"""Diversity re-rank: maximal marginal relevance over category and embedding.

Each step picks the item with the best ``λ · relevance − (1 − λ) · redundancy``, where
redundancy is its highest similarity to an item already picked and the similarity of two
items is the mean of their embedding cosine and "same category" (0 or 1). So a list does
not fill up with near-copies of one product while the best item still comes first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr(
    relevance: np.ndarray, vectors: np.ndarray, categories: Sequence[str | None], k: int, lam: float
) -> list[int]:
    """Positions into ``relevance`` in the diversified order, ``k`` of them at most."""
    count = len(relevance)
    k = min(k, count)
    if k == 0:
        return []
    spread = float(relevance.max() - relevance.min())
    rel = (relevance - relevance.min()) / spread if spread > 0 else np.ones(count)
    if lam >= 1.0:
        return list(np.argsort(-rel, kind="stable")[:k])
    codes = {name: code for code, name in enumerate(dict.fromkeys(c for c in categories if c is not None))}
    category = np.array([codes.get(c, -1 - i) for i, c in enumerate(categories)])  # None never matches
    # All pairwise similarities at once: one matrix product instead of one per pick.
    similarity = 0.5 * (vectors @ vectors.T) + 0.5 * (category[:, None] == category[None, :])
    chosen: list[int] = []
    redundancy = np.full(count, -np.inf)
    available = np.ones(count, bool)
    for _ in range(k):
        gain = lam * rel - (1 - lam) * np.where(np.isfinite(redundancy), redundancy, 0.0)
        gain[~available] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        redundancy = np.maximum(redundancy, similarity[pick])
    return chosen
