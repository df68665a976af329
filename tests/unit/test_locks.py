"""Host locks: all-or-nothing, naming the holder, expiring, stale when the holder died."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

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


ROUNDS = 200
WORKERS = 4


def _race_worker(path: str, name: str, barrier: Any, results: Any) -> None:
    """One contender: each round, wait for every other one, then grab that round's host."""
    conn = db.connect(Path(path), schema=locks.SCHEMA)
    me = holder(name)
    for round_no in range(ROUNDS):
        barrier.wait(timeout=60)
        try:
            locks.acquire(conn, [f"n{round_no}", "shared"], me)
        except locks.LocksHeld:
            won = False
        else:
            won = True
            # hold the round's host until every contender has tried, then hand "shared" back
        barrier.wait(timeout=60)
        if won:
            locks.release(conn, name, ["shared"])
        results.put((round_no, name, won))
    conn.close()


def test_processes_racing_for_a_host_never_both_win(tmp_path: Path) -> None:
    # Real processes on one SQLite file released together by a barrier each round: the transaction
    # around the read-check-write in acquire is what keeps this at exactly one winner.
    path = tmp_path / "state.db"
    db.connect(path, schema=locks.SCHEMA).close()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    names = [f"run-{i}" for i in range(WORKERS)]
    procs = [ctx.Process(target=_race_worker, args=(str(path), n, barrier, results)) for n in names]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(ROUNDS * WORKERS)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    winners: dict[int, list[str]] = {r: [] for r in range(ROUNDS)}
    for round_no, name, won in outcomes:
        if won:
            winners[round_no].append(name)
    assert {r: len(w) for r, w in winners.items() if len(w) != 1} == {}
    # no lost acquisition: the database names each round's winner as the holder of its host
    conn = db.connect(path, schema=locks.SCHEMA)
    # (include_stale: the contenders have exited, so their locks no longer count as live)
    held_by = {lk.host: lk.holder.id for lk in locks.held(conn, include_stale=True)}
    assert held_by == {f"n{r}": winners[r][0] for r in range(ROUNDS)}
