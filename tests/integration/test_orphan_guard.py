"""OrphanGuard with real processes: a parent that dies takes its marked processes with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from fleetctl.orphan_guard import MARK

pytestmark = pytest.mark.integration

# A parent that starts a guard and a marked process in a session of its own (as pexpect does),
# prints the marked pid, then either dies by SIGKILL inside the guard or leaves it cleanly.
PARENT = textwrap.dedent("""
    import os, signal, subprocess, sys
    from fleetctl.orphan_guard import OrphanGuard
    guard = OrphanGuard(grace=float(sys.argv[2]))
    with guard:
        child = subprocess.Popen(sys.argv[3:], env={**os.environ, **guard.envvars},
                                 stdout=subprocess.DEVNULL, start_new_session=True)
        print(child.pid, flush=True)
        if sys.argv[1] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
    print("left", flush=True)
""")

# Ignores SIGTERM: only the SIGKILL after the grace period ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def _parent(mode: str, grace: float, *argv: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(grace), *argv],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    marked = psutil.Process(int(parent.stdout.readline()))
    return parent, marked


def _gone(proc: psutil.Process, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except psutil.TimeoutExpired:
        return False


def test_a_killed_parent_takes_its_marked_process_with_it() -> None:
    parent, marked = _parent("die", 5.0, "sleep", "301.7")
    assert MARK in marked.environ()
    parent.wait(timeout=10)
    assert parent.returncode == -9
    started = time.monotonic()
    assert _gone(marked, timeout=10)  # SIGTERM sufficed: well inside the grace period
    assert time.monotonic() - started < 5.0


def test_sigkill_follows_when_sigterm_is_ignored() -> None:
    parent, marked = _parent("die", 1.0, sys.executable, "-c", STUBBORN)
    parent.wait(timeout=10)
    assert _gone(marked, timeout=10)


def test_a_clean_exit_leaves_marked_processes_alone() -> None:
    parent, marked = _parent("leave", 0.5, "sleep", "302.3")
    try:
        out, _ = parent.communicate(timeout=20)
        assert parent.returncode == 0 and out.strip() == "left"
        assert not _gone(marked, timeout=2)  # the guard saw "done" and stopped nothing
    finally:
        marked.kill()
