"""A catalog record as stored in Redis (hash ``i:{item}``), with the item's float16 text embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CatalogRecord:
    item_id: str
    title: str
    category_path: tuple[str, ...]
    brand: str | None
    price: float | None
    currency: str | None
    available: bool
    updated_ts: int
    embedding: np.ndarray | None = None  # float16, L2-normalised

    @property
    def category(self) -> str | None:
        """The most specific category, used for affinities and category trending."""
        return self.category_path[-1] if self.category_path else None
