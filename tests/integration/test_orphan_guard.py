"""OrphanGuard with real processes: a parent that dies takes its marked processes with it."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fleetctl import orphan_guard
from fleetctl.orphan_guard import MARK, GuardError, OrphanGuard

pytestmark = pytest.mark.integration

# A parent that starts a guard and a marked process in a session of its own (as pexpect does),
# prints the marked pid, waits for a line on stdin (the test has looked at the marked process),
# then either dies by SIGKILL inside the guard or leaves it cleanly.
PARENT = textwrap.dedent("""
    import os, signal, subprocess, sys
    from fleetctl.orphan_guard import OrphanGuard
    guard = OrphanGuard(grace=float(sys.argv[2]))
    with guard:
        child = subprocess.Popen(sys.argv[3:], env={**os.environ, **guard.envvars},
                                 stdout=subprocess.DEVNULL, start_new_session=True)
        print(child.pid, flush=True)
        sys.stdin.readline()
        if sys.argv[1] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
    print("left", flush=True)
""")

# Ignores SIGTERM: only the SIGKILL after the grace period ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def _parent(mode: str, grace: float, *argv: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(grace), *argv],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    marked = psutil.Process(int(parent.stdout.readline()))
    # /proc/PID/environ reads empty until the child's exec has finished: give it that moment
    deadline = time.monotonic() + 5
    while not marked.environ() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert MARK in marked.environ()  # looked at while the parent still lives
    parent.stdin.write("go\n")
    parent.stdin.flush()
    return parent, marked


def _gone(proc: psutil.Process, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except psutil.TimeoutExpired:
        return False


def test_a_killed_parent_takes_its_marked_process_with_it() -> None:
    parent, marked = _parent("die", 5.0, "sleep", "301.7")
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


class _BrokenGuard(OrphanGuard):
    """A watchdog command that dies at start, as with a broken install."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit('ModuleNotFoundError: No module named psutil')"]


class _SilentGuard(OrphanGuard):
    """A watchdog that starts but never says ready."""

    def command(self) -> list[str]:
        return ["sleep", "30"]


def test_a_watchdog_that_cannot_start_stops_the_run_with_its_reason() -> None:
    with pytest.raises(GuardError, match=r"failed to start: ModuleNotFoundError: No module named psutil"):
        with _BrokenGuard(grace=0.5):
            pytest.fail("the guarded block ran without a watchdog")


def test_a_watchdog_that_never_answers_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orphan_guard, "READY_TIMEOUT_S", 0.5)
    guard = _SilentGuard(grace=0.5)
    started = time.monotonic()
    with pytest.raises(GuardError, match=r"did not start within"):
        with guard:
            pytest.fail("the guarded block ran without a watchdog")
    assert time.monotonic() - started < 5
    assert guard._proc is None  # the silent one was killed and reaped, not left behind


def test_the_real_watchdog_answers_ready_and_leaves_on_done() -> None:
    guard = OrphanGuard(grace=0.5)
    with guard:
        proc = guard._proc
        assert proc is not None and proc.poll() is None
    assert proc.returncode == 0  # "done" written: it exited cleanly without stopping anything


@pytest.mark.parametrize(("said", "runs_then"), [(b"", True), (orphan_guard.CANCELED, False),
                                                 (orphan_guard.DONE, False)])
def test_the_then_command_runs_only_when_the_parent_died(
    tmp_path: Path, said: bytes, runs_then: bool
) -> None:
    # Died (end of file): the watchdog runs the remote cleanup itself. Canceled: the parent, alive,
    # runs it and reports it. Done: nothing to stop.
    flag = tmp_path / "ran"
    then = [sys.executable, "-c", f"open({str(flag)!r}, 'w').write('ran')"]
    assert orphan_guard.watch(io.BytesIO(said), "no-such-token", 0.1, then) == 0
    assert flag.exists() is runs_then


def test_a_canceling_parent_tells_its_watchdog_so(tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    guard = OrphanGuard(grace=0.2, then=[sys.executable, "-c", f"open({str(flag)!r}, 'w').write('ran')"])
    with guard:
        proc = guard._proc
        guard.stop_on_exit = True
    assert proc is not None and proc.returncode == 0
    assert not flag.exists()  # left to the parent
