"""Each host's drain/maintenance state, and an audit log of every change.

    active → cordoned → draining → drained → maintaining → verifying → active
    draining --timeout--> drain_failed (stays cordoned in the scheduler)
    maintaining / verifying --failure--> quarantined (never undrained automatically)

A transition is committed *before* fleetctl acts on it (cordon, provision, uncordon), so a
fleetctl killed at any step leaves a record saying what it was about to do; ``status`` shows it
next to what the scheduler says, and a re-run resumes from it. Each transition appends an audit
row: who, when, reason, from → to.

``reserve`` is the max-unavailable gate: inside one writing transaction (``db.transaction``) it counts the
hosts of the pool that are unavailable (any state but active here, or drained/down according to
the scheduler) and moves the requested hosts to ``cordoned`` only if the total stays within the
limit, so concurrent fleetctl invocations can never exceed it together.

A host with no row is ``active``. A row whose state this fleetctl does not know (a newer fleetctl
wrote it) reads as :attr:`DrainState.UNKNOWN` with the stored text kept: it is shown, counts as
unavailable, and no transition leaves it (``TransitionError``): only the fleetctl that understands
it changes it.
"""

from __future__ import annotations

import enum
import os
import socket
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from fleetctl.errors import FleetctlError, StateConflict
from fleetctl.state.db import Connection, Row, transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS host_state (
        host        TEXT PRIMARY KEY,
        state       TEXT NOT NULL,
        reason      TEXT,
        actor       TEXT,
        updated_at  REAL NOT NULL,
        owner       TEXT,              -- "machine:pid" of the fleetctl working on it (maintain)
        run_id      TEXT               -- the maintain run, if any
    )""",
    """CREATE TABLE IF NOT EXISTS host_audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        host        TEXT NOT NULL,
        at          REAL NOT NULL,
        actor       TEXT NOT NULL,
        from_state  TEXT NOT NULL,
        to_state    TEXT NOT NULL,
        reason      TEXT,
        note        TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS host_audit_host ON host_audit (host, id)",
)


class DrainState(enum.StrEnum):
    """Where a host is in fleetctl's drain/maintenance state machine (not its health)."""

    ACTIVE = "active"
    CORDONED = "cordoned"
    DRAINING = "draining"
    DRAINED = "drained"
    MAINTAINING = "maintaining"
    VERIFYING = "verifying"
    DRAIN_FAILED = "drain_failed"
    QUARANTINED = "quarantined"
    UNKNOWN = "unknown"  # a state a newer fleetctl wrote; HostRecord.stored holds its text


S = DrainState
# Besides the forward path: resuming a failed or interrupted drain (→ draining), re-running
# maintenance on a quarantined host, and undrain (→ active) from any state. Undrain is the escape
# hatch; whether it is allowed (not quarantined without --force, not while a live maintain owns
# the host) is decided by fleetctl.drain before it gets here.
ALLOWED: dict[DrainState, frozenset[DrainState]] = {
    S.ACTIVE: frozenset({S.CORDONED}),
    S.CORDONED: frozenset({S.DRAINING, S.ACTIVE}),
    S.DRAINING: frozenset({S.DRAINED, S.DRAIN_FAILED, S.ACTIVE}),
    S.DRAINED: frozenset({S.MAINTAINING, S.DRAINING, S.ACTIVE}),
    S.MAINTAINING: frozenset({S.VERIFYING, S.QUARANTINED, S.ACTIVE}),
    S.VERIFYING: frozenset({S.ACTIVE, S.QUARANTINED}),
    S.DRAIN_FAILED: frozenset({S.DRAINING, S.ACTIVE}),
    S.QUARANTINED: frozenset({S.MAINTAINING, S.ACTIVE}),
    S.UNKNOWN: frozenset(),
}


class TransitionError(StateConflict):
    """A transition the state machine does not allow, or one that lost a race (exit 1)."""


