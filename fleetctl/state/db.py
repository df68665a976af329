"""The embedded SQLite database that holds fleetctl's state.

One file, WAL mode (readers never block the writer), a busy timeout so concurrent fleetctl
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

Version 2 adds the host lifecycle (``host_lifecycle``, ``lifecycle_audit``, ``host_health``:
:mod:`fleetctl.state.lifecycle`).

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
from collections.abc import Callable, Iterable
from pathlib import Path

from fleetctl.errors import StateDatabaseError

ENV_VAR = "FLEETCTL_DB"
SCHEMA_VERSION = 2
# "FLTC": marks the file as fleetctl's state (sqlite's application_id, shown by `file(1)`).
APPLICATION_ID = 0x464C5443
_OURS = ("host_state", "host_audit", "host_locks", "provision_runs", "provision_run_hosts")


def _xdg_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleetctl" / "fleetctl.db"


def default_path() -> Path:
    """``$FLEETCTL_DB``, else ``$XDG_STATE_HOME/fleetctl/fleetctl.db`` (~/.local/state/...)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return _xdg_path()


class StateConnection(sqlite3.Connection):
    """A connection that knows the file's schema version; ``newer`` files are read-only."""

    path: Path
    version: int = SCHEMA_VERSION

    @property
    def newer(self) -> bool:
        return self.version > SCHEMA_VERSION


def require_writable(conn: sqlite3.Connection) -> None:
    """Refuse (one line, exit 2) to change a database written by a newer fleetctl."""
    if isinstance(conn, StateConnection) and conn.newer:
        raise StateDatabaseError(
            f"state database {conn.path} is schema version {conn.version}, written by a newer fleetctl; "
            f"this fleetctl knows up to version {SCHEMA_VERSION}: it can read it (status, hosts, runs list) "
            "but changes nothing: upgrade fleetctl")


def _layout_v1() -> list[str]:
    """The tables of version 1: the unversioned layout, each module's own DDL (idempotent)."""
    from fleetctl.state import hosts, locks, runs

    return [*hosts.SCHEMA, *locks.SCHEMA, *runs.SCHEMA]


def _step_1(conn: sqlite3.Connection) -> None:
    for statement in _layout_v1():
        conn.execute(statement)


def _step_2(conn: sqlite3.Connection) -> None:
    from fleetctl.state import lifecycle

    for statement in lifecycle.SCHEMA:  # new tables only: nothing to copy
        conn.execute(statement)


# MIGRATIONS[n] takes a file from version n to n + 1. A new version appends a step (ALTER TABLE,
# a data copy) and raises SCHEMA_VERSION; a step never edits a table's earlier DDL in place.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _step_1, 1: _step_2}


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


def connect(path: Path | None = None, *, schema: Iterable[str] = ()) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, migrated to :data:`SCHEMA_VERSION`.

    ``schema`` holds idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) owned by the module that
    uses the tables, so each part of fleetctl declares its own tables next to its code; every
    table of the current version exists after the migration anyway. A file of a newer version is
    opened read-only and ``schema`` is not applied. The connection is in autocommit mode; use
    ``with transaction(conn):`` for atomic writes.
    """
    path = path or default_path()
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
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error).

    IMMEDIATE takes the write lock up front, so a read-check-write sequence (e.g. counting
    unavailable hosts before draining one more) is serialised across processes. A database of a
    newer schema version refuses here, before anything is written.
    """

    def __init__(self, conn: sqlite3.Connection, *, check: bool = True) -> None:
        self.conn = conn
        self.check = check

    def __enter__(self) -> sqlite3.Connection:
        if self.check:
            require_writable(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
