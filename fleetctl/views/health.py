"""``fleetctl health`` on screen: the summary line, host and chip tables of a
:class:`~fleetctl.report.FleetReport`, printed once or redrawn in place (``--watch``).

The renderables are pure functions of the report (no clock, no terminal queries), so tests render
them into a fixed-width Console and compare text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from fleetctl.report import (
    HOST_HEALTH_ORDER,
    FleetReport,
    HealthView,
    HostHealth,
    HostRow,
    ProblemRow,
    chip_matches,
    host_power_w,
    selected_hosts,
    sorted_chips,
    sorted_hosts,
    summarize,
)
from fleetctl.views.console import show, stdout_console
from fleetctl.views.text import CELL_LIMIT, cell, clip, ident, outside

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


def problems_short(problems: list[ProblemRow], limit: int | None = MAX_PROBLEMS_SHOWN) -> str:
    """``#3 xid, #5 temperature, chip_count +2``: worst first, same check on many chips folded."""
    labels: list[str] = []
    for p in problems:
        label = p.short()
        if label not in labels:
            labels.append(label)
    if limit is None or len(labels) <= limit:
        return ", ".join(labels)
    return ", ".join(labels[:limit]) + f" +{len(labels) - limit}"


def host_problems(h: HostRow, limit: int | None = MAX_PROBLEMS_SHOWN) -> Text:
    """The PROBLEMS cell: why there is no report, or the problems' short labels (outside text)."""
    if h.reason_kind is not None:
        return cell(f"{h.reason_kind}: {h.reason}" if h.reason else h.reason_kind)
    text = problems_short(h.problems, limit)
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


@dataclass
class Col:
    """A table column as :func:`fitted_table` sees it: ``drop`` > 0 may go on a narrow screen
    (highest first)."""

    header: str
    justify: JustifyMethod = "left"
    drop: int = 0
    flex: bool = False  # the one column that wraps (PROBLEMS): never dropped, never cut to a stub
    cells: list[Text | str] = field(default_factory=list)
    min_width: int = 0  # set by _fit for the flex column


DEFAULT_VIEW = HealthView()
FLEX_MIN = 24  # PROBLEMS gets at least this (or its longest word) before other columns are dropped


def _cell_len(value: Text | str) -> int:
    return value.cell_len if isinstance(value, Text) else len(value)


def _fit(cols: list[Col], width: int | None) -> tuple[list[Col], bool]:
    """The columns that fit ``width`` (None: all of them), dropping the least useful first; and
    whether they fit (then no column need be cut: each gets its width as a minimum)."""
    natural = {id(c): _longest(c) for c in cols}

    def need(c: Col) -> int:
        if not c.flex:
            return natural[id(c)]
        words = [len(w) for v in c.cells for w in (v.plain if isinstance(v, Text) else v).split()]
        return min(natural[id(c)], max(FLEX_MIN, len(c.header), *words))

    kept = list(cols)

    def total() -> int:
        return sum(need(c) for c in kept) + 2 * (len(kept) - 1)

    while width is not None and total() > width:
        droppable = [c for c in kept if c.drop]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda c: c.drop))
    for c in kept:
        c.min_width = need(c)
    return kept, width is not None and total() <= width


def fitted_table(cols: list[Col], width: int | None, title: Text | None) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    kept, fits = _fit(cols, width)
    for c in kept:
        if c.flex:
            table.add_column(c.header, overflow="fold", min_width=c.min_width if fits else 12)
        elif c is cols[0]:  # folds (its own row only) when even the fewest columns do not fit
            table.add_column(c.header, overflow="fold", min_width=c.min_width if fits else None)
        else:
            table.add_column(c.header, justify=c.justify, no_wrap=True)
    for i in range(len(cols[0].cells)):
        table.add_row(*(c.cells[i] for c in kept))
    return table


def _longest(c: Col) -> int:
    return max([len(c.header), *(_cell_len(v) for v in c.cells)])


