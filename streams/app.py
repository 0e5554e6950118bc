"""The Faust app of the streams worker: agents for interactions and catalog items.

``create_app`` builds everything from the settings (no module-level app), so a
test or a second worker in the same interpreter gets its own. The agents only
move records between Kafka and the processors (``processor.py``,
``catalog.py``), which hold the logic and are tested on their own.

Faust commits a batch's offsets after the agent asks for the next batch
(``take_events`` acks on resume) and flushes its producer before committing,
so the committed offset never runs ahead of what reached Redis, unless Redis
loses writes afterwards (a failover, an older snapshot): the records in between
are then read again from Kafka and applied (``rewind.py``), found either by the
next batch of the partition or by the periodic check of every assigned one.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import redis.asyncio as redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamrec.kafka_client import client_config
from streamrec.delivery import KafkaDeliverer
from streamrec.faust_app import worker_app
from streamrec.messages import ProfileUpdated
from streamrec.model.encoder_client import TritonEncoderClient
from streamrec.settings import Settings
from streamrec.store.connection import connect
from streamrec.store.functions import load_functions
from streamrec.store.watermarks import WatermarkStore
from streamrec.topics import INTERACTION_TOPICS, Topic
from streams.catalog import CatalogProcessor
from streams.metrics import StreamsMetrics
from streams.processor import BatchResult, InteractionProcessor, Record
from streams.rewind import KafkaOffsets

log = logging.getLogger(__name__)


def _record(event: faust.EventT) -> Record:
    message = event.message
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp * 1000),
        key=message.key,
        value=message.value,
    )


class StreamsRuntime:
    """What the agents share inside one worker: clients, processors, metrics, progress."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = StreamsMetrics()
        self.positions: dict[tuple[str, int], int] = {}  # next offset after the last one applied, per partition
        self.warned_unmarked: set[tuple[str, int]] = set()  # partitions whose missing watermark was logged
        self.offsets = KafkaOffsets(client_config(settings.kafka, client="streams-offsets"), group=settings.streams.app_id)
        self.deliverer = KafkaDeliverer(client_config(settings.kafka, client="streams"))
        self._redis: redis.Redis | None = None
        self._interactions: InteractionProcessor | None = None
        self._catalog: CatalogProcessor | None = None

    async def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = connect(self.settings.redis)
            await load_functions(self._redis)
        return self._redis

    async def publish_many(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        await self.deliverer.send_all(messages)

    async def interactions(self) -> InteractionProcessor:
        if self._interactions is None:
            self._interactions = InteractionProcessor(
                client=await self.redis(),
                settings=self.settings.streams,
                group=self.settings.streams.app_id,
                publish=self.publish_many,
                offsets=self.offsets,
                dlq_raw_max_bytes=self.settings.deadletters.raw_max_bytes,
            )
        return self._interactions

    async def catalog(self) -> CatalogProcessor:
        if self._catalog is None:
            assert self.settings.triton.grpc_url is not None
            self._catalog = CatalogProcessor(
                client=await self.redis(),
                encoder=TritonEncoderClient(self.settings.triton.grpc_url),
                publish=self.publish_many,
                group=self.settings.streams.app_id,
                offsets=self.offsets,
                dlq_raw_max_bytes=self.settings.deadletters.raw_max_bytes,
            )
        return self._catalog

    def observe(self, records: list[Record], result: BatchResult) -> None:
        self.metrics.observe_batch(len(records), result, now_ms=time.time() * 1000)
        self.advance(records)

    def advance(self, records: list[Record]) -> None:
        for record in records:
            tp = (record.topic, record.partition)
            self.positions[tp] = max(self.positions.get(tp, 0), record.offset + 1)

    async def check_watermarks(self) -> None:
        """Compare every assigned partition's watermark with what is known applied, and apply again
        what Redis lost. Known applied: this process's progress, else the group's committed offset;
        both read before the watermarks (which only move forward unless Redis lost them)."""
        assigned = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()}
        for partition in set(self.positions) - assigned:  # moved to another worker
            del self.positions[partition]
        known = {partition: self.positions[partition] for partition in assigned if partition in self.positions}
        if unknown := sorted(assigned - set(known)):
            known.update(await self.offsets.committed(unknown))
        if not known:
            return
        watermarks = await WatermarkStore(await self.redis(), group=self.settings.streams.app_id).stored(sorted(known))
        for partition in sorted(set(self.positions) - set(watermarks) - self.warned_unmarked):
            topic, number = partition
            log.warning(
                "Redis holds no watermark for %s[%d], which this worker applied up to offset %d: Redis was "
                "emptied, or restored from before this group's first write. What was applied before is not "
                "read again on its own; reset the group's offsets to rebuild it.",
                topic, number, self.positions[partition] - 1,
            )
            self.warned_unmarked.add(partition)
        behind = {partition: end for partition, end in known.items() if partition in watermarks and watermarks[partition] + 1 < end}
        catalog = {partition: end for partition, end in behind.items() if partition[0] == Topic.CATALOG.value}
        interactions = {partition: end for partition, end in behind.items() if partition not in catalog}
        if interactions and "interactions" in self.settings.streams.agents:
            processor = await self.interactions()
            result = await processor.catch_up(interactions)
            self.metrics.observe_batch(0, result, now_ms=time.time() * 1000)
            await self.signal_profiles(result)
        if catalog and "catalog" in self.settings.streams.agents:
            self.metrics.observe_catalog(await (await self.catalog()).catch_up(catalog))

    async def signal_profiles(self, result: BatchResult) -> None:
        """Tell the recommender which users' profiles changed."""
        if result.updated_users:
            signals = [ProfileUpdated(user_id=user, newest_event_ts=ts).to_kafka() for user, ts in result.updated_users.items()]
            await self.until_done(lambda: self.publish_many(signals), "publishing profile updates")

    async def until_done(self, work, what: str):
        """Retry ``work`` until it succeeds: a batch is never acked (and so never committed) unapplied."""
        backoff = 0.2
        while True:
            try:
                return await work()
            except Exception:  # Redis or Kafka away: wait, the batch stays unacknowledged
                log.exception("%s failed; retrying in %.1f s", what, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def create_app(settings: Settings) -> faust.App:
    streams = settings.streams
    app = worker_app(
        streams.app_id,
        settings,
        web_host=streams.web_host,
        web_port=streams.web_port,
        session_timeout_s=streams.session_timeout_s,
        auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, streams.batch_max * 4),
    )
    runtime = StreamsRuntime(app, settings)

    interactions_topic = app.topic(*(topic.value for topic in INTERACTION_TOPICS))
    catalog_topic = app.topic(Topic.CATALOG.value)

    async def apply_interactions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(streams.batch_max, within=streams.batch_within_s):
            records = [_record(event) for event in events]
            processor = await runtime.interactions()
            result = await runtime.until_done(lambda: processor.process(records), "applying interactions")
            runtime.observe(records, result)
            runtime.metrics.unreadable_profiles.set(processor.unreadable_profiles)
            await runtime.signal_profiles(result)

    async def store_catalog(stream: faust.StreamT) -> None:
        async for events in stream.take_events(256, within=0.2):
            records = [_record(event) for event in events]
            processor = await runtime.catalog()
            stored = await runtime.until_done(lambda: processor.process(records), "storing catalog items")
            runtime.metrics.observe_catalog(stored)
            runtime.advance(records)
            runtime.metrics.encoder_failures.set(processor.encoder_failures)

    if "interactions" in streams.agents:
        app.agent(interactions_topic, name="interactions")(apply_interactions)
    if "catalog" in streams.agents:
        app.agent(catalog_topic, name="catalog")(store_catalog)

    @app.timer(streams.watermark_check_s)
    async def check_watermarks() -> None:
        try:
            await runtime.check_watermarks()
        except Exception:  # Redis or Kafka away: the next round checks again
            log.warning("watermark check failed; checking again in %.0f s", streams.watermark_check_s, exc_info=True)

    @app.timer(5.0)
    async def report_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                position = runtime.positions.get((tp.topic, tp.partition), highwater)
                runtime.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust's view signature
        # aiohttp sets the charset itself and refuses one inside content_type.
        content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        return web.bytes(generate_latest(runtime.metrics.registry), content_type=content_type)

    return app
