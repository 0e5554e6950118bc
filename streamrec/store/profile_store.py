"""User profiles in Redis (``u:{user}``): the one place a stored profile is read and decoded.

A stored profile this code cannot decode (another format version, or corrupt) is treated as
absent and counted in :attr:`ProfileStore.unreadable`, which components export as a metric:
the streams worker then rebuilds the profile from the next events instead of blocking the
partition, and serving recommends as for a new user.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from streamrec.store import functions, layout
from streamrec.store.profile import UserProfile

log = logging.getLogger(__name__)


class ProfileStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self.unreadable = 0  # stored profiles that could not be decoded, since this store was made

    @staticmethod
    def key(user_id: str) -> str:
        return layout.profile_key(user_id)

    def decode(self, user_id: str, raw: bytes | None) -> UserProfile | None:
        """``None`` when there is no profile or it cannot be read (counted)."""
        if raw is None:
            return None
        try:
            return layout.decode_profile(raw)
        except layout.ProfileFormatError as error:
            self.unreadable += 1
            log.warning("profile of %s unreadable (%s); treating the user as new", user_id, error)
            return None

    async def read_many(self, user_ids: Sequence[str], *, via: Pipeline | None = None) -> dict[str, UserProfile | None]:
        """Profiles in one MGET. ``via``: a pipeline that WATCHes these keys (it reads at once)."""
        if not user_ids:
            return {}
        reader = via if via is not None else self._redis
        raw = await reader.mget([self.key(user_id) for user_id in user_ids])
        return {user_id: self.decode(user_id, value) for user_id, value in zip(user_ids, raw, strict=True)}

    async def read(self, user_id: str) -> UserProfile | None:
        return self.decode(user_id, await self._redis.get(self.key(user_id)))

    def queue_write(self, pipe: Pipeline, profiles: Mapping[str, UserProfile], *, ttl_ms: int) -> None:
        """Queue the profiles, in the mapping's order, onto a transaction (one function call)."""
        if not profiles:
            return
        pipe.fcall(
            functions.SET_PROFILES,
            len(profiles),
            *(self.key(user_id) for user_id in profiles),
            ttl_ms,
            *(layout.encode_profile(profile) for profile in profiles.values()),
        )
