"""Google TPUs: presence from PCI (vendor 0x1ae0) and /dev, metrics from libtpu's runtime service.

The runtime metrics service (gRPC, ``tpu.monitoring.runtime.RuntimeMetricService`` on
localhost:8431, the one ``tpu-info`` reads) only answers while a workload runs, so its silence is
normal: chips are still listed from PCI, with ``runtime_metrics_available=False``. The service
sits behind :class:`RuntimeMetricsClient` (one method), which the simulation replaces.

TensorCore utilisation is not served over gRPC (libtpu exposes it only through its in-process
SDK), so ``tensorcore_utilization_pct`` stays None here; ``utilization_pct`` carries the duty
cycle, the same "share of time busy" measure NVML's GPU utilisation is.

Devices and chips: libtpu numbers its runtime devices in chip order, and a chip is one device
except on v2, v3 and TPU7x, where each of its two TensorCores is a device of its own (v4 and v5p
run their two TensorCores as one "megacore" device). HBM figures come per device; the duty cycle
comes per chip except on TPU7x, where it too comes per device (tpu-info's ``get_chip_usage`` and
``get_chip_usage_new``). Readings are taken in device-id order, as tpu-info takes them, and
combined per chip: memory used/total summed, duty cycle and HBM bandwidth utilisation averaged
over the chip's devices (equal TensorCores, equal shares of the HBM). A reply whose count does
not fit the chips present (a workload holding only some of them) is not mapped: libtpu does not
say which chips those readings belong to, and a wrong chip is worse than none.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fleet_agent.collectors.base import ChipIdentity, CollectorError
from fleet_agent.schema import ChipReport, TpuDetails

GOOGLE_PCI_VENDOR = 0x1AE0
METRICS_ADDRESS = "localhost:8431"
# Metric names libtpu's runtime service serves (tpu_info.metrics.MetricName).
METRIC_HBM_TOTAL = "tpu.runtime.hbm.memory.total.bytes"
METRIC_HBM_USAGE = "tpu.runtime.hbm.memory.usage.bytes"
METRIC_DUTY_CYCLE = "tpu.runtime.tensorcore.dutycycle.percent"
# HBM bandwidth in use, percent per device; newer libtpu only (tpu-info's MetricName.HBM_BW_UTIL).
METRIC_HBM_BW_UTIL = "tpu.runtime.hbm.utilization.percent"

# PCI device id -> (model, runtime devices per chip, duty cycle reported per device). From
# tpu-info's device table (TpuChip) and its choice of get_chip_usage_new for TPU7x; v2 and v3
# share an id and differ by subsystem id. Other Google devices (gVNIC, ...) are not TPUs.
_TPU_IDS: dict[int, tuple[str, int, bool]] = {
    0x005E: ("TPU v4", 1, False),
    0x0063: ("TPU v5e", 1, False),
    0x0062: ("TPU v5p", 1, False),
    0x006F: ("TPU v6e", 1, False),
    0x0076: ("TPU7x", 2, True),
}
_V2_V3_ID = 0x0027
_V2_V3_SUBSYSTEMS = {0x004E: ("TPU v2", 2, False), 0x004F: ("TPU v3", 2, False)}


def duty_per_device(pci_device_id: int) -> bool:
    """Whether libtpu reports this chip's duty cycle per device (TPU7x) rather than per chip."""
    found = _TPU_IDS.get(pci_device_id)
    return found is not None and found[2]


class MetricsUnavailable(Exception):
    """The runtime metrics service did not answer (no workload running, or not installed)."""


