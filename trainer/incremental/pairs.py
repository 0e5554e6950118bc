"""Training pairs from accepted events: the user's context before each click or purchase -> that item.

Item texts come from the catalog in Redis (``i:{item}``, written by the streams worker) and are
written with :func:`streamrec.model.texts.item_text`, exactly as serving writes them. Events of
items the catalog does not know are dropped (counted). Add-to-cart events count as context but
are not targets. Each example remembers the time of its target, so the gate can hold out the
newest slice.

Items are numbered per cycle (:class:`ItemTable`), because the fine-tuning recipe indexes texts
by integer; the table covers only items this cycle sees (new events plus the replay buffer), so
co-visitation counts stay small whatever the catalog size.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as redis

from streamrec.datasets.sequences import Example
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.model.texts import item_text
from trainer.incremental.consume import AcceptedInteraction

TARGET_TYPES = ("click", "purchase")


@dataclass(frozen=True, slots=True)
class ItemText:
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class TimedExample:
    """An example in item ids (stable across cycles) with the time of its target event (ms)."""

    user: str
    history: tuple[str, ...]
    target: str
    ts: int


@dataclass
class ItemTable:
    """Item id <-> per-cycle index, with titles and texts by index (what the recipe reads)."""

    ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def add(self, item_id: str, info: ItemText) -> int:
        found = self.index.get(item_id)
        if found is None:
            found = self.index[item_id] = len(self.ids)
            self.ids.append(item_id)
            self.titles.append(info.title)
            self.texts.append(info.text)
        return found

    def example(self, timed: TimedExample) -> Example:
        return Example(timed.user, tuple(self.index[i] for i in timed.history), self.index[timed.target])

    def __len__(self) -> int:
        return len(self.ids)


def catalog_texts(redis_url: str, item_ids: Iterable[str]) -> dict[str, ItemText]:
    """Title and item text of every known item (unknown ones are left out)."""
    records = asyncio.run(_catalog_records(redis_url, list(dict.fromkeys(item_ids))))
    return {
        item_id: ItemText(record.title, item_text(record.title, record.category_path, record.brand))
        for item_id, record in records.items()
    }


async def _catalog_records(redis_url: str, item_ids: list[str]) -> dict[str, CatalogRecord]:
    client = redis.Redis.from_url(redis_url)
    try:
        return await CatalogStore(client).read(item_ids)
    finally:
        await client.aclose()


@dataclass
class PairStats:
    events: int = 0
    unknown_item_events: int = 0
    examples: int = 0
    users: int = 0


def build_examples(
    events: Sequence[AcceptedInteraction],
    known: dict[str, ItemText],
    *,
    context: Sequence[AcceptedInteraction] = (),
    max_history: int = 20,
) -> tuple[list[TimedExample], PairStats]:
    """One example per click or purchase in ``events`` that has at least one earlier interaction
    of its user (in ``events`` or in the older ``context`` events, which are never targets).

    A user's events are ordered by event time (then Kafka offset); the context is the items
    before the target, newest last, at most ``max_history``.
    """
    stats = PairStats(events=len(events))
    by_user: dict[str, list[tuple[AcceptedInteraction, bool]]] = defaultdict(list)
    for source, is_new in ((context, False), (events, True)):
        for event in source:
            if event.item_id not in known:
                stats.unknown_item_events += is_new
                continue
            by_user[event.user_id].append((event, is_new))
    examples: list[TimedExample] = []
    for user, own in by_user.items():
        own.sort(key=lambda pair: (pair[0].ts, pair[0].topic, pair[0].partition, pair[0].offset))
        history: list[str] = []
        for event, is_new in own:
            if is_new and event.type in TARGET_TYPES and history and event.item_id != history[-1]:
                examples.append(TimedExample(user, tuple(history[-max_history:]), event.item_id, event.ts))
            if not history or history[-1] != event.item_id:  # a repeated view of the same item is one step
                history.append(event.item_id)
    stats.examples = len(examples)
    stats.users = sum(any(is_new for _, is_new in own) for own in by_user.values())
    examples.sort(key=lambda e: (e.ts, e.user))
    return examples, stats


def split_by_time(
    examples: Sequence[TimedExample], holdout_fraction: float, holdout_max: int | None = None
) -> tuple[list[TimedExample], list[TimedExample]]:
    """(older examples to train on, the newest ``holdout_fraction`` -- at most ``holdout_max`` -- to
    judge on), by target time."""
    ordered = sorted(examples, key=lambda e: (e.ts, e.user))
    held = max(1, round(len(ordered) * holdout_fraction))
    if holdout_max is not None:
        held = min(held, holdout_max)
    cut = len(ordered) - held if ordered else 0
    return ordered[:cut], ordered[cut:]
