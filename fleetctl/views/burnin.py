"""``fleetctl burn-in`` on screen: one line of totals, then one row per host.

The table shows each host's outcome, its lifecycle move and why; ``wide`` adds each check's own
outcome. Reasons come from agents and DCGM: they go through :mod:`fleetctl.views.text`.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fleetctl.burnin.gate import CHECKS, BurnInResult, Outcome
from fleetctl.views.console import show
from fleetctl.views.text import cell, echo, ident

_STYLE = {Outcome.PASS: "green", Outcome.FAIL: "red", Outcome.INCOMPLETE: "yellow"}
_CHECK_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "not_run": "magenta", "skipped": "dim"}


def summary_line(result: BurnInResult) -> str:
    counts = result.to_dict()["summary"]
    parts = ", ".join(f"{counts[o.value]} {o.value}" for o in Outcome)
    allowed = f"; allowed: {', '.join(result.allowed)}" if result.allowed else ""
    return f"burn-in {result.run_id}: level {result.level}, {len(result.hosts)} hosts: {parts}{allowed}"


def print_result(result: BurnInResult, *, wide: bool = False) -> None:
    echo(summary_line(result))
    columns = ["HOST", "RESULT", *(c.upper() for c in CHECKS if wide), "LIFECYCLE", "WHY"]
    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold" if col == "WHY" else "ellipsis")
    for gate in result.hosts:
        moved = gate.life_from if gate.life_from == gate.life_to else f"{gate.life_from} -> {gate.life_to}"
        checks: list[Text] = []
        if wide:
            by_name = {c.name: c.status for c in gate.checks}
            checks = [ident(by_name.get(c, "-"), style=_CHECK_STYLE.get(by_name.get(c, ""), ""))
                      for c in CHECKS]
        table.add_row(ident(gate.host), Text(gate.status.value, style=_STYLE[gate.status]), *checks,
                      ident(moved), cell(gate.reason))
    show(table)
