"""``fleetctl burn-in`` end to end: a real ``fleet-agent sim-fleet``, its written inventory with the
burn-in variables (the dcgmi stand-in answering from the fleet's scenario, hosts reached locally),
the real CLI running playbooks/burn_in.yml through ansible-runner, and the state database after.

Scenario: h100-0000 is sound; h100-0001 has a PCIe link trained below its maximum (the agent calls it
degraded, DCGM's level-2 pcie test fails that GPU); h100-0002 has uncorrectable ECC errors (the agent
says unhealthy: DCGM is not run on it); v5e-0000 is a TPU host (no DCGM: incomplete).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_health_simfleet import FLEETCTL, SimFleet, start_sim_fleet, stop

pytestmark = pytest.mark.integration

SCENARIO = """\
description: fleetctl burn-in integration test
seed: 5
groups:
  - {name: h100, kind: gpu, model: H100-SXM5-80GB, chips: 4, count: 3}
  - {name: v5e, kind: tpu, model: v5e, chips: 4, count: 1}
faults:
  - {kind: pcie_downgrade, group: h100, hosts: [1], chips: [3], gen: 3, width: 8}
  - {kind: ecc_uncorrectable, group: h100, hosts: [2], chips: [2], count: 2}
"""
HOSTS = 4


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFleet]:
    f = start_sim_fleet(tmp_path_factory.mktemp("burnin"), SCENARIO, HOSTS, lo=38000, hi=38499)
    yield f
    stop(f)


@pytest.fixture
def inventory(fleet: SimFleet) -> Path:
    """The inventory sim-fleet wrote: it carries the burn-in variables for its scenario itself."""
    doc = yaml.safe_load(fleet.inventory.read_text())
    assert doc["all"]["vars"]["burn_in_connection"] == "local"
    return fleet.inventory


def burn_in(*args: str, tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env |= {"FLEETCTL_CACHE_DIR": str(tmp_path / "cache"), "ANSIBLE_ASYNC_DIR": str(tmp_path / "async"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "COLUMNS": "200"}
    return subprocess.run([FLEETCTL, "burn-in", *args, "--db", str(tmp_path / "state.db")],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_burn_in_gates_each_host_records_and_moves_its_lifecycle(inventory: Path, tmp_path: Path) -> None:
    out = burn_in("-i", str(inventory), "all", "--level", "2", "--skip-provision-check", "-o", "json",
                  tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr  # a host failed
    doc = json.loads(out.stdout)
    by = {h["host"]: h for h in doc["hosts"]}
    assert {h: v["status"] for h, v in by.items()} == {
        "h100-0000": "pass", "h100-0001": "fail", "h100-0002": "fail", "v5e-0000": "incomplete"}
    assert doc["summary"] == {"pass": 1, "fail": 2, "incomplete": 1}
    assert doc["level"] == 2 and doc["allowed"] == ["skip provision check"]

    checks = {h: {c["name"]: c["status"] for c in v["checks"]} for h, v in by.items()}
    assert checks["h100-0000"] == {"provision": "skipped", "agent": "pass", "dcgm": "pass"}
    # The agent sees only a degraded link; DCGM's pcie test fails GPU 3 (the stand-in's DCGM_FR codes).
    assert checks["h100-0001"] == {"provision": "skipped", "agent": "warn", "dcgm": "fail"}
    assert by["h100-0001"]["reason"].startswith("dcgm: pcie GPU 3: fail (GPU 3 is running at PCI link "
                                                "generation 3")
    dcgm = by["h100-0001"]["dcgm"]["dcgm"]
    assert dcgm["version"] == "4.2.3" and dcgm["status"] == "fail"
    assert checks["h100-0002"] == {"provision": "skipped", "agent": "fail", "dcgm": "not_run"}
    assert "ecc_uncorrectable" in by["h100-0002"]["reason"]
    assert by["v5e-0000"]["not_run"] == [
        "dcgm: not an NVIDIA host (not in group gpu_nodes): DCGM diagnostics do not apply"]
    assert {h: (v["lifecycle"]["from"], v["lifecycle"]["to"]) for h, v in by.items()} == {
        "h100-0000": ("new", "in_service"), "h100-0001": ("new", "suspect"), "h100-0002": ("new", "suspect"),
        "v5e-0000": ("new", "burn_in")}

    with sqlite3.connect(tmp_path / "state.db") as db:
        audit = db.execute("SELECT host, from_state, to_state, source, reason FROM lifecycle_audit "
                           "ORDER BY id").fetchall()
        stored = db.execute("SELECT host, status, level, dcgm_version, per_gpu, run_id FROM burn_in_results "
                            "ORDER BY host").fetchall()
    moves = [(h, f, t) for h, f, t, source, _ in audit if source == "burn_in"]
    assert sorted(moves) == sorted([
        ("h100-0000", "new", "burn_in"), ("h100-0000", "burn_in", "in_service"),
        ("h100-0001", "new", "burn_in"), ("h100-0001", "burn_in", "suspect"),
        ("h100-0002", "new", "burn_in"), ("h100-0002", "burn_in", "suspect"),
        ("v5e-0000", "new", "burn_in")])
    suspect = next(r for h, f, t, _, r in audit if h == "h100-0001" and t == "suspect")
    assert f"burn-in {doc['run_id']}: failed: dcgm: pcie GPU 3: fail" in suspect
    assert [(h, s, lv, v) for h, s, lv, v, _, _ in stored] == [
        ("h100-0000", "pass", 2, "4.2.3"), ("h100-0001", "fail", 2, "4.2.3"), ("h100-0002", "fail", 2, None),
        ("v5e-0000", "incomplete", 2, None)]
    assert json.loads(stored[1][4])["3"] == {"software": "pass", "pcie": "fail", "memory": "pass"}
    assert {r for *_, r in stored} == {doc["run_id"]}


def test_a_tpu_host_is_incomplete_exit_3_unless_dcgm_allowed(inventory: Path, tmp_path: Path) -> None:
    out = burn_in("-i", str(inventory), "v5e-0000", "--skip-provision-check", tmp_path=tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith("level 1, 1 hosts: 0 pass, 0 fail, 1 incomplete; allowed: skip provision check")
    assert lines[2].split()[:4] == ["v5e-0000", "incomplete", "new", "->"]
    assert "could not run: dcgm: not an NVIDIA host" in out.stdout

    allowed = burn_in("-i", str(inventory), "v5e-0000", "--skip-provision-check", "--allow-missing", "dcgm",
                      "-o", "json", tmp_path=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    [host] = json.loads(allowed.stdout)["hosts"]
    assert host["status"] == "pass" and host["lifecycle"] == {"from": "burn_in", "to": "in_service"}
    assert host["allowed"] == ["missing dcgm", "skip provision check"]


def test_without_a_provision_run_nothing_starts(inventory: Path, tmp_path: Path) -> None:
    out = burn_in("-i", str(inventory), "h100-0000", "-o", "json", tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr
    [host] = json.loads(out.stdout)["hosts"]
    assert host["status"] == "fail"
    assert host["reason"].startswith("provision: no provision run recorded for the host")
    assert [c["status"] for c in host["checks"]] == ["fail", "not_run", "not_run"]
    assert host["lifecycle"] == {"from": "new", "to": "new"}


@pytest.mark.parametrize(("args", "needle"), [
    (("nosuch",), "pattern 'nosuch' matches no host or group"),
    (("all", "--level", "5"), "--level: 5 is not a DCGM run level (1, 2, 3 or 4)"),
    (("all", "--allow-missing", "nvml"), "--allow-missing 'nvml': expected one of dcgm"),
    (("all", "--level", "two"), "--level"),
])
def test_bad_input_is_one_line_exit_2(inventory: Path, tmp_path: Path, args: tuple[str, ...],
                                     needle: str) -> None:
    out = burn_in("-i", str(inventory), *args, tmp_path=tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("fleetctl burn-in: ") and needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""
