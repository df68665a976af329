"""The host state machine and its max-unavailable gate, on a real SQLite file."""

from __future__ import annotations

import contextlib
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


# --- schema versions, rows from a newer fleetctl, file privacy (#17 item 7) -----------------------

# The layout `fleetctl drain` wrote before schema versions existed (user_version 0), frozen here.
V0_LAYOUT = (
    """CREATE TABLE host_state (host TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, actor TEXT,
        updated_at REAL NOT NULL, owner TEXT, run_id TEXT)""",
    """CREATE TABLE host_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, at REAL NOT NULL,
        actor TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, reason TEXT, note TEXT)""",
)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _v0_file(path: Path) -> None:
    raw = _raw(path)
    for statement in V0_LAYOUT:
        raw.execute(statement)
    raw.execute("INSERT INTO host_state VALUES "
                "('h1', 'drained', 'fleetctl:bob: psu', 'bob', 1.0, NULL, NULL)")
    raw.execute("INSERT INTO host_audit (host, at, actor, from_state, to_state) "
                "VALUES ('h1', 1.0, 'bob', 'draining', 'drained')")
    raw.close()


def test_an_unversioned_file_is_detected_and_migrated_forward_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v0_file(path)
    c = db.connect(path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 3
    assert c.execute("PRAGMA application_id").fetchone()[0] == db.APPLICATION_ID
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"host_state", "host_audit", "host_locks", "provision_runs", "provision_run_hosts"} <= tables
    rec = hs.get(c, "h1")
    assert (rec.state, rec.reason, rec.actor) == (S.DRAINED, "fleetctl:bob: psu", "bob")
    assert [e.to_state for e in hs.audit(c, "h1")] == ["drained"]
    hs.transition(c, "h1", S.ACTIVE, actor="alice")  # and it is writable as before
    c.close()
    again = db.connect(path)  # a second open finds it current: nothing to do
    assert again.execute("PRAGMA user_version").fetchone()[0] == 3
    assert [e.to_state for e in hs.audit(again, "h1")] == ["drained", "active"]


def test_another_programs_database_is_refused_not_migrated(tmp_path: Path) -> None:
    from fleetctl.errors import StateDatabaseError

    path = tmp_path / "other.db"
    raw = _raw(path)
    raw.execute("CREATE TABLE photos (id INTEGER)")
    raw.close()
    with pytest.raises(StateDatabaseError, match=r"not a fleetctl state database .*photos"):
        db.connect(path)
    assert _raw(path).execute("PRAGMA user_version").fetchone()[0] == 0


def _newer_file(path: Path) -> None:
    db.connect(path).close()
    raw = _raw(path)
    raw.execute("INSERT INTO host_state VALUES ('h1', 'draining', 'fleetctl:bob: r', 'bob', 1.0, NULL, NULL)")
    raw.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    raw.close()


def test_a_newer_schema_version_reads_but_refuses_writes_naming_both_versions(tmp_path: Path) -> None:
    from fleetctl.errors import StateDatabaseError

    path = tmp_path / "newer.db"
    _newer_file(path)
    c = db.connect(path, schema=hs.SCHEMA)
    assert hs.get(c, "h1").state is S.DRAINING  # reading works
    newer = (rf"schema version {db.SCHEMA_VERSION + 1}, written by a newer fleetctl; "
             rf"this fleetctl knows up to version {db.SCHEMA_VERSION}")
    with pytest.raises(StateDatabaseError, match=newer) as refused:
        hs.transition(c, "h1", S.ACTIVE, actor="alice")
    assert "\n" not in str(refused.value)
    with pytest.raises(sqlite3.OperationalError):  # a write outside a transaction is stopped too
        c.execute("DELETE FROM host_state")
    assert _raw(path).execute("SELECT state FROM host_state").fetchone()[0] == "draining"
    assert _raw(path).execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION + 1  # never "back"


def test_a_state_a_newer_fleetctl_wrote_is_shown_counted_and_left_alone(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO host_state VALUES "
                 "('h1', 'rebooting', 'fleetctl:bob: fw', 'bob', 1.0, NULL, NULL)")
    rec = hs.get(conn, "h1")
    assert rec.state is S.UNKNOWN and rec.label == "rebooting" and rec.reason == "fleetctl:bob: fw"
    assert hs.get_many(conn, ["h1", "h2"])["h1"].label == "rebooting"
    for to in (S.ACTIVE, S.CORDONED, S.DRAINING):
        with pytest.raises(hs.TransitionError, match="'rebooting' is unknown to this fleetctl"):
            hs.transition(conn, "h1", to, actor="alice")
    # it counts as unavailable and a reservation never moves it
    assert hs.unavailable_count(conn, ["h1", "h2"]) == 1
    with pytest.raises(hs.BudgetExceeded):
        hs.reserve(conn, ["h2"], pool=["h1", "h2"], limit=1, scheduler_unavailable=[], actor="a", reason="r")
    assert conn.execute("SELECT state FROM host_state WHERE host = 'h1'").fetchone()[0] == "rebooting"
    assert hs.audit(conn, "h1") == []


def test_the_file_and_its_wal_are_private_wherever_it_is(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "elsewhere" / "s.db"
        path.parent.mkdir()
        c = db.connect(path)
        hs.transition(c, "h1", S.CORDONED, actor="a", reason="r")
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert p.exists() and (p.stat().st_mode & 0o777) == 0o600, p
    finally:
        os.umask(old)


def test_an_existing_file_readable_by_others_is_tightened_or_refused(tmp_path: Path) -> None:
    from fleetctl.errors import StateDatabaseError

    path = tmp_path / "s.db"
    held = db.connect(path)  # keeps -wal/-shm in place
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.chmod(0o644)
    db.connect(path).close()
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert p.stat().st_mode & 0o777 == 0o600, p
    held.close()
    path.chmod(0o444)  # read-only for everyone: the others' bits go, none is added
    with contextlib.suppress(sqlite3.Error):
        db.connect(path).close()
    assert path.stat().st_mode & 0o777 == 0o400
    if os.geteuid() == 0:  # a looser file of another user is not ours to change: refused
        path.chmod(0o644)
        os.chown(path, 65534, 65534)
        with pytest.raises(StateDatabaseError,
                           match=r"readable by others \(mode 0644\) and owned by uid 65534"):
            db.connect(path)
        assert path.stat().st_mode & 0o777 == 0o644


def test_an_explicit_path_into_a_missing_directory_is_one_line_not_a_mkdir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.errors import StateDatabaseError

    with pytest.raises(StateDatabaseError, match=r"directory .*typo does not exist \(create it first\)"):
        db.connect(tmp_path / "typo" / "s.db")
    assert not (tmp_path / "typo").exists()
    # the default location is still created, owner-only
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    db.connect().close()
    assert (tmp_path / "xdg" / "fleetctl").stat().st_mode & 0o777 == 0o700
