"""The Faust app of the attribution worker: one agent over impressions and accepted events.

Built from the settings like the streams worker's app (nothing at module level). Offsets are
committed after a batch's transaction (``take_events`` acks when the next batch is asked for),
and the transaction moves the watermarks, so a worker killed at any point counts nothing twice.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from streamrec.delivery import KafkaDeliverer
from streamrec.faust_app import worker_app
from streamrec.kafka_client import client_config
from streamrec.settings import Settings
from streamrec.topics import Topic
from streamrec.store.connection import connect
from streams.attribution.processor import TOPICS, AttributionProcessor, AttributionResult
from streams.processor import Record
from streams.rewind import KafkaOffsets

log = logging.getLogger(__name__)


class AttributionMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.impressions = Counter("streamrec_attribution_impressions", "Impressions counted.", registry=self.registry)
        self.credited = Counter("streamrec_attribution_credited", "Interactions credited to a list, by how.",
                                ["how"], registry=self.registry)
        self.organic = Counter("streamrec_attribution_organic", "Interactions no list led to.", registry=self.registry)
        self.duplicates = Counter("streamrec_attribution_duplicates", "Event ids counted before, skipped.", registry=self.registry)
        self.dead_letters = Counter("streamrec_attribution_dead_letters", "Unreadable records sent to events.dlq.",
                                    registry=self.registry)
        self.reread = Counter("streamrec_attribution_reread", "Records read again because Redis lost them.", registry=self.registry)
        self.unrecoverable = Counter("streamrec_attribution_unrecoverable_records",
                                     "Records Redis lost that Kafka's retention had already deleted.", ["topic"],
                                     registry=self.registry)
        for topic in (Topic.IMPRESSIONS, Topic.ACCEPTED):  # a zero per topic from the start, for alerts and dashboards
            self.unrecoverable.labels(topic.value)

    def observe(self, result: AttributionResult) -> None:
        self.impressions.inc(result.impressions)
        for how, count in result.credited.items():
            self.credited.labels(how).inc(count)
        self.organic.inc(result.organic)
        self.duplicates.inc(result.duplicates)
        self.dead_letters.inc(result.dead_letters)
        self.reread.inc(result.reread)
        for topic, count in result.unrecoverable.items():
            self.unrecoverable.labels(topic).inc(count)


def create_app(settings: Settings) -> faust.App:
    attribution = settings.attribution
    app = worker_app(
        attribution.app_id, settings, web_host=attribution.web_host, web_port=attribution.web_port,
        session_timeout_s=attribution.session_timeout_s, auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, attribution.batch_max * 4),
    )
    metrics = AttributionMetrics()
    processor: AttributionProcessor | None = None
    deliverer = KafkaDeliverer(client_config(settings.kafka, client="attribution"))

    async def ready() -> AttributionProcessor:
        nonlocal processor
        if processor is None:
            processor = AttributionProcessor(
                client=connect(settings.redis), settings=attribution, group=attribution.app_id, publish=deliverer.send_all,
                offsets=KafkaOffsets(client_config(settings.kafka, client="attribution-offsets"), group=attribution.app_id),
                dlq_raw_max_bytes=settings.deadletters.raw_max_bytes,
            )
        return processor

    async def attribute(stream: faust.StreamT) -> None:
        async for events in stream.take_events(attribution.batch_max, within=attribution.batch_within_s):
            records = [Record(e.message.topic, e.message.partition, e.message.offset, int(e.message.timestamp * 1000),
                              e.message.key, e.message.value) for e in events]
            worker = await ready()
            backoff = 0.2
            while True:  # a batch is never acked (so never committed) unapplied
                try:
                    result = await worker.process(records)
                    break
                except Exception:  # Redis or Kafka away: wait, the batch stays unacknowledged
                    log.exception("attributing a batch failed; retrying in %.1f s", backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            metrics.observe(result)

    app.agent(app.topic(*(topic.value for topic in TOPICS)), name="attribute")(attribute)

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust's view signature
        content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        return web.bytes(generate_latest(metrics.registry), content_type=content_type)

    return app
