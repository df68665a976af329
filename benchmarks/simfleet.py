"""A simulated fleet (``fleet-agent sim-fleet`` in its own process) for the benchmarks that measure
fleetctl against one; not a benchmark itself."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FLEET_AGENT = str(Path(sys.executable).parent / "fleet-agent")
# Sampled at start, then rarely: on a real fleet sampling is each host's own work, not fleetctl's.
FLEET_INTERVAL_S = 600


def raise_nofile() -> None:
    """Soft open-file limit up to the hard one: one listening socket per simulated host."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_fleet(workdir: Path, hosts: int, base: int, *, ready_within_s: float = 600,
                scenario: str = "healthy") -> tuple[subprocess.Popen[bytes], Path]:
    """``hosts`` simulated agents on ``base``.. (healthy unless ``scenario``, a shipped scenario's name
    or a file, says otherwise) and the inventory it wrote, once ready."""
    inv = workdir / f"fleet-{hosts}.yml"
    logf = workdir / f"fleet-{hosts}.log"
    proc = subprocess.Popen(
        [FLEET_AGENT, "sim-fleet", "--hosts", str(hosts), "--base-port", str(base), "--scenario", scenario,
         "--interval", str(FLEET_INTERVAL_S), "--write-inventory", str(inv)],
        stdout=logf.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=raise_nofile,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + ready_within_s
    while "ready:" not in logf.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"sim-fleet did not start:\n{logf.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return proc, inv


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not end within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
