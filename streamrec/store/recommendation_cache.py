"""The latest recommendation list per user (``r:{user}``), cached with a TTL.

The value is the list's JSON as bytes, exactly as published to the ``recommendations`` topic;
this store neither builds nor parses it, so the list's schema lives with its model alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as redis

from streamrec.store import layout
from streamrec.store.profile import UserProfile
from streamrec.store.profile_store import ProfileStore


class RecommendationCache:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @staticmethod
    def key(user_id: str) -> str:
        return layout.recommendations_key(user_id)

    async def write_many(self, lists: Iterable[tuple[str, bytes]], *, ttl_s: float) -> None:
        """(user id, list JSON) pairs, in one round trip."""
        ttl_ms = int(ttl_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, payload in lists:
                pipe.set(self.key(user_id), payload, px=ttl_ms)
            await pipe.execute()

    async def read_many(self, user_ids: Iterable[str]) -> list[bytes | None]:
        """The cached lists of ``user_ids`` in order, in one round trip (a pipeline of GETs, not
        one MGET: the users' keys are in different slots on a Redis Cluster)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.get(self.key(user_id))
            return await pipe.execute()

    async def read(self, user_id: str) -> bytes | None:
        return await self._redis.get(self.key(user_id))

    async def read_with_profile(self, user_id: str, profiles: ProfileStore) -> tuple[bytes | None, UserProfile | None]:
        """The cached list and the user's profile in one MGET (the API's hot path).

        On a Redis Cluster one MGET needs both keys in one slot.
        """
        cached, raw_profile = await self._redis.mget(self.key(user_id), profiles.key(user_id))
        return cached, profiles.decode(user_id, raw_profile)
