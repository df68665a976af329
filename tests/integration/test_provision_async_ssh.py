"""A canceled or killed ``fleetctl provision`` stops the async jobs it started on remote hosts.

Two containers from the project's test image run sshd on 127.0.0.1 ports; the playbook
(provision_local/async_jobs.yml) starts a ``poll: 0`` job and a ``poll: 5`` job, each a sleep with
an argument nothing else uses. The real fleetctl is stopped once both run on both hosts:
- SIGINT (Ctrl-C) right away: the polled job has no event naming its id yet, only the run's
  ``ANSIBLE_ASYNC_DIR`` marks it on the host;
- SIGKILL, with the inventory setting ``ansible_async_dir`` itself (no marker) and after the first
  poll: only the job ids the events named find them, and only the watchdog is left to act.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import docker, free_port_block, require_test_image, ssh_answers, wait_until

pytestmark = pytest.mark.integration

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")
IMAGE = "fleetctl/debian12-systemd:latest"
PLAYBOOK = Path(__file__).parent / "provision_local" / "async_jobs.yml"
HOSTS = ("a1", "a2")
PORTS = (37800, 37999)
SLEEPS = ("sleep 301.37", "sleep 302.73")


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_test_image(IMAGE)
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copy(keys / "id.pub", keys / "authorized_keys")
    base = free_port_block(len(HOSTS), *PORTS)
    kind, key = (keys / "host_key.pub").read_text().split()[:2]
    (keys / "known_hosts").write_text("".join(f"[127.0.0.1]:{base + i} {kind} {key}\n"
                                              for i in range(len(HOSTS))))
    containers: dict[str, str] = {}
    home = Path(tempfile.mkdtemp(prefix="fa-"))  # short: ssh's ControlPath socket lives under it
    try:
        hosts: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(HOSTS):
            cname = f"fleetctl-async-{name}-{secrets.token_hex(3)}"
            docker("run", "-d", "--rm", "--name", cname, "--network", "host", "-v", f"{keys}:/keys:ro", IMAGE,
                   "sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p \"$0\" "
                   "-o ListenAddress=127.0.0.1 -h /keys/host_key -o AuthorizedKeysFile=/keys/authorized_keys "
                   "-o StrictModes=no -o PasswordAuthentication=no", str(base + i))
            containers[name] = cname
            hosts[name] = {
                "ansible_host": "127.0.0.1", "ansible_port": base + i, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(keys / "id"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={keys / 'known_hosts'}",
            }
        for i in range(len(HOSTS)):
            port = base + i
            wait_until(lambda port=port: ssh_answers(port), 30, f"sshd on port {port}")  # type: ignore[misc]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
        (tmp_path / "state").mkdir()
        env.update(FLEETCTL_DB=str(tmp_path / "state" / "fleetctl.db"),
                   FLEETCTL_CACHE_DIR=str(tmp_path / "c"), HOME=str(home))
        yield {"tmp": tmp_path, "env": env, "hosts": hosts, "containers": containers}
    finally:
        for cname in containers.values():
            docker("rm", "-f", cname, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _inventory(lab: dict[str, Any], **group_vars: str) -> Path:
    path = Path(lab["tmp"]) / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_python_interpreter": "/usr/bin/python3", **group_vars},
        "hosts": lab["hosts"],
    }}))
    return path


def _job_processes(cname: str) -> list[str]:
    """The command lines of the test's async jobs (the sleeps and their async_wrapper) on a host."""
    out = docker("exec", cname, "ps", "-eo", "args", check=False).stdout
    return [line for line in out.splitlines() if any(s in line for s in SLEEPS) or "async_wrapper" in line]


def _all_running(lab: dict[str, Any]) -> bool:
    return all(all(any(s in line for line in _job_processes(c)) for s in SLEEPS)
               for c in lab["containers"].values())


def _none_left(lab: dict[str, Any]) -> bool:
    return not any(_job_processes(c) for c in lab["containers"].values())


def _wait_running(lab: dict[str, Any], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not _all_running(lab):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the async jobs did not start: fleetctl {proc.returncode}: {out[-2000:]} "
                        f"{err[-2000:]} {[_job_processes(c) for c in lab['containers'].values()]}")
        time.sleep(0.2)


def _start(lab: dict[str, Any], inventory: Path) -> subprocess.Popen[str]:
    argv = [FLEETCTL, "provision", "all", "-i", str(inventory), "-p", str(PLAYBOOK), "--json"]
    return subprocess.Popen(argv, env=lab["env"], cwd=lab["tmp"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run_record(lab: dict[str, Any]) -> dict[str, Any]:
    listing = subprocess.run([FLEETCTL, "runs", "list", "--json"], env=lab["env"], cwd=lab["tmp"],
                             capture_output=True, text=True, timeout=60, check=True)
    runs = json.loads(listing.stdout)
    runs = runs["runs"] if isinstance(runs, dict) else runs
    assert len(runs) == 1, runs
    shown = subprocess.run([FLEETCTL, "runs", "show", runs[0]["id"], "--json"], env=lab["env"],
                           cwd=lab["tmp"], capture_output=True, text=True, timeout=60, check=True)
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


def test_ctrl_c_stops_the_async_jobs_on_the_hosts(lab: dict[str, Any]) -> None:
    proc = _start(lab, _inventory(lab))
    try:
        _wait_running(lab, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # Gone by the time fleetctl has exited: the cleanup is part of the canceled run.
    leftovers = {c: _job_processes(c) for c in lab["containers"].values()}
    assert not any(leftovers.values()), (leftovers, err)
    assert proc.returncode == 130, out + err
    assert "stopping async jobs on 2 hosts (up to 60 s; Ctrl-C again to skip)" in err, err
    for cname in lab["containers"].values():
        listing = docker("exec", cname, "sh", "-c", "ls -A /root/.ansible_async 2>/dev/null", check=False)
        assert "fleetctl-" not in listing.stdout  # the run's job directory went with its jobs
    assert _run_record(lab)["status"] == "canceled"


def test_a_killed_fleetctl_leaves_its_watchdog_to_stop_the_async_jobs(lab: dict[str, Any]) -> None:
    # The inventory names its own async directory: no marker, only the job ids from the events.
    proc = _start(lab, _inventory(lab, ansible_async_dir="~/.custom_async"))
    try:
        _wait_running(lab, proc)
        time.sleep(7)  # past the first poll: an event has named the polled job's id
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    started = time.monotonic()
    wait_until(lambda: _none_left(lab), 90, "no async job left on the hosts")
    assert time.monotonic() - started < 90
    for cname in lab["containers"].values():
        files = docker("exec", cname, "sh", "-c", "ls -A /root/.custom_async", check=False).stdout.split()
        assert files == [], files  # the named job files were removed
    assert _run_record(lab)["status"] == "interrupted"
