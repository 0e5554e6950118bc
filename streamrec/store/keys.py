"""Every Redis key streamrec uses, spelled in one place.

| key                                   | type   | written by | content |
|---------------------------------------|--------|------------|---------|
| ``u:{user}``                          | string | streams    | the user's profile (msgpack, see profile.py), with TTL |
| ``i:{item}``                          | hash   | streams    | catalog record + float16 text embedding (catalog.py) |
| ``is:{item}``                         | hash   | streams    | decayed popularity: ``s``/``l`` (short/long) at ``t`` (ms) |
| ``cv:{item}``                         | zset   | streams    | co-visitation neighbours -> weight, top-N kept |
| ``z:pop:short`` / ``z:pop:long``      | zset   | streams    | items by log decayed popularity (comparable at any time) |
| ``z:trending``                        | zset   | streams    | items by short/long popularity ratio at their last event |
| ``wm:{group}:{topic}:{partition}``    | string | streams    | highest Kafka offset applied (exactly-once watermark) |
"""

from __future__ import annotations

POPULARITY_SHORT = "z:pop:short"
POPULARITY_LONG = "z:pop:long"
TRENDING = "z:trending"


def user(user_id: str) -> str:
    return f"u:{user_id}"


def item(item_id: str) -> str:
    return f"i:{item_id}"


def item_stats(item_id: str) -> str:
    return f"is:{item_id}"


def covisit(item_id: str) -> str:
    return f"cv:{item_id}"


def watermark(group: str, topic: str, partition: int) -> str:
    return f"wm:{group}:{topic}:{partition}"
