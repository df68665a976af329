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

