"""What the remediation loop remembers: observations, remediations with a per-step audit, and the lease.

- ``remediation_observations``: one row per host per round (the hysteresis reads them back after a
  restart), pruned to the policy's longest window;
- ``remediations``: one row per remediation started (its host, the problem action, the steps, the
  index of the next step and whether that step has started, its state: running, done, failed,
  quarantined, interrupted), and ``remediation_steps``: every step recorded as it starts and as it
  ends, so a loop killed at any step leaves a record of exactly where it was;
- ``remediation_lease``: one loop per state database. The lease is taken and renewed inside one
  writing transaction with an expiry; a holder whose process is gone on this machine, or whose lease
  expired, can be taken over.

Portable SQL (SQLite and PostgreSQL through :mod:`fleetctl.state.db`): ``?`` placeholders,
``ON CONFLICT ... DO UPDATE``, REAL/INTEGER/TEXT, no reserved words as column names.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleetctl.errors import StateConflict
from fleetctl.remediate.flap import Started
from fleetctl.remediate.hysteresis import Observation
from fleetctl.state import pg
from fleetctl.state.db import Connection, Row, transaction
from fleetctl.state.runs import pid_alive, this_machine

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS remediation_observations (
        host        TEXT NOT NULL,
        at          REAL NOT NULL,
        status      TEXT NOT NULL,
        actions     TEXT NOT NULL,     -- JSON list
        detail      TEXT,
        PRIMARY KEY (host, at)
    )""",
    """CREATE TABLE IF NOT EXISTS remediations (
        id          TEXT PRIMARY KEY,
        host        TEXT NOT NULL,
        action      TEXT NOT NULL,     -- the problem action it answers
        kind        TEXT NOT NULL,     -- repair, quarantine, rma
        steps       TEXT NOT NULL,     -- JSON list
        chips       TEXT NOT NULL,     -- JSON list of chip indexes the problem named
        next_step   INTEGER NOT NULL,  -- index into steps of the step to run next
        step_open   INTEGER NOT NULL,  -- 1: next_step started and was not seen to end
        state       TEXT NOT NULL,     -- running, failing, done, failed, quarantined, interrupted
        started_at  REAL NOT NULL,
        ended_at    REAL,
        reason      TEXT,
        outcome     TEXT,
        actor       TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS remediations_host ON remediations (host, started_at)",
    """CREATE TABLE IF NOT EXISTS remediation_steps (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        remediation TEXT NOT NULL,
        host        TEXT NOT NULL,
        step_index  INTEGER NOT NULL,
        step        TEXT NOT NULL,
        phase       TEXT NOT NULL,     -- started, ended, failed, skipped
        at          REAL NOT NULL,
        detail      TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS remediation_steps_rem ON remediation_steps (remediation, id)",
    """CREATE TABLE IF NOT EXISTS remediation_lease (
        name        TEXT PRIMARY KEY,
        holder      TEXT NOT NULL,
        username    TEXT NOT NULL,
        machine     TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        since       REAL NOT NULL,
        expires_at  REAL NOT NULL
    )""",
)

RUNNING, DONE, FAILED, QUARANTINED, INTERRUPTED = "running", "done", "failed", "quarantined", "interrupted"
# A step failed and its consequence (quarantine, or failed for a drain) is decided and recorded with
# that failure, not yet carried out: a resume carries it out and never runs the step again.
FAILING = "failing"
OPEN_STATES = (RUNNING, INTERRUPTED, FAILING)
LEASE_NAME = "remediate"


@dataclass(frozen=True)
class RemediationRecord:
    id: str
    host: str
    action: str
    kind: str
    steps: tuple[str, ...]
    chips: tuple[int, ...]
    next_step: int
    step_open: bool
    state: str
    started_at: float
    ended_at: float | None = None
    reason: str | None = None
    outcome: str | None = None
    actor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "action": self.action, "kind": self.kind,
                "steps": list(self.steps), "chips": list(self.chips), "next_step": self.next_step,
                "step_open": self.step_open, "state": self.state, "started_at": self.started_at,
                "ended_at": self.ended_at, "reason": self.reason, "outcome": self.outcome,
                "actor": self.actor}


