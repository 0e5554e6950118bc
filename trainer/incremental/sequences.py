"""Users' item sequences from accepted events, the held-out newest slice, and the catalog's text vectors.

A user's sequence is their items oldest first: the events of earlier cycles (kept in the replay
buffer, else re-read from Kafka as context) followed by this cycle's. Events are ordered by event
time, then position on ``events.accepted``; a repeated interaction with the item just seen is one
step (a click then a purchase of the same item says nothing about what comes next).

Only items the model can rank take part: items it knows, and new items whose catalog record in
Redis carries a text embedding of the model's dimension (the item encoder's unit vectors; the
model appends them with a zero ID part). Events of other items are left out and counted.
Canary users (the end-to-end probe, :func:`streamrec.events.is_canary`) are left out whole,
new events and context alike: their clicks are a measurement, not shopping.

The gate judges on the newest slice: among the users whose last event of the cycle is in the
newest ``fraction`` of the cycle's events by time, that last event is held out as a
(history -> target) row. It is not trained on in that cycle, and its pair is not added to the
challenger's co-visitation counts before the gate.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.events import is_canary
from streamrec.settings import RedisSettings
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from trainer.incremental.consume import AcceptedInteraction


@dataclass(frozen=True, slots=True)
class Step:
    """One item of a user's sequence: the item, its event type and time (ms)."""

    item: str
    type: str
    ts: int


@dataclass(frozen=True, slots=True)
class HeldOut:
    user: str
    history: tuple[str, ...]
    target: str
    ts: int


@dataclass
class CycleSequences:
    """What a cycle trains and judges on, in item ids."""

    train: dict[str, list[Step]] = field(default_factory=dict)
    """Per user with new events: the full sequence (earlier steps, then new ones), held-out step removed."""
    earlier: dict[str, int] = field(default_factory=dict)
    """Per user: how many leading steps of ``train[user]`` came from earlier cycles."""
    full: dict[str, list[Step]] = field(default_factory=dict)
    """Per user with new events: the whole sequence, held-out step included (what the next cycle continues)."""
    held_out: list[HeldOut] = field(default_factory=list)
    skipped_events: int = 0
    """New events of items the model cannot rank (unknown and no usable embedding)."""
    canary_events: int = 0
    """New events of canary users, left out."""

    def new_steps(self) -> int:
        return sum(len(steps) - self.earlier.get(user, 0) for user, steps in self.train.items())


def _ordered(events: Iterable[AcceptedInteraction]) -> list[AcceptedInteraction]:
    return sorted(events, key=lambda e: (e.ts, e.topic, e.partition, e.offset))


def _append(steps: list[Step], step: Step) -> None:
    if not steps or steps[-1].item != step.item:
        steps.append(step)


def build(
    events: Sequence[AcceptedInteraction],
    earlier: Mapping[str, Sequence[Step]],
    rankable: set[str] | frozenset[str],
    *,
    context: Sequence[AcceptedInteraction] = (),
    holdout_fraction: float,
    holdout_max: int,
    max_history: int,
) -> CycleSequences:
    """Per-user sequences of this cycle's ``events`` joined with their ``earlier`` steps (or, for
    users ``earlier`` does not hold, their ``context`` events), and the held-out rows.

    Each sequence keeps the newest ``max_history`` earlier steps (the model reads no more).
    """
    out = CycleSequences()
    fresh: dict[str, list[AcceptedInteraction]] = defaultdict(list)
    for event in _ordered(events):
        if is_canary(event.user_id):
            out.canary_events += 1
        elif event.item_id in rankable:
            fresh[event.user_id].append(event)
        else:
            out.skipped_events += 1
    older: dict[str, list[AcceptedInteraction]] = defaultdict(list)
    for event in _ordered(context):
        if event.user_id in fresh and event.user_id not in earlier and event.item_id in rankable:
            older[event.user_id].append(event)
    for user, own in fresh.items():
        steps: list[Step] = []
        for step in earlier.get(user, ()):
            if step.item in rankable:
                _append(steps, step)
        for event in older.get(user, ()):
            _append(steps, Step(event.item_id, event.type, event.ts))
        steps = steps[-max_history:]
        out.earlier[user] = len(steps)
        for event in own:
            _append(steps, Step(event.item_id, event.type, event.ts))
        out.train[user] = steps
        out.full[user] = steps
    # The newest slice by time: the cut is the time above which the newest `fraction` of events lie.
    times = np.sort(np.fromiter((e.ts for own in fresh.values() for e in own), dtype=np.int64))
    if times.size:
        cut = int(times[min(times.size - 1, int(np.floor(times.size * (1 - holdout_fraction))))])
        candidates = []
        for user, steps in out.train.items():
            new = len(steps) - out.earlier[user]
            if new >= 1 and len(steps) >= 2 and steps[-1].ts >= cut:
                candidates.append(user)
        candidates.sort(key=lambda user: (out.train[user][-1].ts, user))
        for user in candidates[-holdout_max:]:
            steps = out.train[user]
            out.held_out.append(HeldOut(user, tuple(s.item for s in steps[:-1]), steps[-1].item, steps[-1].ts))
            out.train[user] = steps[:-1]
    return out


def paired_ndcg(challenger: np.ndarray, champion: np.ndarray) -> dict[str, float]:
    """Means of per-row NDCG@10 of two models on the same rows and the standard error of their
    paired difference (rows differ far more between each other than the models do, so the
    paired SE is much smaller than either model's own)."""
    a, b = np.asarray(challenger, np.float64), np.asarray(champion, np.float64)
    difference = a - b
    se = float(difference.std(ddof=1) / np.sqrt(difference.size)) if difference.size > 1 else 0.0
    return {"challenger": float(a.mean()) if a.size else 0.0, "champion": float(b.mean()) if b.size else 0.0,
            "difference": float(difference.mean()) if difference.size else 0.0, "se": se, "rows": int(difference.size)}


def catalog_embeddings(redis_settings: RedisSettings, item_ids: Iterable[str], dim: int) -> dict[str, np.ndarray]:
    """Unit text embeddings (float32) of the items whose catalog record has one of ``dim`` dimensions."""
    wanted = list(dict.fromkeys(item_ids))
    if not wanted:
        return {}
    records = asyncio.run(_read(redis_settings, wanted))
    vectors = {item_id: record.text_vector(dim) for item_id, record in records.items()}
    return {item_id: vector for item_id, vector in vectors.items() if vector is not None}


async def _read(redis_settings: RedisSettings, item_ids: list[str]):
    client = connect(redis_settings)
    try:
        return await CatalogStore(client).read(item_ids)
    finally:
        await client.aclose()
