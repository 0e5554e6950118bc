"""Prometheus metrics of one streams worker (its own registry: no process-global state).

The counters the data-quality scorecard reads are named in :mod:`streamrec.quality_metrics`;
their label values are all created up front, so a scrape shows a zero rather than no series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamrec import quality_metrics as q
from streamrec.topics import INTERACTION_TOPICS, Topic
from streams.catalog import StoredCatalog
from streams.processor import BatchResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class StreamsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(q.STREAMS_EVENTS, "Interactions applied to profiles, by type (canary users' apart).", ["type"], registry=r)
        self.rejections = Counter(q.STREAMS_REJECTIONS, "Events set aside, by rule (canary users' apart).", ["rule"], registry=r)
        self.item_lookups = Counter(
            q.STREAMS_ITEM_LOOKUPS, "Applied interactions by whether the catalog has their item.", ["found"], registry=r
        )
        self.event_delay = Histogram(
            q.STREAMS_EVENT_DELAY, "Kafka timestamp minus event ts of applied interactions (0 when stamped ahead).",
            buckets=q.EVENT_DELAY_BUCKETS, registry=r,
        )
        self.canary_events = Counter(
            q.STREAMS_CANARY_EVENTS, "Canary users' interactions by outcome (applied or the rule), kept out of the other counts.",
            ["outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "streamrec_streams_dead_letters", "Records the contract cannot read, written to events.dlq, by the topic they were read from.",
            ["topic"], registry=r,
        )
        self.skipped = Counter("streamrec_streams_replayed_skipped", "Records already applied (replay after a crash).", registry=r)
        self.catalog_items = Counter(q.STREAMS_CATALOG_ITEMS, "Catalog items stored with embeddings.", registry=r)
        self.catalog_fields_missing = Counter(
            q.STREAMS_CATALOG_FIELDS_MISSING, "Catalog items stored without the field.", ["field"], registry=r
        )
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
        self.reread = Counter(
            "streamrec_streams_reread_records", "Records read again from Kafka because Redis lost their writes (watermark behind).",
            ["topic"], registry=r,
        )
        self.unrecoverable = Counter(
            "streamrec_streams_unrecoverable_records", "Records Redis lost that Kafka's retention had already deleted.",
            ["topic"], registry=r,
        )
        self.lag = Gauge("streamrec_streams_lag", "Messages behind the log end, per partition.", ["topic", "partition"], registry=r)
        for found in ("true", "false"):
            self.item_lookups.labels(found)
        for name in q.CATALOG_FIELDS:
            self.catalog_fields_missing.labels(name)
        for rule in q.Rule:
            self.rejections.labels(rule.value)
        for topic in (*INTERACTION_TOPICS, Topic.CATALOG):
            self.reread.labels(topic.value)
            self.unrecoverable.labels(topic.value)
            self.dead_letters.labels(topic.value)  # exported at 0 from the start

    def observe_batch(self, records: int, result: BatchResult, *, now_ms: float) -> None:
        """Count one applied batch of ``records`` interaction records (0: records read again on their own)."""
        if records:
            self.batch_size.observe(records)
        self.redis_seconds.observe(result.redis_seconds)
        for topic, count in result.reread.items():
            self.reread.labels(topic).inc(count)
        for topic, count in result.unrecoverable.items():
            self.unrecoverable.labels(topic).inc(count)
        self.skipped.inc(result.skipped)
        if result.attempts > 1:
            self.conflicts.inc(result.attempts - 1)
        for applied in result.applied:
            self.event_to_redis.observe(max(0.0, now_ms - applied.ts) / 1000)
        for record, rejection in result.rejected:
            if rejection.rule is q.Rule.MALFORMED:
                self.dead_letters.labels(record.topic).inc()
        tally = result.quality
        for event_type, count in tally.applied.items():
            self.events.labels(event_type).inc(count)
        for rule, count in tally.rejected.items():
            self.rejections.labels(rule).inc(count)
        for outcome, count in tally.canary.items():
            self.canary_events.labels(outcome).inc(count)
        self.item_lookups.labels("true").inc(tally.items_found)
        self.item_lookups.labels("false").inc(tally.items_missing)
        for delay_s in tally.delays_s:
            self.event_delay.observe(delay_s)

    def observe_catalog(self, stored: StoredCatalog) -> None:
        self.catalog_items.inc(stored.items)
        self.skipped.inc(stored.skipped)
        for topic, count in stored.reread.items():
            self.reread.labels(topic).inc(count)
        for topic, count in stored.unrecoverable.items():
            self.unrecoverable.labels(topic).inc(count)
        self.dead_letters.labels(Topic.CATALOG.value).inc(stored.dead_letters)
        for name, count in stored.missing_fields.items():
            self.catalog_fields_missing.labels(name).inc(count)
