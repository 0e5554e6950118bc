"""Cleaning rules, decay arithmetic and the profile encoding, as pure logic."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pytest

from streamrec.events import PurchaseEvent
from streamrec.settings import StreamsSettings
from streamrec.store import layout
from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import UserProfile
from streamrec.store.profile_store import ProfileStore
from streams.cleaning import (
    Rule,
    check_click_rate,
    check_duplicate,
    check_price,
    check_timestamp,
    fill_from_catalog,
)
from streamrec.profile_fold import apply_interaction, decay

SETTINGS = StreamsSettings(half_life_s=3600, bot_max_clicks=5, bot_window_s=10, dedup_window_s=60)
T0 = 1_790_000_000_000


def catalog(price: float | None = 10.0, currency: str | None = "EUR") -> CatalogRecord:
    return CatalogRecord("i1", "Pipette", ("Lab", "Pipettes"), "Eppendorf", price, currency, True, T0)


def test_timestamp_rules_use_kafka_time_not_the_wall_clock():
    assert check_timestamp(T0, T0, SETTINGS) is None
    assert check_timestamp(T0 + 299_000, T0, SETTINGS) is None
    assert check_timestamp(T0 + 301_000, T0, SETTINGS).rule is Rule.FUTURE_TIMESTAMP
    assert check_timestamp(T0 - 8 * 86_400_000, T0, SETTINGS).rule is Rule.LATE_TIMESTAMP
    assert check_timestamp(T0 - 6 * 86_400_000, T0, SETTINGS) is None


def test_duplicates_within_the_window_are_caught_and_later_ones_pass():
    profile, event_id = UserProfile(), uuid.uuid4()
    assert check_duplicate(profile, event_id, T0, SETTINGS) is None
    assert check_duplicate(profile, event_id, T0 + 1_000, SETTINGS).rule is Rule.DUPLICATE
    assert check_duplicate(profile, uuid.uuid4(), T0 + 2_000, SETTINGS) is None
    profile.last_seen = T0 + 120_000  # the window (60 s) has passed
    assert check_duplicate(profile, event_id, T0 + 120_000, SETTINGS) is None


def test_dedup_memory_is_bounded():
    profile = UserProfile()
    for i in range(500):
        check_duplicate(profile, uuid.uuid4(), T0 + i, SETTINGS)
    assert len(profile.seen_ids) == SETTINGS.dedup_max_ids


def test_bot_like_click_rate_is_quarantined_and_normal_rate_is_not():
    profile = UserProfile()
    verdicts = [check_click_rate(profile, T0 + i * 100, SETTINGS) for i in range(7)]  # 7 clicks in 0.7 s
    assert verdicts[:5] == [None] * 5
    assert verdicts[5].rule is Rule.BOT_CLICK_RATE and "6 clicks" in verdicts[5].reason
    calm = UserProfile()
    assert all(check_click_rate(calm, T0 + i * 3_000, SETTINGS) is None for i in range(20))
    assert len(calm.click_times) <= SETTINGS.bot_max_clicks + 1


def test_price_inconsistent_with_catalog_is_quarantined():
    purchase = PurchaseEvent(user_id="u", item_id="i1", order_id="o", price=10.0, quantity=3, currency="EUR", ts=T0)
    assert check_price(purchase, catalog(), SETTINGS) is None
    assert check_price(purchase.model_copy(update={"price": 14.9}), catalog(), SETTINGS) is None
    rejection = check_price(purchase.model_copy(update={"price": 100.0}), catalog(), SETTINGS)
    assert rejection.rule is Rule.PRICE_MISMATCH and "amount 300.00 = 3 x 100.00" in rejection.reason
    assert check_price(purchase.model_copy(update={"currency": "USD"}), catalog(), SETTINGS).rule is Rule.PRICE_MISMATCH
    assert check_price(purchase, None, SETTINGS) is None  # unknown item: nothing to compare against


def test_missing_price_and_currency_are_filled_from_the_catalog():
    purchase = PurchaseEvent(user_id="u", item_id="i1", order_id="o", ts=T0)
    filled = fill_from_catalog(purchase, catalog())
    assert (filled.price, filled.currency) == (10.0, "EUR")
    assert fill_from_catalog(purchase, None) is purchase


def test_decay_halves_every_half_life():
    assert decay(0, 3600) == 1.0
    assert decay(3_600_000, 3600) == pytest.approx(0.5, abs=1e-15)
    assert decay(7_200_000, 3600) == pytest.approx(0.25, abs=1e-15)


def _apply_all(events, embeddings):
    profile = UserProfile()
    for event_type, item, ts, category in events:
        apply_interaction(profile, user_id="u", event_type=event_type, item_id=item, ts=ts, category=category,
                          embedding=embeddings[item], settings=SETTINGS)
    return profile


def test_affinities_are_weighted_and_decayed():
    rng = np.random.default_rng(0)
    embeddings = {item: rng.standard_normal(8).astype(np.float32) for item in ("a", "b")}
    profile = _apply_all([("click", "a", T0, "Lab"), ("purchase", "b", T0 + 3_600_000, "Safety")], embeddings)
    # the click (weight 1) is one half-life older than the purchase (weight 5)
    assert profile.affinities == pytest.approx({"Lab": 0.5, "Safety": 5.0}, abs=1e-12)
    # Stored as of the newest event: a reader decays them to its own time.
    factor = decay(T0 + 7_200_000 - profile.ref_ts, SETTINGS.half_life_s)
    assert {c: v * factor for c, v in profile.affinities.items()} == pytest.approx({"Lab": 0.25, "Safety": 2.5}, abs=1e-12)
    expected = 0.5 * embeddings["a"] + 5.0 * embeddings["b"]
    assert vectors_agree(profile.vector, expected)
    assert profile.counts == {"click": 1, "add_to_cart": 0, "purchase": 1} and profile.purchased == ["b"]


def test_result_does_not_depend_on_delivery_order():
    rng = np.random.default_rng(1)
    items = [f"i{k}" for k in range(12)]
    embeddings = {item: rng.standard_normal(16).astype(np.float32) for item in items}
    events = [
        (random.Random(k).choice(["click", "add_to_cart", "purchase"]), items[k % 12], T0 + k * 60_000, f"c{k % 4}")
        for k in range(60)
    ]
    in_order = _apply_all(events, embeddings)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    out_of_order = _apply_all(shuffled, embeddings)
    assert out_of_order.affinities == pytest.approx(in_order.affinities, rel=1e-12)
    assert out_of_order.recent == in_order.recent and len(in_order.recent) == SETTINGS.recent_max
    assert out_of_order.counts == in_order.counts and set(out_of_order.purchased) == set(in_order.purchased)
    # The vector is stored in float16 (2 bytes a dimension), so orders agree to float16 resolution.
    assert vectors_agree(out_of_order.vector, in_order.vector)


def vectors_agree(a: np.ndarray, b: np.ndarray, tolerance: float = 5e-3) -> bool:
    """Relative distance ||a - b|| / ||b|| within float16 accumulation error."""
    a32, b32 = a.astype(np.float64), b.astype(np.float64)
    return bool(np.linalg.norm(a32 - b32) <= tolerance * np.linalg.norm(b32))


def test_an_item_embedded_by_an_encoder_of_another_width_restarts_the_vector():
    old, new = np.ones(384, np.float16) / np.sqrt(384), np.ones(32, np.float16) / np.sqrt(32)
    profile = _apply_all([("click", "a", T0, None), ("click", "b", T0 + 1_000, None)], {"a": old, "b": new})
    assert profile.vector.shape == (32,)
    np.testing.assert_allclose(profile.vector.astype(np.float32), SETTINGS.weight_click * new.astype(np.float32), atol=1e-3)
    assert [r.item_id for r in profile.recent] == ["a", "b"]


def test_full_profile_stays_under_five_kilobytes():
    profile = UserProfile()
    rng = np.random.default_rng(2)
    settings = StreamsSettings()
    for k in range(400):
        kind = ["click", "add_to_cart", "purchase"][k % 3]
        apply_interaction(profile, user_id="u", event_type=kind, item_id=f"B00{k:07d}", ts=T0 + k, category=f"category {k % 40}",
                          embedding=rng.standard_normal(384).astype(np.float32), settings=settings)
        check_duplicate(profile, uuid.uuid4(), T0 + k, settings)
    encoded = layout.encode_profile(profile)
    assert len(encoded) < 5_000, len(encoded)
    decoded = layout.decode_profile(encoded)
    assert decoded.recent == profile.recent and decoded.affinities == profile.affinities
    assert decoded.vector.dtype == np.float16 and decoded.vector.shape == (384,)
    assert decoded.seen_ids == profile.seen_ids


def test_unknown_profile_format_is_a_clear_error():
    with pytest.raises(layout.ProfileFormatError, match="format"):
        layout.decode_profile(b"\x81\xa1t\x01")  # a msgpack map without the format version
    with pytest.raises(layout.ProfileFormatError, match="unreadable"):
        layout.decode_profile(b"\xc1")


def test_the_profile_store_treats_a_missing_or_unreadable_profile_as_absent_and_counts_the_unreadable():
    store = ProfileStore(client=None)  # decoding only: no Redis needed
    assert store.decode("u", None) is None and store.unreadable == 0
    assert store.decode("u", b"\xc1") is None and store.decode("u", b"\x81\xa1t\x01") is None
    assert store.unreadable == 2
    profile = UserProfile(ref_ts=T0, last_seen=T0)
    assert store.decode("u", layout.encode_profile(profile)) == profile and store.unreadable == 2
