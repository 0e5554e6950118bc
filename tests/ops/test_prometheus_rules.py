"""The Prometheus config and alerting rules of docker/, checked with promtool.

``promtool check config`` and ``check rules`` read the files as Prometheus would load them;
``promtool test rules`` runs docker/prometheus/alerts.test.yml, where each alert fires on
made-up series and clears when they recover. The negative tests break a copy of the rules to
show that a broken rule or a moved threshold fails here. ``monitoring_metric_names`` collects
the metric names the rules and the dashboard read, for a check against running processes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamrec.stack.system import SystemPackage, ensure_installed
from tests.ops.monitoring import (
    DASHBOARD_FILE,
    RULES_FILE,
    expression_metric_names,
    monitoring_metric_names,
    rules_expressions,
    template_queries,
)

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_FILE = ROOT / "docker" / "prometheus.yml"
RULES_TEST_FILE = RULES_FILE.with_name("alerts.test.yml")
PROMTOOL = SystemPackage("promtool", "prometheus")
SEVERITIES = {"warning", "critical"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; Debian's `prometheus` package brings it (installed here when root)."""
    ensure_installed([PROMTOOL], say=print)
    return shutil.which(PROMTOOL.binary)


def run_promtool(promtool: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def output(result: subprocess.CompletedProcess) -> str:
    return f"promtool exited {result.returncode}:\n{result.stdout}{result.stderr}"


def load_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]]


# ---------------------------------------------------------------------------- promtool


def test_config_is_valid_and_finds_the_rules(promtool):
    result = run_promtool(promtool, "check", "config", CONFIG_FILE.relative_to(ROOT))
    assert result.returncode == 0, output(result)
    assert "1 rule files found" in result.stdout, output(result)


def test_rules_are_valid(promtool):
    result = run_promtool(promtool, "check", "rules", RULES_FILE)
    assert result.returncode == 0, output(result)


def test_rule_unit_tests_pass(promtool):
    result = run_promtool(promtool, "test", "rules", RULES_TEST_FILE.name, cwd=RULES_TEST_FILE.parent)
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


def test_check_rules_fails_on_a_broken_expression(promtool, tmp_path):
    text = RULES_FILE.read_text()
    broken = text.replace("expr: streamrec_group_lag_seconds > 60", "expr: streamrec_group_lag_seconds >", 1)
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    result = run_promtool(promtool, "check", "rules", tmp_path / "alerts.yml")
    assert result.returncode != 0, output(result)
    assert "unexpected end of input" in result.stdout + result.stderr, output(result)


def test_rule_unit_tests_fail_when_a_threshold_moves(promtool, tmp_path):
    text = RULES_FILE.read_text()
    moved = text.replace("expr: streamrec_group_lag_seconds > 60", "expr: streamrec_group_lag_seconds > 600", 1)
    assert moved != text
    (tmp_path / "alerts.yml").write_text(moved)
    shutil.copy(RULES_TEST_FILE, tmp_path / RULES_TEST_FILE.name)
    result = run_promtool(promtool, "test", "rules", RULES_TEST_FILE.name, cwd=tmp_path)
    assert result.returncode != 0, output(result)
    assert "alertname: StreamrecConsumerLagHigh" in result.stdout + result.stderr, output(result)


# ---------------------------------------------------------------------------- what every alert carries


def test_every_alert_waits_has_a_severity_and_tells_what_to_do():
    problems = []
    for rule in load_rules():
        name = rule.get("alert")
        if name is None:
            continue
        if "for" not in rule:
            problems.append(f"{name}: no `for:`")
        if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity should be one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
    assert problems == []


def test_every_alert_is_shown_firing_and_clearing():
    """Promtool checks what a test states; this checks that each alert has both statements."""
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    firing: set[str] = set()
    quiet_after_firing: set[str] = set()
    for case in yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]:
        fired_at: dict[str, list[str]] = {}
        for check in case.get("alert_rule_test") or []:
            name, time = check["alertname"], check["eval_time"]
            if check.get("exp_alerts"):
                firing.add(name)
                fired_at.setdefault(name, []).append(time)
                assert all(alert.get("exp_annotations") for alert in check["exp_alerts"]), f"{name} at {time}"
            elif name in fired_at:
                quiet_after_firing.add(name)
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet_after_firing == set(), "alerts never shown clearing after they fired"


