"""Pure logic of the recommender: diversity re-rank, in-memory search, update debouncing."""

from __future__ import annotations

import numpy as np
import orjson

from streamrec.ranking.diversity import mmr
from streamrec.ranking.item_index import ItemIndex
from serving.recs.worker import read_updates
from streamrec.messages import ProfileUpdated
from streamrec.store.catalog import CatalogRecord


def test_mmr_keeps_the_best_first_and_spreads_near_copies():
    # Items 0-2 are near-copies in one category; item 3 is a little less relevant but different.
    vectors = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    relevance = np.array([1.0, 0.99, 0.98, 0.9])
    categories = ["gloves", "gloves", "gloves", "goggles"]
    assert mmr(relevance, vectors, categories, 4, lam=1.0) == [0, 1, 2, 3]  # no diversity: relevance order
    diverse = mmr(relevance, vectors, categories, 2, lam=0.5)
    assert diverse == [0, 3]


def test_mmr_handles_fewer_items_than_asked_and_none_categories():
    assert mmr(np.zeros(0), np.zeros((0, 2), np.float32), [], 5, 0.7) == []
    picked = mmr(np.array([0.2, 0.1]), np.eye(2, dtype=np.float32), [None, None], 5, 0.7)
    assert sorted(picked) == [0, 1]


def _record(item_id: str, vector, *, available: bool = True, category: str = "c") -> CatalogRecord:
    return CatalogRecord(item_id=item_id, title=f"title {item_id}", category_path=(category,), brand=None, price=None,
                         currency=None, available=available, updated_ts=0,
                         embedding=np.asarray(vector, np.float32).astype(np.float16))


def test_item_index_finds_nearest_available_items_and_updates_in_place():
    index = ItemIndex(catalog=None)  # the in-memory path only
    for n, (vector, available) in enumerate([([1, 0, 0], True), ([0.9, 0.1, 0], True), ([0.95, 0, 0], False), ([0, 1, 0], True)]):
        index._upsert(_record(f"i{n}", vector, available=available))
    found = [item for item, _ in index.nearest(np.array([1, 0, 0], np.float32), 3)]
    assert found == ["i0", "i1", "i3"]  # i2 is closer than i1 but unavailable
    assert [item for item, _ in index.nearest(np.array([1, 0, 0], np.float32), 2, exclude={"i0"})] == ["i1", "i3"]
    index._upsert(_record("i3", [1, 0, 0]))  # the item's text changed: same row, new vector
    assert len(index) == 4
    assert index.nearest(np.array([1, 0, 0], np.float32), 1)[0][0] in {"i0", "i3"}
    for n in range(4, 3000):  # growing past the first capacity keeps earlier rows
        index._upsert(_record(f"i{n}", [0, 0, 1]))
    assert np.allclose(index.vectors(["i1"])[0], np.array([0.9, 0.1, 0]) / np.linalg.norm([0.9, 0.1, 0]), atol=1e-3)


def test_updates_collapse_per_user_to_the_newest_event():
    t = 1_790_000_000_000
    values = [ProfileUpdated(user_id="a", newest_event_ts=t + 5).encode(), ProfileUpdated(user_id="b", newest_event_ts=t + 1).encode(),
              ProfileUpdated(user_id="a", newest_event_ts=t + 9).encode(), b"not json", orjson.dumps({"no_user": 1})]
    updates = read_updates(values)
    assert updates.latest == {"a": t + 9, "b": t + 1}
    assert [raw for raw, _ in updates.unreadable] == [b"not json", orjson.dumps({"no_user": 1})]  # kept for the DLQ, with why
    assert all(error.reason.startswith("breaks the profiles.updated contract") for _, error in updates.unreadable)
