"""Each host's burn-in results: one row per host per ``fleetctl burn-in`` run, kept as history.

A row says when, at which DCGM level, the outcome (pass, fail, incomplete) and why, every check with
its own outcome, the checks that could not run, what the operator allowed (``--allow-missing``,
``--skip-provision-check``), DCGM's version and its per-test, per-GPU table. The table is this
module's (``SCHEMA``, passed to :func:`fleetctl.state.db.connect`), in SQL that SQLite and
PostgreSQL both read: ``?`` placeholders, no reserved column names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetctl.state.db import Connection, Row, transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS burn_in_results (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id          TEXT NOT NULL,
        host            TEXT NOT NULL,
        started_at      REAL NOT NULL,
        ended_at        REAL NOT NULL,
        actor           TEXT NOT NULL,
        level           INTEGER NOT NULL,
        status          TEXT NOT NULL,
        reason          TEXT NOT NULL,
        checks          TEXT NOT NULL,
        not_run         TEXT NOT NULL,
        allowed         TEXT NOT NULL,
        dcgm_version    TEXT,
        per_gpu         TEXT NOT NULL,
        findings        TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS burn_in_results_host ON burn_in_results (host, id)",
)


@dataclass(frozen=True)
class CheckRecord:
    """One check of a burn-in: ``provision``, ``agent`` or ``dcgm``, and its outcome
    (pass, warn, fail, not_run) with a one-line detail."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class BurnInRecord:
    """One host's result of one burn-in run, as stored."""

    run_id: str
    host: str
    started_at: float
    ended_at: float
    actor: str
    level: int
    status: str  # pass, fail, incomplete
    reason: str
    checks: tuple[CheckRecord, ...] = ()
    not_run: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()  # e.g. "missing dcgm", "skip provision check"
    dcgm_version: str | None = None
    per_gpu: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # GPU -> test -> status
    findings: tuple[str, ...] = ()  # DCGM's results that are not a pass, one line each

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "host": self.host, "started_at": self.started_at,
                "ended_at": self.ended_at, "actor": self.actor, "level": self.level, "status": self.status,
                "reason": self.reason, "checks": [c.to_dict() for c in self.checks],
                "not_run": list(self.not_run), "allowed": list(self.allowed),
                "dcgm_version": self.dcgm_version,
                "per_gpu": {g: dict(t) for g, t in self.per_gpu.items()}, "findings": list(self.findings)}


def record(conn: Connection, results: Iterable[BurnInRecord]) -> None:
    """Store ``results`` in one transaction (all or none)."""
    rows = [(r.run_id, r.host, r.started_at, r.ended_at, r.actor, r.level, r.status, r.reason,
             json.dumps([c.to_dict() for c in r.checks]), json.dumps(list(r.not_run)),
             json.dumps(list(r.allowed)), r.dcgm_version,
             json.dumps({g: dict(t) for g, t in r.per_gpu.items()}), json.dumps(list(r.findings)))
            for r in results]
    if not rows:
        return
    with transaction(conn):
        conn.executemany(
            "INSERT INTO burn_in_results (run_id, host, started_at, ended_at, actor, level, status, reason, "
            "checks, not_run, allowed, dcgm_version, per_gpu, findings) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows)


def _json(text: object, default: Any) -> Any:
    try:
        value = json.loads(str(text))
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _record(row: Row) -> BurnInRecord:
    checks = tuple(CheckRecord(str(c.get("name", "?")), str(c.get("status", "?")), str(c.get("detail", "")))
                   for c in _json(row["checks"], []) if isinstance(c, dict))
    per_gpu = {str(g): {str(t): str(s) for t, s in tests.items()}
               for g, tests in _json(row["per_gpu"], {}).items() if isinstance(tests, dict)}
    return BurnInRecord(
        run_id=row["run_id"], host=row["host"], started_at=float(row["started_at"]),
        ended_at=float(row["ended_at"]), actor=row["actor"], level=int(row["level"]), status=row["status"],
        reason=row["reason"], checks=checks, not_run=tuple(map(str, _json(row["not_run"], []))),
        allowed=tuple(map(str, _json(row["allowed"], []))), dcgm_version=row["dcgm_version"],
        per_gpu=per_gpu, findings=tuple(map(str, _json(row["findings"], []))))


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):  # stay under SQLite's bound-parameter limit
        yield items[i:i + size]


def last_many(conn: Connection, hosts: Iterable[str]) -> dict[str, BurnInRecord]:
    """Each host's latest burn-in result; hosts never burned in are absent."""
    found: dict[str, BurnInRecord] = {}
    for chunk in _chunks(list(dict.fromkeys(hosts))):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT * FROM burn_in_results WHERE id IN (SELECT MAX(id) FROM burn_in_results "  # noqa: S608
            f"WHERE host IN ({marks}) GROUP BY host)", list(chunk)).fetchall()
        for row in rows:
            found[row["host"]] = _record(row)
    return found


def history(conn: Connection, host: str, limit: int = 20) -> list[BurnInRecord]:
    """The host's burn-in results, newest first (at most ``limit``)."""
    rows = conn.execute("SELECT * FROM burn_in_results WHERE host = ? ORDER BY id DESC LIMIT ?",
                        (host, limit)).fetchall()
    return [_record(r) for r in rows]


def of_run(conn: Connection, run_id: str) -> list[BurnInRecord]:
    """Every host's result of one burn-in run, by host name."""
    rows = conn.execute("SELECT * FROM burn_in_results WHERE run_id = ? ORDER BY host", (run_id,)).fetchall()
    return [_record(r) for r in rows]
