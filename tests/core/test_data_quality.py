"""The data-quality scorecard from hand-written /metrics text: each figure, the grades at their
boundaries, each level rule, no data, and `streamrec quality`'s output and exit codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.data_quality import Check, NotStreamsMetrics, grade, histogram_quantile, level_of, scorecard_from_metrics
from streamrec.settings import DataQualitySettings, Settings

BOUNDS = ("0.1", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "1800.0", "3600.0",
          "21600.0", "86400.0", "604800.0", "+Inf")


def streams_text(
    *,
    applied: dict[str, int] | None = None,
    rejected: dict[str, int] | None = None,
    found: int = 0,
    not_found: int = 0,
    catalog_items: int = 0,
    fields_missing: dict[str, int] | None = None,
    delays: dict[str, int] | None = None,  # upper bound -> events in that bucket (not cumulative)
) -> str:
    """A streams worker's /metrics text, as prometheus_client writes it."""
    lines = ["# HELP streamrec_streams_events_total Interactions applied.", "# TYPE streamrec_streams_events_total counter"]
    lines += [f'streamrec_streams_events_total{{type="{t}"}} {n}.0' for t, n in (applied or {}).items()]
    lines += ["# TYPE streamrec_streams_rejections_total counter"]
    lines += [f'streamrec_streams_rejections_total{{rule="{r}"}} {n}.0' for r, n in (rejected or {}).items()]
    lines += ["# TYPE streamrec_streams_item_lookups_total counter",
              f'streamrec_streams_item_lookups_total{{found="true"}} {found}.0',
              f'streamrec_streams_item_lookups_total{{found="false"}} {not_found}.0',
              "# TYPE streamrec_streams_catalog_items_total counter",
              f"streamrec_streams_catalog_items_total {catalog_items}.0",
              "# TYPE streamrec_streams_catalog_fields_missing_total counter"]
    lines += [f'streamrec_streams_catalog_fields_missing_total{{field="{f}"}} {n}.0' for f, n in (fields_missing or {}).items()]
    lines += ["# TYPE streamrec_streams_event_delay_seconds histogram"]
    cumulative = 0
    for bound in BOUNDS:
        cumulative += (delays or {}).get(bound, 0)
        lines.append(f'streamrec_streams_event_delay_seconds_bucket{{le="{bound}"}} {cumulative}.0')
    lines += [f"streamrec_streams_event_delay_seconds_count {cumulative}.0", "streamrec_streams_event_delay_seconds_sum 0.0"]
    return "\n".join(lines) + "\n"


def collector_text(**counts: int) -> str:
    """outcome__kind=count, e.g. accepted__ok=10, rejected__missing=2."""
    lines = ["# TYPE streamrec_collector_events_total counter"]
    for key, n in counts.items():
        outcome, kind = key.split("__")
        lines.append(f'streamrec_collector_events_total{{outcome="{outcome}",kind="{kind}"}} {n}.0')
    return "\n".join(lines) + "\n"


def by_name(card) -> dict[str, Check]:
    return {check.name: check for check in card.checks}


def test_each_figure_is_the_share_of_the_counts_it_names():
    text = streams_text(
        applied={"click": 900, "add_to_cart": 0, "purchase": 90},
        rejected={"malformed": 5, "duplicate": 3, "late_timestamp": 2, "future_timestamp": 1, "price_mismatch": 10,
                  "bot_click_rate": 0},
        found=950, not_found=40, catalog_items=200, fields_missing={"title": 0, "category": 0, "price": 4, "brand": 50},
        delays={"1.0": 900, "10.0": 85, "120.0": 5},
    )
    card = scorecard_from_metrics(text, collector_text(accepted__ok=1000, rejected__missing=6, rejected__unknown_type=2,
                                                       failed__delivery=0, accepted__canary=40))  # the probe's: left out
    checks = by_name(card)
    assert card.events_seen == 990 + 21
    assert checks["events_item_in_catalog"].value == pytest.approx(950 / 990)
    assert checks["catalog_items_with_price"].value == pytest.approx(196 / 200)
    assert checks["catalog_items_with_title"].value == 1.0 and "catalog_items_with_brand" not in checks  # not checked by default
    assert checks["events_malformed"].value == pytest.approx(5 / 1011)
    assert checks["collector_events_rejected"].value == pytest.approx(8 / 1008)
    assert checks["collector_events_rejected"].detail.endswith("(missing 6, unknown_type 2)")
    assert checks["events_duplicate"].value == pytest.approx(3 / 1011)
    assert checks["events_late_or_future"].value == pytest.approx(3 / 1011)
    assert "late (2) or in the future (1)" in checks["events_late_or_future"].detail
    # rank 0.99 * 990 = 980.1 lies in the bucket (5, 10] holding events 901..985: 5 + 5 * (80.1 / 85)
    assert checks["event_delay_p99_seconds"].value == pytest.approx(5 + 5 * 80.1 / 85)
    assert checks["purchases_price_outlier"].value == pytest.approx(10 / 100)  # of the purchases that reached the price rule
    assert checks["events_item_in_catalog"].detail == "95.96 % of 990 applied events name a catalog item"
    assert [c.dimension for c in card.checks] == ["completeness"] * 4 + ["validity"] * 2 + ["uniqueness"] + \
        ["timeliness"] * 2 + ["consistency"]
    assert card.notes == ()
    as_dict = card.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict and as_dict["checks"][0]["unit"] == "share"


