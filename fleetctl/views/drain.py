"""``fleetctl drain | undrain | maintain | status`` on screen: per-host outcomes, the status table
and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from fleetctl.drain import HostStatus, Outcome
from fleetctl.state.hosts import AuditEntry
from fleetctl.views.console import show
from fleetctl.views.text import cell, echo, ident


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
        result = Text("ok", style="green") if o.ok else Text("FAILED", style="red")
        table.add_row(ident(o.host), result, ident(o.state), cell(o.message))
    show(table)


def print_status(rows: Sequence[HostStatus], audit: Sequence[AuditEntry], *, wide: bool = False) -> None:
    """The status table, then the audit entries asked for (oldest first), one line each.

    ``wide`` adds the scheduler kind and who set the state when: the table alone fits 80 columns
    for usual names and reasons.
    """
    columns = ["HOST", *(["SCHEDULER"] if wide else []), "SCHED STATE", "FLEETCTL", "REASON",
               *(["BY", "SINCE"] if wide else []), "WORKLOADS", "NOTE"]
    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold" if col in ("REASON", "NOTE", "WORKLOADS") else "ellipsis")
    for r in rows:
        reason = r.reason or r.scheduler_reason or ""
        work = ", ".join(r.workloads[:3]) + (f" +{len(r.workloads) - 3}" if len(r.workloads) > 3 else "")
        who: list[Text | str] = [ident(r.actor), when(r.since)] if wide else []
        kind: list[Text | str] = [ident(r.scheduler)] if wide else []
        row: list[Text | str] = [ident(r.host), *kind, ident(r.scheduler_state), ident(r.state), cell(reason),
                                 *who, cell(work), cell(r.note)]
        table.add_row(*row)
    show(table)
    for e in audit:
        echo(f"{when(e.at)} {e.host} {e.from_state} -> {e.to_state} by {e.actor}"
             f"{': ' + e.reason if e.reason else ''}{' (' + e.note + ')' if e.note else ''}")
