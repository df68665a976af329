"""fleetctl on a PostgreSQL that drops its sessions, and what a shared database must not leak.

A real server (tests/integration/postgres_server.py) whose sessions the tests end as a restart or a
failover would (``pg_terminate_backend``); real provision runs (ansible-playbook on a local
connection, tests/integration/test_provision_local.py's set-up) with ``FLEETCTL_DB`` naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from postgres_server import PASSWORD, PostgresServer, end_sessions, new_database, pg_server  # noqa: F401
from test_provision_local import FLEETCTL, LOCAL, env_for, write_inventory

from fleetctl import provision
from fleetctl.runner import EventTally
from fleetctl.state import db, locks, pg, runs
from fleetctl.state import hosts as hs
from fleetctl.state.location import location

pytestmark = pytest.mark.integration

OLD_BEAT = "2000-01-01T00:00:00+00:00"


@pytest.fixture()
def url(pg_server: PostgresServer) -> str:  # noqa: F811
    return new_database(pg_server)


@pytest.fixture()
def watcher(url: str) -> Iterator[pg.PgConnection]:
    """The test's own connection, under another application name: ending fleetctl's spares it."""
    conn = pg.connect(url + "?application_name=fleetctl-tests")
    yield conn
    conn.close()


def _until(what: Callable[[], bool], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out waiting: {why}"
        time.sleep(0.1)


def _beat(conn: pg.PgConnection, run_id: str) -> str | None:
    row = conn.execute("SELECT heartbeat_at FROM provision_runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def _record(run_id: str, *, machine: str | None = None, heartbeat: str = OLD_BEAT) -> runs.RunRecord:
    return runs.RunRecord(id=run_id, user="bob", machine=machine or runs.this_machine(), pid=os.getpid(),
                          started_at=runs.now_iso(), heartbeat_at=heartbeat, inventory="i", pattern="all",
                          playbook="p", options={}, artifacts="a", hosts=[])


# --- a lost session is replaced ----------------------------------------------------------------


def test_the_heartbeat_and_the_final_writes_go_on_after_the_server_ends_their_sessions(
        url: str, pg_server: PostgresServer, watcher: pg.PgConnection,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision, "HEARTBEAT_INTERVAL_S", 0.2)
    conn = db.connect(url, schema=(*runs.SCHEMA, *locks.SCHEMA))
    locks.acquire(conn, ["h1"], locks.Holder("run-1", "provision", "bob", runs.this_machine(), os.getpid()))
    runs.start(conn, _record("run-1"))
    stop = threading.Event()
    beat = provision._Heartbeat(location(url), "run-1", "run-1", EventTally(["h1"]), stop)
    beat.start()
    try:
        _until(lambda: _beat(watcher, "run-1") != OLD_BEAT, 10, "a first heartbeat")
        assert end_sessions(pg_server) == 2  # the run's and the heartbeat's
        watcher.execute("UPDATE provision_runs SET heartbeat_at = ?", (OLD_BEAT,))
        _until(lambda: _beat(watcher, "run-1") != OLD_BEAT, 10, "a heartbeat on a new session")
        assert beat.is_alive()
    finally:
        stop.set()
        beat.join(timeout=10)
    # the run's own connection lost its session too, while it sat idle during the playbook
    runs.finish(conn, "run-1", "successful", [])
    locks.release(conn, "run-1")
    assert runs.status_of(watcher, "run-1") == "successful"
    assert locks.held(watcher, include_stale=True) == []


def test_the_heartbeat_outlives_a_server_that_refuses_connections_for_a_while(
        url: str, pg_server: PostgresServer, watcher: pg.PgConnection,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(provision, "HEARTBEAT_INTERVAL_S", 0.2)
    conn = db.connect(url, schema=(*runs.SCHEMA, *locks.SCHEMA))
    locks.acquire(conn, ["h1"], locks.Holder("run-1", "provision", "bob", runs.this_machine(), os.getpid()))
    runs.start(conn, _record("run-1"))
    conn.close()
    name = url.rsplit("/", 1)[1]
    pg_server.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    stop = threading.Event()
    beat = provision._Heartbeat(location(url), "run-1", "run-1", EventTally(["h1"]), stop)
    beat.start()
    try:
        time.sleep(1.0)  # several beats, each refused
        assert beat.is_alive()
        pg_server.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        _until(lambda: _beat(watcher, "run-1") != OLD_BEAT, 10, "a heartbeat once connections are back")
    finally:
        stop.set()
        beat.join(timeout=10)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("fleetctl: warning: run run-1: heartbeat failed, retrying: "
                                               "state database postgresql://fleet:***@127.0.0.1:")
    assert PASSWORD not in err[0]


def test_a_read_only_session_stays_read_only_on_the_session_that_replaces_it(
        url: str, pg_server: PostgresServer) -> None:  # noqa: F811
    c = db.connect(url)
    pg.write_meta(c, db.SCHEMA_VERSION + 1)  # type: ignore[arg-type]
    c.close()
    newer = db.connect(url)
    assert end_sessions(pg_server) == 1
    with pytest.raises(pg.PostgresError, match="read-only transaction"):
        newer.execute("DELETE FROM host_state")  # on a new session, with the backstop set again


def test_a_session_lost_inside_a_transaction_is_an_error_never_a_silent_retry(
        url: str, pg_server: PostgresServer, watcher: pg.PgConnection) -> None:  # noqa: F811
    c = db.connect(url)
    with pytest.raises(pg.PostgresError, match="terminat"), db.transaction(c):
        c.execute("INSERT INTO host_health VALUES ('h1', 1, NULL, 1.0, 'test')")
        end_sessions(pg_server)
        c.execute("INSERT INTO host_health VALUES ('h2', 1, NULL, 1.0, 'test')")
    assert watcher.execute("SELECT count(*) FROM host_health").fetchone()[0] == 0  # nothing half-done
    hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="next")  # a new session
    assert hs.get(watcher, "h1").state is hs.DrainState.CORDONED


# --- a real provision ---------------------------------------------------------------------------


def _provision(tmp_path: Path, url: str, playbook: Path, *extra: str,
               env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    inventory = write_inventory(tmp_path, {"good": LOCAL})
    return subprocess.Popen(
        [*FLEETCTL, "provision", "-i", str(inventory), "-p", str(playbook), "--json", *extra],
        cwd=tmp_path, env={**env_for(tmp_path), "FLEETCTL_DB": url, "XDG_STATE_HOME": str(tmp_path / "xdg"),
                           **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _running_run(watcher: pg.PgConnection, proc: subprocess.Popen[str]) -> str:
    def started() -> bool:
        assert proc.poll() is None, proc.communicate()
        return bool(pg.tables(watcher) >= {"provision_runs"}
                    and watcher.execute("SELECT 1 FROM provision_runs").fetchone())
    _until(started, 60, "the run's record")
    return str(watcher.execute("SELECT id FROM provision_runs").fetchone()[0])


def test_a_provision_whose_sessions_are_ended_mid_run_ends_successful_with_its_locks_released(
        tmp_path: Path, url: str, pg_server: PostgresServer, watcher: pg.PgConnection) -> None:  # noqa: F811
    proc = _provision(tmp_path, url, Path(__file__).parent / "provision_local" / "tiny.yml",
                      "-e", "sleep_seconds=12")
    try:
        run_id = _running_run(watcher, proc)
        first = _beat(watcher, run_id)
        _until(lambda: _beat(watcher, run_id) != first, 30, "the first heartbeat (its own session)")
        assert end_sessions(pg_server) == 2  # the run's and its heartbeat's, mid-playbook
        watcher.execute("UPDATE provision_runs SET heartbeat_at = ?", (OLD_BEAT,))
        _until(lambda: _beat(watcher, run_id) != OLD_BEAT, 30, "a heartbeat on a new session")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "successful" and "Traceback" not in err
    assert runs.status_of(watcher, run_id) == "successful"
    assert locks.held(watcher, include_stale=True) == []


ENV_PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: What a task's process inherits
      ansible.builtin.shell: "env > {{ marker_dir }}/env.txt; sleep 3"
      changed_when: false
"""


