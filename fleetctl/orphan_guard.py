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

Why not ``PR_SET_PDEATHSIG``: it is Linux-only, fires when the *thread* that forked exits
(ansible-runner forks from its own thread), reaches only ansible-playbook (not the ``setsid()``
workers) and cannot escalate to SIGKILL once its sender is gone. A pipe closes on every platform
when its last holder dies, and the environment marks the whole tree, reparented or not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from types import TracebackType
from typing import IO, Any

MARK = "FLEETCTL_GUARD"
DONE = b"done\n"
ROUNDS = 3  # scans for marked processes while stopping them (Ansible may fork meanwhile)


class OrphanGuard:
    """A context manager: ``envvars`` marks the processes the watchdog stops if we die inside it."""

    def __init__(self, grace: float = 5.0) -> None:
        self.token = secrets.token_hex(8)
        self.grace = grace
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def envvars(self) -> dict[str, str]:
        return {MARK: self.token}

    def __enter__(self) -> OrphanGuard:
        env = {k: v for k, v in os.environ.items() if k != MARK}
        self._proc = subprocess.Popen(
            # -P: the current directory is not put first on sys.path (nothing there may stand in
            # for fleetctl); PYTHONPATH still applies, as it did to this process.
            [sys.executable, "-P", "-m", "fleetctl.orphan_guard", self.token, "--grace", str(self.grace)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
            # Its own session: a Ctrl-C or a closed terminal must not take the watchdog down
            # together with the fleetctl it watches.
            start_new_session=True,
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        # A clean exit: the run's processes have ended. An exception (a KeyboardInterrupt with no
        # handler, an adapter error) may have left them running: the watchdog stops them.
        with contextlib.suppress(OSError):
            if exc_type is None:
                proc.stdin.write(DONE)
            proc.stdin.close()
        try:
            # stop_marked may take ROUNDS x (grace + 2 s) when Ansible forks while being stopped:
            # leaving earlier would free the run's locks while its processes still run.
            proc.wait(timeout=ROUNDS * (self.grace + 2) + 10)
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


def watch(stream: IO[bytes], token: str, grace: float) -> int:
    """Block until ``stream`` ends; stop the marked processes unless it said ``done`` first."""
    if stream.read() == DONE:
        return 0
    stop_marked(token, grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetctl.orphan_guard")
    parser.add_argument("token")
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return watch(sys.stdin.buffer, args.token, args.grace)


if __name__ == "__main__":
    sys.exit(main())
