"""Host locks: all-or-nothing, naming the holder, expiring, stale when the holder died."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from fleetctl.state import db, locks
from fleetctl.state.runs import this_machine


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=locks.SCHEMA)


def holder(hid: str, pid: int | None = None, machine: str | None = None) -> locks.Holder:
    return locks.Holder(hid, "provision site.yml", "alice", machine or this_machine(), pid or os.getpid())


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_second_holder_is_refused_with_the_holder_named(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1", "n2"], holder("run-1"))
    with pytest.raises(locks.LocksHeld) as info:
        locks.acquire(conn, ["n2", "n3"], holder("run-2"))
    message = str(info.value)
    assert "n2 is held by run-1 (provision site.yml) of alice@" in message
    assert "--force" in message
    assert [lk.host for lk in info.value.conflicts] == ["n2"]
    # all-or-nothing: n3 was not taken by the refused run
    assert {lk.host: lk.holder.id for lk in locks.held(conn)} == {"n1": "run-1", "n2": "run-1"}


def test_force_takes_over_and_reports_whose_locks(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1"))
    taken = locks.acquire(conn, ["n1", "n2"], holder("run-2"), force=True)
    assert [(lk.host, lk.holder.id) for lk in taken] == [("n1", "run-1")]
    assert {lk.host: lk.holder.id for lk in locks.held(conn)} == {"n1": "run-2", "n2": "run-2"}


def test_expired_lock_does_not_block(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1"), ttl=timedelta(seconds=-1))
    assert locks.held(conn) == []
    locks.acquire(conn, ["n1"], holder("run-2"))
    assert locks.held(conn)[0].holder.id == "run-2"


def test_lock_of_a_dead_process_on_this_machine_is_stale(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1", pid=dead_pid()))
    locks.acquire(conn, ["n1"], holder("run-2"))
    assert locks.held(conn)[0].holder.id == "run-2"


def test_lock_of_another_machine_counts_until_it_expires(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1", pid=dead_pid(), machine="bastion-2"))
    with pytest.raises(locks.LocksHeld, match="alice@bastion-2"):
        locks.acquire(conn, ["n1"], holder("run-2"))


def test_release_drops_only_the_holders_locks(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1"))
    locks.acquire(conn, ["n2"], holder("run-2"))
    locks.release(conn, "run-1")
    assert [lk.host for lk in locks.held(conn)] == ["n2"]
    locks.release(conn, "run-2", ["n9"])
    assert [lk.host for lk in locks.held(conn)] == ["n2"]


def test_refresh_extends_expiry(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1", "n2"], holder("run-1"), ttl=timedelta(seconds=-1))
    assert locks.held(conn) == []
    assert locks.refresh(conn, "run-1", ttl=timedelta(minutes=5)) == 2
    assert len(locks.held(conn)) == 2


def test_reacquiring_own_lock_is_allowed(conn: sqlite3.Connection) -> None:
    locks.acquire(conn, ["n1"], holder("run-1"))
    assert locks.acquire(conn, ["n1"], holder("run-1")) == []


def test_concurrent_acquires_from_two_connections_have_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = db.connect(path, schema=locks.SCHEMA)
    second = db.connect(path, schema=locks.SCHEMA)
    locks.acquire(first, ["n1", "n2"], holder("run-1"))
    with pytest.raises(locks.LocksHeld):
        locks.acquire(second, ["n2"], holder("run-2"))
