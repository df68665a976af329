"""``fleetctl runs list | show`` on screen: the run history table and one run in detail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from fleetctl.state.runs import RunRecord, summarize
from fleetctl.views.console import show, stdout_console
from fleetctl.views.provision import STATE_STYLE, summary_table
from fleetctl.views.text import cell, ident, outside


def print_runs(records: Sequence[RunRecord], *, wide: bool = False) -> None:
    """Newest first as given; the hosts column counts each host state, worst first.

    ``wide`` adds who ran it and when it ended.
    """
    columns = ["id", "status", *(["user"] if wide else []), "started", *(["ended"] if wide else []),
               "playbook", "pattern", "hosts"]
    table = Table(box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, no_wrap=column not in ("hosts", "pattern"))
    for r in records:
        counts = summarize(r.hosts)
        hosts = ", ".join(f"{counts[s]} {s}" for s in STATE_STYLE if counts.get(s)) or "-"
        table.add_row(
            ident(r.id), ident(r.status), *([ident(r.user)] if wide else []), ident(r.started_at),
            *([ident(r.ended_at or "-")] if wide else []), ident(Path(r.playbook).name), cell(r.pattern),
            hosts,
        )
    show(table)


def print_run(record: RunRecord) -> None:
    """A run's options, status and per-host results (worst first)."""
    console = stdout_console()
    console.print(Text.assemble("run ", outside(record.id), ": ", outside(record.status, style="bold")))
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
        console.print(outside(f"  {name:<10} {value}"), highlight=False, soft_wrap=True)
    show(summary_table(record.hosts), console)
