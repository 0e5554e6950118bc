"""Apply a batch of interaction records to Redis effectively once.

Redis writes cannot join a Kafka transaction, so the batch is made idempotent
instead: every (topic, partition) has a watermark key holding the highest
offset already applied, and the watermark moves in the same MULTI/EXEC as the
profile and statistics writes. Offsets are committed to Kafka only after that
(Faust acks a batch when the next one is requested). A worker killed at any
point therefore either applied a batch completely (and skips it on replay) or
not at all. WATCH on the watermarks and the touched profiles makes a second
worker that still believes it owns a partition (during a rebalance) retry
instead of overwriting.

The watermark, not the committed offset, says where a partition stands: when Redis lost its
last writes (a failover, an older snapshot restored), a batch starts past watermark + 1, and
the records in between are read again from Kafka and applied first (``rewind.py``).

Rejected events (to ``events.dlq`` or ``events.quarantine``) and applied ones (to
``events.accepted``, as applied: cleaned and filled) are published, and their
delivery awaited, before the EXEC, so a crash can repeat such a message but
never lose one; consumers dedupe by ``event_id``.

Records the event contract cannot read (not JSON, not an object, an unknown or wrong ``type``, a
tombstone, anything) are dead-lettered to ``events.dlq`` with the reason, keyed by their
``event_id`` when they have one and by their Kafka key otherwise, counted
(``streamrec_streams_rejections{rule="malformed"}`` and ``streamrec_streams_dead_letters{topic}``)
and move the watermark like any other record: garbage never blocks its partition. Parsing is
pure, so whatever it raises is about the record, never a reason to retry the batch.

Users whose id marks them as the end-to-end canary (:func:`streamrec.events.is_canary`) go
through the same rules and get a profile, so the recommender computes their list, but their
events add nothing to item statistics (popularity, co-visitation) and are tallied apart from the
data-quality counts: a probe must not move what it measures.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import redis.asyncio as redis
from redis.exceptions import WatchError

from streamrec.deadletter import DeadLetter
from streamrec.events import CartEvent, ClickEvent, EventValidator, Interaction, InvalidEvent, PurchaseEvent, is_canary
from streamrec.messages import AcceptedEvent, QuarantinedEvent
from streamrec.profile_fold import Applied, apply_interaction
from streamrec.settings import StreamsSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.item_statistics import ItemObservations, ItemStatistics
from streamrec.store.profile import UserProfile
from streamrec.store.profile_store import ProfileStore
from streamrec.store.watermarks import WatermarkStore
from streamrec.topics import Topic
from streams.cleaning import Rejection, Rule, check_click_rate, check_duplicate, check_price, check_timestamp, fill_from_catalog
from streams.rewind import KafkaOffsets, Reread, lost_before, reapply_missing

# Sends (topic, key, value) messages and returns once Kafka acknowledged all of them.
PublishMany = Callable[[list[tuple[str, bytes | None, bytes]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message as the processor sees it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    """None for a tombstone."""


@dataclass
class QualityTally:
    """What a batch adds to the data-quality counters (:mod:`streamrec.quality_metrics`).

    Canary users' events are only in ``canary``, by outcome ("applied" or the rule).
    """

    applied: Counter[str] = field(default_factory=Counter)  # event type -> count
    rejected: Counter[str] = field(default_factory=Counter)  # rule -> count
    items_found: int = 0  # applied events whose item the catalog has
    items_missing: int = 0
    delays_s: list[float] = field(default_factory=list)  # Kafka timestamp - event ts of each applied event
    canary: Counter[str] = field(default_factory=Counter)

    def merge(self, other: "QualityTally") -> None:
        self.applied += other.applied
        self.rejected += other.rejected
        self.items_found += other.items_found
        self.items_missing += other.items_missing
        self.delays_s += other.delays_s
        self.canary += other.canary

    def reject(self, user_id: str | None, rule: Rule) -> None:
        (self.canary if user_id is not None and is_canary(user_id) else self.rejected)[rule.value] += 1

    def apply(self, event: Interaction, record: Record, *, in_catalog: bool) -> None:
        if is_canary(event.user_id):
            self.canary["applied"] += 1
            return
        self.applied[event.type] += 1
        if in_catalog:
            self.items_found += 1
        else:
            self.items_missing += 1
        # Stamped ahead of Kafka (within the future rule's tolerance) is no delay.
        self.delays_s.append(max(0, record.timestamp_ms - event.ts) / 1000)


@dataclass
class BatchResult:
    applied: list[Applied] = field(default_factory=list)
    rejected: list[tuple[Record, Rejection]] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)  # the readable ones of ``rejected``
    accepted: list[AcceptedEvent] = field(default_factory=list)  # the events ``applied`` came from, as applied
    updated_users: dict[str, int] = field(default_factory=dict)  # user -> newest event ts
    skipped: int = 0  # already applied before (offset at or below the watermark)
    reread: Counter[str] = field(default_factory=Counter)  # topic -> records read again because Redis lost them
    unrecoverable: Counter[str] = field(default_factory=Counter)  # topic -> lost records retention had deleted
    attempts: int = 1  # > 1 when WATCH saw another writer and the batch (or a part) was recomputed
    redis_seconds: float = 0.0
    quality: QualityTally = field(default_factory=QualityTally)

    def merge(self, other: "BatchResult") -> None:
        """Add ``other`` (records applied before this batch's own) into this result."""
        self.applied += other.applied
        self.rejected += other.rejected
        self.quarantined += other.quarantined
        self.accepted += other.accepted
        for user, ts in other.updated_users.items():
            self.updated_users[user] = max(self.updated_users.get(user, 0), ts)
        self.skipped += other.skipped
        self.attempts += other.attempts - 1
        self.redis_seconds += other.redis_seconds
        self.reread += other.reread
        self.unrecoverable += other.unrecoverable
        self.quality.merge(other.quality)


TOMBSTONE_REASON = "no value (a tombstone): interaction topics carry events, never deletes"


def _parse(record: Record, validator: EventValidator) -> Interaction | Rejection:
    if record.value is None:
        return Rejection(Rule.MALFORMED, TOMBSTONE_REASON)
    try:
        event = validator.parse(orjson.loads(record.value))
    except orjson.JSONDecodeError as error:
        return Rejection(Rule.MALFORMED, f"not JSON: {error}")
    except InvalidEvent as error:
        return Rejection(Rule.MALFORMED, error.reason)
    except Exception as error:  # noqa: BLE001 - a record nothing can read is dead-lettered, never retried forever
        return Rejection(Rule.MALFORMED, f"unreadable: {type(error).__name__}: {error}")
    if not isinstance(event, (ClickEvent, CartEvent, PurchaseEvent)):
        return Rejection(Rule.MALFORMED, f"a {event.type} event on interaction topic {record.topic}")
    return event


class InteractionProcessor:
    def __init__(
        self,
        *,
        client: redis.Redis,
        settings: StreamsSettings,
        group: str,
        publish: PublishMany,
        offsets: KafkaOffsets,
        dlq_raw_max_bytes: int = 262_144,
    ) -> None:
        self._redis = client
        self._offsets = offsets
        self._settings = settings
        self._publish = publish
        self._dlq_raw_max_bytes = dlq_raw_max_bytes
        # The streams layer judges time by Kafka's timestamps (see cleaning.py), not the wall clock.
        self._validator = EventValidator(max_future_skew_s=None)
        self._profiles = ProfileStore(client)
        self._watermarks = WatermarkStore(client, group=group)
        self._statistics = ItemStatistics(client)
        self._catalog_store = CatalogStore(client)

    @property
    def unreadable_profiles(self) -> int:
        """Stored profiles that could not be read and were started afresh."""
        return self._profiles.unreadable

    async def process(self, records: list[Record]) -> BatchResult:
        """Apply the batch; records Redis lost before it (its watermark behind the batch) first."""
        result = await self.catch_up(await lost_before((((r.topic, r.partition), r.offset) for r in records), self._watermarks))
        result.merge(await self._process_once(records))
        return result

    async def catch_up(self, until: dict[tuple[str, int], int]) -> BatchResult:
        """Apply what Kafka holds between each partition's watermark and ``until`` (exclusive)."""
        result = BatchResult()

        async def apply(missing: dict[tuple[str, int], Reread]) -> None:
            for (topic, _), reread in missing.items():
                result.reread[topic] += len(reread.records)
                result.unrecoverable[topic] += reread.unrecoverable
            result.merge(await self._process_once(rereads_as_records(missing)))

        await reapply_missing(until, watermarks=self._watermarks, offsets=self._offsets, limit=self._settings.batch_max, apply=apply)
        return result

    async def _process_once(self, records: list[Record]) -> BatchResult:
        parsed = [(record, _parse(record, self._validator)) for record in records]
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await self._apply(parsed)
            except WatchError:
                continue  # another writer touched our keys: recompute from what is there now
            result.attempts = attempts
            return result

    async def _catalog(self, item_ids: set[str]) -> dict[str, CatalogRecord]:
        """Catalog records of the batch's items in one round trip (a read-only Redis function)."""
        return await self._catalog_store.read_in_one_call(sorted(item_ids))

    async def _apply(self, parsed: list[tuple[Record, Interaction | Rejection]]) -> BatchResult:
        settings = self._settings
        result = BatchResult()
        started = time.perf_counter()
        partitions = sorted({(record.topic, record.partition) for record, _ in parsed})
        events = [event for _, event in parsed if not isinstance(event, Rejection)]
        user_ids = sorted({event.user_id for event in events})
        catalog = await self._catalog({event.item_id for event in events})

        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._watermarks.keys(partitions), *(self._profiles.key(u) for u in user_ids))
            applied_up_to = await self._watermarks.read(partitions, via=pipe)
            stored = await self._profiles.read_many(user_ids, via=pipe)
            # A profile that cannot be read is rebuilt from now on instead of blocking the partition.
            profiles = {user: profile if profile is not None else UserProfile() for user, profile in stored.items()}
            touched_users: set[str] = set()
            new_watermarks: dict[tuple[str, int], int] = {}
            for record, event in parsed:
                tp = (record.topic, record.partition)
                if record.offset <= applied_up_to[tp]:
                    result.skipped += 1
                    if not isinstance(event, Rejection):
                        # Applied before, but the worker that applied it may have died before it
                        # signalled the recommender (the signal follows the commit): signal again.
                        # A hint, not a count: the recs worker skips a user whose list is current.
                        result.updated_users[event.user_id] = max(result.updated_users.get(event.user_id, 0), event.ts)
                    continue
                new_watermarks[tp] = max(new_watermarks.get(tp, -1), record.offset)
                if isinstance(event, Rejection):
                    result.rejected.append((record, event))
                    result.quality.reject(None, event.rule)
                    continue
                profile = profiles[event.user_id]
                touched_users.add(event.user_id)
                rejection = self._judge(event, record, profile, catalog.get(event.item_id))
                if rejection is not None:
                    result.rejected.append((record, rejection))
                    result.quality.reject(event.user_id, rejection.rule)
                    result.quarantined.append(QuarantinedEvent(rule=rejection.rule.value, reason=rejection.reason, event=event,
                                                               topic=record.topic, partition=record.partition, offset=record.offset))
                    continue
                if isinstance(event, PurchaseEvent):
                    event = fill_from_catalog(event, catalog.get(event.item_id))
                result.accepted.append(AcceptedEvent(event=event, topic=record.topic, partition=record.partition, offset=record.offset))
                item = catalog.get(event.item_id)
                result.quality.apply(event, record, in_catalog=item is not None)
                result.applied.append(
                    apply_interaction(
                        profile,
                        user_id=event.user_id,
                        event_type=event.type,
                        item_id=event.item_id,
                        ts=event.ts,
                        category=item.category if item else None,
                        embedding=item.embedding if item else None,
                        settings=settings,
                    )
                )
                result.updated_users[event.user_id] = max(result.updated_users.get(event.user_id, 0), event.ts)

            await self._publish_outcomes(result)

            pipe.multi()
            self._profiles.queue_write(
                pipe, {user: profiles[user] for user in sorted(touched_users)}, ttl_ms=settings.profile_ttl_s * 1000
            )
            self._statistics.queue_apply(
                pipe,
                self._observations(result.applied),
                tau_short_ms=settings.popularity_short_s * 1000,
                tau_long_ms=settings.popularity_long_s * 1000,
                top_n=settings.covisit_top_n,
            )
            self._watermarks.queue_advance(pipe, new_watermarks)
            if new_watermarks:
                await pipe.execute()
        result.redis_seconds = time.perf_counter() - started
        return result

    def _judge(
        self, event: Interaction, record: Record, profile: UserProfile, item: CatalogRecord | None
    ) -> Rejection | None:
        settings = self._settings
        return (
            check_timestamp(event.ts, record.timestamp_ms, settings)
            or check_duplicate(profile, event.event_id, event.ts, settings)
            or (check_click_rate(profile, event.ts, settings) if isinstance(event, ClickEvent) else None)
            or (check_price(event, item, settings) if isinstance(event, PurchaseEvent) else None)
        )

    @staticmethod
    def _observations(applied: list[Applied]) -> ItemObservations:
        """The batch's item events and co-visits, for the item statistics (canary users' left out)."""
        observations = ItemObservations()
        for event in applied:
            if not is_canary(event.user_id):
                observations.add(event.item_id, event.ts, event.weight, event.covisits)
        return observations

    async def _publish_outcomes(self, result: BatchResult) -> None:
        """Dead letters, quarantined and accepted events of the batch, delivered before its EXEC."""
        messages: list[tuple[str, bytes | None, bytes]] = []
        for record, rejection in result.rejected:
            if rejection.rule is Rule.MALFORMED:
                event_id = _event_id(record.value)
                letter = DeadLetter.wrap(
                    record.value,
                    reason=rejection.reason,
                    source=f"streams:{record.topic}",
                    max_raw_bytes=self._dlq_raw_max_bytes,
                    event_id=event_id,
                )
                messages.append((Topic.DLQ, event_id.encode() if event_id else record.key, letter.encode()))
        messages += [quarantined.to_kafka() for quarantined in result.quarantined]
        messages += [accepted.to_kafka() for accepted in result.accepted]
        if messages:
            await self._publish(messages)


def rereads_as_records(rereads: dict[tuple[str, int], Reread]) -> list[Record]:
    return [
        Record(topic, partition, record.offset, record.timestamp_ms, record.key, record.value)
        for (topic, partition), reread in rereads.items()
        for record in reread.records
    ]


def _event_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        raw = orjson.loads(value)
        return str(uuid.UUID(str(raw["event_id"]))) if isinstance(raw, dict) and "event_id" in raw else None
    except (orjson.JSONDecodeError, ValueError):
        return None
