"""Catalog records in Redis (hash ``i:{item}``), with the item's float16 text embedding."""

from __future__ import annotations

import json
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

    def to_hash(self) -> dict[str, bytes | str]:
        fields: dict[str, bytes | str] = {
            "title": self.title,
            "cat": json.dumps(list(self.category_path)),
            "brand": self.brand or "",
            "price": "" if self.price is None else repr(self.price),
            "cur": self.currency or "",
            "avail": "1" if self.available else "0",
            "ts": str(self.updated_ts),
        }
        if self.embedding is not None:
            fields["emb"] = self.embedding.astype(np.float16).tobytes()
        return fields

    @classmethod
    def from_hash(cls, item_id: str, fields: dict[bytes, bytes]) -> "CatalogRecord | None":
        if not fields:
            return None
        get = {key.decode(): value for key, value in fields.items()}
        price = get.get("price", b"").decode()
        embedding = get.get("emb")
        return cls(
            item_id=item_id,
            title=get["title"].decode(),
            category_path=tuple(json.loads(get["cat"])),
            brand=get.get("brand", b"").decode() or None,
            price=float(price) if price else None,
            currency=get.get("cur", b"").decode() or None,
            available=get.get("avail", b"1") == b"1",
            updated_ts=int(get["ts"]),
            embedding=None if embedding is None else np.frombuffer(embedding, dtype=np.float16).copy(),
        )
