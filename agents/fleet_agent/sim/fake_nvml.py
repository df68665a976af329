"""A stand-in for the ``pynvml`` module (nvidia-ml-py), driven by a scenario.

:class:`FakeNvml` has the same function names, argument lists, return shapes, constants and
exception classes (``NVMLError`` with ``.value``; ``NVMLError(15)`` is an ``NVMLError_GpuIsLost``)
as pynvml, so :class:`fleet_agent.collectors.nvml.NvmlCollector` runs unchanged on top of it.
Only the functions the collector needs are here. Values are computed from the clock on each call
(no threads, no per-chip state that ticks): a call costs one or two microseconds of CPU.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

from fleet_agent.health.xid_codes import clears_on
from fleet_agent.sim.models import GpuModel
from fleet_agent.sim.specs import FaultSpec, Load, ResetLookup

# --- errors, shaped like pynvml's -------------------------------------------------------------

_ERRORS: dict[str, tuple[int, str]] = {
    "UNINITIALIZED": (1, "Uninitialized"),
    "INVALID_ARGUMENT": (2, "Invalid Argument"),
    "NOT_SUPPORTED": (3, "Not Supported"),
    "NO_PERMISSION": (4, "Insufficient Permissions"),
    "ALREADY_INITIALIZED": (5, "Already Initialized"),
    "NOT_FOUND": (6, "Not Found"),
    "INSUFFICIENT_SIZE": (7, "Insufficient Size"),
    "INSUFFICIENT_POWER": (8, "Insufficient External Power"),
    "DRIVER_NOT_LOADED": (9, "Driver Not Loaded"),
    "TIMEOUT": (10, "Timeout"),
    "IRQ_ISSUE": (11, "Interrupt Request Issue"),
    "LIBRARY_NOT_FOUND": (12, "NVML Shared Library Not Found"),
    "FUNCTION_NOT_FOUND": (13, "Function Not Found"),
    "CORRUPTED_INFOROM": (14, "Corrupted infoROM"),
    "GPU_IS_LOST": (15, "GPU is lost"),
    "RESET_REQUIRED": (16, "GPU requires restart"),
    "OPERATING_SYSTEM": (17, "The operating system has blocked the request."),
    "LIB_RM_VERSION_MISMATCH": (18, "RM has detected an NVML/RM version mismatch."),
    "IN_USE": (19, ""),  # pynvml asks the library for these two messages
    "MEMORY": (20, "Insufficient Memory"),
    "NO_DATA": (21, ""),
    "UNKNOWN": (999, "Unknown Error"),
}
_MESSAGES = {code: msg for code, msg in _ERRORS.values() if msg}
# Names a scenario's nvml_error fault may raise: the NVML_ERROR_* suffix in lower case.
ERROR_NAMES = {name.lower(): code for name, (code, _) in _ERRORS.items()}


class NVMLError(Exception):
    """``NVMLError(code)`` builds the subclass for that code, as pynvml does."""

    value: int
    _code = 0
    _by_value: dict[int, type[NVMLError]] = {}

    def __new__(cls, value: int | None = None) -> NVMLError:
        if cls is NVMLError and value is not None:
            cls = NVMLError._by_value.get(value, NVMLError)
        obj = Exception.__new__(cls)
        obj.value = cls._code if value is None else value
        return obj

    def __init__(self, value: int | None = None) -> None:
        super().__init__(self.value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


_ERROR_CLASSES: dict[str, type[NVMLError]] = {}
for _name, (_code, _msg) in _ERRORS.items():
    # NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost, the name pynvml generates
    _cls_name = "NVMLError_" + "".join(w.capitalize() for w in _name.split("_"))
    _cls = type(_cls_name, (NVMLError,), {"_code": _code})
    NVMLError._by_value[_code] = _cls
    _ERROR_CLASSES[_cls_name] = _cls


def _err(code: int) -> NVMLError:
    return NVMLError(code)


# Host fault kind -> the error nvmlInit raises: the library absent, the kernel module not loaded,
# the kernel module not the library's version.
_DRIVER_FAULTS = {"driver_missing": 12, "driver_not_loaded": 9, "driver_mismatch": 18}
_DRIVER_ORDER = (12, 18, 9)
# Driver branch -> the CUDA version its libcuda supports (NVML's 1000 * major + 10 * minor), as
# nvidia-smi's "CUDA Version" shows it for every release of the branch. A branch not listed
# answers Not Supported (the report's field stays empty) rather than a guessed version.
CUDA_BY_BRANCH: dict[int, int] = {
    450: 11000, 455: 11010, 460: 11020, 465: 11030, 470: 11040, 495: 11050, 510: 11060,
    515: 11070, 520: 11080, 525: 12000, 530: 12010, 535: 12020, 545: 12030, 550: 12040,
    555: 12050, 560: 12060, 565: 12070, 570: 12080, 575: 12090, 580: 13000,
}


# NVML's field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (nvmlDeviceGpuRecoveryAction_t: 0 none, 1 GPU
# reset, 2 node reboot), the field behind XID 154. Answered from this driver branch on (NVIDIA's XID
# catalog for R570 and later documents XID 154 and its recovery actions); Not Supported before.
FI_GPU_RECOVERY_ACTION = 230
RECOVERY_FIELD_BRANCH = 570
# XID events a repeating fault materialises per chip: far more than any run of the simulation sees.
MAX_XID_EVENTS = 10_000


def cuda_for_driver(driver_version: str) -> int | None:
    """The CUDA driver version (12020) of a driver version ("535.183.06"); None for an unknown branch."""
    branch = driver_version.split(".", 1)[0]
    return CUDA_BY_BRANCH.get(int(branch)) if branch.isdigit() else None


# --- small result objects with pynvml's attribute names ---------------------------------------

class _Memory:
    __slots__ = ("free", "total", "used")

    def __init__(self, total: int, used: int) -> None:
        self.total, self.used, self.free = total, used, total - used


class _GpmSupport:
    __slots__ = ("isSupportedDevice", "version")

    def __init__(self, supported: bool) -> None:
        self.version, self.isSupportedDevice = 1, int(supported)


class _GpmSample:
    """What nvmlGpmSampleGet fills: here, which GPU and when."""

    __slots__ = ("device", "t")

    def __init__(self) -> None:
        self.t: float | None = None
        self.device: FakeGpu | None = None


class _GpmMetric:
    __slots__ = ("metricId", "nvmlReturn", "value")

    def __init__(self) -> None:
        self.metricId, self.nvmlReturn, self.value = 0, 0, 0.0


class _GpmMetricsGet:
    """pynvml's ctypes structure, as the collector fills it (metrics pre-sized, like the array)."""

    def __init__(self) -> None:
        self.version = self.numMetrics = 0
        self.sample1: _GpmSample | None = None
        self.sample2: _GpmSample | None = None
        self.metrics = [_GpmMetric() for _ in range(8)]


