"""What the remediation integration tests read back: a state database's remediation, step, lifecycle
and drain records (read-only, through sqlite3, while a loop may be writing), and a simulated fleet of
real agents started on a free port block."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from conftest import FLEET_AGENT, free_port_block


class Records:
    """The records of one state database (SQLite); empty while it does not exist yet."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # a table the loop has not created yet
            return []
        finally:
            conn.close()

    def remediations(self, host: str) -> list[tuple[Any, ...]]:
        """(id, state, outcome, kind) of ``host``'s remediations, oldest first."""
        return self.query("SELECT id, state, outcome, kind FROM remediations WHERE host = ? "
                          "ORDER BY started_at", host)

    def steps(self, rid: str) -> list[tuple[str, str]]:
        rows = self.query("SELECT step, phase FROM remediation_steps WHERE remediation = ? ORDER BY id", rid)
        return [(s, p) for s, p in rows]

    def lifecycle(self, host: str) -> list[tuple[str, str]]:
        rows = self.query("SELECT from_state, to_state FROM lifecycle_audit WHERE host = ? ORDER BY id", host)
        return [(f, t) for f, t in rows]

    def audit(self, host: str) -> list[str]:
        return [t for (t,) in self.query("SELECT to_state FROM host_audit WHERE host = ? ORDER BY id", host)]


def sim_agents(tmp: Path, scenario: str, lo: int, hi: int, *args: str) -> Generator[int, None, None]:
    """A 3-host sim fleet over ``scenario`` sampling every second; yields its first port (stopped when
    the generator is closed). ``args``: more sim-fleet options (``--write-inventory``)."""
    (tmp / "scenario.yaml").write_text(scenario)
    (tmp / "agent.yaml").write_text("collector_timeout_s: 0.5\n")
    for _ in range(5):
        port = free_port_block(3, lo, hi)
        proc = subprocess.Popen([str(FLEET_AGENT), "sim-fleet", "--hosts", "3", "--base-port", str(port),
                                 "--scenario", str(tmp / "scenario.yaml"), "--interval", "1",
                                 "--config", str(tmp / "agent.yaml"), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().startswith("ready:"):
            try:
                yield port
            finally:
                proc.terminate()
                proc.wait(10)
            return
        proc.wait(10)  # a port taken between the check and the bind: another block
    raise AssertionError("the sim fleet never started")


def sandbox_env(base: dict[str, str], tmp: Path, db: Path, inventory: Path) -> dict[str, str]:
    """fleetctl's environment for a loop run as user sre1 with everything under ``tmp``."""
    env = {k: v for k, v in base.items() if not k.startswith(("ANSIBLE_", "FLEETCTL_"))}
    return {**env, "FLEETCTL_DB": str(db), "FLEETCTL_INVENTORY": str(inventory),
            "FLEETCTL_CACHE_DIR": str(tmp / "cache"), "HOME": str(tmp), "USER": "sre1", "SUDO_USER": "sre1",
            # sre1 is no account here: Ansible's "~" paths would not expand (async jobs, temp files)
            "ANSIBLE_ASYNC_DIR": str(tmp / "async"), "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
            "ANSIBLE_REMOTE_TMP": str(tmp / "ansible-remote")}


__all__: Sequence[str] = ("Records", "sandbox_env", "sim_agents")
