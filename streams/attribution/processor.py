"""Attribute impressions, clicks, carts and purchases to the lists that led to them, exactly once.

Input: ``events.impressions`` (which list a user was shown) and ``events.accepted`` (the
interactions the streams worker applied: cleaned, deduplicated, a purchase's price filled from
the catalog). Both are keyed by user. Per batch, in event-time order:

* an **impression** counts for its list's experiment and variant (impressions, items shown) and
  is remembered in the user's state for ``view_through_window_s``;
* an interaction with ``context.rec_id`` is credited **directly** to that list, labelled as the
  user's state remembers it (the labels the server gave the list) or, for a list whose
  impression never arrived, by the event's own ``context.variant``/``context.experiment``; a
  click on an item of an interleaved list also credits the item's team;
* a **purchase** without ``rec_id`` of an item the user was shown within the window is credited
  to the newest list that showed it (**view-through**);
* everything else is organic and counted only in the worker's metrics.

Exactly once, with the technique of the streams worker (``streams/processor.py``): one watermark
per (topic, partition) under this worker's group moves in the same MULTI/EXEC as the counts and
the user states, WATCHed with them; a batch re-read after a crash is skipped record by record.
``events.accepted`` itself may repeat a message (it is published before the streams worker's
commit), so the state also remembers the event ids it counted. Writes Redis lost (a failover,
an older snapshot) are read again from Kafka before the next batch of the partition, as in the
streams worker (``streams/rewind.py``).

Impressions arrive straight from the collector, interactions after the streams worker, so an
impression normally precedes the purchase it led to; a purchase processed before the impression
of the same list (only when the streams worker is far ahead of this worker) is not credited
view-through. Canary users (the end-to-end probe) are left out.

On a Redis Cluster the keys of one batch span slots; the cluster-ready layout (keys tagged by
partition) is the throughput issue's work, as for profiles.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import redis.asyncio as redis
from redis.exceptions import WatchError

from streamrec.deadletter import DeadLetter
from streamrec.events import EventValidator, ImpressionEvent, InvalidEvent, is_canary
from streamrec.experiments.definition import NO_EXPERIMENT
from streamrec.messages import AcceptedEvent, UnreadableMessage
from streamrec.settings import AttributionSettings
from streamrec.store.attribution import AttributionState, AttributionStore, CountKey, ShownList
from streamrec.store.watermarks import WatermarkStore
from streamrec.topics import Topic
from streams.processor import Record, rereads_as_records
from streams.rewind import KafkaOffsets, Reread, lost_before, reapply_missing

PublishMany = Callable[[list[tuple[str, bytes | None, bytes]]], Awaitable[None]]
TOPICS = (Topic.IMPRESSIONS, Topic.ACCEPTED)
METRIC_OF_TYPE = {"click": "clicks", "add_to_cart": "carts", "purchase": "purchases"}


@dataclass(frozen=True)
class Unreadable:
    reason: str


@dataclass
class AttributionResult:
    impressions: int = 0
    credited: Counter[str] = field(default_factory=Counter)  # "direct" / "view_through" -> interactions
    organic: int = 0  # interactions no list led to
    duplicates: int = 0  # event ids counted before (a repeated events.accepted message, a resent impression)
    skipped: int = 0  # at or below the watermark: applied before
    dead_letters: int = 0
    reread: int = 0  # records read again from Kafka because Redis lost them
    unrecoverable: Counter[str] = field(default_factory=Counter)  # topic -> lost records retention had deleted
    attempts: int = 1

    def merge(self, other: "AttributionResult") -> None:
        self.impressions += other.impressions
        self.credited += other.credited
        self.organic += other.organic
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        self.dead_letters += other.dead_letters
        self.reread += other.reread
        self.unrecoverable += other.unrecoverable
        self.attempts += other.attempts - 1


def parse(record: Record, validator: EventValidator) -> ImpressionEvent | AcceptedEvent | Unreadable:
    """The record as its topic's contract reads it; anything unreadable is dead-lettered, never retried."""
    if record.topic == Topic.ACCEPTED.value:
        try:
            return AcceptedEvent.decode(record.value)
        except UnreadableMessage as error:
            return Unreadable(error.reason)
    if record.value is None:
        return Unreadable("no value (a tombstone): events.impressions carries impressions, never deletes")
    try:
        event = validator.parse(orjson.loads(record.value))
    except orjson.JSONDecodeError as error:
        return Unreadable(f"not JSON: {error}")
    except InvalidEvent as error:
        return Unreadable(error.reason)
    if not isinstance(event, ImpressionEvent):
        return Unreadable(f"a {event.type} event on {record.topic}")
    return event


