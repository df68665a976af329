"""Host drain state at its edges: the budget refusal message, what a reservation records, what going
back to active clears, one host's audit, and whose process owns a host.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from fleetctl.state import db, hosts
from fleetctl.state.hosts import DrainState as S


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=hosts.SCHEMA)


def test_the_refusal_lists_five_unavailable_hosts_then_an_ellipsis() -> None:
    six = hosts.BudgetExceeded(limit=6, pool=20, unavailable=[f"n{i}" for i in range(6)], requested=["x"])
    assert str(six) == ("refused: max-unavailable is 6 of 20 hosts; 6 already unavailable "
                        "(n0, n1, n2, n3, n4 ...) + 1 requested = 7")
    five = hosts.BudgetExceeded(limit=5, pool=20, unavailable=[f"n{i}" for i in range(5)], requested=["x"])
    assert str(five).endswith("5 already unavailable (n0, n1, n2, n3, n4) + 1 requested = 6")
    none = hosts.BudgetExceeded(limit=0, pool=3, unavailable=[], requested=["x", "y"])
    assert str(none) == "refused: max-unavailable is 0 of 3 hosts; 0 already unavailable + 2 requested = 2"


def test_a_reservation_records_reason_owner_and_run_and_a_forced_one_says_so(
        conn: sqlite3.Connection) -> None:
    moved = hosts.reserve(conn, ["a", "b"], pool=["a", "b", "c"], limit=1, scheduler_unavailable=[],
                          actor="alice", reason="kernel update", force=True, owner="m:1", run_id="run-7")
    assert moved == ["a", "b"]
    record = hosts.get(conn, "a")
    assert (record.state, record.reason, record.actor, record.owner, record.run_id) == (
        S.CORDONED, "kernel update", "alice", "m:1", "run-7")
    (entry,) = hosts.audit(conn, "a")
    assert (entry.host, entry.from_state, entry.to_state, entry.reason, entry.note) == (
        "a", "active", "cordoned", "kernel update", "--force: past max-unavailable")
    hosts.reserve(conn, ["c"], pool=["c"], limit=1, scheduler_unavailable=[], actor="bob", reason="r")
    assert hosts.audit(conn, "c")[0].note is None


def test_back_to_active_clears_reason_owner_and_run_but_audits_the_reason(conn: sqlite3.Connection) -> None:
    hosts.transition(conn, "a", S.CORDONED, actor="alice", reason="fan", owner="m:1", run_id="run-1")
    before = hosts.transition(conn, "a", S.ACTIVE, actor="bob", note="fixed", owner="m:2", run_id="run-2")
    assert (before.owner, before.run_id, before.reason) == ("m:1", "run-1", "fan")
    after = hosts.get(conn, "a")
    assert (after.state, after.reason, after.owner, after.run_id, after.actor) == (
        S.ACTIVE, None, None, None, "bob")
    entries = hosts.audit(conn, "a")
    assert [(e.to_state, e.reason, e.note) for e in entries] == [
        ("cordoned", "fan", None), ("active", "fan", "fixed")]
    assert isinstance(entries[0].at, float) and entries[0].actor == "alice"


def test_audit_of_one_host_leaves_the_others_out(conn: sqlite3.Connection) -> None:
    hosts.transition(conn, "a", S.CORDONED, actor="x")
    hosts.transition(conn, "b", S.CORDONED, actor="x")
    assert [e.host for e in hosts.audit(conn, "b")] == ["b"]
    assert [e.host for e in hosts.audit(conn)] == ["a", "b"]
    assert hosts.get(conn, "never-seen") == hosts.HostRecord("never-seen", S.ACTIVE)


def test_owner_alive_by_machine_and_pid() -> None:
    here = socket.gethostname()
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert hosts.owner_alive(f"{here}:{os.getpid()}")
    assert not hosts.owner_alive(f"{here}:{proc.pid}")
    assert hosts.owner_alive(f"other-machine:{proc.pid}")  # not ours to check: presumed alive
    assert hosts.owner_alive(f"{here}:not-a-pid")
    assert not hosts.owner_alive(None) and not hosts.owner_alive("")
    assert hosts.owner_alive(f"{here}:1")  # pid 1 exists (another user's may refuse the signal)
