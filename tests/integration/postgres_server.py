"""A real PostgreSQL for tests of the shared state backend: Debian's ``postgresql`` package, started here.

``initdb`` + ``postgres`` from ``/usr/lib/postgresql/<version>/bin`` (the newest installed), with the
data directory and the Unix socket in a private temp directory, listening on 127.0.0.1 on a port of
39540-39559 (``FLEETCTL_TEST_PG_PORTS=LO-HI`` picks another range). PostgreSQL refuses to run as
root: as root it runs as the ``postgres`` user (setpriv).
Password authentication over TCP (scram), so a test can also get a wrong password refused.

Fixtures: ``pg_server`` (one server for the whole session, shared by every module that imports it,
stopped at the end) and ``pg_url`` (a fresh database per test, its URL). A missing PostgreSQL is a
test failure naming the package (never a skip): CI installs ``postgresql`` with apt.

The server trades durability for speed (``fsync=off``): the tests kill fleetctl clients, never it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest


def _port_range() -> tuple[int, int]:
    """39540-39559, or FLEETCTL_TEST_PG_PORTS=LO-HI (several test runs on one machine at once)."""
    lo, _, hi = os.environ.get("FLEETCTL_TEST_PG_PORTS", "39540-39559").partition("-")
    return int(lo), int(hi or lo)


PORT_LO, PORT_HI = _port_range()
USER = "fleet"
PASSWORD = "s3cret-pw"  # only ever on loopback, for a throwaway server


def bindir() -> Path:
    """The newest installed PostgreSQL's bin directory, or a test failure naming the package."""
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()
             and (d / "postgres").exists()]
    if not found:
        pytest.fail("PostgreSQL tests need Debian's postgresql package (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install -y postgresql", pytrace=False)
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _free_port() -> int:
    for port in range(PORT_LO, PORT_HI + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_LO}-{PORT_HI} for PostgreSQL")


@dataclass
class PostgresServer:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres", *, password: str | None = PASSWORD) -> str:
        auth = f"{USER}:{password}" if password is not None else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """One statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def log(self) -> str:
        path = self.base / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def start() -> PostgresServer:
    bins = bindir()
    # /tmp itself, not pytest's root-only tmp tree: the postgres user must reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="fleetctl-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in (base, sock, pwfile):
            os.chown(p, entry.pw_uid, entry.pw_gid)
    wrap = _as_postgres()
    done = subprocess.run([*wrap, str(bins / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                           "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
    port = _free_port()
    log = open(base / "postgres.log", "wb")  # the server's, for its whole life
    if os.geteuid() == 0:
        os.chown(base / "postgres.log", pwd.getpwnam("postgres").pw_uid, -1)
    proc = subprocess.Popen(
        [*wrap, str(bins / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
         "-c", f"unix_socket_directories={sock}", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    server = PostgresServer(base, port, proc)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            text = server.log()
            server.stop()
            raise RuntimeError(f"postgres exited {proc.returncode}: {text}")
        try:
            server.admin("SELECT 1")
            return server
        except Exception:  # not accepting connections yet
            if time.monotonic() > deadline:
                text = server.log()
                server.stop()
                raise RuntimeError(f"postgres did not accept connections within 60 s: {text}") from None
            time.sleep(0.2)


_shared: list[PostgresServer] = []
_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session, whichever modules import this fixture (each import is its own
    session fixture to pytest: the first starts the server, the last teardown stops it)."""
    if not _shared:
        _shared.append(start())
    _shared.append(_shared[0])  # one reference per importing module
    try:
        yield _shared[0]
    finally:
        _shared.pop()
        if len(_shared) == 1:
            _shared.pop().stop()


def end_sessions(server: PostgresServer, application_name: str = "fleetctl") -> int:
    """End every session of ``application_name`` as the server does on a restart or a failover
    (``pg_terminate_backend``); how many there were."""
    import psycopg

    with psycopg.connect(server.url(), autocommit=True, connect_timeout=10,
                         application_name="fleetctl-tests") as conn:
        row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = %s AND pid <> pg_backend_pid()",
                           (application_name,)).fetchone()
    return int(row[0]) if row else 0


def new_database(server: PostgresServer) -> str:
    """A fresh, empty database; its URL (with the password)."""
    name = f"t{os.getpid()}_{next(_names)}"
    server.admin(f'CREATE DATABASE "{name}"')
    return server.url(name)


@pytest.fixture()
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh database on the session's server for this test."""
    return new_database(pg_server)


# --- the state unit tests, again against PostgreSQL ---------------------------------------------------

UNIT_TESTS = Path(__file__).resolve().parents[1] / "unit"


def adopt_unit_tests(namespace: dict[str, object], modules: Sequence[str],
                     leave_out: Mapping[str, str] = MappingProxyType({})) -> None:
    """Copy into ``namespace`` (a test module's globals) every test of the unit ``modules`` that takes
    the ``conn`` fixture, and those modules' other fixtures, so that they run with the importing
    module's ``conn`` (a PostgreSQL connection) instead of the SQLite one of their own module.

    ``leave_out``: "module.test" -> why it cannot run on PostgreSQL (it is SQLite's own behaviour).
    """
    import importlib
    import inspect
    import sys

    from _pytest.fixtures import FixtureFunctionDefinition

    if str(UNIT_TESTS) not in sys.path:
        sys.path.insert(0, str(UNIT_TESTS))  # the unit modules import each other by name
    for name in modules:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if isinstance(obj, FixtureFunctionDefinition):
                if attr != "conn":
                    namespace.setdefault(attr, obj)
            elif (attr.startswith("test_") and inspect.isfunction(obj)
                  and "conn" in inspect.signature(obj).parameters and f"{name}.{attr}" not in leave_out):
                namespace[f"test_{name.removeprefix('test_')}__{attr.removeprefix('test_')}"] = obj
