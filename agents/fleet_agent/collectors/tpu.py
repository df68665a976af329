"""Google TPUs: presence from PCI (vendor 0x1ae0) and /dev, metrics from libtpu's runtime service.

The runtime metrics service (gRPC, ``tpu.monitoring.runtime.RuntimeMetricService`` on
localhost:8431, the one ``tpu-info`` reads) only answers while a workload runs, so its silence is
normal: chips are still listed from PCI, with ``runtime_metrics_available=False``. The service
sits behind :class:`RuntimeMetricsClient` (one method), which the simulation replaces.

TensorCore utilisation is not served over gRPC (libtpu exposes it only through its in-process
SDK), so ``tensorcore_utilization_pct`` stays None here; ``utilization_pct`` carries the duty
cycle, the same "share of time busy" measure NVML's GPU utilisation is.
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

# PCI device id -> (model, runtime devices per chip). From tpu-info's device table; v2 and v3
# share an id and differ by subsystem id. Other Google devices (gVNIC, ...) are not TPUs.
_TPU_IDS: dict[int, tuple[str, int]] = {
    0x005E: ("TPU v4", 1),
    0x0063: ("TPU v5e", 1),
    0x0062: ("TPU v5p", 1),
    0x006F: ("TPU v6e", 1),
    0x0076: ("TPU7x", 2),
}
_V2_V3_ID = 0x0027
_V2_V3_SUBSYSTEMS = {0x004E: ("TPU v2", 2), 0x004F: ("TPU v3", 2)}


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
            chips.setdefault(base, TpuDevice(addr, found[0], found[1]))
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
    duty: dict[int, float]
    used: dict[int, int]
    total: dict[int, int]


class TpuCollector:
    """The :class:`~fleet_agent.collectors.base.ChipCollector` for TPUs.

    The service answers for all chips at once; one fetch serves every chip sampled within
    ``reuse_s`` (the sampler samples a host's chips together).
    """

    name = "tpu"

    def __init__(self, metrics_client: RuntimeMetricsClient, presence: TpuPresence | None = None, *,
                 reuse_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics_client
        self.presence = presence or SysfsTpuPresence()
        self.reuse_s = reuse_s
        self._clock = clock
        self._lock = threading.Lock()
        self._round: _Round | None = None
        self._cores: dict[int, int] = {}

    @classmethod
    def real(cls, address: str = METRICS_ADDRESS) -> TpuCollector:
        return cls(GrpcRuntimeMetricsClient(address), SysfsTpuPresence())

    def discover(self) -> list[ChipIdentity]:
        try:
            devices = self.presence.scan()
        except OSError as e:
            raise CollectorError(f"TPU presence scan failed: {e}") from None
        chips = []
        for i, d in enumerate(devices):
            self._cores[i] = d.cores
            uuid = f"tpu-{d.pci_address or i}"  # TPUs have no UUID: the PCI address names the chip
            chips.append(ChipIdentity(i, "tpu", "google", d.model, uuid, d.pci_address))
        return chips

    def _fetch(self) -> _Round:
        now = self._clock()
        with self._lock:
            r = self._round
            if r is not None and now - r.at < self.reuse_s:
                return r
            try:
                duty = self.metrics.get_metric(METRIC_DUTY_CYCLE)
                used = self.metrics.get_metric(METRIC_HBM_USAGE)
                total = self.metrics.get_metric(METRIC_HBM_TOTAL)
                r = _Round(now, True, None, {d: v for d, v in duty},
                           {d: int(v) for d, v in used}, {d: int(v) for d, v in total})
            except MetricsUnavailable as e:
                r = _Round(now, False, str(e), {}, {}, {})
            self._round = r
            return r

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        r = self._fetch()
        details = TpuDetails(runtime_metrics_available=r.available)
        rep = ChipReport(index=chip.index, kind="tpu", vendor="google", model=chip.model, uuid=chip.uuid,
                         pci_bus_id=chip.pci_bus_id, sampled_at=self._clock(), tpu=details)
        if not r.available:
            return rep
        cores = self._cores.get(chip.index, 1)
        devices = range(chip.index * cores, (chip.index + 1) * cores)
        if chip.index in r.duty:
            details.duty_cycle_pct = rep.utilization_pct = r.duty[chip.index]
        if all(d in r.used for d in devices):
            rep.memory_used_bytes = sum(r.used[d] for d in devices)
        if all(d in r.total for d in devices):
            rep.memory_total_bytes = sum(r.total[d] for d in devices)
        return rep

    def driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        self.metrics.close()
