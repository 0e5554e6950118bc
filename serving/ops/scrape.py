"""Reading the other processes' /metrics: counters, rates between scrapes, histogram quantiles.

Every streamrec process serves its own Prometheus registry; the operations page needs a few
figures from each (throughput, freshness, degraded share, rejections). It reads them the way
Prometheus would, with prometheus_client's parser, and keeps a short history of scrapes so that
rates and quantiles describe the last minute rather than the process's whole life.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import httpx

from streamrec.exposition import MetricSamples, histogram_quantile


@dataclass(frozen=True)
class Scrape:
    """One reading of one process: its samples, and the raw text."""

    at: float
    up: bool
    samples: MetricSamples
    text: str = ""
    error: str | None = None


def parse(text: str, at: float) -> Scrape:
    return Scrape(at=at, up=True, samples=MetricSamples(text), text=text)


def bucket_delta(newer: list[tuple[float, float]], older: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Observations between two scrapes (a restarted process starts again from zero: take the newer)."""
    before = dict(older)
    delta = [(bound, count - before.get(bound, 0.0)) for bound, count in newer]
    return newer if any(count < 0 for _, count in delta) else delta


@dataclass
class Target:
    """One process to scrape, with its recent history (oldest first)."""

    job: str
    url: str
    history: deque[Scrape] = field(default_factory=lambda: deque(maxlen=32))

    @property
    def latest(self) -> Scrape | None:
        return self.history[-1] if self.history else None

    def past(self, seconds: float) -> Scrape | None:
        """The newest successful scrape at least ``seconds`` older than the latest (else the oldest)."""
        latest = self.latest
        if latest is None:
            return None
        ups = [scrape for scrape in self.history if scrape.up and scrape is not latest]
        older = [scrape for scrape in ups if latest.at - scrape.at >= seconds]
        return older[-1] if older else (ups[0] if ups else None)

    def rate(self, name: str, window_s: float = 60.0, **match: str) -> float | None:
        """Per-second increase of a counter over about ``window_s`` (None until two scrapes exist)."""
        latest, older = self.latest, self.past(window_s)
        if latest is None or older is None or not latest.up or latest.at <= older.at:
            return None
        increase = latest.samples.total(name, **match) - older.samples.total(name, **match)
        if increase < 0:  # the process restarted
            increase = latest.samples.total(name, **match)
        return increase / (latest.at - older.at)

    def quantile(self, q: float, histogram: str, window_s: float = 60.0) -> float | None:
        """Quantile of the observations of about the last ``window_s``; all of them while history is short."""
        latest = self.latest
        if latest is None or not latest.up:
            return None
        older = self.past(window_s)
        buckets = latest.samples.buckets(f"{histogram}_bucket")
        if older is not None:
            recent = bucket_delta(buckets, older.samples.buckets(f"{histogram}_bucket"))
            if recent and recent[-1][1] > 0:
                buckets = recent
        return histogram_quantile(q, buckets)


async def scrape(client: httpx.AsyncClient, target: Target, timeout_s: float) -> Scrape:
    at = time.time()
    try:
        response = await client.get(target.url, timeout=timeout_s)
        response.raise_for_status()
        result = parse(response.text, at)
    except (httpx.HTTPError, ValueError) as error:
        result = Scrape(at=at, up=False, samples=MetricSamples(""), error=f"{type(error).__name__}: {error}"[:300])
    target.history.append(result)
    return result
