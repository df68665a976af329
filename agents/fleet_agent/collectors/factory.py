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


NVIDIA_PCI_VENDOR = 0x10DE
# PCI base class 0x03 (display controller): VGA 0x0300 and 3D controller 0x0302, the class data
# center GPUs show. NVSwitches and bridges (0x06) share the vendor but are no GPUs.
_DISPLAY_CLASS = 0x03


def nvml_present(pci_root: str = "/sys/bus/pci/devices", dev_root: str = "/dev") -> bool:
    """Whether this host should have the NVML collector: NVIDIA GPUs on its PCI bus (with or without
    a working driver: a missing or broken driver is then a problem to report, not a reason to list
    no chips), or a driver's device node. The NVML library alone counts only where the PCI bus cannot
    be read (a container): on a host whose bus shows no NVIDIA GPU it is a leftover package."""
    if os.path.exists(os.path.join(dev_root, "nvidiactl")):
        return True
    gpus = nvidia_pci_gpus(pci_root)
    if gpus is not None:
        return bool(gpus)
    return ctypes.util.find_library("nvidia-ml") is not None


def nvidia_pci_gpus(pci_root: str = "/sys/bus/pci/devices") -> list[str] | None:
    """The PCI addresses of NVIDIA GPUs under ``pci_root`` (sysfs); None when it cannot be read or
    lists no device at all (a masked sysfs: every real host has some PCI device)."""
    try:
        entries = sorted(os.listdir(pci_root))
    except OSError:
        return None
    if not entries:
        return None
    found = []
    for addr in entries:
        vendor = _read_hex(os.path.join(pci_root, addr, "vendor"))
        pci_class = _read_hex(os.path.join(pci_root, addr, "class"))
        if vendor == NVIDIA_PCI_VENDOR and pci_class is not None and pci_class >> 16 == _DISPLAY_CLASS:
            found.append(addr)
    return found


def _read_hex(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None


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

    def cuda_driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        pass
