"""NVIDIA GPUs through NVML (nvidia-ml-py's ``pynvml``, or the simulation's stand-in for it).

Every field is read on its own: a field the GPU does not support (NotSupported) or that fails
(Unknown, Timeout, ...) stays ``None`` while the others are still read; only a GPU that is gone
(GpuIsLost: it fell off the bus) fails the whole chip. The module is passed in, so the same code
runs on a real GPU and on :class:`fleet_agent.sim.fake_nvml.FakeNvml`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fleet_agent.collectors.base import ChipIdentity, CollectorError
from fleet_agent.collectors.xid import KernelLogReader, NvmlXidWatcher, XidTracker, pci_key
from fleet_agent.config import DEFAULT_STATE_DIR
from fleet_agent.schema import ChipReport, GpuDetails

# Clock event ("throttle") reason bits, as in nvml.h; stable across driver versions.
THROTTLE_REASONS: tuple[tuple[str, int], ...] = (
    ("hw_slowdown", 0x08),
    ("hw_thermal", 0x40),
    ("hw_power_brake", 0x80),
    ("sw_power_cap", 0x04),
    ("sw_thermal", 0x20),
)
_FI_DEV_MEMORY_TEMP = 82
_FI_DEV_NVLINK_LINK_COUNT = 91
_FI_DEV_GET_GPU_RECOVERY_ACTION = 230  # the driver's wanted recovery; back to 0 after a reset
_ERR_INVALID_ARGUMENT = 2
_ERR_NOT_SUPPORTED = 3
_ERR_DRIVER_NOT_LOADED = 9
_ERR_LIBRARY_NOT_FOUND = 12
_ERR_FUNCTION_NOT_FOUND = 13
_ERR_GPU_IS_LOST = 15
_ERR_LIB_RM_VERSION_MISMATCH = 18

# Why nvmlInit failed, for the init errors that mean the driver itself is not usable. The messages
# open with the words the driver health check (fleet_agent.health.checks.driver) recognises.
_INIT_FAILURES: dict[int, str] = {
    _ERR_LIBRARY_NOT_FOUND: "NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is not installed",
    _ERR_DRIVER_NOT_LOADED: "NVIDIA driver not loaded: its library is installed but its kernel module is "
                            "not running",
    _ERR_LIB_RM_VERSION_MISMATCH: "NVIDIA driver/library version mismatch: the kernel module running is "
                                  "not the installed library's version",
}

XidMode = Literal["thread", "poll", "off"]


def load_pynvml() -> Any:
    """The real ``pynvml`` module; CollectorError when nvidia-ml-py is not installed."""
    try:
        import pynvml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise CollectorError("NVML bindings not installed: nvidia-ml-py is not installed in the agent's "
                             "environment (pip install 'fleetctl-agent[nvml]')") from None
    return pynvml


def init_failure(error: Any) -> str:
    """One line for a failed nvmlInit: the driver state it means, then NVML's own words."""
    said = _INIT_FAILURES.get(getattr(error, "value", None) or 0)
    return f"{said} (NVML: {error})" if said else f"NVML init failed: {error}"


class _Lost(Exception):
    pass


@dataclass
class _Static:
    """Per-GPU values that do not change while the driver is loaded: read once."""

    slowdown_c: float | None = None
    shutdown_c: float | None = None
    pcie_gen_max: int | None = None
    pcie_width_max: int | None = None
    nvlinks: int | None = None
    serial: str | None = None
    serial_read: bool = False
    gpm: bool | None = None  # None: not asked yet
    gpm_prev: Any = None  # the GPM buffer holding the previous sample
    gpm_spare: Any = None  # the GPM buffer to fill next (NVML allocates both)
    # False once no link answered the error counters: not asked again (a GPU without them).
    nvlink_errors: bool = True


@dataclass
class _Known:
    identity: ChipIdentity
    handle: Any


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _field_number(fv: Any) -> float | None:
    """The number in an nvmlFieldValue_t, by its valueType; None if NVML returned an error."""
    if fv.nvmlReturn != 0:
        return None
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    name = attr.get(int(fv.valueType))
    return None if name is None else float(getattr(fv.value, name))


