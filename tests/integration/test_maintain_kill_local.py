"""``fleetctl maintain`` killed with SIGKILL at the start of each step, then run again: it resumes.

The hosts, agents and playbook are test_maintain_local.py's (connection=local, real ansible-runner,
real fleet-agent processes, scheduler ``none``). ``FLEETCTL_TEST_MAINTAIN_PAUSE_AT=<step>`` makes
maintain say ``paused at <step>`` on stderr and wait there; the test kills it at that moment. The
reboot step cannot run on a local connection (Ansible refuses to reboot the control node): it is
killed and resumed on the SSH lab (test_maintain_reboot_lab.py).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from typing import Any

import pytest
from test_maintain_local import FLEETCTL, TINY, fleetctl, lab  # noqa: F401 - lab is the fixture

pytestmark = pytest.mark.integration

PAUSE_ENV = "FLEETCTL_TEST_MAINTAIN_PAUSE_AT"


def kill_at(lab: dict[str, Any], step: str, *args: str) -> str:  # noqa: F811
    """Start maintain, SIGKILL it once it pauses at ``step``; returns what it printed."""
    log = lab["tmp"] / f"killed-{step}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([FLEETCTL, *args], env={**lab["env"], PAUSE_ENV: step}, cwd=lab["tmp"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while f"paused at {step}" not in log.read_text():
            assert proc.poll() is None, f"maintain ended before {step}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"maintain never reached {step}:\n{log.read_text()}"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return str(log.read_text())


LEFT_IN = {"drain": "active", "wait": "draining", "provision": "maintaining", "verify": "verifying",
           "undrain": "verifying"}


@pytest.mark.parametrize("step", list(LEFT_IN))
def test_a_maintain_killed_at_a_step_resumes_to_in_service(lab: dict[str, Any], step: str) -> None:  # noqa: F811
    args = ("maintain", "m1", "--playbook", str(TINY), "--verify-timeout", "20", "--reboot", "never")
    kill_at(lab, step, *args)
    db = sqlite3.connect(lab["tmp"] / "fleetctl.db")
    state = db.execute("SELECT state FROM host_state WHERE host = 'm1'").fetchone()
    assert (state[0] if state else "active") == LEFT_IN[step]

    done = fleetctl(lab, *args, "--json")
    assert done.returncode == 0, done.stderr
    [host] = json.loads(done.stdout)["hosts"]
    assert host["ok"] and host["state"] == "active", host

    path = [r[0] for r in db.execute("SELECT to_state FROM host_audit WHERE host = 'm1' ORDER BY id")]
    assert path.count("cordoned") == 1 and path.count("draining") == 1, path  # never drained twice
    assert path[-2:] == ["verifying", "active"] and "quarantined" not in path
    # the playbook ran (again, when the kill came after it: playbooks are idempotent)
    assert (lab["tmp"] / "markers" / "m1.txt").exists()
    assert not (lab["tmp"] / "m1" / "drained").exists()  # back in service: the drained file is gone
    # the lifecycle: a maintain run's own drain moved nothing, the verified host is in service
    moves = list(db.execute("SELECT from_state, to_state, source FROM lifecycle_audit WHERE host = 'm1' "
                            "ORDER BY id"))
    assert all(src in ("provision", "maintain") for _, _, src in moves), moves
    shown = fleetctl(lab, "hosts", "m1", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["hosts"][0]["state"] == "in_service"
    # no lock is left behind by the killed run nor by the one that finished
    assert db.execute("SELECT COUNT(*) FROM host_locks").fetchone()[0] == 0
