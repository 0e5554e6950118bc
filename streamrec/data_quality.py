"""The data-quality scorecard: a data-governance maturity level computed from counters alone.

Every figure comes from what the streams worker (and, when given, the collector) already count in
their Prometheus metrics (names in :mod:`streamrec.quality_metrics`); nothing re-reads a topic, so
the scorecard costs one scrape and says what the running system did, not what a sample suggests.
Canary users' events are counted apart (by the worker, and by the collector as ``kind="canary"``)
and take no part.

Checks, by dimension (a share is of the events the streams worker read, after replays are
skipped, unless said otherwise):

==============  =================================  =============================================
dimension       check                              figure
==============  =================================  =============================================
completeness    events_item_in_catalog             applied events whose item the catalog has
completeness    catalog_items_with_<field>         stored catalog items that have the field
validity        events_malformed                   events dead-lettered as unreadable by streams
validity        collector_events_rejected          events the collector received and rejected
uniqueness      events_duplicate                   events set aside as duplicates
timeliness      events_late_or_future              events set aside as late or future-stamped
timeliness      event_delay_p99_seconds            p99 of Kafka timestamp - event ts, applied
consistency     purchases_price_outlier            purchases priced off the catalog, of those
                                                   that reached the price rule
==============  =================================  =============================================

A check without data (no events yet, no catalog items yet) is graded ok with a detail that says
so, and its figure is the best one (share 1 or 0, delay 0): nothing measured has gone wrong, and a
fresh system should not open at level 1. ``collector_events_rejected`` is left out when no
collector text is given, and the scorecard's ``notes`` say so.

Level rules (the first that holds, from the top):

=====  ==============================================================
level  rule
=====  ==============================================================
5      every check ok
4      no check fails; warnings in at most one dimension
3      no check fails (warnings in two or more dimensions)
2      checks fail in one dimension
1      checks fail in two or more dimensions
=====  ==============================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from streamrec.exposition import MetricSamples, histogram_quantile
from streamrec.quality_metrics import (
    CANARY_KIND,
    COLLECTOR_EVENTS,
    STREAMS_CATALOG_FIELDS_MISSING,
    STREAMS_CATALOG_ITEMS,
    STREAMS_EVENT_DELAY,
    STREAMS_EVENTS,
    STREAMS_ITEM_LOOKUPS,
    STREAMS_REJECTIONS,
    Rule,
)
from streamrec.settings import DataQualitySettings

DataQualityThresholds = DataQualitySettings
"""The thresholds are the settings section itself (``Settings().data_quality``)."""

Grade = Literal["ok", "warn", "fail"]
DIMENSIONS = ("completeness", "validity", "uniqueness", "timeliness", "consistency")
NO_EVENTS = "no events yet"


class NotStreamsMetrics(ValueError):
    """The text given as the streams worker's has none of its metrics (a wrong URL, another process)."""


@dataclass(frozen=True)
class Check:
    dimension: str
    name: str
    value: float
    target: float
    limit: float
    higher_is_better: bool
    grade: Grade
    detail: str

    @property
    def unit(self) -> Literal["share", "seconds"]:
        return "seconds" if self.name.endswith("_seconds") else "share"

    def as_dict(self) -> dict:
        return {**asdict(self), "unit": self.unit}


@dataclass(frozen=True)
class Scorecard:
    checks: tuple[Check, ...]
    level: int
    level_rule: str
    events_seen: int
    notes: tuple[str, ...] = ()  # what the figures could not include (a source not scraped)

    def as_dict(self) -> dict:
        return {
            "level": self.level,
            "level_rule": self.level_rule,
            "events_seen": self.events_seen,
            "checks": [check.as_dict() for check in self.checks],
            "notes": list(self.notes),
        }


def grade(value: float, *, target: float, limit: float, higher_is_better: bool) -> Grade:
    """ok at or better than ``target``, fail beyond ``limit``, warn in between (the limit itself warns)."""
    if higher_is_better:
        return "ok" if value >= target else ("fail" if value < limit else "warn")
    return "ok" if value <= target else ("fail" if value > limit else "warn")


def level_of(checks: tuple[Check, ...] | list[Check]) -> tuple[int, str]:
    """The level and the rule that set it, in words (see the module's table)."""
    failing = sorted({c.dimension for c in checks if c.grade == "fail"}, key=_dimension_order)
    warning = sorted({c.dimension for c in checks if c.grade == "warn"}, key=_dimension_order)
    if len(failing) >= 2:
        return 1, f"checks fail in {len(failing)} dimensions ({', '.join(failing)})"
    if failing:
        return 2, f"checks fail in one dimension ({failing[0]})"
    if len(warning) >= 2:
        return 3, f"no check fails; warnings in {len(warning)} dimensions ({', '.join(warning)})"
    if warning:
        return 4, f"no check fails; warnings in one dimension only ({warning[0]})"
    return 5, "every check meets its target"


