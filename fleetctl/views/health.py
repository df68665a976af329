"""``fleetctl health`` on screen: the summary line, host and chip tables of a
:class:`~fleetctl.report.FleetReport`, printed once or redrawn in place (``--watch``).

The renderables are pure functions of the report (no clock, no terminal queries), so tests render
them into a fixed-width Console and compare text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from itertools import groupby

from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleetctl.report import (
    HOST_HEALTH_ORDER,
    FleetReport,
    HostHealth,
    HostRow,
    ProblemRow,
    sort_key,
    summarize,
)
from fleetctl.views.console import stdout_console
from fleetctl.views.text import CELL_LIMIT, cell, ident, outside

STATUS_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "unknown": "magenta",
    "error": "red",
    "unreachable": "bold red",
    "unhealthy": "bold red",
}
_GIB = 1024**3
MAX_PROBLEMS_SHOWN = 3
MODEL_WIDTH = 16
DETAIL_LIMIT = 2 * CELL_LIMIT  # a problem's message on its own line below the chip table


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def fmt_temp(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}°C"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def fmt_power(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} W"


def fmt_memory(used: int | None, total: int | None, *, short: bool = False) -> str:
    if used is None and total is None:
        return "-"
    u = "?" if used is None else f"{used / _GIB:.0f}"
    t = "?" if total is None else f"{total / _GIB:.0f}"
    return f"{u}/{t}G" if short else f"{u}/{t} GiB"


def fmt_age(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.0f}s"
    if age_s < 7200:
        return f"{age_s / 60:.0f}m"
    return f"{age_s / 3600:.0f}h"


def short_model(model: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``H100 80GB HBM3``: the vendor is in the KIND column already."""
    for prefix in ("NVIDIA ", "Google "):
        if model.startswith(prefix):
            return model[len(prefix):]
    return model


def problems_short(problems: list[ProblemRow], limit: int = MAX_PROBLEMS_SHOWN) -> str:
    """``#3 xid, #5 temperature, chip_count +2``: worst first, same check on many chips folded."""
    labels: list[str] = []
    for p in problems:
        label = p.short()
        if label not in labels:
            labels.append(label)
    shown = ", ".join(labels[:limit])
    return shown + (f" +{len(labels) - limit}" if len(labels) > limit else "")


def host_problems(h: HostRow) -> Text:
    """The PROBLEMS cell: why there is no report, or the problems' short labels (outside text)."""
    if h.reason_kind is not None:
        return cell(f"{h.reason_kind}: {h.reason}" if h.reason else h.reason_kind)
    text = problems_short(h.problems)
    if h.drained:
        text = "drained" + (f", {text}" if text else "")
    return cell(text)


def summary_line(report: FleetReport) -> Text:
    s = report.summary()
    text = Text()
    text.append(f"{s.total_hosts} hosts: ", style="bold")
    parts = [(state.value, s.hosts[state.value]) for state in HOST_HEALTH_ORDER
             if state is HostHealth.HEALTHY or s.hosts[state.value]]
    for i, (name, count) in enumerate(parts):
        if i:
            text.append(", ")
        text.append(f"{count} {name}", style=STATUS_STYLE[name] if count else "")
    text.append(f"; {s.total_chips} chips: ", style="bold")
    chip_parts = [(name, count) for name, count in s.chips.items() if name == "healthy" or count]
    for i, (name, count) in enumerate(chip_parts):
        if i:
            text.append(", ")
        text.append(f"{count} {name}", style=STATUS_STYLE[name] if count else "")
    extra = [f"{report.duration_s:.2f}s"] if report.duration_s is not None else []
    if report.source != "agents":
        extra.append(f"via {report.source}")
    if extra:
        text.append(f" ({', '.join(extra)})", style="dim")
    return text


