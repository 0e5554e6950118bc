"""The page's one JSON document: every stage of the pipeline with its live figures.

Built on request from what the loops last saw (``OpsState`` and the scrape history), so the
numbers on the page are the ones the metrics endpoints give: rates are per second over about
the last minute, quantiles are over the observations of about the last minute.
"""

from __future__ import annotations

import math
import time
from typing import Any

from streamrec.exposition import histogram_quantile
from streamrec.lag import GroupReport, Status
from streamrec.topics import INTERACTION_TOPICS, Topic
from serving.ops.scrape import Target
from serving.ops.service import OpsService

WINDOW_S = 60.0


def _finite(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def _group(reports: list[GroupReport], name: str) -> dict[str, Any] | None:
    for report in reports:
        if report.group == name:
            return {"group": name, "status": report.status.name, "rule": report.rule, "lag": report.lag,
                    "lag_seconds": _finite(report.lag_seconds), "consume_rate": _finite(report.consume_rate, 1)}
    return None


def _topic_rate(service: OpsService, topics: list[str]) -> float | None:
    history = list(service.state.log_ends)
    if len(history) < 2:
        return None
    newest_at, newest = history[-1]
    older = [entry for entry in history[:-1] if newest_at - entry[0] >= WINDOW_S] or history[:1]
    older_at, oldest = older[-1]
    if newest_at <= older_at:
        return None
    return max(0.0, sum(newest.get(t, 0) - oldest.get(t, 0) for t in topics) / (newest_at - older_at))


def _target(target: Target) -> dict[str, Any]:
    latest = target.latest
    return {"job": target.job, "url": target.url, "up": bool(latest and latest.up),
            "error": latest.error if latest else "not scraped yet", "at": latest.at if latest else None}


def _rate(target: Target, name: str, **match: str) -> float | None:
    return _finite(target.rate(name, WINDOW_S, **match), 2)


def _quantiles(target: Target, histogram: str) -> dict[str, float | None]:
    return {"p50": _finite(target.quantile(0.5, histogram, WINDOW_S)), "p99": _finite(target.quantile(0.99, histogram, WINDOW_S))}


def build_overview(service: OpsService) -> dict[str, Any]:
    settings, state, targets = service.settings, service.state, service.targets
    reports = state.reports
    collector, streams, recs, api, trainer, triton = (targets[j] for j in ("collector", "streams", "recs", "api", "trainer", "triton"))
    lists_rate = recs.rate("streamrec_recs_lists_total", WINDOW_S)
    degraded_rate = recs.rate("streamrec_recs_degraded_total", WINDOW_S)
    latest_recs = recs.latest
    total_lists = latest_recs.samples.total("streamrec_recs_lists_total") if latest_recs and latest_recs.up else 0.0
    degraded_share = (degraded_rate / lists_rate) if lists_rate else (
        latest_recs.samples.total("streamrec_recs_degraded_total") / total_lists if total_lists else None)
    interaction_topics = [t.value for t in INTERACTION_TOPICS]
    stages = [
        {"id": "collector", "label": "collector", "kind": "process", "up": _target(collector)["up"],
         "throughput": _rate(collector, "streamrec_collector_events_total", outcome="accepted"), "unit": "events/s"},
        {"id": "topics", "label": "events.* topics", "kind": "topic",
         "throughput": _finite(_topic_rate(service, interaction_topics), 2), "unit": "records/s"},
        {"id": "streams", "label": "streams worker", "kind": "process", "up": _target(streams)["up"],
         "throughput": _rate(streams, "streamrec_streams_events_total"), "unit": "events/s",
         "lag": _group(reports, settings.streams.app_id), "latency": _quantiles(streams, "streamrec_streams_event_to_redis_seconds")},
        {"id": "profiles", "label": "Redis profiles → profiles.updated", "kind": "topic",
         "throughput": _finite(_topic_rate(service, [Topic.PROFILES_UPDATED.value]), 2), "unit": "updates/s"},
        {"id": "recs", "label": "recs worker", "kind": "process", "up": _target(recs)["up"],
         "throughput": _finite(lists_rate, 2), "unit": "lists/s", "lag": _group(reports, settings.recs.app_id),
         "latency": _quantiles(recs, "streamrec_recs_freshness_seconds"), "degraded_share": _finite(degraded_share, 4)},
        {"id": "recommendations", "label": "recommendations topic / API", "kind": "topic",
         "throughput": _finite(_topic_rate(service, [Topic.RECOMMENDATIONS.value]), 2), "unit": "lists/s",
         "api_rate": _rate(api, "streamrec_api_request_seconds_count"), "api_up": _target(api)["up"]},
        {"id": "trainer", "label": "trainer", "kind": "process", "up": _target(trainer)["up"],
         "lag": _group(reports, settings.trainer.group_id),
         "consecutive_rejections": _finite(trainer.latest.samples.total("streamrec_trainer_consecutive_rejections"), 0)
         if trainer.latest and trainer.latest.up else None},
        {"id": "triton", "label": "Triton", "kind": "process", "up": bool(state.triton) and not state.triton_error,
         "throughput": _rate(triton, "nv_inference_request_success"), "unit": "inferences/s", "models": state.triton},
    ]
    canary = list(state.canary)
    successes = [result.seconds for result in canary if result.ok and result.seconds is not None]
    canary_buckets = [(float(b), float(c)) for b, c in _histogram_buckets(service)]
    return {
        "at": time.time(),
        "thresholds": {"warn_lag_s": service.thresholds.warn_lag_s, "err_lag_s": service.thresholds.err_lag_s,
                       "window": service.thresholds.window, "interval_s": settings.ops.interval_s},
        "stages": stages,
        "groups": [_group_row(report) for report in sorted(reports, key=lambda r: (-r.status, r.group))],
        "lag_error": state.lag_error,
        "freshness": {
            "event_to_profile": _quantiles(streams, "streamrec_streams_event_to_redis_seconds"),
            "event_to_list": _quantiles(recs, "streamrec_recs_freshness_seconds"),
        },
        "canary": {
            "enabled": service.canary is not None,
            "user_id": service.canary.user_id if service.canary else None,
            "probes": len(canary), "failures": sum(not result.ok for result in canary),
            "last": _canary_row(canary[-1]) if canary else None,
            "p50": _finite(histogram_quantile(0.5, canary_buckets)), "p99": _finite(histogram_quantile(0.99, canary_buckets)),
            "recent": [round(seconds, 3) for seconds in successes[-60:]],
        },
        "degraded_share": _finite(degraded_share, 4),
        "triton": {"models": state.triton, "error": state.triton_error},
        "trainer": {"decisions": [_decision(record) for record in service.tail.newest(Topic.MODEL_UPDATES, 10)]},
        "dead_letters": _dead_letters(service),
        "data_quality": state.scorecard.as_dict() if state.scorecard is not None else None,
        "experiments": [],
        "targets": [_target(target) for target in targets.values()],
    }


def _histogram_buckets(service: OpsService) -> list[tuple[float, float]]:
    metric = service.metrics.canary_seconds
    found = []
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                found.append((float(sample.labels["le"]), sample.value))
    return sorted(found)


def _group_row(report: GroupReport) -> dict[str, Any]:
    return {"group": report.group, "status": report.status.name, "rule": report.rule, "state": report.state,
            "members": report.members, "lag": report.lag, "lag_seconds": _finite(report.lag_seconds),
            "consume_rate": _finite(report.consume_rate, 1), "catch_up_s": _finite(report.catch_up_s, 1),
            "partitions": len(report.partitions), "bad": report.status is not Status.OK}


def _canary_row(result) -> dict[str, Any]:
    return {"at": result.at, "ok": result.ok, "seconds": _finite(result.seconds), "detail": result.detail, "degraded": result.degraded}


def _decision(record: dict[str, Any]) -> dict[str, Any]:
    value = record["value"]
    gate = value.get("gate") or {}
    return {"at_ms": record["timestamp_ms"], "event": value.get("event"), "model": value.get("model"),
            "version": value.get("version"), "parent": value.get("parent"), "events_used": value.get("events_used"),
            "gate": {key: gate.get(key) for key in ("passed", "challenger", "champion", "se", "rows", "reasons") if key in gate}}


def _dead_letters(service: OpsService) -> dict[str, Any]:
    collector, streams, recs, trainer = (service.targets[j].latest for j in ("collector", "streams", "recs", "trainer"))
    counts: list[dict[str, Any]] = []
    if collector is not None and collector.up:
        for kind, value in collector.samples.by_label("streamrec_collector_events_total", "kind", outcome="rejected").items():
            counts.append({"source": "collector", "reason": kind, "count": int(value), "topic": Topic.DLQ.value})
    if streams is not None and streams.up:
        for rule, value in streams.samples.by_label("streamrec_streams_rejections_total", "rule").items():
            topic = Topic.DLQ.value if rule == "malformed" else Topic.QUARANTINE.value
            counts.append({"source": "streams", "reason": rule, "count": int(value), "topic": topic})
        # Interactions' unreadable records are the "malformed" rule above; the catalog's have no rule.
        catalog = streams.samples.by_label("streamrec_streams_dead_letters_total", "topic").get(Topic.CATALOG.value)
        if catalog is not None:
            counts.append({"source": "streams", "reason": f"unreadable on {Topic.CATALOG.value}", "count": int(catalog),
                           "topic": Topic.DLQ.value})
    if recs is not None and recs.up:
        for topic, value in recs.samples.by_label("streamrec_recs_dead_letters_total", "topic").items():
            counts.append({"source": "recs", "reason": f"unreadable on {topic}", "count": int(value), "topic": Topic.DLQ.value})
    if trainer is not None and trainer.up:
        for topic, value in trainer.samples.by_label("streamrec_trainer_dead_letters_total", "topic").items():
            counts.append({"source": "trainer", "reason": f"unreadable on {topic}", "count": int(value), "topic": Topic.DLQ.value})
    examples = []
    for record in service.tail.newest(Topic.DLQ, 5):
        value = record["value"]
        examples.append({"topic": Topic.DLQ.value, "at_ms": record["timestamp_ms"], "source": value.get("source"),
                         "reason": value.get("reason"), "raw": str(value.get("raw", ""))[:300]})
    for record in service.tail.newest(Topic.QUARANTINE, 5):
        value = record["value"]
        examples.append({"topic": Topic.QUARANTINE.value, "at_ms": record["timestamp_ms"], "source": "streams",
                         "reason": f"{value.get('rule')}: {value.get('reason')}", "raw": str(value.get("event", ""))[:300]})
    return {"counts": sorted(counts, key=lambda row: -row["count"]), "examples": examples}
