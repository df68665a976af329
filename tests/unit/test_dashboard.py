"""The shipped Grafana dashboard and Prometheus rules only query metrics the agent documents.

docs/metrics.md is the contract between the agent's /metrics and everything that reads it; a
renamed metric that the dashboard or an alert still uses would fail silently in production (an
empty panel, an alert that never fires), so it fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_agent.health.xid_codes import critical_keys

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "fleet-agent.json"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "fleet-agent.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "fleet-agent.rules.test.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Prometheus's own series, present for every scrape target.
PROMETHEUS_SERIES = {"up"}
# Labels a dcgm-exporter series has (plus `host` from our file_sd targets).
DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "host"}

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on",
             "ignoring", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # label values
    text = re.sub(r"\$\{?\w+\}?", "", text)                      # $host, ${datasource}
    text = re.sub(r"\{[^}]*\}", "", text)                         # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                        # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call is None and name not in _KEYWORDS:
            names.add(name)
    return names


def label_matchers(expr: str) -> set[str]:
    """Label names used in the selectors of ``expr``."""
    labels = set()
    for block in re.findall(r"\{([^}]*)\}", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", block))
    return labels


def documented_metrics() -> set[str]:
    text = METRICS_DOC.read_text()
    return set(re.findall(r"`(fleet_[a-z0-9_]+|DCGM_FI_[A-Z0-9_]+)`", text))


def load_dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_exprs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(doc) for t in p.get("targets", [])]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


# --- the expression parser itself ---------------------------------------------------------------

def test_metric_names_parser() -> None:
    expr = ('sum by (host, chip) (rate(fleet_a_total{host=~"$host", x="y{z}"}[5m])) '
            '/ on (host) group_left(chip) fleet_b > 1e6 and time() - fleet_c offset 5m')
    assert metric_names(expr) == {"fleet_a_total", "fleet_b", "fleet_c"}
    assert label_matchers('DCGM_FI_DEV_GPU_TEMP{host=~"$host", gpu!="1"}') == {"host", "gpu"}


def test_documented_metrics_are_read_from_the_doc() -> None:
    documented = documented_metrics()
    assert {"fleet_chip_status", "fleet_chip_xid_errors_window", "DCGM_FI_DEV_GPU_TEMP"} <= documented


# --- dashboard ----------------------------------------------------------------------------------

def test_every_dashboard_metric_is_documented() -> None:
    known = documented_metrics() | PROMETHEUS_SERIES
    exprs = dashboard_exprs(load_dashboard())
    assert len(exprs) > 20
    unknown = {(title, name) for title, expr in exprs for name in metric_names(expr) - known}
    assert unknown == set()


def test_dashboard_structure() -> None:
    doc = load_dashboard()
    assert 36 <= doc["schemaVersion"] <= 41
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["type"] == "query" and "host" in variables["host"]["definition"]
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    for panel in panels(doc):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for var in re.findall(r"\$\{?(\w+)\}?", target["expr"]):
                assert var in variables, (panel["title"], var)


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_dashboard_has_overview_host_chip_and_nvidia_rows() -> None:
    titles = [p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"]
    assert titles[:3] == ["Fleet overview", "Per host", "Per chip"]
    assert titles[3].startswith("NVIDIA")


def test_nvidia_panels_work_on_dcgm_exporter_series() -> None:
    doc = load_dashboard()
    top = doc["panels"]
    start = next(i for i, p in enumerate(top) if p["type"] == "row" and p["title"].startswith("NVIDIA"))
    nvidia = [p for p in top[start + 1:] if p["type"] != "row"]
    assert len(nvidia) >= 6
    for panel in nvidia:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and all(n.startswith("DCGM_FI_") for n in names), panel["title"]
            assert label_matchers(target["expr"]) <= DCGM_LABELS, panel["title"]
    queried = {n for p in nvidia for t in p["targets"] for n in metric_names(t["expr"])}
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED",
            "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE"} <= queried


def test_per_chip_panels_cover_temperature_utilisation_memory_power() -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs(load_dashboard()))
    for name in ("fleet_chip_temperature_celsius", "fleet_chip_utilization_ratio",
                 "fleet_chip_memory_used_bytes", "fleet_chip_power_watts", "fleet_node_status",
                 "fleet_chip_status"):
        assert name in exprs


# --- alert rules --------------------------------------------------------------------------------

def test_every_rule_metric_is_documented() -> None:
    known = documented_metrics() | PROMETHEUS_SERIES
    for rule in rules():
        assert metric_names(rule["expr"]) <= known, rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_every_alert_has_severity_and_annotations() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        for key in ("summary", "description", "runbook_hint"):
            assert rule["annotations"].get(key), (rule["alert"], key)


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {"FleetChipUnhealthy", "FleetFatalXid", "FleetGpuLost", "FleetThermalThrottling",
            "FleetAgentDown", "FleetSampleStale", "FleetChipsMissing"} <= names


def _fatal_xid_regex(expr: str) -> list[str]:
    match = re.search(r'xid=~"([0-9a-z_:|]+)"', expr)
    assert match, expr
    return sorted(match.group(1).split("|"), key=lambda k: (int(k.partition(":")[0]), k))


def test_fatal_xid_codes_match_the_agents_table() -> None:
    fatal = next(rule for rule in rules() if rule["alert"] == "FleetFatalXid")
    assert _fatal_xid_regex(fatal["expr"]) == critical_keys()
    overview = [expr for title, expr in dashboard_exprs(load_dashboard()) if title.startswith("Fatal XIDs")]
    assert len(overview) == 1 and _fatal_xid_regex(overview[0]) == critical_keys()


@pytest.mark.parametrize("alert", [rule["alert"] for rule in rules()])
def test_every_alert_has_a_firing_and_a_silent_promtool_case(alert: str) -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
    assert any(case["exp_alerts"] for case in cases), alert
    assert any(not case["exp_alerts"] for case in cases), alert
