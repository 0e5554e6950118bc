"""Prometheus metrics of the recommender (worker and API; each instance has its own registry)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamrec.ranking.recommender import Outcome
from streamrec.topics import Topic

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class RecsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.lists = Counter("streamrec_recs_lists", "Recommendation lists computed, by where they were asked for.", ["origin"], registry=r)
        self.degraded = Counter(
            "streamrec_recs_degraded", "Lists served in the signals' order because the scorer failed or was slow.", ["origin"], registry=r
        )
        self.freshness = Histogram(
            "streamrec_recs_freshness_seconds", "Newest event of the profile to its published list.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.scorer_seconds = Histogram(
            "streamrec_recs_scorer_seconds", "Scorer call per list (coalesced with other users' lists).", buckets=LATENCY_BUCKETS, registry=r
        )
        self.candidates = Histogram(
            "streamrec_recs_candidates", "Candidates per list.", buckets=(0, 10, 50, 100, 150, 200, 300), registry=r
        )
        self.batch_users = Histogram(
            "streamrec_recs_batch_users", "Distinct users per worker batch (after debouncing).", buckets=(1, 2, 5, 10, 25, 50, 100), registry=r
        )
        self.api_seconds = Histogram(
            "streamrec_api_request_seconds", "API request latency.", ["endpoint", "cached"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.already_current = Counter(
            "streamrec_recs_updates_already_current", "Profile updates skipped: the cached list already reflects a newer event.",
            registry=r,
        )
        self.dead_letters = Counter(
            "streamrec_recs_dead_letters", "Unreadable messages written to events.dlq, by the topic they were read from.",
            ["topic"], registry=r,
        )
        self.dead_letters.labels(Topic.PROFILES_UPDATED.value)  # exported at 0 from the start: alert rules read it
        self.api_store_unavailable = Counter(
            "streamrec_api_store_unavailable", "API requests answered while Redis could not be read (the trending fallback or 503).",
            registry=r,
        )
        self.index_items = Gauge("streamrec_recs_index_items", "Catalog items in the in-memory item index.", registry=r)
        self.unreadable_profiles = Gauge(
            "streamrec_recs_unreadable_profiles", "Stored profiles that could not be read (served as new users).", registry=r
        )

    def observe(self, outcome: Outcome, origin: str) -> None:
        self.lists.labels(origin).inc()
        if outcome.recommendations.degraded:
            self.degraded.labels(origin).inc()
        if outcome.scorer_seconds is not None:
            self.scorer_seconds.observe(outcome.scorer_seconds)
        self.candidates.observe(outcome.candidates)
