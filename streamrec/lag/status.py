"""Burrow's rules for judging a consumer group over a sliding window, plus thresholds in seconds.

Burrow (linkedin/Burrow, ``core/internal/evaluator``) judges each partition from the offsets a
group committed over a window, with no thresholds: lag zero somewhere in the window is OK; an
offset that went backwards is REWIND; a consumer that stopped committing is STOP; one that keeps
committing the same offset while lag remains is STALL; offsets that advance while lag never falls
are WARN. A group takes the worst status of its partitions.

Kafka's admin API gives the committed offset but not when it was committed, so the window here
holds samples taken by the monitor every interval, and two of Burrow's rules are read from what
a sample can see: a partition whose offset does not move is STOP when the group has no live
member (nobody is there to commit) and STALL when members are present (a consumer is alive but
not progressing). Burrow has no notion of time behind; a shop's operator thinks in seconds, so a
group whose oldest unconsumed record is older than ``warn_lag_s`` / ``err_lag_s`` is WARN / ERR
even when Burrow's rules find nothing (a consumer keeping pace with a backlog it never clears).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Status(IntEnum):
    """Ordered by severity, as in Burrow (a group shows its worst partition)."""

    OK = 1
    WARN = 2
    ERR = 3
    STOP = 4
    STALL = 5
    REWIND = 6


@dataclass(frozen=True)
class Sample:
    """One observation of one partition of one group."""

    at: float  # epoch seconds of the observation
    committed: int | None  # next offset the group will read; None before its first commit
    log_end: int
    lag: int
    lag_seconds: float


@dataclass(frozen=True)
class Thresholds:
    warn_lag_s: float
    err_lag_s: float
    window: int  # samples a partition needs before the movement rules apply


@dataclass(frozen=True)
class Judgement:
    status: Status
    rule: str  # which rule decided, in words an operator can act on
    consume_rate: float  # messages/s the group moved its offset over the window
    lag_trend: float  # messages/s the lag grew (negative: shrinking) over the window
    catch_up_s: float  # lag / shrink rate; 0 without lag, inf when the lag is not shrinking


def _trend(samples: Sequence[Sample]) -> float:
    if len(samples) < 2 or samples[-1].at <= samples[0].at:
        return 0.0
    times = np.array([sample.at for sample in samples]) - samples[0].at
    lags = np.array([sample.lag for sample in samples], dtype=float)
    return float(np.polyfit(times, lags, 1)[0])


def _rates(samples: Sequence[Sample]) -> tuple[float, float, float]:
    last = samples[-1]
    trend = _trend(samples)
    first = samples[0]
    span = last.at - first.at
    moved = (last.committed or 0) - (first.committed or 0) if span > 0 else 0
    consume = max(0.0, moved / span) if span > 0 else 0.0
    catch_up = 0.0 if last.lag == 0 else (last.lag / -trend if trend < 0 else math.inf)
    return consume, trend, catch_up


def judge_partition(
    samples: Sequence[Sample], *, group_active: bool, thresholds: Thresholds, periodic: bool = False
) -> Judgement:
    """Status of one partition from its window, oldest sample first.

    Burrow's order of checks: zero lag anywhere in the window settles it (OK); then REWIND,
    STOP, STALL and WARN, worst first. The movement rules wait for a full window, so that a
    monitor just started does not call a group stalled after one sample. The seconds
    thresholds then raise an otherwise OK or WARN partition.

    A ``periodic`` group consumes in batches between long pauses (the trainer reads every few
    minutes, with no member in between): standing still is its normal state, so only REWIND and
    the seconds thresholds (set for its period) judge it.
    """
    if not samples:
        raise ValueError("a partition is judged from at least one sample")
    consume, trend, catch_up = _rates(samples)
    last = samples[-1]

    def verdict(status: Status, rule: str) -> Judgement:
        if status <= Status.WARN and last.lag > 0:
            if last.lag_seconds > thresholds.err_lag_s:
                status, rule = Status.ERR, f"oldest unread record {last.lag_seconds:.0f} s old (error above {thresholds.err_lag_s:.0f} s)"
            elif last.lag_seconds > thresholds.warn_lag_s and status < Status.WARN:
                status, rule = Status.WARN, f"oldest unread record {last.lag_seconds:.0f} s old (warning above {thresholds.warn_lag_s:.0f} s)"
        return Judgement(status, rule, consume, trend, catch_up)

    offsets = [sample.committed for sample in samples if sample.committed is not None]
    if any(later < earlier for earlier, later in zip(offsets, offsets[1:])):
        return verdict(Status.REWIND, "committed offset went backwards")
    if any(sample.lag == 0 for sample in samples):
        return verdict(Status.OK, "lag was zero within the window")
    if len(samples) >= thresholds.window and not periodic:
        if len(set(offsets)) <= 1:
            if not group_active:
                return verdict(Status.STOP, "no live member commits; lag remains")
            return verdict(Status.STALL, "members are alive but the offset does not move; lag remains")
        if all(later.lag >= earlier.lag for earlier, later in zip(samples, samples[1:])):
            return verdict(Status.WARN, "the offset advances but the lag never falls")
    return verdict(Status.OK, "consuming")


@dataclass(frozen=True)
class PartitionJudgement:
    topic: str
    partition: int
    last: Sample
    judgement: Judgement


def judge_group(partitions: Sequence[PartitionJudgement]) -> tuple[Status, str]:
    """The worst partition's status and rule (Burrow: a group is as bad as its worst partition)."""
    if not partitions:
        return Status.OK, "no partitions with commits"
    worst = max(partitions, key=lambda p: (p.judgement.status, p.last.lag_seconds))
    if worst.judgement.status is Status.OK:
        return Status.OK, "every partition OK"
    return worst.judgement.status, f"{worst.topic}[{worst.partition}]: {worst.judgement.rule}"