def hosts_table(hosts: Iterable[HostRow], *, title: Text | None = None, width: int | None = None,
                wide: bool = False, problems_limit: int | None = MAX_PROBLEMS_SHOWN) -> Table:
    """One row per host; on a narrow screen MEMORY, UTIL, AGE, MAX TEMP and CHIPS give way to PROBLEMS."""
    cols = [Col("HOST"), Col("STATUS"), Col("CHIPS", "right", drop=1), Col("MAX TEMP", "right", drop=2),
            Col("UTIL", "right", drop=4), Col("MEMORY", "right", drop=5)]
    if wide:
        cols += [Col("POWER", "right", drop=6), Col("ADDRESS", drop=7), Col("AGENT", drop=8)]
    problems = Col("PROBLEMS", flex=True)
    age = Col("AGE", "right", drop=3)
    cols += [problems, age]
    for h in hosts:
        values: list[Text | str] = [
            ident(h.name), status_text(h.status.value),
            f"{h.chips_ok}/{h.chips_total}" if h.reachable else "-",
            fmt_temp(h.max_temperature_c), fmt_pct(h.mean_utilization_pct),
            fmt_memory(h.memory_used_bytes, h.memory_total_bytes)]
        if wide:
            values += [fmt_power(host_power_w(h)), ident(f"{h.address}:{h.port}"),
                       ident(h.agent_version or "-")]
        values += [host_problems(h, problems_limit), fmt_age(h.age_s)]
        for c, v in zip(cols, values, strict=True):
            c.cells.append(v)
    return fitted_table(cols, width, title)


def _chip_cols() -> list[Col]:
    return [Col("HOST"), Col("CHIP", "right"), Col("KIND", drop=3), Col("MODEL", drop=5),
            Col("TEMP", "right", drop=1), Col("UTIL", "right", drop=4), Col("MEMORY", "right", drop=6),
            Col("POWER", "right", drop=7), Col("STATUS"), Col("PROBLEMS", flex=True)]


def chips_table(hosts: Iterable[HostRow], view: HealthView = DEFAULT_VIEW, *, title: Text | None = None,
                width: int | None = None) -> Table:
    """One row per chip, sorted by the chips' own figures (``--sort``); a host without a report, or
    with node-level problems, first gets a ``-`` row."""
    hosts = list(hosts)
    cols = _chip_cols()
    dashes = ["-"] * 6
    for h in sorted_hosts(hosts, view.sort, reverse=view.reverse):
        if (view.statuses is not None and h.status.value not in view.statuses) or (
                view.unhealthy and h.status is HostHealth.HEALTHY):
            continue
        if not h.reachable:
            _add(cols, [ident(h.name), "-", *dashes, status_text(h.status.value), host_problems(h, None)])
            continue
        node_problems = [p for p in h.problems if p.chip is None]
        if node_problems or (h.drained and not view.unhealthy):
            text = problems_short(node_problems, limit=None) or ("drained" if h.drained else "")
            _add(cols, [ident(h.name), "-", *dashes, status_text(h.status.value), cell(text)])
    for h, c in sorted_chips(hosts, view.sort, reverse=view.reverse):
        if not chip_matches(c, view.statuses) or (view.unhealthy and c.status.value == "healthy"):
            continue
        _add(cols, [
            ident(h.name), str(c.index), ident(c.kind), ident(clip(short_model(c.model), MODEL_WIDTH)),
            fmt_temp(c.temperature_c), fmt_pct(c.utilization_pct),
            fmt_memory(c.memory_used_bytes, c.memory_total_bytes, short=True),
            fmt_power(c.power_w), status_text(c.status.value),
            cell(", ".join(dict.fromkeys(p.check for p in c.problems)) or ("error" if c.error else "")),
        ])
    return fitted_table(cols, width, title)


def _add(cols: list[Col], values: list[Text | str]) -> None:
    for c, v in zip(cols, values, strict=True):
        c.cells.append(v)


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


