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
# but not proof of a fault. Exported as fleet_chip_status_rank and read back by fleetctl: a value
# once given never changes meaning (a new status takes a new number).
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
    """What on-call should do about a problem, least to most disruptive.

    Installing or updating the driver or firmware takes the host out of service and ends in a
    reload or reboot, so it ranks above a reboot; hands on the hardware, the vendor's support and
    an RMA take longer still. An action a newer agent sends that this version does not know is a
    member of its own (``Action("drain_fabric")``), so that a reader can keep it as sent.
    """

    NONE = "none"
    MONITOR = "monitor"
    CHECK_APPLICATION = "check_application"
    # The host's or the inventory's settings (time sync, agent address): nothing on the host breaks.
    CHECK_CONFIGURATION = "check_configuration"
    CHECK_COOLING = "check_cooling"
    RESTART_AGENT = "restart_agent"
    RESET_CHIP = "reset_chip"
    REBOOT = "reboot"
    UPDATE_SOFTWARE = "update_software"  # install, update or reinstall the driver, firmware or agent
    CHECK_HARDWARE = "check_hardware"  # cables, power connectors, seating: hands on the machine
    CONTACT_SUPPORT = "contact_support"
    RMA = "rma"

    @classmethod
    def _missing_(cls, value: object) -> Action | None:
        # Only a plausible name (lower case, digits, "_"): anything else stays a schema error.
        if not (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii()
                and value[0].isalpha() and value.islower() and value.replace("_", "").isalnum()):
            return None
        member = str.__new__(cls, value)
        member._name_, member._value_ = value.upper(), value
        return member


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

    serial: str | None = None  # the board's serial number, what an RMA asks for
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
    # NVLink error counters summed over the chip's links (NVML: nvmlDeviceGetNvLinkErrorCounter).
    nvlink_crc_flit_errors: int | None = None
    nvlink_crc_data_errors: int | None = None
    nvlink_replay_errors: int | None = None
    nvlink_recovery_errors: int | None = None
    # Energy since the driver loaded (NVML: nvmlDeviceGetTotalEnergyConsumption), millijoules.
    energy_mj: int | None = None
    encoder_utilization_pct: float | None = None
    decoder_utilization_pct: float | None = None
    persistence_mode: bool | None = None
    slowdown_temp_c: float | None = None
    shutdown_temp_c: float | None = None
    # XID key -> events that still count (inside the window, or until the reset or reboot that
    # clears them). The key is the code as a string ("48"), or "code:qualifier" where the driver's
    # message names what it needs ("154:node_reboot", "145:fatal"): fleet_agent.health.xid_codes.
    xid_counts: dict[str, int] = field(default_factory=dict)
    xid_total: int = 0
    last_xid: int | None = None
    # NVML's GPM (Hopper and later), over the last sample interval: the share of time the graphics/
    # compute engine was active and the SMs ran tensor operations (dcgm-exporter's
    # DCGM_FI_PROF_GR_ENGINE_ACTIVE and DCGM_FI_PROF_PIPE_TENSOR_ACTIVE), percent.
    graphics_active_pct: float | None = None
    tensor_active_pct: float | None = None


@dataclass
class TpuDetails:
    """Google TPU detail from the libtpu runtime metrics service."""

    duty_cycle_pct: float | None = None
    tensorcore_utilization_pct: float | None = None
    # Share of the HBM bandwidth in use; only newer libtpu releases serve it.
    hbm_bandwidth_utilization_pct: float | None = None
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
    # The CUDA version the driver supports ("12.2": what nvidia-smi shows as "CUDA Version"; NVML
    # nvmlSystemGetCudaDriverVersion). Optional: older agents and TPU hosts send none.
    cuda_driver_version: str | None = None
    # Seconds from the end of the sample to this answer, on the agent's monotonic clock, set when the
    # answer is sent (:func:`with_sample_age`): with sample_duration_s, the sample's age measured
    # without either machine's wall clock. Must stay the last field (see with_sample_age).
    sample_age_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


_AGE_TAIL = b'"sample_age_s":null}\n'


