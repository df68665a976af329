"""Thresholds of the health checks, with the defaults an SRE would start from.

The agent's config file holds them under ``health:``; :func:`health_config_from_dict` turns that
mapping into a :class:`HealthConfig` and rejects anything it does not know, naming the key
(``health.<key>``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_agent.schema import Severity

# Throttle reasons as the collectors name them (docs/metrics.md, fleet_chip_throttle_active).
THROTTLE_REASONS = ("hw_slowdown", "hw_thermal", "hw_power_brake", "sw_power_cap", "sw_thermal")


def _default_throttle_reasons() -> dict[str, Severity]:
    return {
        # The board or the chip itself pulled the clocks down: cooling, power delivery or an
        # external power-brake signal from the chassis. Jobs run slower; someone should look.
        "hw_slowdown": Severity.WARNING,
        "hw_thermal": Severity.WARNING,
        "hw_power_brake": Severity.WARNING,
        # Over its maximum operating temperature the driver lowers clocks: a cooling problem.
        "sw_thermal": Severity.WARNING,
        # Running at the power limit is what a busy GPU does: worth showing, not a fault.
        "sw_power_cap": Severity.INFO,
    }


@dataclass(frozen=True)
class HealthConfig:
    """Every threshold the checks use; the defaults suit NVIDIA data-centre GPUs and TPUs."""

    # Chips the host must have; None leaves the count unchecked (the node report's own
    # chips_expected, when the agent config sets it, is used instead).
    expected_chips: int | None = None
    # A chip reading older than this is stale (status unknown). None: 3 x the sampling
    # interval, so one slow sample is tolerated but a hung call is not.
    stale_after_s: float | None = None
    # Degraded when the core is within this many degrees of the chip's slowdown threshold.
    temperature_margin_c: float = 5.0
    # Thresholds for chips that report none (TPUs; GPUs where NVML says NotSupported). The GPU
    # values are those an A100/H100 reports (slowdown 89-90 C, shutdown 92-95 C); TPUs publish
    # none, so their values are deliberately conservative guesses.
    default_slowdown_temp_c: Mapping[str, float] = field(
        default_factory=lambda: {"gpu": 89.0, "tpu": 90.0})
    default_shutdown_temp_c: Mapping[str, float] = field(
        default_factory=lambda: {"gpu": 92.0, "tpu": 95.0})
    # HBM at or above this is degraded (H100/A100 HBM maximum operating temperature is 95 C).
    memory_temperature_max_c: float = 95.0
    # How long an XID counts: the XID source keeps per-code counts over this window, so a fault
    # stays visible after the event and clears by itself once the window has passed.
    xid_window_s: float = 3600.0
    # Per-site severity for XID codes, overriding the built-in table (xid_codes.py).
    xid_severity_overrides: Mapping[int, Severity] = field(default_factory=dict)
    # Throttle reasons that make a problem, and how bad each is. A reason not listed is ignored.
    throttle_reasons: Mapping[str, Severity] = field(default_factory=_default_throttle_reasons)
    # PCIe: GPUs drop their link generation at idle to save power (ASPM / dynamic link speed), so
    # a lower generation counts only while the chip is at least this busy. A narrower link than
    # the maximum never comes from power saving and always counts.
    pcie_check_width: bool = True
    pcie_gen_min_utilization_pct: float = 50.0
    # More than this many volatile uncorrectable ECC errors makes the chip unhealthy.
    ecc_volatile_uncorrected_max: int = 0
    # Check names (see fleet_agent.health.checks) that are not run on this host.
    disabled_checks: frozenset[str] = frozenset()

    def stale_threshold_s(self, interval_s: float) -> float:
        """The stale threshold in seconds for a sampler running every ``interval_s``."""
        if self.stale_after_s is not None:
            return self.stale_after_s
        return 3.0 * interval_s


# --- validation ---------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(HealthConfig)}


def _number(value: Any, where: str, *, minimum: float | None = 0.0) -> float:
    # YAML gives ints and floats; bool is an int in Python and never a threshold.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be >= {minimum:g}, got {value}")
    return float(value)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where}: must be >= 0, got {value}")
    return value


def _severity(value: Any, where: str) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        allowed = ", ".join(s.value for s in Severity)
        raise ValueError(f"{where}: {value!r} is not one of {allowed}") from None


def _mapping(value: Any, where: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _xid_code(key: Any, where: str) -> int:
    # YAML keys are ints when written bare (79:) and strings when quoted ("79":).
    if isinstance(key, bool):
        raise ValueError(f"{where}: XID code must be an integer, got {key!r}")
    if isinstance(key, int):
        code = key
    elif isinstance(key, str) and key.strip().isdigit():
        code = int(key)
    else:
        raise ValueError(f"{where}: XID code must be an integer, got {key!r}")
    if code <= 0:
        raise ValueError(f"{where}: XID code must be positive, got {code}")
    return code


def health_config_from_dict(doc: Any, *, known_checks: frozenset[str]) -> HealthConfig:
    """Build a :class:`HealthConfig` from the ``health:`` mapping of the agent's config.

    Raises ValueError with a one-line message naming ``health.<key>`` on an unknown key, a wrong
    type or an out-of-range value. ``known_checks`` are the names ``disabled_checks`` may list:
    the caller passes the registry's (``fleet_agent.health.checks.CHECK_NAMES``); the checks import
    this module, so it cannot import them.
    """
    if doc is None:
        return HealthConfig()
    if not isinstance(doc, Mapping):
        raise ValueError(f"health: expected a mapping, got {type(doc).__name__}")
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        where = f"health.{key}"
        if key not in _FIELDS:
            allowed = ", ".join(sorted(_FIELDS))
            raise ValueError(f"{where}: unknown key (expected one of {allowed})")
        kwargs[key] = _convert(key, value, where, known_checks)
    return HealthConfig(**kwargs)


def _convert(key: str, value: Any, where: str, known_checks: frozenset[str]) -> Any:
    if key == "expected_chips":
        return None if value is None else _integer(value, where)
    if key == "stale_after_s":
        if value is None:
            return None
        seconds = _number(value, where)
        if seconds <= 0:
            raise ValueError(f"{where}: must be > 0, got {value}")
        return seconds
    if key in ("temperature_margin_c", "memory_temperature_max_c", "xid_window_s",
               "pcie_gen_min_utilization_pct"):
        number = _number(value, where)
        if key == "xid_window_s" and number <= 0:
            raise ValueError(f"{where}: must be > 0, got {value}")
        if key == "pcie_gen_min_utilization_pct" and number > 100:
            raise ValueError(f"{where}: must be <= 100, got {value}")
        return number
    if key in ("default_slowdown_temp_c", "default_shutdown_temp_c"):
        temps = {}
        for kind, temp in _mapping(value, where).items():
            if not isinstance(kind, str):
                raise ValueError(f"{where}: chip kind must be a string, got {kind!r}")
            temps[kind] = _number(temp, f"{where}.{kind}")
        return temps
    if key == "xid_severity_overrides":
        return {_xid_code(code, where): _severity(sev, f"{where}.{code}")
                for code, sev in _mapping(value, where).items()}
    if key == "throttle_reasons":
        reasons = {}
        for reason, sev in _mapping(value, where).items():
            if reason not in THROTTLE_REASONS:
                allowed = ", ".join(THROTTLE_REASONS)
                raise ValueError(f"{where}: unknown throttle reason {reason!r} (expected {allowed})")
            reasons[reason] = _severity(sev, f"{where}.{reason}")
        return reasons
    if key == "pcie_check_width":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {type(value).__name__}")
        return value
    if key == "ecc_volatile_uncorrected_max":
        return _integer(value, where)
    if key == "disabled_checks":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of check names")
        unknown = sorted(set(value) - known_checks)
        if unknown:
            allowed = ", ".join(sorted(known_checks))
            raise ValueError(f"{where}: unknown check {unknown[0]!r} (expected some of {allowed})")
        return frozenset(value)
    raise AssertionError(f"{where}: no converter")  # every field above has a branch; a test checks