def hosts_table(hosts: Iterable[HostRow], *, title: Text | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    table.add_column("HOST", overflow="fold")  # a name too long for the screen folds: its row only
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CHIPS", justify="right", no_wrap=True)
    table.add_column("MAX TEMP", justify="right", no_wrap=True)
    table.add_column("UTIL", justify="right", no_wrap=True)
    table.add_column("MEMORY", justify="right", no_wrap=True)
    table.add_column("PROBLEMS", overflow="fold", min_width=12)
    table.add_column("AGE", justify="right", no_wrap=True)
    for h in hosts:
        chips = f"{h.chips_ok}/{h.chips_total}" if h.reachable else "-"
        table.add_row(
            ident(h.name), status_text(h.status.value), chips, fmt_temp(h.max_temperature_c),
            fmt_pct(h.mean_utilization_pct), fmt_memory(h.memory_used_bytes, h.memory_total_bytes),
            host_problems(h), fmt_age(h.age_s),
        )
    return table


def chips_table(hosts: Iterable[HostRow], *, unhealthy_only: bool = False,
                title: Text | None = None) -> Table:
    """One row per chip; a host without a report (or with node-level problems) gets a ``-`` row."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    table.add_column("HOST", overflow="fold")  # a name too long for the screen folds: its row only
    table.add_column("CHIP", justify="right", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("MODEL", no_wrap=True, overflow="ellipsis", max_width=MODEL_WIDTH)
    for name in ("TEMP", "UTIL", "MEMORY", "POWER"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PROBLEMS", overflow="fold", min_width=12)
    for h in hosts:
        if not h.reachable:
            table.add_row(ident(h.name), "-", "-", "-", "-", "-", "-", "-", status_text(h.status.value),
                          host_problems(h))
            continue
        node_problems = [p for p in h.problems if p.chip is None]
        if node_problems or (h.drained and not unhealthy_only):
            table.add_row(ident(h.name), "-", "-", "-", "-", "-", "-", "-", status_text(h.status.value),
                          cell(problems_short(node_problems) or ("drained" if h.drained else "")))
        for c in h.chips:
            if unhealthy_only and c.status.value == "healthy":
                continue
            table.add_row(
                ident(h.name), str(c.index), ident(c.kind), ident(short_model(c.model)),
                fmt_temp(c.temperature_c), fmt_pct(c.utilization_pct),
                fmt_memory(c.memory_used_bytes, c.memory_total_bytes, short=True),
                fmt_power(c.power_w), status_text(c.status.value),
                cell(", ".join(dict.fromkeys(p.check for p in c.problems)) or ("error" if c.error else "")),
            )
    return table


def problem_details(hosts: Iterable[HostRow], *, unhealthy_only: bool = False) -> Text:
    """One line per problem (``host #chip check: message (action)``), for the chip view."""
    text = Text()
    for h in hosts:
        if not h.reachable:
            continue
        for p in h.problems:
            if unhealthy_only and p.severity == "info":
                continue
            if text:
                text.append("\n")
            text.append_text(ident(h.name, style="bold"))
            if p.chip is not None:
                text.append(f" #{p.chip}", style="bold")
            text.append(" ")
            text.append_text(ident(p.check, style=STATUS_STYLE.get(_SEVERITY_STATUS.get(p.severity, ""), "")))
            text.append(": ")
            text.append_text(outside(p.message, limit=DETAIL_LIMIT))
            if p.action not in ("", "none"):
                text.append_text(outside(f" (action: {p.action})", style="dim", limit=CELL_LIMIT))
    return text


_SEVERITY_STATUS = {"critical": "unhealthy", "warning": "degraded", "info": "healthy"}


def render_report(report: FleetReport, *, chips: bool = False, unhealthy: bool = False,
                  group_by: str | None = None, sort: str = "status") -> RenderableType:
    """The summary line and the table(s); ``group_by`` gives one titled table per group."""
    hosts = sorted(report.hosts, key=sort_key(sort))
    if unhealthy:
        hosts = [h for h in hosts if h.status is not HostHealth.HEALTHY]
    parts: list[RenderableType] = [summary_line(report)]
    if unhealthy and not hosts:
        parts.append(Text("no problems", style="green"))
        return Group(*parts)
    sections: list[tuple[str | None, list[HostRow]]]
    if group_by:
        keyed = sorted(hosts, key=lambda h: h.group_key(group_by))  # stable: keeps the sort inside
        sections = [(k, list(g)) for k, g in groupby(keyed, key=lambda h: h.group_key(group_by))]
    else:
        sections = [(None, hosts)]
    for key, rows in sections:
        title: Text | None = None
        if key is not None:
            s = summarize(rows)
            counts = ", ".join(f"{n} {name}" for name, n in s.hosts.items() if n)
            title = outside(f"{group_by}={key} ({counts})", limit=CELL_LIMIT)
        if chips:
            parts.append(chips_table(rows, unhealthy_only=unhealthy, title=title))
            details = problem_details(rows, unhealthy_only=unhealthy)
            if details:
                parts.append(details)
        else:
            parts.append(hosts_table(rows, title=title))
    return Group(*parts)



def print_report(report: FleetReport, *, chips: bool, unhealthy: bool, group_by: str | None,
                 sort: str) -> None:
    """The summary line and table(s) on stdout."""
    stdout_console().print(render_report(report, chips=chips, unhealthy=unhealthy, group_by=group_by,
                                         sort=sort))


def live_drawer(stack: contextlib.ExitStack, *, chips: bool, unhealthy: bool, group_by: str | None,
                sort: str, every: float) -> Callable[[FleetReport], None]:
    """``--watch``: the tables redrawn in place each round, under a time stamp; the live display
    lasts as long as ``stack``."""
    live = stack.enter_context(Live(Text("asking the fleet..."), console=stdout_console(), auto_refresh=False,
                                    redirect_stdout=False, redirect_stderr=False))

    def draw(report: FleetReport) -> None:
        stamp = Text(time.strftime("%H:%M:%S") + f"  every {every:g}s, Ctrl-C to stop", style="dim")
        live.update(Group(stamp, render_report(report, chips=chips, unhealthy=unhealthy, group_by=group_by,
                                               sort=sort)), refresh=True)

    return draw
