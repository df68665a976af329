"""The whole remediation path with real parts: a real Slurm (slurmctld + 3 slurmd), a sim fleet of real
agent processes whose scenario changes over time, and the real ``fleetctl remediate --watch`` running
the real repair and burn-in playbooks through ansible-runner. The simulation stays below them: the
reset play runs the ``nvidia-smi`` stand-in (fleet_agent.sim.nvidia_smi), which records each reset
under the sim fleet's state directory; the fleet's chips and the ``dcgmi`` stand-in honour it, so a
fault a reset clears ends there and a persistent one stays. The inventory points only the
remediation and burn-in plays at this machine (``remediate_connection``, ``burn_in_connection``).

- a resettable fault (XID 95): drained after the hysteresis with a tagged reason, only that chip
  reset, burn-in (agent + DCGM) passes, undrained: back in Slurm, in service, the remediation done;
- a persistent fault (the same XID on a chip a reset does not mend): reset, burn-in fails,
  quarantined and still drained;
- a flapping host (the XID comes back after each repair): remediated up to the policy's
  max_remediations within its window, then quarantined instead of another repair.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port_block, interrupt
from fleet_agent.sim.inventory import burn_in_vars, remediate_vars
from remediate_records import Records, sandbox_env, sim_agents
from slurm_cluster import NODES, ClusterOptions, SlurmCluster, slurm, slurm_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

# Ports of this module: 38500-38999 (Slurm from 38500, the agents from 38600).
_NODE_BASE = free_port_block(3, 38500, 38595)
SLURM_OPTIONS = ClusterOptions(ctld_port=free_port_block(1, _NODE_BASE + 3, 38599),
                               node_ports=(_NODE_BASE, _NODE_BASE + 1, _NODE_BASE + 2))
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
FAULT_AT = 4
GROUP = """\
seed: 11
groups:
  - name: gpu
    count: 3
    kind: gpu
    model: H100-SXM5-80GB
    chips: 2
    driver_version: 570.124.06
    load: {base_pct: 40, amplitude_pct: 0, period_s: 600, memory_used_pct: 40}
faults:
"""
# node1's chip 1: XID 95 (uncontained ECC error; NVIDIA's resolution: reset the GPU) at FAULT_AT s.
# node3's chip 0: the same, on a chip a reset does not mend.
SCENARIO_REPAIR = GROUP + f"""\
  - {{kind: xid, group: gpu, hosts: [0], chips: [1], code: 95, at: {FAULT_AT}}}
  - {{kind: xid, group: gpu, hosts: [2], chips: [0], code: 95, at: {FAULT_AT}, reset_clears: false}}
"""
# node2's chip 0 raises XID 95 again every FLAP_S seconds; a reset ends only the occurrence in progress.
FLAP_S = 24
SCENARIO_FLAP = GROUP + f"""\
  - {{kind: xid, group: gpu, hosts: [1], chips: [0], code: 95, at: {FAULT_AT}, repeat_every: {FLAP_S}}}
"""
POLICY = """\
hysteresis: {count: 3, span_s: 1.5}
flap_damping: {max_remediations: 2, window_s: 600}
budgets:
  max_unavailable: [{scope: all, max: 3}]
  max_starts_per_hour: 20
fleet_stop: [{scope: all, fraction: 0.9}]
actions:
  reset_chip: {steps: [drain, reset_gpu, burn_in, undrain]}
