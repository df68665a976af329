"""``fleetctl drain|undrain|status`` against a real Slurm (slurmctld + 3 slurmd) and real sim agents."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from postgres_server import pg_server, pg_url  # noqa: F401 - fixtures
from slurm_cluster import NODES, ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

# Ports of its own, so that this module's cluster can run beside another module's.
SLURM_OPTIONS = ClusterOptions(ctld_port=38817, node_ports=(38801, 38802, 38803))

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")

# node3's agent reports an XID 79 (GPU fallen off the bus): unhealthy.
SCENARIO = """\
description: three Slurm nodes, the third unhealthy
seed: 5
groups:
  - name: gpu
    count: 3
    kind: gpu
    model: H100-SXM5-80GB
    chips: 2
    load: {base_pct: 40, amplitude_pct: 0, period_s: 600, memory_used_pct: 40}
faults:
  - {kind: xid, group: gpu, hosts: [2], chips: [0], code: 79}
"""


class Fleet:
    """An inventory of node1..node3 (Slurm, run locally) whose agents are a sim fleet."""

    def __init__(self, tmp: Path, cluster: SlurmCluster, agent_base_port: int) -> None:
        self.tmp = tmp
        self.cluster = cluster
        self.inventory = tmp / "inventory.yml"
        hosts = {n: {"ansible_host": "127.0.0.1", "fleet_agent_port": agent_base_port + i,
                     "fleet_agent_expected_chips": 2} for i, n in enumerate(NODES)}
        self.inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"fleet_scheduler": "slurm", "ansible_connection": "local"},
            "children": {"slurm_nodes": {"hosts": hosts}},
        }}))
        self.db = tmp / "fleetctl.db"
        self.env = {**cluster.env, "FLEETCTL_DB": str(self.db), "FLEETCTL_INVENTORY": str(self.inventory),
                    "FLEETCTL_CACHE_DIR": str(tmp / "cache"), "USER": "sre1", "SUDO_USER": "sre1"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLEETCTL, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([FLEETCTL, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def status(self, host: str) -> dict[str, Any]:
        done = self.run("status", host, "--json", "--history", "20")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return {**doc["hosts"][0], "audit": doc.get("audit", [])}

    def use_postgresql(self, url: str) -> None:
        """The state in this PostgreSQL database instead of the SQLite file."""
        self.env["FLEETCTL_DB"] = url

    def db_state(self, host: str) -> str | None:
        url = self.env["FLEETCTL_DB"]
        if url.startswith("postgresql://"):
            from fleetctl.state import db

            conn = db.connect(url)
            try:
                row = conn.execute("SELECT state FROM host_state WHERE host = ?", (host,)).fetchone()
                return str(row[0]) if row else None
            finally:
                conn.close()
        if not self.db.exists():
            return None
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT state FROM host_state WHERE host = ?", (host,)).fetchone()
            return row[0] if row else None
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def fleet(slurm: SlurmCluster, tmp_path: Path, start_sim_fleet: Any) -> Fleet:  # noqa: F811
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    agents = start_sim_fleet(hosts=3, scenario=str(scenario), args=["--interval", "3"], inventory=False)
    return Fleet(tmp_path, slurm, agents.port)


def test_drain_with_a_running_job_waits_until_it_ends_then_undrain(fleet: Fleet, slurm: SlurmCluster) -> None:  # noqa: F811
    job = slurm.submit_sleep("node1", 8)
    proc = fleet.popen("drain", "node1", "--reason", "replace fan", "--timeout", "120", "--json")
    # while the job runs: Slurm says draining, and so does fleetctl, and status shows the job
    wait_for(lambda: slurm.node_state("node1") == "drng", "node1 draining in Slurm")
    wait_for(lambda: fleet.db_state("node1") == "draining", "fleetctl state draining")
    st = fleet.status("node1")
    assert st["scheduler"] == "slurm" and st["state"] == "draining"
    assert st["actor"] == "sre1" and st["reason"] == "fleetctl:sre1: replace fan"
    if st["scheduler_state"] == "draining":  # the job may just have ended
        assert any(job in w for w in st["workloads"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["hosts"] == [
        {"host": "node1", "ok": True, "state": "drained", "message": "drained"}]
    assert slurm.node_state("node1") == "drain"
    assert slurm.run(["squeue", "-h", "-j", job]).stdout.strip() == ""  # the job was left to finish
    show = slurm.run(["scontrol", "show", "node", "-o", "node1"]).stdout
    assert "Reason=fleetctl:sre1: replace fan" in show
    assert [a["to_state"] for a in fleet.status("node1")["audit"]] == ["cordoned", "draining", "drained"]

    done = fleet.run("undrain", "node1")
    assert done.returncode == 0, done.stderr
    assert slurm.node_state("node1") == "idle"
    assert fleet.status("node1")["state"] == "active"


def test_undrain_refuses_while_the_agent_reports_unhealthy(fleet: Fleet, slurm: SlurmCluster) -> None:  # noqa: F811
    done = fleet.run("drain", "node3", "--reason", "xid 79")
    nodes = slurm.run(["scontrol", "show", "node", "-o"]).stdout
    assert done.returncode == 0, done.stdout + done.stderr + nodes
    assert slurm.node_state("node3") == "drain"
    done = fleet.run("undrain", "node3")
    assert done.returncode == 1
    # the table clips a long message at its end: how to override comes first, then what is wrong
    assert "not undrained (--force to override): agent reports unhealthy" in done.stdout, done.stdout
    # the whole message in --json
    done = fleet.run("undrain", "node3", "--json")
    [host] = json.loads(done.stdout)["hosts"]
    assert "agent reports unhealthy" in host["message"] and "--force" in host["message"], host
    assert slurm.node_state("node3") == "drain"
    done = fleet.run("undrain", "node3", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert slurm.node_state("node3") == "idle"


def test_a_drain_set_by_someone_else_is_reported_never_touched(fleet: Fleet, slurm: SlurmCluster) -> None:  # noqa: F811
    slurm.run(["scontrol", "update", "NodeName=node2", "State=DRAIN", "Reason=bob: swapping PSU"])
    done = fleet.run("drain", "node2", "--reason", "mine")
    assert done.returncode == 1 and "someone else" in done.stdout and "bob: swapping PSU" in done.stdout
    done = fleet.run("undrain", "node2", "--force")
    assert done.returncode == 1 and "someone else" in done.stdout
    show = slurm.run(["scontrol", "show", "node", "-o", "node2"]).stdout
    assert "Reason=bob: swapping PSU" in show and "DRAIN" in show
    # and it counts as unavailable: with max-unavailable 1 nothing else may be drained
    done = fleet.run("drain", "node1", "--reason", "x")
    assert done.returncode == 1 and "1 already unavailable (node2)" in done.stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_mid_drain_then_status_shows_the_truth_and_a_rerun_resumes(
        fleet: Fleet, slurm: SlurmCluster, backend: str, request: pytest.FixtureRequest) -> None:  # noqa: F811
    if backend == "postgresql":
        fleet.use_postgresql(request.getfixturevalue("pg_url"))
    job = slurm.submit_sleep("node1", 10)
    proc = fleet.popen("drain", "node1", "--reason", "firmware", "--timeout", "120")
    wait_for(lambda: fleet.db_state("node1") == "draining", "fleetctl state draining")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    st = fleet.status("node1")
    assert st["state"] == "draining" and st["scheduler_state"] == "draining"
    assert any(job in w for w in st["workloads"])
    wait_for(lambda: slurm.node_state("node1") == "drain", "the job to end", timeout=60)
    st = fleet.status("node1")
    assert st["state"] == "draining" and st["scheduler_state"] == "drained"
    assert st["note"] == "no workload left: re-run drain to record it"
    # the budget is held by node1 itself: resuming it is not refused
    done = fleet.run("drain", "node1", "--reason", "firmware", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"][0]["state"] == "drained"
    assert [a["to_state"] for a in fleet.status("node1")["audit"]] == ["cordoned", "draining", "drained"]


def test_bad_input_and_a_scheduler_that_is_down(fleet: Fleet, slurm: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    done = fleet.run("drain", "node1")
    assert done.returncode == 2 and "a reason is required" in done.stderr
    done = fleet.run("drain", "node9", "--reason", "x")
    assert done.returncode == 2 and "'node9' matches no host" in done.stderr
    done = fleet.run("drain", "node1", "--reason", "x", "--max-unavailable", "lots")
    assert done.returncode == 2 and "--max-unavailable 'lots'" in done.stderr
    # max-unavailable refusal carries the numbers
    assert fleet.run("drain", "node1", "--reason", "a").returncode == 0
    done = fleet.run("drain", "node2", "--reason", "b")
    assert done.returncode == 1
    assert "max-unavailable is 1 of 3 hosts; 1 already unavailable (node1) + 1 requested = 2" in done.stdout
    assert slurm.node_state("node2") == "idle"
    # Slurm's controller unreachable: a clear error, nothing recorded
    conf = tmp_path / "wrong.conf"
    port = f"SlurmctldPort={SLURM_OPTIONS.ctld_port}"
    conf.write_text(slurm.conf.read_text().replace(port, "SlurmctldPort=38899")
                    .replace("MailProg=", "MessageTimeout=2\nMailProg="))
    fleet.env["SLURM_CONF"] = str(conf)
    done = fleet.run("drain", "node3", "--reason", "c")
    assert done.returncode == 1, done.stderr
    assert "scheduler unavailable for node3, nothing changed" in done.stderr
    assert "Unable to contact slurm controller" in done.stderr
    assert fleet.db_state("node3") is None


def test_a_reason_scontrol_cannot_take_is_refused_up_front_and_the_longest_it_can_is_stored(
        fleet: Fleet, slurm: SlurmCluster) -> None:  # noqa: F811
    """The limit is the operating system's for one argument of scontrol (128 KiB): a reason that
    fleetctl itself was given fits, tagged it would not. Refused in one line with nothing changed,
    where it used to end in a traceback with the host left cordoned."""
    max_arg = 131072  # Linux MAX_ARG_STRLEN, NUL included
    done = fleet.run("drain", "node1", "--reason", "r" * (max_arg - 20))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith("fleetctl drain: node1: --reason is too long for Slurm:")
    assert fleet.db_state("node1") is None and slurm.node_state("node1") == "idle"
    # the longest reason fleetctl lets through reaches Slurm whole
    command = "sudo -n -- scontrol update NodeName=node1 State=DRAIN 'Reason=fleetctl:sre1: '"
    longest = "s" * (max_arg - 1 - len(command))
    done = fleet.run("drain", "node1", "--reason", longest)
    assert done.returncode == 0, done.stderr[-2000:]
    show = slurm.run(["scontrol", "show", "node", "-o", "node1"]).stdout
    assert f"Reason=fleetctl:sre1: {longest}" in show
    assert slurm.node_state("node1") == "drain" and fleet.db_state("node1") == "drained"
