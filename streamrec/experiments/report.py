"""An experiment's report from what the attribution worker and the serving side counted in Redis.

Per variant: users, impressions, clicks, carts, purchases, revenue; click-through rate and
add-to-cart rate per impression and revenue per impression (ratios, delta method), conversion
(share of users with a purchase) and revenue per user (means), each with a 95 % interval; the
difference to the control with its interval, fixed-horizon p-value and always-valid p-value; a
sample-ratio-mismatch check of users per variant; guardrails (p99 time to compute a list,
degraded share, empty share). An interleaving experiment reports the users' wins per team and
the sign test. The unit is the user: a user counts in a variant once anything was attributed to
them there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import redis.asyncio as redis

from streamrec.experiments.definition import INTERLEAVED, Experiment
from streamrec.experiments.statistics import (
    DEFAULT_RELATIVE_TAU,
    Difference,
    Estimate,
    InterleavingResult,
    SampleRatio,
    difference,
    interleaving_test,
    mean,
    ratio,
    sample_ratio_mismatch,
)
from streamrec.store.attribution import METRICS, AttributionStore
from streamrec.store.guardrails import Guardrails, GuardrailStore

# What the report estimates per variant: name -> how it is computed from the per-user rows.
ESTIMATES = ("ctr", "cart_rate", "conversion", "revenue_per_user", "revenue_per_impression")


@dataclass
class UserRows:
    """One row per user: the attributed counts of one variant, aligned arrays."""

    users: list[str]
    values: dict[str, np.ndarray]

    @classmethod
    def from_counts(cls, counts: dict[str, dict[str, float]], users: list[str] | None = None) -> "UserRows":
        """Rows of ``users`` (default: every user with a count), zeros where a user has none."""
        if users is None:
            users = sorted(set().union(*(per_user.keys() for per_user in counts.values())))
        return cls(users, {metric: np.array([counts.get(metric, {}).get(u, 0.0) for u in users], np.float64) for metric in METRICS})

    def estimates(self) -> dict[str, Estimate]:
        v = self.values
        return {
            "ctr": ratio(v["clicks"], v["impressions"]),
            "cart_rate": ratio(v["carts"], v["impressions"]),
            "conversion": mean((v["purchases"] > 0).astype(np.float64)),
            "revenue_per_user": mean(v["revenue"]),
            "revenue_per_impression": ratio(v["revenue"], v["impressions"]),
        }


@dataclass
class VariantReport:
    name: str
    ranking: str
    share: float
    totals: dict[str, float]
    estimates: dict[str, Estimate]
    guardrails: Guardrails
    versus_control: dict[str, Difference] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "ranking": self.ranking, "share": self.share, "totals": self.totals,
            "estimates": {k: v.as_dict() for k, v in self.estimates.items()},
            "versus_control": {k: v.as_dict() for k, v in self.versus_control.items()},
            "guardrails": {**asdict(self.guardrails), "degraded_share": self.guardrails.degraded_share,
                           "empty_share": self.guardrails.empty_share},
        }


@dataclass
class ExperimentReport:
    experiment: Experiment
    variants: list[VariantReport]
    sample_ratio: SampleRatio | None
    interleaving: InterleavingResult | None

    def as_dict(self) -> dict:
        return {
            "experiment": self.experiment.model_dump(),
            "variants": [variant.as_dict() for variant in self.variants],
            "sample_ratio": None if self.sample_ratio is None else asdict(self.sample_ratio),
            "interleaving": None if self.interleaving is None else asdict(self.interleaving),
            "always_valid_relative_tau": DEFAULT_RELATIVE_TAU,
        }


def totals(rows: UserRows) -> dict[str, float]:
    return {"users": float(len(rows.users)), **{metric: float(values.sum()) for metric, values in rows.values.items()}}


def compare(experiment: Experiment, rows: dict[str, UserRows], guardrails: dict[str, Guardrails]) -> ExperimentReport:
    """The report from each variant's per-user rows (pure: the simulated shop calls it too)."""
    if experiment.kind == "interleaving":
        interleaved = rows[INTERLEAVED]
        a, b = interleaved.values["clicks_a"], interleaved.values["clicks_b"]
        clicked = (a + b) > 0
        result = interleaving_test(int((a > b).sum()), int((b > a).sum()), int(((a == b) & clicked).sum()))
        variant = VariantReport(INTERLEAVED, "team draft", 1.0, totals(interleaved), interleaved.estimates(), guardrails[INTERLEAVED])
        return ExperimentReport(experiment, [variant], None, result)
    reports: list[VariantReport] = []
    for spec in experiment.variants:
        found = rows[spec.name]
        reports.append(VariantReport(spec.name, spec.ranking, spec.share, totals(found), found.estimates(), guardrails[spec.name]))
    control = reports[0]
    for report in reports[1:]:
        report.versus_control = {name: difference(report.estimates[name], control.estimates[name]) for name in ESTIMATES}
    srm = sample_ratio_mismatch([int(report.totals["users"]) for report in reports], [spec.share for spec in experiment.variants])
    return ExperimentReport(experiment, reports, srm, None)


async def build_report(client: redis.Redis, experiment: Experiment) -> ExperimentReport:
    counts = AttributionStore(client)
    store = GuardrailStore(client)
    names = [INTERLEAVED] if experiment.kind == "interleaving" else [variant.name for variant in experiment.variants]
    rows = {name: UserRows.from_counts(await counts.counts(experiment.name, name)) for name in names}
    guardrails = {name: await store.read(experiment.name, name) for name in names}
    return compare(experiment, rows, guardrails)