def test_fleetctl_dbs_password_reaches_neither_ansible_nor_the_run_artifacts(
        tmp_path: Path, url: str, watcher: pg.PgConnection) -> None:
    playbook = tmp_path / "env.yml"
    playbook.write_text(ENV_PLAYBOOK)
    proc = _provision(tmp_path, url, playbook, env={"PGPASSWORD": PASSWORD})
    seen: dict[str, bytes] = {}
    try:
        _running_run(watcher, proc)
        _until(lambda: (tmp_path / "markers" / "env.txt").exists(), 60, "the task's env dump")
        for child in psutil.Process(proc.pid).children(recursive=True):  # the watchdog, ansible, the task
            try:
                seen[" ".join(child.cmdline())[:80]] = b"\0".join(
                    f"{k}={v}".encode() for k, v in child.environ().items())
            except psutil.Error:
                continue  # ended meanwhile
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert any("orphan_guard" in c for c in seen) and any("ansible-playbook" in c for c in seen), list(seen)
    assert [c for c, environ in seen.items() if PASSWORD.encode() in environ] == []
    dumped = (tmp_path / "markers" / "env.txt").read_text()
    assert PASSWORD not in dumped
    assert "FLEETCTL_DB=postgresql://fleet:***@127.0.0.1:" in dumped and "PGPASSWORD=***" in dumped
    files = [p for p in (tmp_path / "xdg").rglob("*") if p.is_file()]
    command = [p for p in files if p.name == "command"]
    assert command and "postgresql://fleet:***@" in json.loads(command[0].read_text())["env"]["FLEETCTL_DB"]
    assert [p for p in files if PASSWORD.encode() in p.read_bytes()] == []
    assert PASSWORD not in out + err


