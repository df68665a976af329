"""``fleetctl remediate`` on the SSH lab (tests/lab/lab.py): the repair plays over real SSH, with become.

- a GPU reset: lab-node1's agent samples a scenario whose chip 3 raises XID 95 (resolution: reset
  the GPU) and honours the resets recorded in a state directory in the container; the loop drains
  it (scheduler none: the drained file), runs reset_gpu.yml over SSH with the ``nvidia-smi``
  stand-in in the container (as the agent's user, so the agent reads what it records), burns in
  (agent, then the ``dcgmi`` stand-in over SSH), undrains: in service, the remediation done;
- a reboot: lab-node2's driver is "updated without a reboot" (``driver_mismatch``, resolution:
  reboot; on from the agent's start, as nvmlInit reports it only at init) in the boot it runs now
  (the scenario's ``boot:``, fleet_agent.sim.boot); reboot.yml restarts the container for real
  (Docker's restart policy brings it back), the fault is gone with that boot, burn-in passes,
  undrained.

The lab's agent does not take a reset state directory in its config, so the first test runs the
agent's unit with a drop-in ExecStart that hands it the shared state (a small script below). Its
unit hides other users' processes (ProtectProc=invisible), and in a container the kernel's boot id
does not change, so the second test lets the agent see PID 1 (a drop-in) to tell boots apart.
Every drop-in, file and the drained file are removed afterwards. Run under
``flock -o /tmp/fleet-lab.lock`` (the lab is shared).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import interrupt
from remediate_records import Records

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
PY = "/opt/fleet-agent/venv/bin/python"
STATE = "/var/lib/fleet-agent/remediate-lab"  # the agent's StateDirectory: its user writes there
SCENARIO = "/etc/fleet-agent/remediate-lab.yaml"
WRAPPER = "/etc/fleet-agent/remediate-lab-agent.py"
DROPIN = "/etc/systemd/system/fleet-agent.service.d/zz-remediate-lab.conf"
DRAINED = "/var/lib/fleet-agent/drained"
PID1_START = "sed 's/^.*) //' /proc/1/stat | cut -d' ' -f20"
LAB_SCENARIO = yaml.safe_load((REPO / "roles/fleet_agent/files/scenarios/lab.yaml").read_text())
# The agent's own daemon over the scenario's host, whose chips honour the resets under STATE.
AGENT = f"""\
import shutil, sys
from pathlib import Path
from fleet_agent.config import load_config
from fleet_agent.daemon import run_agent
from fleet_agent.sim import load_scenario
from fleet_agent.sim.resets import ResetLog, write_start
state = Path({STATE!r})
shutil.rmtree(state / "resets", ignore_errors=True)
scen = load_scenario({SCENARIO!r})
write_start(state, scen.start)
sys.exit(run_agent(load_config("/etc/fleet-agent/config.yaml"), scen.sharing(ResetLog(state)).host(0)))
"""
POLICY = """\
hysteresis: {{count: 2, span_s: 1}}
flap_damping: {{max_remediations: 3, window_s: 600}}
budgets:
  max_unavailable: [{{scope: all, max: 3}}]
  max_starts_per_hour: 20
fleet_stop: [{{scope: all, fraction: 0.9}}]
actions:
  {action}: {{steps: [drain, {repair}, burn_in, undrain]}}
