"""``fleetctl health --summary``: one line per model, group or rack (like Slurm's ``sinfo``) with the
hosts counted per status and the host lists compressed (``h100-[0001-0004,0007]``, Slurm's hostlist
notation), as a table, plain lines for a pipe, or a JSON/YAML document.

The data half (:func:`summary_rows`, :func:`hostlist`, :func:`summary_doc`) is standard library only:
``--summary -o json`` does not load rich.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetctl.report import HOST_HEALTH_ORDER, FleetReport, HostHealth, HostRow

if TYPE_CHECKING:
    from rich.console import RenderableType

SUMMARY_SCHEMA = "fleet.summary/v1"
# The state columns' headers on a narrow screen (sinfo abbreviates its states too).
SHORT_STATE = {"healthy": "OK", "degraded": "DEGR", "unknown": "UNKN", "error": "ERR", "unreachable": "UNRCH",
               "unhealthy": "UNHLT"}
DEFAULT_KEY = "model"
_NUMBERED = re.compile(r"(.*?)([0-9]+)")
_SPECIAL = re.compile(r"[\[\],:\s]")


def _natural(name: str) -> tuple[str, int, str]:
    m = _NUMBERED.fullmatch(name)
    return (m.group(1), int(m.group(2)), name) if m else (name, -1, name)


def hostlist(names: Iterable[str]) -> str:
    """Host names as Slurm writes a hostlist: ``h100-[0001-0004,0007],v5e-0001``.

    Names that end in digits share brackets with those of the same prefix (zero padding is kept:
    ``n01`` and ``n1`` are two hosts, in two lists); other names (and any with ``[``, ``]``, ``,`` or
    ``:``) are listed as they are. Sorted, duplicates dropped. fleetctl's host patterns read the
    result back (:func:`fleetctl.inventory.expand_hostlists`).
    """
    numbered: dict[tuple[str, int], list[int]] = {}  # (prefix, padded width or 0) -> numbers
    plain: list[str] = []
    for name in dict.fromkeys(names):
        # a name with a bracket, comma or colon of its own is listed as it is (a pattern reads those)
        m = None if _SPECIAL.search(name) else _NUMBERED.fullmatch(name)
        if m is None:
            plain.append(name)
            continue
        digits = m.group(2)
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        numbered.setdefault((m.group(1), width), []).append(int(digits))
    for (prefix, width), numbers in list(numbered.items()):
        if width == 0:  # h100-1000 belongs with h100-0999: as wide as the padded ones
            for n in [n for n in numbers if (prefix, len(str(n))) in numbered]:
                numbers.remove(n)
                numbered[(prefix, len(str(n)))].append(n)
            if not numbers:
                del numbered[(prefix, width)]
    parts: list[tuple[str, int, str]] = [(n, -1, n) for n in plain]
    for (prefix, digits), numbers in numbered.items():  # digits 0: unpadded
        numbers.sort()
        ranges: list[str] = []
        start = prev = numbers[0]
        for nxt in [*numbers[1:], None]:
            if nxt is not None and nxt == prev + 1:
                prev = nxt
                continue
            ranges.append(f"{start:0{digits}d}" + (f"-{prev:0{digits}d}" if prev != start else ""))
            if nxt is not None:
                start = prev = nxt
        inner = ",".join(ranges)
        parts.append((prefix, numbers[0], prefix + (inner if len(numbers) == 1 else f"[{inner}]")))
    return ",".join(text for *_, text in sorted(parts))


@dataclass
class SummaryRow:
    key: str
    hosts: list[str] = field(default_factory=list)
    by_status: dict[str, list[str]] = field(default_factory=dict)
    chips: int = 0
    chips_ok: int = 0

    def count(self, status: str) -> int:
        return len(self.by_status.get(status, ()))

    def not_healthy(self) -> list[str]:
        return [n for s, names in self.by_status.items() if s != HostHealth.HEALTHY.value for n in names]


def summary_rows(hosts: Iterable[HostRow], key: str = DEFAULT_KEY) -> list[SummaryRow]:
    """One row per value of ``key`` (as ``--group-by`` files hosts), in natural order of the value."""
    rows: dict[str, SummaryRow] = {}
    for h in hosts:
        value = h.group_key(key)
        row = rows.setdefault(value, SummaryRow(value))
        row.hosts.append(h.name)
        row.by_status.setdefault(h.status.value, []).append(h.name)
        row.chips += h.chips_total
        row.chips_ok += h.chips_ok
    return [rows[k] for k in sorted(rows, key=_natural)]


def states_shown(rows: list[SummaryRow]) -> list[str]:
    """Healthy and every state some row has, best to worst."""
    present = {s for r in rows for s in r.by_status}
    return [s.value for s in HOST_HEALTH_ORDER if s is HostHealth.HEALTHY or s.value in present]


def summary_doc(report: FleetReport, hosts: list[HostRow], key: str = DEFAULT_KEY) -> dict[str, Any]:
    """``--summary -o json|yaml``: the rows with their counts and compressed host lists."""
    rows = summary_rows(hosts, key)
    return {
        "schema": SUMMARY_SCHEMA,
        "generated_at": round(report.generated_at, 3),
        "source": report.source,
        "inventory": report.inventory,
        "pattern": report.pattern,
        "group_by": key,
        "warnings": report.warnings,  # as in the report: a partial answer through Prometheus
        "exit_code": report.exit_code,
        "groups": [
            {"key": r.key, "hosts": len(r.hosts), "chips": r.chips, "chips_ok": r.chips_ok,
             "counts": {s.value: r.count(s.value) for s in HOST_HEALTH_ORDER},
             "hostlist": hostlist(r.hosts),
             "by_status": {s: hostlist(names) for s, names in r.by_status.items()}}
            for r in rows
        ],
    }


def render_summary(hosts: list[HostRow], key: str = DEFAULT_KEY, *, wide: bool = False,
                   width: int | None = None) -> RenderableType:
    """The summary table: KEY, HOSTS, a count per state, the hosts that are not healthy (``wide``:
    and every host), the lists compressed; on a narrow screen CHIPS OK gives way first."""
    from rich.text import Text

    from fleetctl.views.health import STATUS_STYLE, Col, fitted_table
    from fleetctl.views.text import ident, outside

    rows = summary_rows(hosts, key)
    states = states_shown(rows)
    cols = [Col(key.upper()), Col("HOSTS", "right"), Col("CHIPS OK", "right", drop=2)]
    cols += [Col(s.upper(), "right", short=SHORT_STATE.get(s, "")) for s in states]
    cols.append(Col("NOT HEALTHY", flex=True))
    if wide:
        cols.append(Col("HOSTLIST", drop=1))
    for r in rows:
        counts = [Text(str(r.count(s)), style=STATUS_STYLE[s] if r.count(s) and s != "healthy" else "")
                  for s in states]
        extra = [outside(hostlist(r.hosts))] if wide else []
        values: list[Text | str] = [ident(r.key), str(len(r.hosts)), f"{r.chips_ok}/{r.chips}", *counts,
                  outside(hostlist(r.not_healthy()) or "-"), *extra]
        for c, v in zip(cols, values, strict=True):
            c.cells.append(v)
    return fitted_table(cols, width, None)