class _Utilization:
    __slots__ = ("gpu", "memory")

    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu, self.memory = gpu, memory


class _PciInfo:
    __slots__ = ("bus", "busId", "busIdLegacy", "device", "domain", "pciDeviceId", "pciSubSystemId")

    def __init__(self, bus: int, device_id: int) -> None:
        self.domain, self.bus, self.device = 0, bus, 0
        self.busId = f"00000000:{bus:02X}:00.0"  # pynvml hands back str (it decodes the char array)
        self.busIdLegacy = f"0000:{bus:02X}:00.0"
        self.pciDeviceId, self.pciSubSystemId = device_id, 0x16C110DE


class _Value:
    __slots__ = ("dVal", "siVal", "sllVal", "uiVal", "ulVal", "ullVal", "usVal")

    def __init__(self, v: int) -> None:
        self.dVal = float(v)
        self.uiVal = self.ulVal = self.ullVal = self.sllVal = self.siVal = self.usVal = v


class _FieldValue:
    __slots__ = ("fieldId", "latencyUsec", "nvmlReturn", "scopeId", "timestamp", "value", "valueType")

    def __init__(self, field_id: int, scope: int, ret: int, value: int) -> None:
        self.fieldId, self.scopeId, self.timestamp, self.latencyUsec = field_id, scope, 0, 0
        self.nvmlReturn = ret
        self.valueType = 1  # NVML_VALUE_TYPE_UNSIGNED_INT
        self.value = _Value(value)


