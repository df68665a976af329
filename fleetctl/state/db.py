"""The embedded SQLite database that holds fleetctl's state.

One file, WAL mode (readers never block the writer), a busy timeout so concurrent fleetctl
invocations queue instead of failing, and every write in a transaction (atomic). The default
location follows XDG; ``FLEETCTL_DB`` or a command's ``--db`` flag overrides it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

ENV_VAR = "FLEETCTL_DB"


def default_path() -> Path:
    """``$FLEETCTL_DB``, else ``$XDG_STATE_HOME/fleetctl/fleetctl.db`` (~/.local/state/...)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fleetctl" / "fleetctl.db"


def connect(path: Path | None = None, *, schema: Iterable[str] = ()) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` and apply ``schema`` statements.

    ``schema`` holds idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) owned by the module that
    uses the tables, so each part of fleetctl declares its own tables next to its code.
    The connection is in autocommit mode; use ``with transaction(conn):`` for atomic writes.
    """
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    for statement in schema:
        conn.execute(statement)
    return conn


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error).

    IMMEDIATE takes the write lock up front, so a read-check-write sequence (e.g. counting
    unavailable hosts before draining one more) is serialised across processes.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
