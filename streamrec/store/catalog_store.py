"""Catalog records in Redis (``i:{item}``) and the change log ``z:catalog`` (item -> time stored).

Readers that keep a copy of the catalog (the item index, the sequence scorer's item table)
poll the change log through a :class:`ChangeCursor` instead of scanning every item. Records are always read as :data:`~streamrec.store.layout.CATALOG_FIELDS`
(HMGET) and decoded by :func:`~streamrec.store.layout.decode_catalog`, whichever way they travel.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from streamrec.store import functions, layout
from streamrec.store.catalog import CatalogRecord

READ_CHUNK = 500  # items per pipeline, so a large read never builds one huge reply
# A cursor reads again the changes stamped this close before its last read: clock skew between
# the worker that stamped them and the reader, and stores still in flight.
REFRESH_OVERLAP_MS = 5_000


class CatalogStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def write(self, records: Iterable[CatalogRecord], *, stored_at_ms: int) -> None:
        """Store the records and log them in the change log at ``stored_at_ms``, in one round trip."""
        records = list(records)
        if not records:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_write(pipe, records, stored_at_ms=stored_at_ms)
            await pipe.execute()

    @staticmethod
    def queue_write(pipe: Pipeline, records: Sequence[CatalogRecord], *, stored_at_ms: int) -> None:
        """Queue :meth:`write`'s commands onto ``pipe`` (a transaction that also moves a watermark)."""
        for record in records:
            pipe.hset(layout.item_key(record.item_id), mapping=layout.encode_catalog(record))
        if records:
            pipe.zadd(layout.CATALOG_CHANGES_KEY, {record.item_id: stored_at_ms for record in records})

    async def read(self, item_ids: Sequence[str]) -> dict[str, CatalogRecord]:
        """The stored records among ``item_ids`` (unknown items are left out), by pipelined HMGET."""
        found: dict[str, CatalogRecord] = {}
        for start in range(0, len(item_ids), READ_CHUNK):
            chunk = item_ids[start : start + READ_CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for item_id in chunk:
                    pipe.hmget(layout.item_key(item_id), layout.CATALOG_FIELDS)
                rows = await pipe.execute()
            found.update(_decoded(chunk, rows))
        return found

    async def read_in_one_call(self, item_ids: Sequence[str]) -> dict[str, CatalogRecord]:
        """As :meth:`read`, in one read-only function call: about three times less time than the
        pipeline for a streams batch's thousand items. Needs the function library, which the
        streams worker loads."""
        if not item_ids:
            return {}
        rows = await self._redis.fcall_ro(
            functions.HASH_FIELDS, len(item_ids), *(layout.item_key(i) for i in item_ids), *layout.CATALOG_FIELDS
        )
        return _decoded(item_ids, rows)

    async def changes_since(self, since_ms: float) -> list[tuple[str, float]]:
        """(item, time stored in ms) for every item stored at or after ``since_ms``, oldest first."""
        changed = await self._redis.zrangebyscore(layout.CATALOG_CHANGES_KEY, since_ms, "+inf", withscores=True)
        return [(member.decode(), float(score)) for member, score in changed]


def _decoded(item_ids: Sequence[str], rows: Sequence[Sequence[bytes | None]]) -> dict[str, CatalogRecord]:
    found = {}
    for item_id, values in zip(item_ids, rows, strict=True):
        record = layout.decode_catalog(item_id, values)
        if record is not None:
            found[item_id] = record
    return found


class ChangeCursor:
    """One reader's place in the change log: :meth:`read` returns the changes not yet taken.

    The window starts :data:`REFRESH_OVERLAP_MS` before the previous read began, by the reader's
    clock, so a store stamped a little late (skew, in flight) is still seen, and a quiet catalog
    costs an empty range read. Changes already taken at the same stamp inside the overlap are
    not returned again (a catalog load would otherwise come back on every read for 5 s). The
    cursor moves only on :meth:`commit`, once the reader has loaded what it was given: a read
    whose load failed (Redis away) is returned again by the next one.
    """

    def __init__(self, catalog: CatalogStore, *, overlap_ms: float = REFRESH_OVERLAP_MS) -> None:
        self._catalog = catalog
        self._overlap_ms = overlap_ms
        self._since_ms = 0.0
        self._taken: dict[str, float] = {}  # item -> stamp taken, inside the overlap window
        self._next: tuple[float, dict[str, float]] | None = None

    async def read(self) -> list[tuple[str, float]]:
        """(item, time stored in ms) for each change since the last committed read, oldest first."""
        started_ms = time.time() * 1000
        changed = await self._catalog.changes_since(max(0.0, self._since_ms - self._overlap_ms))
        fresh = [(item_id, stamp) for item_id, stamp in changed if self._taken.get(item_id) != stamp]
        since_ms = max(self._since_ms, started_ms, *(stamp for _, stamp in changed))
        floor = since_ms - self._overlap_ms
        self._next = (since_ms, {item: stamp for item, stamp in (*self._taken.items(), *fresh) if stamp >= floor})
        return fresh

    def commit(self) -> None:
        """The last read's changes are loaded: the next read starts after them."""
        if self._next is not None:
            self._since_ms, self._taken = self._next
            self._next = None
