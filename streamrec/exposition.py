"""Reading Prometheus exposition text: sample values by name and labels, histogram quantiles.

The data-quality scorecard reads the streams worker's and the collector's ``/metrics``, and the
operations page reads every process's; both need the same few questions answered (a counter's
total over some labels, its split by one label, a histogram's buckets and quantiles), and
quantiles that agree with ``histogram_quantile`` in Prometheus and Grafana for the same buckets.
"""

from __future__ import annotations

import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


class MetricSamples:
    """Sample values of one exposition text, by sample name and labels (series of the same name
    and labels, as from several workers' texts joined, add up)."""

    def __init__(self, text: str) -> None:
        self._values: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        self._families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self._families.add(family.name)
            for sample in family.samples:
                self._values[sample.name].append((sample.labels, float(sample.value)))

    def has_prefix(self, prefix: str) -> bool:
        return any(name.startswith(prefix) for name in (*self._families, *self._values))

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(value for have, value in self._values.get(name, ()) if all(have.get(k) == v for k, v in labels.items()))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """``total`` split by the value of ``label``."""
        out: dict[str, float] = defaultdict(float)
        for have, value in self._values.get(name, ()):
            if all(have.get(k) == v for k, v in labels.items()):
                out[have.get(label, "")] += value
        return dict(out)

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram's ``_bucket`` samples, +Inf last."""
        cumulative: dict[float, float] = defaultdict(float)
        for have, value in self._values.get(name, ()):
            cumulative[float(have["le"])] += value  # float("+Inf") is inf
        return sorted(cumulative.items())


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
