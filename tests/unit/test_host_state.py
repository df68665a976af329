"""The host state machine and its max-unavailable gate, on a real SQLite file."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from fleetctl.state import db
from fleetctl.state import hosts as hs
from fleetctl.state.hosts import DrainState as S


@pytest.fixture()
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=hs.SCHEMA)


def test_unknown_host_is_active(conn: sqlite3.Connection) -> None:
    assert hs.get(conn, "h1").state is S.ACTIVE
    assert hs.get_many(conn, ["a", "b"])["b"].state is S.ACTIVE


def test_forward_path_is_audited_with_who_why_and_from_to(conn: sqlite3.Connection) -> None:
    path = [S.CORDONED, S.DRAINING, S.DRAINED, S.MAINTAINING, S.VERIFYING, S.ACTIVE]
    for to in path:
        hs.transition(conn, "h1", to, actor="alice", reason="fleetctl:alice: fan")
    entries = hs.audit(conn, "h1")
    assert [(e.from_state, e.to_state) for e in entries] == list(
        zip(["active", *[s.value for s in path[:-1]]], [s.value for s in path], strict=True))
    assert {e.actor for e in entries} == {"alice"}
    assert entries[0].reason == "fleetctl:alice: fan"
    # back to active: the record no longer carries a reason or an owner
    rec = hs.get(conn, "h1")
    assert rec.state is S.ACTIVE and rec.reason is None and rec.owner is None


def test_illegal_transition_is_refused_and_not_written(conn: sqlite3.Connection) -> None:
    with pytest.raises(hs.TransitionError, match="active to drained"):
        hs.transition(conn, "h1", S.DRAINED, actor="a")
    assert hs.audit(conn, "h1") == []
    hs.transition(conn, "h1", S.CORDONED, actor="a")
    with pytest.raises(hs.TransitionError, match="cordoned to quarantined"):
        hs.transition(conn, "h1", S.QUARANTINED, actor="a")


def test_expect_guards_against_a_concurrent_change(conn: sqlite3.Connection) -> None:
    hs.transition(conn, "h1", S.CORDONED, actor="a")
    with pytest.raises(hs.TransitionError, match="expected state draining, found cordoned"):
        hs.transition(conn, "h1", S.DRAINED, actor="a", expect={S.DRAINING})
    assert hs.get(conn, "h1").state is S.CORDONED


def test_restore_puts_the_previous_record_back_audited(conn: sqlite3.Connection) -> None:
    hs.transition(conn, "h1", S.CORDONED, actor="a", reason="r1")
    hs.transition(conn, "h1", S.DRAINING, actor="a")
    before = hs.transition(conn, "h1", S.ACTIVE, actor="b")
    hs.restore(conn, before, actor="b", note="undrain failed: boom")
    assert hs.get(conn, "h1").state is S.DRAINING
    assert hs.get(conn, "h1").reason == "r1"
    last = hs.audit(conn, "h1")[-1]
    assert (last.from_state, last.to_state, last.note) == ("active", "draining", "undrain failed: boom")


def test_reserve_counts_db_and_scheduler_unavailable_hosts(conn: sqlite3.Connection) -> None:
    pool = [f"h{i}" for i in range(10)]
    hs.transition(conn, "h0", S.CORDONED, actor="a")  # drained by fleetctl earlier
    # h1 is down according to the scheduler: it counts too
    with pytest.raises(hs.BudgetExceeded) as err:
        hs.reserve(conn, ["h5"], pool=pool, limit=2, scheduler_unavailable=["h1"], actor="a", reason="r")
    expected = "max-unavailable is 2 of 10 hosts; 2 already unavailable (h0, h1) + 1 requested = 3"
    assert expected in str(err.value)
    assert hs.get(conn, "h5").state is S.ACTIVE  # nothing written
    moved = hs.reserve(conn, ["h5"], pool=pool, limit=3, scheduler_unavailable=["h1"], actor="a", reason="r")
    assert moved == ["h5"] and hs.get(conn, "h5").state is S.CORDONED


def test_reserve_does_not_count_a_resumed_host_twice(conn: sqlite3.Connection) -> None:
    pool = ["a", "b", "c"]
    hs.transition(conn, "a", S.CORDONED, actor="x")
    hs.transition(conn, "a", S.DRAINING, actor="x")
    # re-running the drain of a (limit 1): a is already the one unavailable host
    assert hs.reserve(conn, ["a"], pool=pool, limit=1, scheduler_unavailable=[], actor="x", reason="r") == []
    with pytest.raises(hs.BudgetExceeded):
        hs.reserve(conn, ["b"], pool=pool, limit=1, scheduler_unavailable=[], actor="x", reason="r")


def test_force_passes_the_limit_and_says_so(conn: sqlite3.Connection) -> None:
    hs.transition(conn, "a", S.CORDONED, actor="x")
    hs.reserve(conn, ["b"], pool=["a", "b"], limit=1, scheduler_unavailable=[], actor="x", reason="r",
               force=True)
    assert hs.get(conn, "b").state is S.CORDONED
    assert "past max-unavailable" in (hs.audit(conn, "b")[-1].note or "")


def _reserve_one(args: tuple[str, str, int]) -> bool:
    path, host, limit = args
    c = db.connect(Path(path), schema=hs.SCHEMA)
    try:
        hs.reserve(c, [host], pool=[f"h{i}" for i in range(20)], limit=limit, scheduler_unavailable=[],
                   actor=f"p{os.getpid()}", reason="r")
        return True
    except hs.BudgetExceeded:
        return False
    finally:
        c.close()


def test_concurrent_reservations_in_separate_processes_never_exceed_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db.connect(path, schema=hs.SCHEMA).close()
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        granted = pool.map(_reserve_one, [(str(path), f"h{i}", 3) for i in range(20)])
    assert sum(granted) == 3
    c = db.connect(path, schema=hs.SCHEMA)
    assert hs.unavailable_count(c, [f"h{i}" for i in range(20)]) == 3


def test_owner_alive() -> None:
    assert hs.owner_alive(hs.this_process())
    assert not hs.owner_alive(None)
    # a pid that cannot exist on this machine
    assert not hs.owner_alive(f"{hs.this_process().rpartition(':')[0]}:{2**22 + 12345}")
    assert hs.owner_alive("another-machine:1")  # can't check: presumed alive