def scorecard_from_metrics(
    streams_text: str, collector_text: str | None = None, thresholds: DataQualityThresholds | None = None
) -> Scorecard:
    """The scorecard from the Prometheus exposition text of the streams worker's /metrics and,
    optionally, the collector's. Raises :class:`NotStreamsMetrics` when ``streams_text`` has no
    ``streamrec_streams_*`` metric, and ``ValueError`` when it is not exposition text."""
    t = thresholds or DataQualitySettings()
    streams = MetricSamples(streams_text)
    if not streams.has_prefix("streamrec_streams_"):
        raise NotStreamsMetrics("no streamrec_streams_* metric in the streams worker's text: is the URL right?")
    applied = streams.total(f"{STREAMS_EVENTS}_total")
    rejected = {rule: streams.total(f"{STREAMS_REJECTIONS}_total", rule=rule.value) for rule in Rule}
    seen = applied + sum(rejected.values())
    checks = [
        *_completeness(streams, t),
        _lower("validity", "events_malformed", rejected[Rule.MALFORMED], seen, t.dead_letter_target, t.dead_letter_limit,
               "of {n} events read were malformed (dead-lettered)"),
    ]
    notes = []
    if collector_text is None:
        notes.append("collector metrics not given: collector_events_rejected left out")
    else:
        checks.append(_collector(MetricSamples(collector_text), t))
    checks += [
        _lower("uniqueness", "events_duplicate", rejected[Rule.DUPLICATE], seen, t.duplicate_target, t.duplicate_limit,
               "of {n} events read were duplicates"),
        _lower("timeliness", "events_late_or_future", rejected[Rule.LATE_TIMESTAMP] + rejected[Rule.FUTURE_TIMESTAMP], seen,
               t.late_or_future_target, t.late_or_future_limit,
               f"of {{n}} events read were late ({rejected[Rule.LATE_TIMESTAMP]:,.0f}) "
               f"or in the future ({rejected[Rule.FUTURE_TIMESTAMP]:,.0f})"),
        _delay(streams, t),
        _lower("consistency", "purchases_price_outlier", rejected[Rule.PRICE_MISMATCH],
               streams.total(f"{STREAMS_EVENTS}_total", type="purchase") + rejected[Rule.PRICE_MISMATCH],
               t.price_outlier_target, t.price_outlier_limit, "of {n} purchases were priced off the catalog",
               empty="no purchases yet"),
    ]
    level, rule = level_of(checks)
    return Scorecard(tuple(checks), level, rule, int(seen), tuple(notes))


def _completeness(streams: MetricSamples, t: DataQualitySettings) -> list[Check]:
    found = streams.total(f"{STREAMS_ITEM_LOOKUPS}_total", found="true")
    looked_up = found + streams.total(f"{STREAMS_ITEM_LOOKUPS}_total", found="false")
    checks = [_higher("completeness", "events_item_in_catalog", found, looked_up, t.item_in_catalog_target,
                      t.item_in_catalog_limit, "of {n} applied events name a catalog item")]
    stored = streams.total(f"{STREAMS_CATALOG_ITEMS}_total")
    for field in t.catalog_fields:
        missing = streams.total(f"{STREAMS_CATALOG_FIELDS_MISSING}_total", field=field)
        checks.append(_higher("completeness", f"catalog_items_with_{field}", stored - missing, stored, t.catalog_field_target,
                              t.catalog_field_limit, f"of {{n}} catalog items stored have a {field}",
                              empty="no catalog items stored yet"))
    return checks


def _collector(collector: MetricSamples, t: DataQualitySettings) -> Check:
    name = f"{COLLECTOR_EVENTS}_total"
    rejected = collector.by_label(name, "kind", outcome="rejected")
    received = collector.total(name) - collector.total(name, outcome="accepted", kind=CANARY_KIND)
    reasons = ", ".join(f"{kind} {count:,.0f}" for kind, count in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])) if count)
    return _lower("validity", "collector_events_rejected", sum(rejected.values()), received, t.dead_letter_target,
                  t.dead_letter_limit, "of {n} events the collector received were rejected" + (f" ({reasons})" if reasons else ""))


def _delay(streams: MetricSamples, t: DataQualitySettings) -> Check:
    buckets = streams.buckets(f"{STREAMS_EVENT_DELAY}_bucket")
    count = buckets[-1][1] if buckets else 0.0
    if count <= 0:
        return _check("timeliness", "event_delay_p99_seconds", 0.0, t.event_delay_p99_target_s, t.event_delay_p99_limit_s,
                      False, NO_EVENTS)
    p99 = histogram_quantile(0.99, buckets)
    return _check("timeliness", "event_delay_p99_seconds", p99, t.event_delay_p99_target_s, t.event_delay_p99_limit_s, False,
                  f"p99 about {_seconds(p99)} over {count:,.0f} applied events (from histogram buckets)")


def _share(dimension: str, name: str, count: float, n: float, target: float, limit: float, detail: str,
           *, higher_is_better: bool, empty: str = NO_EVENTS) -> Check:
    """A check whose figure is ``count / n``; without data it holds the best figure and says so."""
    if n <= 0:
        return _check(dimension, name, 1.0 if higher_is_better else 0.0, target, limit, higher_is_better, empty)
    share = count / n
    return _check(dimension, name, share, target, limit, higher_is_better, f"{_percent(share)} {detail.format(n=f'{n:,.0f}')}")


def _higher(dimension: str, name: str, good: float, n: float, target: float, limit: float, detail: str,
            empty: str = NO_EVENTS) -> Check:
    return _share(dimension, name, good, n, target, limit, detail, higher_is_better=True, empty=empty)


def _lower(dimension: str, name: str, bad: float, n: float, target: float, limit: float, detail: str,
           empty: str = NO_EVENTS) -> Check:
    return _share(dimension, name, bad, n, target, limit, detail, higher_is_better=False, empty=empty)


def _check(dimension: str, name: str, value: float, target: float, limit: float, higher_is_better: bool, detail: str) -> Check:
    return Check(dimension, name, value, target, limit, higher_is_better,
                 grade(value, target=target, limit=limit, higher_is_better=higher_is_better), detail)


def _percent(share: float) -> str:
    return f"{100 * share:.2f} %"


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"


def _dimension_order(dimension: str) -> int:
    return DIMENSIONS.index(dimension) if dimension in DIMENSIONS else len(DIMENSIONS)
