"""``fleetctl health`` on screen: the summary line, host and chip tables of a
:class:`~fleetctl.report.FleetReport`, printed once or redrawn in place (``--watch``).

The renderables are pure functions of the report (no clock, no terminal queries), so tests render
them into a fixed-width Console and compare text.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

from rich.cells import cell_len
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
    """At most three characters below a hundred days (``9s``, ``99s``, ``2m``, ``5h``, ``3d``): the AGE
    column keeps its width from one --watch round to the next."""
    if age_s is None:
        return "-"
    for unit, size in (("s", 1), ("m", 60), ("h", 3600)):
        if round(age_s / size) < 100:
            return f"{age_s / size:.0f}{unit}"
    return f"{age_s / 86400:.0f}d"


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
    short: str = ""  # a shorter header for a narrow screen


DEFAULT_VIEW = HealthView()
FLEX_MIN = 24  # PROBLEMS gets at least this (or its longest word) before other columns are dropped
FLEX_FALLBACK = 12  # PROBLEMS' minimum when rich fits the table itself (no width given)
WRAP_MIN = 12  # the first and the flex column keep this many columns while headers can still fold
GAP = 2  # rich's padding between two columns (pad_edge off: none at the table's edges)


def _cell_len(value: Text | str) -> int:
    return value.cell_len if isinstance(value, Text) else cell_len(value)


def _plain(value: Text | str) -> str:
    return value.plain if isinstance(value, Text) else value


def _fit(cols: list[Col], width: int | None) -> tuple[list[Col], list[int] | None]:
    """The columns that fit ``width`` (None: all of them, at their own width), dropping the least
    useful first, and the width of each.

    Every width is given to rich explicitly and their sum never exceeds the screen: a minimum wider
    than the space rich has left makes it fold a cell at one width and crop it at another, and a
    character of a host name is lost.
    """
    natural = {id(c): _longest(c) for c in cols}

    def need(c: Col) -> int:
        if not c.flex:
            return natural[id(c)]
        words = [cell_len(w) for v in c.cells for w in _plain(v).split()]
        return min(natural[id(c)], max(FLEX_MIN, cell_len(c.header), *words))

    kept = list(cols)

    def space() -> int:
        return 0 if width is None else width - GAP * (len(kept) - 1)

    while width is not None and sum(need(c) for c in kept) > space():
        droppable = [c for c in kept if c.drop]
        if not droppable:
            break
        kept.remove(max(droppable, key=lambda c: c.drop))
    if width is None:
        return kept, None
    if sum(need(c) for c in kept) > space():  # the short headers (a summary's states) before any folding
        for c in kept:
            if c.short:
                c.header = c.short
                natural[id(c)] = _longest(c)
    first = [i for i, c in enumerate(kept) if c.flex or c is cols[0]]
    every = list(range(len(kept)))
    cells = [max([1, *(_cell_len(v) for v in c.cells)]) for c in kept]
    words = [max(cells[i], *(cell_len(w) for w in c.header.split())) for i, c in enumerate(kept)]
    widths = [natural[id(c)] for c in kept]
    # Least harm first: the flex column wraps (down to what it needs); headers wrap at their spaces;
    # the first column and the flex one wrap (each keeps a few columns); headers fold; those two
    # fold to one column; then every column folds.
    _shrink(widths, every, space(), [need(c) for c in kept])
    _shrink(widths, every, space(), words)
    _shrink(widths, first, space(), [min(widths[i], WRAP_MIN) for i in every])
    _shrink(widths, every, space(), cells)
    _shrink(widths, first, space(), [1] * len(kept))
    _shrink(widths, every, space(), [1] * len(kept))
    return kept, widths


def _shrink(widths: list[int], which: list[int], space: int, floor: list[int]) -> None:
    """Narrow the widest of ``which`` one column at a time until ``widths`` fit ``space``, none below
    its ``floor``."""
    while sum(widths) > space:
        candidates = [i for i in which if widths[i] > floor[i]]
        if not candidates:
            return
        widest = max(candidates, key=lambda i: (widths[i], i))
        widths[widest] -= 1


def folded(value: Text | str, width: int) -> Text | str:
    """``value`` broken into lines of at most ``width`` columns after a space or a comma (a Slurm
    host list has no spaces), a longer piece cut anywhere: joined again, the lines give back the
    text (less the spaces a line ends on). Rich itself would cut a host list anywhere."""
    text = value if isinstance(value, Text) else Text(value)
    if width < 1 or text.cell_len <= width or "\n" in text.plain:
        return value
    plain = text.plain
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _PIECE.finditer(plain):
        a, b = m.span()
        body_end = a + len(plain[a:b].rstrip(" "))
        if a == b:
            continue
        if start < a and cell_len(plain[start:body_end]) > width:  # the piece starts a new line
            spans.append((start, a))
            start = a
        while cell_len(plain[start:body_end]) > width:  # longer than a line: cut where the line is full
            cut = start + 1
            while cut < body_end and cell_len(plain[start:cut + 1]) <= width:
                cut += 1
            spans.append((start, cut))
            start = cut
    if start < len(plain):
        spans.append((start, len(plain)))
    lines = []
    for s, e in spans:
        line = text[s:e]
        line.rstrip()
        lines.append(line)
    return Text("\n").join(lines)


_PIECE = re.compile(r"[^ ,[]*[ ,[]*")


def fitted_table(cols: list[Col], width: int | None, title: Text | None) -> Table:
    """The columns of ``cols`` that fit ``width`` (see :func:`_fit`); None: every column at its own
    width (a pipe: :func:`fleetctl.views.console.show` prints each row on one line)."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    kept, widths = _fit(cols, width)
    for i, c in enumerate(kept):
        if widths is None:  # rich fits the console it is printed on (the terminal views pass a width)
            wraps = c.flex or c is cols[0]
            table.add_column(c.header, justify=c.justify, overflow="fold", no_wrap=not wraps,
                             min_width=FLEX_FALLBACK if c.flex else None)
        else:
            table.add_column(c.header, justify=c.justify, overflow="fold", width=widths[i])
    for r in range(len(cols[0].cells)):
        row = [c.cells[r] for c in kept]
        table.add_row(*(row if widths is None else (folded(v, w) for v, w in zip(row, widths, strict=True))))
    return table


