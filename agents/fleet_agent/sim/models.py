"""Specifications of the simulated chip models: the figures a real chip of that model reports.

Values come from the vendors' data sheets and ``nvidia-smi -q`` output of such cards; they only
need to look real (a dashboard or a health rule fed by the simulation sees plausible numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class GpuModel:
    key: str
    name: str  # what nvmlDeviceGetName returns
    memory_total_mib: int
    power_limit_w: float
    power_idle_w: float
    sm_clock_max_mhz: int
    sm_clock_idle_mhz: int
    mem_clock_mhz: int
    pcie_gen: int
    pcie_width: int
    nvlinks: int
    slowdown_temp_c: int
    shutdown_temp_c: int
    temp_idle_c: float
    temp_load_c: float
    pci_device_id: int  # nvmlPciInfo_t.pciDeviceId: device << 16 | vendor 0x10de
    row_remapping: bool  # Ampere and later remap rows ...
    page_retirement: bool  # ... older chips retire pages instead
    bus_ids: tuple[int, ...]  # PCI bus numbers of the GPUs on a typical board
    gpm: bool = False  # NVML's GPU performance monitoring (GPM): Hopper and later


@dataclass(frozen=True)
class TpuModel:
    key: str
    name: str
    hbm_bytes: int
    pci_device_id: int  # under vendor 0x1ae0 (Google)
    cores_per_chip: int  # runtime metrics report HBM per core


_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_PCIE_BUSES = (0x17, 0x31, 0x4B, 0x65, 0x98, 0xB1, 0xCA, 0xE3)

GPU_MODELS: dict[str, GpuModel] = {
    m.key: m
    for m in (
        GpuModel("H100-SXM5-80GB", "NVIDIA H100 80GB HBM3", 81559, 700.0, 72.0, 1980, 345, 2619,
                 5, 16, 18, 87, 92, 31.0, 68.0, 0x233010DE, True, False, _HGX_BUSES, gpm=True),
        GpuModel("A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", 81920, 400.0, 55.0, 1410, 210, 1593,
                 4, 16, 12, 92, 95, 30.0, 64.0, 0x20B210DE, True, False, _HGX_BUSES),
        GpuModel("L4", "NVIDIA L4", 23034, 72.0, 16.0, 2040, 210, 6251,
                 4, 16, 0, 93, 96, 34.0, 74.0, 0x27B810DE, True, False, _PCIE_BUSES),
        GpuModel("T4", "Tesla T4", 15360, 70.0, 9.0, 1590, 300, 5001,
                 3, 16, 0, 89, 94, 33.0, 70.0, 0x1EB810DE, False, True, _PCIE_BUSES),
    )
}

TPU_MODELS: dict[str, TpuModel] = {
    m.key: m
    for m in (
        TpuModel("v4", "TPU v4", 32 * GIB, 0x005E, 1),
        TpuModel("v5e", "TPU v5e", 16 * GIB, 0x0063, 1),
        TpuModel("v5p", "TPU v5p", 95 * GIB, 0x0062, 1),
        TpuModel("v6e", "TPU v6e", 32 * GIB, 0x006F, 1),
    )
}