"""
STEPS_OK = [("drain", "started"), ("drain", "ended"), ("reset_gpu", "started"), ("reset_gpu", "ended"),
            ("burn_in", "started"), ("burn_in", "ended"), ("undrain", "started"), ("undrain", "ended")]


class Lab(Records):
    def __init__(self, tmp: Path, cluster: SlurmCluster, agent_port: int) -> None:
        super().__init__(tmp / "fleetctl.db")
        self.tmp = tmp
        self.state = tmp / "sim.yml.sim"  # the sim fleet's (sim-fleet --write-inventory sim.yml)
        scenario = str(tmp / "scenario.yaml")
        hosts: dict[str, Any] = {}
        for i, n in enumerate(NODES):
            # The Slurm nodes are named node1..3; the scenario's hosts gpu-0000..2: by index.
            hosts[n] = {"ansible_host": "127.0.0.1", "fleet_agent_port": agent_port + i,
                        "fleet_agent_expected_chips": 2,
                        **burn_in_vars(scenario, 3, state_dir=str(self.state), host_index=i),
                        **remediate_vars(scenario, 3, str(self.state), host_index=i)}
        inventory = tmp / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"fleet_scheduler": "slurm"},
            "children": {"slurm_nodes": {"hosts": dict.fromkeys(hosts)},
                         "gpu_nodes": {"hosts": hosts}},
        }}))
        (tmp / "policy.yaml").write_text(POLICY)
        self.env = sandbox_env(cluster.env, tmp, self.db, inventory)

    def popen(self) -> subprocess.Popen[str]:
        self.err = self.tmp / "loop.err"
        return subprocess.Popen(
            [FLEETCTL, "remediate", "--policy", str(self.tmp / "policy.yaml"), "--watch", "1", "-o",
             "json", "--verify-timeout", "8", "--drain-timeout", "60", "--burn-in-level", "2"],
            env=self.env, stdout=subprocess.PIPE, stderr=self.err.open("w"), text=True, cwd=self.tmp)

    def resets(self, host: str) -> dict[str, int]:
        """Chip -> how many resets the nvidia-smi stand-in recorded for the scenario's ``host``."""
        d = self.state / "resets" / host
        return {p.name: len(p.read_text().split()) for p in sorted(d.iterdir())} if d.is_dir() else {}


def wait_for(check: Callable[[], bool], what: str, timeout: float, loop: subprocess.Popen[str],
             lab: Lab) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if loop.poll() is not None:
            raise AssertionError(f"the loop ended ({loop.returncode}) before {what}: "
                                 f"{lab.err.read_text()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {lab.err.read_text()[-3000:]}")


