"""The statistics of an experiment's report, per user (the unit of randomisation).

* **Means** (conversion, revenue per user) have the usual standard error ``s / sqrt(n)``.
* **Ratios** of two per-user sums (click-through rate = clicks / impressions, revenue per
  impression) are not means of independent draws: one user's impressions and clicks move
  together. Their variance comes from the delta method (Deng, Knoblich and Lu, KDD 2018):
  ``Var(X̄/Ȳ) ≈ (σx² − 2R σxy + R² σy²) / (n μy²)``.
* **Differences** to the control are normal with the variances added (independent groups), with
  a fixed-horizon two-sided p-value and confidence interval.
* **Always-valid p-values** (mixture sequential probability ratio test, Johari, Pekelis and
  Walsh, "Always valid inference", 2017): with a normal mixing distribution N(0, τ²) over the
  true difference, the likelihood ratio of the observed difference d with variance V is
  ``Λ = sqrt(V / (V + τ²)) · exp(τ² d² / (2 V (V + τ²)))`` and ``p = min(1, 1/Λ)``. By Ville's
  inequality, P(1/Λ ever falls below α while the experiment runs) ≤ α under no difference, so
  an operator may read the report at any time, as often as they like, and stop when it is low,
  which the fixed-horizon p-value does not allow.
* **Sample-ratio mismatch**: a chi-square goodness-of-fit test of users per variant against the
  configured shares (scipy); a tiny p-value means assignment or logging is broken and no other
  figure of the report can be trusted.
* **Interleaving**: a two-sided binomial (sign) test of wins against 1/2 (scipy).

scipy provides the distributions and the tests; the delta method and the mixture ratio are a
few lines each with no maintained implementation to call, and are tested against independent
computations (simulation and numerical integration).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

# The mixing distribution's spread, relative to the control's value: the effect sizes the test is
# most sensitive to. A wide prior costs little power on small effects (the evidence needed grows
# with log(τ / standard error)) and finds large ones quickly; 0.25 suits ranking changes, whose
# effects run from a few percent to several times the control.
DEFAULT_RELATIVE_TAU = 0.25


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _interval(value: float, se: float, alpha: float) -> Estimate:
    half = stats.norm.ppf(1 - alpha / 2) * se
    return Estimate(value, se, value - half, value + half)


def mean(values: np.ndarray, *, alpha: float = 0.05) -> Estimate:
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return _interval(float(values.mean()), se, alpha)


def ratio(numerator: np.ndarray, denominator: np.ndarray, *, alpha: float = 0.05) -> Estimate:
    """sum(numerator) / sum(denominator) over users, with its delta-method standard error."""
    x = np.asarray(numerator, np.float64)
    y = np.asarray(denominator, np.float64)
    n = len(x)
    if n == 0 or y.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    mx, my = x.mean(), y.mean()
    r = mx / my
    if n < 2:
        return _interval(float(r), math.inf, alpha)
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = float(np.cov(x, y, ddof=1)[0, 1])
    variance = max(0.0, (vx - 2 * r * cxy + r * r * vy) / (n * my * my))
    return _interval(float(r), math.sqrt(variance), alpha)


@dataclass(frozen=True)
class Difference:
    """Treatment minus control."""

    value: float
    se: float
    low: float
    high: float
    relative: float  # value / control
    p_value: float  # fixed horizon, two-sided
    always_valid_p: float  # mixture SPRT, valid at any time

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def difference(treatment: Estimate, control: Estimate, *, alpha: float = 0.05,
               relative_tau: float = DEFAULT_RELATIVE_TAU) -> Difference:
    value = treatment.value - control.value
    se = math.hypot(treatment.se, control.se)
    if not math.isfinite(se) or se == 0:
        return Difference(value, se, math.nan, math.nan, math.nan, math.nan, math.nan)
    interval = _interval(value, se, alpha)
    p = float(2 * stats.norm.sf(abs(value) / se))
    tau = max(abs(control.value) * relative_tau, 1e-12)
    relative = value / control.value if control.value else math.nan
    return Difference(value, se, interval.low, interval.high, relative, p, msprt_p_value(value, se * se, tau * tau))


def msprt_p_value(observed: float, variance: float, tau_squared: float) -> float:
    """1/Λ of the normal-mixture SPRT, capped at 1 (see the module's docstring)."""
    v, t2 = variance, tau_squared
    log_ratio = 0.5 * math.log(v / (v + t2)) + t2 * observed * observed / (2 * v * (v + t2))
    return float(min(1.0, math.exp(-log_ratio)))


@dataclass(frozen=True)
class SampleRatio:
    observed: list[int]
    expected_shares: list[float]
    p_value: float
    mismatch: bool


def sample_ratio_mismatch(observed: list[int], shares: list[float], *, threshold: float = 0.001) -> SampleRatio:
    """Chi-square test of users per variant against the shares; flagged below ``threshold``."""
    total = sum(observed)
    if total == 0:
        return SampleRatio(observed, shares, 1.0, False)
    expected = [share * total for share in shares]
    p = float(stats.chisquare(observed, expected).pvalue)
    return SampleRatio(observed, shares, p, p < threshold)


@dataclass(frozen=True)
class InterleavingResult:
    wins_a: int
    wins_b: int
    ties: int
    preference_b: float  # (wins_b - wins_a) / (wins + ties): > 0 when users prefer b
    p_value: float


def interleaving_test(wins_a: int, wins_b: int, ties: int) -> InterleavingResult:
    decided = wins_a + wins_b
    p = float(stats.binomtest(wins_b, decided, 0.5).pvalue) if decided else 1.0
    users = decided + ties
    return InterleavingResult(wins_a, wins_b, ties, (wins_b - wins_a) / users if users else 0.0, p)
