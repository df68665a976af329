"""The fleet report's model: what ``fleetctl health`` knows about every selected host, in one document.

Built by :mod:`fleetctl.report.build` from agents' node reports (direct fan-out) or from
Prometheus; drawn by the views or printed as JSON by ``--json``. The JSON layout is stable and documented
in docs/fleet-report.md; change it only by adding optional fields, or bump :data:`REPORT_SCHEMA`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fleet_agent.schema import ChipReport, Problem, Status
from fleet_agent.verdict import HOST_HEALTH_ORDER, HostHealth

from fleetctl.errors import EXIT_OK, EXIT_PROBLEMS

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

    def group_key(self, key: str) -> str:
        """The value ``--group-by key`` files this host under (see :func:`group_value`)."""
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


@dataclass
class FleetReport:
    generated_at: float
    source: str  # "agents" | "prometheus"
    hosts: list[HostRow]
    inventory: str = ""
    pattern: str = "all"
    duration_s: float | None = None

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

    def to_dict(self) -> dict[str, Any]:
        s = self.summary()
        return {
            "schema": REPORT_SCHEMA,
            "generated_at": round(self.generated_at, 3),
            "source": self.source,
            "inventory": self.inventory,
            "pattern": self.pattern,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "exit_code": self.exit_code,
            "summary": {"hosts": {"total": s.total_hosts, **s.hosts},
                        "chips": {"total": s.total_chips, **s.chips}},
            "hosts": [_host_dict(h) for h in self.hosts],
        }

    def to_json_bytes(self, *, indent: bool = False) -> bytes:
        """The report as UTF-8 JSON (msgspec: far faster than json.dumps on a large fleet; non-finite
        numbers never reach it, see _num)."""
        data = _ENCODER.encode(self.to_dict())
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

SORT_KEYS = ("status", "name", "temp", "util", "age")


def sort_key(key: str) -> Any:
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r} (one of {', '.join(SORT_KEYS)})")
    if key == "name":
        return lambda h: h.name
    if key == "temp":
        return lambda h: (-(h.max_temperature_c if h.max_temperature_c is not None else -math.inf), h.name)
    if key == "util":
        return lambda h: (-(h.mean_utilization_pct if h.mean_utilization_pct is not None else -math.inf),
                          h.name)
    if key == "age":
        return lambda h: (-(h.age_s if h.age_s is not None else math.inf), h.name)
    return lambda h: (-h.status.rank, -len(h.problems), h.name)


def summarize(hosts: Iterable[HostRow]) -> Summary:
    host_counts = {s.value: 0 for s in HOST_HEALTH_ORDER}
    chip_counts = dict.fromkeys(CHIP_STATES, 0)
    for h in hosts:
        host_counts[h.status.value] += 1
        for c in h.chips:
            chip_counts[c.status.value] += 1
    return Summary(hosts=host_counts, chips=chip_counts)


def _num(value: float | None, digits: int = 1) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _problem_dict(p: ProblemRow) -> dict[str, Any]:
    return {"check": p.check, "severity": p.severity, "message": p.message, "action": p.action,
            "chip": p.chip}


def _host_dict(h: HostRow) -> dict[str, Any]:
    return {
        "name": h.name,
        "address": h.address,
        "port": h.port,
        "groups": list(h.groups),
        "status": h.status.value,
        "reason": None if h.reason_kind is None else {"kind": h.reason_kind, "message": h.reason},
        "agent_version": h.agent_version,
        "sampled_at": _num(h.sampled_at, 3),
        "age_s": _num(h.age_s, 1),
        "drained": h.drained,
        "chips_expected": h.chips_expected,
        "chips_present": len(h.chips),
        "chips_ok": h.chips_ok,
        "max_temperature_c": _num(h.max_temperature_c),
        "mean_utilization_pct": _num(h.mean_utilization_pct),
        "memory_used_bytes": h.memory_used_bytes,
        "memory_total_bytes": h.memory_total_bytes,
        "problems": [_problem_dict(p) for p in h.problems],
        "chips": [
            {
                "index": c.index, "kind": c.kind, "vendor": c.vendor, "model": c.model, "uuid": c.uuid,
                "status": c.status.value, "stale": c.stale, "error": c.error,
                "temperature_c": _num(c.temperature_c), "utilization_pct": _num(c.utilization_pct),
                "memory_used_bytes": c.memory_used_bytes, "memory_total_bytes": c.memory_total_bytes,
                "power_w": _num(c.power_w),
                "problems": [_problem_dict(problem_row(p, c.index)) for p in c.problems],
            }
            for c in h.chips
        ],
    }


# --- problem rows ----------------------------------------------------------------------------------


def problem_row(p: Problem, chip: int | None) -> ProblemRow:
    return ProblemRow(p.check, p.severity.value, p.message, p.action.value, chip)


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def sort_problem_rows(problems: list[ProblemRow]) -> list[ProblemRow]:
    """Worst first, node-level before chips, then chip, check and message (a table's order)."""
    return sorted(problems, key=lambda p: (_SEVERITY_ORDER.get(p.severity, 3), p.chip if p.chip is not None
                                           else -1, p.check, p.message))