class _EventData:
    __slots__ = ("computeInstanceId", "device", "eventData", "eventType", "gpuInstanceId")

    def __init__(self, device: FakeGpu, event_type: int, data: int) -> None:
        self.device, self.eventType, self.eventData = device, event_type, data
        self.gpuInstanceId = self.computeInstanceId = 0xFFFFFFFF


class FakeGpu:
    """One simulated GPU; also its NVML handle."""

    __slots__ = ("bus", "by_kind", "faulty", "index", "load", "model", "phase", "reset_at", "uuid", "xids")

    def __init__(self, index: int, model: GpuModel, uuid: str, phase: float, load: Load,
                 faults: Iterable[FaultSpec], reset_at: ResetLookup | None = None) -> None:
        self.index, self.model, self.uuid, self.phase, self.load = index, model, uuid, phase, load
        self.bus = model.bus_ids[index % len(model.bus_ids)] + index // len(model.bus_ids)
        self.by_kind: dict[str, list[FaultSpec]] = {}
        for f in faults:
            self.by_kind.setdefault(f.kind, []).append(f)
        self.faulty = bool(self.by_kind)
        # When this chip was last reset (a simulated nvidia-smi -r), or None: no reset ever seen.
        self.reset_at: ResetLookup = reset_at or (lambda _chip: None)
        # XID events this chip raises: (seconds after start, code, the fault), in time order; an event
        # whose occurrence a reset ended before it came is not raised (see FakeNvml._next_event).
        xids: list[tuple[float, int, FaultSpec]] = []
        for f in self.by_kind.get("xid", []):
            xids += [(at, f.params["code"], f) for at, _ in _xid_events(f)]
        xids += [(f.at, 79, f) for f in self.by_kind.get("gpu_lost", [])]  # falling off the bus is XID 79
        self.xids = sorted(xids, key=lambda e: (e[0], e[1]))[:MAX_XID_EVENTS]

    def active(self, kind: str, t: float) -> FaultSpec | None:
        """The fault of ``kind`` that is on at ``t`` (a reset ends those it clears), or None."""
        faults = self.by_kind.get(kind)
        if not faults:
            return None
        reset = self.reset_at(self.index)
        for f in faults:
            if f.on(t, reset) is not None:
                return f
        return None

    def xids_seen(self, t: float) -> list[int]:
        """The XID codes raised by the occurrences still on at ``t`` (those a reset did not end):
        what a diagnostic run now still finds on the chip."""
        reset = self.reset_at(self.index)
        codes: list[int] = []
        for f in self.by_kind.get("xid", ()):
            start = f.on(t, reset)
            if start is not None:
                codes += [f.params["code"] for at, _ in _xid_events(f, only=start) if at <= t]
        codes += [79 for f in self.by_kind.get("gpu_lost", ()) if f.on(t) is not None]
        return codes

    def recovery_action(self, t: float) -> int:
        """NVML's GPU recovery action now: what the XIDs still on ask for (2 a reboot, 1 a reset)."""
        seen = self.xids_seen(t)
        wanted = {clears_on(code) for code in seen}
        return 2 if "reboot" in wanted else 1 if "reset" in wanted else 0


def _xid_events(f: FaultSpec, only: float | None = None) -> list[tuple[float, float]]:
    """An ``xid`` fault's events as (time, occurrence start): ``count`` per occurrence, ``interval_s``
    apart, within the occurrence; ``only``: that occurrence's."""
    out: list[tuple[float, float]] = []
    start = f.at if only is None else only
    while len(out) < MAX_XID_EVENTS and (f.until is None or start < f.until):
        end = f.occurrence_end(start)
        for k in range(f.params["count"]):
            at = start + k * f.params["interval_s"]
            if at >= end or len(out) >= MAX_XID_EVENTS:
                break
            out.append((at, start))
        if only is not None or f.repeat_every is None:
            break
        start += f.repeat_every
    return out


class _EventSet:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.devices: list[FakeGpu] = []
        self.delivered: dict[int, int] = {}  # id(device) -> events handed out
        self.freed = False


