"""Host locks: one holder per host at a time, with an expiry, shared by provision and drain.

A lock names its holder (an id such as a run id, the user, machine and pid, what it is doing) so a
refused command can say who is in the way. A lock stops counting once it expires (the holder
refreshes it while alive) or once its holder's process is gone on this machine — a crashed
fleetctl never blocks the fleet for longer than the expiry. Acquiring takes every host or none,
inside one writing transaction (``db.transaction``), so two concurrent runs cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleetctl.state.db import Connection, Row, transaction
from fleetctl.state.runs import pid_alive, this_machine

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS host_locks (
        host TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        purpose TEXT NOT NULL,
        "user" TEXT NOT NULL,          -- quoted: a reserved word in PostgreSQL
        machine TEXT NOT NULL,
        pid INTEGER NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS host_locks_holder ON host_locks (holder)",
)

DEFAULT_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Holder:
    id: str  # e.g. a provision run id, or "drain:<id>"
    purpose: str  # "provision site.yml", "drain", ...
    user: str
    machine: str
    pid: int


@dataclass(frozen=True)
class Lock:
    host: str
    holder: Holder
    acquired_at: str
    expires_at: str

    def describe(self) -> str:
        h = self.holder
        return (
            f"{self.host} is held by {h.id} ({h.purpose}) of {h.user}@{h.machine} pid {h.pid}"
            f" since {self.acquired_at}, until {self.expires_at}"
        )


class LocksHeld(Exception):
    """Some requested hosts are locked by another holder."""

    def __init__(self, conflicts: Sequence[Lock]) -> None:
        self.conflicts = list(conflicts)
        first = self.conflicts[0]
        more = f" (and {len(self.conflicts) - 1} more hosts)" if len(self.conflicts) > 1 else ""
        super().__init__(f"{first.describe()}{more}; use --force to take over")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _lock(row: Row) -> Lock:
    holder = Holder(row["holder"], row["purpose"], row["user"], row["machine"], row["pid"])
    return Lock(row["host"], holder, row["acquired_at"], row["expires_at"])


def is_live(lock: Lock, *, now: datetime | None = None) -> bool:
    if datetime.fromisoformat(lock.expires_at) <= (now or _now()):
        return False
    return not (lock.holder.machine == this_machine() and not pid_alive(lock.holder.pid))


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _existing(conn: Connection, hosts: Sequence[str]) -> list[Lock]:
    found: list[Lock] = []
    for chunk in _chunks(hosts):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT * FROM host_locks WHERE host IN ({marks})", chunk).fetchall()  # noqa: S608
        found += [_lock(row) for row in rows]
    return found


def acquire(
    conn: Connection,
    hosts: Iterable[str],
    holder: Holder,
    *,
    ttl: timedelta = DEFAULT_TTL,
    force: bool = False,
) -> list[Lock]:
    """Lock every host for ``holder`` or raise ``LocksHeld`` naming the live holders.

    With ``force`` live locks are taken over; the locks taken from others are returned (so the
    caller can say whose it overrode). Re-acquiring one's own lock just extends it.
    """
    wanted = sorted(set(hosts))
    now = _now()
    with transaction(conn):
        existing = _existing(conn, wanted)
        taken = [lk for lk in existing if lk.holder.id != holder.id and is_live(lk, now=now)]
        if taken and not force:
            raise LocksHeld(taken)
        conn.executemany(
            'INSERT INTO host_locks (host, holder, purpose, "user", machine, pid, acquired_at, expires_at)'
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (host) DO UPDATE SET holder = excluded.holder,"
            ' purpose = excluded.purpose, "user" = excluded."user", machine = excluded.machine,'
            " pid = excluded.pid, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
            [
                (host, holder.id, holder.purpose, holder.user, holder.machine, holder.pid,
                 _iso(now), _iso(now + ttl))
                for host in wanted
            ],
        )
    return taken


def refresh(conn: Connection, holder_id: str, *, ttl: timedelta = DEFAULT_TTL) -> int:
    """Push the expiry of every lock ``holder_id`` holds; returns how many it still holds."""
    with transaction(conn):
        cursor = conn.execute(
            "UPDATE host_locks SET expires_at = ? WHERE holder = ?", (_iso(_now() + ttl), holder_id)
        )
    return cursor.rowcount


def release(conn: Connection, holder_id: str, hosts: Iterable[str] | None = None) -> None:
    """Drop ``holder_id``'s locks (all, or those on ``hosts``); never someone else's."""
    with transaction(conn):
        if hosts is None:
            conn.execute("DELETE FROM host_locks WHERE holder = ?", (holder_id,))
        else:
            conn.executemany(
                "DELETE FROM host_locks WHERE holder = ? AND host = ?",
                [(holder_id, host) for host in hosts],
            )


def held(conn: Connection, *, include_stale: bool = False) -> list[Lock]:
    rows = conn.execute("SELECT * FROM host_locks ORDER BY host").fetchall()
    locks = [_lock(row) for row in rows]
    return locks if include_stale else [lk for lk in locks if is_live(lk)]
