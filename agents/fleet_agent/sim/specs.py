"""What a scenario is made of: host groups, chip load, faults, and the fault kinds' rules.

Plain data, imported by the scenario parser (``scenario.py``) and by the fakes and hosts it builds
(``fake_nvml.py``, ``fake_tpu.py``, ``host.py``), so that the imports run one way: scenario ->
host -> fakes -> specs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_agent.health.xid_codes import clears_on
from fleet_agent.sim.boot import boot_marker

Clock = Callable[[], float]
# When chip ``chip`` of the host was last reset (seconds on the scenario's clock), or None:
# what a simulated ``nvidia-smi -r`` recorded (fleet_agent.sim.resets).
ResetLookup = Callable[[int], "float | None"]


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
# Keys every fault takes: where it lands and when it is on.
TIMING_KEYS = frozenset({"at", "until", "repeat_every", "for_s", "reset_clears", "boot"})

# Kinds whose occurrence a GPU reset (`nvidia-smi -r`) ends, as on real hardware: a reset applies a
# pending row remap or page retirement and zeroes the volatile ECC counters, and retrains NVLink
# (the XID catalog's resolution for NVLink errors 74/136/155 is a GPU reset). A reset does not
# bring back a GPU off the bus (XID 79: reboot), cool a GPU, restore a degraded PCIe link, free a
# hung driver, mend a failed row remap (RMA) or fix the driver. `xid` depends on the code: every
# code but those whose resolution is a reboot (clears_on == "reboot").
RESET_CLEARS: frozenset[str] = frozenset({"ecc_uncorrectable", "row_remap_pending",
                                          "retired_pages_pending", "nvlink_down"})

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
    until: float | None = None  # off from then on
    repeat_every: float | None = None  # comes back every so many seconds after `at`
    for_s: float | None = None  # each occurrence lasts this long (else until the next one)
    # The scenario's word on whether a reset ends it (a chip a reset does not mend); None: the kind's.
    reset_override: bool | None = None
    # On only while the host runs the boot of this marker (fleet_agent.sim.boot): a reboot clears it.
    boot: str | None = None

    @property
    def reset_clears(self) -> bool:
        """Whether a GPU reset ends the occurrence in progress (see RESET_CLEARS)."""
        if self.reset_override is not None:
            return self.reset_override
        if self.kind == "xid":
            return clears_on(int(self.params["code"])) != "reboot"
        return self.kind in RESET_CLEARS

    def occurrence(self, t: float) -> float | None:
        """The start of the occurrence that is on at ``t`` (seconds after the scenario's start), or
        None when the fault is off then."""
        if t < self.at or (self.until is not None and t >= self.until):
            return None
        if self.boot is not None and self.boot != boot_marker():
            return None
        start = self.at
        if self.repeat_every is not None:
            start += math.floor((t - self.at) / self.repeat_every) * self.repeat_every
        if self.for_s is not None and t >= start + self.for_s:
            return None
        return start

    def occurrences(self, t: float) -> int:
        """How many occurrences began by ``t``."""
        if t < self.at:
            return 0
        last = t if self.until is None else min(t, math.nextafter(self.until, -math.inf))
        if self.repeat_every is None or last < self.at:
            return 1 if last >= self.at else 0
        return math.floor((last - self.at) / self.repeat_every) + 1

    def occurrence_end(self, start: float) -> float:
        """When the occurrence that began at ``start`` ends on its own (inf: never)."""
        end = math.inf if self.until is None else self.until
        if self.for_s is not None:
            end = min(end, start + self.for_s)
        if self.repeat_every is not None:
            end = min(end, start + self.repeat_every)
        return end

    def on(self, t: float, reset_at: float | None = None) -> float | None:
        """:meth:`occurrence`, unless a reset at ``reset_at`` (the chip's latest) ended it."""
        start = self.occurrence(t)
        if start is None or (reset_at is not None and start <= reset_at <= t and self.reset_clears):
            return None
        return start

    def applies_to_host(self, index_in_group: int) -> bool:
        if self.hosts is not None:
            return index_in_group in self.hosts
        assert self.every is not None
        return index_in_group % self.every == self.offset

    def applies_to_chip(self, chip: int) -> bool:
        return self.chips is None or chip in self.chips
