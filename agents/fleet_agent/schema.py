"""The wire schema of a node report: one definition, used by the agent and the controller.

The agent serialises a :class:`NodeReport` to JSON at ``GET /v1/node``; ``fleetctl`` parses it back
with :func:`parse_node_report`, which rejects anything that is not this schema (wrong version,
missing or mistyped fields) with a :class:`SchemaError` naming the field.

Units are in the field names (``_c``, ``_pct``, ``_bytes``, ``_w``, ``_mhz``, ``_s``); a value the
chip did not report (NotSupported, stale) is ``None``, never a made-up zero.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = "fleet.node/v1"


class Status(str, enum.Enum):
    """Health of a chip or a node, ordered from best to worst by :attr:`rank`."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]

    @staticmethod
    def worst(statuses: list[Status]) -> Status:
        """The worst of ``statuses``; healthy when there are none."""
        return max(statuses, key=lambda s: s.rank, default=Status.HEALTHY)


# unknown sorts between degraded and unhealthy: a chip we cannot see is worse than a warning,
# but not proof of a fault.
_STATUS_RANK = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNKNOWN: 2, Status.UNHEALTHY: 3}


class Severity(str, enum.Enum):
    """Severity of one problem. ``warning`` makes a chip degraded, ``critical`` unhealthy."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    def status(self) -> Status:
        return {
            Severity.INFO: Status.HEALTHY,
            Severity.WARNING: Status.DEGRADED,
            Severity.CRITICAL: Status.UNHEALTHY,
        }[self]


class Action(str, enum.Enum):
    """What on-call should do about a problem, least to most disruptive."""

    NONE = "none"
    MONITOR = "monitor"
    CHECK_APPLICATION = "check_application"
    CHECK_COOLING = "check_cooling"
    RESTART_AGENT = "restart_agent"
    RESET_CHIP = "reset_chip"
    REBOOT = "reboot"
    RMA = "rma"


@dataclass(frozen=True)
class Problem:
    """One failed health check."""

    check: str
    severity: Severity
    message: str
    action: Action

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity.value,
            "message": self.message,
            "action": self.action.value,
        }


@dataclass
class GpuDetails:
    """NVIDIA-only detail; ``None`` where NVML said NotSupported or the call failed."""

    ecc_volatile_corrected: int | None = None
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_corrected: int | None = None
    ecc_aggregate_uncorrected: int | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    row_remap_pending: bool | None = None
    row_remap_failure: bool | None = None
    retired_pages_pending: bool | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    pcie_link_gen: int | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width: int | None = None
    pcie_link_width_max: int | None = None
    pcie_replay_count: int | None = None
    nvlink_links_up: int | None = None
    nvlink_links_total: int | None = None
    persistence_mode: bool | None = None
    slowdown_temp_c: float | None = None
    shutdown_temp_c: float | None = None
    # XID code (as a string, JSON keys are strings) -> events seen inside the window.
    xid_counts: dict[str, int] = field(default_factory=dict)
    xid_total: int = 0
    last_xid: int | None = None


@dataclass
class TpuDetails:
    """Google TPU detail from the libtpu runtime metrics service."""

    duty_cycle_pct: float | None = None
    tensorcore_utilization_pct: float | None = None
    # False when the metrics service did not answer: normal while no workload runs.
    runtime_metrics_available: bool = False


@dataclass
class ChipReport:
    index: int
    kind: str  # "gpu" | "tpu"
    vendor: str  # "nvidia" | "google"
    model: str
    uuid: str
    pci_bus_id: str
    status: Status = Status.UNKNOWN
    stale: bool = False
    error: str | None = None
    sampled_at: float | None = None
    temperature_c: float | None = None
    memory_temperature_c: float | None = None
    utilization_pct: float | None = None
    memory_utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    gpu: GpuDetails | None = None
    tpu: TpuDetails | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class HostMetrics:
    cpu_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    uptime_s: float | None = None
    temperatures_c: dict[str, float] = field(default_factory=dict)


@dataclass
class CollectorState:
    name: str
    ok: bool
    error: str | None = None
    duration_s: float | None = None


@dataclass
class NodeReport:
    host: str
    agent_version: str
    sampled_at: float
    interval_s: float
    status: Status
    chips_expected: int | None
    chips: list[ChipReport]
    host_metrics: HostMetrics
    problems: list[Problem] = field(default_factory=list)
    collectors: list[CollectorState] = field(default_factory=list)
    driver_version: str | None = None
    drained: bool = False
    sample_duration_s: float | None = None
    schema: str = SCHEMA_VERSION
    # Why the host is drained (the drained file's content, scheduler `none`); optional.
    drained_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class SchemaError(ValueError):
    """A document that is not a valid node report; the message names the field."""


# --- parsing (the controller side) -------------------------------------------------------------

_NUM = (int, float)


def _get(doc: dict[str, Any], key: str, types: type | tuple[type, ...], where: str,
         *, optional: bool = False, default: Any = None) -> Any:
    if key not in doc or doc[key] is None:
        if optional:
            return default
        raise SchemaError(f"{where}.{key}: missing")
    value = doc[key]
    # bool is an int in Python; never accept it where a number is expected.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise SchemaError(f"{where}.{key}: expected {_type_name(types)}, got bool")
    if not isinstance(value, types):
        raise SchemaError(f"{where}.{key}: expected {_type_name(types)}, got {type(value).__name__}")
    return value


def _type_name(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__


def _enum(cls: type[enum.Enum], value: Any, where: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)  # type: ignore[var-annotated]
        raise SchemaError(f"{where}: {value!r} is not one of {allowed}") from None


def _problem(doc: Any, where: str) -> Problem:
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    return Problem(
        check=_get(doc, "check", str, where),
        severity=_enum(Severity, doc.get("severity"), f"{where}.severity"),
        message=_get(doc, "message", str, where),
        action=_enum(Action, doc.get("action"), f"{where}.action"),
    )


def _fill(cls: type[Any], doc: Any, where: str) -> Any:
    """Build a flat dataclass of optional scalars (GpuDetails, TpuDetails, HostMetrics)."""
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    kwargs: dict[str, Any] = {}
    for name, f in cls.__dataclass_fields__.items():
        if name not in doc or doc[name] is None:
            continue
        value = doc[name]
        ftype = str(f.type)
        if ftype.startswith("dict"):
            if not isinstance(value, dict) or not all(isinstance(v, _NUM) for v in value.values()):
                raise SchemaError(f"{where}.{name}: expected an object of numbers")
        elif ftype.startswith("list"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(f"{where}.{name}: expected a list of strings")
        elif ftype.startswith("bool"):
            if not isinstance(value, bool):
                raise SchemaError(f"{where}.{name}: expected bool")
        elif isinstance(value, bool) or not isinstance(value, _NUM):
            raise SchemaError(f"{where}.{name}: expected a number")
        kwargs[name] = value
    return cls(**kwargs)


def _chip(doc: Any, where: str) -> ChipReport:
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    num = (int, float)
    return ChipReport(
        index=_get(doc, "index", int, where),
        kind=_get(doc, "kind", str, where),
        vendor=_get(doc, "vendor", str, where),
        model=_get(doc, "model", str, where),
        uuid=_get(doc, "uuid", str, where),
        pci_bus_id=_get(doc, "pci_bus_id", str, where),
        status=_enum(Status, doc.get("status"), f"{where}.status"),
        stale=_get(doc, "stale", bool, where, optional=True, default=False),
        error=_get(doc, "error", str, where, optional=True),
        sampled_at=_get(doc, "sampled_at", num, where, optional=True),
        temperature_c=_get(doc, "temperature_c", num, where, optional=True),
        memory_temperature_c=_get(doc, "memory_temperature_c", num, where, optional=True),
        utilization_pct=_get(doc, "utilization_pct", num, where, optional=True),
        memory_utilization_pct=_get(doc, "memory_utilization_pct", num, where, optional=True),
        memory_used_bytes=_get(doc, "memory_used_bytes", int, where, optional=True),
        memory_total_bytes=_get(doc, "memory_total_bytes", int, where, optional=True),
        power_w=_get(doc, "power_w", num, where, optional=True),
        power_limit_w=_get(doc, "power_limit_w", num, where, optional=True),
        sm_clock_mhz=_get(doc, "sm_clock_mhz", int, where, optional=True),
        mem_clock_mhz=_get(doc, "mem_clock_mhz", int, where, optional=True),
        gpu=None if doc.get("gpu") is None else _fill(GpuDetails, doc["gpu"], f"{where}.gpu"),
        tpu=None if doc.get("tpu") is None else _fill(TpuDetails, doc["tpu"], f"{where}.tpu"),
        problems=[_problem(p, f"{where}.problems[{i}]")
                  for i, p in enumerate(_get(doc, "problems", list, where, optional=True, default=[]))],
    )


def parse_node_report(doc: Any) -> NodeReport:
    """Validate a decoded JSON document and build a :class:`NodeReport` from it."""
    if not isinstance(doc, dict):
        raise SchemaError("report: expected a JSON object")
    version = doc.get("schema")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"schema: unsupported version {version!r} (expected {SCHEMA_VERSION!r})")
    w = "report"
    chips = _get(doc, "chips", list, w)
    collectors = _get(doc, "collectors", list, w, optional=True, default=[])
    return NodeReport(
        host=_get(doc, "host", str, w),
        agent_version=_get(doc, "agent_version", str, w),
        sampled_at=float(_get(doc, "sampled_at", _NUM, w)),
        interval_s=float(_get(doc, "interval_s", _NUM, w)),
        status=_enum(Status, doc.get("status"), "report.status"),
        chips_expected=_get(doc, "chips_expected", int, w, optional=True),
        chips=[_chip(c, f"chips[{i}]") for i, c in enumerate(chips)],
        host_metrics=_fill(HostMetrics, _get(doc, "host_metrics", dict, w), "host_metrics"),
        problems=[_problem(p, f"problems[{i}]")
                  for i, p in enumerate(_get(doc, "problems", list, w, optional=True, default=[]))],
        collectors=[
            CollectorState(
                name=_get(c, "name", str, f"collectors[{i}]"),
                ok=_get(c, "ok", bool, f"collectors[{i}]"),
                error=_get(c, "error", str, f"collectors[{i}]", optional=True),
                duration_s=_get(c, "duration_s", _NUM, f"collectors[{i}]", optional=True),
            )
            if isinstance(c, dict) else _bad(f"collectors[{i}]")
            for i, c in enumerate(collectors)
        ],
        driver_version=_get(doc, "driver_version", str, w, optional=True),
        drained=_get(doc, "drained", bool, w, optional=True, default=False),
        drained_reason=_get(doc, "drained_reason", str, w, optional=True),
        sample_duration_s=_get(doc, "sample_duration_s", _NUM, w, optional=True),
    )


def _bad(where: str) -> Any:
    raise SchemaError(f"{where}: expected an object")
