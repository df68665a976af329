"""The real ``fleet-agent run`` process over simulated chips, read over HTTP."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fleet_agent.schema import Status, parse_node_report
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import AgentProcess

pytestmark = pytest.mark.integration

SCENARIO = """
seed: 7
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 8, count: 1}
  - {name: v5e, kind: tpu, model: v5e, chips: 4, count: 1}
faults:
  - {kind: row_remap_pending, group: h100, hosts: [0], chips: [5]}
"""

# promtool lints these names and labels, but they are dcgm-exporter's: dashboards query them as is.
# Counters keep dcgm-exporter's names, which lack the "_total" suffix promtool asks for.
DCGM_LINT = ("label names should be written in 'snake_case' not 'camelCase'",
             "metric name should not include type 'counter'",
             'counter metrics should have "_total" suffix')


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    p = tmp_path / "scenario.yaml"
    p.write_text(SCENARIO)
    return str(p)


def _sim(scenario: str, host_index: int = 0, **cfg: object) -> dict[str, object]:
    # A generous deadline: on a busy test machine healthy chips must still answer within it.
    return {"simulation": {"scenario": scenario, "host_index": host_index}, "interval_s": 3,
            "collector_timeout_s": 1.5, **cfg}


def test_healthz_node_and_metrics(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    h = agent.get("/healthz")
    assert h.status == 200 and h.body == b"ok\n"

    node = agent.get("/v1/node")
    assert node.status == 200 and node.headers["content-type"] == "application/json"
    report = parse_node_report(node.json())
    assert report.host == "h100-0000"
    assert report.chips_expected == 8 and len(report.chips) == 8
    assert report.driver_version
    pending = report.chips[5]
    assert pending.status is Status.DEGRADED
    assert [p.check for p in pending.problems] == ["row_remap"]
    assert all(c.status is Status.HEALTHY for i, c in enumerate(report.chips) if i != 5)
    assert report.status is Status.DEGRADED

    metrics = agent.get("/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    temps = families["DCGM_FI_DEV_GPU_TEMP"].samples
    assert len(temps) == 8 and {s.labels["Hostname"] for s in temps} == {"h100-0000"}
    failing = families["fleet_health_check_failing"].samples
    assert [(s.labels["chip"], s.labels["check"]) for s in failing] == [("5", "row_remap")]
    head = agent.get("/metrics", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(metrics.body)


def test_tpu_host(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario, host_index=1))
    report = parse_node_report(agent.get("/v1/node").json())
    assert [c.kind for c in report.chips] == ["tpu"] * 4
    assert report.status is Status.HEALTHY
    text = agent.get("/metrics").body.decode()
    assert "DCGM_FI_" not in text and 'fleet_chip_duty_cycle_ratio{chip="0",kind="tpu"' in text


def test_metrics_pass_promtool(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    body = agent.get("/metrics").body
    full = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    problems = [line for line in (full.stdout + full.stderr).decode().splitlines() if line.strip()]
    # Exit 3 is "lint problems"; anything else non-zero is a parse error.
    assert full.returncode in (0, 3), problems
    assert problems, "expected promtool to flag the dcgm-exporter label names (a sign it linted)"
    for line in problems:
        assert line.startswith("DCGM_FI_") and line.endswith(DCGM_LINT), line
    # Our own names must be clean.
    ours = b"\n".join(line for line in body.splitlines() if b"DCGM_FI_" not in line) + b"\n"
    clean = subprocess.run(["promtool", "check", "metrics"], input=ours, capture_output=True, timeout=30)
    assert clean.returncode == 0, (clean.stdout + clean.stderr).decode()


def test_token(start_agent: Callable[..., AgentProcess], scenario: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-abc\n")
    token_file.chmod(0o600)
    agent = start_agent(_sim(scenario, token_file=str(token_file)), token="t0ken-abc")
    for path in ("/v1/node", "/metrics"):
        for token in (None, "wrong", "t0ken-ab"):
            r = agent.get(path, token=token)
            assert r.status == 401 and r.body == b"" and r.headers["www-authenticate"] == "Bearer"
        assert agent.get(path, token="t0ken-abc").status == 200
    assert agent.get("/healthz").status == 200
    assert "t0ken-abc" not in agent.stderr()


def test_drained_file(start_agent: Callable[..., AgentProcess], scenario: str, tmp_path: Path) -> None:
    drained = tmp_path / "drained"
    agent = start_agent(_sim(scenario, drained_file=str(drained)))
    assert agent.get("/v1/node").json()["drained"] is False
    drained.write_text("fleetctl drain: replacing GPU 5 (ticket OPS-1)\n")
    agent.wait_for(lambda: agent.get("/v1/node").json()["drained"] is True, 10, "drained")
    report = parse_node_report(agent.get("/v1/node").json())
    assert report.drained_reason == "fleetctl drain: replacing GPU 5 (ticket OPS-1)"
    assert "fleet_node_drained 1.0" in agent.get("/metrics").body.decode()


def test_sigterm_stops_cleanly(start_agent: Callable[..., AgentProcess], scenario: str) -> None:
    agent = start_agent(_sim(scenario))
    assert agent.stop() == 0
