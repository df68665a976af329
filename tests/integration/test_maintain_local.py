"""``fleetctl maintain`` end to end: real ansible-runner, real fleet-agent processes, scheduler ``none``.

The hosts use ``ansible_connection=local`` (test_maintain_ssh.py runs the same over real SSH),
which keeps four hosts cheap enough to cover both failure kinds in one run. Each host has its own
real agent (simulated chips) whose ``drained_file`` is the file fleetctl writes, so the agents'
``/v1/node`` shows the drain. m2's chips report XID 79 (unhealthy): it must fail verification;
m3's playbook run fails: it must not be verified at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
TINY = Path(__file__).parent / "provision_local" / "tiny.yml"  # provision's test playbook
HOSTS = ("m1", "m2", "m3", "m4")
SCENARIO = """\
description: four hosts for maintain, the second unhealthy
seed: 9
groups:
  - name: gpu
    count: 4
    kind: gpu
    model: H100-SXM5-80GB
    chips: 2
    load: {base_pct: 30, amplitude_pct: 0, period_s: 600, memory_used_pct: 30}
faults:
  - {kind: xid, group: gpu, hosts: [1], chips: [1], code: 79}
"""


@pytest.fixture()
def lab(tmp_path: Path, start_agent: Callable[..., Any]) -> dict[str, Any]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    (tmp_path / "markers").mkdir()
    hosts: dict[str, Any] = {}
    agents = {}
    for i, name in enumerate(HOSTS):
        drained = tmp_path / name / "drained"
        agent = start_agent({"simulation": {"scenario": str(scenario), "host_index": i}, "hostname": name,
                             "interval_s": 2, "collector_timeout_s": 1, "drained_file": str(drained)})
        agents[name] = agent
        hosts[name] = {"ansible_host": "127.0.0.1", "fleet_agent_port": agent.port,
                       "fleet_agent_expected_chips": 2, "fleet_agent_drained_file": str(drained)}
    hosts["m3"]["fail_here"] = True
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"fleet_scheduler": "none", "ansible_connection": "local",
                 "ansible_python_interpreter": sys.executable, "marker_dir": str(tmp_path / "markers")},
        "children": {"gpu": {"hosts": hosts}},
    }}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env.update(FLEETCTL_DB=str(tmp_path / "fleetctl.db"), FLEETCTL_INVENTORY=str(inventory),
               FLEETCTL_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path), SUDO_USER="sre2")
    return {"tmp": tmp_path, "env": env, "agents": agents}


def fleetctl(lab: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], env=lab["env"], cwd=lab["tmp"], capture_output=True, text=True,
                          timeout=400)


def node(lab: dict[str, Any], name: str) -> dict[str, Any]:
    reply = lab["agents"][name].get("/v1/node")
    assert reply.status == 200
    doc: dict[str, Any] = reply.json()
    return doc


def test_dry_run_prints_the_plan_only(lab: dict[str, Any]) -> None:
    done = fleetctl(lab, "maintain", "gpu", "--playbook", str(TINY), "--batch", "2", "--max-unavailable", "2",
                    "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "batch 1: m1, m2" in done.stderr and "batch 2: m3, m4" in done.stderr
    assert not list((lab["tmp"] / "markers").iterdir())
    assert not (lab["tmp"] / "m1" / "drained").exists()


def test_maintain_quarantines_failures_and_brings_the_rest_back(lab: dict[str, Any]) -> None:
    done = fleetctl(lab, "maintain", "gpu", "--playbook", str(TINY), "--max-unavailable", "3",
                    "--max-failures", "2", "--verify-timeout", "6", "--json")
    assert done.returncode == 1, done.stderr  # some hosts failed
    result = json.loads(done.stdout)
    by = {h["host"]: h for h in result["hosts"]}
    assert result["stopped"] is None
    assert by["m1"]["state"] == by["m4"]["state"] == "active" and by["m1"]["ok"] and by["m4"]["ok"]
    assert by["m2"]["state"] == "quarantined" and "verification failed" in by["m2"]["message"]
    assert "unhealthy" in by["m2"]["message"]
    assert by["m3"]["state"] == "quarantined" and "provision failed" in by["m3"]["message"]

    markers = sorted(p.name for p in (lab["tmp"] / "markers").iterdir())
    assert markers == ["m1.txt", "m2.txt", "m3.txt", "m4.txt"]  # the playbook ran on every host
    # the quarantined hosts stay drained, and their agents say so; the others are back
    for name in ("m2", "m3"):
        assert (lab["tmp"] / name / "drained").read_text().startswith("fleetctl:sre2: maintain tiny.yml")
    for name in ("m1", "m4"):
        assert not (lab["tmp"] / name / "drained").exists()

    def drained(name: str) -> bool:
        return bool(node(lab, name)["drained"])

    from conftest import wait_until  # the agents notice the file on their next sample

    wait_until(lambda: drained("m2") and drained("m3") and not drained("m1") and not drained("m4"), 15,
               "agents to report the drained files")

    conn = sqlite3.connect(lab["tmp"] / "fleetctl.db")
    path = [r[0] for r in conn.execute("SELECT to_state FROM host_audit WHERE host='m1' ORDER BY id")]
    assert path == ["cordoned", "draining", "drained", "maintaining", "verifying", "active"]
    path = [r[0] for r in conn.execute("SELECT to_state FROM host_audit WHERE host='m3' ORDER BY id")]
    assert path == ["cordoned", "draining", "drained", "maintaining", "quarantined"]

    # status shows it; a plain undrain of a quarantined host is refused
    st = fleetctl(lab, "status", "--json")
    rows = {r["host"]: r for r in json.loads(st.stdout)["hosts"]}
    assert rows["m2"]["state"] == "quarantined" and rows["m2"]["scheduler_state"] == "drained"
    undrain = fleetctl(lab, "undrain", "m3")
    assert undrain.returncode == 1 and "quarantined" in undrain.stdout
    # a second maintain run skips quarantined hosts, and has no one left to maintain but m1 and m4
    again = fleetctl(lab, "maintain", "gpu", "--playbook", str(TINY), "--max-unavailable", "3",
                     "--dry-run")
    assert "skip m2: quarantined" in again.stderr and "skip m3: quarantined" in again.stderr
