"""This host's own collectors, as the agent's config asks for them.

``collectors: auto`` builds those whose hardware or library is present; a listed collector that
cannot even be built still appears, failing its discover with the reason, so the report says why
there are no chips. A simulated host brings its own collectors instead (``fleet_agent.daemon``'s
``ChipSource``); nothing here knows about simulation.
"""

from __future__ import annotations

import ctypes.util
import os

from fleet_agent.collectors.base import ChipCollector, ChipIdentity, CollectorError
from fleet_agent.collectors.host import HostCollector
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.collectors.tpu import SysfsTpuPresence, TpuCollector
from fleet_agent.config import AgentConfig
from fleet_agent.schema import ChipReport


def real_collectors(cfg: AgentConfig, *, one_shot: bool = False) -> list[ChipCollector]:
    """The chip collectors of this host that ``cfg.collectors`` asks for (``None``: auto).
    ``one_shot`` (`once`, `check`): the XID history is read, never written."""
    wanted = cfg.collectors
    out: list[ChipCollector] = []
    if (wanted is None and nvml_present()) or (wanted is not None and "nvml" in wanted):
        try:
            out.append(NvmlCollector.real(kernel_log=cfg.xid.kmsg_path if cfg.xid.kernel_log else None,
                                          xid_window_s=cfg.xid.window_s, state_dir=cfg.state_dir,
                                          history_read_only=one_shot))
        except CollectorError as exc:
            out.append(UnavailableCollector("nvml", str(exc)))
    if (wanted is None and tpu_present()) or (wanted is not None and "tpu" in wanted):
        try:
            out.append(TpuCollector.real())
        except CollectorError as exc:
            out.append(UnavailableCollector("tpu", str(exc)))
    return out


def real_host_source() -> HostCollector:
    """This host's basics (CPU, memory, load, uptime, hwmon)."""
    return HostCollector()


def nvml_present() -> bool:
    """An NVIDIA driver or its NVML library is installed (loaded or not: "Driver Not Loaded" is
    worth reporting)."""
    return os.path.exists("/dev/nvidiactl") or ctypes.util.find_library("nvidia-ml") is not None


def tpu_present() -> bool:
    return bool(SysfsTpuPresence().scan())


class UnavailableCollector:
    """Stands in for a collector that could not be built; every discover says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def discover(self) -> list[ChipIdentity]:
        raise CollectorError(self.reason)

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        raise CollectorError(self.reason)

    def driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        pass
