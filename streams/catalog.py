"""Catalog items into Redis with their text embedding from the item encoder on Triton.

An item is usable (candidate retrieval, profile vectors) as soon as its record
is written, which happens in the same batch that embeds it. When Triton is down
the batch waits and retries with backoff rather than storing items without
embeddings or skipping them: catalog updates are rare and must not be lost.

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

from streamrec.deadletter import DeadLetter
from streamrec.events import CatalogItem, EventValidator, InvalidEvent
from streamrec.model.encoder_client import EncoderUnavailable
from streamrec.model.texts import item_text
from streamrec.quality_metrics import missing_catalog_fields
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.topics import Topic
from streams.processor import PublishMany, Record

log = logging.getLogger(__name__)


class Encoder(Protocol):
    async def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class StoredCatalog:
    """What one batch stored: how many items, and how many of them lack each field."""

    items: int = 0
    missing_fields: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    """Records of the batch that could not be read, written to ``events.dlq``."""


class CatalogProcessor:
    def __init__(
        self,
        *,
        client: redis.Redis,
        encoder: Encoder,
        publish: PublishMany,
        max_backoff_s: float = 30.0,
        dlq_raw_max_bytes: int = 262_144,
    ) -> None:
        self._catalog = CatalogStore(client)
        self._encoder = encoder
        self._publish = publish
        self._max_backoff_s = max_backoff_s
        self._dlq_raw_max_bytes = dlq_raw_max_bytes
        self._validator = EventValidator(max_future_skew_s=None)
        self.encoder_failures = 0

    async def process(self, records: list[Record]) -> StoredCatalog:
        """Store the batch's items; returns how many were written and the fields they lack."""
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
            return StoredCatalog(dead_letters=len(dead))
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
        # The change log entry lets the serving item index read changes instead of scanning the catalog.
        await self._catalog.write(records, stored_at_ms=int(time.time() * 1000))
        return StoredCatalog(len(records), Counter(name for record in records for name in missing_catalog_fields(record)),
                             dead_letters=len(dead))

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
