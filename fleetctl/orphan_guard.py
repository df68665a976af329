"""Make ansible-playbook's whole process tree die with the fleetctl that started it.

A SIGKILLed (or OOM-killed) fleetctl runs no handler, and ansible-playbook does not notice: it
runs in its own session (pexpect) and ignores SIGHUP (ansible-runner), and its workers call
``setsid()``. Left alone they would keep changing hosts while the run is recorded as interrupted
and its host locks are free.

``OrphanGuard`` starts a small watchdog process (``python -m fleetctl.orphan_guard``) in a new
session, holding the only write end of a pipe to the watchdog's stdin. Every process of the run
carries ``FLEETCTL_GUARD=<token>`` in its environment (ansible-playbook passes its environment to
workers, modules, ``ssh``). A clean end writes ``done``; end of file without it means fleetctl
died, by any means, and the watchdog stops every process carrying the token: SIGTERM first, so
Ansible can stop its workers, SIGKILL after a grace period.

A run may also hand the watchdog a command to run after that (``then``): provision's cleanup of the
async jobs Ansible started on remote hosts (``fleetctl.async_jobs``), which no local signal reaches.
A cancel the parent handles itself writes ``canceled``: the watchdog then stops the marked
processes only, and the parent runs that cleanup, so it can report what it could not stop.

The watchdog answers ``ready`` once it runs (psutil imported); a watchdog that cannot start stops
the run before ansible-playbook starts (:class:`GuardError`) rather than leaving it unguarded.

Why not ``PR_SET_PDEATHSIG``: it is Linux-only, fires when the *thread* that forked exits
(ansible-runner forks from its own thread), reaches only ansible-playbook (not the ``setsid()``
workers) and cannot escalate to SIGKILL once its sender is gone. A pipe closes on every platform
when its last holder dies, and the environment marks the whole tree, reparented or not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

from fleetctl.errors import FleetctlError
from fleetctl.state.location import child_env

MARK = "FLEETCTL_GUARD"
DONE = b"done\n"
CANCELED = b"canceled\n"
THEN_TIMEOUT_S = 120.0  # the ``then`` command bounds itself; this only stops one that hangs
READY = b"ready\n"
READY_TIMEOUT_S = 10.0
ROUNDS = 3  # scans for marked processes while stopping them (Ansible may fork meanwhile)


class GuardError(FleetctlError):
    """The watchdog could not be started: the run does not start either."""


class OrphanGuard:
    """A context manager: ``envvars`` marks the processes the watchdog stops if we die inside it."""

    def __init__(self, grace: float = 5.0, then: Sequence[str] = ()) -> None:
        self.token = secrets.token_hex(8)
        self.grace = grace
        self.then = list(then)
        # Set on a cancel: leaving then stops every marked process still running, as a dead parent
        # would, since Ansible's async tasks detach from ansible-playbook and outlive its tree
        # (``then`` is left to the parent, which is alive to report it).
        self.stop_on_exit = False
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def envvars(self) -> dict[str, str]:
        return {MARK: self.token}

    def __enter__(self) -> OrphanGuard:
        # No secret of fleetctl's for the watchdog, nor the cleanup it runs (``then``).
        env = {**{k: v for k, v in os.environ.items() if k != MARK}, **child_env()}
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C or a closed terminal must not take the watchdog down
            # together with the fleetctl it watches.
            start_new_session=True,
        )
        try:
            self._await_ready(self._proc)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            raise
        return self

    def command(self) -> list[str]:
        # -P: the current directory is not put first on sys.path (nothing there may stand in for
        # fleetctl); PYTHONPATH still applies, as it did to this process.
        argv = [sys.executable, "-P", "-m", "fleetctl.orphan_guard", self.token, "--grace", str(self.grace)]
        return argv + (["--then", json.dumps(self.then)] if self.then else [])

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for the watchdog's READY line: a watchdog that cannot start (a broken install, a
        missing psutil) must stop the run before it starts, not leave it unguarded silently."""
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        if line == READY:
            proc.stdout.close()  # the watchdog has pointed its stdout and stderr at /dev/null
            proc.stderr.close()
            return
        if not ready:
            raise GuardError(f"the run's watchdog (python -m fleetctl.orphan_guard) did not start within "
                             f"{READY_TIMEOUT_S:.0f} s: not starting ansible-playbook unguarded")
        proc.wait(timeout=READY_TIMEOUT_S)
        lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit {proc.returncode}"
        raise GuardError(f"the run's watchdog (python -m fleetctl.orphan_guard) failed to start: {why}; "
                         "not starting ansible-playbook unguarded")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        # A clean exit: the run's processes have ended. An exception (a KeyboardInterrupt with no
        # handler, an adapter error) or a cancel may have left them running: the watchdog stops them.
        with contextlib.suppress(OSError):
            if exc_type is None:
                proc.stdin.write(CANCELED if self.stop_on_exit else DONE)
            proc.stdin.close()
        try:
            # stop_marked may take ROUNDS x (grace + 2 s) when Ansible forks while being stopped:
            # leaving earlier would free the run's locks while its processes still run.
            proc.wait(timeout=ROUNDS * (self.grace + 2) + 10 + (THEN_TIMEOUT_S if self.then else 0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def marked_processes(token: str) -> list[Any]:
    """Every live process whose environment carries ``FLEETCTL_GUARD=token`` (psutil.Process)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(MARK) == token:
                found.append(proc)
    return found


def stop_marked(token: str, grace: float, rounds: int = ROUNDS) -> int:
    """SIGTERM every marked process, SIGKILL what is left after ``grace`` seconds; rescan, since
    Ansible may fork while being stopped. Returns how many processes were signalled."""
    import psutil

    signalled: set[int] = set()
    for _ in range(rounds):
        procs = marked_processes(token)
        if not procs:
            break
        signalled.update(p.pid for p in procs)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=2)
    return len(signalled)


def watch(stream: IO[bytes], token: str, grace: float, then: Sequence[str] = ()) -> int:
    """Block until ``stream`` ends; stop the marked processes unless it said ``done`` first; then,
    unless the parent said ``canceled`` (it runs ``then`` itself), run ``then``."""
    said = stream.read()
    if said == DONE:
        return 0
    stop_marked(token, grace)
    if then and said != CANCELED:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(list(then), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=THEN_TIMEOUT_S, check=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetctl.orphan_guard")
    parser.add_argument("token")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--then", type=json.loads, default=[], help="a JSON list: argv to run after stopping")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    import psutil  # noqa: F401 - stopping processes needs it: fail now, while the parent listens

    _report_ready()
    then = [str(a) for a in args.then] if isinstance(args.then, list) else []
    return watch(sys.stdin.buffer, args.token, args.grace, then)


def _report_ready() -> None:
    """Tell the parent we are running, then let go of the pipes it reads (it closes them)."""
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
