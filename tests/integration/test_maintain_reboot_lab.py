"""``fleetctl maintain --reboot`` on the SSH lab (tests/lab/lab.py): a real ``ansible.builtin.reboot``
of a lab container, which counts when the host comes back and the verify passes.

A reboot inside a lab container ends its systemd (PID 1); Docker's restart policy starts the
container again, and sshd and the agent come back as the enabled units they are. The kernel's
boot id belongs to the machine the containers share, so the boot marker here is the container's
start (Docker's StartedAt and PID 1's start time), which is also what playbooks/system_reboot.yml
waits on. The lab's containers have no logind, so `shutdown -r` cannot be used: the reboot command
goes in through ``-e`` (``systemctl reboot``), as a fleet with its own would pass it.

Run under ``flock -o /tmp/fleet-lab.lock`` (the lab is shared).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
PID1_START = "sed 's/^.*) //' /proc/1/stat | cut -d' ' -f20"
REBOOT_BY = json.dumps({"fleetctl_reboot_command": "systemctl reboot"})
# What the nvidia_driver role does after installing a driver it could not load (tasks/module.yml).
UPGRADE = """\
- name: A driver upgrade that leaves a reboot pending
  hosts: all
  gather_facts: false
  tasks:
    - name: Record whether a reboot is needed
      ansible.builtin.set_fact:
        nvidia_driver_reboot_needed: "{{ needs_reboot | default(true) | bool }}"
"""


def lab_module() -> ModuleType:
    sys.path.insert(0, str(REPO / "tests" / "lab"))
    try:
        import lab  # tests/lab/lab.py
    finally:
        sys.path.pop(0)
    module: ModuleType = lab
    return module


def agent_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def lab_inventory(into: Path) -> Path:
    """inventory/lab with ``ansible_become`` on: the drained file (scheduler ``none``) lives in the
    agent's state directory, which the SSH user reads and writes through sudo, as on a real fleet."""
    source = REPO / "inventory" / "lab"
    shutil.copytree(source, into)
    group_vars = into / "group_vars" / "lab.yml"
    text = group_vars.read_text().replace("{{ inventory_dir }}/../..", str(REPO))
    group_vars.write_text(text + "ansible_become: true\n")
    return into


def lab_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), FLEETCTL_DB=str(state / "fleetctl.db"),
               FLEETCTL_CACHE_DIR=str(state / "cache"),
               FLEETCTL_INVENTORY=str(lab_inventory(state / "inventory")))
    return env


def run(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lab up, with the agent installed on every host (site.yml) when one does not answer."""
    module = lab_module()
    module.up()
    hosts = {h.name: h for h in module.lab_hosts()}
    state = tmp_path_factory.mktemp("maintain-reboot-lab")
    env = lab_env(state)
    if not all(agent_answers(h.agent_port) for h in hosts.values()):
        done = run(env, "provision", "lab", "--playbook", "site", "--json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = state / "work"
    work.mkdir()
    (work / "upgrade.yml").write_text(UPGRADE)
    yield {"env": env, "hosts": hosts, "lab": module, "work": work, "db": state / "fleetctl.db"}


def boot_marker(lab: dict[str, Any], name: str) -> tuple[str, str]:
    """(Docker's StartedAt, PID 1's start time) of the host's container."""
    container = lab["hosts"][name].container
    started = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", container], check=True,
                             capture_output=True, text=True).stdout.strip()
    pid1 = subprocess.run(["docker", "exec", container, "sh", "-c", PID1_START], check=True,
                          capture_output=True, text=True).stdout.strip()
    return started, pid1


def audit(lab: dict[str, Any], name: str) -> list[tuple[str, str, str | None]]:
    db = sqlite3.connect(lab["db"])
    try:
        return list(db.execute("SELECT from_state, to_state, note FROM host_audit WHERE host = ? "
                               "ORDER BY id", (name,)))
    finally:
        db.close()


def maintain_args(lab: dict[str, Any], host: str, *more: str) -> list[str]:
    return ["maintain", host, "--playbook", str(lab["work"] / "upgrade.yml"), "--verify-timeout", "90",
            "--reboot-timeout", "240", "-e", REBOOT_BY, *more]