def with_sample_age(body: bytes, age_s: float) -> bytes:
    """A rendered report (compact JSON, ``sample_age_s`` its last field) with ``sample_age_s`` set:
    the server renders a report once per sample and stamps its age into each answer."""
    if not body.endswith(_AGE_TAIL) or not math.isfinite(age_s):
        return body
    return b"%s%.3f}\n" % (body[:-len(b"null}\n")], max(0.0, age_s))


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
        return _ENUM_MEMBERS[cls][value]  # a dict lookup: Enum.__call__ costs more per field
    except (KeyError, TypeError):  # TypeError: an unhashable value (a list, an object)
        if cls is Action and isinstance(value, str):
            try:
                return Action(value)  # a newer agent's action: kept as sent (Action._missing_)
            except ValueError:
                pass
        allowed = ", ".join(str(m.value) for m in cls)
        raise SchemaError(f"{where}: {value!r} is not one of {allowed}") from None


_ENUM_MEMBERS: dict[type[enum.Enum], dict[Any, enum.Enum]] = {
    cls: {m.value: m for m in cls} for cls in (Status, Severity, Action)
}


def _problem(doc: Any, where: str) -> Problem:
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    return Problem(
        check=_get(doc, "check", str, where),
        severity=_enum(Severity, doc.get("severity"), f"{where}.severity"),
        message=_get(doc, "message", str, where),
        action=_enum(Action, doc.get("action"), f"{where}.action"),
    )


# What each field of a flat dataclass may hold, worked out once from its annotation (the parser
# runs per host and chip; reading annotations per call was a third of `fleetctl health`'s CPU).
_DICT, _LIST, _BOOL, _NUMBER, _STRING = range(5)


def _field_kinds(cls: type[Any]) -> tuple[tuple[str, int], ...]:
    kinds = []
    for name, f in cls.__dataclass_fields__.items():
        ftype = str(f.type)
        kind = (_DICT if ftype.startswith("dict") else _LIST if ftype.startswith("list")
                else _BOOL if ftype.startswith("bool") else _STRING if ftype.startswith("str")
                else _NUMBER)
        kinds.append((name, kind))
    return tuple(kinds)


_FIELD_KINDS: dict[type[Any], tuple[tuple[str, int], ...]] = {}
_NUMBER_TYPES = frozenset({int, float, type(None)})
_BOOL_TYPES = frozenset({bool, type(None)})
_STR_TYPES = frozenset({str, type(None)})
# Per class: (number fields, bool fields, string fields, other fields); see _fill_fast.
_FIELD_GROUPS: dict[type[Any], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...],
                                     tuple[tuple[str, type], ...]]] = {}


def _fill_fast(cls: type[Any], doc: dict[str, Any]) -> Any:
    """:func:`_fill` for the usual document, where every number field holds exactly an int, a
    float or null and every bool field a bool or null: checked with C-level map/set calls rather
    than a Python loop per field. None when the document needs the field-by-field check."""
    groups = _FIELD_GROUPS.get(cls)
    if groups is None:
        kinds = _field_kinds(cls)
        groups = _FIELD_GROUPS[cls] = (tuple(n for n, k in kinds if k == _NUMBER),
                                       tuple(n for n, k in kinds if k == _BOOL),
                                       tuple(n for n, k in kinds if k == _STRING),
                                       tuple((n, dict if k == _DICT else list) for n, k in kinds
                                             if k in (_DICT, _LIST)))
    numbers, bools, strings, containers = groups
    number_values = list(map(doc.get, numbers))
    bool_values = list(map(doc.get, bools))
    string_values = list(map(doc.get, strings))
    if not (_NUMBER_TYPES.issuperset(map(type, number_values))
            and _BOOL_TYPES.issuperset(map(type, bool_values))
            and _STR_TYPES.issuperset(map(type, string_values))):
        return None
    kwargs = {n: v for n, v in zip(numbers, number_values, strict=True) if v is not None}
    kwargs.update((n, v) for n, v in zip(bools, bool_values, strict=True) if v is not None)
    kwargs.update((n, v) for n, v in zip(strings, string_values, strict=True) if v is not None)
    for name, container in containers:
        value = doc.get(name)
        if value is None:
            continue
        if value.__class__ is not container or value:
            return None  # not empty: the careful path checks the items
        kwargs[name] = value
    return cls(**kwargs)


