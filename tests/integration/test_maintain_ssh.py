"""``fleetctl maintain`` and ``drain`` over real SSH: two containers running sshd, scheduler ``none``.

A small lab of its own (the shared SSH lab was not ready when this was written): each host is a
container from the project's test image (tests/images/build.sh) running only sshd on a loopback
port, with its ``/var/lib/fleet-agent`` bind-mounted from the test's temp directory. fleetctl
writes the drained file over SSH (strict host key checking, a known_hosts file of the lab's key);
each host's fleet-agent runs here with simulated chips and reads the same file through the bind
mount, so ``/v1/node`` shows the drain as it would on a real host. s2's chips report XID 79.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PORT_HI, PORT_LO, docker, free_port_block, require_test_image, ssh_answers, wait_until

pytestmark = pytest.mark.integration

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
IMAGE = "fleetctl/debian12-systemd:latest"
TINY = Path(__file__).parent / "provision_local" / "tiny.yml"  # provision's test playbook
HOSTS = ("s1", "s2")
SCENARIO = """\
description: two SSH lab hosts, the second unhealthy
seed: 4
groups:
  - name: gpu
    count: 2
    kind: gpu
    model: H100-SXM5-80GB
    chips: 2
    load: {base_pct: 30, amplitude_pct: 0, period_s: 600, memory_used_pct: 30}
faults:
  - {kind: xid, group: gpu, hosts: [1], chips: [0], code: 79}
"""


@pytest.fixture()
def ssh_lab(tmp_path: Path, start_agent: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    require_test_image(IMAGE)
    lab = tmp_path / "lab"
    lab.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(lab / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(lab / "id")], check=True)
    shutil.copy(lab / "id.pub", lab / "authorized_keys")
    # a random start: other test sessions on this machine take the first free ports of the range
    base = free_port_block(len(HOSTS), lo=PORT_LO + secrets.randbelow(PORT_HI - PORT_LO - 20))
    host_pub = (lab / "host_key.pub").read_text().split()
    (lab / "known_hosts").write_text("".join(f"[127.0.0.1]:{base + i} {host_pub[0]} {host_pub[1]}\n"
                                             for i in range(len(HOSTS))))
    (lab / "empty_known_hosts").write_text("")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    containers: list[str] = []
    hosts: dict[str, Any] = {}
    try:
        for i, name in enumerate(HOSTS):
            state = tmp_path / name
            state.mkdir()
            cname = f"fleetctl-drain-ssh-{name}-{secrets.token_hex(3)}"
            docker("run", "-d", "--rm", "--name", cname, "--network", "host",
                    "-v", f"{lab}:/lab:ro", "-v", f"{state}:/var/lib/fleet-agent", IMAGE,
                    "sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p \"$0\" "
                    "-o ListenAddress=127.0.0.1 -h /lab/host_key -o AuthorizedKeysFile=/lab/authorized_keys "
                    "-o StrictModes=no -o PasswordAuthentication=no", str(base + i))
            containers.append(cname)
            agent = start_agent({"simulation": {"scenario": str(scenario), "host_index": i}, "hostname": name,
                                 "interval_s": 2, "collector_timeout_s": 1,
                                 "drained_file": str(state / "drained")})
            hosts[name] = {
                "ansible_host": "127.0.0.1", "ansible_port": base + i, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(lab / "id"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab / 'known_hosts'} "
                                           "-o StrictHostKeyChecking=yes",
                "fleet_agent_port": agent.port, "fleet_agent_expected_chips": 2, "agent": agent,
            }
        for i in range(len(HOSTS)):
            wait_until(lambda i=i: ssh_answers(base + i), 30, f"sshd on port {base + i}")
        inv_hosts = {n: {k: v for k, v in h.items() if k != "agent"} for n, h in hosts.items()}
        # the same container as s1, under a name whose host key is not in known_hosts
        inv_hosts["s1-unknown-key"] = {**inv_hosts["s1"], "ansible_ssh_common_args":
                                       f"-o UserKnownHostsFile={lab / 'empty_known_hosts'} "
                                       "-o StrictHostKeyChecking=yes"}
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "vars": {"fleet_scheduler": "none", "ansible_python_interpreter": "/usr/bin/python3",
                     "marker_dir": "/var/lib/fleet-agent"},
            "children": {"lab": {"hosts": {n: inv_hosts[n] for n in HOSTS}},
                         "strangers": {"hosts": {"s1-unknown-key": inv_hosts["s1-unknown-key"]}}},
        }}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
        env.update(FLEETCTL_DB=str(tmp_path / "fleetctl.db"), FLEETCTL_INVENTORY=str(inventory),
                   FLEETCTL_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path), SUDO_USER="sre3")
        yield {"tmp": tmp_path, "env": env, "hosts": hosts}
    finally:
        for cname in containers:
            docker("rm", "-f", cname, check=False)


def fleetctl(lab: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETCTL, *args], env=lab["env"], cwd=lab["tmp"], capture_output=True, text=True,
                          timeout=400)


def test_maintain_over_ssh_quarantines_the_unhealthy_host(ssh_lab: dict[str, Any]) -> None:
    done = fleetctl(ssh_lab, "maintain", "lab", "--playbook", str(TINY), "--max-unavailable", "2",
                    "--max-failures", "1", "--verify-timeout", "6", "--json")
    assert done.returncode == 1, done.stderr
    by = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
    assert by["s1"]["ok"] and by["s1"]["state"] == "active", by
    assert by["s2"]["state"] == "quarantined", (by, done.stderr)
    assert by["s2"]["state"] == "quarantined" and "verification failed" in by["s2"]["message"]
    tmp = ssh_lab["tmp"]
    # the playbook ran over SSH in both containers; the drained file was written over SSH in s2's
    for name in HOSTS:
        assert (tmp / name / f"{name}.txt").read_text().startswith(f"{name} provisioned")
    assert (tmp / "s2" / "drained").read_text().startswith("fleetctl:sre3: maintain tiny.yml")
    assert not (tmp / "s1" / "drained").exists()
    agent = ssh_lab["hosts"]["s2"]["agent"]
    wait_until(lambda: agent.get("/v1/node").json()["drained"] is True, 15, "s2's agent to report drained")
    assert agent.get("/v1/node").json().get("drained_reason", "").startswith("fleetctl:sre3:")


def test_drain_and_undrain_over_ssh_and_an_unknown_host_key(ssh_lab: dict[str, Any]) -> None:
    tmp = ssh_lab["tmp"]
    done = fleetctl(ssh_lab, "drain", "s1", "--reason", "cable swap; $(touch /tmp/pwned)", "--json")
    assert done.returncode == 0, done.stderr
    assert (tmp / "s1" / "drained").read_text() == "fleetctl:sre3: cable swap; $(touch /tmp/pwned)\n"
    done = fleetctl(ssh_lab, "undrain", "s1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp / "s1" / "drained").exists()
    # host key checking stays on: an unknown key is an error, and nothing is recorded or written
    t0 = time.monotonic()
    done = fleetctl(ssh_lab, "drain", "s1-unknown-key", "--reason", "x")
    assert done.returncode == 1
    assert "Host key verification failed" in done.stderr and "nothing changed" in done.stderr
    assert time.monotonic() - t0 < 120  # BatchMode: no prompt waiting for an answer
    assert not (tmp / "s1" / "drained").exists()
