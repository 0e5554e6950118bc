"""Prometheus metrics of one streams worker (its own registry: no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class StreamsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter("streamrec_streams_events", "Interactions applied to profiles, by type.", ["type"], registry=r)
        self.rejections = Counter("streamrec_streams_rejections", "Events set aside, by rule.", ["rule"], registry=r)
        self.skipped = Counter("streamrec_streams_replayed_skipped", "Records already applied (replay after a crash).", registry=r)
        self.catalog_items = Counter("streamrec_streams_catalog_items", "Catalog items stored with embeddings.", registry=r)
        self.unreadable_profiles = Gauge(
            "streamrec_streams_unreadable_profiles", "Stored profiles that could not be read and were restarted.", registry=r
        )
        self.encoder_failures = Gauge("streamrec_streams_encoder_failures", "Failed item-encoder calls so far.", registry=r)
        self.event_to_redis = Histogram(
            "streamrec_streams_event_to_redis_seconds", "Event ts to its Redis write.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "streamrec_streams_batch_size", "Records per batch.", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r
        )
        self.redis_seconds = Histogram(
            "streamrec_streams_redis_seconds", "Redis time per batch (reads + transaction).", buckets=LATENCY_BUCKETS, registry=r
        )
        self.conflicts = Counter("streamrec_streams_watch_conflicts", "Batches recomputed after another writer.", registry=r)
        self.lag = Gauge("streamrec_streams_lag", "Messages behind the log end, per partition.", ["topic", "partition"], registry=r)
