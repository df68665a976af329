"""Stand-ins for the TPU side: PCI presence and the libtpu runtime metrics service.

:class:`FakeTpuMetrics` answers the same metric names the real service does
(``tpu.runtime.hbm.memory.usage.bytes`` ...) through the collector's small client interface,
so :class:`fleet_agent.collectors.tpu.TpuCollector` runs unchanged on top of it. It answers the
way libtpu does for chips of several devices: HBM figures and HBM bandwidth per device, devices
numbered in chip order over the chips present; the duty cycle per chip, or per device on the
chips whose libtpu reports it so (TPU7x).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

from fleet_agent.collectors.tpu import (
    METRIC_DUTY_CYCLE,
    METRIC_HBM_BW_UTIL,
    METRIC_HBM_TOTAL,
    METRIC_HBM_USAGE,
    MetricsUnavailable,
    TpuDevice,
    duty_per_device,
)
from fleet_agent.sim.models import TpuModel
from fleet_agent.sim.specs import FaultSpec, Load

_TAU = 2 * math.pi
# HBM bandwidth in use per unit of duty cycle: a made-up but steady relation for the simulation.
_HBM_BW_PER_DUTY = 0.6


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
            if f.occurrence(t) is not None:
                return f
        return None

    @property
    def pci_address(self) -> str:
        return f"0000:00:{4 + self.index:02x}.0"  # how GCE lays TPU chips out on the PCI bus

    @property
    def duty_per_device(self) -> bool:
        return duty_per_device(self.model.pci_device_id)


class FakeTpuPresence:
    """What /sys/bus/pci/devices shows: chips minus those a ``chip_missing`` fault removed."""

    def __init__(self, chips: list[FakeTpuChip], clock: Callable[[], float], start: float) -> None:
        self._chips, self._clock, self._start = chips, clock, start

    def scan(self) -> list[TpuDevice]:
        t = self._clock() - self._start
        return [TpuDevice(c.pci_address, c.model.name, c.model.cores_per_chip, c.duty_per_device)
                for c in self._chips if not c.active("chip_missing", t)]


class FakeTpuMetrics:
    """The runtime metrics service of one host, as seen through the client interface.

    ``hbm_bandwidth=False`` answers as an older libtpu that does not serve the HBM bandwidth metric.
    """

    def __init__(self, chips: list[FakeTpuChip], clock: Callable[[], float], start: float, *,
                 serving: bool, host_faults: Iterable[FaultSpec] = (),
                 release: threading.Event | None = None, hbm_bandwidth: bool = True) -> None:
        self._chips, self._clock, self._start = chips, clock, start
        self._serving = serving
        self._down = [f for f in host_faults if f.kind == "metrics_unavailable"]
        self._release = release or threading.Event()
        self._hbm_bandwidth = hbm_bandwidth

    def get_metric(self, name: str) -> list[tuple[int, float]]:
        t = self._clock() - self._start
        if not self._serving or any(f.occurrence(t) is not None for f in self._down):
            raise MetricsUnavailable("connection refused (no workload is running)")
        for c in self._chips:
            for f in c.by_kind.get("hang", ()):
                seconds = f.params.get("seconds")
                began = f.occurrence(t)
                if began is not None and (seconds is None or t < began + seconds) \
                        and not self._release.is_set():
                    self._release.wait(None if seconds is None else began + seconds - t)
        known = (METRIC_HBM_TOTAL, METRIC_HBM_USAGE, METRIC_DUTY_CYCLE)
        if name not in known and not (name == METRIC_HBM_BW_UTIL and self._hbm_bandwidth):
            raise MetricsUnavailable(f"metric {name!r} is not served")
        present = [c for c in self._chips if not c.active("chip_missing", t)]
        out: list[tuple[int, float]] = []
        dev = 0  # the workload's devices are numbered over the chips it sees, in chip order
        for c in present:
            cores = c.model.cores_per_chip
            for core in range(cores):
                if name == METRIC_HBM_TOTAL:
                    out.append((dev, float(c.model.hbm_bytes // cores)))
                elif name == METRIC_HBM_USAGE:
                    frac = c.load.memory_used_pct / 100 * (0.97 + 0.03 * math.sin(_TAU * t / 613.0 + c.phase))
                    out.append((dev, float(int(c.model.hbm_bytes * frac) // cores)))
                elif name == METRIC_HBM_BW_UTIL:
                    out.append((dev, round(self._duty(c, t, core) * _HBM_BW_PER_DUTY, 2)))
                elif c.duty_per_device:
                    out.append((dev, round(self._duty(c, t, core), 2)))
                elif core == 0:
                    # One reading per chip. The id libtpu puts on it is not documented (tpu-info
                    # reads these in order); the chip's first device number is used here, so a
                    # reader that took it for the chip's number would read the wrong chip.
                    out.append((dev, round(self._duty(c, t, 0), 2)))
                dev += 1
        return out

    def _duty(self, c: FakeTpuChip, t: float, core: int) -> float:
        # The TensorCores of one chip run the same program a little out of step.
        ld = c.load
        w = ld.base_pct + ld.amplitude_pct * math.sin(_TAU * t / ld.period_s + c.phase + 0.9 * core)
        return min(100.0, max(0.0, w))

    def close(self) -> None:
        pass
