"""Catalog items into Redis with their text embedding from the item encoder on Triton.

An item is usable (candidate retrieval, profile vectors) as soon as its record
is written, which happens in the same batch that embeds it. When Triton is down
the batch waits and retries with backoff rather than storing items without
embeddings or skipping them: catalog updates are rare and must not be lost.

Catalog partitions have watermarks too, moved in the same MULTI/EXEC as the items (WATCHed, so
two writers of one partition never store an older version over a newer one). Writes are
idempotent (the last version of an item wins), so the watermark is not there against double
counting but to find the writes Redis lost and read them again, as for interactions
(``rewind.py``).

A record the event contract cannot read as a catalog item (not JSON, an interaction or an
unknown ``type``, a tombstone, anything) is dead-lettered to ``events.dlq`` with the reason,
keyed by the record's key, and counted (``streamrec_streams_dead_letters{topic="catalog.items"}``);
the batch's readable items are stored all the same. A tombstone is refused rather than read as
a delete: the contract withdraws an item with ``available: false``, which keeps its history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import orjson
import redis.asyncio as redis
from redis.exceptions import WatchError

from streamrec.deadletter import DeadLetter
from streamrec.events import CatalogItem, EventValidator, InvalidEvent
from streamrec.model.encoder_client import EncoderUnavailable
from streamrec.model.texts import item_text
from streamrec.quality_metrics import missing_catalog_fields
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.watermarks import WatermarkStore
from streamrec.topics import Topic
from streams.processor import PublishMany, Record, rereads_as_records
from streams.rewind import KafkaOffsets, Reread, lost_before, reapply_missing

log = logging.getLogger(__name__)


class Encoder(Protocol):
    async def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class StoredCatalog:
    """What one batch stored: how many items, and how many of them lack each field."""

    items: int = 0
    missing_fields: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0  # records of the batch that could not be read, written to ``events.dlq``
    skipped: int = 0  # at or below the watermark: stored before
    reread: Counter[str] = field(default_factory=Counter)  # topic -> records read again because Redis lost them
    unrecoverable: Counter[str] = field(default_factory=Counter)

    def merge(self, other: "StoredCatalog") -> None:
        self.items += other.items
        self.missing_fields += other.missing_fields
        self.dead_letters += other.dead_letters
        self.skipped += other.skipped
        self.reread += other.reread
        self.unrecoverable += other.unrecoverable


@dataclass
class _Prepared:
    """A batch's items ready to store, and what the batch reports."""

    records: list[CatalogRecord]
    summary: StoredCatalog