def test_auto_reboots_the_host_the_upgrade_left_needing_it_and_verifies_it(lab: dict[str, Any]) -> None:
    before = boot_marker(lab, "lab-node1")
    done = run(lab["env"], *maintain_args(lab, "lab-node1"), "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["rebooted"] == ["lab-node1"]
    [host] = result["hosts"]
    assert host["ok"] and host["state"] == "active" and "rebooted, verified" in host["message"]
    after = boot_marker(lab, "lab-node1")
    assert after[0] != before[0] and after[1] != before[1], (before, after)  # it really restarted
    assert result["options"]["reboot"] == "auto"
    assert "fleetctl_reboot_command=systemctl reboot" in result["options"]["extra_vars"]

    path = audit(lab, "lab-node1")
    assert [to for _, to, _ in path] == ["cordoned", "draining", "drained", "maintaining", "maintaining",
                                         "verifying", "active"]
    # the note carries the boot marker read before the reboot (a resumed run compares it)
    note = path[4][2] or ""
    assert note.startswith("reboot (nvidia_driver_reboot_needed after provisioning; boot marker ")
    assert path[5][2] == "provisioned, rebooted"
    # the reboot is a recorded run of its own
    runs = json.loads(run(lab["env"], "runs", "list", "--json").stdout)
    assert any(r["playbook"].endswith("system_reboot.yml") and r["status"] == "successful" for r in runs)
    # the verify's verdict and the lifecycle, as on-call sees them
    shown = json.loads(run(lab["env"], "hosts", "lab-node1", "-o", "json").stdout)["hosts"][0]
    assert shown["state"] == "in_service" and shown["health"]["healthy"] is True
    assert shown["health"]["source"] == "maintain" and shown["drain_state"] == "active"


def test_auto_does_not_reboot_when_the_upgrade_needs_no_reboot(lab: dict[str, Any]) -> None:
    before = boot_marker(lab, "lab-node3")
    done = run(lab["env"], *maintain_args(lab, "lab-node3", "-e", "needs_reboot=false"), "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["rebooted"] == [] and result["hosts"][0]["ok"]
    assert boot_marker(lab, "lab-node3") == before
    assert not any(note and note.startswith("reboot") for _, _, note in audit(lab, "lab-node3"))


def test_a_host_that_does_not_come_back_is_quarantined_and_suspect(lab: dict[str, Any]) -> None:
    # A reboot command that reboots nothing: no new boot is ever seen, as with a host that hangs
    # in its firmware.
    no_reboot = json.dumps({"fleetctl_reboot_command": "true"})
    args = ["maintain", "lab-node2", "--playbook", str(lab["work"] / "upgrade.yml"), "--reboot", "always",
            "--reboot-timeout", "15", "-e", no_reboot, "--json"]
    try:
        done = run(lab["env"], *args)
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        [host] = json.loads(done.stdout)["hosts"]
        assert host["state"] == "quarantined" and host["message"].startswith("reboot failed: run "), host
        assert "lab-node2: quarantined (reboot failed" in done.stderr
        assert [to for _, to, _ in audit(lab, "lab-node2")][-2:] == ["maintaining", "quarantined"]
        shown = json.loads(run(lab["env"], "hosts", "lab-node2", "-o", "json").stdout)["hosts"][0]
        assert shown["state"] == "suspect" and shown["drain_state"] == "quarantined"
    finally:
        run(lab["env"], "undrain", "lab-node2", "--force")


def test_a_maintain_killed_at_the_reboot_step_resumes_and_reboots_once(lab: dict[str, Any]) -> None:
    before = boot_marker(lab, "lab-node1")
    seen = len(audit(lab, "lab-node1"))
    log = lab["work"] / "killed.log"
    args = maintain_args(lab, "lab-node1", "--reboot", "always")
    with log.open("w") as err:
        proc = subprocess.Popen([FLEETCTL, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                env={**lab["env"], "FLEETCTL_TEST_MAINTAIN_PAUSE_AT": "reboot"})
    try:
        deadline = time.monotonic() + 300
        while "paused at reboot" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    last = audit(lab, "lab-node1")[-1]
    assert last[1] == "maintaining" and (last[2] or "").startswith("reboot (--reboot always; boot marker ")
    assert boot_marker(lab, "lab-node1") == before  # killed before the reboot was asked for

    done = run(lab["env"], *args, "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["rebooted"] == ["lab-node1"] and result["hosts"][0]["state"] == "active"
    assert boot_marker(lab, "lab-node1") != before
    # One drain; the killed run's provision and reboot rows; the resumed run's reboot only (the boot
    # marker had not changed: the reboot was never asked for) — never a second provision.
    path = audit(lab, "lab-node1")[seen:]
    assert [to for _, to, _ in path] == [
        "cordoned", "draining", "drained", "maintaining", "maintaining", "maintaining", "verifying", "active"]
    assert [note for _, _, note in path].count("provisioning") == 0
    assert sum(1 for _, _, note in path if (note or "").startswith("reboot (")) == 2
    shown = json.loads(run(lab["env"], "hosts", "lab-node1", "-o", "json").stdout)["hosts"][0]
    assert shown["state"] == "in_service"
