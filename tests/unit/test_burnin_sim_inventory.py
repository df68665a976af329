"""The sim fleet's inventory points burn-in at the dcgmi stand-in: the variables it writes, and the
command they name answering for the right host of the right fleet size."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from fleet_agent.sim.inventory import burn_in_vars, inventory_doc

from fleetctl.burnin.dcgm import Status, parse_diag

SCENARIO = "demo"


def runtime(name: str, port: int, kind: str) -> Any:
    return SimpleNamespace(name=name, port=port, group=name.split("-")[0], kind=kind,
                           sampler=SimpleNamespace(expected_chips=8))


def test_the_inventory_carries_the_burn_in_vars_only_with_a_scenario() -> None:
    rts = [runtime("h100-0000", 38100, "gpu"), runtime("v5e-0000", 38101, "tpu")]
    plain = inventory_doc(rts, token="t0k")
    assert plain["all"]["vars"] == {"ansible_port": 1, "fleet_agent_token": "t0k"}
    doc = inventory_doc(rts, token="t0k", scenario="/s/fleet.yaml")
    assert doc["all"]["vars"]["fleet_agent_token"] == "t0k"
    assert doc["all"]["vars"]["burn_in_connection"] == "local"
    # only the burn-in play runs here: provision on this inventory stays off this machine
    assert "ansible_connection" not in doc["all"]["vars"]
    assert doc["all"]["vars"]["burn_in_dcgmi"] == [
        sys.executable, "-m", "fleet_agent.sim.dcgmi", "--scenario", "/s/fleet.yaml", "--hosts", "2",
        "--host", "{{ inventory_hostname }}"]
    assert doc["all"]["children"]["gpu_nodes"]["hosts"] == {"h100-0000": None}


def test_the_command_answers_for_the_named_host_of_that_fleet() -> None:
    # In the 64-host demo, h100-0019 has GPU 4's PCIe link at Gen3 x8: DCGM's pcie test fails it.
    command = burn_in_vars(SCENARIO, 64)["burn_in_dcgmi"]
    argv = [a.replace("{{ inventory_hostname }}", "h100-0019") for a in command]
    out = subprocess.run([*argv, "diag", "-r", "2", "-j"], capture_output=True, text=True, timeout=60)
    report = parse_diag(out.stdout, host="h100-0019")
    assert report.status is Status.FAIL
    assert {(f.test, f.gpu) for f in report.findings()} == {("pcie", 4)}
    assert out.returncode == 226
