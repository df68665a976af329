"""The database that holds fleetctl's state: an embedded SQLite file (the default), or PostgreSQL.

``--db``/``FLEETCTL_DB`` may name a PostgreSQL URL (``postgresql://user@host/db``) so that a team
shares its locks, leases, lifecycle and budgets (docs/state.md): the same schema, migrations and
semantics through :mod:`fleetctl.state.pg`, with a transaction-scoped advisory lock where SQLite has
its single writer, and the schema version in a small meta table. Callers see one interface,
:class:`Connection`.

SQLite: one file, WAL mode (readers never block the writer), a busy timeout so concurrent fleetctl
invocations queue instead of failing, and every write in a transaction (atomic). The default
location follows XDG; ``FLEETCTL_DB`` or a command's ``--db`` flag overrides it.

Schema versions. The file's ``PRAGMA user_version`` says which layout it holds and
``PRAGMA application_id`` marks it as fleetctl's. On opening, a file at an older version is migrated
forward, one step per version, inside one ``BEGIN IMMEDIATE`` transaction (two fleetctls opening an
old file at once migrate it once). Version 0 is the layout of fleetctl before versions existed
(``host_state``, ``host_audit``, ``host_locks``, ``provision_runs``, ``provision_run_hosts``; any of
them may be missing): step 1 creates whatever is missing and stamps the file. A file written by a
*newer* fleetctl is opened read-only: reading commands (``status``, ``runs list``) work, the first
write is refused with one line naming both versions (:func:`require_writable`).

On PostgreSQL the version and the identity live in the ``fleetctl_meta`` table (PostgreSQL has no
``user_version``/``application_id``); migrations run under the writer lock, so two processes opening
an old database migrate it once; a newer version is read-only the same way; a database holding
other tables and no ``fleetctl_meta`` is refused.

Version 2 adds the host lifecycle (``host_lifecycle``, ``lifecycle_audit``, ``host_health``:
:mod:`fleetctl.state.lifecycle`). Version 3 adds burn-in results (:mod:`fleetctl.state.burnin`) and
the remediation loop's observations, records, steps and lease (:mod:`fleetctl.state.remediation`).

Privacy. The file holds who drained what and why, and provision options: it is created ``0600``,
and an existing file (or its ``-wal``/``-shm``) readable by others is tightened to owner-only when
this user owns it (nothing else needs the access, and refusing would only stop the SRE), else refused
(it is not ours to change). Only the default directory is created; ``--db`` into a missing directory
is an error, not a silent ``mkdir`` of a mistyped path.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fleetctl.errors import StateDatabaseError
from fleetctl.state import pg
from fleetctl.state.location import ENV_VAR as ENV_VAR  # re-exported: db.ENV_VAR
from fleetctl.state.location import local_state_dir, location, url_of

SCHEMA_VERSION = 3
# "FLTC": marks the file as fleetctl's state (sqlite's application_id, shown by `file(1)`).
APPLICATION_ID = 0x464C5443
_OURS = ("host_state", "host_audit", "host_locks", "provision_runs", "provision_run_hosts")


def _xdg_path() -> Path:
    return local_state_dir() / "fleetctl.db"


def default_path() -> Path:
    """``$FLEETCTL_DB`` (a path or a PostgreSQL URL: :class:`StateLocation`), else
    ``$XDG_STATE_HOME/fleetctl/fleetctl.db`` (~/.local/state/...)."""
    if os.environ.get(ENV_VAR):
        return location(os.environ[ENV_VAR])
    return _xdg_path()


class Cursor(Protocol):
    """What a query returns on either backend (``sqlite3.Cursor``, psycopg's cursor)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Row(Protocol):
    """A result row, by position or by column name (``sqlite3.Row``, :class:`pg.Row`)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Connection(Protocol):
    """A state connection: SQLite's (:class:`StateConnection`) or PostgreSQL's (:class:`pg.PgConnection`).

    Rows are indexable by position and by column name on both. Autocommit: writes go in
    ``with transaction(conn):``.
    """

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    def close(self) -> None: ...


class StateConnection(sqlite3.Connection):
    """A connection that knows the file's schema version; ``newer`` files are read-only."""

    path: Path
    version: int = SCHEMA_VERSION

    @property
    def newer(self) -> bool:
        return self.version > SCHEMA_VERSION


def read_only(conn: Connection) -> bool:
    """A database written by a newer fleetctl: read, never changed."""
    return isinstance(conn, StateConnection | pg.PgConnection) and conn.newer


def require_writable(conn: Connection) -> None:
    """Refuse (one line, exit 2) to change a database written by a newer fleetctl."""
    if isinstance(conn, StateConnection | pg.PgConnection) and conn.newer:
        raise StateDatabaseError(
            f"state database {conn.path} is schema version {conn.version}, written by a newer fleetctl; "
            f"this fleetctl knows up to version {SCHEMA_VERSION}: it can read it (status, hosts, runs list) "
            "but changes nothing: upgrade fleetctl")


def _layout_v1() -> list[str]:
    """The tables of version 1: the unversioned layout, each module's own DDL (idempotent)."""
    from fleetctl.state import hosts, locks, runs

    return [*hosts.SCHEMA, *locks.SCHEMA, *runs.SCHEMA]


def _step_1(conn: Connection) -> None:
    for statement in _layout_v1():
        conn.execute(statement)


def _step_2(conn: Connection) -> None:
    from fleetctl.state import lifecycle

    for statement in lifecycle.SCHEMA:  # new tables only: nothing to copy
        conn.execute(statement)


def _layout_v3() -> list[str]:
    """Version 3's new tables: burn-in results and the remediation loop's records and lease."""
    from fleetctl.state import burnin, remediation

    return [*burnin.SCHEMA, *remediation.SCHEMA]


def _step_3(conn: Connection) -> None:
    for statement in _layout_v3():  # new tables only: nothing to copy
        conn.execute(statement)


# MIGRATIONS[n] takes a file from version n to n + 1. A new version appends a step (ALTER TABLE,
# a data copy) and raises SCHEMA_VERSION; a step never edits a table's earlier DDL in place.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {0: _step_1, 1: _step_2, 2: _step_3}


def _tighten(path: Path) -> None:
    """Owner-only access to ``path`` if it exists; refused if another user owns a looser file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if not loose:
        return
    if st.st_uid != os.geteuid():
        raise StateDatabaseError(
            f"state database {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}) and owned "
            f"by uid {st.st_uid}, not this user: chmod go-rwx it (as its owner) or use another --db")
    path.chmod(stat.S_IMODE(st.st_mode) & 0o700)  # drop group/other bits, never add any


def _companions(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def _prepare_file(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        if path == _xdg_path() and not parent.exists():
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            what = "is not a directory" if parent.exists() else "does not exist"
            raise StateDatabaseError(f"state database {path}: directory {parent} {what} (create it first)")
    if not path.exists():
        # Created here, owner-only, before sqlite sees it: sqlite gives -wal/-shm the file's mode.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except PermissionError:
            pass  # sqlite's own error names the problem when it tries
    for p in _companions(path):
        _tighten(p)


def _migrate(conn: StateConnection) -> None:
    with transaction(conn, check=False):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            _refuse_foreign(conn)
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _refuse_foreign(conn: StateConnection) -> None:
    """An unversioned file with tables but none of fleetctl's is another program's database."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    tables.discard("sqlite_sequence")
    if tables and not tables & set(_OURS):
        raise StateDatabaseError(f"state database {conn.path}: not a fleetctl state database (it has "
                                 f"tables {', '.join(sorted(tables)[:5])}); use another --db")


def _layout() -> set[str]:
    from fleetctl.state import lifecycle

    return {" ".join(s.split()) for s in (*_layout_v1(), *lifecycle.SCHEMA, *_layout_v3())}


def _connect_pg(url: str, schema: Iterable[str]) -> pg.PgConnection:
    conn = pg.connect(url)
    try:
        conn.version = _pg_version(conn, pg.read_meta(conn))
        conn.newer = conn.version > SCHEMA_VERSION
        if conn.newer:
            conn.set_session("SET default_transaction_read_only = on")  # a backstop behind require_writable
            return conn
        # A current database needs no DDL: a role with only the data privileges can use it.
        extra = [s for s in schema if " ".join(s.split()) not in _layout()]
        if conn.version < SCHEMA_VERSION or extra:
            with transaction(conn, check=False):  # under the writer lock: one migration, no DDL race
                version = _pg_version(conn, pg.read_meta(conn))
                if version == 0:
                    _refuse_foreign_pg(conn)
                start = version
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](conn)
                    version += 1
                if version != start:
                    pg.write_meta(conn, version)
                if version == SCHEMA_VERSION:
                    for statement in extra:
                        conn.execute(statement)
            conn.version = version
            conn.newer = version > SCHEMA_VERSION
    except BaseException:
        conn.close()
        raise
    return conn


