"""fleetctl's state on a real PostgreSQL: migrations, identity, the writer lock across processes,
connection errors in one line with the password masked, the CLI with a URL."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from postgres_server import PASSWORD, PostgresServer, new_database, pg_server  # noqa: F401 - a fixture

from fleetctl.errors import StateDatabaseError
from fleetctl.state import db, lifecycle, locks, pg
from fleetctl.state import hosts as hs

pytestmark = pytest.mark.integration

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")


@pytest.fixture()
def url(pg_server: PostgresServer) -> str:  # noqa: F811
    """A fresh database for the test."""
    return new_database(pg_server)


def _raw(url: str) -> pg.PgConnection:
    """A connection that runs SQL as written (translated), with no fleetctl open logic."""
    return pg.connect(url)


# --- schema versions and identity --------------------------------------------------------------


def _open_and_note(url: str, log: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    """In a child: note each migration step this process runs, open the database, exit 0 if current."""
    steps = dict(db.MIGRATIONS)

    def noted(version: int) -> Callable[[db.Connection], None]:
        def step(conn: db.Connection) -> None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {version}\n")
            steps[version](conn)
        return step

    db.MIGRATIONS.update({v: noted(v) for v in steps})
    barrier.wait(timeout=30)
    c = db.connect(url)
    current = isinstance(c, pg.PgConnection) and c.version == db.SCHEMA_VERSION
    c.close()
    sys.exit(0 if current else 3)


def _race_open(url: str, log: Path, n: int = 4) -> list[str]:
    """``n`` processes open ``url`` at the same moment; the migration steps they ran ("pid version")."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_open_and_note, args=(url, str(log), barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n
    return log.read_text().splitlines() if log.exists() else []


def test_a_v0_database_opened_by_several_processes_at_once_is_migrated_once(url: str,
                                                                            tmp_path: Path) -> None:
    raw = _raw(url)
    # the unversioned layout: host_state with a row, and no meta table
    raw.execute("CREATE TABLE host_state (host TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, "
                "actor TEXT, updated_at REAL NOT NULL, owner TEXT, run_id TEXT)")
    raw.execute("INSERT INTO host_state VALUES ('h1', 'drained', 'fan', 'bob', 1.5, NULL, NULL)")
    steps = _race_open(url, tmp_path / "steps.log")
    # each step ran in exactly one process
    assert sorted(line.split()[1] for line in steps) == [str(v) for v in range(db.SCHEMA_VERSION)], steps
    assert len({line.split()[0] for line in steps}) == 1, steps
    c = db.connect(url)
    assert pg.read_meta(c) == {"application": "fleetctl", "schema_version": str(db.SCHEMA_VERSION)}  # type: ignore[arg-type]
    assert hs.get(c, "h1").state is hs.DrainState.DRAINED and hs.get(c, "h1").updated_at == 1.5
    assert lifecycle.get(c, "h1").state is lifecycle.LifeState.NEW  # version 2's tables exist


def test_a_v1_database_gets_the_lifecycle_once_and_a_current_one_is_left_alone(url: str,
                                                                              tmp_path: Path) -> None:
    raw = _raw(url)
    for statement in db._layout_v1():
        raw.execute(statement)
    pg.write_meta(raw, 1)
    ran = [line.split()[1] for line in _race_open(url, tmp_path / "a.log")]
    assert ran == [str(v) for v in range(1, db.SCHEMA_VERSION)]
    assert _race_open(url, tmp_path / "b.log") == []  # current: nothing runs again


def test_a_newer_database_is_read_but_never_written(url: str) -> None:
    c = db.connect(url)
    hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="r")
    pg.write_meta(c, db.SCHEMA_VERSION + 1)  # type: ignore[arg-type]
    c.close()
    newer = db.connect(url)
    assert isinstance(newer, pg.PgConnection) and newer.newer and newer.version == db.SCHEMA_VERSION + 1
    assert hs.get(newer, "h1").state is hs.DrainState.CORDONED
    newer_text = rf"schema version {db.SCHEMA_VERSION + 1}, written by a newer"
    with pytest.raises(StateDatabaseError, match=newer_text):
        hs.transition(newer, "h1", hs.DrainState.ACTIVE, actor="bob")
    # the backstop: even a write that skipped the check is refused by the server
    with pytest.raises(pg.PostgresError, match="read-only transaction"):
        newer.execute("DELETE FROM host_state")
    assert db.read_only(newer)