class BudgetExceeded(FleetctlError):
    """Draining the requested hosts would exceed max-unavailable; the message has the numbers (exit 1:
    refused)."""

    def __init__(self, *, limit: int, pool: int, unavailable: list[str], requested: list[str],
                 scope: str | None = None) -> None:
        self.limit, self.pool, self.unavailable, self.requested = limit, pool, unavailable, requested
        self.scope = scope
        shown = ", ".join(unavailable[:5]) + (" ..." if len(unavailable) > 5 else "")
        where = f" in {scope}" if scope else ""
        super().__init__(
            f"refused: max-unavailable{where} is {limit} of {pool} hosts; "
            f"{len(unavailable)} already unavailable"
            f"{f' ({shown})' if unavailable else ''} + {len(requested)} requested = "
            f"{len(unavailable) + len(requested)}")


@dataclass(frozen=True)
class ScopedLimit:
    """A max-unavailable over part of the fleet (``rack=r07``): at most ``limit`` of ``pool`` out."""

    label: str
    pool: frozenset[str]
    limit: int


@dataclass(frozen=True)
class HostRecord:
    host: str
    state: DrainState
    reason: str | None = None
    actor: str | None = None
    updated_at: float | None = None
    owner: str | None = None
    run_id: str | None = None
    stored: str | None = None  # the stored state text when it is not one this fleetctl knows

    @property
    def label(self) -> str:
        """The state as stored: a known state's name, or the unknown text as it is."""
        return self.stored if self.state is S.UNKNOWN and self.stored else self.state.value

    @property
    def unknown(self) -> bool:
        return self.state is S.UNKNOWN

    def unknown_message(self) -> str:
        return (f"state {self.label!r} is unknown to this fleetctl (a newer fleetctl wrote it); "
                "left alone: use that fleetctl")


