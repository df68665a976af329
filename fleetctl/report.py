"""The fleet report: what ``fleetctl health`` knows about every selected host, in one document.

Built from agents' node reports (direct fan-out) or from Prometheus; rendered as tables by
:mod:`fleetctl.render` or printed as JSON by ``--json``. The JSON layout is stable and documented
in docs/fleet-report.md; change it only by adding optional fields, or bump :data:`REPORT_SCHEMA`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fleet_agent.schema import ChipReport, NodeReport, Problem, Status

from fleetctl.errors import EXIT_OK, EXIT_PROBLEMS

REPORT_SCHEMA = "fleet.report/v1"

# A sample older than this many agent intervals (and at least STALE_MIN_S) is not current.
STALE_INTERVALS = 3.0
STALE_MIN_S = 30.0


class HostState(enum.StrEnum):
    """A host's state in the fleet report: the agent's node status, or why there is none."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"  # the agent answered but cannot see (some of) its chips
    ERROR = "error"  # something answered, but not a valid report (401, garbage, wrong schema)
    UNREACHABLE = "unreachable"  # no answer: refused, timed out, hung
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        """Higher is worse; tables list the worst first."""
        return _STATE_RANK[self]

    @property
    def ok(self) -> bool:
        return self is HostState.HEALTHY


_STATE_RANK = {
    HostState.HEALTHY: 0, HostState.DEGRADED: 1, HostState.UNKNOWN: 2,
    HostState.ERROR: 3, HostState.UNREACHABLE: 4, HostState.UNHEALTHY: 5,
}
HOST_STATES: tuple[HostState, ...] = tuple(sorted(HostState, key=lambda s: s.rank))
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
    status: HostState
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
        return self.status not in (HostState.ERROR, HostState.UNREACHABLE)

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
        return EXIT_OK if all(h.status is HostState.HEALTHY for h in self.hosts) else EXIT_PROBLEMS

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
        """The report as UTF-8 JSON (msgspec: 10,000 hosts encode in a tenth of json.dumps' time;
        non-finite numbers never reach it, see _num)."""
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
    host_counts = {s.value: 0 for s in HOST_STATES}
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
                "problems": [_problem_dict(_problem_row(p, c.index)) for p in c.problems],
            }
            for c in h.chips
        ],
    }


# --- building rows ---------------------------------------------------------------------------------


def _problem_row(p: Problem, chip: int | None) -> ProblemRow:
    return ProblemRow(p.check, p.severity.value, p.message, p.action.value, chip)


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def sort_problems(problems: list[ProblemRow]) -> list[ProblemRow]:
    return sorted(problems, key=lambda p: (_SEVERITY_ORDER.get(p.severity, 3), p.chip if p.chip is not None
                                           else -1, p.check, p.message))


def host_row_from_node(name: str, address: str, port: int, groups: tuple[str, ...], node: NodeReport,
                       now: float, *, expected_chips: int | None = None,
                       host_vars: Mapping[str, Any] | None = None) -> HostRow:
    """A reachable host: the agent's own judgement, plus what only the controller can see.

    The controller adds two checks: the inventory's ``fleet_agent_expected_chips`` against the chips the
    agent found (when the agent does not check it itself), and the age of the sample (an agent whose
    sampling loop is stuck keeps serving an old sample).
    """
    chips = node.chips
    problems = [_problem_row(p, None) for p in node.problems]
    problems += [_problem_row(p, c.index) for c in chips if c.problems for p in c.problems]
    status = HostState(node.status.value)
    expected = expected_chips if expected_chips is not None else node.chips_expected
    if (expected is not None and len(chips) != expected
            and not any(p.check == "chip_count" for p in problems)):
        problems.append(ProblemRow("chip_count", "critical",
                                   f"{len(chips)} of {expected} chips present (inventory)", "reboot"))
        status = worse(status, HostState.UNHEALTHY)
    age = max(0.0, now - node.sampled_at)
    if age > max(STALE_INTERVALS * node.interval_s, STALE_MIN_S):
        problems.append(ProblemRow("sample_age", "warning",
                                   f"latest sample is {age:.0f}s old (interval {node.interval_s:g}s)",
                                   "restart_agent"))
        status = worse(status, HostState.UNKNOWN)
    return HostRow(
        name=name, address=address, port=port, groups=groups, status=status,
        agent_version=node.agent_version, sampled_at=node.sampled_at, age_s=age, drained=node.drained,
        chips_expected=expected, chips=chips, problems=sort_problems(problems), vars=host_vars or {},
    )


def host_row_failed(name: str, address: str, port: int, groups: tuple[str, ...], *, reachable: bool,
                    kind: str, reason: str, expected_chips: int | None = None,
                    host_vars: Mapping[str, Any] | None = None) -> HostRow:
    """A host without a report: ``reachable`` False -> unreachable, True -> error."""
    return HostRow(
        name=name, address=address, port=port, groups=groups,
        status=HostState.ERROR if reachable else HostState.UNREACHABLE,
        reason_kind=kind, reason=reason, chips_expected=expected_chips, vars=host_vars or {},
    )


def worse(a: HostState, b: HostState) -> HostState:
    return a if a.rank >= b.rank else b
