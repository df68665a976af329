"""The fleet report's model: what ``fleetctl health`` knows about every selected host, in one document.

Built by :mod:`fleetctl.report.build` from agents' node reports (direct fan-out) or from
Prometheus; drawn by the views or printed as JSON by ``--json``. The JSON layout is stable and documented
in docs/fleet-report.md; change it only by adding optional fields, or bump :data:`REPORT_SCHEMA`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fleet_agent.schema import ChipReport, Problem, Status
from fleet_agent.verdict import HOST_HEALTH_ORDER, HostHealth

from fleetctl.errors import EXIT_OK, EXIT_PROBLEMS, UsageError

REPORT_SCHEMA = "fleet.report/v1"

CHIP_STATES: tuple[str, ...] = ("healthy", "degraded", "unknown", "unhealthy")


@dataclass(frozen=True)
class ProblemRow:
    check: str
    severity: str  # info | warning | critical
    message: str
    action: str  # fleet_agent.schema.Action values; "none" when the source does not say
    chip: int | None = None  # None: a node-level problem

    def short(self) -> str:
        where = "" if self.chip is None else f"#{self.chip} "
        return f"{where}{self.check}"


# (chips present, chips healthy, max temperature °C, mean utilisation %, memory used, memory total)
ChipFigures = tuple[int, int, float | None, float | None, int | None, int | None]


@dataclass
class HostRow:
    """One host. ``reason``/``reason_kind`` say why there is no report (error/unreachable)."""

    name: str
    address: str
    port: int
    groups: tuple[str, ...]
    status: HostHealth
    reason_kind: str | None = None  # a fleetctl.fanout.FetchKind value, or "prometheus"
    reason: str | None = None
    agent_version: str | None = None
    sampled_at: float | None = None
    age_s: float | None = None
    drained: bool = False
    chips_expected: int | None = None
    # The agent's chip reports as parsed (not copied: 80,000 chips must stay cheap).
    chips: list[ChipReport] = field(default_factory=list)
    problems: list[ProblemRow] = field(default_factory=list)  # node-level and chip problems
    vars: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def reachable(self) -> bool:
        return self.status not in (HostHealth.ERROR, HostHealth.UNREACHABLE)

    @property
    def chips_total(self) -> int:
        return max(len(self.chips), self.chips_expected or 0)

    @property
    def chips_present(self) -> int:
        """Chips the source reported (a Prometheus summary row counts them without listing them)."""
        return len(self.chips)

    @property
    def chips_ok(self) -> int:
        return sum(1 for c in self.chips if c.status is Status.HEALTHY)

    @property
    def max_temperature_c(self) -> float | None:
        temps = [c.temperature_c for c in self.chips if c.temperature_c is not None]
        return max(temps) if temps else None

    @property
    def mean_utilization_pct(self) -> float | None:
        utils = [c.utilization_pct for c in self.chips if c.utilization_pct is not None]
        return sum(utils) / len(utils) if utils else None

    @property
    def memory_used_bytes(self) -> int | None:
        used = [c.memory_used_bytes for c in self.chips if c.memory_used_bytes is not None]
        return sum(used) if used else None

    @property
    def memory_total_bytes(self) -> int | None:
        total = [c.memory_total_bytes for c in self.chips if c.memory_total_bytes is not None]
        return sum(total) if total else None

    @property
    def power_w(self) -> float | None:
        powers = [c.power_w for c in self.chips if c.power_w is not None]
        return sum(powers) if powers else None

    def chip_figures(self) -> ChipFigures:
        """The chip figures the report prints, at once (a JSON row reads them all)."""
        return (self.chips_present, self.chips_ok, self.max_temperature_c, self.mean_utilization_pct,
                self.memory_used_bytes, self.memory_total_bytes)

    def group_key(self, key: str) -> str:
        """The value ``--group-by key`` files this host under (see :func:`group_value`); ``model``,
        unless the inventory defines it, is the chip model the agent reports."""
        if key == "model" and key not in self.vars:
            return host_model(self)
        return group_value(self.groups, self.vars, key)


def group_value(groups: tuple[str, ...], host_vars: Mapping[str, Any], key: str) -> str:
    """``group``: the first inventory group; ``kind``-like keys: an inventory variable's value;
    any other name that is a prefix of group names (``rack``): the first group starting with it."""
    if key == "group":
        return groups[0] if groups else "ungrouped"
    if key in host_vars and host_vars[key] is not None:
        return str(host_vars[key])
    for g in groups:
        if g.startswith(key):
            return g
    return "-"


def group_keys(hosts: Iterable[HostRow]) -> list[str]:
    """What ``--group-by`` accepts for these hosts: ``group``, ``model``, the inventory variables set
    on them and the prefixes of their group names (``rack`` for ``rack12``, ``gpu`` for ``gpu_nodes``)."""
    keys: dict[str, None] = {"group": None, "model": None}
    names: dict[str, None] = {}
    for h in hosts:
        keys.update(dict.fromkeys(h.vars))
        names.update(dict.fromkeys(h.groups))
    for g in names:
        stem = g.rstrip("0123456789-_")
        for cut in range(1, len(stem) + 1):
            if cut == len(stem) or not stem[cut].isalnum():
                keys.setdefault(stem[:cut], None)
    return list(keys)


def check_group_by(key: str, hosts: Iterable[HostRow]) -> str:
    """``key`` when it groups these hosts by something they have, else a usage error with the closest
    known keys (an unknown key would put every host in one group named ``-``)."""
    import difflib

    hosts = list(hosts)
    known = group_keys(hosts)
    if key in known or any(g.startswith(key) for h in hosts for g in h.groups):
        return key
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(k) for k in close)}? " if close else ""
    raise UsageError(f"--group-by {key!r}: no such variable or group prefix on the selected hosts; {hint}"
                     f"known: {', '.join(_short_list(known))}")


def _short_list(items: list[str], limit: int = 12) -> list[str]:
    return items[:limit] + ([f"... ({len(items) - limit} more)"] if len(items) > limit else [])


@dataclass
class Summary:
    hosts: dict[str, int]
    chips: dict[str, int]

    @property
    def total_hosts(self) -> int:
        return sum(self.hosts.values())

    @property
    def total_chips(self) -> int:
        return sum(self.chips.values())


# Hosts encoded per piece of :meth:`FleetReport.json_chunks`: big enough that the per-piece overhead
# vanishes, small enough that a piece stays a few MB.
JSON_HOSTS_PER_CHUNK = 2000


@dataclass
class FleetReport:
    generated_at: float
    source: str  # "agents" | "prometheus"
    hosts: list[HostRow]
    inventory: str = ""
    pattern: str = "all"
    duration_s: float | None = None
    # What the source warned of while answering (through Prometheus: a partial answer), as
    # {"query", "warning"} objects; none from the agents.
    warnings: list[dict[str, str]] = field(default_factory=list)

    def sort(self, key: str = "status") -> FleetReport:
        """Order hosts in place: ``status`` (worst first), ``name``, ``temp``, ``util``, ``age``."""
        self.hosts.sort(key=sort_key(key))
        return self

    def summary(self) -> Summary:
        return summarize(self.hosts)

    @property
    def exit_code(self) -> int:
        """0 when every host is healthy, else 1 (degraded, unhealthy, unknown, unreachable...)."""
        return EXIT_OK if all(h.status is HostHealth.HEALTHY for h in self.hosts) else EXIT_PROBLEMS

    def to_dict(self, hosts: list[HostRow] | None = None) -> dict[str, Any]:
        """The JSON document; ``hosts``: list only these (``--status``), the summary and exit code
        still the whole fleet's."""
        doc: dict[str, Any] = msgspec.json.decode(b"".join(self.json_chunks(hosts)))
        return doc

    def _head(self) -> dict[str, Any]:
        s = self.summary()
        return {
            "schema": REPORT_SCHEMA,
            "generated_at": round(self.generated_at, 3),
            "source": self.source,
            "inventory": self.inventory,
            "pattern": self.pattern,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "warnings": self.warnings,
            "exit_code": self.exit_code,
            "summary": {"hosts": {"total": s.total_hosts, **s.hosts},
                        "chips": {"total": s.total_chips, **s.chips}},
        }

    def json_chunks(self, hosts: list[HostRow] | None = None, *, per_chunk: int = JSON_HOSTS_PER_CHUNK
                    ) -> Iterator[bytes]:
        """The compact JSON document in pieces that join to :meth:`to_json_bytes`: the head, then the
        hosts ``per_chunk`` at a time, so a caller writing them out never holds the whole document
        (100,000 hosts are hundreds of MB). A piece ends between two hosts, never inside a string."""
        rows = self.hosts if hosts is None else hosts
        head = _ENCODER.encode(self._head())
        yield head[:-1] + b',"hosts":['
        for start in range(0, len(rows), per_chunk):
            part = _ENCODER.encode([_host_out(h) for h in rows[start:start + per_chunk]])
            yield (b"," if start else b"") + part[1:-1]
        yield b"]}"

    def to_json_bytes(self, *, indent: bool = False, hosts: list[HostRow] | None = None) -> bytes:
        """The report as UTF-8 JSON (msgspec: far faster than json.dumps on a large fleet)."""
        data = b"".join(self.json_chunks(hosts))
        return msgspec.json.format(data, indent=2) if indent else data

    def to_json(self, *, indent: bool = False) -> str:
        return self.to_json_bytes(indent=indent).decode()


