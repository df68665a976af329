"""``fleetctl runs list`` / ``fleetctl runs show ID``: the provision run history."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl.commands import add, group
from fleetctl.commands.params import DbOpt, JsonOpt, OutputOpt

if TYPE_CHECKING:
    from fleetctl.state.db import Connection


class RunStatus(StrEnum):
    """fleetctl.state.runs.STATUSES, as choices the shell completes (a test keeps the two equal)."""

    running = "running"
    successful = "successful"
    failed = "failed"
    canceled = "canceled"
    interrupted = "interrupted"


def register(app: typer.Typer) -> None:
    runs = group(app, "runs", help="Provision run history.")
    add(runs, "list", list_command, label="runs")
    add(runs, "show", show_command, label="runs")


@contextlib.contextmanager
def _database(db_path: Path | None) -> Iterator[Connection]:
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
    status: Annotated[RunStatus | None, typer.Option("--status", help="Only runs with this status.")] = None,
    output: OutputOpt = None,
    json_output: JsonOpt = False,
    db_path: DbOpt = None,
) -> None:
    """Recent provision runs, newest first."""
    from fleetctl.state import runs
    from fleetctl.views.output import OutputFormat, emit, resolve

    fmt = resolve(output, as_json=json_output)
    with _database(db_path) as conn:
        records = runs.list_runs(conn, limit=limit, status=status.value if status else None)
    if not records and fmt in (OutputFormat.table, OutputFormat.wide):
        from fleetctl.state import db
        from fleetctl.views.text import echo

        which = f" with status {status.value}" if status else ""
        echo(f"no provision runs{which} in {db_path or db.default_path()}", err=True)
        return

    def table(wide: bool) -> None:
        from fleetctl.views.runs import print_runs

        print_runs(records, wide=wide)

    emit(fmt, doc=lambda: [r.to_dict() for r in records], names=lambda: [r.id for r in records], table=table)


def show_command(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    output: OutputOpt = None,
    json_output: JsonOpt = False,
    db_path: DbOpt = None,
) -> None:
    """One run: its options, status and per-host results (worst first)."""
    from fleetctl.errors import UsageError
    from fleetctl.state import runs
    from fleetctl.views.output import emit, resolve

    fmt = resolve(output, as_json=json_output)
    with _database(db_path) as conn:
        record = runs.get(conn, run_id)
    if record is None:
        raise UsageError(f"no run {run_id!r} (or the prefix is ambiguous)")
    found = record

    def doc() -> dict[str, Any]:
        return found.to_dict()

    def table(wide: bool) -> None:
        from fleetctl.views.runs import print_run

        print_run(found)

    emit(fmt, doc=doc, names=lambda: [found.id], table=table)
