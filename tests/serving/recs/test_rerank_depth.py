"""The worker's re-rank depth follows the scorer's measured throughput (pure logic)."""

from __future__ import annotations

import pytest

from serving.recs.rerank_depth import AdaptiveDepth


def test_full_depth_until_a_rate_is_known() -> None:
    depth = AdaptiveDepth(max_depth=20, min_depth=4, target_s=0.3)
    assert depth.for_batch(64) == 20
    depth.observe(pairs=0, seconds=0.1)  # nothing scored: no rate
    assert depth.for_batch(64) == 20


def test_depth_fits_the_batch_into_the_target() -> None:
    depth = AdaptiveDepth(max_depth=20, min_depth=4, target_s=0.3)
    depth.observe(pairs=200, seconds=0.2)  # 1,000 pairs/s
    assert depth.for_batch(1) == 20  # a small batch re-ranks everything
    assert depth.for_batch(30) == 10  # 1,000 x 0.3 / 30
    assert depth.for_batch(200) == 4  # never below the floor
    assert depth.for_batch(30) * 30 / 1000 <= 0.3


def test_estimate_moves_towards_new_rates_and_halves_when_over_budget() -> None:
    depth = AdaptiveDepth(max_depth=100, min_depth=1, target_s=1.0, smoothing=0.5)
    depth.observe(pairs=1000, seconds=1.0)
    depth.observe(pairs=3000, seconds=1.0)
    assert depth.pairs_per_s == pytest.approx(2000)
    depth.over_budget()
    assert depth.pairs_per_s == pytest.approx(1000)
    assert depth.for_batch(20) == 50


def test_floor_never_exceeds_the_ceiling_and_bad_settings_are_refused() -> None:
    depth = AdaptiveDepth(max_depth=3, min_depth=10, target_s=0.3)
    depth.observe(pairs=1, seconds=10.0)
    assert depth.for_batch(50) == 3
    with pytest.raises(ValueError):
        AdaptiveDepth(max_depth=20, min_depth=4, target_s=0)