"""
STEPS = ["drain", "drain", "{r}", "{r}", "burn_in", "burn_in", "undrain", "undrain"]


def steps_ok(repair: str) -> list[tuple[str, str]]:
    return [(s.format(r=repair), "started" if i % 2 == 0 else "ended") for i, s in enumerate(STEPS)]


def lab_module() -> Any:
    sys.path.insert(0, str(REPO / "tests" / "lab"))
    try:
        import lab  # tests/lab/lab.py
    finally:
        sys.path.pop(0)
    return lab


def sh(container: str, script: str, *, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(["docker", "exec", "-i", container, "sh", "-c", script], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{container}: {script[:80]}: {done.stderr[-1000:]}")
    return done.stdout


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def restart_agent(container: str, port: int) -> None:
    sh(container, "systemctl daemon-reload && systemctl restart fleet-agent")
    time.sleep(1)
    wait(lambda: healthy(port), f"{container}'s agent", 60)


def boot_marker(container: str) -> str:
    """What fleet_agent.sim.boot reads in the container: boot id and PID 1's start time."""
    return sh(container, f"printf '%s/%s' $(cat /proc/sys/kernel/random/boot_id) $({PID1_START})")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lab up, its GPU hosts running this tree's agent (site.yml's fleet_agent role; a no-op
    when the wheel built from this source is installed already)."""
    module = lab_module()
    module.up()
    hosts = {h.name: h for h in module.lab_hosts()}
    for h in hosts.values():  # a host another test left drained would be out of service here
        sh(h.container, f"rm -f {DRAINED}")
    state = tmp_path_factory.mktemp("remediate-lab")
    inventory = state / "inventory"
    shutil.copytree(REPO / "inventory" / "lab", inventory)
    group_vars = inventory / "group_vars" / "lab.yml"
    group_vars.write_text(group_vars.read_text().replace("{{ inventory_dir }}/../..", str(REPO))
                          + "ansible_become: true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), FLEETCTL_CACHE_DIR=str(state / "cache"),
               FLEETCTL_INVENTORY=str(inventory), FLEETCTL_DB=str(state / "provision.db"))
    done = subprocess.run([FLEETCTL, "provision", "lab-node1:lab-node2", "--playbook", "site", "--json",
                           "--tags", "base,fleet_agent"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield {"hosts": hosts, "inventory": inventory, "env": env}


class Run(Records):
    """One test's remediation loop: its own state database, policy and host variables."""

    def __init__(self, lab: dict[str, Any], tmp: Path, policy: str, host: str,
                 host_vars: dict[str, Any]) -> None:
        super().__init__(tmp / "fleetctl.db")
        self.tmp = tmp
        (lab["inventory"] / "host_vars").mkdir(exist_ok=True)
        self.host_vars = lab["inventory"] / "host_vars" / f"{host}.yml"
        self.host_vars.write_text(yaml.safe_dump(host_vars))
        (tmp / "policy.yaml").write_text(policy)
        self.env = {**lab["env"], "FLEETCTL_DB": str(self.db), "FLEETCTL_CACHE_DIR": str(tmp / "cache")}

    def loop(self, *more: str) -> subprocess.Popen[str]:
        self.err = self.tmp / "loop.err"
        return subprocess.Popen([FLEETCTL, "remediate", "lab", "--policy", str(self.tmp / "policy.yaml"),
                                 "--watch", "1", "-o", "json", "--verify-timeout", "60", "--drain-timeout",
                                 "30", *more], cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                stderr=self.err.open("w"), text=True)

    def stop(self, loop: subprocess.Popen[str]) -> list[dict[str, Any]]:
        out, _ = interrupt(loop, 120)
        assert loop.returncode == 0, self.err.read_text()[-3000:]
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def ended(self, host: str) -> bool:
        return any(r[1] in ("done", "quarantined", "failed") for r in self.remediations(host))

    def runs(self) -> list[dict[str, Any]]:
        done = subprocess.run([FLEETCTL, "runs", "list", "--json"], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=60, check=True)
        found: list[dict[str, Any]] = json.loads(done.stdout)
        return found


def watch(run: Run, loop: subprocess.Popen[str], host: str, container: str, timeout: float) -> bool:
    """Wait until ``host``'s remediation ended; whether its drained file was seen meanwhile."""
    drained = False
    deadline = time.monotonic() + timeout
    while not run.ended(host):
        if loop.poll() is not None:
            raise AssertionError(f"the loop ended ({loop.returncode}): {run.err.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{host} not remediated: {run.err.read_text()[-3000:]}")
        drained = drained or "fleetctl" in sh(container, f"cat {DRAINED} 2>/dev/null", check=False)
        time.sleep(0.5)
    return drained


