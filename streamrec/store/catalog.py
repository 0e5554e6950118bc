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

    def text_vector(self, dim: int) -> np.ndarray | None:
        """The embedding as a unit float32 vector, if it has ``dim`` dimensions and is usable (finite,
        non-zero); None otherwise. What a model that ranks items by their text may take in."""
        if self.embedding is None or self.embedding.shape != (dim,):
            return None
        vector = self.embedding.astype(np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(vector).all() or not norm > 0:
            return None
        return vector / norm

    @property
    def category(self) -> str | None:
        """The most specific category, used for affinities and category trending."""
        return self.category_path[-1] if self.category_path else None
