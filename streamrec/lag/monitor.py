"""Lag over a sliding window: samples every interval, Burrow's judgement per partition and group.

``LagMonitor.sample()`` reads every group once (``LagReader.snapshot``), appends the reading to
each partition's window and judges it; callers (``streamrec lag --watch``, the operations
service) decide how often. Windows of groups or partitions that disappear are dropped, so
memory follows the cluster.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from streamrec.lag.reader import GroupOffsets, LagReader, PartitionOffsets
from streamrec.lag.status import PartitionJudgement, Sample, Status, Thresholds, judge_group, judge_partition
from streamrec.settings import OpsSettings


@dataclass(frozen=True)
class PartitionReport:
    topic: str
    partition: int
    offsets: PartitionOffsets
    status: Status
    rule: str
    consume_rate: float
    lag_trend: float
    catch_up_s: float
    samples: int


@dataclass(frozen=True)
class GroupReport:
    group: str
    state: str
    members: int
    at: float
    status: Status
    rule: str
    lag: int  # sum over partitions
    lag_seconds: float  # worst partition
    consume_rate: float  # sum over partitions, messages/s
    catch_up_s: float  # worst partition
    partitions: tuple[PartitionReport, ...]

    def as_dict(self) -> dict[str, object]:
        def finite(value: float) -> float | None:
            return None if math.isinf(value) or math.isnan(value) else round(value, 3)

        return {
            "group": self.group, "state": self.state, "members": self.members, "at": self.at,
            "status": self.status.name, "rule": self.rule, "lag": self.lag, "lag_seconds": finite(self.lag_seconds),
            "consume_rate": finite(self.consume_rate), "catch_up_s": finite(self.catch_up_s),
            "partitions": [
                {
                    "topic": p.topic, "partition": p.partition, "committed": p.offsets.committed,
                    "log_start": p.offsets.log_start, "log_end": p.offsets.log_end, "lag": p.offsets.lag,
                    "lag_seconds": finite(p.offsets.lag_seconds), "lag_seconds_exact": p.offsets.lag_seconds_exact,
                    "status": p.status.name, "rule": p.rule, "consume_rate": finite(p.consume_rate),
                    "lag_trend": finite(p.lag_trend), "catch_up_s": finite(p.catch_up_s), "samples": p.samples,
                }
                for p in self.partitions
            ],
        }


class LagMonitor:
    def __init__(self, reader: LagReader, thresholds: Thresholds, *, groups: list[str] | None = None,
                 topics: list[str] | None = None, periodic: dict[str, Thresholds] | None = None) -> None:
        """``periodic``: groups that consume in batches, with the seconds thresholds for their period."""
        self._reader = reader
        self._thresholds = thresholds
        self._periodic = periodic or {}
        self._groups = groups
        self._topics = topics
        self._windows: dict[tuple[str, str, int], deque[Sample]] = {}

    def sample(self) -> list[GroupReport]:
        snapshots = self._reader.snapshot(self._groups, self._topics)
        seen: set[tuple[str, str, int]] = set()
        reports = [self._judge(snapshot, seen) for snapshot in snapshots]
        for key in set(self._windows) - seen:
            del self._windows[key]
        return reports

    def _judge(self, snapshot: GroupOffsets, seen: set[tuple[str, str, int]]) -> GroupReport:
        partitions: list[PartitionReport] = []
        judged: list[PartitionJudgement] = []
        for offsets in snapshot.partitions:
            key = (snapshot.group, offsets.topic, offsets.partition)
            seen.add(key)
            window = self._windows.setdefault(key, deque(maxlen=self._thresholds.window))
            window.append(Sample(snapshot.at, offsets.committed, offsets.log_end, offsets.lag, offsets.lag_seconds))
            periodic = self._periodic.get(snapshot.group)
            judgement = judge_partition(list(window), group_active=snapshot.active, thresholds=periodic or self._thresholds,
                                        periodic=periodic is not None)
            judged.append(PartitionJudgement(offsets.topic, offsets.partition, window[-1], judgement))
            partitions.append(PartitionReport(offsets.topic, offsets.partition, offsets, judgement.status, judgement.rule,
                                              judgement.consume_rate, judgement.lag_trend, judgement.catch_up_s, len(window)))
        status, rule = judge_group(judged)
        seconds = [p.offsets.lag_seconds for p in partitions if not math.isnan(p.offsets.lag_seconds)]
        return GroupReport(
            snapshot.group, snapshot.state, snapshot.members, snapshot.at, status, rule,
            lag=sum(p.offsets.lag for p in partitions),
            lag_seconds=max(seconds, default=0.0),
            consume_rate=sum(p.consume_rate for p in partitions),
            catch_up_s=max((p.catch_up_s for p in partitions), default=0.0),
            partitions=tuple(partitions),
        )


def thresholds_for(ops: OpsSettings) -> Thresholds:
    return Thresholds(warn_lag_s=ops.warn_lag_s, err_lag_s=ops.err_lag_s, window=ops.window)


def monitor_for(reader: LagReader, ops: OpsSettings, groups: list[str] | None = None) -> LagMonitor:
    """The monitor the operations settings describe: window, thresholds, periodic groups."""
    periodic = Thresholds(warn_lag_s=ops.periodic_warn_lag_s, err_lag_s=ops.periodic_err_lag_s, window=ops.window)
    return LagMonitor(reader, thresholds_for(ops), groups=groups, periodic={group: periodic for group in ops.periodic_groups})
