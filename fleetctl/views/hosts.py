"""``fleetctl hosts`` on screen: the lifecycle table, and one host's page (``hosts show``).

Every stored string (states a newer fleetctl wrote, reasons, actors, an agent's messages) goes
through :mod:`fleetctl.views.text`: shown as written, never obeyed by the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _titled(title: str, columns: Sequence[str], rows: Sequence[Sequence[Text | str]]) -> list[Any]:
    if not rows:
        return [Text(f"{title}: none")]
    table = Table(box=None, pad_edge=False, title=title, title_justify="left", title_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
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
        [ident(r["run_id"]), ident(r["started_at"]), ident(r["status"]), ident(r["result"]),
         ident(r["playbook"]), ident(r["user"])] for r in doc["runs"]])
    parts += _agent(doc["agent"])
    return parts


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
         "-" if c["last_xid"] is None else str(c["last_xid"])] for c in agent["chips"]])
    if agent["problems"]:
        parts += _titled("problems", ["CHECK", "SEVERITY", "ACTION", "MESSAGE"], [
            [ident(p["check"]), ident(p["severity"]), ident(p["action"]), cell(p["message"])]
            for p in agent["problems"]])
    return parts


def print_page(doc: Mapping[str, Any]) -> None:
    show(Group(*page_renderables(doc)))
