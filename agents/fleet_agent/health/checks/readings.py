"""Impossible readings: a value no chip or host can have (a negative temperature or byte count,
utilisation far above 100 %, a number too long to be real, a reading stamped in the future).

Such a value comes from a driver or sensor in a bad state, a collector's bug, or a report that was
not written by a sound agent; the chip's real state is not what it says. The check names the field
and its value and makes the chip (or, for host metrics, the node) degraded. The controller runs the
same rules on every report it reads (:func:`fleet_agent.verdict.host_verdict`) and blanks the
fields it flags, so that no such number reaches a table or a sum.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity

NAME = "invalid_reading"

# (low, high) per kind of quantity; the bounds are far outside what hardware does, so that only a
# reading that cannot be real trips them.
_TEMP_C = (0.0, 200.0)  # chip_plausible spells these out: change both
_PCT = (0.0, 101.0)  # a little over 100: averaged readings round
_MAX_BYTES = 2**60
_BYTES = (0.0, float(_MAX_BYTES))
_WATTS = (0.0, 1e5)
_MHZ = (0.0, 1e5)
COUNT_RANGE = _COUNT = (0.0, float(2**62))  # NVML's "no value" sentinels (all bits set) land above this
_LOAD = (0.0, 1e6)
_UPTIME_S = (0.0, 200 * 365 * 86400.0)
# How far after its node's sample a chip's reading may be stamped (a slow sample takes seconds).
FUTURE_SLACK_S = 60.0

_CHIP_FIELDS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("temperature_c", _TEMP_C), ("memory_temperature_c", _TEMP_C),
    ("utilization_pct", _PCT), ("memory_utilization_pct", _PCT),
    ("memory_used_bytes", _BYTES), ("memory_total_bytes", _BYTES),
    ("power_w", _WATTS), ("power_limit_w", _WATTS),
    ("sm_clock_mhz", _MHZ), ("mem_clock_mhz", _MHZ),
)
_GPU_FIELDS: tuple[tuple[str, tuple[float, float]], ...] = (
    *((n, _COUNT) for n in ("ecc_volatile_corrected", "ecc_volatile_uncorrected", "ecc_aggregate_corrected",
                            "ecc_aggregate_uncorrected", "remapped_rows_correctable",
                            "remapped_rows_uncorrectable", "pcie_replay_count", "nvlink_crc_flit_errors",
                            "nvlink_crc_data_errors", "nvlink_replay_errors", "nvlink_recovery_errors",
                            "energy_mj", "xid_total")),
    ("encoder_utilization_pct", _PCT), ("decoder_utilization_pct", _PCT),
    ("slowdown_temp_c", _TEMP_C), ("shutdown_temp_c", _TEMP_C),
    *((n, (0.0, 64.0)) for n in ("pcie_link_gen", "pcie_link_gen_max", "nvlink_links_up",
                                 "nvlink_links_total")),
    *((n, (0.0, 1024.0)) for n in ("pcie_link_width", "pcie_link_width_max")),
)
_TPU_FIELDS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("duty_cycle_pct", _PCT), ("tensorcore_utilization_pct", _PCT), ("hbm_bandwidth_utilization_pct", _PCT),
)
_HOST_FIELDS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("cpu_pct", _PCT), ("memory_used_bytes", _BYTES), ("memory_total_bytes", _BYTES),
    ("load1", _LOAD), ("load5", _LOAD), ("load15", _LOAD), ("uptime_s", _UPTIME_S),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Invalid:
    """One impossible value: the field's path in the report (``gpu.energy_mj``), its value, and
    the range it should lie in."""

    field: str
    value: Any
    low: float
    high: float

    def message(self) -> str:
        return (f"impossible reading {self.field} = {show(self.value)} (expected {self.low:g} to "
                f"{self.high:g}): the driver, a sensor or the agent reports values that cannot be real")


def show(value: Any) -> str:
    """A number as a short text, however long the number (an int of a thousand digits included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)[:40]
    if isinstance(value, int) and abs(value) < 10**12:
        return str(value)
    try:
        return f"{float(value):.6g}"
    except OverflowError:
        return f"{'-' if value < 0 else ''}1e+{len(str(abs(value))) - 1}+"


