"""``fleetctl runs list`` / ``fleetctl runs show ID``: the provision run history."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleetctl.commands import add, group
from fleetctl.commands.params import DbOpt, JsonOpt

if TYPE_CHECKING:
    import sqlite3


def register(app: typer.Typer) -> None:
    runs = group(app, "runs", help="Provision run history.")
    add(runs, "list", list_command, label="runs")
    add(runs, "show", show_command, label="runs")


@contextlib.contextmanager
def _database(db_path: Path | None) -> Iterator[sqlite3.Connection]:
    """The run database; a missing, corrupt or unreadable one is one line naming it (exit 2)."""
    from fleetctl.errors import state_database
    from fleetctl.state import db, runs

    path = db_path or db.default_path()
    with state_database(path):
        conn = runs.connect(path)
        try:
            yield conn
        finally:
            conn.close()


def list_command(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 20,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status.")] = None,
    json_output: JsonOpt = False,
    db_path: DbOpt = None,
) -> None:
    """Recent provision runs, newest first."""
    from fleetctl.state import runs
    from fleetctl.validation import one_of

    if status is not None:
        one_of("--status", status, runs.STATUSES)
    with _database(db_path) as conn:
        records = runs.list_runs(conn, limit=limit, status=status)
    if json_output:
        from fleetctl.views.console import print_json

        print_json([r.to_dict() for r in records])
        return
    from fleetctl.views.runs import print_runs

    print_runs(records)


def show_command(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    json_output: JsonOpt = False,
    db_path: DbOpt = None,
) -> None:
    """One run: its options, status and per-host results (worst first)."""
    from fleetctl.errors import UsageError
    from fleetctl.state import runs

    with _database(db_path) as conn:
        record = runs.get(conn, run_id)
    if record is None:
        raise UsageError(f"no run {run_id!r} (or the prefix is ambiguous)")
    if json_output:
        from fleetctl.views.console import print_json

        print_json(record.to_dict())
        return
    from fleetctl.views.runs import print_run

    print_run(record)