def _fill(cls: type[Any], doc: Any, where: str) -> Any:
    """Build a flat dataclass of optional scalars (GpuDetails, TpuDetails, HostMetrics)."""
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    kinds = _FIELD_KINDS.get(cls)
    if kinds is None:
        kinds = _FIELD_KINDS[cls] = _field_kinds(cls)
    fast = _fill_fast(cls, doc)
    if fast is not None:
        return fast
    kwargs: dict[str, Any] = {}
    for name, kind in kinds:
        value = doc.get(name)
        if value is None:
            continue
        if kind == _NUMBER:
            if value.__class__ is bool or not isinstance(value, _NUM):
                raise SchemaError(f"{where}.{name}: expected a number")
        elif kind == _BOOL:
            if not isinstance(value, bool):
                raise SchemaError(f"{where}.{name}: expected bool")
        elif kind == _STRING:
            if not isinstance(value, str):
                raise SchemaError(f"{where}.{name}: expected a string")
        elif kind == _DICT:
            if not isinstance(value, dict) or not all(isinstance(v, _NUM) for v in value.values()):
                raise SchemaError(f"{where}.{name}: expected an object of numbers")
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"{where}.{name}: expected a list of strings")
        kwargs[name] = value
    return cls(**kwargs)


# A chip's scalar fields in the order they are checked (the first bad one is the one reported):
# (name, accepted types, bool accepted, optional, default).
_STR: tuple[type, ...] = (str,)
_INT: tuple[type, ...] = (int,)
_BOOLS: tuple[type, ...] = (bool,)
_CHIP_HEAD = tuple((n, _STR if n != "index" else _INT, False, False, None)
                   for n in ("index", "kind", "vendor", "model", "uuid", "pci_bus_id"))
_CHIP_TAIL = (
    ("stale", _BOOLS, True, True, False),
    ("error", _STR, False, True, None),
    *((n, _NUM, False, True, None) for n in ("sampled_at", "temperature_c", "memory_temperature_c",
                                             "utilization_pct", "memory_utilization_pct")),
    *((n, _INT, False, True, None) for n in ("memory_used_bytes", "memory_total_bytes")),
    *((n, _NUM, False, True, None) for n in ("power_w", "power_limit_w")),
    *((n, _INT, False, True, None) for n in ("sm_clock_mhz", "mem_clock_mhz")),
)


def _scalars(doc: dict[str, Any], specs: tuple[tuple[str, tuple[type, ...], bool, bool, Any], ...],
             where: str, out: dict[str, Any]) -> None:
    """:func:`_get` for many fields at once, with the same checks and messages."""
    for name, types, bool_ok, optional, default in specs:
        value = doc.get(name)
        if value is None:
            if optional:
                out[name] = default
                continue
            raise SchemaError(f"{where}.{name}: missing")
        if value.__class__ is bool and not bool_ok:
            raise SchemaError(f"{where}.{name}: expected {_type_name(types)}, got bool")
        if not isinstance(value, types):
            raise SchemaError(f"{where}.{name}: expected {_type_name(types)}, got {type(value).__name__}")
        out[name] = value


def _chip(doc: Any, where: str) -> ChipReport:
    if not isinstance(doc, dict):
        raise SchemaError(f"{where}: expected an object")
    kwargs: dict[str, Any] = {}
    _scalars(doc, _CHIP_HEAD, where, kwargs)
    kwargs["status"] = _enum(Status, doc.get("status"), f"{where}.status")
    _scalars(doc, _CHIP_TAIL, where, kwargs)
    gpu = doc.get("gpu")
    kwargs["gpu"] = None if gpu is None else _fill(GpuDetails, gpu, f"{where}.gpu")
    tpu = doc.get("tpu")
    kwargs["tpu"] = None if tpu is None else _fill(TpuDetails, tpu, f"{where}.tpu")
    problems = _get(doc, "problems", list, where, optional=True, default=None)
    kwargs["problems"] = ([_problem(p, f"{where}.problems[{i}]") for i, p in enumerate(problems)]
                          if problems else [])
    return ChipReport(**kwargs)


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
        cuda_driver_version=_get(doc, "cuda_driver_version", str, w, optional=True),
        sample_duration_s=_get(doc, "sample_duration_s", _NUM, w, optional=True),
        sample_age_s=_get(doc, "sample_age_s", _NUM, w, optional=True),
    )


def _bad(where: str) -> Any:
    raise SchemaError(f"{where}: expected an object")
