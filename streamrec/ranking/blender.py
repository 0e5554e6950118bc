"""The blend of the BERT score with the candidate signals: a logistic model over a few features.

Features (one row per candidate, see :func:`features`):

- ``scorer``: the sequence model's score, standardised within the user's candidates (a
  candidate the model does not know gets the list's lowest; 0 for every candidate when the
  scorer is unavailable);
- ``covisit``: log(1 + recency-weighted co-visitation weight);
- ``similarity``: cosine between the item and the profile vector;
- ``popularity``: position in the short-term popularity list (1 = most popular, 0 = absent);
- ``affinity``: the user's affinity for the item's category, relative to their strongest;
- ``recency``: recency of the history item behind the co-visit (1 = the newest).

The weights are fitted on logged data (a user's history → the item they chose next, among
the candidates this pipeline produced; see :func:`fit` and ``streamrec trainer fit-blender``)
and stored as JSON. The packaged file holds weights fitted on held-back Amazon Scientific rows
with a sequence scorer trained without them; ``STREAMREC_RECS__BLENDER_WEIGHTS`` points at
another fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.ranking.candidates import Candidate

FEATURES = ("scorer", "covisit", "similarity", "popularity", "affinity", "recency")
PACKAGED_WEIGHTS = Path(__file__).with_name("blender_weights.json")


def features(candidates: Sequence[Candidate], scorer: np.ndarray | None = None) -> np.ndarray:
    """Feature matrix in :data:`FEATURES` order; ``scorer`` holds standardised logits or None."""
    rows = np.zeros((len(candidates), len(FEATURES)), np.float32)
    if candidates:
        signals = np.array([(c.covisit, c.similarity, c.popularity, c.affinity, c.recency) for c in candidates], np.float64)
        signals[:, 0] = np.log1p(signals[:, 0])
        rows[:, 1:] = signals
    if scorer is not None:
        rows[:, 0] = scorer
    return rows


def standardise(logits: np.ndarray) -> np.ndarray:
    """Logits as z-scores within one user's list (the scale of raw logits drifts across versions)."""
    if logits.size == 0:
        return logits
    spread = float(logits.std())
    return (logits - logits.mean()) / (spread if spread > 1e-6 else 1.0)


@dataclass(frozen=True)
class Blender:
    weights: dict[str, float]
    bias: float = 0.0
    fitted_on: dict[str, object] = field(default_factory=dict)

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.weights.get(name, 0.0) for name in FEATURES], np.float32)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return rows @ self.vector + self.bias

    def contributions(self, row: np.ndarray) -> dict[str, float]:
        """Each feature's part of one candidate's score (what the explanation names)."""
        return {name: float(value) for name, value in zip(FEATURES, row * self.vector, strict=True)}

    @classmethod
    def load(cls, path: Path | None = None) -> Blender:
        data = json.loads((path or PACKAGED_WEIGHTS).read_text())
        unknown = set(data["weights"]) - set(FEATURES)
        if unknown:
            raise ValueError(f"{path}: unknown blender features {sorted(unknown)}")
        return cls(weights=data["weights"], bias=data.get("bias", 0.0), fitted_on=data.get("fitted_on", {}))

    def save(self, path: Path) -> None:
        payload = {"features": list(FEATURES), "weights": self.weights, "bias": self.bias, "fitted_on": self.fitted_on}
        path.write_text(json.dumps(payload, indent=2) + "\n")


def fit(
    rows: np.ndarray, labels: np.ndarray, *, l2: float = 1e-2, steps: int = 50, fitted_on: dict[str, object] | None = None
) -> Blender:
    """L2-regularised logistic regression by Newton's method (few features, so exact steps are cheap)."""
    x = np.hstack([rows.astype(np.float64), np.ones((len(rows), 1))])
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = {name: round(float(value), 6) for name, value in zip(FEATURES, w[:-1], strict=True)}
    return Blender(weights=weights, bias=round(float(w[-1]), 6), fitted_on=fitted_on or {})
