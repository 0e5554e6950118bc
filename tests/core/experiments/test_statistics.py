"""The report's statistics against independent computations: simulation, numerical integration,
closed forms and scipy's own tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from streamrec.experiments.statistics import (
    difference,
    interleaving_test,
    mean,
    msprt_p_value,
    ratio,
    sample_ratio_mismatch,
)


def test_delta_method_standard_error_matches_the_spread_over_simulated_experiments():
    """The delta-method SE of clicks/impressions equals the standard deviation of the ratio over
    many independent simulated experiments, with impressions and clicks correlated per user."""
    rng = np.random.default_rng(0)

    def experiment():
        impressions = rng.poisson(rng.gamma(2.0, 3.0, 2000)) + 1
        clicks = rng.binomial(impressions, rng.beta(2, 30, 2000))
        return impressions, clicks

    ratios = [clicks.sum() / impressions.sum() for impressions, clicks in (experiment() for _ in range(400))]
    impressions, clicks = experiment()
    estimate = ratio(clicks, impressions)
    assert estimate.se == pytest.approx(np.std(ratios, ddof=1), rel=0.15)
    # Treating impressions as independent Bernoulli trials understates the spread: the reason the
    # delta method is used at all.
    naive = math.sqrt(estimate.value * (1 - estimate.value) / impressions.sum())
    assert naive < 0.9 * estimate.se


def test_ratio_of_a_constant_denominator_is_the_plain_mean():
    x = np.array([0.0, 1, 3, 2, 5])
    by_ratio, by_mean = ratio(x, np.ones_like(x)), mean(x)
    assert by_ratio.value == pytest.approx(by_mean.value) and by_ratio.se == pytest.approx(by_mean.se)


def test_difference_of_means_agrees_with_welchs_z_and_its_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 2.0, 5000), rng.normal(1.1, 2.5, 4000)
    d = difference(mean(b), mean(a))
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert d.value == pytest.approx(b.mean() - a.mean()) and d.se == pytest.approx(se)
    assert d.p_value == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=0.02)
    assert d.low == pytest.approx(d.value - 1.959964 * se) and d.high == pytest.approx(d.value + 1.959964 * se)


def test_msprt_p_value_is_one_over_the_mixture_likelihood_ratio_by_integration():
    """Λ = ∫ N(d; θ, V) / N(d; 0, V) dN(θ; 0, τ²), integrated numerically."""
    for d, v, tau2 in [(0.3, 0.01, 0.04), (0.05, 0.01, 0.01), (-0.2, 0.02, 0.09), (0.0, 0.5, 0.1)]:
        def integrand(theta: float) -> float:
            return stats.norm.pdf(d, theta, math.sqrt(v)) / stats.norm.pdf(d, 0, math.sqrt(v)) * stats.norm.pdf(theta, 0, math.sqrt(tau2))
        likelihood_ratio, _ = integrate.quad(integrand, -10, 10, points=[0, d])
        assert msprt_p_value(d, v, tau2) == pytest.approx(min(1.0, 1 / likelihood_ratio), rel=1e-6)


def test_always_valid_p_keeps_false_positives_below_alpha_when_peeking_after_every_batch():
    """A/A experiments looked at after every 100 users: stopping at the first fixed-horizon p < 0.05
    finds a 'winner' far more often than 5 %; the always-valid p-value stays within it."""
    rng = np.random.default_rng(2)
    peeking_fixed = peeking_valid = 0
    runs = 200
    for _ in range(runs):
        a, b = rng.normal(1.0, 1.0, 5000), rng.normal(1.0, 1.0, 5000)
        fixed_hit = valid_hit = False
        for n in range(100, 5001, 100):
            d = difference(mean(b[:n]), mean(a[:n]), relative_tau=0.1)
            fixed_hit |= d.p_value < 0.05
            valid_hit |= d.always_valid_p < 0.05
        peeking_fixed += fixed_hit
        peeking_valid += valid_hit
    assert peeking_fixed / runs > 0.15
    assert peeking_valid / runs <= 0.05


def test_sample_ratio_mismatch_is_flagged_for_skewed_shares_only():
    fine = sample_ratio_mismatch([5020, 4980], [0.5, 0.5])
    assert not fine.mismatch and fine.p_value == pytest.approx(stats.chisquare([5020, 4980]).pvalue)
    skewed = sample_ratio_mismatch([5300, 4700], [0.5, 0.5])
    assert skewed.mismatch and skewed.p_value < 1e-6
    assert not sample_ratio_mismatch([2010, 7990], [0.2, 0.8]).mismatch


def test_interleaving_sign_test_is_the_binomial_test_of_wins():
    result = interleaving_test(wins_a=40, wins_b=62, ties=30)
    assert result.p_value == pytest.approx(stats.binomtest(62, 102, 0.5).pvalue)
    assert result.preference_b == pytest.approx((62 - 40) / 132)
    assert interleaving_test(0, 0, 5).p_value == 1.0