# --- a frozen client cannot hold the writer lock -------------------------------------------------


def test_a_stopped_client_inside_a_transaction_loses_its_session_and_the_writer_lock(url: str) -> None:
    code = ("import sys, time; from fleetctl.state import db, pg; "
            "pg.IDLE_IN_TRANSACTION_TIMEOUT = '1s'; "
            f"c = db.connect({url!r}); db.transaction(c).__enter__(); "
            "print('locked', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        os.kill(child.pid, signal.SIGSTOP)  # Ctrl-Z: the process holds its session, silent
        c = db.connect(url)
        started = time.monotonic()
        hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="after")
        assert time.monotonic() - started < 10  # well under the 30 s lock_timeout
    finally:
        child.kill()
        child.wait(timeout=10)


def test_sessions_carry_the_idle_timeout_and_keepalives_and_the_url_may_change_them(url: str) -> None:
    c = pg.connect(url)
    shown = {name: str(c.execute(f"SHOW {name}").fetchone()[0]) for name in (
        "idle_in_transaction_session_timeout", "tcp_keepalives_idle", "tcp_keepalives_interval",
        "tcp_keepalives_count", "lock_timeout")}
    assert shown == {"idle_in_transaction_session_timeout": "1min", "tcp_keepalives_idle": "30",
                     "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3", "lock_timeout": "30s"}
    mine = pg.connect(url + "?keepalives_idle=7&options=-c%20idle_in_transaction_session_timeout%3D5s")
    assert str(mine.execute("SHOW tcp_keepalives_idle").fetchone()[0]) == "7"
    assert str(mine.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0]) == "5s"


# --- reaping decides under the writer lock -------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reap_never_marks_a_run_that_beat_after_the_reader_judged_it_dead(
        backend: str, tmp_path: Path, pg_server: PostgresServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    where = str(tmp_path / "state.db") if backend == "sqlite" else new_database(pg_server)
    reader = db.connect(where, schema=runs.SCHEMA)  # `fleetctl runs list` on another bastion
    run = db.connect(where, schema=runs.SCHEMA)  # the run's heartbeat, on its own machine
    runs.start(run, _record("run-1", machine="bastion-2"))  # silent for years: stale
    real = runs.transaction

    def beat_first(conn: db.Connection, **kwargs: bool) -> db.transaction:
        # the run beats between the reader's first look and its write
        run.execute("UPDATE provision_runs SET heartbeat_at = ? WHERE id = 'run-1'", (runs.now_iso(),))
        return real(conn, **kwargs)

    monkeypatch.setattr(runs, "transaction", beat_first)
    assert runs.reap(reader) == []
    assert runs.status_of(reader, "run-1") == "running"
    monkeypatch.undo()
    run.execute("UPDATE provision_runs SET heartbeat_at = ? WHERE id = 'run-1'", (OLD_BEAT,))
    assert runs.reap(reader) == ["run-1"]  # truly silent: reaped
    assert runs.status_of(run, "run-1") == "interrupted"
