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
| ``z:catalog``                         | zset   | streams    | item -> time (ms) it was last stored; the item index reads changes from it |
| ``r:{user}``                          | string | serving    | the user's latest recommendation list (JSON), with TTL |
"""

from __future__ import annotations

POPULARITY_SHORT = "z:pop:short"
POPULARITY_LONG = "z:pop:long"
TRENDING = "z:trending"
CATALOG_CHANGES = "z:catalog"


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


def recommendations(user_id: str) -> str:
    return f"r:{user_id}"
