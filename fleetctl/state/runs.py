"""Provision run records in the state database.

A run row is written when the run starts (status ``running``), its per-host results are replaced
on every heartbeat, and the final status is written in one transaction at the end. A process that
dies without finishing (SIGKILL, power loss) leaves ``running`` behind: readers see it as
``interrupted`` once its pid is gone (same machine) or its heartbeat is stale, and ``reap``
writes that down.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetctl.runner import HostResult
from fleetctl.state.db import Connection, Row, transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS provision_runs (
        id TEXT PRIMARY KEY,
        "user" TEXT NOT NULL,          -- quoted: a reserved word in PostgreSQL
        machine TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        heartbeat_at TEXT NOT NULL,
        inventory TEXT NOT NULL,
        pattern TEXT NOT NULL,
        playbook TEXT NOT NULL,
        options TEXT NOT NULL,
        status TEXT NOT NULL,
        artifacts TEXT,
        message TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS provision_runs_started ON provision_runs (started_at)",
    """CREATE TABLE IF NOT EXISTS provision_run_hosts (
        run_id TEXT NOT NULL REFERENCES provision_runs (id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (run_id, host)
    )""",
)

STATUSES = ("running", "successful", "failed", "canceled", "interrupted")
FINAL_STATUSES = STATUSES[1:]

# A live run beats every few seconds; one silent this long is dead even if we cannot see its pid.
HEARTBEAT_STALE = timedelta(minutes=2)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent invocations."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def this_machine() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@dataclass
class RunRecord:
    id: str
    user: str
    machine: str
    pid: int
    started_at: str
    heartbeat_at: str
    inventory: str
    pattern: str
    playbook: str
    options: dict[str, Any]
    status: str = "running"
    ended_at: str | None = None
    artifacts: str | None = None
    message: str | None = None
    hosts: list[HostResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "machine": self.machine,
            "pid": self.pid,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "inventory": self.inventory,
            "pattern": self.pattern,
            "playbook": self.playbook,
            "options": self.options,
            "status": self.status,
            "artifacts": self.artifacts,
            "message": self.message,
            "hosts": [h.to_dict() for h in self.hosts],
        }


def connect(path: Any = None) -> Connection:
    from fleetctl.state import db

    return db.connect(path, schema=SCHEMA)


def is_dead(record: RunRecord, *, now: datetime | None = None) -> bool:
    """A ``running`` record whose process is gone."""
    if record.status != "running":
        return False
    now = now or datetime.now(UTC)
    if now - datetime.fromisoformat(record.heartbeat_at) > HEARTBEAT_STALE:
        return True
    return record.machine == this_machine() and not pid_alive(record.pid)


def start(conn: Connection, record: RunRecord) -> None:
    with transaction(conn):
        conn.execute(
            'INSERT INTO provision_runs (id, "user", machine, pid, started_at, heartbeat_at, inventory,'
            " pattern, playbook, options, status, artifacts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.id, record.user, record.machine, record.pid, record.started_at,
                record.heartbeat_at, record.inventory, record.pattern, record.playbook,
                json.dumps(record.options, sort_keys=True), record.status, record.artifacts,
            ),
        )
        _replace_hosts(conn, record.id, record.hosts)


def _replace_hosts(conn: Connection, run_id: str, hosts: Sequence[HostResult]) -> None:
    conn.execute("DELETE FROM provision_run_hosts WHERE run_id = ?", (run_id,))
    conn.executemany(
        "INSERT INTO provision_run_hosts (run_id, host, result) VALUES (?,?,?)",
        [(run_id, h.host, json.dumps(h.to_dict(), sort_keys=True)) for h in hosts],
    )


def heartbeat(conn: Connection, run_id: str, hosts: Sequence[HostResult]) -> None:
    """Proof of life plus the per-host results so far (what an interrupted run keeps)."""
    with transaction(conn):
        conn.execute(
            "UPDATE provision_runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
            (now_iso(), run_id),
        )
        _replace_hosts(conn, run_id, hosts)


def finish(
    conn: Connection,
    run_id: str,
    status: str,
    hosts: Sequence[HostResult],
    *,
    message: str | None = None,
) -> None:
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final run status: {status!r}")
    with transaction(conn):
        conn.execute(
            "UPDATE provision_runs SET status = ?, ended_at = ?, heartbeat_at = ?, message = ?"
            " WHERE id = ?",
            (status, now_iso(), now_iso(), message, run_id),
        )
        _replace_hosts(conn, run_id, hosts)


def _record(row: Row, hosts: list[HostResult]) -> RunRecord:
    return RunRecord(
        id=row["id"],
        user=row["user"],
        machine=row["machine"],
        pid=row["pid"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        inventory=row["inventory"],
        pattern=row["pattern"],
        playbook=row["playbook"],
        options=json.loads(row["options"]),
        status=row["status"],
        ended_at=row["ended_at"],
        artifacts=row["artifacts"],
        message=row["message"],
        hosts=hosts,
    )


def _read_only(conn: Connection) -> bool:
    from fleetctl.state.db import read_only

    return read_only(conn)


def _shown(record: RunRecord) -> RunRecord:
    """A dead run that could not be written down (read-only database) is shown as interrupted."""
    if is_dead(record):
        record.status = "interrupted"
        record.ended_at = record.ended_at or record.heartbeat_at
    return record


def reap(conn: Connection) -> list[str]:
    """Mark dead ``running`` runs ``interrupted``; return their ids. A database written by a newer
    fleetctl is left as it is (readers show such runs as interrupted without writing).

    The first read, outside the writer lock, only says whether there is anything to do: a run may
    beat (or finish) between it and the write, from another process or machine. So the decision is
    made again inside the transaction, and the UPDATE also names the heartbeat it judged."""
    query = "SELECT * FROM provision_runs WHERE status = 'running'"
    rows = conn.execute(query).fetchall()
    dead = [row["id"] for row in rows if is_dead(_record(row, []))]
    if not dead or _read_only(conn):
        return dead
    with transaction(conn):
        rows = conn.execute(query).fetchall()
        judged = [(row["id"], row["heartbeat_at"]) for row in rows if is_dead(_record(row, []))]
        conn.executemany(
            "UPDATE provision_runs SET status = 'interrupted', ended_at = heartbeat_at,"
            " message = 'the fleetctl process ended without finishing the run'"
            " WHERE id = ? AND status = 'running' AND heartbeat_at = ?",
            judged,
        )
    return [run_id for run_id, _ in judged]


def status_of(conn: Connection, run_id: str) -> str | None:
    """The stored status of the run with exactly this id (no prefix match, no reaping)."""
    row = conn.execute("SELECT status FROM provision_runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else str(row["status"])


def _hosts(conn: Connection, run_id: str) -> list[HostResult]:
    rows = conn.execute(
        "SELECT result FROM provision_run_hosts WHERE run_id = ? ORDER BY host", (run_id,)
    ).fetchall()
    return [HostResult.from_dict(json.loads(row["result"])) for row in rows]


def get(conn: Connection, run_id: str) -> RunRecord | None:
    """One run by id or by a unique id prefix."""
    reap(conn)
    rows = conn.execute(
        "SELECT * FROM provision_runs WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 2",
        (run_id, _like_prefix(run_id)),
    ).fetchall()
    exact = [row for row in rows if row["id"] == run_id]
    if exact:
        rows = exact
    if len(rows) != 1:
        return None
    return _shown(_record(rows[0], _hosts(conn, rows[0]["id"])))


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_runs(
    conn: Connection, *, limit: int = 20, status: str | None = None
) -> list[RunRecord]:
    """Newest first, with per-host results."""
    reap(conn)
    query = "SELECT * FROM provision_runs"
    params: list[Any] = []
    if status:
        query += " WHERE status = ?"
        params.append(status)
    query += " ORDER BY started_at DESC, id DESC LIMIT ?"
    params.append(limit)
    return [_shown(_record(row, _hosts(conn, row["id"]))) for row in conn.execute(query, params).fetchall()]


def summarize(hosts: Sequence[HostResult]) -> Mapping[str, int]:
    """How many hosts in each state."""
    counts: dict[str, int] = {}
    for host in hosts:
        counts[host.state] = counts.get(host.state, 0) + 1
    return counts
