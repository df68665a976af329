"""``fleetctl hosts`` on screen: the lifecycle table, and one host's page (``hosts show``).

Every stored string (states a newer fleetctl wrote, reasons, actors, an agent's messages) goes
through :mod:`fleetctl.views.text`: shown as written, never obeyed by the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleetctl.state.lifecycle import HostOverview
from fleetctl.views.console import show
from fleetctl.views.drain import when
from fleetctl.views.text import cell, ident, outside

_STYLE = {"in_service": "green", "burn_in": "cyan", "new": "cyan", "suspect": "yellow",
          "repairing": "yellow", "quarantined": "red", "rma": "red", "retired": "dim"}


def _state(label: str, known: bool = True) -> Text:
    return ident(label, style=_STYLE.get(label, "") if known else "magenta")


def _health(row: HostOverview) -> Text:
    if row.health is None:
        return Text("-")
    return cell(row.health.label, style="green" if row.health.healthy else "red")


def print_hosts(rows: Sequence[HostOverview], *, wide: bool = False) -> None:
    """One row per host; ``wide`` adds who moved it, the source and when the health was seen.
    An implied state (nothing recorded yet) has no SINCE."""
    columns = ["HOST", "STATE", "SINCE", "WHY", "HEALTH", "DRAIN",
               *(["BY", "SOURCE", "HEALTH AT"] if wide else [])]
    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold" if col in ("WHY", "HEALTH") else "ellipsis")
    for r in rows:
        life = r.life
        extra: list[Text | str] = []
        if wide:
            extra = [ident(life.actor), ident(life.source), when(r.health.at) if r.health else ""]
        table.add_row(ident(r.host), _state(life.label, life.state.value != "unknown"),
                      when(life.since) or "-", cell(life.reason), _health(r), ident(r.drain), *extra)
    show(table)


def _kv(pairs: Sequence[tuple[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column("KEY", style="bold")
    table.add_column("VALUE", overflow="fold")
    for key, value in pairs:
        table.add_row(key, value if isinstance(value, Text) else cell("-" if value in (None, "") else value))
    return table


def _titled(title: str, columns: Sequence[str], rows: Sequence[Sequence[Text | str]],
            fold: Sequence[str] = ("WHY",)) -> list[Any]:
    """Only the ``fold`` columns wrap in a narrow terminal: times, names and run ids stay whole."""
    if not rows:
        return [Text(f"{title}: none")]
    table = Table(box=None, pad_edge=False, title=title, title_justify="left", title_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col not in fold)
    for row in rows:
        table.add_row(*row)
    return [table]


def page_renderables(doc: Mapping[str, Any]) -> list[Any]:
    """The parts of ``hosts show`` as rich renderables, from the JSON document (one source for both)."""
    health = doc.get("health")
    parts: list[Any] = [_kv([
        ("host", ident(doc["host"])),
        ("lifecycle", _state(doc["state"], doc.get("known", True))),
        ("since", when(doc["since"]) or ("- (implied)" if doc.get("implied") else "-")),
        ("why", doc["reason"]),
        ("by", doc["actor"]),
        ("drain state", doc["drain_state"] + (f" ({r})" if (r := doc.get("drain_reason")) else "")),
        ("last health", "-" if not health else
         ("healthy" if health["healthy"] else f"unfit: {health['detail']}") +
         f" ({health['source']}, {when(health['at'])})"),
        ("last burn-in", _burn_in(doc.get("burn_in"))),
        *(("remediation", _remediation(r)) for r in _shown_remediations(doc.get("remediations", []))),
    ])]
    parts += _titled("lifecycle history", ["WHEN", "FROM", "TO", "BY", "SOURCE", "WHY"], [
        [when(e["at"]), ident(e["from_state"]), ident(e["to_state"]), ident(e["actor"]),
         ident(e["source"] + (" --force" if e["forced"] else "")), cell(e["reason"])]
        for e in doc["history"]])
    parts += _titled("drains", ["WHEN", "FROM", "TO", "BY", "WHY"], [
        [when(e["at"]), ident(e["from_state"]), ident(e["to_state"]), ident(e["actor"]),
         cell(" ".join(x for x in (e["reason"], f"({e['note']})" if e["note"] else None) if x))]
        for e in doc["drains"]])
    parts += _titled("provision runs", ["RUN", "STARTED", "STATUS", "HOST RESULT", "PLAYBOOK", "BY"], [
        [ident(r["run_id"]), ident(_iso(r["started_at"])), ident(r["status"]), ident(r["result"]),
         ident(r["playbook"]), ident(r["user"])] for r in doc["runs"]],
        fold=("HOST RESULT", "PLAYBOOK", "BY"))
    parts += _agent(doc["agent"])
    return parts


def _iso(text: str) -> str:
    """A run's stored ISO time in the page's form (UTC, to the second); as written when it is not one."""
    try:
        return when(datetime.fromisoformat(text).timestamp())
    except (TypeError, ValueError):
        return str(text)


def _burn_in(b: Mapping[str, Any] | None) -> Text:
    """``pass level 2 WHEN (RUN): REASON``, and the checks that did not run (an incomplete burn-in)."""
    if not b:
        return Text("never")
    text = Text.assemble(outside(b["status"], style=_BURN_STYLE.get(b["status"], "")),
                         f" level {b['level']} {when(b['ended_at'])} (", ident(b["run_id"]), "): ",
                         cell(b["reason"]))
    if b.get("not_run"):
        text.append_text(Text.assemble("; not run: ", cell(", ".join(b["not_run"]))))
    return text


_BURN_STYLE = {"pass": "green", "fail": "red", "incomplete": "yellow"}


def _shown_remediations(rems: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every open remediation and the latest one (open or ended); newest first as given."""
    return [r for i, r in enumerate(rems) if i == 0 or r.get("open")]


