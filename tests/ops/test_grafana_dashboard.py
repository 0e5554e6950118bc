"""Grafana's provisioning and the "streamrec pipeline" dashboard, checked without a Grafana.

Grafana shows a panel whose query does not parse as an error only when someone opens it, so
each query is handed to ``promtool check rules`` as a recording rule here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamrec.stack.system import SystemPackage, ensure_installed
from tests.ops.monitoring import DASHBOARD_FILE, dashboard_expressions

ROOT = Path(__file__).resolve().parent.parent.parent
GRAFANA_DIR = ROOT / "docker" / "grafana"
PANEL_TYPES = {"timeseries", "stat", "table"}
# Grafana's own variables, given a value of the right kind so the query parses.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$group": ".*"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="module")
def datasource() -> dict:
    config = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = config["datasources"]
    return source


def all_panels(dashboard: dict) -> list[dict]:
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels") or []
    return panels


def test_the_datasource_is_the_compose_prometheus(datasource):
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_panels_are_plain_and_use_the_provisioned_datasource(dashboard, datasource):
    assert dashboard["title"] == "streamrec pipeline"
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = all_panels(dashboard)
    assert {panel["type"] for panel in panels} <= PANEL_TYPES
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        references = [panel.get("datasource")] + [target.get("datasource") for target in panel["targets"]]
        assert all(ref == {"type": "prometheus", "uid": datasource["uid"]} for ref in references), panel["title"]
        assert panel["targets"], panel["title"]


def test_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_provider_reads_the_folder_compose_mounts():
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "streamrec.yml").read_text())
    (entry,) = provider["providers"]
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./docker/grafana/dashboards"] == entry["options"]["path"]
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_every_dashboard_query_parses(dashboard, tmp_path):
    ensure_installed([SystemPackage("promtool", "prometheus")], say=print)
    expressions = dashboard_expressions(dashboard)
    rules = []
    for number, expression in enumerate(expressions):
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        # label_values(metric, label) is Grafana's, not PromQL: check the metric selector.
        expression = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expression)
        assert "$" not in expression, f"unknown Grafana variable in {expression}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expression})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [shutil.which("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"promtool exited {result.returncode}:\n{result.stdout}{result.stderr}"
    assert f"{len(rules)} rules found" in result.stdout
