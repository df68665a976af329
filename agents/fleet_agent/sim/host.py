"""One simulated host: its name, its chips and the fakes the real collectors read them through."""

from __future__ import annotations

import hashlib
import threading
from functools import cached_property
from typing import Any, Literal

from fleet_agent.collectors.base import ChipCollector
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.collectors.tpu import TpuCollector
from fleet_agent.sim.fake_nvml import FakeGpu, FakeNvml
from fleet_agent.sim.fake_tpu import FakeTpuChip, FakeTpuMetrics, FakeTpuPresence
from fleet_agent.sim.models import GPU_MODELS, TPU_MODELS
from fleet_agent.sim.specs import PER_CHIP_KINDS, Clock, FaultSpec, GroupSpec, ResetLookup


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).digest()


class HostSim:
    """A host of a :class:`~fleet_agent.sim.scenario.Scenario` (``Scenario.host(i)`` builds it).
    Chips are built on first use."""

    def __init__(self, *, seed: int, clock: Clock, start: float, index: int, group: GroupSpec,
                 index_in_group: int, name: str, faults: list[FaultSpec],
                 reset_at: ResetLookup | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.start = start  # fault times (``at``) count from here
        self.index = index
        self.group = group.name
        self.kind = group.kind
        self.name = name
        self.chips_expected = group.chips
        self.faults = faults
        self._spec = group
        self._index_in_group = index_in_group
        self._reset_at = reset_at  # when each chip was last reset (fleet_agent.sim.resets)
        # Set by release_hangs(): every hung call on this host returns.
        self._release = threading.Event()

    def _chip_faults(self, chip: int) -> list[FaultSpec]:
        return [f for f in self.faults if f.kind in PER_CHIP_KINDS and f.applies_to_chip(chip)]

    def _host_faults(self) -> list[FaultSpec]:
        return [f for f in self.faults if f.kind not in PER_CHIP_KINDS]

    def _phase(self, chip: int) -> tuple[float, bytes]:
        d = _digest(self.seed, self.name, chip)
        return int.from_bytes(d[:4], "big") / 2**32 * 6.283185307179586, d

    @cached_property
    def nvml(self) -> FakeNvml:
        gpus: list[FakeGpu] = []
        if self.kind == "gpu":
            model = GPU_MODELS[self._spec.model]
            for i in range(self._spec.chips):
                phase, d = self._phase(i)
                h = d.hex()
                uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
                gpus.append(FakeGpu(i, model, uuid, phase, self._spec.load, self._chip_faults(i),
                                    reset_at=self._reset_at))
        return FakeNvml(gpus, clock=self.clock, start=self.start,
                        driver_version=self._spec.driver_version, library_present=self.kind == "gpu",
                        host_faults=self._host_faults(), release=self._release)

    @cached_property
    def _tpu_chips(self) -> list[FakeTpuChip]:
        if self.kind != "tpu":
            return []
        model = TPU_MODELS[self._spec.model]
        return [FakeTpuChip(i, model, self._phase(i)[0], self._spec.load, self._chip_faults(i))
                for i in range(self._spec.chips)]

    @cached_property
    def tpu_presence(self) -> FakeTpuPresence:
        return FakeTpuPresence(self._tpu_chips, self.clock, self.start)

    @cached_property
    def tpu_metrics(self) -> FakeTpuMetrics:
        return FakeTpuMetrics(self._tpu_chips, self.clock, self.start,
                              serving=self.kind == "tpu" and self._spec.runtime_metrics,
                              host_faults=self._host_faults(),
                              release=self._release)

    def collector(self, *, xid_events: Literal["thread", "poll", "off"] = "poll") -> ChipCollector:
        """The real collector for this host's chip kind, reading through the fakes.

        ``poll`` (the default here) drains NVML's XID events at each sample instead of keeping a
        waiting thread per host — what a fleet of thousands of simulated hosts in one process needs.
        """
        if self.kind == "gpu":
            return NvmlCollector(self.nvml, xid_events=xid_events)
        return TpuCollector(self.tpu_metrics, self.tpu_presence)

    def release_hangs(self) -> None:
        """Let every call a ``hang`` fault blocks on this host return (now and from now on)."""
        self._release.set()

    def __repr__(self) -> str:
        return f"HostSim({self.name!r}, kind={self.kind!r}, faults={len(self.faults)})"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "kind": self.kind,
                "chips": self.chips_expected, "faults": [f.kind for f in self.faults]}