def _remediation(r: Mapping[str, Any]) -> Text:
    """``ID: STATE at step N/M NAME (ACTION)``; one that ran every step says ``after step M/M``."""
    total = len(r["steps"])
    if r.get("step_name") is not None:
        where = Text.assemble(f"at step {r['next_step'] + 1}/{total} ", ident(r["step_name"]))
    else:
        where = Text(f"after step {total}/{total}")
    text = Text.assemble(ident(r["id"]), ": ", ident(r["state"]), " ", where, " (", ident(r["action"]), ")")
    if r.get("outcome"):
        text.append_text(Text.assemble(": ", cell(r["outcome"])))
    return text


def _agent(agent: Mapping[str, Any]) -> list[Any]:
    if not agent.get("reachable"):
        detail = f": {agent['detail']}" if agent.get("detail") else ""
        return [Text.assemble(("agent ", "bold"), outside(agent["endpoint"]), " ",
                              outside(f"{agent['outcome']}{detail}", style="red"))]
    parts: list[Any] = [Text("agent", style="bold"), _kv([
        ("endpoint", ident(agent["endpoint"])),
        ("status", agent["status"]),
        ("agent version", agent["agent_version"]),
        ("driver", agent["driver_version"]),
        ("cuda", agent.get("cuda_driver_version")),
        ("sampled", when(agent["sampled_at"])),
    ])]
    parts += _titled("chips", ["CHIP", "MODEL", "STATUS", "XIDS", "LAST XID"], [
        [str(c["index"]), ident(c["model"]), ident(c["status"]),
         cell(", ".join(f"{k} x{v}" for k, v in sorted(c["xid_counts"].items())) or "-"),
         "-" if c["last_xid"] is None else str(c["last_xid"])] for c in agent["chips"]],
        fold=("MODEL", "XIDS"))
    if agent["problems"]:
        parts += _titled("problems", ["CHECK", "SEVERITY", "ACTION", "MESSAGE"], [
            [ident(p["check"]), ident(p["severity"]), ident(p["action"]), cell(p["message"])]
            for p in agent["problems"]], fold=("MESSAGE",))
    return parts


def print_page(doc: Mapping[str, Any]) -> None:
    show(Group(*page_renderables(doc)))
