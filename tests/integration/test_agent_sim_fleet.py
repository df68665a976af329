"""``fleet-agent sim-fleet``: N agents in one process, each on its own port with its own chips."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from fleet_agent.schema import Status, parse_node_report

if TYPE_CHECKING:
    from conftest import AgentProcess

pytestmark = pytest.mark.integration

SCENARIO = """
hosts: 4
groups:
  - {name: dgx, kind: gpu, model: H100-SXM5-80GB, chips: 8, share: 3}
  - {name: tpu-v5e, kind: tpu, model: v5e, chips: 4, share: 1}
faults:
  - {kind: ecc_uncorrectable, group: dgx, hosts: [1], chips: [0], count: 2}
"""


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    p = tmp_path / "fleet.yaml"
    p.write_text(SCENARIO)
    return str(p)


def test_sim_fleet_hosts_ports_and_inventory(start_sim_fleet: Callable[..., AgentProcess],
                                             scenario: str) -> None:
    fleet = start_sim_fleet(4, scenario=scenario, args=["--interval", "3", "--token", "tok"])
    base = fleet.port
    assert fleet.stdout().splitlines()[0] == f"ready: 4 agents on 127.0.0.1:{base}-{base + 3}"

    inv = yaml.safe_load(Path(fleet.extra["inventory"]).read_text())
    hosts = inv["all"]["hosts"]
    assert list(hosts) == ["dgx-0000", "dgx-0001", "dgx-0002", "tpu-v5e-0000"]
    assert {h["ansible_host"] for h in hosts.values()} == {"127.0.0.1"}
    assert [h["fleet_agent_port"] for h in hosts.values()] == [base, base + 1, base + 2, base + 3]
    assert [h["fleet_agent_expected_chips"] for h in hosts.values()] == [8, 8, 8, 4]
    children = inv["all"]["children"]
    assert set(children["gpu_nodes"]["hosts"]) == {"dgx-0000", "dgx-0001", "dgx-0002"}
    assert set(children["tpu_nodes"]["hosts"]) == {"tpu-v5e-0000"}
    assert set(children["dgx"]["hosts"]) == set(children["gpu_nodes"]["hosts"])
    assert set(children["tpu_v5e"]["hosts"]) == {"tpu-v5e-0000"}
    # The token travels with the inventory, so `fleetctl health -i` on it authenticates.
    assert inv["all"]["vars"]["fleet_agent_token"] == "tok"
    # burn-in and repair plays run here (their stand-ins); every other playbook stays off this machine
    assert "ansible_connection" not in inv["all"]["vars"]
    assert Path(fleet.extra["inventory"]).stat().st_mode & 0o777 == 0o600

    for i, (name, hv) in enumerate(hosts.items()):
        assert fleet.get("/v1/node", host=i).status == 401
        report = parse_node_report(fleet.get("/v1/node", host=i, token="tok").json())
        assert report.host == name and len(report.chips) == hv["fleet_agent_expected_chips"]
        # Each host has its own chips: UUIDs differ across hosts.
        assert fleet.get("/healthz", host=i).status == 200
    uuids = [c.uuid for i in range(4)
             for c in parse_node_report(fleet.get("/v1/node", host=i, token="tok").json()).chips]
    assert len(set(uuids)) == len(uuids)
    faulty = parse_node_report(fleet.get("/v1/node", host=1, token="tok").json())
    assert faulty.chips[0].status is Status.UNHEALTHY
    assert [p.check for p in faulty.chips[0].problems] == ["ecc_uncorrectable"]
    metrics = fleet.get("/metrics", host=1, token="tok").body.decode()
    assert re.search(r'^DCGM_FI_DEV_ECC_DBE_VOL_TOTAL\{[^}]*gpu="0"[^}]*\} 2\.0$', metrics, re.MULTILINE)
    assert fleet.stop() == 0


def test_sim_fleet_inventory_is_valid_for_ansible(start_sim_fleet: Callable[..., AgentProcess],
                                                  scenario: str) -> None:
    fleet = start_sim_fleet(2, scenario=scenario)
    inv = str(fleet.extra["inventory"])
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    out = subprocess.run([str(ansible_inventory), "-i", inv, "--list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    listed = json.loads(out.stdout)
    assert listed["_meta"]["hostvars"]["dgx-0000"]["fleet_agent_port"] == fleet.port
    assert "dgx-0001" in listed["gpu_nodes"]["hosts"]


def test_sim_fleet_bad_arguments_exit_2(tmp_path: Path, scenario: str) -> None:
    agent = str(Path(sys.executable).with_name("fleet-agent"))
    for argv, message in (
        (["--hosts", "0", "--base-port", "18600"], "--hosts: expected a positive integer"),
        (["--hosts", "2", "--base-port", "65535"], "--base-port: ports 65535..65536 are out of range"),
        (["--hosts", "1", "--base-port", "18600", "--scenario", str(tmp_path / "none.yaml")],
         "none.yaml: cannot read"),
    ):
        proc = subprocess.run([agent, "sim-fleet", *argv, *(["--scenario", scenario]
                                                            if "--scenario" not in argv else [])],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.splitlines()) == 1