# ---------------------------------------------------------------------------- metric names


def test_expression_metric_names_reads_names_not_labels_or_functions():
    assert expression_metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(streamrec_recs_freshness_seconds_bucket[$__rate_interval])))'
    ) == {"streamrec_recs_freshness_seconds"}
    assert expression_metric_names(
        'sum(rate(streamrec_collector_events_total{outcome="rejected",kind="streamrec_fake"}[10m]))'
        " / sum(rate(streamrec_api_request_seconds_count[5m])) + sum(rate(streamrec_api_request_seconds_sum[5m]))"
    ) == {"streamrec_collector_events_total", "streamrec_api_request_seconds"}
    # Triton's counters keep their names, _count included.
    assert expression_metric_names("rate(nv_inference_count[1m]) / rate(nv_inference_request_success[1m])") == {
        "nv_inference_count",
        "nv_inference_request_success",
    }
    assert expression_metric_names("up == 0") == {"up"}
    assert expression_metric_names('max by (job, up) (streamrec_ops_target_up{job="up"})') == {"streamrec_ops_target_up"}
    assert expression_metric_names("label_values(streamrec_group_lag_seconds, group)") == {"streamrec_group_lag_seconds"}
    assert expression_metric_names("time() - streamrec_canary_last_success_timestamp_seconds offset 1h > 600") == {
        "streamrec_canary_last_success_timestamp_seconds"
    }


def test_template_queries_are_read_from_annotations():
    template = (
        'Lag {{ $value }}. {{ with printf "streamrec_group_catch_up_seconds{group=%q}" $labels.group | query }}'
        "{{ . | first | value }}{{ end }} See `streamrec_not_a_query` in the docs."
    )
    assert template_queries(template) == ["streamrec_group_catch_up_seconds{group=%q}"]
    rules = {"groups": [{"rules": [{"alert": "A", "expr": "up == 0", "annotations": {"description": template}}]}]}
    assert rules_expressions(rules) == ["up == 0", "streamrec_group_catch_up_seconds{group=%q}"]


def test_monitoring_metric_names_of_the_rules_and_the_dashboard():
    assert monitoring_metric_names(RULES_FILE, DASHBOARD_FILE) == {
        # ops service
        "streamrec_lag_seconds",
        "streamrec_lag_messages",
        "streamrec_group_lag_seconds",
        "streamrec_group_lag_messages",
        "streamrec_group_consume_rate",
        "streamrec_group_catch_up_seconds",
        "streamrec_group_status",
        "streamrec_lag_groups_dropped",
        "streamrec_canary_freshness_seconds",
        "streamrec_canary_failures_total",
        "streamrec_canary_last_success_timestamp_seconds",
        "streamrec_data_quality_level",
        "streamrec_data_quality_check",
        "streamrec_data_quality_check_ok",
        "streamrec_triton_model_ready",
        "streamrec_triton_model_version",
        "streamrec_ops_target_up",
        # streams worker
        "streamrec_streams_events_total",
        "streamrec_streams_rejections_total",
        "streamrec_streams_event_to_redis_seconds",
        "streamrec_streams_reread_records_total",
        "streamrec_streams_unrecoverable_records_total",
        # attribution worker
        "streamrec_attribution_unrecoverable_records_total",
        # recs worker
        "streamrec_recs_lists_total",
        "streamrec_recs_degraded_total",
        "streamrec_recs_freshness_seconds",
        "streamrec_recs_dead_letters_total",
        # collector
        "streamrec_collector_events_total",
        "streamrec_collector_requests_total",
        "streamrec_collector_request_seconds",
        # API
        "streamrec_api_request_seconds",
        "streamrec_api_store_unavailable_total",
        # trainer
        "streamrec_trainer_cycles_total",
        "streamrec_trainer_consecutive_rejections",
        # Triton
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_queue_duration_us",
        # Prometheus
        "up",
    }