def test_grades_at_their_boundaries():
    higher = dict(target=0.99, limit=0.9, higher_is_better=True)
    assert [grade(v, **higher) for v in (1.0, 0.99, 0.989, 0.9, 0.899)] == ["ok", "ok", "warn", "warn", "fail"]
    lower = dict(target=0.01, limit=0.05, higher_is_better=False)
    assert [grade(v, **lower) for v in (0.0, 0.01, 0.011, 0.05, 0.051)] == ["ok", "ok", "warn", "warn", "fail"]


@pytest.mark.parametrize("duplicates, expected", [(1, "ok"), (2, "warn"), (5, "warn"), (6, "fail")])
def test_the_duplicate_share_is_graded_at_its_target_and_limit(duplicates, expected):
    card = scorecard_from_metrics(streams_text(applied={"click": 100 - duplicates}, rejected={"duplicate": duplicates}))
    assert by_name(card)["events_duplicate"].value == duplicates / 100
    assert by_name(card)["events_duplicate"].grade == expected


@pytest.mark.parametrize("delays, p99, expected", [
    ({"60.0": 99, "600.0": 1}, 60.0, "ok"),  # rank 99 is the last event of (30, 60]
    ({"60.0": 98, "120.0": 2}, 90.0, "warn"),  # rank 99 is half way through (60, 120]
    ({"60.0": 90, "600.0": 9, "1800.0": 1}, 600.0, "warn"),  # the limit itself warns
    ({"60.0": 90, "1800.0": 10}, 600 + 1200 * 0.9, "fail"),
    ({"+Inf": 100}, 604800.0, "fail"),  # beyond the last bound: the largest finite one, as Prometheus does
])
def test_the_delay_p99_is_read_from_the_buckets(delays, p99, expected):
    card = scorecard_from_metrics(streams_text(applied={"click": 100}, delays=delays))
    check = by_name(card)["event_delay_p99_seconds"]
    assert (check.value, check.grade) == (pytest.approx(p99), expected)


def test_histogram_quantile_skips_empty_buckets():
    assert histogram_quantile(0.5, [(1.0, 0.0), (2.0, 0.0), (4.0, 10.0), (float("inf"), 10.0)]) == pytest.approx(3.0)
    assert histogram_quantile(0.99, [(1.0, 0.0), (float("inf"), 5.0)]) == 1.0


def check(dimension: str, grade_: str) -> Check:
    return Check(dimension, f"{dimension}_{grade_}", 0.0, 0.0, 0.0, False, grade_, "")


@pytest.mark.parametrize("grades, level, words", [
    ([("completeness", "ok"), ("timeliness", "ok")], 5, "every check meets its target"),
    ([("timeliness", "warn"), ("timeliness", "warn"), ("validity", "ok")], 4,
     "no check fails; warnings in one dimension only (timeliness)"),
    ([("timeliness", "warn"), ("completeness", "warn")], 3, "no check fails; warnings in 2 dimensions (completeness, timeliness)"),
    ([("validity", "fail"), ("validity", "fail"), ("timeliness", "warn"), ("completeness", "warn")], 2,
     "checks fail in one dimension (validity)"),
    ([("validity", "fail"), ("uniqueness", "fail"), ("timeliness", "ok")], 1, "checks fail in 2 dimensions (validity, uniqueness)"),
])
def test_level_rules(grades, level, words):
    assert level_of([check(d, g) for d, g in grades]) == (level, words)


def test_a_scorecard_takes_its_level_from_its_checks():
    # duplicates warn (uniqueness) and malformed fails (validity): fails in one dimension
    card = scorecard_from_metrics(streams_text(applied={"click": 962}, rejected={"duplicate": 20, "malformed": 18}))
    assert (by_name(card)["events_duplicate"].grade, by_name(card)["events_malformed"].grade) == ("warn", "fail")
    assert (card.level, card.level_rule) == (2, "checks fail in one dimension (validity)")
    clean = scorecard_from_metrics(streams_text(applied={"click": 100}, found=100, catalog_items=5, delays={"1.0": 100}))
    assert (clean.level, clean.level_rule) == (5, "every check meets its target")