# Calls that read identity; they answer even while a chip hangs (NVML caches them at init).
_IDENTITY = frozenset({"nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetSerial",
                       "nvmlDeviceGetPciInfo",
                       "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetIndex", "nvmlDeviceRegisterEvents",
                       "nvmlDeviceGetSupportedEventTypes"})

DEVICE_FUNCTIONS = frozenset({
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetSerial", "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetPciInfo_v3", "nvmlGpmQueryDeviceSupport", "nvmlGpmSampleGet",
    "nvmlDeviceGetIndex", "nvmlDeviceGetTemperature", "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetFieldValues", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetRetiredPagesPendingStatus", "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetCurrPcieLinkGeneration",
    "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
    "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetPcieReplayCounter", "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetPersistenceMode", "nvmlDeviceRegisterEvents", "nvmlDeviceGetSupportedEventTypes",
    "nvmlDeviceGetNvLinkErrorCounter", "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetEncoderUtilization", "nvmlDeviceGetDecoderUtilization",
})

_TAU = 2 * math.pi
# Errors a link that the scenario takes down has counted, by NVML_NVLINK_ERROR_DL_* counter.
_NVLINK_DOWN_ERRORS = {0: 12, 1: 3, 2: 5, 3: 1}


class FakeNvml:
    """The pynvml API over simulated GPUs. Thread-safe: calls only read state, except init/events."""

    # constants the collector uses, with pynvml's names and values
    NVML_SUCCESS = 0
    NVML_FEATURE_DISABLED = 0
    NVML_FEATURE_ENABLED = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
    NVML_TEMPERATURE_THRESHOLD_MEM_MAX = 2
    NVML_TEMPERATURE_THRESHOLD_GPU_MAX = 3
    NVML_CLOCK_GRAPHICS = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1
    NVML_NVLINK_MAX_LINKS = 36
    NVML_NVLINK_ERROR_DL_REPLAY = 0
    NVML_NVLINK_ERROR_DL_RECOVERY = 1
    NVML_NVLINK_ERROR_DL_CRC_FLIT = 2
    NVML_NVLINK_ERROR_DL_CRC_DATA = 3
    NVML_FI_DEV_MEMORY_TEMP = 82
    NVML_FI_DEV_NVLINK_LINK_COUNT = 91
    NVML_VALUE_TYPE_DOUBLE = 0
    NVML_VALUE_TYPE_UNSIGNED_INT = 1
    NVML_VALUE_TYPE_UNSIGNED_LONG = 2
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
    NVML_VALUE_TYPE_SIGNED_INT = 5
    NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
    nvmlEventTypeSingleBitEccError = 0x1
    nvmlEventTypeDoubleBitEccError = 0x2
    nvmlEventTypeXidCriticalError = 0x8
    nvmlEventTypeNone = 0x0
    nvmlClocksEventReasonGpuIdle = 0x1
    nvmlClocksEventReasonApplicationsClocksSetting = 0x2
    nvmlClocksEventReasonSwPowerCap = 0x4
    nvmlClocksEventReasonHwSlowdown = 0x8
    nvmlClocksEventReasonSyncBoost = 0x10
    nvmlClocksEventReasonSwThermalSlowdown = 0x20
    nvmlClocksEventReasonHwThermalSlowdown = 0x40
    nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
    nvmlClocksThrottleReasonGpuIdle = 0x1
    nvmlClocksThrottleReasonSwPowerCap = 0x4
    nvmlClocksThrottleReasonHwSlowdown = 0x8
    nvmlClocksThrottleReasonSwThermalSlowdown = 0x20
    nvmlClocksThrottleReasonHwThermalSlowdown = 0x40
    nvmlClocksThrottleReasonHwPowerBrakeSlowdown = 0x80

    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_GPM_METRIC_GRAPHICS_UTIL = 1
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5

    NVMLError = NVMLError
    c_nvmlGpmMetricsGet_t = _GpmMetricsGet  # pynvml's name of the ctypes structure

    def __init__(self, gpus: list[FakeGpu], *, clock: Callable[[], float], start: float,
                 driver_version: str, library_present: bool = True,
                 host_faults: Iterable[FaultSpec] = (), release: threading.Event | None = None) -> None:
        self._gpus = gpus
        self._clock = clock
        self._start = start
        self._driver = driver_version
        self._library = library_present
        self._driver_faults = [f for f in host_faults if f.kind in _DRIVER_FAULTS]
        branch = driver_version.split(".", 1)[0]
        self._recovery_field = branch.isdigit() and int(branch) >= RECOVERY_FIELD_BRANCH
        self._release = release or threading.Event()
        self._lock = threading.Lock()
        self._refcount = 0
        for name, cls in _ERROR_CLASSES.items():
            setattr(self, name, cls)
        for name, (code, _) in _ERRORS.items():
            setattr(self, f"NVML_ERROR_{name}", code)

    # --- plumbing ---

    def _t(self) -> float:
        return self._clock() - self._start

    def _dev(self, handle: Any, fn: str) -> FakeGpu:
        if self._refcount == 0:
            raise _err(1)
        if not isinstance(handle, FakeGpu):
            raise _err(2)
        if handle.faulty:
            self._apply_faults(handle, fn)
        return handle

    def _apply_faults(self, d: FakeGpu, fn: str) -> None:
        t = self._t()
        if d.active("gpu_lost", t) or d.active("chip_missing", t):
            raise _err(15)
        if fn not in _IDENTITY:
            for f in d.by_kind.get("hang", ()):
                seconds = f.params.get("seconds")
                began = f.occurrence(t)
                if began is not None and (seconds is None or t < began + seconds) \
                        and not self._release.is_set():
                    # Block like a wedged driver call: until released or the hang's time is up.
                    self._release.wait(None if seconds is None else began + seconds - t)
        ns = d.active("not_supported", t)
        if ns is not None and fn in ns.params["functions"]:
            raise _err(3)
        for f in d.by_kind.get("nvml_error", ()):
            if f.occurrence(t) is not None and fn in f.params["functions"]:
                raise _err(ERROR_NAMES[f.params["error"]])

    def _util(self, d: FakeGpu, t: float) -> float:
        ld = d.load
        w = ld.base_pct + ld.amplitude_pct * math.sin(_TAU * t / ld.period_s + d.phase)
        w += 0.2 * ld.amplitude_pct * math.sin(_TAU * t / (ld.period_s * 0.137) + 3 * d.phase)
        return min(100.0, max(0.0, w))

    def _throttled(self, d: FakeGpu, t: float) -> FaultSpec | None:
        return d.active("thermal_throttle", t) if d.faulty else None

    def _temp(self, d: FakeGpu, t: float) -> int:
        th = self._throttled(d, t)
        if th is not None:
            return int(th.params.get("temperature_c") or d.model.slowdown_temp_c + 1)
        m = d.model
        return round(m.temp_idle_c + (m.temp_load_c - m.temp_idle_c) * self._util(d, t) / 100
                     + 1.5 * math.sin(_TAU * t / 97.0 + d.phase))

    # --- library ---

    def nvmlInitWithFlags(self, flags: int) -> None:
        if not self._library:
            raise _err(12)
        t = self._t()
        # A real host is in one state; given several, a missing library hides the others.
        broken = [_DRIVER_FAULTS[f.kind] for f in self._driver_faults if f.occurrence(t) is not None]
        if broken:
            raise _err(min(broken, key=_DRIVER_ORDER.index))
        with self._lock:
            self._refcount += 1

    def nvmlInit(self) -> None:
        self.nvmlInitWithFlags(0)

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._refcount == 0:
                raise _err(1)
            self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        if self._refcount == 0:
            raise _err(1)
        return self._driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        if self._refcount == 0:
            raise _err(1)
        cuda = cuda_for_driver(self._driver)
        if cuda is None:
            raise _err(3)
        return cuda

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.nvmlSystemGetCudaDriverVersion()

    def nvmlSystemGetNVMLVersion(self) -> str:
        if self._refcount == 0:
            raise _err(1)
        return "12." + self._driver

    def present_gpus(self) -> list[FakeGpu]:
        """The GPUs enumerated now, in index order (what a stand-in tool numbers them by)."""
        return self._present()

    def _present(self) -> list[FakeGpu]:
        t = self._t()
        return [g for g in self._gpus if not (g.faulty and g.active("chip_missing", t))]

    def nvmlDeviceGetCount(self) -> int:
        if self._refcount == 0:
            raise _err(1)
        return len(self._present())

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if self._refcount == 0:
            raise _err(1)
        present = self._present()
        if not 0 <= index < len(present):
            raise _err(2)
        d = present[index]
        if d.faulty and d.active("gpu_lost", self._t()):
            raise _err(15)
        return d

    # --- identity ---

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetIndex")
        return self._present().index(d)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._dev(handle, "nvmlDeviceGetName").model.name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._dev(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        # Thirteen digits like a data-centre board's, stable per simulated GPU.
        return str(1650000000000 + int(self._dev(handle, "nvmlDeviceGetSerial").uuid[4:12], 16) % 10**9)

    def nvmlDeviceGetPciInfo_v3(self, handle: Any) -> _PciInfo:
        d = self._dev(handle, "nvmlDeviceGetPciInfo_v3")
        return _PciInfo(d.bus, d.model.pci_device_id)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> _PciInfo:
        d = self._dev(handle, "nvmlDeviceGetPciInfo")
        return _PciInfo(d.bus, d.model.pci_device_id)

    # --- readings ---

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        d = self._dev(handle, "nvmlDeviceGetTemperature")
        if sensor != 0:
            raise _err(2)
        return self._temp(d, self._t())

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        m = self._dev(handle, "nvmlDeviceGetTemperatureThreshold").model
        values = {0: m.shutdown_temp_c, 1: m.slowdown_temp_c, 3: m.slowdown_temp_c - 2}
        if m.memory_total_mib > 40000:
            values[2] = 95  # HBM parts report a memory max operating temperature
        if threshold not in values:
            raise _err(3)
        return values[threshold]

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[Any]) -> list[_FieldValue]:
        d = self._dev(handle, "nvmlDeviceGetFieldValues")
        out = []
        for fid in fieldIds:
            field_id, scope = fid if isinstance(fid, tuple) else (fid, 0)
            if field_id == 82 and d.model.memory_total_mib > 40000:  # HBM temperature
                out.append(_FieldValue(field_id, scope, 0, self._temp(d, self._t()) + 7))
            elif field_id == 91 and d.model.nvlinks:
                out.append(_FieldValue(field_id, scope, 0, d.model.nvlinks))
            elif field_id == FI_GPU_RECOVERY_ACTION and self._recovery_field:
                out.append(_FieldValue(field_id, scope, 0, d.recovery_action(self._t()) if d.faulty else 0))
            else:
                out.append(_FieldValue(field_id, scope, 3, 0))
        return out

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> _Utilization:
        d = self._dev(handle, "nvmlDeviceGetUtilizationRates")
        u = self._util(d, self._t())
        return _Utilization(round(u), round(u * 0.55))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> _Memory:
        d = self._dev(handle, "nvmlDeviceGetMemoryInfo")
        total = d.model.memory_total_mib * 1024 * 1024
        frac = d.load.memory_used_pct / 100 * (0.97 + 0.03 * math.sin(_TAU * self._t() / 613.0 + d.phase))
        return _Memory(total, max(1 << 20, int(total * min(frac, 0.995))))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetPowerUsage")
        m, t = d.model, self._t()
        share = self._util(d, t) / 100 * (0.6 if self._throttled(d, t) else 0.92)
        return int((m.power_idle_w + (m.power_limit_w - m.power_idle_w) * share) * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return int(self._dev(handle, "nvmlDeviceGetEnforcedPowerLimit").model.power_limit_w * 1000)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:  # pynvml's argument name
        d = self._dev(handle, "nvmlDeviceGetClockInfo")
        m, t = d.model, self._t()
        if type == 2:
            return m.mem_clock_mhz
        if type not in (0, 1):
            raise _err(2)
        if self._util(d, t) < 3:
            return m.sm_clock_idle_mhz
        return int(m.sm_clock_max_mhz * (0.62 if self._throttled(d, t) else 1.0)) // 15 * 15

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        d = self._dev(handle, "nvmlDeviceGetTotalEccErrors")
        if errorType == 0:  # corrected: a few over the chip's life, none since the driver loaded
            return int(d.phase * 7) % 4 if counterType == 1 else 0
        t = self._t()
        faults = d.by_kind.get("ecc_uncorrectable", ())
        if counterType == 0:  # volatile: since the last reset (or driver load), so a reset zeroes it
            reset = d.reset_at(d.index) if faults else None
            return sum(f.params["count"] for f in faults if f.on(t, reset) is not None)
        return sum(f.params["count"] * f.occurrences(t) for f in faults)

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        d = self._dev(device, "nvmlDeviceGetRemappedRows")
        if not d.model.row_remapping:
            raise _err(3)
        t = self._t()
        pending = 1 if d.faulty and d.active("row_remap_pending", t) else 0
        failure = 1 if d.faulty and d.active("row_remap_failure", t) else 0
        return (1 if int(d.phase * 7) % 4 == 3 else 0, 1 if (pending or failure) else 0, pending, failure)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, device: Any) -> int:
        d = self._dev(device, "nvmlDeviceGetRetiredPagesPendingStatus")
        fault = d.active("retired_pages_pending", self._t()) if d.faulty else None
        if not d.model.page_retirement and "retired_pages_pending" not in d.by_kind:
            raise _err(3)
        return 1 if fault else 0

    def _reasons(self, d: FakeGpu) -> int:
        t = self._t()
        bits = 0x1 if self._util(d, t) < 3 else 0
        if self._throttled(d, t):
            bits |= 0x40 | 0x20  # HW and SW thermal slowdown
        return bits

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._reasons(self._dev(handle, "nvmlDeviceGetCurrentClocksEventReasons"))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._reasons(self._dev(handle, "nvmlDeviceGetCurrentClocksThrottleReasons"))

    def _pcie(self, d: FakeGpu, key: str) -> int | None:
        f = d.active("pcie_downgrade", self._t()) if d.faulty else None
        return f.params.get(key) if f is not None else None

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetCurrPcieLinkGeneration")
        return self._pcie(d, "gen") or d.model.pcie_gen

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._dev(handle, "nvmlDeviceGetMaxPcieLinkGeneration").model.pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetCurrPcieLinkWidth")
        return self._pcie(d, "width") or d.model.pcie_width

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        return self._dev(handle, "nvmlDeviceGetMaxPcieLinkWidth").model.pcie_width

    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetPcieReplayCounter")
        return 0 if self._pcie(d, "gen") is None and self._pcie(d, "width") is None else 37

    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int:
        d = self._dev(device, "nvmlDeviceGetNvLinkState")
        if d.model.nvlinks == 0:
            raise _err(3)
        if not 0 <= link < d.model.nvlinks:
            raise _err(2)
        f = d.active("nvlink_down", self._t()) if d.faulty else None
        return 0 if f is not None and link in f.params["links"] else 1

    def nvmlDeviceGetNvLinkErrorCounter(self, device: Any, link: int, counter: int) -> int:
        d = self._dev(device, "nvmlDeviceGetNvLinkErrorCounter")
        if d.model.nvlinks == 0:
            raise _err(3)
        if not 0 <= link < d.model.nvlinks or counter not in _NVLINK_DOWN_ERRORS:
            raise _err(2)
        # A link the scenario takes down has logged errors on the way; healthy links have none.
        f = d.active("nvlink_down", self._t()) if d.faulty else None
        return _NVLINK_DOWN_ERRORS[counter] if f is not None and link in f.params["links"] else 0

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        d = self._dev(handle, "nvmlDeviceGetTotalEnergyConsumption")
        m = d.model
        # The mean draw of the chip's load since the driver loaded (an hour before the scenario
        # starts): increases with the clock, as the real counter does.
        mean_w = m.power_idle_w + (m.power_limit_w - m.power_idle_w) * d.load.base_pct / 100 * 0.92
        return int(mean_w * (max(self._t(), 0.0) + 3600.0) * 1000)

    def nvmlDeviceGetEncoderUtilization(self, handle: Any) -> list[int]:
        self._dev(handle, "nvmlDeviceGetEncoderUtilization")
        return [0, 167000]  # [utilisation %, sampling period us]: training loads leave NVENC idle

    def nvmlDeviceGetDecoderUtilization(self, handle: Any) -> list[int]:
        d = self._dev(handle, "nvmlDeviceGetDecoderUtilization")
        return [round(self._util(d, self._t()) * 0.1), 167000]  # data loaders decode some video

    # --- GPM (Hopper and later): busy shares between two samples ---

    def nvmlGpmQueryDeviceSupport(self, device: Any) -> _GpmSupport:
        return _GpmSupport(self._dev(device, "nvmlGpmQueryDeviceSupport").model.gpm)

    def nvmlGpmSampleAlloc(self) -> _GpmSample:
        return _GpmSample()

    def nvmlGpmSampleFree(self, gpmSample: _GpmSample) -> None:
        gpmSample.t = None

    def nvmlGpmSampleGet(self, device: Any, gpmSample: _GpmSample) -> _GpmSample:
        d = self._dev(device, "nvmlGpmSampleGet")
        if not d.model.gpm:
            raise _err(3)
        gpmSample.t, gpmSample.device = self._t(), d
        return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: _GpmMetricsGet) -> _GpmMetricsGet:
        s1, s2 = metricsGet.sample1, metricsGet.sample2
        if (s1 is None or s2 is None or s1.t is None or s2.t is None or s2.device is None
                or s1.device is not s2.device):
            raise _err(2)
        # A slowly varying load: its share over the interval is close to the one at the midpoint.
        busy = self._util(s2.device, (s1.t + s2.t) / 2)
        for m in metricsGet.metrics[:metricsGet.numMetrics]:
            if s2.t <= s1.t:
                m.nvmlReturn, m.value = 2, 0.0
            elif m.metricId == self.NVML_GPM_METRIC_GRAPHICS_UTIL:
                m.nvmlReturn, m.value = 0, busy
            elif m.metricId == self.NVML_GPM_METRIC_ANY_TENSOR_UTIL:
                m.nvmlReturn, m.value = 0, busy * 0.62  # training: most busy time in tensor ops
            else:
                m.nvmlReturn, m.value = 3, 0.0
        return metricsGet

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        self._dev(handle, "nvmlDeviceGetPersistenceMode")
        return 1

    # --- events (XIDs) ---

    def nvmlEventSetCreate(self) -> _EventSet:
        if self._refcount == 0:
            raise _err(1)
        return _EventSet()

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._dev(handle, "nvmlDeviceGetSupportedEventTypes")
        return 0x1 | 0x2 | 0x8

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: _EventSet) -> None:
        d = self._dev(handle, "nvmlDeviceRegisterEvents")
        if eventTypes & ~(0x1 | 0x2 | 0x8):
            raise _err(3)
        if eventTypes & 0x8:
            with eventSet.lock:
                if d not in eventSet.devices:
                    # The scenario starts when the simulated agent does: a registration made
                    # now still receives the events from the scenario's start on.
                    eventSet.devices.append(d)
                    eventSet.delivered[id(d)] = 0

    def _next_event(self, es: _EventSet, t: float) -> tuple[_EventData | None, float | None]:
        """The next due event (delivered now) and the time the next undue one comes due."""
        soonest: float | None = None
        with es.lock:
            for d in es.devices:
                n = es.delivered.get(id(d), 0)
                while n < len(d.xids):
                    at, code, fault = d.xids[n]
                    if at > t:
                        soonest = at if soonest is None else min(soonest, at)
                        break
                    n += 1
                    es.delivered[id(d)] = n
                    if fault.on(at, d.reset_at(d.index)) is not None:  # not ended by a reset before it
                        return _EventData(d, 0x8, code), None
        return None, soonest

    def nvmlEventSetWait_v2(self, eventSet: _EventSet, timeoutms: int) -> _EventData:
        if self._refcount == 0 or eventSet.freed:
            raise _err(1)
        deadline = self._clock() + timeoutms / 1000
        while True:
            now = self._clock()
            data, due = self._next_event(eventSet, now - self._start)
            if data is not None:
                return data
            left = deadline - now
            if left <= 0 or eventSet.freed:
                raise _err(10)
            wait = left if due is None else min(left, due + self._start - now)
            eventSet.wake.wait(max(wait, 0.001))

    def nvmlEventSetWait(self, eventSet: _EventSet, timeoutms: int) -> _EventData:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: _EventSet) -> None:
        eventSet.freed = True
        eventSet.wake.set()
