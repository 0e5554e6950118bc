"""Quantiles from Prometheus histogram buckets, computed the way Prometheus computes them.

The data-quality scorecard reads the streams worker's delay histogram and the operations page
reads every process's latency histograms; both must agree with what ``histogram_quantile``
gives in Prometheus and Grafana for the same buckets, so there is one implementation.
"""

from __future__ import annotations

import math


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over (upper bound, cumulative count) pairs, +Inf last:
    linear within the bucket the rank falls in (the lowest from 0); the largest finite bound when
    it falls in +Inf. None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower
