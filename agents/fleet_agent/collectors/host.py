"""Host basics through psutil: CPU, memory, load, uptime, and hwmon temperatures where present."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import psutil

from fleet_agent.schema import HostMetrics

TemperatureSource = Callable[[], dict[str, list[Any]]]


def _hwmon() -> dict[str, list[Any]]:
    # psutil reads /sys/class/hwmon; it raises AttributeError on platforms without sensors.
    read = getattr(psutil, "sensors_temperatures", None)
    return {} if read is None else dict(read())


class HostCollector:
    """Reads :class:`~fleet_agent.schema.HostMetrics`; each part may fail alone (left None)."""

    name = "host"

    def __init__(self, *, temperatures: TemperatureSource = _hwmon,
                 clock: Callable[[], float] = time.time) -> None:
        self._temperatures = temperatures
        self._clock = clock
        # cpu_percent(None) measures since the previous call: prime it so the first sample is real.
        psutil.cpu_percent(interval=None)

    def collect(self) -> HostMetrics:
        m = HostMetrics()
        try:
            m.cpu_pct = float(psutil.cpu_percent(interval=None))
        except OSError:
            pass
        try:
            vm = psutil.virtual_memory()
            m.memory_total_bytes = int(vm.total)
            # total - available: memory new work cannot have (psutil's "used" leaves out buffers/cache)
            m.memory_used_bytes = int(vm.total - vm.available)
        except OSError:
            pass
        try:
            m.load1, m.load5, m.load15 = (float(x) for x in psutil.getloadavg())
        except OSError:
            pass
        try:
            m.uptime_s = max(0.0, self._clock() - psutil.boot_time())
        except OSError:
            pass
        try:
            readings = self._temperatures()
        except OSError:
            readings = {}
        for chip, sensors in readings.items():
            for i, s in enumerate(sensors):
                value = getattr(s, "current", None)
                if value is None or not math.isfinite(float(value)):
                    continue
                label = getattr(s, "label", "") or f"temp{i + 1}"
                m.temperatures_c[f"{chip}/{label}"] = float(value)
        return m
