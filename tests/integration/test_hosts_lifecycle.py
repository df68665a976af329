"""Host lifecycle through real parts: a real drain/undrain on a real Slurm moves it, and
``fleetctl hosts show`` asks a real sim-fleet agent (JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FLEET_AGENT, free_port_block, http_get
from fleet_agent.schema import parse_node_report
from slurm_cluster import NODES, ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures
from test_slurm_drain import SCENARIO, Fleet

pytestmark = pytest.mark.integration

# This helper's ports (37000-37999): a cluster beside other modules' clusters.
SLURM_OPTIONS = ClusterOptions(ctld_port=37817, node_ports=(37801, 37802, 37803))
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")


class Env(Fleet):
    """test_slurm_drain's fleet (node1..node3 on Slurm, node3's agent with an XID 79), read as JSON."""

    def json(self, *args: str) -> Any:
        done = self.run(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture()
def env(slurm: SlurmCluster, tmp_path: Path, start_sim_fleet: Any) -> Env:  # noqa: F811
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    agents = start_sim_fleet(hosts=3, scenario=str(scenario), args=["--interval", "3"], inventory=False)
    return Env(tmp_path, slurm, agents.port)


def test_a_real_drain_and_undrain_move_the_lifecycle_and_show_reads_the_real_agent(
        env: Env, slurm: SlurmCluster) -> None:  # noqa: F811
    assert env.run("hosts", "set", "node1", "in_service", "-r", "racked and burned in").returncode == 0
    assert env.run("hosts", "set", "node3", "in_service", "-r", "racked").returncode == 0

    drained = env.run("drain", "node1", "node3", "--reason", "GPU fell off the bus", "--timeout", "60",
                      "--max-unavailable", "2")
    assert drained.returncode == 0, drained.stderr
    assert slurm.node_state("node1") == "drain"
    rows = {h["host"]: h for h in env.json("hosts")["hosts"]}
    assert rows["node1"]["state"] == "repairing" and rows["node1"]["reason"] == "drain: GPU fell off the bus"
    assert rows["node1"]["actor"].startswith("sre1@") and rows["node1"]["drain_state"] == "drained"
    assert rows["node2"]["state"] == "new" and rows["node2"]["drain_state"] == "active"

    # node3's agent reports XID 79: undrain refuses it and records the verdict; node1 goes back
    undrained = env.run("undrain", "node1", "node3")
    assert undrained.returncode == 1
    rows = {h["host"]: h for h in env.json("hosts")["hosts"]}
    assert rows["node1"]["state"] == "in_service" and rows["node1"]["health"]["healthy"] is True
    assert rows["node3"]["state"] == "repairing" and rows["node3"]["health"]["healthy"] is False
    assert slurm.node_state("node1") == "idle"

    page = env.json("hosts", "show", "node3", "--timeout", "5")
    assert [(e["from_state"], e["to_state"], e["source"]) for e in page["history"]] == [
        ("new", "in_service", "person"), ("in_service", "repairing", "drain")]
    assert [e["to_state"] for e in page["drains"]] == ["cordoned", "draining", "drained"]
    agent = page["agent"]
    # the third sim agent answers (it names itself gpu-0002: the sim fleet's own host names)
    assert agent["reachable"] and agent["host"] == "gpu-0002" and agent["status"] == "unhealthy"
    assert agent["driver_version"] == "535.183.06"  # the simulated driver's version
    assert agent["cuda_driver_version"] == "12.2"  # and the CUDA version that driver supports
    assert any(c["last_xid"] == 79 and c["xid_counts"].get("79") == 1 for c in agent["chips"])
    assert any("79" in p["message"] for p in agent["problems"])


# --- the driver's CUDA version, from a real sim-fleet agent (no Slurm) -----------------------------

# This helper's ports for the agents it starts (29000-29499).
CUDA_PORTS = (29000, 29499)
CUDA_SCENARIO = """\
description: a GPU host on the 550 driver and a TPU host
seed: 3
groups:
  - {name: gpu, count: 1, kind: gpu, model: H100-SXM5-80GB, chips: 2, driver_version: 550.54.15}
  - {name: tpu, count: 1, kind: tpu, model: v5e, chips: 4}
"""


@pytest.fixture()
def cuda_fleet(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(CUDA_SCENARIO)
    inventory = tmp_path / "inventory.yml"
    for _ in range(3):
        base = free_port_block(2, *CUDA_PORTS)
        out = tmp_path / f"sim-{base}.out"
        with out.open("wb") as stdout:
            proc = subprocess.Popen([str(FLEET_AGENT), "sim-fleet", "--hosts", "2", "--base-port", str(base),
                                     "--scenario", str(scenario), "--write-inventory", str(inventory),
                                     "--interval", "3"], stdout=stdout, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and "ready:" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            if "ready:" in out.read_text():
                yield base, inventory
                return
            assert proc.poll() is not None, f"sim-fleet not ready in 60 s:\n{out.read_text()}"
            if "cannot listen" not in out.read_text():  # a port taken meanwhile: retry, else fail
                pytest.fail(f"sim-fleet exited:\n{out.read_text()}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    pytest.fail("sim-fleet found no free ports in 29000-29499 three times")


def test_the_agent_reports_its_drivers_cuda_version_and_hosts_show_prints_it(
        cuda_fleet: tuple[int, Path], tmp_path: Path) -> None:
    base, inventory = cuda_fleet
    reports = [parse_node_report(http_get(base + i, "/v1/node").json()) for i in range(2)]
    assert [(r.driver_version, r.cuda_driver_version) for r in reports] == [("550.54.15", "12.4"),
                                                                             (None, None)]
    assert [{c.kind for c in r.chips} for r in reports] == [{"gpu"}, {"tpu"}]
    raw = http_get(base, "/v1/node").json()
    assert raw["cuda_driver_version"] == "12.4"  # on the wire as text, as nvidia-smi shows it

    env = {**os.environ, "FLEETCTL_DB": str(tmp_path / "fleetctl.db"), "FLEETCTL_INVENTORY": str(inventory),
           "FLEETCTL_CACHE_DIR": str(tmp_path / "cache"), "USER": "sre1"}
    names = list(yaml.safe_load(inventory.read_text())["all"]["hosts"])

    def fleetctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETCTL, *args], env=env, capture_output=True, text=True, timeout=120)

    pages = []
    for name in names:
        done = fleetctl("hosts", "show", name, "--timeout", "5", "-o", "json")
        assert done.returncode == 0, done.stderr
        pages.append(json.loads(done.stdout)["agent"])
    assert [(a["reachable"], a["driver_version"], a["cuda_driver_version"]) for a in pages] == [
        (True, "550.54.15", "12.4"), (True, None, None)]
    done = fleetctl("hosts", "show", names[0], "--timeout", "5")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert ["driver", "550.54.15"] in lines and ["cuda", "12.4"] in lines
