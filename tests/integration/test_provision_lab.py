"""End to end: ``fleetctl provision`` applies playbooks/site.yml to the 3-container SSH lab over
real SSH (host keys checked), then ``fleetctl health`` shows the 3 hosts healthy.

The lab is tests/lab/lab.py's (Debian 12 + systemd + sshd on 127.0.0.1:2201-2203, inventory in
inventory/lab, NVIDIA/TPU roles switched off by its group vars, simulated chips in the agents).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
LAB_HOSTS = {"lab-node1", "lab-node2", "lab-node3"}


def _lab_module() -> ModuleType:
    sys.path.insert(0, str(REPO / "tests" / "lab"))
    try:
        import lab  # tests/lab/lab.py
    finally:
        sys.path.pop(0)
    return lab


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    lab = _lab_module()
    containers = [host.container for host in lab.lab_hosts()]
    running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", *containers],
                             capture_output=True, text=True, check=False).stdout.split()
    already_up = running == ["true"] * len(containers)  # someone else's lab: leave it as found
    lab.up()
    state = tmp_path_factory.mktemp("provision-lab")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        FLEETCTL_DB=str(state / "fleetctl.db"),
        FLEETCTL_CACHE_DIR=str(state / "cache"),
        FLEETCTL_INVENTORY=str(REPO / "inventory" / "lab"),
    )
    try:
        yield env
    finally:
        if not already_up:
            lab.down()


def fleetctl(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_provision_site_over_ssh_then_health_shows_three_healthy_hosts(lab_env: dict[str, str]) -> None:
    done = fleetctl(lab_env, "provision", "lab", "--playbook", "site", "--json")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert result["status"] == "successful"
    hosts = {h["host"]: h for h in result["hosts"]}
    assert set(hosts) == LAB_HOSTS
    for name, host in hosts.items():
        assert host["state"] in ("ok", "changed"), (name, host)
        assert host["ok"] > 0 and host["failed"] == 0 and host["unreachable"] == 0, (name, host)

    record = json.loads(fleetctl(lab_env, "runs", "show", result["run_id"], "--json").stdout)
    assert record["status"] == "successful"
    assert record["playbook"] == str(REPO / "playbooks" / "site.yml")
    assert record["options"]["host_key_checking"] is True

    # The agents were just (re)started by the playbook: give them a sample or two.
    deadline = time.monotonic() + 60
    while True:
        health = fleetctl(lab_env, "health", "lab", "--json", timeout=120)
        report = json.loads(health.stdout) if health.stdout.strip() else {}
        if health.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health.returncode == 0, health.stdout[-4000:] + health.stderr[-2000:]
    assert {h["name"]: h["status"] for h in report["hosts"]} == dict.fromkeys(LAB_HOSTS, "healthy")
    assert all(h["chips_present"] > 0 and h["chips_ok"] == h["chips_present"] for h in report["hosts"])



BATCH_PLAYBOOK = """\
- name: A rollout that breaks on lab-node1
  hosts: lab
  gather_facts: false
  tasks:
    - name: Leave a mark where this run got to
      ansible.builtin.copy:
        content: "{{ marker }}\\n"
        dest: "{{ marker }}"
        mode: "0644"
    - name: Fail on lab-node1
      ansible.builtin.fail:
        msg: "lab-node1 breaks the rollout"
      when: inventory_hostname == 'lab-node1'
"""


def _marked(lab: ModuleType, marker: str) -> set[str]:
    """The lab hosts on which ``marker`` exists (read through docker, not through Ansible)."""
    return {host.name for host in lab.lab_hosts()
            if subprocess.run(["docker", "exec", host.container, "test", "-e", marker],
                              check=False).returncode == 0}


def test_batch_rollout_stops_after_the_batch_in_which_a_host_failed(lab_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    # Real ansible-runner over real SSH: batches of 2, lab-node1 fails in batch 1 (lab-node1 and
    # lab-node2), so batch 2 (lab-node3) is never started: the host is not touched at all.
    lab = _lab_module()
    playbook = tmp_path / "rollout.yml"
    playbook.write_text(BATCH_PLAYBOOK)
    marker = f"/tmp/fleetctl-batch-{tmp_path.name}-{os.getpid()}"
    try:
        done = fleetctl(lab_env, "provision", "lab", "--playbook", str(playbook), "--batch", "2",
                        "-e", f"marker={marker}", "--json")
        assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
        result = json.loads(done.stdout)
        assert result["status"] == "failed"
        assert result["message"] == "stopped after batch 1 of 2: a host failed"
        hosts = {h["host"]: h for h in result["hosts"]}
        assert hosts["lab-node1"]["state"] == "failed" and hosts["lab-node1"]["failed"] == 1
        assert hosts["lab-node2"]["state"] in ("ok", "changed") and hosts["lab-node2"]["failed"] == 0
        assert "lab-node3" not in hosts or hosts["lab-node3"]["ok"] + hosts["lab-node3"]["changed"] == 0
        assert _marked(lab, marker) == {"lab-node1", "lab-node2"}

        record = json.loads(fleetctl(lab_env, "runs", "show", result["run_id"], "--json").stdout)
        assert record["status"] == "failed"
        assert record["message"] == "stopped after batch 1 of 2: a host failed"
        # one ansible-runner run per started batch (its artifacts under the batch's ident), none for 2
        artifacts = Path(record["artifacts"])
        assert (artifacts / "batch-1").is_dir() and not (artifacts / "batch-2").exists()
    finally:
        for host in lab.lab_hosts():
            subprocess.run(["docker", "exec", host.container, "rm", "-f", marker], check=False)