def cuda_version_text(number: Any) -> str | None:
    """NVML's CUDA driver version (1000 * major + 10 * minor: 12020) as nvidia-smi shows it ("12.2");
    None for anything else (not an int, zero or less: no CUDA driver)."""
    if number.__class__ is not int or number <= 0:
        return None
    return f"{number // 1000}.{number % 1000 // 10}"


def _cuda_driver_version(nv: Any) -> str | None:
    """The CUDA version the driver supports: ``_v2`` first, then the older call (bindings or a
    library without ``_v2``); None when neither answers (NotSupported, not in the bindings)."""
    for name in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"):
        try:
            return cuda_version_text(getattr(nv, name)())
        except (AttributeError, nv.NVMLError):
            continue
    return None


def _field_int(fv: Any) -> int | None:
    number = _field_number(fv)
    return None if number is None else int(number)


class NvmlCollector:
    """The :class:`~fleet_agent.collectors.base.ChipCollector` for NVIDIA GPUs.

    ``xid_events``: ``thread`` waits on NVML's event set in a background thread; ``poll`` drains
    it on each discover/sample (no thread: what thousands of simulated hosts need); ``off``.
    ``kernel_log``: a file to follow for ``NVRM: Xid`` lines (``/dev/kmsg`` on a real host).
    """

    name = "nvml"

    def __init__(self, nvml: Any, *, xid_tracker: XidTracker | None = None,
                 xid_events: XidMode = "thread", kernel_log: str | None = None,
                 event_wait_ms: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self.nvml = nvml
        self.xids = xid_tracker or XidTracker()
        self._mode = xid_events
        self._clock = clock
        self._lock = threading.Lock()
        self._initialised = False
        self._driver: str | None = None
        self._cuda: str | None = None
        self._known: dict[int, _Known] = {}
        self._static: dict[str, _Static] = {}
        self._watcher = (NvmlXidWatcher(nvml, self.xids, wait_ms=event_wait_ms)
                         if xid_events != "off" else None)
        self._kernel_log = KernelLogReader(self.xids, kernel_log) if kernel_log else None
        self._kernel_log_started = False

    @classmethod
    def real(cls, *, kernel_log: str | None = "/dev/kmsg", xid_window_s: float = 3600.0,
             state_dir: str | None = DEFAULT_STATE_DIR, history_read_only: bool = False) -> NvmlCollector:
        """The collector a real host runs: pynvml, XID events in a thread, the kernel log, the
        XID history kept under ``state_dir`` (only read, never written, when ``history_read_only``:
        a one-shot command beside the running service)."""
        tracker = XidTracker(xid_window_s, state_dir=state_dir, read_only=history_read_only)
        return cls(load_pynvml(), xid_tracker=tracker, kernel_log=kernel_log)

    # --- library ---

    def _ensure_init(self) -> None:
        if self._initialised:
            return
        nv = self.nvml
        with self._lock:
            if self._kernel_log is not None and not self._kernel_log_started:
                self._kernel_log_started = True
                self._kernel_log.start()  # independent of NVML: XIDs are logged even when NVML fails
            if self._initialised:
                return
            try:
                nv.nvmlInit()
            except nv.NVMLError as e:
                raise CollectorError(init_failure(e)) from None
            try:
                self._driver = _text(nv.nvmlSystemGetDriverVersion())
            except nv.NVMLError:
                self._driver = None
            self._cuda = _cuda_driver_version(nv)
            self._initialised = True

    def driver_version(self) -> str | None:
        return self._driver

    def cuda_driver_version(self) -> str | None:
        return self._cuda

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._kernel_log is not None:
            self._kernel_log.stop()
        self.xids.flush(final=True)
        with self._lock:
            if self._initialised:
                for st in self._static.values():
                    for sample in (st.gpm_prev, st.gpm_spare):
                        if sample is not None:
                            try:
                                self.nvml.nvmlGpmSampleFree(sample)
                            except (self.nvml.NVMLError, AttributeError):
                                pass
                    st.gpm_prev = st.gpm_spare = None
                self._initialised = False
                try:
                    self.nvml.nvmlShutdown()
                except self.nvml.NVMLError:
                    pass

    # --- discovery ---

    def discover(self) -> list[ChipIdentity]:
        self._ensure_init()
        nv = self.nvml
        try:
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as e:
            raise CollectorError(f"NVML device count failed: {e}") from None
        chips = [self._identity(i) for i in range(count)]
        self._poll_xids()
        return chips

    def _identity(self, index: int) -> ChipIdentity:
        nv = self.nvml
        known = self._known.get(index)
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError:
            # A GPU that fell off the bus keeps the identity we saw before; else index only.
            if known is not None:
                return known.identity
            return ChipIdentity(index, "gpu", "nvidia", "unknown", "", "")
        if known is not None and known.identity.uuid == uuid:
            known.handle = handle
            return known.identity
        try:
            model = _text(nv.nvmlDeviceGetName(handle))
        except nv.NVMLError:
            model = "unknown"
        try:
            bus = _text(nv.nvmlDeviceGetPciInfo(handle).busId)
        except nv.NVMLError:
            bus = ""
        identity = ChipIdentity(index, "gpu", "nvidia", model, uuid, bus)
        self._known[index] = _Known(identity, handle)
        key = pci_key(bus)
        if self._watcher is not None and key is not None:
            self._watcher.register(key, handle)
        return identity

    def _poll_xids(self) -> None:
        w = self._watcher
        if w is None:
            return
        if self._mode == "poll":
            w.poll(0)
        elif not w.running:
            # Thread mode: drain what is already waiting first, so the very first sample (think
            # `fleet-agent once`) shows it, then leave the waiting to the thread.
            w.poll(0)
            w.start()

    def warning(self) -> str | None:
        """A source of XIDs that is off (the kernel log unreadable, NVML's events failing): the
        chips still report, but XIDs may go unseen, which the report must say."""
        problems = [f"XID {what}: {source.error}" for what, source in
                    (("kernel log", self._kernel_log), ("events", self._watcher))
                    if source is not None and source.error]
        if self.xids.warning:
            problems.append(self.xids.warning)
        return "; ".join(problems) or None

    # --- sampling ---

    def _handle(self, chip: ChipIdentity) -> Any:
        known = self._known.get(chip.index)
        if known is not None and known.identity.uuid == chip.uuid:
            return known.handle
        nv = self.nvml
        try:
            return nv.nvmlDeviceGetHandleByIndex(chip.index)
        except nv.NVMLError as e:
            if e.value == _ERR_GPU_IS_LOST:
                raise CollectorError(f"GPU lost: fell off the bus (NVML: {e})") from None
            raise CollectorError(f"NVML has no handle for GPU {chip.index}: {e}") from None

    def sample_chip(self, chip: ChipIdentity) -> ChipReport:
        if not self._initialised:
            self._ensure_init()
        handle = self._handle(chip)
        self._poll_xids()
        reads = _Reads(self.nvml, handle)
        try:
            report = self._read(chip, reads)
        except _Lost as e:
            raise CollectorError(f"GPU lost: fell off the bus (NVML: {e})") from None
        if reads.ok == 0 and reads.errors:
            report.error = f"NVML: every reading failed ({reads.errors[0]})"
        return report

    def _read(self, chip: ChipIdentity, r: _Reads) -> ChipReport:
        nv = self.nvml
        g = GpuDetails()
        rep = ChipReport(index=chip.index, kind="gpu", vendor="nvidia", model=chip.model,
                         uuid=chip.uuid, pci_bus_id=chip.pci_bus_id, sampled_at=self._clock(), gpu=g)
        st = self._static.setdefault(chip.uuid or f"#{chip.index}", _Static())

        if not st.serial_read:  # identity, read once, and not a reading: not counted in r.ok
            serial = _Reads(nv, r.handle).call("nvmlDeviceGetSerial", quiet=True)
            st.serial, st.serial_read = (_text(serial) if serial else None), True
        g.serial = st.serial
        temp = r.call("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU)
        rep.temperature_c = r.plausible("temperature", temp, -40, 200)  # 65535: no reading
        fields = r.call("nvmlDeviceGetFieldValues", [_FI_DEV_MEMORY_TEMP, _FI_DEV_NVLINK_LINK_COUNT])
        if fields is not None:
            rep.memory_temperature_c = _field_number(fields[0])
            if st.nvlinks is None:
                links = _field_number(fields[1])
                st.nvlinks = None if links is None else int(links)
        util = r.call("nvmlDeviceGetUtilizationRates")
        if util is not None:
            rep.utilization_pct = r.plausible("utilization", util.gpu, 0, 100)
            rep.memory_utilization_pct = r.plausible("memory utilization", util.memory, 0, 100)
        if st.gpm is None:
            support = _Reads(nv, r.handle).call("nvmlGpmQueryDeviceSupport", quiet=True)
            st.gpm = bool(getattr(support, "isSupportedDevice", 0))
        if st.gpm:
            g.graphics_active_pct, g.tensor_active_pct = self._gpm(r, st)
        mem = r.call("nvmlDeviceGetMemoryInfo")
        if mem is not None:
            rep.memory_used_bytes, rep.memory_total_bytes = int(mem.used), int(mem.total)
        power = r.call("nvmlDeviceGetPowerUsage")
        rep.power_w = None if power is None else power / 1000.0
        limit = r.call("nvmlDeviceGetEnforcedPowerLimit")
        rep.power_limit_w = None if limit is None else limit / 1000.0
        rep.sm_clock_mhz = r.call("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM)
        rep.mem_clock_mhz = r.call("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_MEM)

        corrected, uncorrected = nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        volatile, aggregate = nv.NVML_VOLATILE_ECC, nv.NVML_AGGREGATE_ECC
        g.ecc_volatile_corrected = r.call("nvmlDeviceGetTotalEccErrors", corrected, volatile)
        g.ecc_volatile_uncorrected = r.call("nvmlDeviceGetTotalEccErrors", uncorrected, volatile)
        g.ecc_aggregate_corrected = r.call("nvmlDeviceGetTotalEccErrors", corrected, aggregate)
        g.ecc_aggregate_uncorrected = r.call("nvmlDeviceGetTotalEccErrors", uncorrected, aggregate)
        rows = r.call("nvmlDeviceGetRemappedRows")
        if rows is not None:
            corr, unc, pending, failure = rows
            g.remapped_rows_correctable, g.remapped_rows_uncorrectable = int(corr), int(unc)
            g.row_remap_pending, g.row_remap_failure = bool(pending), bool(failure)
        retired = r.call("nvmlDeviceGetRetiredPagesPendingStatus")
        g.retired_pages_pending = None if retired is None else bool(retired)

        reasons = r.call_first(("nvmlDeviceGetCurrentClocksEventReasons",
                                "nvmlDeviceGetCurrentClocksThrottleReasons"))
        if reasons is not None:
            g.throttle_reasons = [name for name, bit in THROTTLE_REASONS if int(reasons) & bit]

        g.pcie_link_gen = r.call("nvmlDeviceGetCurrPcieLinkGeneration")
        g.pcie_link_width = r.call("nvmlDeviceGetCurrPcieLinkWidth")
        if st.pcie_gen_max is None:
            st.pcie_gen_max = r.call("nvmlDeviceGetMaxPcieLinkGeneration")
        if st.pcie_width_max is None:
            st.pcie_width_max = r.call("nvmlDeviceGetMaxPcieLinkWidth")
        g.pcie_link_gen_max, g.pcie_link_width_max = st.pcie_gen_max, st.pcie_width_max
        g.pcie_replay_count = r.call("nvmlDeviceGetPcieReplayCounter")

        if st.nvlinks is None:
            st.nvlinks = self._count_links(r)
        if st.nvlinks:
            states = [r.call("nvmlDeviceGetNvLinkState", link) for link in range(st.nvlinks)]
            known = [s for s in states if s is not None]
            if known:
                g.nvlink_links_total = st.nvlinks
                g.nvlink_links_up = sum(1 for s in known if s == nv.NVML_FEATURE_ENABLED)
            if st.nvlink_errors:
                self._nvlink_errors(g, r, st)

        energy = r.call("nvmlDeviceGetTotalEnergyConsumption")
        g.energy_mj = None if energy is None else int(energy)
        g.encoder_utilization_pct = _engine_util(r, "nvmlDeviceGetEncoderUtilization")
        g.decoder_utilization_pct = _engine_util(r, "nvmlDeviceGetDecoderUtilization")

        mode = r.call("nvmlDeviceGetPersistenceMode")
        g.persistence_mode = None if mode is None else mode == nv.NVML_FEATURE_ENABLED
        if st.slowdown_c is None:
            v = r.call("nvmlDeviceGetTemperatureThreshold", nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            st.slowdown_c = None if v is None else float(v)
        if st.shutdown_c is None:
            v = r.call("nvmlDeviceGetTemperatureThreshold", nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
            st.shutdown_c = None if v is None else float(v)
        g.slowdown_temp_c, g.shutdown_temp_c = st.slowdown_c, st.shutdown_c

        key = pci_key(chip.pci_bus_id)
        if key is not None:
            recovery = r.call("nvmlDeviceGetFieldValues", [_FI_DEV_GET_GPU_RECOVERY_ACTION], quiet=True)
            self.xids.observe_chip(key, {
                "uuid": chip.uuid or None,
                "ecc_volatile_corrected": g.ecc_volatile_corrected,
                "ecc_volatile_uncorrected": g.ecc_volatile_uncorrected,
                "row_remap_pending": g.row_remap_pending,
                "retired_pages_pending": g.retired_pages_pending,
                "recovery_action": None if not recovery else _field_int(recovery[0]),
            })
            snap = self.xids.snapshot(key)
            g.xid_counts, g.xid_total, g.last_xid = snap.counts, snap.total, snap.last
        return rep

    def _gpm(self, r: _Reads, st: _Static) -> tuple[float | None, float | None]:
        """GPM's activity shares between the previous sample and this one (Hopper and later; the
        first sample has nothing to compare with). Two NVML sample buffers per GPU, allocated once,
        always referenced (one holds the previous sample, the other is filled next): a failing call
        loses none of them, and close() frees both."""
        nv = self.nvml
        try:
            if st.gpm_spare is None:
                st.gpm_spare = nv.nvmlGpmSampleAlloc()
            cur = st.gpm_spare
            nv.nvmlGpmSampleGet(r.handle, cur)
            prev = st.gpm_prev
            st.gpm_prev, st.gpm_spare = cur, prev  # this sample is the next one's previous
            if prev is None:
                return None, None
            mg = nv.c_nvmlGpmMetricsGet_t()
            mg.version, mg.numMetrics = nv.NVML_GPM_METRICS_GET_VERSION, 2
            mg.sample1, mg.sample2 = prev, cur
            mg.metrics[0].metricId = nv.NVML_GPM_METRIC_GRAPHICS_UTIL
            mg.metrics[1].metricId = nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL
            nv.nvmlGpmMetricsGet(mg)
        except nv.NVMLError as e:
            if e.value == _ERR_GPU_IS_LOST:
                raise _Lost(str(e)) from None
            if e.value in (_ERR_NOT_SUPPORTED, _ERR_FUNCTION_NOT_FOUND):
                st.gpm = False
            else:
                r.errors.append(f"GPM: {e}")
            return None, None
        except AttributeError:  # a pynvml (or a recording) without GPM
            st.gpm = False
            return None, None
        r.ok += 1
        graphics, tensor = (r.plausible(what, m.value, 0, 100) if m.nvmlReturn == 0 else None
                            for what, m in zip(("GPM graphics activity", "GPM tensor activity"),
                                               mg.metrics[:2], strict=True))
        return graphics, tensor

    def _nvlink_errors(self, g: GpuDetails, r: _Reads, st: _Static) -> None:
        """Each NVLink error counter summed over the links (dcgm-exporter's *_TOTAL fields); None
        where no link answered that counter."""
        nv = self.nvml
        answered, errors_before = False, len(r.errors)
        for attr, counter in (("nvlink_crc_flit_errors", nv.NVML_NVLINK_ERROR_DL_CRC_FLIT),
                              ("nvlink_crc_data_errors", nv.NVML_NVLINK_ERROR_DL_CRC_DATA),
                              ("nvlink_replay_errors", nv.NVML_NVLINK_ERROR_DL_REPLAY),
                              ("nvlink_recovery_errors", nv.NVML_NVLINK_ERROR_DL_RECOVERY)):
            values = [r.call("nvmlDeviceGetNvLinkErrorCounter", link, counter)
                      for link in range(st.nvlinks or 0)]
            known = [int(v) for v in values if v is not None]
            if known:
                answered = True
                setattr(g, attr, sum(known))
        # Stop asking only when NVML said "not supported" everywhere, not after a passing failure.
        if not answered and len(r.errors) == errors_before:
            st.nvlink_errors = False

    def _count_links(self, r: _Reads) -> int:
        """NVLinks present, when the link-count field is not available: probe until NVML says no."""
        n = 0
        while n < self.nvml.NVML_NVLINK_MAX_LINKS:
            if r.call("nvmlDeviceGetNvLinkState", n, quiet=True) is None:
                break
            n += 1
        return n


def _engine_util(r: _Reads, fn: str) -> float | None:
    """NVENC/NVDEC busy %: NVML answers [utilisation, sampling period in us]."""
    answer = r.call(fn)
    if answer is None:
        return None
    try:
        value = answer[0]
    except (TypeError, IndexError):
        r.errors.append(f"{fn}: unexpected answer {answer!r}")
        return None
    return r.plausible(fn, value, 0, 100)


class _Reads:
    """Calls NVML for one chip, turning per-field failures into None and counting them."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self.ok = 0
        self.errors: list[str] = []

    def call(self, fn: str, *args: Any, quiet: bool = False) -> Any:
        nv = self.nvml
        func = getattr(nv, fn, None)
        if func is None:  # an older pynvml without this function
            return None
        try:
            value = func(self.handle, *args)
        except nv.NVMLError as e:
            if e.value == _ERR_GPU_IS_LOST:
                raise _Lost(str(e)) from None
            if e.value not in (_ERR_NOT_SUPPORTED, _ERR_INVALID_ARGUMENT) and not quiet:
                self.errors.append(f"{fn}: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - a binding's bug: this field is lost, not the chip
            self.errors.append(f"{fn}: {type(e).__name__}: {e}")
            return None
        self.ok += 1
        return value

    def plausible(self, what: str, value: Any, lo: float, hi: float) -> float | None:
        """``value`` as a float, or None (and an error noted) when NVML's answer cannot be real."""
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not lo <= number <= hi:  # also NaN
            self.errors.append(f"{what}: implausible reading {value!r}")
            return None
        return number

    def call_first(self, fns: tuple[str, ...], *args: Any) -> Any:
        """The first of ``fns`` this pynvml and driver have (newer names first)."""
        nv = self.nvml
        for fn in fns:
            if not hasattr(nv, fn):
                continue
            try:
                value = getattr(nv, fn)(self.handle, *args)
            except nv.NVMLError as e:
                if e.value == _ERR_GPU_IS_LOST:
                    raise _Lost(str(e)) from None
                if e.value == _ERR_FUNCTION_NOT_FOUND:
                    continue  # the driver predates this name: try the older one
                if e.value != _ERR_NOT_SUPPORTED:
                    self.errors.append(f"{fn}: {e}")
                return None
            except Exception as e:  # noqa: BLE001 - as in call()
                self.errors.append(f"{fn}: {type(e).__name__}: {e}")
                return None
            self.ok += 1
            return value
        return None
