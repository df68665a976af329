"""``fleet-agent once`` and the entry points, as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_agent.schema import Action, Severity, Status, parse_node_report

pytestmark = pytest.mark.integration

AGENT = str(Path(sys.executable).with_name("fleet-agent"))
SCENARIO = """
groups:
  - {name: l4, kind: gpu, model: L4, chips: 2, count: 1}
faults:
  - {kind: ecc_uncorrectable, group: l4, hosts: [0], chips: [1], count: 1}
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(SCENARIO)
    return str(p)


def test_once_json_over_a_scenario(scenario: str) -> None:
    proc = _run("once", "--json", "--scenario", scenario)
    assert proc.returncode == 0, proc.stderr
    report = parse_node_report(json.loads(proc.stdout))
    assert report.host == "l4-0000" and [c.model for c in report.chips] == ["NVIDIA L4"] * 2
    assert report.chips[1].status is Status.UNHEALTHY and report.status is Status.UNHEALTHY


def test_once_table(scenario: str) -> None:
    proc = _run("once", "--scenario", scenario)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("host l4-0000  status unhealthy  chips 2/2")
    chip1 = next(line for line in lines if line.startswith("1 "))
    assert "unhealthy" in chip1 and "ecc_uncorrectable" in chip1


def test_once_and_check_without_a_gpu_driver_name_the_missing_driver(tmp_path: Path) -> None:
    # This test machine has no NVIDIA driver: the real NVML collector must say so, not crash, and
    # the report must name the driver as the problem, never look healthy or merely blind.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"collectors: [nvml, host]\nstate_dir: {tmp_path / 'state'}\n")
    proc = _run("once", "--json", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    report = parse_node_report(json.loads(proc.stdout))
    nvml = next(c for c in report.collectors if c.name == "nvml")
    assert not nvml.ok and nvml.error is not None and nvml.error.startswith("NVML library not found")
    assert report.chips == [] and report.status is Status.UNHEALTHY
    [driver] = report.problems
    assert (driver.check, driver.severity, driver.action) == ("driver", Severity.CRITICAL,
                                                              Action.UPDATE_SOFTWARE)
    assert "NVML library not found" in driver.message
    check = _run("check", "--config", str(cfg))
    assert check.returncode == 1, check.stderr
    assert check.stdout.splitlines()[0].startswith("node critical driver: NVML library not found")


def test_python_m_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "fleet_agent", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and "sim-fleet" in out.stdout and "once" in out.stdout
    assert _run("--version").stdout.strip().startswith("fleet-agent ")
    bad = _run("frobnicate")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
