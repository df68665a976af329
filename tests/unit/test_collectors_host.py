"""Host metrics through psutil (the real library on this machine) and a fake hwmon source."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from fleet_agent.collectors.host import HostCollector


class shwtemp(NamedTuple):
    label: str
    current: float
    high: float | None
    critical: float | None


def test_reads_this_host() -> None:
    m = HostCollector(temperatures=lambda: {}).collect()
    assert m.cpu_pct is not None and 0.0 <= m.cpu_pct <= 100.0
    assert m.memory_total_bytes is not None and m.memory_total_bytes > 0
    assert m.memory_used_bytes is not None and 0 < m.memory_used_bytes <= m.memory_total_bytes
    assert m.load1 is not None and m.load1 >= 0
    assert m.uptime_s is not None and m.uptime_s > 0
    assert m.temperatures_c == {}


def test_hwmon_temperatures_named_by_chip_and_label() -> None:
    def sensors() -> dict[str, list[Any]]:
        return {
            "coretemp": [shwtemp("Package id 0", 54.0, 84.0, 100.0), shwtemp("", 51.0, None, None)],
            "nvme": [shwtemp("Composite", math.nan, None, None)],  # a sensor that reads garbage
        }

    m = HostCollector(temperatures=sensors).collect()
    assert m.temperatures_c == {"coretemp/Package id 0": 54.0, "coretemp/temp2": 51.0}


def test_unreadable_hwmon_leaves_temperatures_empty() -> None:
    def broken() -> dict[str, list[Any]]:
        raise OSError("permission denied")

    m = HostCollector(temperatures=broken).collect()
    assert m.temperatures_c == {} and m.memory_total_bytes
