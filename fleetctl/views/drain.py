"""``fleetctl drain | undrain | maintain | status`` on screen: per-host outcomes, the status table
and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import typer
from rich.table import Table

from fleetctl.drain import HostStatus, Outcome
from fleetctl.state.hosts import AuditEntry
from fleetctl.views.console import stdout_console


def when(ts: float | None) -> str:
    """A Unix time as UTC ISO 8601 to the second; empty when unknown."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_outcomes(outcomes: Sequence[Outcome]) -> None:
    """One row per host: what happened to it and the fleetctl state it is left in."""
    if not outcomes:
        return
    table = Table(box=None, pad_edge=False)
    for col in ("HOST", "RESULT", "STATE", "MESSAGE"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(o.host, "[green]ok[/]" if o.ok else "[red]FAILED[/]", o.state, o.message)
    stdout_console().print(table)


def print_status(rows: Sequence[HostStatus], audit: Sequence[AuditEntry]) -> None:
    """The status table, then the audit entries asked for (oldest first), one line each."""
    table = Table(box=None, pad_edge=False)
    for col in ("HOST", "SCHEDULER", "SCHED STATE", "FLEETCTL", "REASON", "BY", "SINCE", "WORKLOADS", "NOTE"):
        table.add_column(col)
    for r in rows:
        reason = r.reason or r.scheduler_reason or ""
        work = ", ".join(r.workloads[:3]) + (f" +{len(r.workloads) - 3}" if len(r.workloads) > 3 else "")
        table.add_row(r.host, r.scheduler, r.scheduler_state, r.state, reason, r.actor or "", when(r.since),
                      work, r.note or "")
    stdout_console().print(table)
    for e in audit:
        typer.echo(f"{when(e.at)} {e.host} {e.from_state} -> {e.to_state} by {e.actor}"
                   f"{': ' + e.reason if e.reason else ''}{' (' + e.note + ')' if e.note else ''}")