def test_no_data_is_ok_with_a_detail_that_says_so():
    card = scorecard_from_metrics(streams_text())
    assert card.events_seen == 0 and card.level == 5
    assert all(c.grade == "ok" for c in card.checks)
    details = {c.name: c.detail for c in card.checks}
    assert details["events_item_in_catalog"] == details["events_duplicate"] == details["event_delay_p99_seconds"] == "no events yet"
    assert details["catalog_items_with_price"] == "no catalog items stored yet"
    assert details["purchases_price_outlier"] == "no purchases yet"
    assert by_name(card)["events_item_in_catalog"].value == 1.0 and by_name(card)["events_duplicate"].value == 0.0
    assert card.notes == ("collector metrics not given: collector_events_rejected left out",)
    assert by_name(scorecard_from_metrics(streams_text(), collector_text()))["collector_events_rejected"].detail == "no events yet"


def test_text_without_streams_metrics_is_refused():
    with pytest.raises(NotStreamsMetrics):
        scorecard_from_metrics(collector_text(accepted__ok=5))


def test_thresholds_are_a_settings_section_whose_targets_lie_inside_their_limits(monkeypatch):
    defaults = DataQualitySettings()
    assert (defaults.item_in_catalog_target, defaults.item_in_catalog_limit) == (0.99, 0.9)
    assert (defaults.event_delay_p99_target_s, defaults.event_delay_p99_limit_s) == (60.0, 600.0)
    monkeypatch.setenv("STREAMREC_DATA_QUALITY__DUPLICATE_LIMIT", "0.2")
    monkeypatch.setenv("STREAMREC_DATA_QUALITY__CATALOG_FIELDS", '["brand"]')
    settings = Settings()
    assert settings.data_quality.duplicate_limit == 0.2 and settings.data_quality.catalog_fields == ["brand"]
    card = scorecard_from_metrics(streams_text(applied={"click": 90}, rejected={"duplicate": 10}), thresholds=settings.data_quality)
    assert by_name(card)["events_duplicate"].grade == "warn" and "catalog_items_with_brand" in by_name(card)
    with pytest.raises(ValidationError, match="duplicate_target > duplicate_limit"):
        DataQualitySettings(duplicate_target=0.1, duplicate_limit=0.05)
    with pytest.raises(ValidationError, match="item_in_catalog_target < item_in_catalog_limit"):
        DataQualitySettings(item_in_catalog_target=0.5)


@contextmanager
def metrics_server(pages: dict[str, str]) -> Iterator[str]:
    """A local HTTP server answering ``pages`` (path -> text) and 404 otherwise; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            body = pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def quality(streams_url: str, collector_url: str, *args: str):
    settings = Settings(ops={"streams_metrics_url": streams_url, "collector_url": collector_url})
    return CliRunner().invoke(app, ["quality", *args], obj=settings)


def test_cli_prints_the_scorecard_and_exits_by_level():
    good = streams_text(applied={"click": 100}, found=100, delays={"1.0": 100})
    one_fail = streams_text(applied={"click": 90}, rejected={"malformed": 10}, found=90)
    two_fails = streams_text(applied={"click": 80}, rejected={"malformed": 10, "duplicate": 10}, found=80)
    with metrics_server({"/good": good, "/one": one_fail, "/two": two_fails, "/c/metrics": collector_text(accepted__ok=3)}) as url:
        result = quality(f"{url}/good", f"{url}/c")
        assert result.exit_code == 0, result.output
        assert "data quality" in result.output and "level 5 (100 events read): every check meets its target" in result.output
        card = json.loads(quality(f"{url}/good", f"{url}/c", "--json").output)
        assert card["level"] == 5 and card["sources"]["collector"] == f"{url}/c/metrics"
        assert "collector_events_rejected" in {c["name"] for c in card["checks"]}
        assert quality(f"{url}/one", f"{url}/c").exit_code == 1
        assert quality(f"{url}/two", f"{url}/c").exit_code == 2
        without = quality(f"{url}/good", f"{url}/nowhere", "--json")
        assert without.exit_code == 0 and "collector_events_rejected left out" in json.loads(without.output)["notes"][0]
        wrong = quality(f"{url}/c/metrics", f"{url}/c")  # a URL that serves something else
        assert wrong.exit_code == 2 and "no streamrec_streams_* metric" in wrong.output
    unreachable = quality(f"{url}/good", f"{url}/c")  # the server is gone
    assert unreachable.exit_code == 2 and "cannot read the streams worker's metrics" in unreachable.output
    assert json.loads(quality(f"{url}/good", f"{url}/c", "--json").output)["level"] is None