def render_report(report: FleetReport, view: HealthView | None = None, *, width: int | None = None,
                  terminal: bool = True, **options: Any) -> RenderableType:
    """The summary line and the table(s); ``group_by`` gives one titled table per group. ``width``: the
    screen's (columns give way to PROBLEMS); not ``terminal``: every problem, for a pipe. ``options``:
    HealthView's fields, instead of ``view``."""
    view = view or HealthView(**options)
    limit = None if view.wide or not terminal else MAX_PROBLEMS_SHOWN
    hosts = report.hosts if view.chips else selected_hosts(report.hosts, view)
    parts: list[RenderableType] = [summary_line(report)]
    if view.unhealthy and not selected_hosts(report.hosts, view):
        parts.append(Text("no problems", style="green"))
        return Group(*parts)
    sections: list[tuple[str | None, list[HostRow]]]
    if view.group_by:
        key = view.group_by
        keyed = sorted(hosts, key=lambda h: h.group_key(key))  # stable: keeps the sort inside
        sections = [(k, list(g)) for k, g in groupby(keyed, key=lambda h: h.group_key(key))]
    else:
        sections = [(None, hosts)]
    for value, rows in sections:
        title: Text | None = None
        if value is not None:
            s = summarize(rows)
            counts = ", ".join(f"{n} {name}" for name, n in s.hosts.items() if n)
            title = outside(f"{view.group_by}={value} ({counts})", limit=CELL_LIMIT)
        if view.chips:
            parts.append(chips_table(rows, view, title=title, width=width))
            details = problem_details(rows, unhealthy_only=view.unhealthy)
            if details:
                parts.append(details)
        else:
            parts.append(hosts_table(rows, title=title, width=width, wide=view.wide, problems_limit=limit))
    return Group(*parts)


def print_report(report: FleetReport, view: HealthView) -> None:
    """The summary line and table(s) on stdout: drawn on a terminal, one line per row in a pipe."""
    console = stdout_console()
    terminal = console.is_terminal
    show(render_report(report, view, width=console.width if terminal else None, terminal=terminal), console)


def names(report: FleetReport, view: HealthView) -> list[str]:
    """``-o name``: the hosts the view would list, one name each (chips: the hosts with a chip listed)."""
    if not view.chips:
        return [h.name for h in selected_hosts(report.hosts, view)]
    shown: dict[str, None] = {}
    for h, c in sorted_chips(report.hosts, view.sort, reverse=view.reverse):
        if chip_matches(c, view.statuses) and not (view.unhealthy and c.status.value == "healthy"):
            shown.setdefault(h.name, None)
    return list(shown)


Body = Callable[[FleetReport, "int | None"], RenderableType]


def live_drawer(stack: contextlib.ExitStack, view: HealthView | None = None, *, every: float,
                body: Body | None = None, **options: Any) -> Callable[[FleetReport], None]:
    """``--watch``: on a terminal the tables redrawn in place each round under a time stamp, with a
    last line that says how many rows the screen hides; in a pipe each round printed in full after a
    time-stamped line (a log of rounds). ``body(report, width)``: another view than the tables."""
    view = view or HealthView(**options)
    console = stdout_console()

    def render(report: FleetReport, width: int | None) -> RenderableType:
        if body is not None:
            return body(report, width)
        return render_report(report, view, width=width, terminal=width is not None)

    if not console.is_terminal:
        def log(report: FleetReport) -> None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            show(Text(f"--- {stamp} every {every:g}s"), console)
            show(render(report, None), console)

        return log
    live = stack.enter_context(Live(Text("asking the fleet..."), console=console, auto_refresh=False,
                                    redirect_stdout=False, redirect_stderr=False))

    def draw(report: FleetReport) -> None:
        stamp = Text(time.strftime("%H:%M:%S") + f"  every {every:g}s, Ctrl-C to stop", style="dim")
        shown = Group(stamp, render(report, console.width))
        live.update(fit_screen(console, shown, console.height), refresh=True)

    return draw


def fit_screen(console: Console, body: RenderableType, height: int) -> RenderableType:
    """``body`` cut to ``height`` lines, its last line saying how many it hides (Live would cut silently)."""
    lines = console.render_lines(body, console.options.update(height=None), pad=False)
    if len(lines) <= height:
        return body
    keep = max(height - 1, 0)
    hidden = len(lines) - keep
    segments: list[Segment] = []
    for line in lines[:keep]:
        segments.extend(line)
        segments.append(Segment.line())
    note = Text(f"... {hidden} more lines below: a taller terminal, --unhealthy, --status or --summary",
                style="dim")
    return Group(Segments(segments), note)