class CatalogProcessor:
    def __init__(
        self,
        *,
        client: redis.Redis,
        encoder: Encoder,
        publish: PublishMany,
        group: str,
        offsets: KafkaOffsets,
        max_backoff_s: float = 30.0,
        dlq_raw_max_bytes: int = 262_144,
        catch_up_chunk: int = 256,
    ) -> None:
        self._redis = client
        self._catalog = CatalogStore(client)
        self._watermarks = WatermarkStore(client, group=group)
        self._offsets = offsets
        self._catch_up_chunk = catch_up_chunk
        self._encoder = encoder
        self._publish = publish
        self._max_backoff_s = max_backoff_s
        self._dlq_raw_max_bytes = dlq_raw_max_bytes
        self._validator = EventValidator(max_future_skew_s=None)
        self.encoder_failures = 0

    async def process(self, records: list[Record]) -> StoredCatalog:
        """Store the batch's items (records Redis lost before them first); how many, and the fields they lack."""
        stored = await self.catch_up(await lost_before((((r.topic, r.partition), r.offset) for r in records), self._watermarks))
        stored.merge(await self._process_once(records))
        return stored

    async def catch_up(self, until: dict[tuple[str, int], int]) -> StoredCatalog:
        """Store what Kafka holds between each partition's watermark and ``until`` (exclusive)."""
        stored = StoredCatalog()

        async def apply(missing: dict[tuple[str, int], Reread]) -> None:
            for (topic, _), reread in missing.items():
                stored.reread[topic] += len(reread.records)
                stored.unrecoverable[topic] += reread.unrecoverable
            stored.merge(await self._process_once(rereads_as_records(missing)))

        await reapply_missing(until, watermarks=self._watermarks, offsets=self._offsets, limit=self._catch_up_chunk, apply=apply)
        return stored

    async def _process_once(self, records: list[Record]) -> StoredCatalog:
        while True:
            try:
                return await self._apply(records)
            except WatchError:
                continue  # another writer moved a watermark: read again what is left to store

    async def _apply(self, records: list[Record]) -> StoredCatalog:
        partitions = sorted({(record.topic, record.partition) for record in records})
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._watermarks.keys(partitions))
            applied_up_to = await self._watermarks.read(partitions, via=pipe)
            fresh = [record for record in records if record.offset > applied_up_to[(record.topic, record.partition)]]
            watermarks: dict[tuple[str, int], int] = {}
            for record in fresh:
                tp = (record.topic, record.partition)
                watermarks[tp] = max(watermarks.get(tp, -1), record.offset)
            prepared = await self._prepare(fresh)
            prepared.summary.skipped = len(records) - len(fresh)
            if watermarks:
                pipe.multi()
                # The change log entry lets the serving item index read changes instead of scanning the catalog.
                self._catalog.queue_write(pipe, prepared.records, stored_at_ms=int(time.time() * 1000))
                self._watermarks.queue_advance(pipe, watermarks)
                await pipe.execute()
        return prepared.summary

    async def _prepare(self, records: list[Record]) -> _Prepared:
        """Parse (dead-lettering what is not a catalog item) and embed the records' latest item versions."""
        latest: dict[str, CatalogItem] = {}
        dead: list[tuple[str, bytes | None, bytes]] = []
        for record in records:
            event = self._parse(record)
            if isinstance(event, str):
                letter = DeadLetter.wrap(record.value, reason=event, source=f"streams:{record.topic}",
                                         max_raw_bytes=self._dlq_raw_max_bytes)
                dead.append((Topic.DLQ, record.key, letter.encode()))
                continue
            latest[event.item_id] = event  # partition order: the last version wins
        if dead:
            await self._publish(dead)
        if not latest:
            return _Prepared([], StoredCatalog(dead_letters=len(dead)))
        items = list(latest.values())
        embeddings = await self._embed([item_text(i.title, i.category_path, i.brand) for i in items])
        records = [
            CatalogRecord(
                item_id=item.item_id,
                title=item.title,
                category_path=tuple(item.category_path),
                brand=item.brand,
                price=item.price,
                currency=item.currency,
                available=item.available,
                updated_ts=item.ts,
                embedding=embedding,
            )
            for item, embedding in zip(items, embeddings, strict=True)
        ]
        missing = Counter(name for record in records for name in missing_catalog_fields(record))
        return _Prepared(records, StoredCatalog(len(records), missing, dead_letters=len(dead)))

    def _parse(self, record: Record) -> CatalogItem | str:
        """The record's catalog item, or why it is not one (pure: nothing here is worth a retry)."""
        if record.value is None:
            return "no value (a tombstone): withdraw an item with available=false; the catalog has no deletes"
        try:
            event = self._validator.parse(orjson.loads(record.value))
        except orjson.JSONDecodeError as error:
            return f"not JSON: {error}"
        except InvalidEvent as error:
            return error.reason
        except Exception as error:  # noqa: BLE001 - a record nothing can read is dead-lettered, never retried forever
            return f"unreadable: {type(error).__name__}: {error}"
        if not isinstance(event, CatalogItem):
            return f"a {event.type} event on {record.topic}"
        return event

    async def _embed(self, texts: list[str]) -> np.ndarray:
        backoff = 0.5
        while True:
            try:
                return await self._encoder.encode(texts)
            except EncoderUnavailable as error:
                self.encoder_failures += 1
                log.warning("item encoder unavailable (%s); retrying in %.1f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