def out_of_range(value: Any, low: float, high: float) -> bool:
    """Whether a number (int of any size, float, NaN, infinity) lies outside ``low..high``."""
    try:
        return not low <= value <= high  # NaN compares false; an int of any size compares exactly
    except TypeError:
        return True


Specs = tuple[tuple[str, tuple[float, float]], ...]
# One attrgetter per field list: the controller judges every chip of a fleet with these.
_GETTERS: dict[Specs, Callable[[Any], tuple[Any, ...]]] = {
    specs: operator.attrgetter(*(name for name, _ in specs))
    for specs in (_CHIP_FIELDS, _GPU_FIELDS, _TPU_FIELDS, _HOST_FIELDS)
}


def _scan(obj: Any, specs: Specs, prefix: str) -> list[Invalid]:
    found = []
    for value, (name, (low, high)) in zip(_GETTERS[specs](obj), specs, strict=True):
        if value is not None and not low <= value <= high:
            found.append(Invalid(prefix + name, value, low, high))
    return found


# The chip fields a fleet report shows or sums: those the controller judges (chip_plausible).
SHOWN_FIELDS = frozenset({"temperature_c", "utilization_pct", "power_w", "memory_used_bytes",
                          "memory_total_bytes", "sampled_at"})


def chip_plausible(chip: ChipReport, node_sampled_at: float) -> bool:
    """False when one of the fields a fleet report shows or sums (temperature, utilisation, memory,
    power, the reading's time) is impossible; then :func:`chip_invalid` says which. Spelt out
    field by field: the controller asks it of every chip of a fleet."""
    t = chip.temperature_c
    if t is not None and not 0.0 <= t <= 200.0:
        return False
    u = chip.utilization_pct
    if u is not None and not 0.0 <= u <= 101.0:
        return False
    p = chip.power_w
    if p is not None and not 0.0 <= p <= 1e5:
        return False
    used, total = chip.memory_used_bytes, chip.memory_total_bytes
    if used is not None and not 0 <= used <= _MAX_BYTES:
        return False
    if total is not None and not 0 <= total <= _MAX_BYTES:
        return False
    if used is not None and total is not None and 0 < total < used:
        return False
    at = chip.sampled_at
    return at is None or 0.0 <= at <= node_sampled_at + FUTURE_SLACK_S


def chip_invalid(chip: ChipReport, node_sampled_at: float | None, *, details: bool = True) -> list[Invalid]:
    """The chip's impossible values; ``node_sampled_at``: its report's sample time, which a chip's
    reading cannot be much later than. ``details``: the GPU's and TPU's own fields too (the
    controller shows none of them and leaves those to the agent's check)."""
    found = _scan(chip, _CHIP_FIELDS, "")
    used, total = chip.memory_used_bytes, chip.memory_total_bytes
    if (used is not None and total is not None and not found and total > 0 and used > total):
        found.append(Invalid("memory_used_bytes", used, 0.0, float(total)))
    at = chip.sampled_at
    if at is not None:
        latest = (node_sampled_at + FUTURE_SLACK_S) if node_sampled_at is not None else float("inf")
        if out_of_range(at, 0.0, latest):
            found.append(Invalid("sampled_at", at, 0.0, latest))
    if not details:
        return found
    if chip.gpu is not None:
        found += _scan(chip.gpu, _GPU_FIELDS, "gpu.")
        for key, count in chip.gpu.xid_counts.items():
            if out_of_range(count, *_COUNT):
                found.append(Invalid(f"gpu.xid_counts[{str(key)[:16]}]", count, *_COUNT))
    if chip.tpu is not None:
        found += _scan(chip.tpu, _TPU_FIELDS, "tpu.")
    return found


def host_invalid(metrics: HostMetrics) -> list[Invalid]:
    """The host's impossible values. Not its hwmon temperatures: boards list inputs with nothing
    wired to them, which read as a fixed negative value on healthy machines."""
    return _scan(metrics, _HOST_FIELDS, "host_metrics.")


def problem(found: Invalid) -> Problem:
    return Problem(NAME, Severity.WARNING, found.message(), Action.MONITOR)


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    # The sampler stamps a chip during its node's sample, which started at ``now``.
    return [problem(f) for f in chip_invalid(chip, now)]


def check_node(report: NodeReport, cfg: HealthConfig, now: float) -> list[Problem]:
    return [problem(f) for f in host_invalid(report.host_metrics)]
