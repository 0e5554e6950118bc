"""The Redis layout: every key streamrec uses and how every stored value is encoded.

| key                                | type   | written by | content |
|------------------------------------|--------|------------|---------|
| ``u:{user}``                       | string | streams    | the user's profile (msgpack, :func:`encode_profile`), with TTL |
| ``i:{item}``                       | hash   | streams    | catalog record + float16 text embedding (fields :data:`CATALOG_FIELDS`) |
| ``is:{item}``                      | hash   | streams    | decayed popularity, short and long, as of the item's newest event (:data:`POPULARITY_FIELDS`) |
| ``cv:{item}``                      | zset   | streams    | co-visitation neighbours -> count, top-N kept |
| ``z:pop:short``                    | zset   | streams    | items by log short-term popularity + t / tau (ranks the same at any later time): trending |
| ``z:catalog``                      | zset   | streams    | item -> time (ms) it was last stored; the item index reads changes from it |
| ``wm:{group}:{topic}:{partition}`` | string | streams    | highest Kafka offset applied (exactly-once watermark) |
| ``r:{user}``                       | string | serving    | the user's latest recommendation list (JSON bytes), with TTL |
| ``ak:{key id}``                    | hash   | `keys` CLI | an API key: name, kind, scopes, origins, times, SHA-256 digest (:data:`API_KEY_FIELDS`) |
| ``s:apikeys``                      | set    | `keys` CLI | every key id ever created (what `streamrec keys list` reads) |
| ``rl:{limit}:{subject}``           | string | serving    | a rate limit's theoretical arrival time (µs, GCRA), expires when idle |
| ``xp:{experiment}``                | string | `experiments` CLI | an experiment's definition (JSON, :class:`streamrec.experiments.definition.Experiment`) |
| ``s:experiments``                  | set    | `experiments` CLI | every experiment name ever created |
| ``at:{user}``                      | string | attribution | the user's recent impressions and seen event ids (msgpack), with TTL |
| ``xc:{experiment}:{variant}:{metric}`` | hash | attribution | user -> attributed count (impressions, clicks, carts, purchases, revenue, ...) |
| ``xg:{experiment}:{variant}``      | hash   | serving    | guardrail counts of served lists: lists, degraded, empty, latency buckets |

Braces mark the placeholders; they are not Redis Cluster hash tags. Keys are built only here,
and the Redis functions (``functions.lua``) receive every key they touch and every field name
they read from their caller: a command then names all its keys (what Redis Cluster routes by),
and the layout cannot differ between Python and Lua.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgpack
import numpy as np

from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import INTERACTION_TYPES, RecentInteraction, UserProfile

PROFILE_PREFIX = "u:"
ITEM_PREFIX = "i:"
ITEM_STATS_PREFIX = "is:"
COVISIT_PREFIX = "cv:"
WATERMARK_PREFIX = "wm:"
RECOMMENDATIONS_PREFIX = "r:"
POPULARITY_SHORT_KEY = "z:pop:short"
CATALOG_CHANGES_KEY = "z:catalog"
API_KEY_PREFIX = "ak:"
API_KEYS_INDEX_KEY = "s:apikeys"
RATE_LIMIT_PREFIX = "rl:"
EXPERIMENT_PREFIX = "xp:"
EXPERIMENTS_INDEX_KEY = "s:experiments"
ATTRIBUTION_PREFIX = "at:"
EXPERIMENT_COUNTS_PREFIX = "xc:"
GUARDRAILS_PREFIX = "xg:"

# Fields of ``i:{item}``; readers ask for them in this order (HMGET) and decode by position.
CATALOG_FIELDS = ("title", "cat", "brand", "price", "cur", "avail", "ts", "emb")
# Fields of ``is:{item}``: short-term and long-term decayed popularity, and the time (ms) they are as of.
POPULARITY_FIELDS = ("s", "l", "t")
# Fields of ``ak:{key id}`` (times in seconds since the epoch; ``revoked`` only once revoked).
API_KEY_FIELDS = ("name", "kind", "scopes", "origins", "created", "revoked", "sha256")


def profile_key(user_id: str) -> str:
    return f"{PROFILE_PREFIX}{user_id}"


def item_key(item_id: str) -> str:
    return f"{ITEM_PREFIX}{item_id}"


def item_stats_key(item_id: str) -> str:
    return f"{ITEM_STATS_PREFIX}{item_id}"


def covisit_key(item_id: str) -> str:
    return f"{COVISIT_PREFIX}{item_id}"


def watermark_key(group: str, topic: str, partition: int) -> str:
    return f"{WATERMARK_PREFIX}{group}:{topic}:{partition}"


def recommendations_key(user_id: str) -> str:
    return f"{RECOMMENDATIONS_PREFIX}{user_id}"


def api_key_key(key_id: str) -> str:
    return f"{API_KEY_PREFIX}{key_id}"


def rate_limit_key(limit: str, subject: str) -> str:
    """One key per limit and subject (a key id, a client address): each check touches one key."""
    return f"{RATE_LIMIT_PREFIX}{limit}:{subject}"


def experiment_key(name: str) -> str:
    return f"{EXPERIMENT_PREFIX}{name}"


def attribution_key(user_id: str) -> str:
    return f"{ATTRIBUTION_PREFIX}{user_id}"


def experiment_counts_key(experiment: str, variant: str, metric: str) -> str:
    """One hash per experiment, variant and metric, user -> value: the report reads per-user rows."""
    return f"{EXPERIMENT_COUNTS_PREFIX}{experiment}:{variant}:{metric}"


def guardrails_key(experiment: str, variant: str) -> str:
    return f"{GUARDRAILS_PREFIX}{experiment}:{variant}"


# --- profiles -------------------------------------------------------------------------------

PROFILE_FORMAT_VERSION = 2
# Interaction types are stored as their position: new types go at the end of INTERACTION_TYPES.
TYPE_CODES = {name: code for code, name in enumerate(INTERACTION_TYPES)}


class ProfileFormatError(ValueError):
    """A stored profile this code cannot read (another format version, or corrupt)."""


def encode_profile(profile: UserProfile) -> bytes:
    """Timestamps are stored as offsets from ``ref_ts`` (small integers pack into fewer bytes)."""
    ref = profile.ref_ts
    return msgpack.packb(
        {
            "f": PROFILE_FORMAT_VERSION,
            "t": ref,
            "r": [[ref - i.ts, i.item_id, TYPE_CODES[i.type]] for i in profile.recent],
            "a": profile.affinities,
            "v": None if profile.vector is None else profile.vector.astype(np.float16).tobytes(),
            "p": profile.purchased,
            "n": [profile.counts[name] for name in INTERACTION_TYPES],
            "s": ref - profile.last_seen,
            "k": [ref - ts for ts in profile.click_times],
            "d": [b"".join(event_id for event_id, _ in profile.seen_ids), [ref - ts for _, ts in profile.seen_ids]],
            "c": {t: [[ref - i.ts, i.item_id] for i in h] for t, h in profile.covisit_history.items()},
        },
        use_bin_type=True,
    )


def decode_profile(raw: bytes) -> UserProfile:
    """Raises :class:`ProfileFormatError` for a value this code cannot read."""
    try:
        data = msgpack.unpackb(raw, raw=False)
        version = data.get("f") if isinstance(data, dict) else None
    except (ValueError, msgpack.UnpackException) as error:
        raise ProfileFormatError(f"unreadable profile: {error}") from None
    if version != PROFILE_FORMAT_VERSION:
        raise ProfileFormatError(f"profile format {version!r}, this code reads {PROFILE_FORMAT_VERSION}")
    ref = data["t"]
    id_bytes, id_offsets = data["d"]
    return UserProfile(
        ref_ts=ref,
        recent=[RecentInteraction(ref - offset, item_id, INTERACTION_TYPES[code]) for offset, item_id, code in data["r"]],
        affinities=dict(data["a"]),
        vector=None if data["v"] is None else np.frombuffer(data["v"], dtype=np.float16).copy(),
        purchased=list(data["p"]),
        counts=dict(zip(INTERACTION_TYPES, data["n"], strict=True)),
        last_seen=ref - data["s"],
        click_times=[ref - offset for offset in data["k"]],
        seen_ids=[(id_bytes[8 * k : 8 * k + 8], ref - offset) for k, offset in enumerate(id_offsets)],
        covisit_history={
            kind: [RecentInteraction(ref - offset, item_id, kind) for offset, item_id in history]
            for kind, history in data["c"].items()
        },
    )


# --- catalog --------------------------------------------------------------------------------


def encode_catalog(record: CatalogRecord) -> dict[str, bytes | str]:
    """The fields of ``i:{item}`` (a subset of :data:`CATALOG_FIELDS`: ``emb`` only with an embedding)."""
    fields: dict[str, bytes | str] = {
        "title": record.title,
        "cat": json.dumps(list(record.category_path)),
        "brand": record.brand or "",
        "price": "" if record.price is None else repr(record.price),
        "cur": record.currency or "",
        "avail": "1" if record.available else "0",
        "ts": str(record.updated_ts),
    }
    if record.embedding is not None:
        fields["emb"] = record.embedding.astype(np.float16).tobytes()
    return fields


def decode_catalog(item_id: str, values: Sequence[bytes | None]) -> CatalogRecord | None:
    """A record from its field values in :data:`CATALOG_FIELDS` order (as HMGET returns them);
    ``None`` when the item is not stored."""
    if all(value is None for value in values):
        return None
    get = dict(zip(CATALOG_FIELDS, values, strict=True))
    price = (get["price"] or b"").decode()
    embedding = get["emb"]
    return CatalogRecord(
        item_id=item_id,
        title=get["title"].decode(),
        category_path=tuple(json.loads(get["cat"])),
        brand=(get["brand"] or b"").decode() or None,
        price=float(price) if price else None,
        currency=(get["cur"] or b"").decode() or None,
        available=get["avail"] in (None, b"1"),
        updated_ts=int(get["ts"]),
        embedding=None if embedding is None else np.frombuffer(embedding, dtype=np.float16).copy(),
    )