@dataclass(frozen=True)
class AuditEntry:
    host: str
    at: float
    actor: str
    from_state: str
    to_state: str
    reason: str | None
    note: str | None


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Whether the fleetctl that owns a host still runs; one on another machine is presumed alive."""
    if not owner:
        return False
    machine, _, pid = owner.rpartition(":")
    if machine != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_KNOWN = {s.value: s for s in DrainState if s is not DrainState.UNKNOWN}


def _row(row: Row) -> HostRecord:
    raw = str(row["state"])
    state = _KNOWN.get(raw, S.UNKNOWN)
    updated = row["updated_at"]
    return HostRecord(row["host"], state, row["reason"], row["actor"],
                      updated if isinstance(updated, int | float) else None, row["owner"], row["run_id"],
                      stored=raw if state is S.UNKNOWN else None)


def get(conn: Connection, host: str) -> HostRecord:
    row = conn.execute("SELECT * FROM host_state WHERE host = ?", (host,)).fetchone()
    return _row(row) if row else HostRecord(host, DrainState.ACTIVE)


def get_many(conn: Connection, hosts: Iterable[str]) -> dict[str, HostRecord]:
    wanted = list(hosts)
    found: dict[str, HostRecord] = {}
    for i in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
        chunk = wanted[i:i + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM host_state WHERE host IN ({marks})", chunk):  # noqa: S608
            found[row["host"]] = _row(row)
    return {h: found.get(h, HostRecord(h, DrainState.ACTIVE)) for h in wanted}


def _write(conn: Connection, host: str, current: HostRecord, to: DrainState, *, actor: str,
           reason: str | None, note: str | None, owner: str | None, run_id: str | None) -> None:
    if current.unknown:
        raise TransitionError(f"{host}: {current.unknown_message()}")
    if to is not current.state and to not in ALLOWED[current.state]:
        raise TransitionError(f"{host}: cannot go from {current.state} to {to}")
    now = time.time()
    keep_reason = reason if reason is not None else current.reason
    conn.execute(
        """INSERT INTO host_state (host, state, reason, actor, updated_at, owner, run_id)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (host) DO UPDATE SET state = excluded.state, reason = excluded.reason,
               actor = excluded.actor, updated_at = excluded.updated_at, owner = excluded.owner,
               run_id = excluded.run_id""",
        (host, to.value, None if to is S.ACTIVE else keep_reason, actor, now,
         None if to is S.ACTIVE else owner, None if to is S.ACTIVE else run_id),
    )
    conn.execute(
        "INSERT INTO host_audit (host, at, actor, from_state, to_state, reason, note) VALUES (?,?,?,?,?,?,?)",
        (host, now, actor, current.state.value, to.value, keep_reason, note),
    )


def transition(conn: Connection, host: str, to: DrainState, *, actor: str,
               expect: Collection[DrainState] | None = None, reason: str | None = None,
               note: str | None = None, owner: str | None = None, run_id: str | None = None) -> HostRecord:
    """Move ``host`` to ``to`` (committed, audited). ``expect`` guards against a concurrent change.

    Returns the record as it was before.
    """
    with transaction(conn):
        current = get(conn, host)
        if expect is not None and current.state not in expect:
            raise TransitionError(f"{host}: expected state {'/'.join(sorted(expect))}, found {current.label}")
        _write(conn, host, current, to, actor=actor, reason=reason, note=note, owner=owner, run_id=run_id)
    return current


def restore(conn: Connection, record: HostRecord, *, actor: str, note: str) -> None:
    """Put back ``record`` (the state before a transition whose action then failed), audited."""
    with transaction(conn):
        current = get(conn, record.host)
        odd = current if current.unknown else record
        if odd.unknown:
            raise TransitionError(f"{record.host}: {odd.unknown_message()}")
        now = time.time()
        conn.execute(
            """INSERT INTO host_state (host, state, reason, actor, updated_at, owner, run_id)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (host) DO UPDATE SET state = excluded.state, reason = excluded.reason,
                   actor = excluded.actor, updated_at = excluded.updated_at, owner = excluded.owner,
                   run_id = excluded.run_id""",
            (record.host, record.state.value, record.reason, record.actor, now, record.owner, record.run_id),
        )
        conn.execute(
            "INSERT INTO host_audit (host, at, actor, from_state, to_state, reason, note) "
            "VALUES (?,?,?,?,?,?,?)",
            (record.host, now, actor, current.state.value, record.state.value, record.reason, note),
        )


def reserve(conn: Connection, hosts: Collection[str], *, pool: Collection[str], limit: int,
            scheduler_unavailable: Collection[str], actor: str, reason: str, force: bool = False,
            owner: str | None = None, run_id: str | None = None,
            scoped: Sequence[ScopedLimit] = ()) -> list[str]:
    """Atomically check max-unavailable and move the requested active hosts to ``cordoned``.

    Hosts already unavailable (here or in the scheduler) don't add to the count, and a request of
    only such hosts (a resumed drain) is never refused. ``scoped``: further limits, each over a
    part of the fleet (a rack), checked in the same transaction for the requested hosts in it.
    Returns the hosts it moved. Raises :class:`BudgetExceeded` (nothing written) unless ``force``.
    """
    pool_set = set(pool) | set(hosts)
    everyone = pool_set.union(*(s.pool for s in scoped))
    with transaction(conn):
        records = get_many(conn, sorted(everyone))
        down = {h for h, r in records.items() if r.state is not S.ACTIVE}
        down |= set(scheduler_unavailable) & everyone
        requested = sorted(hosts)
        over = False
        limits = [(None, pool_set, limit), *((s.label, set(s.pool), s.limit) for s in scoped)]
        for label, members, most in limits:
            mine = [h for h in requested if h in members]
            unavailable = sorted((down & members) - set(requested))
            # Resuming hosts that are already out of service takes nothing more from the budget.
            if any(h not in down for h in mine) and len(unavailable) + len(mine) > most:
                if not force:
                    raise BudgetExceeded(limit=most, pool=len(members), unavailable=unavailable,
                                         requested=mine, scope=label)
                over = True
        moved = []
        for h in requested:
            if records[h].state is S.ACTIVE:
                _write(conn, h, records[h], S.CORDONED, actor=actor, reason=reason,
                       note="--force: past max-unavailable" if over else None, owner=owner, run_id=run_id)
                moved.append(h)
    return moved


def audit(conn: Connection, host: str | None = None, limit: int = 100) -> list[AuditEntry]:
    """The latest audit entries (newest last), for one host or all."""
    if host is None:
        rows = conn.execute("SELECT * FROM host_audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    else:
        rows = conn.execute("SELECT * FROM host_audit WHERE host = ? ORDER BY id DESC LIMIT ?",
                            (host, limit)).fetchall()
    return [AuditEntry(r["host"], r["at"], r["actor"], r["from_state"], r["to_state"], r["reason"], r["note"])
            for r in reversed(rows)]


def unavailable_count(conn: Connection, pool: Iterable[str]) -> int:
    return sum(1 for r in get_many(conn, pool).values() if r.state is not S.ACTIVE)
