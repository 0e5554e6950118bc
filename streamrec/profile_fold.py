"""Pure profile arithmetic: how one accepted interaction changes a user's profile.

This is the fold that defines a profile; the worker applies it incrementally,
the tests apply it in one batch to check the worker (nothing lost, nothing
counted twice), and offline evaluation builds its profiles and co-visit pairs
with it (``trainer/offline/pipeline.py``). Decayed values are kept as of the
newest event time (``ref_ts``): a newer event first decays what is there, an
older (late) event is added with its own decay, so the sum
``Σ w(type) · decay(ref_ts - ts) · x`` does not depend on the order in which the
three interaction topics deliver events.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from streamrec.settings import StreamsSettings
from streamrec.store.profile import RecentInteraction, UserProfile


@dataclass(frozen=True)
class Applied:
    """What the item-level statistics need to know about one applied interaction."""

    user_id: str
    item_id: str
    type: str
    ts: int
    weight: float
    covisits: tuple[str, ...]  # items of the same type this user interacted with within the co-visit window


def weight_of(event_type: str, settings: StreamsSettings) -> float:
    return {"click": settings.weight_click, "add_to_cart": settings.weight_cart, "purchase": settings.weight_purchase}[
        event_type
    ]


def decay(delta_ms: float, half_life_s: float) -> float:
    """Exponential decay factor after ``delta_ms`` with the given half-life."""
    return math.pow(0.5, delta_ms / 1000.0 / half_life_s)


def apply_interaction(
    profile: UserProfile,
    *,
    user_id: str,
    event_type: str,
    item_id: str,
    ts: int,
    category: str | None,
    embedding: np.ndarray | None,
    settings: StreamsSettings,
) -> Applied:
    weight = weight_of(event_type, settings)
    covisits = _covisit(profile, event_type, item_id, ts, settings)

    if ts >= profile.ref_ts:
        factor = decay(ts - profile.ref_ts, settings.half_life_s) if profile.ref_ts else 1.0
        contribution = weight
        if factor != 1.0:
            profile.affinities = {category_: value * factor for category_, value in profile.affinities.items()}
        profile.ref_ts = ts
    else:
        factor = 1.0
        contribution = weight * decay(profile.ref_ts - ts, settings.half_life_s)

    if category:
        profile.affinities[category] = profile.affinities.get(category, 0.0) + contribution
        if len(profile.affinities) > settings.categories_max:
            strongest = sorted(profile.affinities.items(), key=lambda kv: (-kv[1], kv[0]))[: settings.categories_max]
            profile.affinities = dict(strongest)

    if embedding is not None:
        # A profile built from another encoder's vectors (the item encoder was replaced by one of
        # another width, and the catalog is being re-embedded) is not comparable with this item:
        # the vector starts again from the new encoder's items rather than stopping the worker.
        same_space = profile.vector is not None and profile.vector.shape == embedding.shape
        current = profile.vector.astype(np.float32) if same_space else np.zeros_like(embedding, dtype=np.float32)
        profile.vector = (current * factor + contribution * embedding.astype(np.float32)).astype(np.float16)

    entry = RecentInteraction(ts, item_id, event_type)
    keys = [existing.sort_key() for existing in profile.recent]
    profile.recent.insert(bisect.bisect_right(keys, entry.sort_key()), entry)
    del profile.recent[: max(0, len(profile.recent) - settings.recent_max)]

    profile.counts[event_type] += 1
    if event_type == "purchase":
        if item_id in profile.purchased:
            profile.purchased.remove(item_id)
        profile.purchased.append(item_id)
        del profile.purchased[: max(0, len(profile.purchased) - settings.purchased_max)]
    profile.last_seen = max(profile.last_seen, ts)
    return Applied(user_id, item_id, event_type, ts, weight, covisits)


def _covisit(profile: UserProfile, event_type: str, item_id: str, ts: int, settings: StreamsSettings) -> tuple[str, ...]:
    """Items of the same type (co-clicked, co-carted, co-bought) within the window; then remember this one.

    The history is per type because one type's events arrive from one partition in
    a fixed order; a history shared across topics would make the pairs depend on
    how the topics' deliveries interleave.
    """
    return remember_covisit(
        profile.covisit_history.setdefault(event_type, []),
        RecentInteraction(ts, item_id, event_type),
        window_ms=settings.covisit_window_s * 1000,
        keep=settings.covisit_history,
    )


def remember_covisit(history: list[RecentInteraction], entry: RecentInteraction, *, window_ms: float, keep: int) -> tuple[str, ...]:
    """The co-visitation rule: the items in ``history`` that ``entry`` pairs with, then ``entry`` remembered.

    ``entry`` pairs with every other item of ``history`` within ``window_ms`` of it (an item that
    occurs there twice pairs twice); ``history`` stays in time order and keeps its newest ``keep``.
    A pair is counted once, when the later-arriving of its two events is applied.
    """
    neighbours = tuple(
        other.item_id for other in history if other.item_id != entry.item_id and abs(other.ts - entry.ts) <= window_ms
    )
    keys = [existing.sort_key() for existing in history]
    history.insert(bisect.bisect_right(keys, entry.sort_key()), entry)
    del history[: max(0, len(history) - keep)]
    return neighbours
