"""``fleetctl remediate`` on screen: the fleet-wide stop in one loud line, then one row per host the
round decided something about (start, or skipped and why), then what became of the remediations."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fleetctl.remediate.loop import RoundResult
from fleetctl.views.console import show
from fleetctl.views.drain import when
from fleetctl.views.text import cell, echo, ident


def stop_lines(result: RoundResult) -> list[str]:
    """One line per stop; the fleet-wide one first, in capitals: nobody should miss it."""
    stops = sorted(result.plan.stops, key=lambda s: s.scope != "all")
    return [f"STOPPED: {s.message()}" for s in stops]


def print_round(result: RoundResult, *, apply: bool) -> None:
    plan = result.plan
    for line in stop_lines(result):
        echo(line)
    if plan.actions or plan.skipped:
        table = Table(box=None, pad_edge=False)
        for col in ("HOST", "DECISION", "REMEDIATION", "STEPS", "REASON"):
            table.add_column(col, overflow="fold" if col == "REASON" else "ellipsis")
        for a in plan.actions:
            decision = Text("start" if apply else "would start", style="bold yellow")
            table.add_row(ident(a.host), decision, a.remediation.value, " → ".join(a.steps), cell(a.reason))
        for s in plan.skipped:
            table.add_row(ident(s.host), Text(f"skip: {s.kind}", style="dim"), "", "", cell(s.why))
        show(table)
    elif not plan.stops:
        echo(f"{when(plan.at)}: nothing to remediate")
    for f in result.finished:
        mark = "ok" if f.ok else f.state.upper()
        echo(f"{mark}: {f.host}: remediation {f.id}{' (resumed)' if f.resumed else ''}: {f.message}")
    if result.interrupted:
        echo("interrupted: the loop stopped after the step in progress; the next run resumes it")
