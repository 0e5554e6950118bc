"""How many candidates per user the scorer re-ranks in a worker batch: adapted to its throughput.

Why: the scorer's throughput is fixed by the hardware (about 1,000 student pairs/s on two CPU
cores, tens of thousands on a GPU), while the update rate is set by shoppers. With a fixed depth,
a burst makes batches grow, scorer calls miss their budget and every list in the batch falls
back to the signals' order (degraded) — later, not fresher. Instead each batch re-ranks
``throughput x target / users`` candidates per user (between ``min_depth`` and ``max_depth``), so
a batch's scoring takes about ``target_s`` and every list stays BERT-ranked at its head. The
throughput is an exponentially weighted estimate from the batches' own scorer calls; a call that
misses the budget halves it (multiplicative decrease, as in congestion control).
"""

from __future__ import annotations

import math


class AdaptiveDepth:
    def __init__(self, max_depth: int, min_depth: int, target_s: float, smoothing: float = 0.3) -> None:
        if max_depth < 0 or min_depth < 0 or target_s <= 0 or not 0 < smoothing <= 1:
            raise ValueError("depths must be ≥ 0, the target > 0 and the smoothing in (0, 1]")
        self.max_depth = max_depth
        self.min_depth = min(min_depth, max_depth)
        self.target_s = target_s
        self.smoothing = smoothing
        self.pairs_per_s: float | None = None  # unknown until the first scored batch

    def for_batch(self, users: int) -> int:
        """Per-user depth for a batch of ``users`` lists (the full depth until a rate is known)."""
        if self.pairs_per_s is None or users <= 0:
            return self.max_depth
        fitting = math.floor(self.pairs_per_s * self.target_s / users)
        return max(self.min_depth, min(self.max_depth, fitting))

    def observe(self, pairs: int, seconds: float) -> None:
        """A batch scored ``pairs`` pairs in ``seconds`` (wall time of its coalesced calls)."""
        if pairs <= 0 or seconds <= 0:
            return
        rate = pairs / seconds
        if self.pairs_per_s is None:
            self.pairs_per_s = rate
        else:
            self.pairs_per_s += self.smoothing * (rate - self.pairs_per_s)

    def over_budget(self) -> None:
        """A scorer call missed its budget: assume half the throughput until batches show more."""
        if self.pairs_per_s is not None:
            self.pairs_per_s /= 2