@dataclass(frozen=True)
class StepEntry:
    remediation: str
    host: str
    step_index: int
    step: str
    phase: str
    at: float
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"remediation": self.remediation, "host": self.host, "step_index": self.step_index,
                "step": self.step, "phase": self.phase, "at": self.at, "detail": self.detail}


def _record(row: Row) -> RemediationRecord:
    return RemediationRecord(row["id"], row["host"], row["action"], row["kind"],
                             tuple(json.loads(row["steps"])), tuple(json.loads(row["chips"])),
                             int(row["next_step"]), bool(row["step_open"]), row["state"],
                             float(row["started_at"]), row["ended_at"], row["reason"], row["outcome"],
                             row["actor"])


def new_id() -> str:
    return f"r-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def db_now(conn: Connection) -> float:
    """The database's clock (epoch seconds): PostgreSQL's, shared by every machine that uses it, so
    that a lease expiry written by one machine is compared on the same clock by another; SQLite's
    database is on this machine, whose clock it is."""
    if isinstance(conn, pg.PgConnection):
        row = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS now").fetchone()
        return float(row["now"])
    return time.time()


class LeaseLost(StateConflict):
    """This loop no longer holds the lease: another loop owns the remediation records now."""


class SqlStore:
    """The loop's store (:class:`fleetctl.remediate.loop.Store`) over a state connection.

    ``holder``: the lease holder id of the loop that writes through it. Every write to a remediation
    then checks, in its own transaction, that this loop still holds the lease (:class:`LeaseLost`
    when not, nothing written), so a loop presumed dead never writes over records another owns."""

    def __init__(self, conn: Connection, *, holder: str | None = None) -> None:
        self.conn, self.holder = conn, holder

    def _fence(self) -> None:
        if self.holder is None:
            return
        row = self.conn.execute("SELECT holder FROM remediation_lease WHERE name = ?",
                                (LEASE_NAME,)).fetchone()
        if row is None or row["holder"] != self.holder:
            raise LeaseLost(f"the remediation lease is no longer this loop's ({self.holder}): "
                            f"{'held by ' + row['holder'] if row else 'released'}; nothing written")

    # --- observations ---------------------------------------------------------------------------
    def record_observations(self, observations: Mapping[str, Observation]) -> None:
        with transaction(self.conn):
            self.conn.executemany(
                """INSERT INTO remediation_observations (host, at, status, actions, detail)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (host, at) DO UPDATE SET status = excluded.status,
                       actions = excluded.actions, detail = excluded.detail""",
                [(h, o.at, o.status, json.dumps(list(o.actions)), o.detail) for h, o in observations.items()])

    def observations(self, since: float) -> dict[str, list[Observation]]:
        """Every host's observations at or after ``since``, oldest first."""
        out: dict[str, list[Observation]] = {}
        rows = self.conn.execute("SELECT host, at, status, actions, detail FROM remediation_observations "
                                 "WHERE at >= ? ORDER BY host, at", (since,))
        for r in rows:
            out.setdefault(r["host"], []).append(
                Observation(float(r["at"]), r["status"], tuple(json.loads(r["actions"])), r["detail"] or ""))
        return out

    def prune(self, before: float) -> None:
        with transaction(self.conn):
            self.conn.execute("DELETE FROM remediation_observations WHERE at < ?", (before,))

    # --- remediations ---------------------------------------------------------------------------
    def start(self, host: str, action: str, kind: str, steps: Sequence[str], chips: Sequence[int], *,
              reason: str, actor: str, at: float) -> RemediationRecord:
        rec = RemediationRecord(new_id(), host, action, kind, tuple(steps), tuple(chips), 0, False, RUNNING,
                                at, reason=reason, actor=actor)
        with transaction(self.conn):
            self._fence()
            self.conn.execute(
                "INSERT INTO remediations (id, host, action, kind, steps, chips, next_step, step_open, "
                "state, started_at, reason, actor) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?)",
                (rec.id, host, action, kind, json.dumps(list(steps)), json.dumps(list(chips)), RUNNING, at,
                 reason, actor))
        return rec

    def get(self, rid: str) -> RemediationRecord:
        row = self.conn.execute("SELECT * FROM remediations WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise StateConflict(f"remediation {rid}: no such record")
        return _record(row)

    def for_host(self, host: str, limit: int) -> list[RemediationRecord]:
        """``host``'s remediations, newest first, at most ``limit``."""
        rows = self.conn.execute("SELECT * FROM remediations WHERE host = ? "
                                 "ORDER BY started_at DESC, id DESC LIMIT ?", (host, limit)).fetchall()
        return [_record(r) for r in rows]

    def open(self) -> list[RemediationRecord]:
        """Remediations that have not ended (running when a loop died, or interrupted), oldest first."""
        rows = self.conn.execute("SELECT * FROM remediations WHERE state IN (?, ?, ?) "
                                 "ORDER BY started_at, id", OPEN_STATES).fetchall()
        return [_record(r) for r in rows]

    def recent(self, limit: int = 50) -> list[RemediationRecord]:
        rows = self.conn.execute("SELECT * FROM remediations ORDER BY started_at DESC, id DESC LIMIT ?",
                                 (limit,)).fetchall()
        return [_record(r) for r in reversed(rows)]

    def history(self, since: float) -> list[Started]:
        """Remediations started at or after ``since`` (the flap window), as the planner reads them:
        ``ended_at`` only for one that returned its host to service."""
        rows = self.conn.execute("SELECT host, kind, state, started_at, ended_at FROM remediations "
                                 "WHERE started_at >= ? OR state IN (?, ?, ?) ORDER BY started_at",
                                 (since, *OPEN_STATES)).fetchall()
        return [Started(r["host"], float(r["started_at"]), r["kind"],
                        float(r["ended_at"]) if r["state"] == DONE and r["ended_at"] is not None else None)
                for r in rows]

    def step_started(self, rec: RemediationRecord, index: int, *, detail: str | None = None) -> None:
        self._step(rec, index, "started", detail, next_step=index, step_open=1)

    def step_ended(self, rec: RemediationRecord, index: int, *, ok: bool, detail: str | None = None,
                   phase: str | None = None, outcome: str | None = None) -> None:
        """A step's end. A failure (``ok`` False) records, in the same transaction, the remediation
        as ``failing`` with ``outcome`` (why), so a loop killed before it quarantines the host
        resumes by quarantining it, never by running the failed step again."""
        self._step(rec, index, phase or ("ended" if ok else "failed"), detail,
                   next_step=index + 1 if ok else index, step_open=0, state=RUNNING if ok else FAILING,
                   outcome=None if ok else outcome or f"{rec.steps[index]} failed: {detail}")

    def _step(self, rec: RemediationRecord, index: int, phase: str, detail: str | None, *, next_step: int,
              step_open: int, state: str = RUNNING, outcome: str | None = None) -> None:
        now = time.time()
        with transaction(self.conn):
            self._fence()
            self.conn.execute("UPDATE remediations SET next_step = ?, step_open = ?, state = ?, "
                              "outcome = COALESCE(?, outcome) WHERE id = ?",
                              (next_step, step_open, state, outcome, rec.id))
            self.conn.execute(
                "INSERT INTO remediation_steps (remediation, host, step_index, step, phase, at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.host, index, rec.steps[index], phase, now, detail))

    def finish(self, rec: RemediationRecord, state: str, outcome: str, *, at: float | None = None) -> None:
        ended = None if state == INTERRUPTED else (time.time() if at is None else at)
        with transaction(self.conn):
            self._fence()
            self.conn.execute("UPDATE remediations SET state = ?, ended_at = ?, outcome = ? WHERE id = ?",
                              (state, ended, outcome, rec.id))

    def steps(self, rid: str | None = None, host: str | None = None) -> list[StepEntry]:
        """The per-step audit, oldest first, for one remediation, one host or all."""
        where, args = ("WHERE remediation = ?", (rid,)) if rid else (("WHERE host = ?", (host,)) if host
                                                                     else ("", ()))
        rows = self.conn.execute(f"SELECT * FROM remediation_steps {where} ORDER BY id", args).fetchall()  # noqa: S608
        return [StepEntry(r["remediation"], r["host"], int(r["step_index"]), r["step"], r["phase"],
                          float(r["at"]), r["detail"]) for r in rows]


# --- the lease: one loop per state database ---------------------------------------------------------


@dataclass(frozen=True)
class LeaseHolder:
    id: str
    user: str
    machine: str = field(default_factory=this_machine)
    pid: int = 0


@dataclass(frozen=True)
class Lease:
    holder: LeaseHolder
    since: float
    expires_at: float

    def describe(self) -> str:
        h = self.holder
        since = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{h.user}@{h.machine} pid {h.pid} since {since}"

    def live(self, now: float) -> bool:
        if self.expires_at <= now:
            return False
        return not (self.holder.machine == this_machine() and not pid_alive(self.holder.pid))


class LeaseHeld(StateConflict):
    """Another remediation loop holds this state database (exit 1: refused)."""


def _lease(row: Row) -> Lease:
    return Lease(LeaseHolder(row["holder"], row["username"], row["machine"], int(row["pid"])),
                 float(row["since"]), float(row["expires_at"]))


def current_lease(conn: Connection) -> Lease | None:
    row = conn.execute("SELECT * FROM remediation_lease WHERE name = ?", (LEASE_NAME,)).fetchone()
    return _lease(row) if row else None


def acquire_lease(conn: Connection, holder: LeaseHolder, *, ttl_s: float,
                  now: float | None = None) -> Lease | None:
    """Take the lease (or renew it when ``holder`` has it); :class:`LeaseHeld` naming the live holder.
    Returns the lease taken over from a holder that is gone, if any. The expiry is written and
    compared on the database's clock (:func:`db_now`; ``now`` only for tests)."""
    with transaction(conn):
        now = db_now(conn) if now is None else now
        found = current_lease(conn)
        if found is not None and found.holder.id != holder.id and found.live(now):
            raise LeaseHeld(f"another remediation loop holds the state database: {found.describe()} "
                            f"(lease until {datetime.fromtimestamp(found.expires_at, UTC):%H:%M:%SZ})")
        since = found.since if found is not None and found.holder.id == holder.id else now
        conn.execute(
            """INSERT INTO remediation_lease (name, holder, username, machine, pid, since, expires_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, username = excluded.username,
                   machine = excluded.machine, pid = excluded.pid, since = excluded.since,
                   expires_at = excluded.expires_at""",
            (LEASE_NAME, holder.id, holder.user, holder.machine, holder.pid, since, now + ttl_s))
    return found if found is not None and found.holder.id != holder.id else None


def renew_lease(conn: Connection, holder: LeaseHolder, *, ttl_s: float, now: float | None = None) -> None:
    """Push the expiry; :class:`LeaseHeld` when another loop took the lease meanwhile (even one that
    has since gone: what this loop did in between is unknown to it)."""
    with transaction(conn):
        found = current_lease(conn)
        if found is None or found.holder.id != holder.id:
            raise LeaseHeld("the lease was taken over by "
                            f"{found.describe() if found else 'another loop, then released'}")
        now = db_now(conn) if now is None else now
        conn.execute("UPDATE remediation_lease SET expires_at = ? WHERE name = ? AND holder = ?",
                     (now + ttl_s, LEASE_NAME, holder.id))


def release_lease(conn: Connection, holder: LeaseHolder) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM remediation_lease WHERE name = ? AND holder = ?", (LEASE_NAME, holder.id))


def chips_of(values: Iterable[int | None]) -> tuple[int, ...]:
    return tuple(sorted({v for v in values if v is not None}))
