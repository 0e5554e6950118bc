"""Which rows a method wins on: evaluation rows grouped by what the user and the target are like.

Three groupings, each a label per row:

- ``history``: the length of the user's history before the target (1, 2–3, 4–7, 8+): sequence
  models should gain most on long histories, co-visitation on short ones.
- ``user``: ``returning`` when the user has a sequence in the training file (the models have seen
  them), ``new`` when the evaluation row is all that is known of them.
- ``target``: how popular the item that came next is in the fit events: ``head`` (the most
  popular items that together make up the first 20 % of item slots by count), ``tail`` (the
  rest that occur at all) and ``cold`` (never seen in a fit sequence: only text can find it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from streamrec.datasets.sequences import Example

HISTORY_BUCKETS = ((1, 1, "1"), (2, 3, "2-3"), (4, 7, "4-7"), (8, None, "8+"))
HEAD_SHARE = 0.2
SEGMENT_ORDER = {
    "history": [label for _, _, label in HISTORY_BUCKETS],
    "user": ["new", "returning"],
    "target": ["head", "tail", "cold"],
}


def history_bucket(length: int) -> str:
    for low, high, label in HISTORY_BUCKETS:
        if length >= low and (high is None or length <= high):
            return label
    return HISTORY_BUCKETS[0][2]  # an empty history (never in these files) reads as the shortest


def target_buckets(counts: np.ndarray) -> np.ndarray:
    """Per item: ``head``, ``tail`` or ``cold`` from its count in the fit events."""
    labels = np.full(len(counts), "tail", dtype=object)
    labels[counts == 0] = "cold"
    seen = np.flatnonzero(counts > 0)
    head_size = max(1, int(round(HEAD_SHARE * len(seen)))) if len(seen) else 0
    head = seen[np.argsort(-counts[seen], kind="stable")[:head_size]]
    labels[head] = "head"
    return labels


def segment_labels(rows: Sequence[Example], returning_users: Collection[str], counts: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """grouping name -> one label per row."""
    by_item = target_buckets(counts)
    return {
        "history": np.array([history_bucket(len(row.history)) for row in rows], dtype=object),
        "user": np.array(["returning" if row.user in returning_users else "new" for row in rows], dtype=object),
        "target": np.array([by_item[row.target] for row in rows], dtype=object),
    }
