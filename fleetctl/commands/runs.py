"""``fleetctl runs list`` / ``fleetctl runs show ID``: the provision run history."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from fleetctl.errors import EXIT_USAGE, first_line

runs_app = typer.Typer(help="Provision run history.", no_args_is_help=True)

DbOption = Annotated[Path | None, typer.Option("--db", help="State database (default: FLEETCTL_DB).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextlib.contextmanager
def _database(db_path: Path | None) -> Iterator[sqlite3.Connection]:
    """The run database; a missing, corrupt or unreadable one is one line naming it, exit 2."""
    from fleetctl.state import db, runs

    path = db_path or db.default_path()
    try:
        conn = runs.connect(path)
    except (OSError, sqlite3.Error) as exc:
        _fail(f"state database {path}: {first_line(exc)}")
    try:
        yield conn
    except sqlite3.Error as exc:
        _fail(f"state database {path}: {first_line(exc)}")
    finally:
        conn.close()


def _fail(message: str) -> NoReturn:
    typer.echo(f"fleetctl runs: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


@runs_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 20,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status.")] = None,
    json_output: JsonOption = False,
    db_path: DbOption = None,
) -> None:
    """Recent provision runs, newest first."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from fleetctl.progress import STATE_STYLE, make_console
    from fleetctl.state import runs

    if status is not None and status not in runs.STATUSES:
        Console(stderr=True).print(
            f"fleetctl runs: --status {status!r}: expected one of {', '.join(runs.STATUSES)}", markup=False
        )
        raise typer.Exit(EXIT_USAGE)
    with _database(db_path) as conn:
        records = runs.list_runs(conn, limit=limit, status=status)
    if json_output:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "status", "user", "started", "ended", "playbook", "pattern", "hosts"):
        table.add_column(column, no_wrap=column != "hosts")
    for r in records:
        counts = runs.summarize(r.hosts)
        hosts = ", ".join(f"{counts[s]} {s}" for s in STATE_STYLE if counts.get(s)) or "-"
        table.add_row(
            r.id, r.status, r.user, r.started_at, r.ended_at or "-", Path(r.playbook).name, r.pattern, hosts
        )
    make_console().print(table)


@runs_app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    json_output: JsonOption = False,
    db_path: DbOption = None,
) -> None:
    """One run: its options, status and per-host results (worst first)."""
    from rich.console import Console

    from fleetctl.progress import make_console, summary_table
    from fleetctl.state import runs

    with _database(db_path) as conn:
        record = runs.get(conn, run_id)
    if record is None:
        Console(stderr=True).print(
            f"fleetctl runs: no run {run_id!r} (or the prefix is ambiguous)", markup=False
        )
        raise typer.Exit(EXIT_USAGE)
    if json_output:
        print(json.dumps(record.to_dict(), indent=2))
        return
    console = make_console()
    console.print(f"run {record.id}: [bold]{record.status}[/bold]")
    fields = {
        "user": f"{record.user}@{record.machine} (pid {record.pid})",
        "started": record.started_at,
        "ended": record.ended_at or "-",
        "inventory": record.inventory,
        "pattern": record.pattern,
        "playbook": record.playbook,
        "options": json.dumps(record.options, sort_keys=True),
        "artifacts": record.artifacts or "-",
    }
    if record.message:
        fields["message"] = record.message
    for name, value in fields.items():
        console.print(f"  {name:<10} {value}", markup=False, highlight=False, soft_wrap=True)
    console.print(summary_table(record.hosts))


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
