"""What the attribution worker keeps in Redis: per-user state and per-user attributed counts.

``at:{user}`` (msgpack, with a TTL) holds the lists the user was recently shown (for view-through
and for labelling a click by its ``rec_id``) and the event ids already counted, since
``events.accepted`` may repeat a message after a streams worker crash. ``xc:{experiment}:
{variant}:{metric}`` are hashes user -> value, so the report has every user's row (what the
per-user statistics need) and the totals are their sums. The attribution worker writes both in
the transaction that moves its watermarks (see ``streams/attribution/processor.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgpack
import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from streamrec.store import layout

# Per user, experiment and variant. clicks_a / clicks_b: clicks on each team's items (interleaving).
METRICS = ("impressions", "items_shown", "clicks", "carts", "purchases", "revenue", "view_through", "clicks_a", "clicks_b")
STATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShownList:
    rec_id: str
    experiment: str
    variant: str
    ts: int
    items: tuple[str, ...]
    teams: tuple[str | None, ...]

    def team_of(self, item_id: str) -> str | None:
        return next((team for item, team in zip(self.items, self.teams, strict=True) if item == item_id), None)


@dataclass
class AttributionState:
    shown: list[ShownList] = field(default_factory=list)  # oldest first
    seen: list[tuple[str, int]] = field(default_factory=list)  # (event id, ts), oldest first

    def has_seen(self, event_id: str) -> bool:
        return any(seen == event_id for seen, _ in self.seen)

    def remember(self, event_id: str, ts: int, *, keep: int) -> None:
        self.seen.append((event_id, ts))
        del self.seen[:-keep]

    def show(self, shown: ShownList, *, keep: int, window_ms: int) -> None:
        self.shown.append(shown)
        newest = max(s.ts for s in self.shown)
        self.shown = [s for s in self.shown if newest - s.ts <= window_ms][-keep:]

    def list_by_id(self, rec_id: str) -> ShownList | None:
        return next((s for s in reversed(self.shown) if s.rec_id == rec_id), None)

    def last_showing(self, item_id: str, ts: int, window_ms: int) -> ShownList | None:
        """The newest list shown within ``window_ms`` before ``ts`` that held ``item_id``."""
        return next((s for s in reversed(self.shown) if s.ts <= ts and ts - s.ts <= window_ms and item_id in s.items), None)


def encode_state(state: AttributionState) -> bytes:
    return msgpack.packb({
        "f": STATE_FORMAT_VERSION,
        "l": [[s.rec_id, s.experiment, s.variant, s.ts, list(s.items), list(s.teams)] for s in state.shown],
        "s": [[event_id, ts] for event_id, ts in state.seen],
    }, use_bin_type=True)


def decode_state(raw: bytes | None) -> AttributionState:
    """A new state for None or for a value this code cannot read (it holds no counts: nothing is lost
    but the memory of what was shown and seen)."""
    if raw is None:
        return AttributionState()
    try:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict) or data.get("f") != STATE_FORMAT_VERSION:
            return AttributionState()
        return AttributionState(
            shown=[ShownList(r, x, v, ts, tuple(items), tuple(teams)) for r, x, v, ts, items, teams in data["l"]],
            seen=[(event_id, ts) for event_id, ts in data["s"]],
        )
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        return AttributionState()


CountKey = tuple[str, str, str]  # (experiment, variant, metric)


class AttributionStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @staticmethod
    def key(user_id: str) -> str:
        return layout.attribution_key(user_id)

    async def read_many(self, user_ids: Sequence[str], *, via: Pipeline | None = None) -> dict[str, AttributionState]:
        if not user_ids:
            return {}
        reader = via if via is not None else self._redis
        values = await reader.mget([self.key(user) for user in user_ids])
        return {user: decode_state(value) for user, value in zip(user_ids, values, strict=True)}

    def queue_write(self, pipe: Pipeline, states: Mapping[str, AttributionState], *, ttl_ms: int) -> None:
        for user, state in states.items():
            pipe.set(self.key(user), encode_state(state), px=ttl_ms)

    @staticmethod
    def queue_counts(pipe: Pipeline, counts: Mapping[CountKey, Mapping[str, float]]) -> None:
        for (experiment, variant, metric), per_user in counts.items():
            key = layout.experiment_counts_key(experiment, variant, metric)
            for user, value in per_user.items():
                if metric == "revenue":
                    pipe.hincrbyfloat(key, user, value)
                else:
                    pipe.hincrby(key, user, int(value))

    async def counts(self, experiment: str, variant: str) -> dict[str, dict[str, float]]:
        """metric -> user -> value for one variant."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for metric in METRICS:
                pipe.hgetall(layout.experiment_counts_key(experiment, variant, metric))
            found = await pipe.execute()
        return {metric: {user.decode(): float(value) for user, value in rows.items()} for metric, rows in zip(METRICS, found, strict=True)}
