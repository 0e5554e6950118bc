"""The gate: a challenger is published only if it ranks the newest events at least about as well as the champion.

Both models rank the whole catalog for every held-out row (the newest slice by time, never
trained on), with the user's history removed, as the shop shows it
(:func:`trainer.offline.sequence_eval.target_ranks`); no sampled negatives, so a model cannot
look good by beating easy ones. The figure is NDCG@10 per row. The two models answer the same
rows, so the decision reads their paired difference: the challenger passes when its mean is at
least the champion's minus ``se_multiple`` standard errors of that difference (one SE: a
challenger that is only noise-level worse is not refused, one that is clearly worse is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from streamrec.datasets.sequences import Example
from streamrec.model.served_sequence import ServedSequence
from trainer.incremental.sequences import HeldOut, paired_ndcg
from trainer.offline.sequence_eval import row_ndcg10, target_ranks


def row_figures(served: ServedSequence, rows: Sequence[HeldOut]) -> np.ndarray:
    """Per-row NDCG@10 (history removed, whole catalog); a row whose scores are not finite counts 0."""
    if not rows:
        return np.zeros(0)
    histories = [list(row.history) for row in rows]
    scores = served.scores(histories).numpy().astype(np.float64)
    examples = [Example(row.user, tuple(served.position[item] for item in row.history if item in served.position),
                        served.position[row.target]) for row in rows]
    broken = ~np.isfinite(scores).all(axis=1)
    scores[broken] = 0.0  # all tied: ranked behind every item by the fixed tie-break order
    figures = row_ndcg10(target_ranks(scores, examples, remove_history=True))
    figures[broken] = 0.0
    return figures


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    challenger: float
    """Mean NDCG@10 of the challenger on the held-out rows."""
    champion: float
    se: float
    """Standard error of the mean per-row difference (challenger - champion)."""
    tolerance: float
    rows: int
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "metric": "ndcg10", "reasons": list(self.reasons)}


def decide(challenger: np.ndarray, champion: np.ndarray, se_multiple: float) -> GateDecision:
    """Pass when mean(challenger) >= mean(champion) - ``se_multiple`` * SE of the paired difference."""
    stats = paired_ndcg(challenger, champion)
    tolerance = se_multiple * stats["se"]
    reasons = []
    if not stats["rows"]:
        reasons.append("no held-out rows")
    elif stats["challenger"] < stats["champion"] - tolerance:
        reasons.append(f"ndcg10 {stats['challenger']:.4f} < champion {stats['champion']:.4f} - {tolerance:.4f} "
                       f"({se_multiple:g} SE)")
    return GateDecision(not reasons, stats["challenger"], stats["champion"], stats["se"], tolerance, stats["rows"],
                        tuple(reasons))
