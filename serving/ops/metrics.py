"""The operations service's Prometheus metrics: lag and status per group, canary, scorecard, Triton.

Label sets are bounded: at most ``max_groups`` groups get labels (the others are counted in
``streamrec_lag_groups_dropped``), statuses are a fixed set, and series of groups or partitions
that disappear are removed, so a cluster with churning consumer groups does not grow the
registry forever.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamrec.lag import GroupReport, Status
from streamrec.topics import Topic

CANARY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class OpsMetrics:
    def __init__(self, *, max_groups: int, partition_metrics: bool) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._max_groups = max_groups
        self._partition_metrics = partition_metrics
        self.lag_messages = Gauge("streamrec_lag_messages", "Messages behind the log end.", ["group", "topic", "partition"], registry=r)
        self.lag_seconds = Gauge(
            "streamrec_lag_seconds", "Age of the oldest unread record (now minus its timestamp).", ["group", "topic", "partition"], registry=r
        )
        self.group_lag_messages = Gauge("streamrec_group_lag_messages", "Messages behind, summed over partitions.", ["group"], registry=r)
        self.group_lag_seconds = Gauge("streamrec_group_lag_seconds", "Age of the oldest unread record, worst partition.", ["group"], registry=r)
        self.group_rate = Gauge("streamrec_group_consume_rate", "Messages/s the group consumed over the window.", ["group"], registry=r)
        self.group_catch_up = Gauge(
            "streamrec_group_catch_up_seconds", "Lag divided by how fast it shrinks, worst partition (+Inf: not shrinking).", ["group"], registry=r
        )
        self.group_status = Gauge(
            "streamrec_group_status", "1 for the group's status (Burrow's rules plus lag-seconds thresholds), 0 for the others.",
            ["group", "status"], registry=r,
        )
        self.groups_dropped = Gauge("streamrec_lag_groups_dropped", "Consumer groups beyond ops.max_groups, not labelled.", registry=r)
        self.canary_seconds = Histogram(
            "streamrec_canary_freshness_seconds", "Canary click posted to the collector until its list is on the recommendations topic.",
            buckets=CANARY_BUCKETS, registry=r,
        )
        self.canary_failures = Counter("streamrec_canary_failures", "Canary probes without a list in time.", registry=r)
        self.canary_last_success = Gauge(
            "streamrec_canary_last_success_timestamp_seconds", "When a canary list last arrived in time.", registry=r
        )
        self.quality_level = Gauge("streamrec_data_quality_level", "Data-quality maturity level, 1 to 5 (README: the rules).", registry=r)
        self.quality_check = Gauge("streamrec_data_quality_check", "Figure of each data-quality check.", ["dimension", "check"], registry=r)
        self.quality_check_ok = Gauge(
            "streamrec_data_quality_check_ok", "1 when the check meets its target, 0 when it misses.", ["dimension", "check"], registry=r
        )
        self.triton_ready = Gauge("streamrec_triton_model_ready", "1 when Triton says the model is ready.", ["model"], registry=r)
        self.triton_version = Gauge("streamrec_triton_model_version", "Newest version Triton serves.", ["model"], registry=r)
        self.unreadable = Counter(
            "streamrec_ops_unreadable_records", "Records the service's tails could not read (shown as unreadable, skipped), by topic.",
            ["topic"], registry=r,
        )
        for topic in (Topic.DLQ, Topic.QUARANTINE, Topic.MODEL_UPDATES, Topic.RECOMMENDATIONS):
            self.unreadable.labels(topic.value)  # exported at 0 from the start
        self.target_up = Gauge("streamrec_ops_target_up", "1 when the last scrape of the process succeeded.", ["job"], registry=r)
        self.sample_seconds = Histogram(
            "streamrec_ops_lag_sample_seconds", "Time to read and judge every group once.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self._exported: dict[str, set[tuple[str, ...]]] = {}

    def observe_lag(self, reports: Iterable[GroupReport]) -> None:
        reports = sorted(reports, key=lambda report: report.group)
        kept, dropped = reports[: self._max_groups], reports[self._max_groups:]
        self.groups_dropped.set(len(dropped))
        series: dict[str, set[tuple[str, ...]]] = {"partition": set(), "group": set()}
        for report in kept:
            group = report.group
            series["group"].add((group,))
            self.group_lag_messages.labels(group).set(report.lag)
            self.group_lag_seconds.labels(group).set(report.lag_seconds)
            self.group_rate.labels(group).set(report.consume_rate)
            self.group_catch_up.labels(group).set(report.catch_up_s)
            for status in Status:
                self.group_status.labels(group, status.name).set(1.0 if report.status is status else 0.0)
            if self._partition_metrics:
                for p in report.partitions:
                    labels = (group, p.topic, str(p.partition))
                    series["partition"].add(labels)
                    self.lag_messages.labels(*labels).set(p.offsets.lag)
                    self.lag_seconds.labels(*labels).set(p.offsets.lag_seconds)
        self._remove_stale("partition", series["partition"], (self.lag_messages, self.lag_seconds))
        stale_groups = self._exported.get("group", set()) - series["group"]
        for (group,) in stale_groups:
            for gauge in (self.group_lag_messages, self.group_lag_seconds, self.group_rate, self.group_catch_up):
                gauge.remove(group)
            for status in Status:
                self.group_status.remove(group, status.name)
        self._exported["group"] = series["group"]

    def _remove_stale(self, kind: str, now: set[tuple[str, ...]], gauges: tuple[Gauge, ...]) -> None:
        for labels in self._exported.get(kind, set()) - now:
            for gauge in gauges:
                gauge.remove(*labels)
        self._exported[kind] = now

    def observe_scorecard(self, scorecard) -> None:
        self.quality_level.set(scorecard.level)
        for check in scorecard.checks:
            self.quality_check.labels(check.dimension, check.name).set(check.value)
            self.quality_check_ok.labels(check.dimension, check.name).set(1.0 if check.grade == "ok" else 0.0)

    def observe_triton(self, models: list[dict]) -> None:
        now = {(model["name"],) for model in models}
        for model in models:
            self.triton_ready.labels(model["name"]).set(1.0 if model["ready"] else 0.0)
            if model.get("version") is not None:
                self.triton_version.labels(model["name"]).set(model["version"])
        for (name,) in self._exported.get("triton", set()) - now:
            self.triton_ready.remove(name)
            try:
                self.triton_version.remove(name)
            except KeyError:
                pass
        self._exported["triton"] = now