def _longest(c: Col) -> int:
    return max([cell_len(c.header), *(_cell_len(v) for v in c.cells)])


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


class Drawer(Protocol):
    """Shows one ``--watch`` round: ``report``, or (``failed``: what to say) a round that failed, the
    last good ``report`` kept in view; ``notes``: what the source said of the round (rules missing,
    a clock ahead, a partial answer), shown with it."""

    def __call__(self, report: FleetReport, failed: str | None = None,
                 notes: Sequence[str] = ()) -> None: ...


def live_drawer(stack: contextlib.ExitStack, view: HealthView | None = None, *, every: float,
                body: Body | None = None, **options: Any) -> Drawer:
    """``--watch``: on a terminal the tables redrawn in place each round under a time stamp, with a
    last line that says how many rows the screen hides; in a pipe each round printed in full after a
    time-stamped line (a log of rounds). ``body(report, width)``: another view than the tables. A
    failed round: its line, in red, under the stamp over the last good tables (in a pipe, the line
    alone: the tables are above). The round's notes: in yellow under the stamp (on stderr they would
    be drawn over by the next redraw)."""
    view = view or HealthView(**options)
    console = stdout_console()

    def render(report: FleetReport, width: int | None) -> RenderableType:
        if body is not None:
            return body(report, width)
        return render_report(report, view, width=width, terminal=width is not None)

    if not console.is_terminal:
        def log(report: FleetReport, failed: str | None = None, notes: Sequence[str] = ()) -> None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            show(Text(f"--- {stamp} every {every:g}s"), console)
            for note in notes:
                show(outside(note, style="yellow"), console)
            show(outside(failed, style="red") if failed is not None else render(report, None), console)

        return log
    live = stack.enter_context(Live(Text("asking the fleet..."), console=console, auto_refresh=False,
                                    redirect_stdout=False, redirect_stderr=False))

    def draw(report: FleetReport, failed: str | None = None, notes: Sequence[str] = ()) -> None:
        stamp = Text(time.strftime("%H:%M:%S") + f"  every {every:g}s, Ctrl-C to stop", style="dim")
        head = [stamp, *(outside(note, style="yellow") for note in notes)]
        if failed is not None:
            head.append(outside(failed, style="bold red"))
        shown = Group(*head, render(report, console.width))
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
