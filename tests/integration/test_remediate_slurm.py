"""``fleetctl remediate`` through real parts: a real Slurm (slurmctld + 3 slurmd), a sim fleet of real
agent processes whose scenario changes over time, and the repair playbook run by ansible-runner with
``ansible_connection=local`` against a stand-in ``nvidia-smi`` (no GPU here) that logs each call.

What is asserted: which host is drained and when (after the hysteresis, never before), what is
skipped and why, the budget, the fleet-wide stop, the audit records (drain states, lifecycle, the
per-step remediation log), the lease refusal naming its holder, and resume after kill -9 with no
double drain and one end per remediation.

Here the stand-in only logs: the XID stays, burn-in fails and the host is quarantined, still drained.
The way back to service (a reset the simulated chips honour, burn-in passing, undrain) and a flapping
host are tests/integration/test_remediate_path.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port_block, interrupt
from remediate_records import Records, sandbox_env, sim_agents
from slurm_cluster import NODES, ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures
from test_slurm_drain import wait_for

pytestmark = pytest.mark.integration

# Ports of this module: 37100-37499. They lie in the kernel's ephemeral range, where outgoing
# connections (and their TIME_WAIT) hold some at any moment: Slurm takes free ones from 37100-37199
# as the module is loaded, the agents a free block from 37200 on.
_NODE_BASE = free_port_block(3, 37100, 37195)
SLURM_OPTIONS = ClusterOptions(ctld_port=free_port_block(1, _NODE_BASE + 3, 37199),
                               node_ports=(_NODE_BASE, _NODE_BASE + 1, _NODE_BASE + 2))
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
INTERVAL = 1  # --watch seconds
# node3's chip 1 reports XID 95 (uncontained ECC error: reset the GPU) from FAULT_AT seconds on.
FAULT_AT = 4
SCENARIO = f"""\
description: three Slurm nodes; the third loses chip 1 at {FAULT_AT} s
seed: 5
groups:
  - name: gpu
    count: 3
    kind: gpu
    model: H100-SXM5-80GB
    chips: 2
    load: {{base_pct: 40, amplitude_pct: 0, period_s: 600, memory_used_pct: 40}}
faults:
  - {{kind: xid, group: gpu, hosts: [2], chips: [1], code: 95, at: {FAULT_AT}}}
"""
# A third of a rack at once is a fleet-wide event: node2 and node3 together (2 of 3).
SCENARIO_EVENT = SCENARIO + "  - {kind: xid, group: gpu, hosts: [1], chips: [0], code: 95, at: 1}\n"
POLICY = """\
hysteresis: {count: 3, span_s: 1.5}
budgets:
  max_unavailable: [{scope: all, max: 1}]
  max_starts_per_hour: 10
fleet_stop: [{scope: all, fraction: 0.6}]
actions:
  reset_chip: {steps: [drain, reset_gpu, burn_in, undrain]}
"""
NVIDIA_SMI = """\
#!/bin/sh
# A stand-in for nvidia-smi: logs its arguments; no compute process on any GPU; a reset succeeds.
echo "$*" >> "$(dirname "$0")/nvidia-smi.log"
case "$*" in
  *--query-gpu=index*) printf '0\\n1\\n' ;;
  *--query-compute-apps*) ;;
  *-r*) echo "GPU 00000000:01:00.0 was successfully reset." ;;
