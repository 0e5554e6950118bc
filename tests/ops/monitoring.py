"""Names of the metrics the production monitoring reads: the alerting rules and the dashboard.

An alert over a metric that no process exports never fires, and a panel over one stays empty;
neither reports an error. So the names are collected here, for a check against the
``/metrics`` of running processes.

Names are taken from PromQL text: identifiers starting with ``streamrec_`` or ``nv_`` (Triton),
and ``up``. A histogram's ``_bucket``, ``_sum`` and ``_count`` series count under the
histogram's own name, as a process declares it. That folding applies to ``streamrec_`` names
only: Triton has plain counters that end in ``_count`` (``nv_inference_count``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RULES_FILE = ROOT / "docker" / "prometheus" / "alerts.yml"
DASHBOARD_FILE = ROOT / "docker" / "grafana" / "dashboards" / "streamrec-pipeline.json"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
# Label lists of aggregations and vector matching name labels, not metrics.
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PREFIXED_NAME = re.compile(r"(?<![\w$:])(?:streamrec|nv)_[A-Za-z0-9_:]*")
_UP = re.compile(r"(?<![\w$:.])up(?![\w:])(?!\s*\()")
_TEMPLATE_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def expression_metric_names(expression: str) -> set[str]:
    """The metric names one PromQL expression reads (label values and label names left out)."""
    text = _QUOTED.sub('""', expression)
    text = _LABEL_MATCHERS.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for name in _PREFIXED_NAME.findall(text):
        if name.startswith("streamrec_"):
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
                    break
        names.add(name)
    if _UP.search(text):
        names.add("up")
    return names


def template_queries(template: str) -> list[str]:
    """Strings inside ``{{ }}`` actions of an alert template: the PromQL that ``query`` runs
    (``printf`` formats included), read like any other expression."""
    return [
        json.loads(quoted) if quoted.startswith('"') else quoted[1:-1]
        for action in _TEMPLATE_ACTION.findall(template)
        for quoted in _QUOTED.findall(action)
    ]


def rules_expressions(rules: dict) -> list[str]:
    """Every PromQL text of a parsed rules file: each rule's expr and its templates' queries."""
    expressions = []
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            expressions.append(rule["expr"])
            for template in {**(rule.get("labels") or {}), **(rule.get("annotations") or {})}.values():
                expressions += template_queries(str(template))
    return expressions


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every PromQL text of a parsed Grafana dashboard: panel targets and template variables."""
    panels = list(dashboard.get("panels") or [])
    for panel in list(panels):
        panels += panel.get("panels") or []  # collapsed rows hold their panels
    expressions = [target["expr"] for panel in panels for target in panel.get("targets") or [] if target.get("expr")]
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            expressions.append(query)
    return expressions


def metric_names(expressions: Iterable[str]) -> set[str]:
    return set().union(*(expression_metric_names(expression) for expression in expressions))


def monitoring_metric_names(rules_file: Path = RULES_FILE, dashboard_file: Path = DASHBOARD_FILE) -> set[str]:
    """Every metric name the alerting rules and the dashboard read (see the module docstring)."""
    rules = yaml.safe_load(rules_file.read_text())
    dashboard = json.loads(dashboard_file.read_text())
    return metric_names(rules_expressions(rules) + dashboard_expressions(dashboard))
