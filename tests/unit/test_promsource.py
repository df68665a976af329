"""The fleet report from Prometheus answers (a fake query client behind the same interface)."""

from __future__ import annotations

import json

import pytest

from fleetctl.inventory import Host
from fleetctl.promsource import (
    QUERIES,
    HttpPrometheus,
    PrometheusError,
    Sample,
    file_sd_targets,
    parse_vector,
    prometheus_report,
)
from fleetctl.report import HostState

NOW = 1_800_000_000.0


def host(name: str, port: int, expected: int | None = 2, groups: tuple[str, ...] = ("gpu_nodes",)) -> Host:
    return Host(
        name=name, address="127.0.0.1", groups=groups, vars={}, agent_port=port, expected_chips=expected
    )


def chip_labels(h: str, chip: int, **extra: str) -> dict[str, str]:
    return {
        "host": h,
        "chip": str(chip),
        "kind": "gpu",
        "model": "NVIDIA H100 80GB HBM3",
        "uuid": f"U{chip}",
        **extra,
    }


class FakePrometheus:
    """Series for: good (2 healthy chips), hot (chip 1 unhealthy, xid), down (up=0), and a stranger."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        series: dict[str, list[Sample]] = {
            "up": [
                ({"host": "good"}, 1.0),
                ({"host": "hot"}, 1.0),
                ({"host": "down"}, 0.0),
                ({"host": "stranger"}, 1.0),
                ({"job": "prometheus"}, 1.0),
            ],
            "fleet_node_status == 1": [
                ({"host": "good", "status": "healthy"}, 1.0),
                ({"host": "hot", "status": "unhealthy"}, 1.0),
                ({"host": "stranger", "status": "healthy"}, 1.0),
            ],
            "fleet_chip_status == 1": [
                (chip_labels("good", 0, status="healthy"), 1.0),
                (chip_labels("good", 1, status="healthy"), 1.0),
                (chip_labels("hot", 0, status="healthy"), 1.0),
                (chip_labels("hot", 1, status="unhealthy"), 1.0),
            ],
            "fleet_health_check_failing == 1": [
                (chip_labels("hot", 1, check="xid", severity="critical"), 1.0),
                ({"host": "hot", "chip": "node", "check": "collector", "severity": "warning"}, 1.0),
            ],
            "fleet_agent_info": [({"host": "good", "version": "0.1.0"}, 1.0)],
            "fleet_sample_timestamp_seconds": [({"host": "good"}, NOW - 4), ({"host": "hot"}, NOW - 2)],
            "fleet_node_chips_expected": [({"host": "good"}, 2.0)],
            "fleet_chip_temperature_celsius": [(chip_labels("good", 0), 41.0), (chip_labels("hot", 1), 91.0)],
            "fleet_chip_utilization_ratio": [(chip_labels("good", 0), 0.5), (chip_labels("good", 1), 0.7)],
            "fleet_chip_memory_used_bytes": [(chip_labels("good", 0), 2.0**30)],
            "fleet_chip_memory_total_bytes": [(chip_labels("good", 0), 80 * 2.0**30)],
        }
        return series.get(promql, [])


def test_report_from_prometheus() -> None:
    fake = FakePrometheus()
    hosts = [host("good", 1), host("hot", 2), host("down", 3), host("unknown", 4)]
    report = prometheus_report(hosts, fake, now=NOW)
    assert sorted(fake.queries) == sorted(QUERIES)
    rows = {h.name: h for h in report.hosts}
    assert set(rows) == {"good", "hot", "down", "unknown"}  # the stranger is not in the selection
    good, hot = rows["good"], rows["hot"]
    assert good.status is HostState.HEALTHY and good.agent_version == "0.1.0"
    assert (good.chips_ok, good.chips_total, good.max_temperature_c) == (2, 2, 41.0)
    assert good.mean_utilization_pct == pytest.approx(60.0) and good.age_s == 4.0
    assert good.memory_used_bytes == 2**30
    assert hot.status is HostState.UNHEALTHY
    assert [(p.check, p.severity, p.chip) for p in hot.problems] == [
        ("xid", "critical", 1),
        ("collector", "warning", None),
    ]
    assert rows["down"].status is HostState.UNREACHABLE and rows["down"].reason_kind == "scrape_failed"
    assert rows["unknown"].status is HostState.UNREACHABLE and rows["unknown"].reason_kind == "not_scraped"
    assert report.source == "prometheus" and report.exit_code == 1


def test_parse_vector_errors_name_the_query() -> None:
    doc = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {"host": "a"}, "value": [1, "0.5"]}]},
    }
    assert parse_vector(doc, "q") == [({"host": "a"}, 0.5)]
    with pytest.raises(PrometheusError, match="q: parse error"):
        parse_vector({"status": "error", "error": "parse error"}, "q")
    with pytest.raises(PrometheusError, match="expected a vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}}, "q")
    with pytest.raises(PrometheusError, match="malformed series"):
        parse_vector({"status": "success", "data": {"resultType": "vector", "result": [{"x": 1}]}}, "q")


def test_bad_url_and_unreachable_server() -> None:
    with pytest.raises(PrometheusError, match="expected http"):
        HttpPrometheus("file:///etc/passwd")
    with pytest.raises(PrometheusError, match="cannot query Prometheus") as err:
        HttpPrometheus("http://127.0.0.1:1", timeout_s=1).query("up")
    assert err.value.exit_code == 2


def test_file_sd_targets() -> None:
    targets = file_sd_targets([host("a", 19001, groups=("gpu_nodes", "rack1")), host("b", 19002, groups=())])
    assert json.loads(json.dumps(targets)) == [
        {"targets": ["127.0.0.1:19001"], "labels": {"host": "a", "group": "gpu_nodes"}},
        {"targets": ["127.0.0.1:19002"], "labels": {"host": "b", "group": "ungrouped"}},
    ]