esac
"""


class Lab(Records):
    def __init__(self, tmp: Path, cluster: SlurmCluster, agent_port: int) -> None:
        super().__init__(tmp / "fleetctl.db")
        self.tmp = tmp
        inventory = tmp / "inventory.yml"
        hosts = {n: {"ansible_host": "127.0.0.1", "fleet_agent_port": agent_port + i,
                     "fleet_agent_expected_chips": 2} for i, n in enumerate(NODES)}
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"fleet_scheduler": "slurm", "ansible_connection": "local",
                     "ansible_python_interpreter": sys.executable},
            "children": {"slurm_nodes": {"hosts": hosts}},
        }}))
        (tmp / "policy.yaml").write_text(POLICY)
        smi = tmp / "nvidia-smi"
        smi.write_text(NVIDIA_SMI)
        smi.chmod(0o755)
        self.env = sandbox_env(cluster.env, tmp, self.db, inventory)
        self.extra = json.dumps({"fleetctl_nvidia_smi": str(smi), "fleetctl_remediate_become": False,
                                 "fleetctl_reset_wait_delay": 0})

    def args(self, *extra: str) -> list[str]:
        return [FLEETCTL, "remediate", "--policy", str(self.tmp / "policy.yaml"), "--verify-timeout", "2",
                "--drain-timeout", "60", "-e", self.extra, *extra]

    def run(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(*extra), env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=300, cwd=self.tmp)

    def popen(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        err = (self.tmp / f"loop-{time.monotonic_ns()}.err").open("w")
        self.last_err = Path(err.name)
        return subprocess.Popen(self.args(*extra), env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=err, text=True, cwd=self.tmp)

    def all_remediations(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT id, host, state, next_step, step_open, outcome, started_at "
                          "FROM remediations ORDER BY started_at")

    def smi_calls(self) -> list[str]:
        log = self.tmp / "nvidia-smi.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture()
def lab(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    agents = sim_agents(tmp_path, SCENARIO, 37200, 37499)
    yield Lab(tmp_path, slurm, next(agents))
    agents.close()


@pytest.fixture()
def event_lab(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    agents = sim_agents(tmp_path, SCENARIO_EVENT, 37200, 37499)
    yield Lab(tmp_path, slurm, next(agents))
    agents.close()


def test_a_chip_fails_the_loop_drains_after_the_hysteresis_resets_it_and_quarantines_what_burn_in_fails(
        lab: Lab, slurm: SlurmCluster) -> None:  # noqa: F811
    loop = lab.popen("--watch", str(INTERVAL), "-o", "json")
    try:
        wait_for(lambda: any(r[2] == "quarantined" for r in lab.all_remediations()), "node3 quarantined",
                 timeout=90)
        # a second loop on the same state database is refused, naming the holder
        second = lab.run("--apply")
        assert second.returncode == 1, second.stderr
        assert f"another remediation loop holds the state database: sre1@{os.uname().nodename} " \
               f"pid {loop.pid} since " in second.stderr, second.stderr
        # while the first keeps watching, a healthy fleet: nothing else starts
        time.sleep(3 * INTERVAL)
    finally:
        out, _ = interrupt(loop, 60)  # Ctrl-C: stops cleanly between rounds
    assert loop.returncode == 0, lab.last_err.read_text()
    rounds = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    # the decision: node3 only, once, after 3 unhealthy observations over >= 1.5 s
    [(rid, host, state, _, step_open, outcome, started)] = lab.all_remediations()
    assert host == "node3" and state == "quarantined" and not step_open
    assert outcome.startswith("burn_in failed: burn-in: the agent did not report the host fit"), outcome
    assert "agent reports unhealthy" in outcome, outcome
    # (the observations themselves are pruned to the policy's window: the rounds' JSON tells the story)
    node3 = [(r["at"], [s["why"] for s in r["skipped"] if s["host"] == "node3"],
              [a for a in r["actions"] if a["host"] == "node3"]) for r in rounds]
    seen_bad = [(at, why, acts) for at, why, acts in node3 if acts or any("unhealthy" in w for w in why)]
    assert "unhealthy 1 of 3 observations" in seen_bad[0][1][0]
    assert "unhealthy 2 of 3 observations" in seen_bad[1][1][0]
    start_at, _, [action] = seen_bad[2]
    assert action["action"] == "reset_chip" and action["remediation"] == "repair"
    assert "unhealthy 3 of 3 observations over" in action["reason"]
    assert start_at - seen_bad[0][0] >= 1.5 and started == start_at
    assert [a["host"] for r in rounds for a in r["actions"]] == ["node3"]
    # detection to drain: within the hysteresis (3 rounds) and one round of slack
    drained_at = lab.query("SELECT at FROM host_audit WHERE host = 'node3' AND to_state = 'draining'")[0][0]
    # (the benchmark holds the figure: <= interval x K + 1 s; here, slack for a loaded 2-core machine)
    assert drained_at - seen_bad[0][0] <= INTERVAL * 3 + 1 + 5, (seen_bad, drained_at)
    # later rounds: node3 is out of service, left alone
    assert rounds[-1]["skipped"] == [{"host": "node3", "kind": "unavailable",
                                      "why": "already out of service (quarantined)"}]

    # the audit: every step recorded as it started and as it ended
    steps = lab.query("SELECT step, phase FROM remediation_steps WHERE remediation = ? ORDER BY id", rid)
    assert steps == [("drain", "started"), ("drain", "ended"), ("reset_gpu", "started"),
                     ("reset_gpu", "ended"), ("burn_in", "started"), ("burn_in", "failed")]
    # the repair ran the playbook: waited for no compute process, reset chip 1 only, in argv form
    assert lab.smi_calls() == ["--query-compute-apps=pid --format=csv,noheader -i 1", "-r -i 1"]
    # never undrained: Slurm keeps it drained with the tagged reason; fleetctl says quarantined
    assert slurm.node_state("node3") == "drain"
    show = slurm.run(["scontrol", "show", "node", "-o", "node3"]).stdout
    assert f"Reason=fleetctl:sre1: remediate:{rid} reset_chip" in show
    drain_audit = [to for (to,) in lab.query("SELECT to_state FROM host_audit WHERE host = 'node3' "
                                             "ORDER BY id")]
    assert drain_audit == ["cordoned", "draining", "drained", "maintaining", "verifying", "quarantined"]
    life = [(f, t, s) for f, t, s in lab.query("SELECT from_state, to_state, source FROM lifecycle_audit "
                                               "WHERE host = 'node3' ORDER BY id")]
    assert life == [("new", "repairing", "remediate"), ("repairing", "burn_in", "remediate"),
                    ("burn_in", "quarantined", "remediate")]
    # the others were never touched, and the lease is free again
    assert slurm.node_state("node1") == "idle" and slurm.node_state("node2") == "idle"
    assert lab.query("SELECT host FROM host_audit WHERE host != 'node3'") == []
    assert lab.query("SELECT * FROM remediation_lease") == []


def test_a_third_of_the_fleet_unhealthy_at_once_stops_automatic_action(event_lab: Lab,
                                                                       slurm: SlurmCluster) -> None:  # noqa: F811
    lab = event_lab
    wait_for(lambda: len(_unhealthy(lab)) == 2, "node2 and node3 unhealthy", timeout=30)
    for _ in range(4):
        done = lab.run("--apply")
        time.sleep(INTERVAL)
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first == "STOPPED: 2 of 3 hosts unhealthy (67%) >= 60%: automatic action stopped; a person's call"
    doc = json.loads(lab.run("--apply", "-o", "json").stdout)
    assert doc["fleet_stopped"] and doc["actions"] == []
    assert {(s["host"], s["kind"]) for s in doc["skipped"]} == {("node2", "stopped"), ("node3", "stopped")}
    assert lab.all_remediations() == [] and lab.smi_calls() == []
    assert [slurm.node_state(n) for n in NODES] == ["idle", "idle", "idle"]


def _unhealthy(lab: Lab) -> list[str]:
    done = subprocess.run([FLEETCTL, "health", "-o", "json"], env=lab.env, capture_output=True, text=True,
                          timeout=60)
    return [h["name"] for h in json.loads(done.stdout)["hosts"] if h["status"] == "unhealthy"]


@pytest.mark.parametrize("kill_at", ["reset_gpu", "burn_in"])
def test_kill_9_mid_remediation_the_next_run_resumes_from_the_recorded_step(
        lab: Lab, slurm: SlurmCluster, kill_at: str) -> None:  # noqa: F811
    loop = lab.popen("--watch", str(INTERVAL), env={"FLEETCTL_TEST_REMEDIATE_PAUSE_AT": kill_at})
    try:
        wait_for(lambda: f"paused at {kill_at} (node3)" in lab.last_err.read_text(),
                 f"the pause at {kill_at}", timeout=90)
    finally:
        os.kill(loop.pid, signal.SIGKILL)
        loop.communicate(timeout=30)
    [(rid, host, state, next_step, step_open, _, _)] = lab.all_remediations()
    steps = ["drain", "reset_gpu", "burn_in", "undrain"]
    assert (host, state, steps[next_step], step_open) == ("node3", "running", kill_at, 1)
    assert slurm.node_state("node3") == "drain"
    calls_before = lab.smi_calls()

    done = lab.run("--apply", "-o", "json")
    assert done.returncode == 1, done.stderr  # it ends quarantined: the sim's XID stays
    assert f"took over the lease of sre1@{os.uname().nodename} pid {loop.pid}" in done.stderr
    assert f"resuming remediation {rid} at step {kill_at}" in done.stderr
    doc = json.loads(done.stdout)
    assert [(f["id"], f["resumed"], f["state"]) for f in doc["finished"]] == [(rid, True, "quarantined")]
    # one remediation, ended once; drained once; the killed step ran once after the kill
    [(_, _, state, _, step_open, _, _)] = lab.all_remediations()
    assert state == "quarantined" and not step_open
    audit = [to for (to,) in lab.query("SELECT to_state FROM host_audit WHERE host = 'node3' ORDER BY id")]
    assert audit.count("cordoned") == 1 and audit.count("draining") == 1 and audit.count("drained") == 1
    phases = lab.query("SELECT step, phase FROM remediation_steps WHERE remediation = ? ORDER BY id", rid)
    assert phases.count((kill_at, "started")) == 2  # before the kill, and the resumed run
    assert phases.count(("drain", "started")) == 1
    resets = [c for c in lab.smi_calls() if c.startswith("-r")]
    assert resets == ["-r -i 1"]  # killed before its playbook, or after it: a single reset either way
    # killed as reset_gpu started: its playbook had not run; as burn_in started: the reset was done
    assert ("-r -i 1" in calls_before) is (kill_at == "burn_in")
    assert slurm.node_state("node3") == "drain"