def test_another_programs_database_is_refused_in_one_line_and_left_as_it_was(url: str) -> None:
    raw = _raw(url)
    raw.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    with pytest.raises(StateDatabaseError) as info:
        db.connect(url)
    message = str(info.value)
    assert message.endswith("not a fleetctl state database (it has tables orders); use another --db")
    assert PASSWORD not in message and ":***@" in message and "\n" not in message
    assert pg.tables(raw) == {"orders"}
    raw.execute("DROP TABLE orders")
    raw.execute(pg.META_DDL)
    raw.execute("INSERT INTO fleetctl_meta VALUES ('application', 'someone-else'), ('schema_version', '1')")
    with pytest.raises(StateDatabaseError, match="its fleetctl_meta table is another program's"):
        db.connect(url)


def test_timestamps_keep_their_fractions_and_hosts_sort_as_on_sqlite(url: str) -> None:
    c = db.connect(url)
    before = time.time()
    hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="r")
    stored = hs.get(c, "h1").updated_at
    assert stored is not None and before <= stored <= time.time() and stored != int(stored)
    assert hs.audit(c, "h1")[0].at == stored  # double precision: the exact float back
    holder = locks.Holder("r1", "test", "bob", "m", 1)
    names = ["b-2", "B-1", "a_1", "a-1", "a1"]
    locks.acquire(c, names, holder)
    # byte order (SQLite's), whatever the database's locale would say
    assert [lk.host for lk in locks.held(c, include_stale=True)] == sorted(names)


# --- the writer lock ---------------------------------------------------------------------------


def test_a_second_writer_waits_for_the_first_to_commit(url: str) -> None:
    first, second = db.connect(url), db.connect(url)
    order: list[str] = []
    with db.transaction(first):
        first.execute("INSERT INTO host_health VALUES ('h1', 1, NULL, 1.0, 'test')")

        def other() -> None:
            with db.transaction(second):
                order.append("second in")

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.5)
        order.append("first commits")
    thread.join(timeout=10)
    assert order == ["first commits", "second in"]


def _hold_the_lock_forever(url: str) -> None:
    c = db.connect(url)
    db.transaction(c).__enter__()
    hs._write(c, "h9", hs.get(c, "h9"), hs.DrainState.CORDONED, actor="killed", reason="r", note=None,
              owner=None, run_id=None)
    print("locked", flush=True)
    time.sleep(600)


def test_a_writer_killed_mid_transaction_leaves_nothing_half_done_and_blocks_no_one(url: str) -> None:
    here = str(Path(__file__).parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); "
            f"from test_state_postgres import _hold_the_lock_forever as h; h({url!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        c = db.connect(url)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        started = time.monotonic()
        hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="after")
        assert time.monotonic() - started < 10  # the server ended the session: its lock went with it
        assert hs.get(c, "h9").state is hs.DrainState.ACTIVE  # the killed writer's change rolled back
    finally:
        if child.poll() is None:
            child.kill()


def _reserve_one(args: tuple[str, str, int]) -> bool:
    url, host, limit = args
    c = db.connect(url)
    try:
        hs.reserve(c, [host], pool=[f"h{i}" for i in range(12)], limit=limit, scheduler_unavailable=[],
                   actor=f"p{os.getpid()}", reason="r")
        return True
    except hs.BudgetExceeded:
        return False
    finally:
        c.close()


def test_concurrent_reservations_in_separate_processes_never_exceed_the_limit(url: str) -> None:
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        granted = pool.map(_reserve_one, [(url, f"h{i}", 3) for i in range(12)])
    assert sum(granted) == 3
    c = db.connect(url)
    assert hs.unavailable_count(c, [f"h{i}" for i in range(12)]) == 3
    assert len([e for e in hs.audit(c) if e.to_state == "cordoned"]) == 3


# --- connection errors: one line, exit 2, the password never shown -----------------------------


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def _cli_error(url: str, *args: str, timeout: float = 60) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([FLEETCTL, "runs", "list", "--db", url, *args], capture_output=True, text=True,
                          timeout=timeout)
    took = time.monotonic() - started
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "hunter2" not in done.stderr and PASSWORD not in done.stderr and "Zq9" not in done.stderr
    return took, lines[0]


