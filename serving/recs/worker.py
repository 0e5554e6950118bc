"""The real-time loop: profile updates in, recommendation lists out (Kafka + Redis cache).

A Faust agent reads ``profiles.updated`` (keyed by user, so one user's updates stay in
order), takes them in batches of up to ``batch_max_users`` within ``debounce_s``, collapses
each user's updates into one list (the debounce), computes the batch's lists concurrently —
the sequence scorer's client sends the batch's users to Triton as one request — and then, per list, publishes a :class:`streamrec.messages.Recommendations` to ``recommendations`` (keyed by
user) and caches the same JSON in Redis (``r:{user}``) with a TTL. Offsets are committed after the
batch's lists are delivered, so a crash recomputes lists rather than losing them.

An update that breaks its contract (not JSON, another shape, a wrong type, no value at all) is
written to ``events.dlq`` with the reason, counted (``streamrec_recs_dead_letters{topic}``) and
logged, and the batch goes on. Dead-lettered rather than only counted, although the topic is
internal: an unreadable update means a user whose list was not recomputed, and the letter keeps
the user id (when there is one) for a replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.engine.service import RecsService
from streamrec.deadletter import DeadLetter
from streamrec.delivery import KafkaDeliverer
from streamrec.kafka_client import client_config
from streamrec.faust_app import worker_app
from streamrec.messages import ProfileUpdated, Recommendations, UnreadableMessage
from streamrec.settings import Settings
from streamrec.topics import Topic

log = logging.getLogger(__name__)
DEAD_LETTER_SOURCE = f"recs:{Topic.PROFILES_UPDATED.value}"


@dataclass
class UpdateBatch:
    latest: dict[str, int] = field(default_factory=dict)
    """user -> newest event ts over the batch (a user's updates collapse into one list)."""
    unreadable: list[tuple[bytes | None, UnreadableMessage]] = field(default_factory=list)
    """Messages that break the ``profiles.updated`` contract, with why."""


def read_updates(values: list[bytes | None]) -> UpdateBatch:
    """A batch of ``profiles.updated`` values, read through their contract; broken ones are kept for the DLQ."""
    batch = UpdateBatch()
    for value in values:
        try:
            update = ProfileUpdated.decode(value)
        except UnreadableMessage as error:
            batch.unreadable.append((value, error))
            continue
        batch.latest[update.user_id] = max(batch.latest.get(update.user_id, 0), update.newest_event_ts)
    return batch


class RecsRuntime:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.service: RecsService | None = None
        self.deliverer = KafkaDeliverer(client_config(settings.kafka, client="recs"))

    async def ready(self) -> RecsService:
        if self.service is None:
            service = RecsService(self.settings)
            await service.start()
            self.service = service
        return self.service

    async def handle(self, values: list[bytes | None]) -> list[Recommendations]:
        service = await self.ready()
        updates = read_updates(values)
        if updates.unreadable:
            await self.dead_letter(service, updates.unreadable)
        users = await self.needing_lists(service, updates.latest)
        service.metrics.batch_users.observe(len(users))
        # Concurrent lists: the scorer client sends the batch's users to Triton as one request.
        served = await asyncio.gather(*(service.router.recommend(user_id) for user_id in users))
        outcomes = [outcome for outcome, _ in served]
        lists = [outcome.recommendations for outcome in outcomes]
        for outcome in outcomes:
            service.metrics.observe(outcome, "stream")
        await self.deliver(service, lists)
        if service.router.experiment is not None:
            await service.guardrails.add([sample for _, sample in served])
        now_ms = time.time() * 1000
        for recommendations in lists:
            if recommendations.source_event_ts:
                service.metrics.freshness.observe(max(0.0, now_ms - recommendations.source_event_ts) / 1000)
        return lists

    async def needing_lists(self, service: RecsService, latest: dict[str, int]) -> dict[str, int]:
        """The users of ``latest`` whose cached list does not already reflect a newer event.

        A list is computed from the profile as it is when computed, so a worker behind its log
        (after a restart, a fault, a burst) has often published a user's list with events newer
        than the updates still waiting for that user: those updates are skipped. Only a strictly
        newer event counts (two events of one millisecond may be applied in different batches),
        and a degraded list is always recomputed, and so is a list of another experiment or
        variant than the user's now (an experiment started or stopped since).
        """
        if not latest:
            return latest
        cached = await service.cache.read_many(latest)
        needed: dict[str, int] = {}
        for (user_id, newest_ts), raw in zip(latest.items(), cached, strict=True):
            if raw is not None:
                try:
                    current = Recommendations.decode(raw)
                except UnreadableMessage:
                    current = None
                if (current is not None and not current.degraded and current.source_event_ts is not None
                        and current.source_event_ts > newest_ts
                        and (current.experiment, current.variant) == service.router.labels(user_id)):
                    continue
            needed[user_id] = newest_ts
        if skipped := len(latest) - len(needed):
            service.metrics.already_current.inc(skipped)
        return needed

    async def deliver(self, service: RecsService, lists: list[Recommendations]) -> None:
        messages = [recommendations.to_kafka() for recommendations in lists]
        await service.cache.write_many(
            [(recommendations.user_id, value) for recommendations, (_, _, value) in zip(lists, messages, strict=True)],
            ttl_s=self.settings.recs.cache_ttl_s,
        )
        await self.send(messages)

    async def dead_letter(self, service: RecsService, unreadable: list[tuple[bytes | None, UnreadableMessage]]) -> None:
        """Each unreadable update to ``events.dlq`` (delivered before the batch is committed), counted."""
        letters = [
            DeadLetter.wrap(raw, reason=error.reason, errors=error.errors, source=DEAD_LETTER_SOURCE,
                            max_raw_bytes=self.settings.deadletters.raw_max_bytes)
            for raw, error in unreadable
        ]
        await self.send([(Topic.DLQ.value, None, letter.encode()) for letter in letters])
        service.metrics.dead_letters.labels(Topic.PROFILES_UPDATED.value).inc(len(letters))
        log.warning("%d unreadable profile updates written to %s, e.g. %s", len(letters), Topic.DLQ.value, letters[0].reason)

    async def send(self, messages: list[tuple[str, bytes | None, bytes]]) -> None:
        """Send ``(topic, key, value)`` messages and wait until Kafka acknowledged them all."""
        await self.deliverer.send_all(messages)

    async def until_done(self, values: list[bytes | None]) -> None:
        """Retry a batch until it is delivered: its offsets are committed only after that."""
        backoff = 0.2
        while True:
            try:
                await self.handle(values)
                return
            except Exception:  # Redis or Kafka away; the scorer never gets here (it degrades)
                log.exception("recommendation batch failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def create_app(settings: Settings) -> faust.App:
    recs = settings.recs
    # A new group starts at the newest update: replaying a day of old updates would delay fresh ones.
    app = worker_app(recs.app_id, settings, web_host=recs.web_host, web_port=recs.web_port,
                     session_timeout_s=recs.session_timeout_s, auto_offset_reset="latest")
    runtime = RecsRuntime(app, settings)

    updates = app.topic(Topic.PROFILES_UPDATED.value)

    async def recommend(stream: faust.StreamT) -> None:
        async for events in stream.take_events(recs.batch_max_users, within=recs.debounce_s):
            await runtime.until_done([event.message.value for event in events])

    app.agent(updates, name="recommend")(recommend)

    @app.task
    async def warm_up() -> None:
        await runtime.ready()

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust's view signature
        service = await runtime.ready()
        content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        return web.bytes(generate_latest(service.metrics.registry), content_type=content_type)

    return app
