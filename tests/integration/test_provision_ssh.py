"""``fleetctl provision`` over real SSH: sshd in containers on loopback ports, host keys checked.

Each host is a container from the project's test image (tests/images/build.sh) running only sshd
on its own 127.0.0.1 port, with /srv/marker bind-mounted from the test's temp directory so the
playbook's effect is visible here. ``stranger`` is the first container again under a name whose
host key is in no known_hosts file and whose inventory does not force StrictHostKeyChecking: only
fleetctl's default (ANSIBLE_HOST_KEY_CHECKING=True, where ansible-runner would set False) stands
between it and a silently accepted key.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import docker, free_port_block, require_test_image, ssh_answers, wait_until

pytestmark = pytest.mark.integration

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
IMAGE = "fleetctl/debian12-systemd:latest"
TINY = Path(__file__).parent / "provision_local" / "tiny.yml"
HOSTS = ("p1", "p2")


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_test_image(IMAGE)
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copy(keys / "id.pub", keys / "authorized_keys")
    base = free_port_block(len(HOSTS))
    kind, key = (keys / "host_key.pub").read_text().split()[:2]
    known = "".join(f"[127.0.0.1]:{base + i} {kind} {key}\n" for i in range(len(HOSTS)))
    (keys / "known_hosts").write_text(known)
    (keys / "stranger_known_hosts").write_text("")
    # paramiko ignores ssh options and reads ~/.ssh/known_hosts: only p2 is known there
    home = tempfile.mkdtemp(prefix="fp-")  # short: ssh's ControlPath socket lives under it (108 bytes)
    home_ssh = Path(home) / ".ssh"
    home_ssh.mkdir(parents=True)
    (home_ssh / "known_hosts").write_text(known.splitlines(keepends=True)[1])
    containers: list[str] = []
    try:
        hosts: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(HOSTS):
            (tmp_path / name).mkdir()
            cname = f"fleetctl-provision-ssh-{name}-{secrets.token_hex(3)}"
            docker("run", "-d", "--rm", "--name", cname, "--network", "host",
                    "-v", f"{keys}:/keys:ro", "-v", f"{tmp_path / name}:/srv/marker", IMAGE,
                    "sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p \"$0\" "
                    "-o ListenAddress=127.0.0.1 -h /keys/host_key "
                    "-o AuthorizedKeysFile=/keys/authorized_keys -o StrictModes=no "
                    "-o PasswordAuthentication=no", str(base + i))
            containers.append(cname)
            hosts[name] = {
                "ansible_host": "127.0.0.1", "ansible_port": base + i, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(keys / "id"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={keys / 'known_hosts'}",
            }
        for i in range(len(HOSTS)):
            wait_until(lambda i=i: ssh_answers(base + i), 30, f"sshd on port {base + i}")
        stranger = {**hosts["p1"], "ansible_ssh_common_args":
                    f"-o UserKnownHostsFile={keys / 'stranger_known_hosts'}"}
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"ansible_python_interpreter": "/usr/bin/python3", "marker_dir": "/srv/marker"},
            "children": {"lab": {"hosts": hosts}, "strangers": {"hosts": {"stranger": stranger}}},
        }}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
        (tmp_path / "state").mkdir(exist_ok=True)  # fleetctl creates no directory named by --db
        env.update(FLEETCTL_DB=str(tmp_path / "state" / "fleetctl.db"), FLEETCTL_INVENTORY=str(inventory),
                   FLEETCTL_CACHE_DIR=str(tmp_path / "cache"), HOME=home)
        yield {"tmp": tmp_path, "env": env, "keys": keys}
    finally:
        shutil.rmtree(home, ignore_errors=True)
        for cname in containers:
            docker("rm", "-f", cname, check=False)


def fleetctl(lab: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], env=lab["env"], cwd=lab["tmp"], capture_output=True,
                          text=True, timeout=300, check=False)


def hosts_of(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def test_provision_over_ssh_keeps_host_key_checking_on(lab: dict[str, Any]) -> None:
    # First, before any connection to p1's port exists: Ansible's ssh ControlPersist would let a
    # later connection to the same user@host:port reuse an already verified master.
    # An unknown host key is refused (ansible-runner alone would have accepted it)...
    refused = fleetctl(lab, "provision", "strangers", "-p", str(TINY), "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    stranger = hosts_of(refused)["stranger"]
    assert stranger["state"] == "unreachable"
    assert "Host key verification failed" in stranger["first_failure"]
    assert not (lab["tmp"] / "p1" / "stranger.txt").exists()
    assert (lab["keys"] / "stranger_known_hosts").read_text() == ""

    # ...until the operator turns checking off, explicitly, which the run record keeps
    allowed = fleetctl(lab, "provision", "strangers", "-p", str(TINY), "--json", "--no-host-key-checking")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert (lab["tmp"] / "p1" / "stranger.txt").exists()
    record = json.loads(fleetctl(lab, "runs", "show", json.loads(allowed.stdout)["run_id"], "--json").stdout)
    assert record["options"]["host_key_checking"] is False

    done = fleetctl(lab, "provision", "lab", "-p", str(TINY), "--json", "-e", "marker_text=over-ssh")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {h: r["state"] for h, r in hosts_of(done).items()} == {"p1": "changed", "p2": "changed"}
    for name in HOSTS:
        assert (lab["tmp"] / name / f"{name}.txt").read_text() == f"{name} over-ssh\n"


def test_paramiko_connection_checks_host_keys_too(lab: dict[str, Any]) -> None:
    done = fleetctl(lab, "provision", "p2", "-p", str(TINY), "--json", "--connection", "paramiko",
                    "--tags", "marker", "-e", "marker_text=paramiko")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (lab["tmp"] / "p2" / "p2.txt").read_text() == "p2 paramiko\n"
    refused = fleetctl(lab, "provision", "strangers", "-p", str(TINY), "--json", "--connection", "paramiko")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    stranger = hosts_of(refused)["stranger"]
    assert stranger["state"] in ("unreachable", "failed")
    # paramiko asked whether to trust the key; fleetctl answered no (an empty answer means yes)
    assert "host connection rejected by user" in stranger["first_failure"]
    assert not (lab["tmp"] / "p1" / "stranger.txt").exists()