def _pg_version(conn: pg.PgConnection, meta: dict[str, str] | None) -> int:
    if meta is None:
        return 0
    if meta.get("application") != pg.APPLICATION or not meta.get("schema_version", "").isdigit():
        raise StateDatabaseError(f"state database {conn.path}: not a fleetctl state database (its "
                                 f"{pg.META_TABLE} table is another program's); use another --db")
    return int(meta["schema_version"])


def _refuse_foreign_pg(conn: pg.PgConnection) -> None:
    tables = pg.tables(conn) - {pg.META_TABLE}
    if tables and not tables & set(_OURS):
        raise StateDatabaseError(f"state database {conn.path}: not a fleetctl state database (it has "
                                 f"tables {', '.join(sorted(tables)[:5])}); use another --db")


def connect(path: Path | str | None = None, *, schema: Iterable[str] = ()) -> Connection:
    """Open (creating if needed) the database at ``path``, migrated to :data:`SCHEMA_VERSION`.

    ``schema`` holds idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) owned by the module that
    uses the tables, so each part of fleetctl declares its own tables next to its code; every
    table of the current version exists after the migration anyway. A file of a newer version is
    opened read-only and ``schema`` is not applied. The connection is in autocommit mode; use
    ``with transaction(conn):`` for atomic writes.

    ``path`` may be a PostgreSQL URL (a :class:`StateLocation` or the text): then the database is
    that server's, opened the same way (:func:`_connect_pg`).
    """
    path = location(path) if path else default_path()
    url = url_of(path)
    if url is not None:
        return _connect_pg(url, schema)
    _prepare_file(path)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, factory=StateConnection)
    assert isinstance(conn, StateConnection)
    conn.path = path
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        if app_id not in (0, APPLICATION_ID):
            raise StateDatabaseError(f"state database {path}: not a fleetctl state database "
                                     f"(application_id {app_id:#x}); use another --db")
        conn.version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if conn.newer:
            conn.execute("PRAGMA query_only=ON")  # a backstop behind require_writable
        else:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.version < SCHEMA_VERSION:
                _migrate(conn)
                conn.version = SCHEMA_VERSION
            for statement in schema:
                conn.execute(statement)
        conn.execute("PRAGMA foreign_keys=ON")
        for p in _companions(path)[1:]:  # created by sqlite just now, with the file's mode
            _tighten(p)
    except BaseException:
        conn.close()
        raise
    return conn


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error); on PostgreSQL ``BEGIN`` and
    ``pg_advisory_xact_lock`` (:meth:`pg.PgConnection.begin_write`).

    IMMEDIATE (the advisory lock) takes the write lock up front, so a read-check-write sequence (e.g. counting
    unavailable hosts before draining one more) is serialised across processes. A database of a
    newer schema version refuses here, before anything is written.
    """

    def __init__(self, conn: Connection, *, check: bool = True) -> None:
        self.conn = conn
        self.check = check

    def __enter__(self) -> Connection:
        if self.check:
            require_writable(self.conn)
        if isinstance(self.conn, pg.PgConnection):
            self.conn.begin_write()
        else:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif isinstance(self.conn, pg.PgConnection):
            self.conn.rollback()  # nothing to send on a lost session: the server discarded it
        else:
            self.conn.execute("ROLLBACK")
