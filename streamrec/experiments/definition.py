"""What an experiment is, and which variant a user gets.

An experiment names its variants (each a ranking configuration), their traffic shares and a
salt. A user's variant is a pure function of the user id and the salt: a SHA-256 of both read as
a number in [0, 1), against the shares' cumulative sums. Every process (any recs worker, any
API replica, a restarted one) therefore assigns a user the same variant without storing
anything, and a new salt reshuffles users for the next experiment so that one experiment's
winners are not the next one's control group.

The first variant is the control: differences in the report are against it. An interleaving
experiment has exactly two variants and serves every user one list that mixes both (shares do
not apply; see :mod:`streamrec.experiments.interleaving`).
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Names go into Redis keys and metric labels: letters, digits and a few separators.
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Ranking = Literal["full", "signals", "covisit", "popularity"]
RANKINGS: dict[str, str] = {
    "full": "the whole pipeline: candidates, the sequence BERT on Triton, the blender, diversity",
    "signals": "the same candidates and blender without the sequence model",
    "covisit": "co-visitation counts only (items viewed together with the user's history)",
    "popularity": "short-term popularity only (what is trending)",
}
INTERLEAVED = "interleaved"  # the variant label of an interleaving experiment's lists
NO_EXPERIMENT = "-"  # the experiment label under which lists outside any experiment are counted
SHARE_TOLERANCE = 1e-6


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    ranking: Ranking = Field(description="; ".join(f"{key}: {text}" for key, text in RANKINGS.items()))
    share: float = Field(default=0.0, ge=0, le=1, description="Fraction of users served this variant (A/B only).")
    model_version: int | None = Field(
        default=None, ge=1,
        description="Pin the sequence model's version (ranking full only): Triton must have it loaded, e.g. "
                    "version_policy { latest { num_versions: 2 } } to test a new version against the one before.",
    )

    @model_validator(mode="after")
    def _version_needs_the_model(self) -> "Variant":
        if self.model_version is not None and self.ranking != "full":
            raise ValueError(f"model_version pins the sequence model, which ranking {self.ranking!r} does not use")
        return self


class Experiment(BaseModel):
    """One experiment; ``version`` grows with every change (a stop included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    kind: Literal["ab", "interleaving"] = "ab"
    variants: list[Variant] = Field(min_length=2, max_length=8)
    salt: str = Field(min_length=1, max_length=128)
    status: Literal["running", "stopped"] = "running"
    version: int = Field(default=1, ge=1)
    created_at: int = Field(default_factory=lambda: int(time.time() * 1000))
    stopped_at: int | None = None
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct: {names}")
        if INTERLEAVED in names:
            raise ValueError(f"{INTERLEAVED!r} is reserved for interleaved lists")
        if self.kind == "interleaving":
            if len(self.variants) != 2:
                raise ValueError("an interleaving experiment compares exactly two variants")
        elif abs(sum(variant.share for variant in self.variants) - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"shares must add up to 1, not {sum(v.share for v in self.variants):g}")
        return self

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)

    def assign(self, user_id: str) -> Variant:
        """The user's variant of an A/B experiment (stable across processes and restarts)."""
        point = unit_hash(self.salt, user_id)
        cumulative = 0.0
        for variant in self.variants:
            cumulative += variant.share
            if point < cumulative:
                return variant
        return self.variants[-1]  # shares summing to 1 - 1e-9: the last bucket takes the rest

    def labels(self, user_id: str) -> tuple[str, str]:
        """(experiment, variant) labels of the user's lists."""
        return self.name, INTERLEAVED if self.kind == "interleaving" else self.assign(user_id).name


def unit_hash(salt: str, user_id: str) -> float:
    """A number in [0, 1) from the salt and the user id, uniform over users."""
    digest = hashlib.sha256(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
