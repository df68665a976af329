"""What a scenario is made of: host groups, chip load, faults, and the fault kinds' rules.

Plain data, imported by the scenario parser (``scenario.py``) and by the fakes and hosts it builds
(``fake_nvml.py``, ``fake_tpu.py``, ``host.py``), so that the imports run one way: scenario ->
host -> fakes -> specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key path."""


# Fault kind -> (chip kinds it applies to, per chip (True) or per host (False), its parameters).
FAULT_PARAMS: dict[str, tuple[frozenset[str], bool, frozenset[str]]] = {
    "xid": (frozenset({"gpu"}), True, frozenset({"code", "count", "interval_s"})),
    "ecc_uncorrectable": (frozenset({"gpu"}), True, frozenset({"count"})),
    "row_remap_pending": (frozenset({"gpu"}), True, frozenset()),
    "row_remap_failure": (frozenset({"gpu"}), True, frozenset()),
    "retired_pages_pending": (frozenset({"gpu"}), True, frozenset()),
    "thermal_throttle": (frozenset({"gpu"}), True, frozenset({"temperature_c"})),
    "pcie_downgrade": (frozenset({"gpu"}), True, frozenset({"gen", "width"})),
    "nvlink_down": (frozenset({"gpu"}), True, frozenset({"links"})),
    "gpu_lost": (frozenset({"gpu"}), True, frozenset()),
    "hang": (frozenset({"gpu", "tpu"}), True, frozenset({"seconds"})),
    "not_supported": (frozenset({"gpu"}), True, frozenset({"functions"})),
    "nvml_error": (frozenset({"gpu"}), True, frozenset({"functions", "error"})),
    "chip_missing": (frozenset({"gpu", "tpu"}), True, frozenset()),
    # The driver states nvmlInit reports (a host whose driver is broken from `at` on, seen at the
    # next init: a new agent, `once` or `check`).
    "driver_missing": (frozenset({"gpu"}), False, frozenset()),
    "driver_not_loaded": (frozenset({"gpu"}), False, frozenset()),
    "driver_mismatch": (frozenset({"gpu"}), False, frozenset()),
    "metrics_unavailable": (frozenset({"tpu"}), False, frozenset()),
}
FAULT_KINDS = tuple(FAULT_PARAMS)
PER_CHIP_KINDS = frozenset(k for k, (_, per_chip, _) in FAULT_PARAMS.items() if per_chip)

@dataclass(frozen=True)
class Load:
    """How busy a group's chips are: a slow wave around ``base_pct`` (per-chip phase)."""

    base_pct: float = 60.0
    amplitude_pct: float = 25.0
    period_s: float = 900.0
    memory_used_pct: float = 70.0


@dataclass(frozen=True)
class GroupSpec:
    name: str
    kind: str  # gpu | tpu
    model: str
    chips: int
    count: int | None
    share: float | None
    load: Load
    driver_version: str
    runtime_metrics: bool  # TPU: a workload runs, so the runtime metrics service answers


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    group: str
    hosts: tuple[int, ...] | None
    every: int | None
    offset: int
    chips: tuple[int, ...] | None  # None: every chip (or a host-level fault)
    at: float
    params: Mapping[str, Any] = field(default_factory=dict)
    where: str = ""  # "faults[3]", for messages

    def applies_to_host(self, index_in_group: int) -> bool:
        if self.hosts is not None:
            return index_in_group in self.hosts
        assert self.every is not None
        return index_in_group % self.every == self.offset

    def applies_to_chip(self, chip: int) -> bool:
        return self.chips is None or chip in self.chips