def test_connection_errors_are_one_line_naming_the_masked_url(pg_server: PostgresServer) -> None:  # noqa: F811
    port = pg_server.port
    _, line = _cli_error(f"postgresql://fleet:hunter2@127.0.0.1:{_refused_port()}/x")
    assert line.startswith("fleetctl runs: state database postgresql://fleet:***@127.0.0.1:")
    assert "refused" in line
    _, line = _cli_error(f"postgresql://fleet:hunter2@127.0.0.1:{port}/postgres")
    assert f"postgresql://fleet:***@127.0.0.1:{port}/postgres" in line
    assert "password authentication failed" in line
    _, line = _cli_error(pg_server.url("no_such_db"))
    assert "postgresql://fleet:***@" in line and '"no_such_db" does not exist' in line


@pytest.mark.parametrize("url", [
    "postgresql://fleet:Zq9x@[::1/postgres", "postgresql://fleet:Zq9%zz@127.0.0.1/postgres",
    "postgresql://fleet:Zq9%00x@127.0.0.1/postgres", "postgresql://fleet:Zq9@x@127.0.0.1/postgres",
])
def test_a_url_libpq_cannot_parse_is_one_line_that_quotes_nothing_of_it(url: str) -> None:
    """libpq's parse errors quote the URL, password and all: none of its words are shown."""
    _, line = _cli_error(url)
    assert line == ("fleetctl runs: state database postgresql://***: not a valid PostgreSQL URL "
                    "(a user name or password must percent-encode @ and /, as %40 and %2F)")


def test_a_server_that_never_answers_fails_within_the_connect_timeout() -> None:
    with socket.socket() as silent:  # accepts TCP (the backlog) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        took, line = _cli_error(f"postgresql://fleet:hunter2@127.0.0.1:{port}/x?connect_timeout=2")
        assert took < 15 and "timeout" in line.lower(), line
        started = time.monotonic()
        with pytest.raises(StateDatabaseError):
            db.connect(f"postgresql://fleet:hunter2@127.0.0.1:{port}/x")  # the default: 10 s
        assert 5 < time.monotonic() - started < 25


# --- the CLI with a URL ------------------------------------------------------------------------


def test_the_cli_shares_one_database_and_never_shows_the_password(url: str, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  vars: {fleet_scheduler: none}\n  hosts:\n    h1: {}\n    h2: {}\n")
    env = {**os.environ, "FLEETCTL_INVENTORY": str(inventory), "FLEETCTL_CACHE_DIR": str(tmp_path / "cache"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([FLEETCTL, "hosts", "set", "h1", "burn_in", "--reason", "new board", "--db",
                           url], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    # another process, the URL from the environment: sees what the first wrote
    done = subprocess.run([FLEETCTL, "hosts", "--json"], capture_output=True, text=True, timeout=120,
                          env={**env, "FLEETCTL_DB": url})
    assert done.returncode == 0, done.stderr
    assert '"state": "burn_in"' in done.stdout and '"reason": "new board"' in done.stdout
    done = subprocess.run([FLEETCTL, "runs", "list", "--db", url], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and PASSWORD not in done.stderr + done.stdout
    assert "no provision runs in postgresql://fleet:***@127.0.0.1:" in done.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*.db"))


def test_a_role_with_only_data_privileges_runs_every_command_on_a_current_database(url: str) -> None:
    """docs/state.md: every table is a migration's, so at the current version no command needs CREATE."""
    from fleetctl.state import burnin, remediation, runs

    db.connect(url).close()  # the owner creates the database's tables (the migrations)
    name = url.rsplit("/", 1)[1]
    raw = _raw(url)
    raw.execute("DROP ROLE IF EXISTS fleet_sre")
    raw.execute("CREATE ROLE fleet_sre LOGIN PASSWORD 'sre-pw'")
    raw.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    raw.execute(f'GRANT CONNECT ON DATABASE "{name}" TO fleet_sre')
    raw.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO fleet_sre")
    raw.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO fleet_sre")
    raw.close()
    sre = url.replace(f"fleet:{PASSWORD}@", "fleet_sre:sre-pw@")
    assert sre != url
    for schema in (hs.SCHEMA, (*runs.SCHEMA, *locks.SCHEMA), burnin.SCHEMA, remediation.SCHEMA):
        c = db.connect(sre, schema=schema)  # CREATE ... IF NOT EXISTS would need CREATE: none is run
        c.close()
    c = db.connect(sre, schema=remediation.SCHEMA)
    hs.transition(c, "h1", hs.DrainState.CORDONED, actor="bob", reason="r")  # with its audit row
    lifecycle.set_state(c, "h1", lifecycle.LifeState.SUSPECT, actor="bob", reason="xid 79")
    assert hs.get(c, "h1").state is hs.DrainState.CORDONED
    assert lifecycle.get(c, "h1").state is lifecycle.LifeState.SUSPECT
    c.close()
