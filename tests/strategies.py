"""Hypothesis strategies for the event contract: any JSON, JSON that looks like an event, valid events.

Shared by the contract's own properties (tests/core) and the collector's (tests/serving/collector).
Valid events are generated as the raw JSON objects a shop would send (sometimes without the
optional fields, ``event_id`` and ``ts`` included), so a property can post them as they are.
Identifiers and texts are generated already trimmed: the contract strips surrounding whitespace,
and a round trip is then exact.
"""

from __future__ import annotations

import string
import time

from hypothesis import strategies as st

from streamrec.events import EVENT_TYPES, MIN_TS_MS

NOW_MS = int(time.time() * 1000)
"""The clock when the tests were loaded: generated timestamps reach a minute past it, within any
receiver's future-skew limit (300 s by default) however much later it judges them."""

# Any Unicode but surrogates and control characters, which the contract's identifiers refuse.
_CHARACTERS = st.characters(exclude_categories=("Cs", "Cc"))


def _trimmed(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(_CHARACTERS, min_size=min_size, max_size=max_size).filter(lambda text: text == text.strip() and
                                                                             len(text) >= min_size)


identifiers = _trimmed(1, 40) | st.sampled_from(['kcat"q', "back\\slash", "Jürgen-ß", "用户", "🛒user", "x" * 256])
texts = _trimmed(0, 60)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text()
any_json = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                        max_leaves=15)
"""Any value JSON can carry (integers as far as orjson reads them as integers: 64 bits)."""

_FIELDS = ["schema_version", "type", "event_id", "user_id", "session_id", "item_id", "ts", "context", "quantity", "order_id",
           "price", "currency", "title", "description", "category_path", "brand", "available"]
near_events = st.dictionaries(
    st.sampled_from(_FIELDS) | st.text(max_size=8),
    any_json | st.sampled_from([*EVENT_TYPES, "like", 1, NOW_MS, MIN_TS_MS - 1, -1, "EUR", "", " "]) | identifiers,
    max_size=10,
)
"""Objects made of the contract's own field names (and others) with any values: they reach the models' checks."""

timestamps = st.integers(MIN_TS_MS, NOW_MS + 60_000)
prices = st.floats(0, 1e9, exclude_max=True, allow_nan=False, allow_infinity=False)
currencies = st.text(string.ascii_uppercase, min_size=3, max_size=3)
contexts = st.fixed_dictionaries({}, optional={
    "page": texts, "query": texts, "position": st.integers(0, 10**6), "rec_id": identifiers, "variant": identifiers,
})


def _event(event_type: str, required: dict, optional: dict) -> st.SearchStrategy[dict]:
    common = {"event_id": st.uuids().map(str), "ts": timestamps, "schema_version": st.just(1)}
    return st.fixed_dictionaries({"type": st.just(event_type), **required}, optional={**common, **optional})


_interaction = {"session_id": identifiers, "context": contexts}
valid_events = st.one_of(
    _event("click", {"user_id": identifiers, "item_id": identifiers}, _interaction),
    _event("add_to_cart", {"user_id": identifiers, "item_id": identifiers}, {**_interaction, "quantity": st.integers(1, 10_000)}),
    _event("purchase", {"user_id": identifiers, "item_id": identifiers, "order_id": identifiers},
           {**_interaction, "quantity": st.integers(1, 10_000), "price": prices, "currency": currencies}),
    _event("catalog_item", {"item_id": identifiers, "title": _trimmed(1, 60)},
           {"description": texts, "category_path": st.lists(_trimmed(1, 20), max_size=16), "brand": texts, "price": prices,
            "currency": currencies, "available": st.booleans()}),
)
"""Raw JSON objects that satisfy the contract (for a receiver whose clock is right)."""