def stop(loop: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = interrupt(loop, 90)  # Ctrl-C: stops cleanly between rounds
    assert loop.returncode == 0
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _lab(slurm: SlurmCluster, tmp: Path, scenario: str) -> Iterator[Lab]:  # noqa: F811
    # --write-inventory: the fleet records its start (and reads resets) under sim.yml.sim/
    agents = sim_agents(tmp, scenario, 38600, 38999, "--write-inventory", str(tmp / "sim.yml"))
    yield Lab(tmp, slurm, next(agents))
    agents.close()


@pytest.fixture()
def repair_lab(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    yield from _lab(slurm, tmp_path, SCENARIO_REPAIR)


@pytest.fixture()
def flap_lab(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    yield from _lab(slurm, tmp_path, SCENARIO_FLAP)


def test_a_reset_repairs_one_chip_and_returns_the_host_and_a_persistent_fault_is_quarantined(
        repair_lab: Lab, slurm: SlurmCluster) -> None:  # noqa: F811
    lab = repair_lab
    loop = lab.popen()
    try:
        def ended(host: str) -> bool:
            return any(r[1] in ("done", "quarantined", "failed") for r in lab.remediations(host))

        tagged: set[str] = set()

        def both_ended() -> bool:
            for node in ("node1", "node3"):  # the tagged drain reason while the host is out
                show = slurm.run(["scontrol", "show", "node", "-o", node], check=False).stdout
                if "Reason=fleetctl:sre1: remediate:" in show and " reset_chip" in show:
                    tagged.add(node)
            return ended("node1") and ended("node3")

        wait_for(both_ended, "node1 and node3 remediated", 80, loop, lab)
    finally:
        rounds = stop(loop)

    # (a) node1: drained, chip 1 reset (only), burn-in passed (agent, then DCGM level 2), undrained
    [(rid, state, outcome, kind)] = lab.remediations("node1")
    assert (state, kind) == ("done", "repair"), outcome
    assert lab.steps(rid) == STEPS_OK
    assert lab.resets("gpu-0000") == {"1": 1}
    assert slurm.node_state("node1") == "idle"
    assert lab.lifecycle("node1") == [("new", "repairing"), ("repairing", "burn_in"),
                                      ("burn_in", "in_service")]
    audit = [t for (t,) in lab.query("SELECT to_state FROM host_audit WHERE host = 'node1' ORDER BY id")]
    assert audit == ["cordoned", "draining", "drained", "maintaining", "verifying", "active"], audit
    # the burn-in record: DCGM's diagnostic ran (the stand-in saw the reset chip clean) and passed
    assert lab.query("SELECT status FROM burn_in_results WHERE host = 'node1'") == [("pass",)]
    # decided after the hysteresis: 3 unhealthy observations over >= 1.5 s, never before
    starts = [(r["at"], a) for r in rounds for a in r["actions"] if a["host"] == "node1"]
    assert len(starts) == 1 and "unhealthy 3 of 3 observations over" in starts[0][1]["reason"]

    # (c) node3: the same reset, but the chip keeps its fault: burn-in fails, quarantined, still drained
    [(rid3, state3, outcome3, _)] = lab.remediations("node3")
    assert state3 == "quarantined", outcome3
    assert outcome3.startswith("burn_in failed: burn-in: the agent did not report the host fit"), outcome3
    assert lab.steps(rid3) == [*STEPS_OK[:5], ("burn_in", "failed")]
    assert lab.resets("gpu-0002") == {"0": 1}
    assert slurm.node_state("node3") == "drain"
    assert lab.lifecycle("node3") == [("new", "repairing"), ("repairing", "burn_in"),
                                      ("burn_in", "quarantined")]
    assert tagged == {"node1", "node3"}

    # node2 was never touched; nothing reset on it
    assert lab.remediations("node2") == [] and lab.resets("gpu-0001") == {}
    assert slurm.node_state("node2") == "idle"


def test_a_flapping_host_is_remediated_up_to_the_policy_then_quarantined(flap_lab: Lab,
                                                                         slurm: SlurmCluster) -> None:  # noqa: F811
    lab = flap_lab
    loop = lab.popen()
    try:
        wait_for(lambda: any(r[1] == "quarantined" for r in lab.remediations("node2")),
                 "node2 quarantined", 3 * FLAP_S + 30, loop, lab)
    finally:
        rounds = stop(loop)
    history = lab.remediations("node2")
    # two repairs (max_remediations 2 within the window), each ending back in service; then quarantine
    assert [(state, kind) for _, state, _, kind in history] == \
        [("done", "repair"), ("done", "repair"), ("quarantined", "quarantine")], history
    for rid, *_ in history[:2]:
        assert lab.steps(rid) == STEPS_OK
    assert lab.steps(history[2][0]) == [("drain", "started"), ("drain", "ended"),
                                        ("quarantine", "started"), ("quarantine", "ended")]
    assert lab.resets("gpu-0001") == {"0": 2}  # one reset per repair, none for the quarantine
    [why] = [a["reason"] for r in rounds for a in r["actions"] if a["host"] == "node2" and
             a["remediation"] == "quarantine"]
    assert "flapping: 2 remediations within 600s (max 2): quarantined instead of another repair" in why
    assert slurm.node_state("node2") == "drain"
    assert lab.lifecycle("node2") == [
        ("new", "repairing"), ("repairing", "burn_in"), ("burn_in", "in_service"),
        ("in_service", "repairing"), ("repairing", "burn_in"), ("burn_in", "in_service"),
        ("in_service", "repairing"), ("repairing", "quarantined")]  # drained first, then marked
