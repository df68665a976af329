"""``fleetctl health --map``: every host as one cell, one line (or a few) per rack or group, so a
thousand hosts fit one screen and the bad rack stands out.

A cell is a glyph that differs per status as well as a colour, so the map reads without colour (a
pipe, a capture, a colour-blind reader). Hosts keep their place from one round to the next: each
group lists its hosts in natural name order (``h100-9`` before ``h100-10``), whatever ``--sort`` says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import groupby

from rich.cells import cell_len
from rich.text import Text

from fleetctl.report import HOST_HEALTH_ORDER, FleetReport, HostRow, summarize
from fleetctl.views.health import STATUS_STYLE, summary_line
from fleetctl.views.text import visible

GLYPH = {
    "healthy": "·",
    "degraded": "o",
    "unknown": "?",
    "error": "E",
    "unreachable": "!",
    "unhealthy": "X",
}
BLOCK = 10  # cells between spaces, so a host's place in its rack can be counted
LABEL_MAX = 20  # a longer rack or group name is clipped in the middle (it still differs at its end)
_DIGITS = re.compile(r"([0-9]+)")


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """``rack9`` before ``rack10``: digit runs compare as numbers."""
    return [(1, int(p)) if p.isdigit() else (0, p) for p in _DIGITS.split(name) if p]


def default_group_by(hosts: Iterable[HostRow]) -> str:
    """Racks when the inventory has ``rack*`` groups, else each host's first group."""
    return "rack" if any(g.startswith("rack") for h in hosts for g in h.groups) else "group"


def _per_line(avail: int) -> tuple[int, bool]:
    """How many cells fit ``avail`` columns, and whether they are spaced in blocks."""
    blocks = (avail + 1) // (BLOCK + 1)
    if blocks >= 2:
        return blocks * BLOCK, True
    return max(avail, 1), False


def render_map(hosts: list[HostRow], group_by: str, *, width: int | None) -> Text:
    """The map's lines: ``LABEL  BAD/ALL  cells``; ``width`` None: one line per group (a pipe)."""
    groups = sorted(((k, sorted(g, key=lambda h: natural_key(h.name)))
                     for k, g in groupby(sorted(hosts, key=lambda h: natural_key(h.group_key(group_by))),
                                         key=lambda h: h.group_key(group_by))),
                    key=lambda kv: natural_key(kv[0]))
    labels = [visible(k, limit=LABEL_MAX, middle=True) for k, _ in groups]
    counts = [f"{sum(h.status.value != 'healthy' for h in g)}/{len(g)}" for _, g in groups]
    # Display widths, not characters: a wide (CJK) rack name takes two columns per character.
    label_w = max((cell_len(x) for x in labels), default=0)
    count_w = max((len(x) for x in counts), default=0)
    spaced = True
    per_line: int | None = None
    if width is not None:
        if width - label_w - count_w - 2 < 2 * BLOCK + 1:  # narrow: the counts give way to the cells
            count_w = 0
        per_line, spaced = _per_line(width - label_w - (count_w + 1 if count_w else 0) - 1)
    text = Text()
    for (_, members), label, count in zip(groups, labels, counts, strict=True):
        bad = count.split("/", 1)[0] != "0"
        prefix = Text(label + " " * (label_w - cell_len(label) + 1), style="bold" if bad else "")
        if count_w:
            prefix.append(count.rjust(count_w) + " ", style="bold red" if bad else "dim")
        indent = " " * prefix.cell_len
        step = per_line or len(members)
        for start in range(0, len(members), step):
            text.append_text(prefix if start == 0 else Text(indent))
            for i, h in enumerate(members[start:start + step]):
                if spaced and i and i % BLOCK == 0:
                    text.append(" ")
                status = h.status.value
                text.append(GLYPH.get(status, "?"), style=STATUS_STYLE.get(status, ""))
            text.append("\n")
    text.append_text(legend(hosts, width))
    return text


def legend(hosts: list[HostRow], width: int | None = None) -> Text:
    """``· healthy 950  o degraded 30  X unhealthy 12``: every glyph with its count (healthy always);
    on a screen ``width`` wide an item that would not fit starts a new line (never split in two)."""
    counts = summarize(hosts).hosts
    text = Text()
    used = 0
    for state in HOST_HEALTH_ORDER:
        name = state.value
        if name != "healthy" and not counts[name]:
            continue
        item = f" {name} {counts[name]}"
        size = 1 + len(item)
        if used and width is not None and used + 2 + size > width:
            text.append("\n")
            used = 0
        elif used:
            text.append("  ")
            used += 2
        text.append(GLYPH[name], style=STATUS_STYLE[name])
        text.append(item)
        used += size
    return text


def render_fleet_map(report: FleetReport, hosts: list[HostRow], group_by: str | None, *,
                     width: int | None) -> Text:
    """The summary line, then the map of ``hosts`` (the selected ones) grouped by ``group_by``."""
    key = group_by or default_group_by(hosts)
    text = summary_line(report)
    text.append(f"\n{key}s" if key in ("rack", "group") else f"\n{key}", style="dim")
    text.append(" (not healthy/hosts), one cell per host\n", style="dim")
    text.append_text(render_map(hosts, key, width=width))
    return text