_BUILTINS: tuple[type[Any], ...] = (str, bool, int, float, list, tuple, dict, set, frozenset)


def _builtin(value: Any) -> Any:
    """What msgspec cannot encode itself: subclasses of builtins (Ansible tags the strings it
    reads from an inventory with a str subclass), given as their base type."""
    for base in _BUILTINS:
        if isinstance(value, base):
            return base(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a fleet report")


_ENCODER = msgspec.json.Encoder(enc_hook=_builtin)

SORT_KEYS = ("status", "name", "temp", "power", "memory", "xid", "util", "age")
XID_CHECK = "xid"


def _desc(value: float | None) -> float:
    """A descending sort's key: the largest first, a missing value last."""
    return -(value if value is not None else -math.inf)


def host_power_w(h: HostRow) -> float | None:
    """The host's power draw (:attr:`HostRow.power_w`)."""
    return h.power_w


def xid_count(problems: Iterable[ProblemRow | Problem]) -> int:
    return sum(1 for p in problems if p.check == XID_CHECK)


def sort_key(key: str) -> Any:
    """Hosts: ``status`` worst first, ``name`` A to Z, every figure largest first (``age``: oldest)."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r} (one of {', '.join(SORT_KEYS)})")
    if key == "name":
        return lambda h: h.name
    if key == "temp":
        return lambda h: (_desc(h.max_temperature_c), h.name)
    if key == "util":
        return lambda h: (_desc(h.mean_utilization_pct), h.name)
    if key == "power":
        return lambda h: (_desc(host_power_w(h)), h.name)
    if key == "memory":
        return lambda h: (_desc(h.memory_used_bytes), h.name)
    if key == "xid":
        return lambda h: (-xid_count(h.problems), -h.status.rank, h.name)
    if key == "age":
        return lambda h: (-(h.age_s if h.age_s is not None else math.inf), h.name)
    return lambda h: (-h.status.rank, -len(h.problems), h.name)


ChipRow = tuple[HostRow, ChipReport]


def chip_sort_key(key: str) -> Any:
    """Chips (``--chips --sort``): as :func:`sort_key`, on each chip's own figures; ties by host, index."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r} (one of {', '.join(SORT_KEYS)})")
    figure: dict[str, Any] = {
        "temp": lambda r: _desc(r[1].temperature_c),
        "util": lambda r: _desc(r[1].utilization_pct),
        "power": lambda r: _desc(r[1].power_w),
        "memory": lambda r: _desc(r[1].memory_used_bytes),
        "xid": lambda r: (-xid_count(r[1].problems), -r[1].status.rank),
        "status": lambda r: (-r[1].status.rank, -len(r[1].problems)),
        "age": lambda r: -(r[0].age_s if r[0].age_s is not None else math.inf),
    }
    if key == "name":
        return lambda r: (r[0].name, r[1].index)
    first = figure[key]
    return lambda r: (first(r), r[0].name, r[1].index)


def sorted_chips(hosts: Iterable[HostRow], key: str, *, reverse: bool = False) -> list[ChipRow]:
    rows = [(h, c) for h in hosts for c in h.chips]
    rows.sort(key=chip_sort_key(key))
    if reverse:
        rows.reverse()
    return rows


def sorted_hosts(hosts: Iterable[HostRow], key: str, *, reverse: bool = False) -> list[HostRow]:
    """``reverse`` turns the whole order round (ties included), as ``sort -r`` would."""
    rows = sorted(hosts, key=sort_key(key))
    if reverse:
        rows.reverse()
    return rows


@dataclass(frozen=True)
class HealthView:
    """What ``fleetctl health`` shows: which rows, in which order, how wide."""

    chips: bool = False
    unhealthy: bool = False  # only what is wrong (``no problems`` when nothing is)
    statuses: frozenset[str] | None = None  # --status: hosts (chips with --chips) in these states
    group_by: str | None = None
    sort: str = "status"
    reverse: bool = False
    wide: bool = False  # -o wide: more columns, every problem


def selected_hosts(hosts: Iterable[HostRow], view: HealthView) -> list[HostRow]:
    """The hosts a view lists, in its order (``--unhealthy``, ``--status``, ``--sort``, ``--reverse``)."""
    rows = sorted_hosts(hosts, view.sort, reverse=view.reverse)
    if view.unhealthy:
        rows = [h for h in rows if h.status is not HostHealth.HEALTHY]
    return filter_hosts(rows, view.statuses)


def filter_hosts(hosts: Iterable[HostRow], statuses: frozenset[str] | None) -> list[HostRow]:
    """The hosts whose status is one of ``statuses`` (all of them when ``None``)."""
    return [h for h in hosts if statuses is None or h.status.value in statuses]


def chip_matches(chip: ChipReport, statuses: frozenset[str] | None) -> bool:
    """Chips are healthy, degraded, unknown or unhealthy; a host-only state (unreachable) matches none."""
    return statuses is None or chip.status.value in statuses


def host_model(h: HostRow) -> str:
    """The host's chip model (the first chip's; ``-`` without a report), vendor prefix left out."""
    models = [c.model for c in h.chips[:1]]
    if not models:  # a Prometheus summary row: (kind, vendor, model, count) per model, no chips listed
        models = [m[2] for m in (getattr(h, "models", None) or [])[:1]]
    for model in models:
        for prefix in ("NVIDIA ", "Google "):
            if model.startswith(prefix):
                return str(model[len(prefix):])
        return str(model)
    return "-"


def summarize(hosts: Iterable[HostRow]) -> Summary:
    host_counts = {s.value: 0 for s in HOST_HEALTH_ORDER}
    chip_counts = dict.fromkeys(CHIP_STATES, 0)
    for h in hosts:
        host_counts[h.status.value] += 1
        # A Prometheus row from the host's rollups counts healthy chips it does not list (all of them,
        # or all but those not healthy): chips_ok less the healthy ones listed.
        listed_ok = 0
        for c in h.chips:
            chip_counts[c.status.value] += 1
            listed_ok += c.status is Status.HEALTHY
        chip_counts["healthy"] += h.chips_ok - listed_ok
    return Summary(hosts=host_counts, chips=chip_counts)


def _num(value: float | None, digits: int = 1) -> float | None:
    """A figure rounded for the report; NaN and infinities stay as they are and msgspec writes them as
    ``null`` (JSON has no such numbers)."""
    return None if value is None else round(value, digits)


# The report's JSON shapes as msgspec structs: built positionally and encoded without a dict per chip
# (80,000 chips at 10,000 hosts). Field order is the documented key order (docs/fleet-report.md).
class _ProblemOut(msgspec.Struct):
    check: str
    severity: str
    message: str
    action: str
    chip: int | None


class _ChipOut(msgspec.Struct):
    index: int
    kind: str
    vendor: str
    model: str
    uuid: str
    status: Status
    stale: bool
    error: str | None
    temperature_c: float | None
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    problems: list[_ProblemOut]


class _ReasonOut(msgspec.Struct):
    kind: str
    message: str | None


class _HostOut(msgspec.Struct):
    name: str
    address: str
    port: int
    groups: tuple[str, ...]
    status: HostHealth
    reason: _ReasonOut | None
    agent_version: str | None
    sampled_at: float | None
    age_s: float | None
    drained: bool
    chips_expected: int | None
    chips_present: int
    chips_ok: int
    max_temperature_c: float | None
    mean_utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    problems: list[_ProblemOut]
    chips: list[_ChipOut]


def _problem_out(p: ProblemRow) -> _ProblemOut:
    return _ProblemOut(p.check, p.severity, p.message, p.action, p.chip)


def _chip_out(c: ChipReport) -> _ChipOut:
    temp, util, power = c.temperature_c, c.utilization_pct, c.power_w
    return _ChipOut(
        c.index, c.kind, c.vendor, c.model, c.uuid, c.status, c.stale, c.error,
        None if temp is None else round(temp, 1), None if util is None else round(util, 1),
        c.memory_used_bytes, c.memory_total_bytes, None if power is None else round(power, 1),
        [_problem_out(problem_row(p, c.index)) for p in c.problems] if c.problems else [],
    )


def _host_out(h: HostRow) -> _HostOut:
    present, ok, temp, util, used, total = h.chip_figures()
    return _HostOut(
        h.name, h.address, h.port, h.groups, h.status,
        None if h.reason_kind is None else _ReasonOut(h.reason_kind, h.reason),
        h.agent_version, _num(h.sampled_at, 3), _num(h.age_s, 1), h.drained, h.chips_expected,
        present, ok, _num(temp), _num(util), used, total,
        [_problem_out(p) for p in h.problems] if h.problems else [],
        [_chip_out(c) for c in h.chips] if h.chips else [],
    )


# --- problem rows ----------------------------------------------------------------------------------


def problem_row(p: Problem, chip: int | None) -> ProblemRow:
    return ProblemRow(p.check, p.severity.value, p.message, p.action.value, chip)


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def sort_problem_rows(problems: list[ProblemRow]) -> list[ProblemRow]:
    """Worst first, node-level before chips, then chip, check and message (a table's order)."""
    return sorted(problems, key=lambda p: (_SEVERITY_ORDER.get(p.severity, 3), p.chip if p.chip is not None
                                           else -1, p.check, p.message))
