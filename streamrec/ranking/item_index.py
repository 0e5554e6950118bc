"""Every catalog item's text embedding in one matrix, for nearest-item search in memory.

The streams worker stores items in Redis (hash ``i:{item}``) and logs each store in the
sorted set ``z:catalog`` (item -> time stored). The index reads only what changed since
its last refresh, so a new catalog item is recommendable within ``index_refresh_s`` of
being embedded; :meth:`ItemIndex.ensure` fetches an unknown item at once for callers that
cannot wait (``/v1/items/{id}/similar`` on a brand-new item).

Search is an exact dot product over the whole matrix: about 1 ms per query for 16k items
and tens of milliseconds at 1M items on one core; beyond that, an ANN index would go here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from streamrec.model.texts import item_text
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore

# Items stored this close before the last refresh are read again (clock skew between
# the worker that stamped them and this process, and stores still in flight).
REFRESH_OVERLAP_MS = 5_000


@dataclass(frozen=True)
class ItemInfo:
    item_id: str
    title: str
    category: str | None
    available: bool
    text: str  # what the scorer reads on the item side


class ItemIndex:
    def __init__(self, catalog: CatalogStore | None) -> None:
        self._catalog = catalog
        self._position: dict[str, int] = {}
        self._info: list[ItemInfo] = []
        self._matrix = np.zeros((0, 0), np.float32)
        self._available = np.zeros(0, bool)
        self._since_ms: float = 0.0
        self._loaded_at: dict[str, float] = {}  # item -> change score last loaded, inside the overlap window

    @classmethod
    def from_records(cls, records: Iterable[CatalogRecord]) -> ItemIndex:
        """An index filled in memory, for offline evaluation, blender fitting and tests.

        It has no catalog store, so :meth:`refresh` and :meth:`ensure` must not be called on it;
        records without an embedding are skipped, as the Redis path skips them.
        """
        index = cls(None)
        for record in records:
            if record.embedding is not None:
                index._upsert(record)
        return index

    def __len__(self) -> int:
        return len(self._info)

    @property
    def dim(self) -> int:
        return self._matrix.shape[1]

    def info(self, item_id: str) -> ItemInfo | None:
        position = self._position.get(item_id)
        return None if position is None else self._info[position]

    def vectors(self, item_ids: list[str]) -> np.ndarray:
        """Rows for known items (unknown ones get zeros), L2-normalised float32."""
        out = np.zeros((len(item_ids), self.dim), np.float32)
        for row, item_id in enumerate(item_ids):
            position = self._position.get(item_id)
            if position is not None:
                out[row] = self._matrix[position]
        return out

    async def refresh(self) -> int:
        """Read items stored since the last refresh; returns how many were (re)loaded."""
        changed = await self._catalog.changes_since(max(0.0, self._since_ms - REFRESH_OVERLAP_MS))
        if not changed:
            return 0
        self._since_ms = max(self._since_ms, max(score for _, score in changed))
        # The overlap window re-reads recent changes on every refresh: load only those not yet
        # loaded at that score (a catalog batch otherwise reloads every second for 5 s).
        fresh = {item_id: score for item_id, score in changed if self._loaded_at.get(item_id) != score}
        floor = self._since_ms - REFRESH_OVERLAP_MS
        self._loaded_at = {item: score for item, score in {**self._loaded_at, **fresh}.items() if score >= floor}
        return await self._load(list(fresh)) if fresh else 0

    async def ensure(self, item_ids: list[str]) -> None:
        """Load the given items now if the index does not know them yet."""
        missing = [item_id for item_id in item_ids if item_id not in self._position]
        if missing:
            await self._load(missing)

    async def _load(self, item_ids: list[str]) -> int:
        records = [record for record in (await self._catalog.read(item_ids)).values() if record.embedding is not None]
        for record in records:
            self._upsert(record)
        return len(records)

    def _upsert(self, record: CatalogRecord) -> None:
        vector = record.embedding.astype(np.float32)
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm > 0 else vector
        info = ItemInfo(
            item_id=record.item_id,
            title=record.title,
            category=record.category,
            available=record.available,
            text=item_text(record.title, record.category_path, record.brand),
        )
        position = self._position.get(record.item_id)
        if position is None:
            position = len(self._info)
            self._grow(position + 1, vector.shape[0])
            self._position[record.item_id] = position
            self._info.append(info)
        else:
            self._info[position] = info
        self._matrix[position] = vector
        self._available[position] = record.available

    def _grow(self, rows: int, dim: int) -> None:
        if self._matrix.shape[1] not in (0, dim):
            raise ValueError(f"item embedding has {dim} dimensions, the index {self._matrix.shape[1]}")
        if rows <= self._matrix.shape[0]:
            return
        capacity = max(rows, 2 * self._matrix.shape[0], 1024)
        matrix = np.zeros((capacity, dim), np.float32)
        if len(self._info):
            matrix[: len(self._info)] = self._matrix[: len(self._info)]
        available = np.zeros(capacity, bool)
        available[: len(self._info)] = self._available[: len(self._info)]
        self._matrix, self._available = matrix, available

    def nearest(self, vector: np.ndarray, k: int, *, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        """The ``k`` available items with the highest cosine similarity to ``vector``."""
        count = len(self._info)
        if count == 0 or k <= 0 or vector.shape[0] != self.dim:
            return []
        query = vector.astype(np.float32)
        norm = float(np.linalg.norm(query))
        if norm == 0:
            return []
        similarities = self._matrix[:count] @ (query / norm)
        similarities[~self._available[:count]] = -np.inf
        for item_id in exclude:
            position = self._position.get(item_id)
            if position is not None:
                similarities[position] = -np.inf
        take = min(k, count)
        top = np.argpartition(-similarities, take - 1)[:take]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return [(self._info[p].item_id, float(similarities[p])) for p in top if np.isfinite(similarities[p])]
