"""API keys in Redis: one hash per key id (``ak:{id}``) and a set of the ids for listing.

A key's hash holds its name, kind, scopes, origins, creation and revocation times and the
SHA-256 digest of the key string (:mod:`streamrec.auth.keys` says why a fast hash is right);
the key string itself is returned once by :meth:`KeyStore.create` and never written anywhere.
A revoked key keeps its hash (with ``revoked`` set), so its id is never handed out again and
``streamrec keys list`` still shows it. Every command names one key (the hash, or the set),
so the store works on Redis Cluster.
"""

from __future__ import annotations

import json
import time

import redis.asyncio as redis

from streamrec.auth.keys import KeyRecord, Kind, Scope, check_spec, digest, new_key
from streamrec.store.layout import API_KEY_FIELDS, API_KEYS_INDEX_KEY, api_key_key


def _encode(record: KeyRecord) -> dict[str, str]:
    fields = {
        "name": record.name,
        "kind": record.kind,
        "scopes": json.dumps(sorted(record.scopes)),
        "origins": json.dumps(list(record.origins)),
        "created": repr(record.created_at),
        "sha256": record.digest,
    }
    if record.revoked_at is not None:
        fields["revoked"] = repr(record.revoked_at)
    return fields


def _decode(key_id: str, values: list[bytes | None]) -> KeyRecord | None:
    get = dict(zip(API_KEY_FIELDS, values, strict=True))
    if get["sha256"] is None or get["kind"] is None:
        return None
    return KeyRecord(
        key_id=key_id,
        name=(get["name"] or b"").decode(),
        kind=get["kind"].decode(),  # type: ignore[arg-type] - written from the Kind literal
        scopes=frozenset(json.loads(get["scopes"] or b"[]")),
        origins=tuple(json.loads(get["origins"] or b"[]")),
        created_at=float(get["created"] or 0),
        digest=get["sha256"].decode(),
        revoked_at=None if get["revoked"] is None else float(get["revoked"]),
    )


class KeyStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def create(self, kind: Kind, name: str, scopes: set[Scope], origins: list[str]) -> tuple[KeyRecord, str]:
        """A new key, stored hashed; returns its record and the key string (shown once).

        Raises :class:`streamrec.auth.keys.InvalidKeySpec` for scopes or origins that do not fit the kind.
        """
        checked_scopes, checked_origins = check_spec(kind, scopes, origins)
        while True:
            key_id, text = new_key(kind)
            record = KeyRecord(key_id, name, kind, checked_scopes, checked_origins, time.time(), digest(text))
            # HSETNX on a field every record has claims the id; another writer's id (2**-48 odds) is never overwritten.
            if await self._redis.hsetnx(api_key_key(key_id), "sha256", record.digest):
                break
        await self._redis.hset(api_key_key(key_id), mapping=_encode(record))
        await self._redis.sadd(API_KEYS_INDEX_KEY, key_id)
        return record, text

    async def get(self, key_id: str) -> KeyRecord | None:
        return _decode(key_id, await self._redis.hmget(api_key_key(key_id), API_KEY_FIELDS))

    async def list(self) -> list[KeyRecord]:
        """Every key ever created, revoked ones included, oldest first."""
        ids = sorted(key_id.decode() for key_id in await self._redis.smembers(API_KEYS_INDEX_KEY))
        pipe = self._redis.pipeline(transaction=False)
        for key_id in ids:
            pipe.hmget(api_key_key(key_id), API_KEY_FIELDS)
        rows = await pipe.execute() if ids else []
        records = [record for key_id, row in zip(ids, rows) if (record := _decode(key_id, row)) is not None]
        return sorted(records, key=lambda record: record.created_at)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked (the first revocation time stays); None if there is no such key."""
        if await self.get(key_id) is None:
            return None
        await self._redis.hsetnx(api_key_key(key_id), "revoked", repr(time.time()))
        return await self.get(key_id)