class RuntimeMetricsClient(Protocol):
    def get_metric(self, name: str) -> list[tuple[int, float]]:
        """``(device id, value)`` per runtime device; raises MetricsUnavailable."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class TpuDevice:
    pci_address: str  # 0000:00:04.0
    model: str  # "TPU v5e"
    cores: int  # runtime devices per chip (HBM is reported per device)
    duty_per_device: bool = False  # libtpu reports the duty cycle per device, not per chip


class TpuPresence(Protocol):
    def scan(self) -> list[TpuDevice]:
        ...


def _read_hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


class SysfsTpuPresence:
    """TPU chips from ``/sys/bus/pci/devices`` (vendor 0x1ae0, known device ids), else ``/dev/accel*``."""

    def __init__(self, sys_root: str = "/sys/bus/pci/devices", dev_root: str = "/dev") -> None:
        self.sys_root = Path(sys_root)
        self.dev_root = dev_root

    @property
    def searched(self) -> str:
        """Where a scan looks, for the message when it finds nothing."""
        return (f"no Google TPU (PCI vendor 0x{GOOGLE_PCI_VENDOR:04x}, a known TPU device id) under "
                f"{self.sys_root} and no {os.path.join(self.dev_root, 'accel*')} device node")

    def scan(self) -> list[TpuDevice]:
        chips: dict[str, TpuDevice] = {}
        try:
            entries = sorted(os.listdir(self.sys_root))
        except OSError:
            entries = []
        for addr in entries:
            d = self.sys_root / addr
            if _read_hex(d / "vendor") != GOOGLE_PCI_VENDOR:
                continue
            dev_id = _read_hex(d / "device")
            found = _TPU_IDS.get(dev_id) if dev_id is not None else None
            if dev_id == _V2_V3_ID:
                found = _V2_V3_SUBSYSTEMS.get(_read_hex(d / "subsystem_device") or -1)
            if found is None:
                continue
            base = addr.rsplit(".", 1)[0]  # functions of one chip share domain:bus:device
            chips.setdefault(base, TpuDevice(addr, *found))
        if chips:
            return list(chips.values())
        # No readable PCI tree (a container): the accel device nodes still say how many chips.
        accel = sorted(glob.glob(os.path.join(self.dev_root, "accel[0-9]*")),
                       key=lambda p: int(p.rsplit("accel", 1)[1]) if p.rsplit("accel", 1)[1].isdigit() else 0)
        return [TpuDevice("", "TPU (unknown model)", 1) for _ in accel]


class GrpcRuntimeMetricsClient:
    """The real client: tpu-info's generated stubs over a local gRPC channel."""

    def __init__(self, address: str = METRICS_ADDRESS, *, timeout_s: float = 2.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stub: Any = None
        self._pb: Any = None

    def _connect(self) -> tuple[Any, Any]:
        with self._lock:
            if self._stub is None:
                try:
                    import grpc
                    from tpu_info.proto import tpu_metric_service_pb2 as pb
                    from tpu_info.proto import tpu_metric_service_pb2_grpc as pb_grpc
                except ImportError as e:
                    raise MetricsUnavailable(f"tpu-info is not installed ({e.name})") from None
                # Local credentials, as tpu-info connects: the service only talks to local peers.
                self._channel = grpc.secure_channel(self.address, grpc.local_channel_credentials())
                self._stub = pb_grpc.RuntimeMetricServiceStub(self._channel)
                self._pb = pb
            return self._stub, self._pb

    def get_metric(self, name: str) -> list[tuple[int, float]]:
        stub, pb = self._connect()
        import grpc

        try:
            resp = stub.GetRuntimeMetric(pb.MetricRequest(metric_name=name), timeout=self.timeout_s)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            raise MetricsUnavailable(f"{self.address}: {getattr(code, 'name', code)}") from None
        out: list[tuple[int, float]] = []
        for m in resp.metric.metrics:
            which = m.gauge.WhichOneof("value")
            if which in ("as_int", "as_double"):
                out.append((int(m.attribute.value.int_attr), float(getattr(m.gauge, which))))
        return out

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._stub = None


@dataclass
class _Round:
    at: float
    available: bool
    reason: str | None
    # Values in device-id order (one per device, or one per chip for a per-chip metric).
    duty: list[float]
    used: list[float]
    total: list[float]
    hbm_util: list[float]


@dataclass(frozen=True)
class _Slot:
    """Where one chip's readings sit in a reply: per-device and per-duty-reading offsets."""

    device: int
    devices: int
    duty: int
    duties: int


def _in_order(readings: list[tuple[int, float]]) -> list[float]:
    return [v for _, v in sorted(readings)]


def _take(values: list[float], expected: int, start: int, count: int) -> list[float] | None:
    """The chip's share of a reply, or None when the reply's size does not fit the chips present."""
    if count == 0 or len(values) != expected:
        return None
    return values[start:start + count]


class TpuCollector:
    """The :class:`~fleet_agent.collectors.base.ChipCollector` for TPUs.

    The service answers for all chips at once; one fetch serves every chip sampled within
    ``reuse_s`` (the sampler samples a host's chips together).
    """

    name = "tpu"

    def __init__(self, metrics_client: RuntimeMetricsClient, presence: TpuPresence | None = None, *,
                 reuse_s: float = 1.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics_client
        self.presence = presence or SysfsTpuPresence()
        self.reuse_s = reuse_s
        self._clock = clock
        self._monotonic = monotonic  # the reuse window: a wall-clock step must not keep a round fresh
        self._lock = threading.Lock()
        self._round: _Round | None = None
        # Per chip index its slot; the runtime devices of all chips present; the duty-cycle
        # readings libtpu gives for them. Replaced as a whole by discover().
        self._layout: tuple[dict[int, _Slot], int, int] = ({}, 0, 0)

    @classmethod
    def real(cls, address: str = METRICS_ADDRESS) -> TpuCollector:
        return cls(GrpcRuntimeMetricsClient(address), SysfsTpuPresence())

    def discover(self) -> list[ChipIdentity]:
        try:
            devices = self.presence.scan()
        except OSError as e:
            raise CollectorError(f"TPU presence scan failed: {e}") from None
        if not devices:
            # The collector runs because TPUs were found at start or it was asked for by name:
            # no chip now is a problem to name, not an empty host that looks healthy.
            where = getattr(self.presence, "searched", "the TPU presence scan found none")
            raise CollectorError(f"no TPU chips found: {where}")
        chips: list[ChipIdentity] = []
        slots: dict[int, _Slot] = {}
        dev = duty = 0
        for i, d in enumerate(devices):
            duties = d.cores if d.duty_per_device else 1
            slots[i] = _Slot(dev, d.cores, duty, duties)
            dev, duty = dev + d.cores, duty + duties
            uuid = f"tpu-{d.pci_address or i}"  # TPUs have no UUID: the PCI address names the chip
            chips.append(ChipIdentity(i, "tpu", "google", d.model, uuid, d.pci_address))
        self._layout = (slots, dev, duty)
        return chips

    def _fetch(self) -> _Round:
        now = self._monotonic()
        with self._lock:
            r = self._round
            if r is not None and now - r.at < self.reuse_s:
                return r
            try:
                duty = _in_order(self.metrics.get_metric(METRIC_DUTY_CYCLE))
                used = _in_order(self.metrics.get_metric(METRIC_HBM_USAGE))
                total = _in_order(self.metrics.get_metric(METRIC_HBM_TOTAL))
            except MetricsUnavailable as e:
                r = _Round(now, False, str(e), [], [], [], [])
            else:
                try:  # an older libtpu does not serve it: the rest of the round stands
                    hbm_util = _in_order(self.metrics.get_metric(METRIC_HBM_BW_UTIL))
                except MetricsUnavailable:
                    hbm_util = []
                r = _Round(now, True, None, duty, used, total, hbm_util)
            self._round = r
            return r

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        r = self._fetch()
        details = TpuDetails(runtime_metrics_available=r.available)
        rep = ChipReport(index=chip.index, kind="tpu", vendor="google", model=chip.model, uuid=chip.uuid,
                         pci_bus_id=chip.pci_bus_id, sampled_at=self._clock(), tpu=details)
        slots, devices, duties = self._layout
        slot = slots.get(chip.index)
        if not r.available or slot is None:
            return rep
        duty = _take(r.duty, duties, slot.duty, slot.duties)
        if duty:
            details.duty_cycle_pct = rep.utilization_pct = sum(duty) / len(duty)
        used = _take(r.used, devices, slot.device, slot.devices)
        if used:
            rep.memory_used_bytes = int(sum(used))
        total = _take(r.total, devices, slot.device, slot.devices)
        if total:
            rep.memory_total_bytes = int(sum(total))
        hbm_util = _take(r.hbm_util, devices, slot.device, slot.devices)
        if hbm_util:
            details.hbm_bandwidth_utilization_pct = sum(hbm_util) / len(hbm_util)
        return rep

    def driver_version(self) -> str | None:
        return None

    def cuda_driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        self.metrics.close()
