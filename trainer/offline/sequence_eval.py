"""The protocol every sequence method is judged by: what it may learn from, what it is scored on.

An evaluation file F holds one row per user: the history (oldest first) and the item that came
next. A method may learn only from what precedes F's targets:

* ``fit_sequences`` — per user, F's history when the user has an F row (the training file's
  rows are prefixes of the same sequence, so they add nothing and can never hold F's target),
  else the user's longest training sequence. A training sequence that is not a prefix of the
  F history is refused: it would mean the two files disagree about the order of events.
* ``selection`` — the held-back split for model selection and early stopping: the last item of
  every fit sequence (of two items or more) is held back, the methods fit on the rest. F's rows
  are never used for any choice.

Every method ranks the whole catalog for every row (no sampled candidates). The headline is
NDCG@10 with the user's history removed (what the shop shows: nothing the user already has;
a target inside its own history then counts as a miss, identically for every method); NDCG@10
over all items, HR@10 and MRR@20 are reported beside it. Ties are broken by one fixed random
order of the items (``trainer.offline.evaluation.tiebreak_order``), so no method profits from
ties, such as popularity's among cold items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.datasets.sequences import Example
from trainer.offline.evaluation import ROW_METRICS, row_ndcg10, tiebreak_order

__all__ = ["ROW_METRICS", "row_ndcg10"]  # the gate and the report read them from here too


@dataclass(frozen=True)
class Split:
    """Sequences a method fits on and the rows (history -> next item) it is scored on."""

    fit_sequences: tuple[tuple[int, ...], ...]
    rows: tuple[Example, ...]


@dataclass(frozen=True)
class Protocol:
    evaluation: Split
    """Fit on every history before the evaluation file's targets; score on the file's rows."""
    selection: Split
    """The same sequences with each one's last item held back: for choices and early stopping."""


def build_protocol(train: Sequence[Example], evaluation: Sequence[Example]) -> Protocol:
    longest: dict[str, tuple[int, ...]] = {}
    for example in train:
        sequence = (*example.history, example.target)
        if len(sequence) > len(longest.get(example.user, ())):
            longest[example.user] = sequence
    evaluated = {row.user: row for row in evaluation}
    if len(evaluated) != len(evaluation):
        raise ValueError("the evaluation file has more than one row for some user")
    fit: list[tuple[int, ...]] = []
    for user, row in evaluated.items():
        known = longest.get(user, ())
        if known != row.history[: len(known)]:
            raise ValueError(f"user {user}: the training sequence is not a prefix of the evaluation history")
        fit.append(row.history)
    fit.extend(sequence for user, sequence in longest.items() if user not in evaluated)
    fit = [sequence for sequence in fit if sequence]
    held_rows = tuple(
        Example(f"held-{n}", sequence[:-1], sequence[-1]) for n, sequence in enumerate(fit) if len(sequence) >= 2
    )
    held_fit = tuple(sequence[:-1] if len(sequence) >= 2 else sequence for sequence in fit)
    return Protocol(
        evaluation=Split(fit_sequences=tuple(fit), rows=tuple(evaluation)),
        selection=Split(fit_sequences=held_fit, rows=held_rows),
    )


def target_ranks(scores: np.ndarray, rows: Sequence[Example], *, remove_history: bool, seed: int = 0) -> np.ndarray:
    """1-based rank of each row's target among all items (``inf`` for a removed target)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_rows, n_items = scores.shape
    tiebreak = tiebreak_order(n_items, seed)
    targets = np.fromiter((row.target for row in rows), dtype=np.int64, count=n_rows)
    removed = np.zeros(n_rows, dtype=bool)
    if remove_history:
        for r, row in enumerate(rows):
            if row.history:
                history = np.fromiter(row.history, dtype=np.int64)
                removed[r] = bool(np.isin(row.target, history))
                scores[r, history] = -np.inf
    value = scores[np.arange(n_rows), targets][:, None]
    ahead = np.count_nonzero(scores > value, axis=1)
    ties = np.count_nonzero((scores == value) & (tiebreak[None, :] < tiebreak[targets][:, None]), axis=1)
    ranks = (1 + ahead + ties).astype(np.float64)
    ranks[removed] = np.inf
    return ranks


def metrics(ranks: np.ndarray) -> dict[str, float]:
    """HR@10, NDCG@10 and MRR@20 (means over rows) of 1-based ranks."""
    return {name: float(np.mean(ROW_METRICS[name](ranks))) for name in ("hr10", "ndcg10", "mrr20")}


def evaluate(scores: np.ndarray, rows: Sequence[Example]) -> dict[str, float]:
    """The headline metrics with the history removed, and NDCG@10 / HR@10 / MRR@20 over all items."""
    removed = metrics(target_ranks(scores, rows, remove_history=True))
    kept = metrics(target_ranks(scores, rows, remove_history=False))
    return {**removed, **{f"{name}_all": value for name, value in kept.items()}}


def ndcg10(scores: np.ndarray, rows: Sequence[Example]) -> float:
    """NDCG@10, history removed: the number model selection and early stopping read."""
    return metrics(target_ranks(scores, rows, remove_history=True))["ndcg10"]
