"""Stand-ins for the TPU side: PCI presence and the libtpu runtime metrics service.

:class:`FakeTpuMetrics` answers the same metric names the real service does
(``tpu.runtime.hbm.memory.usage.bytes`` ...) through the collector's small client interface,
so :class:`fleet_agent.collectors.tpu.TpuCollector` runs unchanged on top of it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

from fleet_agent.collectors.tpu import (
    METRIC_DUTY_CYCLE,
    METRIC_HBM_TOTAL,
    METRIC_HBM_USAGE,
    MetricsUnavailable,
    TpuDevice,
)
from fleet_agent.sim.models import TpuModel
from fleet_agent.sim.specs import FaultSpec, Load

_TAU = 2 * math.pi


class FakeTpuChip:
    __slots__ = ("by_kind", "index", "load", "model", "phase")

    def __init__(self, index: int, model: TpuModel, phase: float, load: Load,
                 faults: Iterable[FaultSpec]) -> None:
        self.index, self.model, self.phase, self.load = index, model, phase, load
        self.by_kind: dict[str, list[FaultSpec]] = {}
        for f in faults:
            self.by_kind.setdefault(f.kind, []).append(f)

    def active(self, kind: str, t: float) -> FaultSpec | None:
        for f in self.by_kind.get(kind, ()):
            if f.at <= t:
                return f
        return None

    @property
    def pci_address(self) -> str:
        return f"0000:00:{4 + self.index:02x}.0"  # how GCE lays TPU chips out on the PCI bus


class FakeTpuPresence:
    """What /sys/bus/pci/devices shows: chips minus those a ``chip_missing`` fault removed."""

    def __init__(self, chips: list[FakeTpuChip], clock: Callable[[], float], start: float) -> None:
        self._chips, self._clock, self._start = chips, clock, start

    def scan(self) -> list[TpuDevice]:
        t = self._clock() - self._start
        return [TpuDevice(c.pci_address, c.model.name, c.model.cores_per_chip)
                for c in self._chips if not c.active("chip_missing", t)]


class FakeTpuMetrics:
    """The runtime metrics service of one host, as seen through the client interface."""

    def __init__(self, chips: list[FakeTpuChip], clock: Callable[[], float], start: float, *,
                 serving: bool, host_faults: Iterable[FaultSpec] = (),
                 release: threading.Event | None = None) -> None:
        self._chips, self._clock, self._start = chips, clock, start
        self._serving = serving
        self._down = [f for f in host_faults if f.kind == "metrics_unavailable"]
        self._release = release or threading.Event()

    def get_metric(self, name: str) -> list[tuple[int, float]]:
        t = self._clock() - self._start
        if not self._serving or any(f.at <= t for f in self._down):
            raise MetricsUnavailable("connection refused (no workload is running)")
        for c in self._chips:
            for f in c.by_kind.get("hang", ()):
                seconds = f.params.get("seconds")
                if f.at <= t and (seconds is None or t < f.at + seconds) and not self._release.is_set():
                    self._release.wait(None if seconds is None else f.at + seconds - t)
        present = [c for c in self._chips if not c.active("chip_missing", t)]
        out: list[tuple[int, float]] = []
        for c in present:
            for core in range(c.model.cores_per_chip):
                dev = c.index * c.model.cores_per_chip + core
                if name == METRIC_HBM_TOTAL:
                    out.append((dev, float(c.model.hbm_bytes // c.model.cores_per_chip)))
                elif name == METRIC_HBM_USAGE:
                    frac = c.load.memory_used_pct / 100 * (0.97 + 0.03 * math.sin(_TAU * t / 613.0 + c.phase))
                    out.append((dev, float(int(c.model.hbm_bytes * frac) // c.model.cores_per_chip)))
                elif name == METRIC_DUTY_CYCLE:
                    if core == 0:  # duty cycle is per chip
                        out.append((c.index, round(self._duty(c, t), 2)))
                else:
                    raise MetricsUnavailable(f"metric {name!r} is not served")
        return out

    def _duty(self, c: FakeTpuChip, t: float) -> float:
        ld = c.load
        w = ld.base_pct + ld.amplitude_pct * math.sin(_TAU * t / ld.period_s + c.phase)
        return min(100.0, max(0.0, w))

    def close(self) -> None:
        pass
