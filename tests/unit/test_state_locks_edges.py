"""Host locks at their edges: the expiry instant, fleets larger than one query, the refusal message.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetctl.state import db, locks
from fleetctl.state.runs import this_machine


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=locks.SCHEMA)


def _holder(hid: str) -> locks.Holder:
    return locks.Holder(hid, "drain", "bob", this_machine(), os.getpid())


def test_a_lock_is_dead_at_the_very_second_it_expires() -> None:
    expires = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    lock = locks.Lock("n1", _holder("run-1"), "2026-01-01T11:50:00+00:00", expires.isoformat())
    assert locks.is_live(lock, now=expires - timedelta(seconds=1))
    assert not locks.is_live(lock, now=expires)


def test_lock_times_are_written_in_utc_with_their_offset(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], _holder("run-1"), ttl=timedelta(minutes=10))
    (lock,) = locks.held(conn)
    acquired, expires = datetime.fromisoformat(lock.acquired_at), datetime.fromisoformat(lock.expires_at)
    assert acquired.utcoffset() == timedelta(0) and expires - acquired == timedelta(minutes=10)
    assert abs(datetime.now(UTC) - acquired) < timedelta(minutes=1)


def test_the_refusal_counts_the_other_held_hosts(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1", "n2", "n3"], _holder("run-1"))
    with pytest.raises(locks.LocksHeld) as many:
        locks.acquire(conn, ["n1", "n2", "n3"], _holder("run-2"))
    assert str(many.value).startswith("n1 is held by run-1 (drain) of bob@")
    assert str(many.value).endswith(" (and 2 more hosts); use --force to take over")
    with pytest.raises(locks.LocksHeld) as two:
        locks.acquire(conn, ["n2", "n3"], _holder("run-2"))
    assert str(two.value).endswith(" (and 1 more hosts); use --force to take over")
    with pytest.raises(locks.LocksHeld) as one:
        locks.acquire(conn, ["n3"], _holder("run-2"))
    (lock,) = one.value.conflicts
    assert lock.host == "n3" and str(one.value) == f"{lock.describe()}; use --force to take over"


def test_conflicts_are_found_in_every_chunk_of_a_large_fleet(conn: sqlite3.Connection) -> None:
    fleet = [f"n{i:04d}" for i in range(1201)]  # more hosts than one IN (...) query takes
    locks.acquire(conn, [fleet[3], fleet[700], fleet[1200]], _holder("run-1"))
    with pytest.raises(locks.LocksHeld) as info:
        locks.acquire(conn, fleet, _holder("run-2"))
    assert sorted(lk.host for lk in info.value.conflicts) == [fleet[3], fleet[700], fleet[1200]]
    assert {lk.holder.id for lk in locks.held(conn)} == {"run-1"}  # all or nothing: run-2 got none


def test_a_lock_read_back_keeps_every_field_of_its_holder(conn: sqlite3.Connection) -> None:
    holder = locks.Holder("run-9", "provision site.yml", "carol", "build-7", 4242)
    locks.acquire(conn, ["n5"], holder)
    (lock,) = locks.held(conn, include_stale=True)
    assert lock.host == "n5" and lock.holder == holder
