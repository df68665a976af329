"""The state database's edges: where it lives by default, and that a transaction commits or rolls back.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fleetctl.errors import StateDatabaseError
from fleetctl.state import db


def test_default_path_is_fleetctl_db_then_xdg_state_home_then_home(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    assert db.default_path() == tmp_path / "home" / ".local" / "state" / "fleetctl" / "fleetctl.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert db.default_path() == tmp_path / "xdg" / "fleetctl" / "fleetctl.db"
    monkeypatch.setenv(db.ENV_VAR, str(tmp_path / "mine.db"))
    assert db.default_path() == tmp_path / "mine.db"
    monkeypatch.setenv(db.ENV_VAR, "")  # set but empty: as if unset
    assert db.default_path() == tmp_path / "xdg" / "fleetctl" / "fleetctl.db"


def test_the_default_directory_is_created_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    conn = db.connect()
    conn.close()
    folder = tmp_path / "xdg" / "fleetctl"
    assert (folder / "fleetctl.db").is_file() and folder.stat().st_mode & 0o777 == 0o700


def test_a_transaction_commits_on_success_and_rolls_back_on_error(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "s.db", schema=["CREATE TABLE IF NOT EXISTS t (v INTEGER)"])
    with db.transaction(conn) as same:
        assert same is conn and conn.in_transaction
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), db.transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("boom")
    assert not conn.in_transaction
    other = sqlite3.connect(tmp_path / "s.db")
    assert other.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_a_newer_database_is_refused_for_writes_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db.connect(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 3}")
    raw.close()
    conn = db.connect(path)
    assert isinstance(conn, db.StateConnection) and conn.newer and conn.version == db.SCHEMA_VERSION + 3
    with pytest.raises(StateDatabaseError) as err:
        with db.transaction(conn):
            pass
    assert str(err.value) == (
        f"state database {path} is schema version {db.SCHEMA_VERSION + 3}, written by a newer fleetctl; "
        f"this fleetctl knows up to version {db.SCHEMA_VERSION}: it can read it (status, hosts, runs list) "
        "but changes nothing: upgrade fleetctl")
