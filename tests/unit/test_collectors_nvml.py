"""The real NvmlCollector over the simulation's fake pynvml: every field, every fault."""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_agent.collectors import factory
from fleet_agent.collectors.base import ChipIdentity, CollectorError
from fleet_agent.collectors.nvml import NvmlCollector, load_pynvml
from fleet_agent.sim import builtin_scenario, load_scenario, parse_scenario


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class RunningClock:
    """The real clock plus an offset the test can jump (event waits still see time pass)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def scenario_doc(faults: list[dict[str, Any]], *, model: str = "H100-SXM5-80GB",
                 chips: int = 8) -> dict[str, Any]:
    return {
        "seed": 5,
        "groups": [{"name": "g", "count": 1, "kind": "gpu", "model": model, "chips": chips,
                    "load": {"base_pct": 80, "amplitude_pct": 0, "memory_used_pct": 50}}],
        "faults": faults,
    }


def collector_for(doc: dict[str, Any], clock: Clock | None = None, **kw: Any) -> tuple[NvmlCollector, Any]:
    sc = parse_scenario(doc, "test.yaml", clock=clock)
    host = sc.host(0)
    kw.setdefault("xid_events", "poll")
    return NvmlCollector(host.nvml, **kw), host


def by_index(chips: list[ChipIdentity]) -> dict[int, ChipIdentity]:
    return {c.index: c for c in chips}


def test_healthy_h100_fields_look_like_nvidia_smi() -> None:
    col, _ = collector_for(scenario_doc([]))
    chips = col.discover()
    assert len(chips) == 8
    assert {c.model for c in chips} == {"NVIDIA H100 80GB HBM3"}
    assert len({c.uuid for c in chips}) == 8 and all(c.uuid.startswith("GPU-") for c in chips)
    assert chips[0].pci_bus_id == "00000000:18:00.0"
    assert col.driver_version() == "535.183.06"

    rep = col.sample_chip(chips[0])
    g = rep.gpu
    assert g is not None
    assert (rep.kind, rep.vendor, rep.index, rep.error) == ("gpu", "nvidia", 0, None)
    assert rep.memory_total_bytes == 81559 * 1024 * 1024
    assert rep.memory_used_bytes is not None and 0 < rep.memory_used_bytes < rep.memory_total_bytes
    assert rep.power_limit_w == 700.0
    assert rep.power_w is not None and 72.0 <= rep.power_w <= 700.0
    assert rep.temperature_c is not None and 25 <= rep.temperature_c <= 80
    assert rep.memory_temperature_c is not None and rep.memory_temperature_c > rep.temperature_c
    assert rep.utilization_pct == 80.0 and rep.memory_utilization_pct is not None
    assert rep.sm_clock_mhz == 1980 and rep.mem_clock_mhz == 2619
    assert (g.ecc_volatile_corrected, g.ecc_volatile_uncorrected, g.ecc_aggregate_uncorrected) == (0, 0, 0)
    assert g.ecc_aggregate_corrected is not None
    assert (g.row_remap_pending, g.row_remap_failure, g.remapped_rows_uncorrectable) == (False, False, 0)
    assert g.retired_pages_pending is None  # H100 remaps rows; page retirement is NotSupported
    assert g.throttle_reasons == []
    assert (g.pcie_link_gen, g.pcie_link_gen_max, g.pcie_link_width, g.pcie_link_width_max) == (5, 5, 16, 16)
    assert g.pcie_replay_count == 0
    assert (g.nvlink_links_up, g.nvlink_links_total) == (18, 18)
    assert g.persistence_mode is True
    assert (g.slowdown_temp_c, g.shutdown_temp_c) == (87.0, 92.0)
    assert (g.xid_counts, g.xid_total, g.last_xid) == ({}, 0, None)


def test_pcie_card_without_nvlink_or_hbm_leaves_those_fields_none() -> None:
    col, _ = collector_for(scenario_doc([], model="L4", chips=2))
    rep = col.sample_chip(col.discover()[1])
    assert rep.model == "NVIDIA L4" and rep.power_limit_w == 72.0
    assert rep.memory_temperature_c is None  # GDDR: no memory temperature sensor
    assert rep.gpu is not None
    assert (rep.gpu.nvlink_links_up, rep.gpu.nvlink_links_total) == (None, None)
    assert rep.gpu.pcie_link_gen_max == 4


def test_older_chip_reports_retired_pages_but_not_row_remapping() -> None:
    col, _ = collector_for(scenario_doc([], model="T4", chips=1))
    g = col.sample_chip(col.discover()[0]).gpu
    assert g is not None
    assert g.retired_pages_pending is False
    assert g.row_remap_pending is None and g.remapped_rows_uncorrectable is None


def test_faults_scenario_every_fault_shows_on_its_chip() -> None:
    sc = load_scenario(builtin_scenario("faults"), clock=Clock())
    host = sc.host(0)
    col = NvmlCollector(host.nvml, xid_events="poll")
    chips = by_index(col.discover())
    try:
        # 0: fell off the bus, before the agent ever saw it: listed by index, sampling says lost
        assert chips[0].model == "unknown" and chips[0].uuid == ""
        with pytest.raises(CollectorError, match="GPU lost: fell off the bus"):
            col.sample_chip(chips[0])
        # 1: XID 48 and two uncorrectable ECC errors
        g1 = col.sample_chip(chips[1]).gpu
        assert g1 is not None
        assert g1.xid_counts == {"48": 1} and g1.last_xid == 48 and g1.xid_total == 1
        assert g1.ecc_volatile_uncorrected == 2 and g1.ecc_aggregate_uncorrected == 2
        # 2: row remap pending; 3: row remap failure and retired pages pending
        g2 = col.sample_chip(chips[2]).gpu
        g3 = col.sample_chip(chips[3]).gpu
        assert g2 is not None and g3 is not None
        assert (g2.row_remap_pending, g2.row_remap_failure) == (True, False)
        assert (g3.row_remap_pending, g3.row_remap_failure, g3.retired_pages_pending) == (False, True, True)
        # 4: thermal throttling at 89 C (slowdown is 87), clocks cut; XID 13 once so far
        r4 = col.sample_chip(chips[4])
        assert r4.gpu is not None
        assert r4.temperature_c == 89.0
        assert set(r4.gpu.throttle_reasons) == {"hw_thermal", "sw_thermal"}
        assert r4.sm_clock_mhz is not None and r4.sm_clock_mhz < 1980
        assert r4.gpu.xid_counts == {"13": 1}
        # 5: PCIe trained at Gen3 x8; temperature call fails Unknown, utilisation Timeout
        r5 = col.sample_chip(chips[5])
        assert r5.gpu is not None
        assert (r5.gpu.pcie_link_gen, r5.gpu.pcie_link_gen_max) == (3, 5)
        assert (r5.gpu.pcie_link_width, r5.gpu.pcie_link_width_max) == (8, 16)
        assert r5.gpu.pcie_replay_count and r5.gpu.pcie_replay_count > 0
        assert r5.temperature_c is None and r5.utilization_pct is None
        assert r5.power_w is not None and r5.error is None  # the other fields are still read
        # 6: two NVLinks down; power and field values NotSupported -> None
        r6 = col.sample_chip(chips[6])
        assert r6.gpu is not None
        assert (r6.gpu.nvlink_links_up, r6.gpu.nvlink_links_total) == (16, 18)
        assert r6.power_w is None and r6.memory_temperature_c is None
        assert r6.power_limit_w == 700.0
    finally:
        host.release_hangs()
        col.close()


def test_xid_from_gpu_lost_is_counted_and_lost_chip_keeps_identity() -> None:
    clock = Clock()
    col, _ = collector_for(scenario_doc([{"kind": "gpu_lost", "group": "g", "hosts": [0],
                                          "chips": [2], "at": 30}]), clock)
    chips = by_index(col.discover())
    before = chips[2]
    assert before.uuid.startswith("GPU-")
    assert col.sample_chip(before).error is None
    clock.t += 31
    after = by_index(col.discover())[2]
    assert after == before  # the identity seen before it fell off
    with pytest.raises(CollectorError, match="GPU lost"):
        col.sample_chip(after)
    # the event API delivered XID 79 for it (the chip cannot be sampled, so read the tracker)
    snap = col.xids.snapshot("0000:3a:00")
    assert snap.counts == {"79": 1} and snap.last == 79


def test_unknown_error_on_every_call_marks_the_chip_unusable() -> None:
    every = ["nvmlDeviceGetTemperature", "nvmlDeviceGetFieldValues", "nvmlDeviceGetUtilizationRates",
             "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
             "nvmlDeviceGetClockInfo", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetRemappedRows",
             "nvmlDeviceGetRetiredPagesPendingStatus", "nvmlDeviceGetCurrentClocksEventReasons",
             "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetCurrPcieLinkGeneration",
             "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
             "nvmlDeviceGetMaxPcieLinkWidth", "nvmlDeviceGetPcieReplayCounter",
             "nvmlDeviceGetNvLinkState", "nvmlDeviceGetPersistenceMode",
             "nvmlDeviceGetTemperatureThreshold", "nvmlDeviceGetNvLinkErrorCounter",
             "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetEncoderUtilization",
             "nvmlDeviceGetDecoderUtilization"]
    col, _ = collector_for(scenario_doc([{"kind": "nvml_error", "group": "g", "hosts": [0], "chips": [1],
                                          "error": "unknown", "functions": every}]))
    chips = col.discover()
    rep = col.sample_chip(chips[1])
    assert rep.error is not None and "Unknown Error" in rep.error
    assert rep.temperature_c is None and rep.power_w is None and rep.gpu is not None
    assert rep.gpu.pcie_link_gen is None
    assert col.sample_chip(chips[0]).error is None


def test_hung_call_blocks_until_released() -> None:
    col, host = collector_for(scenario_doc([{"kind": "hang", "group": "g", "hosts": [0], "chips": [3]}]))
    chips = col.discover()  # identity calls answer even on the hung chip
    assert chips[3].uuid.startswith("GPU-")
    done = threading.Event()
    result: list[Any] = []

    def sample() -> None:
        result.append(col.sample_chip(chips[3]))
        done.set()

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    assert not done.wait(0.3)  # blocked, as a wedged driver call would be
    assert col.sample_chip(chips[2]).error is None  # other chips are not held up
    host.release_hangs()
    assert done.wait(5)
    assert result[0].temperature_c is not None


def test_hang_for_seconds_ends_by_itself() -> None:
    clock = Clock()
    col, _ = collector_for(scenario_doc([{"kind": "hang", "group": "g", "hosts": [0], "chips": [0],
                                          "seconds": 5, "at": 10}]), clock)
    chips = col.discover()
    assert col.sample_chip(chips[0]).temperature_c is not None  # before the hang starts
    clock.t += 16  # after it ended
    assert col.sample_chip(chips[0]).temperature_c is not None


@pytest.mark.parametrize(("fault", "said"), [
    ("driver_missing", "NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is not installed "
                       "(NVML: NVML Shared Library Not Found)"),
    ("driver_not_loaded", "NVIDIA driver not loaded: its library is installed but its kernel module is not "
                          "running (NVML: Driver Not Loaded)"),
    ("driver_mismatch", "NVIDIA driver/library version mismatch: the kernel module running is not the "
                        "installed library's version (NVML: RM has detected an NVML/RM version mismatch.)"),
])
def test_each_broken_driver_state_is_named_by_the_collector(fault: str, said: str) -> None:
    col, _ = collector_for({**scenario_doc([]), "faults": [{"kind": fault, "group": "g", "hosts": [0]}]})
    with pytest.raises(CollectorError) as failed:
        col.discover()
    assert str(failed.value) == said
    with pytest.raises(CollectorError):  # init is tried again on the next sample, not given up
        col.discover()


def test_a_driver_that_breaks_later_is_seen_at_the_next_init() -> None:
    clock = Clock()
    doc = {**scenario_doc([]), "faults": [{"kind": "driver_mismatch", "group": "g", "hosts": [0],
                                           "at": 60}]}
    sc = parse_scenario(doc, "test.yaml", clock=clock)
    assert len(NvmlCollector(sc.host(0).nvml, xid_events="off").discover()) == 8
    clock.t += 61  # an agent started after the driver update without a reboot
    with pytest.raises(CollectorError, match="version mismatch"):
        NvmlCollector(sc.host(0).nvml, xid_events="off").discover()


def test_other_init_failures_keep_nvmls_words() -> None:
    col, _ = collector_for({**scenario_doc([]), "faults": [
        {"kind": "driver_not_loaded", "group": "g", "hosts": [0]}]})
    col.nvml.nvmlInitWithFlags = lambda flags: (_ for _ in ()).throw(col.nvml.NVMLError(4))
    with pytest.raises(CollectorError, match=r"^NVML init failed: Insufficient Permissions$"):
        col.discover()


def test_tpu_host_has_no_nvml_library() -> None:
    sc = load_scenario(builtin_scenario("demo"))
    tpu_host = next(h for h in sc.hosts() if h.kind == "tpu")
    with pytest.raises(CollectorError, match="NVML Shared Library Not Found"):
        NvmlCollector(tpu_host.nvml, xid_events="off").discover()


def test_chip_missing_shrinks_the_count() -> None:
    col, _ = collector_for(scenario_doc([{"kind": "chip_missing", "group": "g", "hosts": [0],
                                          "chips": [7]}]))
    assert len(col.discover()) == 7


# The real nvidia-ml-py bindings over a stand-in for libnvidia-ml.so.1: each driver state is its own
# test, the same on every machine (a GPU host or not). The stand-in answers through the C calling
# shapes the bindings use (return codes, out-pointers, string buffers), so the bindings' own
# marshalling runs; functions it lacks are NVML_ERROR_FUNCTION_NOT_FOUND, as with an older driver.
NVML_SUCCESS, NVML_ERROR_DRIVER_NOT_LOADED = 0, 9


class FakeLibNvml:
    """libnvidia-ml.so.1 with ``gpus`` (uuid, name, bus id) and a driver version."""

    def __init__(self, gpus: list[tuple[str, str, str]], *, init_result: int = NVML_SUCCESS) -> None:
        self.gpus = gpus
        self.init_result = init_result
        self.calls: list[str] = []

    def nvmlInitWithFlags(self, flags: int) -> int:
        self.calls.append("init")
        return self.init_result

    def nvmlShutdown(self) -> int:
        self.calls.append("shutdown")
        return NVML_SUCCESS

    def nvmlSystemGetDriverVersion(self, buf: Any, size: Any) -> int:
        buf.value = b"550.54.15"
        return NVML_SUCCESS

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        count._obj.value = len(self.gpus)
        return NVML_SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        # the handle is an opaque pointer: index + 1 keeps it non-NULL
        slot = ctypes.cast(ctypes.pointer(device._obj), ctypes.POINTER(ctypes.c_void_p))
        slot.contents.value = index.value + 1
        return NVML_SUCCESS

    def _gpu(self, handle: Any) -> tuple[str, str, str]:
        return self.gpus[int(ctypes.cast(handle, ctypes.c_void_p).value or 0) - 1]

    def nvmlDeviceGetUUID(self, handle: Any, buf: Any, size: Any) -> int:
        buf.value = self._gpu(handle)[0].encode()
        return NVML_SUCCESS

    def nvmlDeviceGetName(self, handle: Any, buf: Any, size: Any) -> int:
        buf.value = self._gpu(handle)[1].encode()
        return NVML_SUCCESS

    def nvmlDeviceGetPciInfo_v3(self, handle: Any, info: Any) -> int:
        info._obj.busId = self._gpu(handle)[2].encode()
        return NVML_SUCCESS


def real_pynvml_over(monkeypatch: pytest.MonkeyPatch, lib: FakeLibNvml) -> Any:
    pynvml = load_pynvml()
    monkeypatch.setattr(pynvml, "CDLL", lambda name, *a, **k: lib)
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    return pynvml


def test_the_real_pynvml_with_its_library_but_no_kernel_module(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLibNvml([], init_result=NVML_ERROR_DRIVER_NOT_LOADED)
    col = NvmlCollector(real_pynvml_over(monkeypatch, lib), xid_events="off")
    with pytest.raises(CollectorError) as failed:
        col.discover()
    assert str(failed.value) == ("NVIDIA driver not loaded: its library is installed but its kernel module "
                                 "is not running (NVML: Driver Not Loaded)")
    with pytest.raises(CollectorError):  # tried again at the next sample, not given up
        col.discover()
    assert lib.calls == ["init", "init"]


def test_the_real_pynvml_over_a_working_driver_finds_the_chips(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = [("GPU-6e3f1c2a-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3", "00000000:1B:00.0"),
            ("GPU-6e3f1c2a-0000-4000-8000-000000000002", "NVIDIA H100 80GB HBM3", "00000000:43:00.0")]
    lib = FakeLibNvml(gpus)
    col = NvmlCollector(real_pynvml_over(monkeypatch, lib), xid_events="off")
    chips = col.discover()
    assert [(c.index, c.uuid, c.model, c.pci_bus_id) for c in chips] == [
        (i, uuid, name, bus) for i, (uuid, name, bus) in enumerate(gpus)]
    assert col.driver_version() == "550.54.15"
    col.close()
    assert lib.calls == ["init", "shutdown"]


def test_load_pynvml_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(CollectorError, match=r"^NVML bindings not installed: nvidia-ml-py is not installed"):
        load_pynvml()


def test_the_real_pynvml_without_its_library_says_the_driver_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # nvidia-ml-py's own loader, made to find no libnvidia-ml.so.1 whatever this machine has.
    pynvml = load_pynvml()

    def no_library(name: str, *a: Any, **k: Any) -> Any:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(pynvml, "CDLL", no_library)
    monkeypatch.setattr(pynvml, "nvmlLib", None)
    with pytest.raises(CollectorError,
                       match=r"^NVML library not found .*\(NVML: NVML Shared Library Not Found\)$"):
        NvmlCollector(pynvml, xid_events="off").discover()


def test_xid_events_in_a_thread() -> None:
    doc = scenario_doc([{"kind": "xid", "group": "g", "hosts": [0], "chips": [4], "code": 31},
                        {"kind": "xid", "group": "g", "hosts": [0], "chips": [4], "code": 43, "at": 60}])
    clock = RunningClock()  # runs on, and the test jumps it: the second XID is due only when it says
    sc = parse_scenario(doc, "t.yaml", clock=clock)
    col = NvmlCollector(sc.host(0).nvml, xid_events="thread", event_wait_ms=50)
    try:
        chips = col.discover()
        first = col.sample_chip(chips[4]).gpu
        assert first is not None and first.xid_counts == {"31": 1}  # due at start: in the first sample
        clock.offset += 61  # the second XID is due now; the event thread, not the sample, picks it up
        wait = threading.Event()
        for _ in range(100):
            g = col.sample_chip(chips[4]).gpu
            assert g is not None
            if len(g.xid_counts) == 2:
                break
            wait.wait(0.05)
        assert g.xid_counts == {"31": 1, "43": 1} and g.last_xid == 43 and g.xid_total == 2
        g0 = col.sample_chip(chips[0]).gpu
        assert g0 is not None and g0.xid_counts == {}
    finally:
        col.close()


def test_kernel_log_and_nvml_report_the_same_xid_once(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("NVRM: Xid (PCI:0000:3a:00): 48, pid=1234, name=python, DBE (double bit error)\n")
    doc = scenario_doc([{"kind": "xid", "group": "g", "hosts": [0], "chips": [2], "code": 48}])
    sc = parse_scenario(doc, "t.yaml")
    col = NvmlCollector(sc.host(0).nvml, xid_events="poll", kernel_log=str(log))
    try:
        chips = col.discover()
        wait = threading.Event()
        for _ in range(100):
            if col.xids.snapshot("0000:3a:00").total:
                break
            wait.wait(0.05)
        wait.wait(0.3)  # let the log reader catch up, if it were to double-count
        g = col.sample_chip(chips[2]).gpu
        assert g is not None and g.xid_counts == {"48": 1} and g.xid_total == 1
    finally:
        col.close()


def test_pci_bus_id_as_bytes_is_decoded() -> None:
    col, host = collector_for(scenario_doc([], chips=1))
    nv = host.nvml
    real = nv.nvmlDeviceGetPciInfo

    def bytes_pci(handle: Any) -> Any:
        info = real(handle)
        info.busId = info.busId.encode()  # older pynvml returned the raw char array
        return info

    nv.nvmlDeviceGetPciInfo = bytes_pci
    assert col.discover()[0].pci_bus_id == "00000000:18:00.0"


def test_scenario_yaml_with_faults_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_doc([{"kind": "thermal_throttle", "group": "g",
                                                  "hosts": [0], "chips": "all"}], chips=2)))
    col = NvmlCollector(load_scenario(path).host(0).nvml, xid_events="off")
    assert all(col.sample_chip(c).gpu.throttle_reasons for c in col.discover())  # type: ignore[union-attr]


def test_an_xid_already_in_the_kernel_log_shows_in_the_first_sample(tmp_path: Path) -> None:
    # `fleet-agent once`, and the first report after a start: the backlog is read before sampling.
    log = tmp_path / "kmsg"
    noise = "".join(f"usb 1-1: noise line {i}\n" for i in range(20_000))
    log.write_text(noise + "NVRM: Xid (PCI:0000:18:00): 79, pid=1, name=x, GPU has fallen off the bus.\n")
    col, _host = collector_for(scenario_doc([], chips=1), kernel_log=str(log))
    try:
        chips = col.discover()
        g = col.sample_chip(chips[0]).gpu
        assert g is not None and g.xid_counts == {"79": 1}
        assert col.warning() is None
    finally:
        col.close()


def test_an_unreadable_kernel_log_is_said_in_the_report(tmp_path: Path) -> None:
    from fleet_agent.health.checks import collector as collector_check
    from fleet_agent.health.config import HealthConfig
    from fleet_agent.schema import CollectorState, HostMetrics, NodeReport, Status

    col, _host = collector_for(scenario_doc([], chips=1), kernel_log=str(tmp_path / "missing"))
    try:
        col.sample_chip(col.discover()[0])
        warning = col.warning()
        assert warning is not None and "XID kernel log: cannot read" in warning
    finally:
        col.close()
    node = NodeReport(host="h", agent_version="x", sampled_at=1000.0, interval_s=5.0, status=Status.UNKNOWN,
                      chips=[], chips_expected=None, host_metrics=HostMetrics(),
                      collectors=[CollectorState("nvml", True, warning)])
    [problem] = collector_check.check_node(node, HealthConfig(), 1000.0)
    assert problem.severity.value == "warning" and "collector nvml in part: XID kernel log" in problem.message


def test_impossible_readings_are_absent_and_one_failing_field_loses_only_itself() -> None:
    col, host = collector_for(scenario_doc([], chips=1))
    nv = host.nvml
    chip = col.discover()[0]
    nv.nvmlDeviceGetTemperature = lambda handle, sensor: 65535  # NVML's "no reading"

    class Util:
        gpu, memory = 250, 40

    nv.nvmlDeviceGetUtilizationRates = lambda handle: Util()

    def broken(handle: Any) -> Any:
        raise RuntimeError("ctypes: unexpected struct size")  # not an NVMLError

    nv.nvmlDeviceGetPcieReplayCounter = broken
    rep = col.sample_chip(chip)
    assert rep.temperature_c is None and rep.utilization_pct is None and rep.memory_utilization_pct == 40.0
    assert rep.memory_used_bytes is not None and rep.power_w is not None  # the rest still read


def test_nvlink_errors_energy_and_video_engines_through_the_real_collector() -> None:
    clock = Clock(1000.0)
    col, _ = collector_for(scenario_doc([{"kind": "nvlink_down", "group": "g", "hosts": [0], "chips": [2],
                                          "links": [3, 7]}]), clock)
    chips = by_index(col.discover())
    healthy, broken = col.sample_chip(chips[0]).gpu, col.sample_chip(chips[2]).gpu
    assert healthy is not None and broken is not None
    assert (healthy.nvlink_crc_flit_errors, healthy.nvlink_crc_data_errors, healthy.nvlink_replay_errors,
            healthy.nvlink_recovery_errors) == (0, 0, 0, 0)
    # Two links down: each counter is the sum over the links, not one link's value.
    assert (broken.nvlink_crc_flit_errors, broken.nvlink_crc_data_errors, broken.nvlink_replay_errors,
            broken.nvlink_recovery_errors) == (10, 2, 24, 6)
    assert healthy.energy_mj is not None and healthy.energy_mj > 0
    assert healthy.encoder_utilization_pct == 0.0
    assert healthy.decoder_utilization_pct is not None and 0 <= healthy.decoder_utilization_pct <= 100
    first = healthy.energy_mj
    clock.t += 10
    later = col.sample_chip(chips[0]).gpu
    assert later is not None and later.energy_mj is not None and later.energy_mj > first


def test_new_fields_not_supported_are_none_and_not_an_error() -> None:
    col, _ = collector_for(scenario_doc([{"kind": "not_supported", "group": "g", "hosts": [0], "chips": [1],
                                          "functions": ["nvmlDeviceGetNvLinkErrorCounter",
                                                        "nvmlDeviceGetTotalEnergyConsumption",
                                                        "nvmlDeviceGetEncoderUtilization",
                                                        "nvmlDeviceGetDecoderUtilization"]}]))
    chips = by_index(col.discover())
    rep = col.sample_chip(chips[1])
    g = rep.gpu
    assert g is not None and rep.error is None
    assert (g.nvlink_crc_flit_errors, g.nvlink_crc_data_errors, g.nvlink_replay_errors,
            g.nvlink_recovery_errors, g.energy_mj, g.encoder_utilization_pct,
            g.decoder_utilization_pct) == (None,) * 7
    assert g.nvlink_links_up == 18  # the rest of the chip still reads


def test_a_pcie_card_without_nvlink_has_no_nvlink_error_counters() -> None:
    col, _ = collector_for(scenario_doc([], model="L4", chips=1))
    rep = col.sample_chip(col.discover()[0])
    assert rep.gpu is not None and rep.gpu.nvlink_replay_errors is None and rep.error is None


# --- which hosts get the NVML collector (collectors: auto) ------------------------------------------


def pci_tree(root: Path, devices: dict[str, tuple[str, str]]) -> str:
    """A sysfs-like /sys/bus/pci/devices: address -> (vendor, class), as the kernel writes them."""
    for addr, (vendor, pci_class) in devices.items():
        d = root / addr
        d.mkdir(parents=True)
        (d / "vendor").write_text(vendor + "\n")
        (d / "class").write_text(pci_class + "\n")
    return str(root)


def test_nvidia_gpus_on_the_pci_bus_are_display_class_devices_of_nvidias_vendor(tmp_path: Path) -> None:
    root = pci_tree(tmp_path / "pci", {
        "0000:18:00.0": ("0x10de", "0x030200"),  # a data center GPU (3D controller)
        "0000:3b:00.0": ("0x10de", "0x030000"),  # a VGA-class NVIDIA GPU
        "0000:05:00.0": ("0x10de", "0x068000"),  # an NVSwitch: NVIDIA, but a bridge
        "0000:00:02.0": ("0x8086", "0x030000"),  # another vendor's display
    })
    assert factory.nvidia_pci_gpus(root) == ["0000:18:00.0", "0000:3b:00.0"]
    assert factory.nvidia_pci_gpus(str(tmp_path / "absent")) is None


def test_auto_wants_nvml_where_the_bus_has_nvidia_gpus_even_without_a_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    no_library: list[str | None] = [None]
    monkeypatch.setattr(factory.ctypes.util, "find_library", lambda name: no_library[0])
    gpu_host = pci_tree(tmp_path / "gpu", {"0000:18:00.0": ("0x10de", "0x030200")})
    cpu_host = pci_tree(tmp_path / "cpu", {"0000:00:02.0": ("0x8086", "0x030000")})
    assert factory.nvml_present(gpu_host, str(dev))  # no library, no device node: still a GPU host
    assert not factory.nvml_present(cpu_host, str(dev))
    no_library[0] = "libnvidia-ml.so.1"
    # A library left on a host whose bus shows no NVIDIA GPU is no reason for a driver problem ...
    assert not factory.nvml_present(cpu_host, str(dev))
    # ... but where the bus cannot be read (a container) it is all there is to go by.
    assert factory.nvml_present(str(tmp_path / "unreadable"), str(dev))
    (dev / "nvidiactl").touch()
    assert factory.nvml_present(cpu_host, str(dev))


def test_a_listed_nvml_collector_without_bindings_fails_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet_agent.config import AgentConfig

    monkeypatch.setitem(sys.modules, "pynvml", None)
    [col] = factory.real_collectors(AgentConfig(collectors=("nvml",)), one_shot=True)
    with pytest.raises(CollectorError, match=r"^NVML bindings not installed"):
        col.discover()


def test_gpm_activity_from_the_second_sample_on_hopper_only() -> None:
    clock = Clock()
    col, host = collector_for(scenario_doc([]), clock)
    chips = col.discover()
    first = col.sample_chip(chips[0])
    assert first.gpu is not None and first.gpu.graphics_active_pct is None  # nothing to compare with yet
    clock.t += 5.0
    second = col.sample_chip(chips[0])
    assert second.gpu is not None
    busy, tensor = second.gpu.graphics_active_pct, second.gpu.tensor_active_pct
    assert busy == pytest.approx(80.0, abs=1) and tensor is not None and 0 < tensor < busy
    # The sample buffers are reused, never allocated per sample, and freed on close.
    allocated: list[Any] = []
    real_alloc = host.nvml.nvmlGpmSampleAlloc
    host.nvml.nvmlGpmSampleAlloc = lambda: allocated.append(real_alloc()) or allocated[-1]
    clock.t += 5.0
    assert col.sample_chip(chips[0]).gpu.graphics_active_pct is not None  # type: ignore[union-attr]
    assert allocated == []
    freed: list[Any] = []
    host.nvml.nvmlGpmSampleFree = freed.append
    col.close()
    assert len(freed) == 2

    a100, _ = collector_for(scenario_doc([], model="A100-SXM4-80GB"), Clock())
    chip = a100.discover()[0]
    for _ in range(2):
        rep = a100.sample_chip(chip)
        assert rep.gpu is not None and rep.gpu.graphics_active_pct is None and rep.error is None


def test_gpm_failing_leaves_the_fields_empty_and_the_chip_readable() -> None:
    clock = Clock()
    col, _ = collector_for(scenario_doc([{"kind": "nvml_error", "group": "g", "hosts": [0], "chips": [0],
                                          "error": "unknown", "functions": ["nvmlGpmSampleGet"]}]), clock)
    nvml = col.nvml
    live: set[int] = set()
    real_alloc, real_free = nvml.nvmlGpmSampleAlloc, nvml.nvmlGpmSampleFree

    def alloc() -> Any:
        sample = real_alloc()
        live.add(id(sample))
        return sample

    def free(sample: Any) -> None:
        live.discard(id(sample))
        real_free(sample)

    nvml.nvmlGpmSampleAlloc, nvml.nvmlGpmSampleFree = alloc, free
    chips = col.discover()
    for _ in range(20):
        clock.t += 5.0
        rep = col.sample_chip(chips[0])
        assert rep.gpu is not None and rep.gpu.graphics_active_pct is None
        assert rep.temperature_c is not None and rep.error is None
        assert len(live) <= 2  # NVML's buffers are not garbage-collected: none may be dropped
    col.close()
    assert live == set()


# --- the CUDA version the driver supports ------------------------------------------------------


@pytest.mark.parametrize(("number", "text"), [
    (12020, "12.2"), (11040, "11.4"), (12080, "12.8"), (13000, "13.0"), (12090, "12.9"),
    (0, None), (-1, None), (True, None), ("12020", None), (12.2, None), (None, None),
])
def test_nvmls_cuda_number_reads_as_nvidia_smi_shows_it(number: Any, text: str | None) -> None:
    from fleet_agent.collectors.nvml import cuda_version_text

    assert cuda_version_text(number) == text


def test_the_cuda_version_is_read_with_the_driver_version() -> None:
    doc = scenario_doc([])
    doc["groups"][0]["driver_version"] = "550.54.15"
    col, _ = collector_for(doc)
    assert col.cuda_driver_version() is None  # NVML not initialised yet: nothing asked
    col.discover()
    assert (col.driver_version(), col.cuda_driver_version()) == ("550.54.15", "12.4")


def test_a_driver_branch_without_a_cuda_version_leaves_it_none_and_the_chips_readable() -> None:
    doc = scenario_doc([])
    doc["groups"][0]["driver_version"] = "999.1"
    col, _ = collector_for(doc)
    chips = col.discover()
    assert len(chips) == 8 and col.driver_version() == "999.1" and col.cuda_driver_version() is None
    assert col.sample_chip(chips[0]).temperature_c is not None


class CudaLibNvml(FakeLibNvml):
    """The stand-in library, with the CUDA version calls a driver has (``_v2`` only in newer ones)."""

    def __init__(self, gpus: list[tuple[str, str, str]], *, v1: int | None, v2: int | None) -> None:
        super().__init__(gpus)
        self.v1, self.v2 = v1, v2

    def __getattr__(self, name: str) -> Any:
        # pynvml looks each function up by name: one this driver lacks is FUNCTION_NOT_FOUND
        value = {"nvmlSystemGetCudaDriverVersion": self.v1,
                 "nvmlSystemGetCudaDriverVersion_v2": self.v2}.get(name)
        if value is None:
            raise AttributeError(name)

        def call(out: Any) -> int:
            self.calls.append(name)
            out._obj.value = value
            return NVML_SUCCESS
        return call


@pytest.mark.parametrize(("v1", "v2", "said", "asked"), [
    (12040, 12040, "12.4", ["nvmlSystemGetCudaDriverVersion_v2"]),
    (12040, None, "12.4", ["nvmlSystemGetCudaDriverVersion"]),  # an older driver: no _v2
    (None, None, None, []),
])
def test_the_real_pynvml_reads_the_cuda_version_v2_first(
        monkeypatch: pytest.MonkeyPatch, v1: int | None, v2: int | None, said: str | None,
        asked: list[str]) -> None:
    gpus = [("GPU-6e3f1c2a-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3", "00000000:1B:00.0")]
    lib = CudaLibNvml(gpus, v1=v1, v2=v2)
    col = NvmlCollector(real_pynvml_over(monkeypatch, lib), xid_events="off")
    assert len(col.discover()) == 1
    assert (col.driver_version(), col.cuda_driver_version()) == ("550.54.15", said)
    assert [c for c in lib.calls if c.startswith("nvmlSystemGetCuda")] == asked
    col.close()