def _user(parsed: ImpressionEvent | AcceptedEvent) -> str:
    return parsed.user_id if isinstance(parsed, ImpressionEvent) else parsed.event.user_id


def _ts(parsed: ImpressionEvent | AcceptedEvent | Unreadable) -> int:
    if isinstance(parsed, Unreadable):
        return 0
    return parsed.ts if isinstance(parsed, ImpressionEvent) else parsed.event.ts


class Tally:
    """The batch's counts: (experiment, variant, metric) -> user -> value."""

    def __init__(self) -> None:
        self.counts: dict[CountKey, defaultdict[str, float]] = {}

    def add(self, experiment: str, variant: str, metric: str, user: str, value: float = 1) -> None:
        self.counts.setdefault((experiment, variant, metric), defaultdict(float))[user] += value


class AttributionProcessor:
    def __init__(self, *, client: redis.Redis, settings: AttributionSettings, group: str, publish: PublishMany,
                 offsets: KafkaOffsets, dlq_raw_max_bytes: int = 262_144) -> None:
        self._redis = client
        self._settings = settings
        self._publish = publish
        self._offsets = offsets
        self._dlq_raw_max_bytes = dlq_raw_max_bytes
        self._validator = EventValidator(max_future_skew_s=None)
        self._states = AttributionStore(client)
        self._watermarks = WatermarkStore(client, group=group)

    async def process(self, records: list[Record]) -> AttributionResult:
        """Apply the batch; records Redis lost before it (its watermark behind the batch) first."""
        result = await self.catch_up(await lost_before((((r.topic, r.partition), r.offset) for r in records), self._watermarks))
        result.merge(await self._process_once(records))
        return result

    async def catch_up(self, until: dict[tuple[str, int], int]) -> AttributionResult:
        result = AttributionResult()

        async def apply(missing: dict[tuple[str, int], Reread]) -> None:
            again = rereads_as_records(missing)
            result.reread += len(again)
            for (topic, _), reread in missing.items():
                result.unrecoverable[topic] += reread.unrecoverable
            result.merge(await self._process_once(again))

        await reapply_missing(until, watermarks=self._watermarks, offsets=self._offsets, limit=self._settings.batch_max, apply=apply)
        return result

    async def _process_once(self, records: list[Record]) -> AttributionResult:
        parsed = [(record, parse(record, self._validator)) for record in records]
        parsed.sort(key=lambda pair: (_ts(pair[1]), pair[0].topic, pair[0].partition, pair[0].offset))
        attempts = 0
        while True:
            attempts += 1
            try:
                result = await self._apply(parsed)
            except WatchError:
                continue  # another worker touched these keys (a rebalance): recompute from what is there now
            result.attempts = attempts
            return result

    async def _apply(self, parsed: list[tuple[Record, ImpressionEvent | AcceptedEvent | Unreadable]]) -> AttributionResult:
        result = AttributionResult()
        partitions = sorted({(record.topic, record.partition) for record, _ in parsed})
        users = sorted({_user(item) for _, item in parsed if not isinstance(item, Unreadable)})
        tally = Tally()
        letters: list[tuple[str, bytes | None, bytes]] = []
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._watermarks.keys(partitions), *(self._states.key(user) for user in users))
            applied_up_to = await self._watermarks.read(partitions, via=pipe)
            states = await self._states.read_many(users, via=pipe)
            touched: set[str] = set()
            new_watermarks: dict[tuple[str, int], int] = {}
            for record, item in parsed:
                tp = (record.topic, record.partition)
                if record.offset <= applied_up_to[tp]:
                    result.skipped += 1
                    continue
                new_watermarks[tp] = max(new_watermarks.get(tp, -1), record.offset)
                if isinstance(item, Unreadable):
                    letters.append((Topic.DLQ.value, record.key, DeadLetter.wrap(
                        record.value, reason=item.reason, source=f"attribution:{record.topic}",
                        max_raw_bytes=self._dlq_raw_max_bytes).encode()))
                    result.dead_letters += 1
                    continue
                user = _user(item)
                if is_canary(user):
                    continue
                state = states[user]
                touched.add(user)
                if isinstance(item, ImpressionEvent):
                    self._impression(item, state, tally, result)
                else:
                    self._interaction(item, state, tally, result)
            if letters:
                await self._publish(letters)
            pipe.multi()
            self._states.queue_write(pipe, {user: states[user] for user in sorted(touched)},
                                     ttl_ms=self._settings.state_ttl_s * 1000)
            self._states.queue_counts(pipe, tally.counts)
            self._watermarks.queue_advance(pipe, new_watermarks)
            if new_watermarks:
                await pipe.execute()
        return result

    def _impression(self, event: ImpressionEvent, state: AttributionState, tally: Tally, result: AttributionResult) -> None:
        event_id = str(event.event_id)
        if state.has_seen(event_id):
            result.duplicates += 1
            return
        state.remember(event_id, event.ts, keep=self._settings.seen_ids_kept)
        shown = sorted(event.items, key=lambda item: item.position)
        experiment = event.experiment or NO_EXPERIMENT
        state.show(ShownList(event.rec_id, experiment, event.variant, event.ts, tuple(i.item_id for i in shown),
                             tuple(i.team for i in shown)),
                   keep=self._settings.shown_lists_kept, window_ms=int(self._settings.view_through_window_s * 1000))
        tally.add(experiment, event.variant, "impressions", event.user_id)
        tally.add(experiment, event.variant, "items_shown", event.user_id, len(shown))
        result.impressions += 1

    def _interaction(self, accepted: AcceptedEvent, state: AttributionState, tally: Tally, result: AttributionResult) -> None:
        event = accepted.event
        event_id = str(event.event_id)
        if state.has_seen(event_id):
            result.duplicates += 1
            return
        state.remember(event_id, event.ts, keep=self._settings.seen_ids_kept)
        context = event.context
        shown: ShownList | None = None
        if context.rec_id is not None:
            shown = state.list_by_id(context.rec_id)
            if shown is not None:
                labels = (shown.experiment, shown.variant)
            elif context.variant is not None:
                labels = (context.experiment or NO_EXPERIMENT, context.variant)
            else:
                result.organic += 1  # a rec_id nothing here knows, and no label to count it under
                return
            how = "direct"
        elif event.type == "purchase" and (
            shown := state.last_showing(event.item_id, event.ts, int(self._settings.view_through_window_s * 1000))
        ) is not None:
            labels = (shown.experiment, shown.variant)
            how = "view_through"
        else:
            result.organic += 1
            return
        experiment, variant = labels
        tally.add(experiment, variant, METRIC_OF_TYPE[event.type], event.user_id)
        if event.type == "purchase":
            tally.add(experiment, variant, "revenue", event.user_id, (event.price or 0.0) * event.quantity)
            if how == "view_through":
                tally.add(experiment, variant, "view_through", event.user_id)
        if event.type == "click" and shown is not None and (team := shown.team_of(event.item_id)) is not None:
            tally.add(experiment, variant, f"clicks_{team}", event.user_id)
        result.credited[how] += 1