def test_a_gpu_reset_over_ssh_repairs_the_one_chip_and_returns_the_host(lab: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    node = lab["hosts"]["lab-node1"]
    # Driver branch 570 on: the agent reads NVML's GPU recovery action, so it sees a chip reset.
    groups = [{**g, "driver_version": "570.124.06"} if g["kind"] == "gpu" else g
              for g in LAB_SCENARIO["groups"]]
    scenario = {**LAB_SCENARIO, "groups": groups, "faults": [
        {"kind": "xid", "group": "h100", "hosts": [0], "chips": [3], "code": 95, "at": 3}]}
    which = ["--scenario", SCENARIO, "--hosts", "3", "--host-index", "0", "--state-dir", STATE]
    # As the agent's user: the stand-in's records (0600) are then the agent's to read.
    as_agent = ["runuser", "-u", "fleet-agent", "--", PY, "-m"]
    run = Run(lab, tmp_path, POLICY.format(action="reset_chip", repair="reset_gpu"), "lab-node1", {
        "remediate_nvidia_smi": [*as_agent, "fleet_agent.sim.nvidia_smi", *which, "--"],
        "burn_in_dcgmi": [*as_agent, "fleet_agent.sim.dcgmi", *which]})
    try:
        sh(node.container, f"install -d -o fleet-agent -g fleet-agent -m 0750 {STATE} && "
           f"cat > {SCENARIO} && chmod 0644 {SCENARIO}", stdin=yaml.safe_dump(scenario))
        sh(node.container, f"cat > {WRAPPER} && chmod 0644 {WRAPPER}", stdin=AGENT)
        sh(node.container, f"mkdir -p $(dirname {DROPIN}) && cat > {DROPIN}",
           stdin=f"[Service]\nExecStart=\nExecStart={PY} {WRAPPER}\n")
        restart_agent(node.container, node.agent_port)
        loop = run.loop("--burn-in-level", "1")
        try:
            drained = watch(run, loop, "lab-node1", node.container, 90)
        finally:
            rounds = run.stop(loop)
        resets = sh(node.container, f"cd {STATE}/resets && grep -H -c . */* || true")
    finally:
        run.host_vars.unlink(missing_ok=True)
        sh(node.container, f"rm -f {DROPIN} {WRAPPER} {SCENARIO} {DRAINED} && rm -rf {STATE}")
        restart_agent(node.container, node.agent_port)

    [(rid, state, outcome, kind)] = run.remediations("lab-node1")
    assert (state, kind) == ("done", "repair"), outcome
    assert run.steps(rid) == steps_ok("reset_gpu")
    assert drained  # the drain was the file on the host, while the repair ran
    assert resets.split() == ["h100-0000/3:1"]  # that chip, once, by the stand-in in the container
    assert run.lifecycle("lab-node1") == [("new", "repairing"), ("repairing", "burn_in"),
                                          ("burn_in", "in_service")]
    assert run.audit("lab-node1") == ["cordoned", "draining", "drained", "maintaining", "verifying", "active"]
    assert run.query("SELECT status FROM burn_in_results WHERE host = 'lab-node1'") == [("pass",)]
    resets_run = [r for r in run.runs() if r["playbook"].endswith("remediate/reset_gpu.yml")]
    assert [r["status"] for r in resets_run] == ["successful"], resets_run
    assert "lab-node1" in json.dumps(resets_run[0]) and "lab-node2" not in json.dumps(resets_run[0])
    # the other hosts were observed, never acted on
    assert run.remediations("lab-node2") == [] and run.remediations("lab-node3") == []
    assert any(a["host"] == "lab-node1" for r in rounds for a in r["actions"])


def test_a_reboot_over_ssh_clears_a_fault_of_that_boot_and_returns_the_host(lab: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    node = lab["hosts"]["lab-node2"]
    before = boot_marker(node.container)
    original = sh(node.container, "cat /etc/fleet-agent/scenario.yaml")
    scenario = {**LAB_SCENARIO, "faults": [
        {"kind": "driver_mismatch", "group": "h100", "hosts": [1], "at": 0, "boot": before}]}
    run = Run(lab, tmp_path, POLICY.format(action="reboot", repair="reboot"), "lab-node2", {
        "burn_in_dcgmi": [PY, "-m", "fleet_agent.sim.dcgmi", "--scenario", "/etc/fleet-agent/scenario.yaml",
                          "--hosts", "3", "--host-index", "1"]})
    try:
        sh(node.container, "cat > /etc/fleet-agent/scenario.yaml", stdin=yaml.safe_dump(scenario))
        sh(node.container, f"mkdir -p $(dirname {DROPIN}) && cat > {DROPIN}",
           stdin="[Service]\nProtectProc=default\n")
        restart_agent(node.container, node.agent_port)
        reboot_by = json.dumps({"fleetctl_reboot_command": "systemctl reboot"})
        loop = run.loop("--repair-timeout", "120", "-e", reboot_by)
        try:
            drained = watch(run, loop, "lab-node2", node.container, 150)
        finally:
            run.stop(loop)
        after = boot_marker(node.container)
    finally:
        run.host_vars.unlink(missing_ok=True)
        wait(lambda: subprocess.run(["docker", "exec", node.container, "true"], check=False).returncode == 0,
             "the container", 60)
        sh(node.container, "cat > /etc/fleet-agent/scenario.yaml", stdin=original)
        sh(node.container, f"rm -f {DROPIN} {DRAINED}")
        restart_agent(node.container, node.agent_port)

    [(rid, state, outcome, kind)] = run.remediations("lab-node2")
    assert (state, kind) == ("done", "repair"), outcome
    assert run.steps(rid) == steps_ok("reboot")
    assert drained
    assert after != before and after.split("/")[0] == before.split("/")[0]  # a new PID 1, same kernel
    assert run.lifecycle("lab-node2") == [("new", "repairing"), ("repairing", "burn_in"),
                                          ("burn_in", "in_service")]
    assert run.query("SELECT status FROM burn_in_results WHERE host = 'lab-node2'") == [("pass",)]
    reboots = [r for r in run.runs() if r["playbook"].endswith("remediate/reboot.yml")]
    assert [r["status"] for r in reboots] == ["successful"], reboots
    assert run.remediations("lab-node1") == [] and run.remediations("lab-node3") == []
