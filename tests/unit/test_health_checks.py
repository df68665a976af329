"""Every health check, on both sides of each of its thresholds."""

from __future__ import annotations

from typing import Any

import pytest
from fleet_agent.health.checks import (
    chip_count,
    collector,
    driver,
    ecc_uncorrectable,
    gpu_lost,
    nvlink,
    pcie_link,
    readings,
    retired_pages,
    row_remap,
    stale,
    temperature,
    throttle,
    xid,
)
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import (
    Action,
    ChipReport,
    CollectorState,
    GpuDetails,
    HostMetrics,
    NodeReport,
    Problem,
    Severity,
    Status,
    TpuDetails,
)

NOW = 1_700_000_000.0
CFG = HealthConfig(stale_after_s=30.0)


def gpu_chip(index: int = 0, **gpu: Any) -> ChipReport:
    """An H100 reading that every check passes; ``gpu`` overrides GpuDetails fields, and the
    ChipReport fields temperature_c, utilization_pct, ... may be passed the same way."""
    chip_fields = {k: gpu.pop(k) for k in list(gpu) if k in ChipReport.__dataclass_fields__}
    details: dict[str, Any] = dict(
        ecc_volatile_corrected=0, ecc_volatile_uncorrected=0, row_remap_pending=False,
        row_remap_failure=False, retired_pages_pending=False, pcie_link_gen=5,
        pcie_link_gen_max=5, pcie_link_width=16, pcie_link_width_max=16, nvlink_links_up=18,
        nvlink_links_total=18, slowdown_temp_c=90.0, shutdown_temp_c=92.0,
    )
    details.update(gpu)
    base: dict[str, Any] = dict(
        index=index, kind="gpu", vendor="nvidia", model="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-{index:08d}", pci_bus_id=f"00000000:{index + 0x18:02X}:00.0",
        sampled_at=NOW - 1, temperature_c=45.0, memory_temperature_c=50.0,
        utilization_pct=90.0, gpu=GpuDetails(**details),
    )
    base.update(chip_fields)
    return ChipReport(**base)


def tpu_chip(**fields: Any) -> ChipReport:
    base: dict[str, Any] = dict(
        index=0, kind="tpu", vendor="google", model="TPU v5e", uuid="tpu-0", pci_bus_id="0000:00:04.0",
        sampled_at=NOW - 1, temperature_c=None, tpu=TpuDetails(duty_cycle_pct=50.0),
    )
    base.update(fields)
    return ChipReport(**base)


def node(chips: list[ChipReport], **fields: Any) -> NodeReport:
    base: dict[str, Any] = dict(
        host="gpu-a-01", agent_version="0.1.0", sampled_at=NOW - 1, interval_s=5.0,
        status=Status.UNKNOWN, chips_expected=None, chips=chips, host_metrics=HostMetrics(),
    )
    base.update(fields)
    return NodeReport(**base)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_healthy_h100_passes_every_chip_check() -> None:
    chip = gpu_chip()
    for module in (gpu_lost, xid, ecc_uncorrectable, row_remap, retired_pages, temperature,
                   throttle, pcie_link, nvlink, stale, readings):
        assert module.check(chip, CFG, NOW) == [], module.NAME


def test_gpu_only_checks_ignore_a_tpu() -> None:
    chip = tpu_chip()
    for module in (gpu_lost, xid, ecc_uncorrectable, row_remap, retired_pages, throttle,
                   pcie_link, nvlink, stale, temperature, readings):
        assert module.check(chip, CFG, NOW) == [], module.NAME


# --- chip_count ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("present", "expected", "severity"), [
    (7, 8, Severity.CRITICAL),
    (0, 8, Severity.CRITICAL),
    (8, 8, None),
    (9, 8, Severity.INFO),
])
def test_chip_count_against_config(present: int, expected: int, severity: Severity | None) -> None:
    report = node([gpu_chip(i) for i in range(present)])
    problems = chip_count.check_node(report, HealthConfig(expected_chips=expected), NOW)
    if severity is None:
        assert problems == []
    else:
        assert only(problems).severity is severity
        assert f"{present}" in problems[0].message and f"{expected}" in problems[0].message
    if severity is Severity.CRITICAL:
        assert problems[0].action is Action.REBOOT


def test_chip_count_unset_is_not_checked_and_report_value_is_the_fallback() -> None:
    report = node([gpu_chip(0)])
    assert chip_count.check_node(report, HealthConfig(), NOW) == []
    report.chips_expected = 2
    assert only(chip_count.check_node(report, HealthConfig(), NOW)).severity is Severity.CRITICAL
    # The health config wins over the report's value.
    assert chip_count.check_node(report, HealthConfig(expected_chips=1), NOW) == []


# --- collector ----------------------------------------------------------------------------------

def test_failed_collector_is_a_node_warning() -> None:
    report = node([], collectors=[CollectorState("nvml", ok=False, error="NVML init failed: Insufficient "
                                                 "Permissions"),
                                  CollectorState("host", ok=True)])
    problem = only(collector.check_node(report, CFG, NOW))
    assert problem.severity is Severity.WARNING
    assert "nvml" in problem.message and "Insufficient Permissions" in problem.message
    report.collectors[0] = CollectorState("nvml", ok=True)
    assert collector.check_node(report, CFG, NOW) == []


def test_a_driver_failure_is_the_driver_checks_unless_that_check_is_off() -> None:
    report = node([], collectors=[CollectorState("nvml", ok=False,
                                                 error="NVML init failed: Driver Not Loaded")])
    assert collector.check_node(report, CFG, NOW) == []
    off = HealthConfig(stale_after_s=30.0, disabled_checks=frozenset({"driver"}))
    assert "Driver Not Loaded" in only(collector.check_node(report, off, NOW)).message


# --- driver -------------------------------------------------------------------------------------

def _bindings_error(monkeypatch: pytest.MonkeyPatch) -> str:
    import sys

    from fleet_agent.collectors.base import CollectorError
    from fleet_agent.collectors.nvml import load_pynvml

    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(CollectorError) as failed:
        load_pynvml()
    return str(failed.value)


@pytest.mark.parametrize(("nvml_code", "severity", "action", "starts"), [
    (12, Severity.CRITICAL, Action.UPDATE_SOFTWARE,
     "NVML library not found: the NVIDIA driver is not installed"),
    (9, Severity.CRITICAL, Action.REBOOT, "NVIDIA driver not loaded: its library is installed but its kernel "
                                          "module is not running"),
    (18, Severity.CRITICAL, Action.REBOOT, "NVIDIA driver/library version mismatch: the kernel module still "
                                           "running is older or newer than the installed library"),
])
def test_each_driver_state_the_collector_reports_is_a_named_problem(
        nvml_code: int, severity: Severity, action: Action, starts: str) -> None:
    from fleet_agent.collectors.nvml import init_failure
    from fleet_agent.sim.fake_nvml import NVMLError

    error = init_failure(NVMLError(nvml_code))
    problem = only(driver.check_node(node([], collectors=[CollectorState("nvml", False, error)]), CFG, NOW))
    assert (problem.check, problem.severity, problem.action) == ("driver", severity, action)
    assert problem.message.startswith(starts)
    assert problem.message.endswith(f"(NVML: {NVMLError(nvml_code)})")


def test_missing_bindings_are_a_warning_with_their_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    error = _bindings_error(monkeypatch)
    problem = only(driver.check_node(node([], collectors=[CollectorState("nvml", False, error)]), CFG, NOW))
    assert (problem.severity, problem.action) == (Severity.WARNING, Action.UPDATE_SOFTWARE)
    assert problem.message.startswith("NVML bindings not installed")
    assert "fleetctl-agent[nvml]" in problem.message


@pytest.mark.parametrize(("error", "cause"), [
    # NVML's own words, as an older agent's collector passes them on
    ("NVML init failed: NVML Shared Library Not Found", "missing"),
    ("NVML init failed: Driver Not Loaded", "not_loaded"),
    ("NVML init failed: RM has detected an NVML/RM version mismatch.", "mismatch"),
    ("Failed to initialize NVML: Driver/library version mismatch", "mismatch"),
    ("nvidia-ml-py is not installed (pip install 'fleetctl-agent[nvml]')", "bindings"),
    # other failures stay the collector check's
    ("NVML init failed: Insufficient Permissions", None),
    ("NVML call timed out after 2.0s", None),
    ("GPU lost: fell off the bus (NVML: GPU is lost)", None),
    (None, None),
])
def test_driver_causes_from_collector_errors(error: str | None, cause: str | None) -> None:
    assert driver.driver_cause(error) == cause
    found = driver.check_node(node([], collectors=[CollectorState("nvml", False, error)]), CFG, NOW)
    assert [p.check for p in found] == (["driver"] if cause else [])


def test_only_a_failed_nvml_collector_is_judged_by_the_driver_check() -> None:
    report = node([], collectors=[CollectorState("tpu", False, "Driver Not Loaded"),
                                  CollectorState("nvml", True, "XID kernel log: Driver Not Loaded")])
    assert driver.check_node(report, CFG, NOW) == []


@pytest.mark.parametrize(("error", "status"), [
    ("NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is not installed "
     "(NVML: NVML Shared Library Not Found)", Status.UNHEALTHY),
    ("NVML bindings not installed: nvidia-ml-py is not installed in the agent's environment", Status.UNKNOWN),
])
def test_assess_a_node_with_a_broken_driver(error: str, status: Status) -> None:
    from fleet_agent.health import assess

    report = assess(node([], collectors=[CollectorState("nvml", False, error),
                                         CollectorState("host", True)]), CFG, NOW)
    assert report.status is status
    assert [p.check for p in report.problems] == ["driver"]  # not also a "collector failed" warning


# --- gpu_lost -----------------------------------------------------------------------------------

@pytest.mark.parametrize("error", ["NVML: GPU is lost", "nvmlDeviceGetTemperature: GpuIsLost",
                                   "GPU has fallen off the bus"])
def test_lost_error_is_critical_reboot(error: str) -> None:
    problem = only(gpu_lost.check(gpu_chip(error=error), CFG, NOW))
    assert (problem.severity, problem.action) == (Severity.CRITICAL, Action.REBOOT)


def test_xid_79_in_window_is_gpu_lost_and_other_errors_are_not() -> None:
    assert only(gpu_lost.check(gpu_chip(xid_counts={"79": 1}), CFG, NOW)).severity is Severity.CRITICAL
    assert gpu_lost.check(gpu_chip(xid_counts={"79": 0, "13": 4}), CFG, NOW) == []
    assert gpu_lost.check(gpu_chip(error="Timeout"), CFG, NOW) == []


# --- xid ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "severity", "action"), [
    (13, Severity.WARNING, Action.CHECK_APPLICATION),
    (31, Severity.WARNING, Action.CHECK_APPLICATION),
    (43, Severity.INFO, Action.NONE),
    (63, Severity.INFO, Action.NONE),
    (45, Severity.INFO, Action.NONE),
    (54, Severity.WARNING, Action.CHECK_HARDWARE),
    (78, Severity.WARNING, Action.UPDATE_SOFTWARE),
    (159, Severity.WARNING, Action.UPDATE_SOFTWARE),
    (57, Severity.WARNING, Action.CONTACT_SUPPORT),
])
def test_xid_by_table(code: int, severity: Severity, action: Action) -> None:
    problem = only(xid.check(gpu_chip(xid_counts={str(code): 2}), CFG, NOW))
    assert (problem.severity, problem.action) == (severity, action)
    assert problem.message.startswith(f"XID {code} x2 in the last 1h")


@pytest.mark.parametrize(("key", "severity", "action", "since"), [
    ("48", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("95", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("109", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("119", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("79", Severity.CRITICAL, Action.REBOOT, "since the host booted"),
    ("154", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("154:node_reboot", Severity.CRITICAL, Action.REBOOT, "since the host booted"),
    ("154:gpu_reset", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("154:drain_p2p", Severity.WARNING, Action.MONITOR, "since the GPU was last reset"),
    ("145:fatal", Severity.CRITICAL, Action.RESET_CHIP, "since the GPU was last reset"),
    ("145:nonfatal", Severity.WARNING, Action.MONITOR, "in the last 1h"),
])
def test_xid_needing_reset_or_reboot_says_what_clears_it(key: str, severity: Severity, action: Action,
                                                         since: str) -> None:
    problem = only(xid.check(gpu_chip(xid_counts={key: 1}), CFG, NOW))
    assert (problem.severity, problem.action) == (severity, action)
    assert problem.message.startswith(f"XID {key.split(':')[0]} x1 {since}: ")


def test_xid_outside_window_counts_nothing_and_unknown_code_is_a_warning() -> None:
    assert xid.check(gpu_chip(xid_counts={"48": 0}), CFG, NOW) == []
    problem = only(xid.check(gpu_chip(xid_counts={"9999": 1}), CFG, NOW))
    assert problem.severity is Severity.WARNING and "unknown XID 9999" in problem.message


def test_xid_override_and_order() -> None:
    cfg = HealthConfig(xid_severity_overrides={13: Severity.CRITICAL})
    problems = xid.check(gpu_chip(xid_counts={"79": 1, "13": 3, "abc": 1}), cfg, NOW)
    assert [p.severity for p in problems] == [Severity.WARNING, Severity.CRITICAL, Severity.CRITICAL]
    assert "abc" in problems[0].message
    assert problems[1].message.startswith("XID 13 ") and problems[2].message.startswith("XID 79 ")


# --- ecc_uncorrectable --------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "limit", "fails"), [(0, 0, False), (1, 0, True), (3, 3, False),
                                                       (4, 3, True), (None, 0, False)])
def test_ecc_uncorrectable(count: int | None, limit: int, fails: bool) -> None:
    problems = ecc_uncorrectable.check(gpu_chip(ecc_volatile_uncorrected=count),
                                       HealthConfig(ecc_volatile_uncorrected_max=limit), NOW)
    assert bool(problems) is fails
    if fails:
        assert (problems[0].severity, problems[0].action) == (Severity.CRITICAL, Action.RESET_CHIP)


def test_corrected_ecc_alone_is_fine() -> None:
    assert ecc_uncorrectable.check(gpu_chip(ecc_volatile_corrected=1000), CFG, NOW) == []


# --- row_remap / retired_pages ------------------------------------------------------------------

@pytest.mark.parametrize(("pending", "failure", "expected"), [
    (False, False, None),
    (True, False, (Severity.WARNING, Action.RESET_CHIP)),
    (False, True, (Severity.CRITICAL, Action.RMA)),
    (True, True, (Severity.CRITICAL, Action.RMA)),
    (None, None, None),
])
def test_row_remap(pending: bool | None, failure: bool | None,
                   expected: tuple[Severity, Action] | None) -> None:
    problems = row_remap.check(gpu_chip(row_remap_pending=pending, row_remap_failure=failure), CFG, NOW)
    if expected is None:
        assert problems == []
    else:
        problem = only(problems)
        assert (problem.severity, problem.action) == expected


@pytest.mark.parametrize(("pending", "fails"), [(True, True), (False, False), (None, False)])
def test_retired_pages(pending: bool | None, fails: bool) -> None:
    problems = retired_pages.check(gpu_chip(retired_pages_pending=pending), CFG, NOW)
    assert bool(problems) is fails
    if fails:
        assert (problems[0].severity, problems[0].action) == (Severity.WARNING, Action.RESET_CHIP)


# --- temperature --------------------------------------------------------------------------------

@pytest.mark.parametrize(("core", "severity"), [
    (84.9, None),               # below slowdown (90) - margin (5)
    (85.0, Severity.WARNING),   # at the margin
    (89.9, Severity.WARNING),
    (90.0, Severity.CRITICAL),  # at slowdown
    (92.0, Severity.CRITICAL),  # at shutdown
])
def test_temperature_against_chip_thresholds(core: float, severity: Severity | None) -> None:
    problems = temperature.check(gpu_chip(temperature_c=core), CFG, NOW)
    if severity is None:
        assert problems == []
    else:
        problem = only(problems)
        assert (problem.severity, problem.action) == (severity, Action.CHECK_COOLING)


def test_temperature_shutdown_message_and_margin_config() -> None:
    assert "shutdown" in only(temperature.check(gpu_chip(temperature_c=93.0), CFG, NOW)).message
    wide = HealthConfig(temperature_margin_c=10.0)
    assert only(temperature.check(gpu_chip(temperature_c=80.0), wide, NOW)).severity is Severity.WARNING


def test_temperature_defaults_per_kind_when_chip_reports_no_thresholds() -> None:
    cfg = HealthConfig(default_slowdown_temp_c={"gpu": 80.0, "tpu": 70.0},
                       default_shutdown_temp_c={"gpu": 85.0})
    chip = gpu_chip(temperature_c=80.0, slowdown_temp_c=None, shutdown_temp_c=None)
    assert only(temperature.check(chip, cfg, NOW)).severity is Severity.CRITICAL
    chip = gpu_chip(temperature_c=74.0, slowdown_temp_c=None, shutdown_temp_c=None)
    assert temperature.check(chip, cfg, NOW) == []
    assert only(temperature.check(tpu_chip(temperature_c=66.0), cfg, NOW)).severity is Severity.WARNING
    assert temperature.check(tpu_chip(temperature_c=64.0), cfg, NOW) == []
    # Only a shutdown threshold known: the margin is kept below it.
    only_shutdown = HealthConfig(default_slowdown_temp_c={}, default_shutdown_temp_c={"tpu": 100.0})
    assert only(temperature.check(tpu_chip(temperature_c=96.0), only_shutdown, NOW)).severity \
        is Severity.WARNING
    assert temperature.check(tpu_chip(temperature_c=94.0), only_shutdown, NOW) == []
    # A kind with no thresholds at all is not judged.
    assert temperature.check(tpu_chip(kind="npu", temperature_c=150.0), only_shutdown, NOW) == []


@pytest.mark.parametrize(("hbm", "fails"), [(94.9, False), (95.0, True), (None, False)])
def test_memory_temperature(hbm: float | None, fails: bool) -> None:
    problems = temperature.check(gpu_chip(memory_temperature_c=hbm), CFG, NOW)
    assert bool(problems) is fails
    if fails:
        assert problems[0].severity is Severity.WARNING and "memory" in problems[0].message


# --- throttle -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("reasons", "severities"), [
    ([], []),
    (["sw_power_cap"], [Severity.INFO]),
    (["hw_thermal"], [Severity.WARNING]),
    (["hw_power_brake"], [Severity.WARNING]),
    (["hw_slowdown", "hw_thermal", "sw_power_cap"], [Severity.WARNING, Severity.INFO]),
    (["gpu_idle"], []),
])
def test_throttle(reasons: list[str], severities: list[Severity]) -> None:
    problems = throttle.check(gpu_chip(throttle_reasons=reasons), CFG, NOW)
    assert [p.severity for p in problems] == severities
    for problem in problems:
        assert problem.action is (Action.NONE if problem.severity is Severity.INFO else Action.CHECK_COOLING)


def test_throttle_reasons_are_configurable() -> None:
    cfg = HealthConfig(throttle_reasons={"sw_power_cap": Severity.WARNING})
    assert only(throttle.check(gpu_chip(throttle_reasons=["sw_power_cap"]), cfg, NOW)).severity \
        is Severity.WARNING
    assert throttle.check(gpu_chip(throttle_reasons=["hw_thermal"]), cfg, NOW) == []


# --- pcie_link ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("gen", "width", "util", "fails"), [
    (5, 16, 90.0, 0),
    (1, 16, 0.0, 0),     # idle power saving: gen 1 is normal
    (1, 16, 49.9, 0),
    (4, 16, 50.0, 1),    # busy and below max gen
    (5, 8, 0.0, 1),      # narrow link counts even when idle
    (3, 8, 95.0, 2),
    (1, 16, None, 0),    # utilisation unknown: do not guess
])
def test_pcie_link(gen: int, width: int, util: float | None, fails: int) -> None:
    problems = pcie_link.check(gpu_chip(pcie_link_gen=gen, pcie_link_width=width, utilization_pct=util),
                               CFG, NOW)
    assert len(problems) == fails
    assert all(p.severity is Severity.WARNING for p in problems)


def test_pcie_width_check_can_be_turned_off() -> None:
    cfg = HealthConfig(pcie_check_width=False)
    assert pcie_link.check(gpu_chip(pcie_link_width=8, utilization_pct=0.0), cfg, NOW) == []


# --- nvlink -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("up", "total", "severity"), [
    (18, 18, None), (17, 18, Severity.WARNING), (1, 18, Severity.WARNING),
    (0, 18, Severity.CRITICAL), (0, 0, None), (None, None, None),
])
def test_nvlink(up: int | None, total: int | None, severity: Severity | None) -> None:
    problems = nvlink.check(gpu_chip(nvlink_links_up=up, nvlink_links_total=total), CFG, NOW)
    if severity is None:
        assert problems == []
    else:
        assert only(problems).severity is severity


# --- stale --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("age", "flag", "fails"), [
    (1.0, False, False), (30.0, False, False), (30.1, False, True), (1.0, True, True),
])
def test_stale(age: float, flag: bool, fails: bool) -> None:
    problems = stale.check(gpu_chip(sampled_at=NOW - age, stale=flag), CFG, NOW)
    assert bool(problems) is fails
    if fails:
        assert problems[0].severity is Severity.WARNING


def test_stale_reports_errors_but_leaves_lost_gpus_to_gpu_lost() -> None:
    problem = only(stale.check(gpu_chip(error="nvmlDeviceGetPowerUsage: Unknown Error"), CFG, NOW))
    assert "Unknown Error" in problem.message
    assert stale.check(gpu_chip(error="GPU is lost"), CFG, NOW) == []
    assert stale.check(gpu_chip(error="GPU lost: fell off the bus", stale=True), CFG, NOW) == []
    # A hung call: one problem that carries the sampler's error.
    problem = only(stale.check(gpu_chip(sampled_at=NOW - 40, stale=True,
                                        error="nvmlDeviceGetTemperature: no answer in 2s"), CFG, NOW))
    assert "for 40s" in problem.message and "no answer in 2s" in problem.message
    # No timestamp: only the sampler's flag can say stale.
    assert stale.check(gpu_chip(sampled_at=None), CFG, NOW) == []


# --- invalid_reading ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("temperature_c", -3.0), ("utilization_pct", 180.0), ("memory_used_bytes", -1),
    ("power_w", 1e300), ("memory_total_bytes", 10**30), ("ecc_volatile_uncorrected", 2**64 - 1),
    ("sampled_at", NOW + 86400.0), ("utilization_pct", float("nan")),
])
def test_an_impossible_reading_is_named_and_degrades_the_chip(field: str, value: Any) -> None:
    problem = only(readings.check(gpu_chip(**{field: value}), CFG, NOW))
    assert (problem.check, problem.severity) == ("invalid_reading", Severity.WARNING)
    assert f" {field} = " in problem.message or f".{field} = " in problem.message
    assert len(problem.message) < 200  # a thousand-digit number is shown short


def test_possible_readings_at_their_limits_pass() -> None:
    chip = gpu_chip(temperature_c=0.0, utilization_pct=100.4, memory_used_bytes=0, power_w=0.0)
    assert readings.check(chip, CFG, NOW) == []
    assert readings.check(tpu_chip(utilization_pct=100.0), CFG, NOW) == []
    assert readings.check(tpu_chip(tpu=TpuDetails(duty_cycle_pct=-1.0)), CFG, NOW)[0].message.startswith(
        "impossible reading tpu.duty_cycle_pct = -1 ")
    # More memory in use than there is: the one field that cannot be judged alone.
    over = only(readings.check(gpu_chip(memory_used_bytes=81, memory_total_bytes=80), CFG, NOW))
    assert "memory_used_bytes = 81 (expected 0 to 80)" in over.message


def test_impossible_host_metrics_are_a_node_problem() -> None:
    report = node([gpu_chip()], host_metrics=HostMetrics(cpu_pct=900.0, load1=-1.0,
                                                         temperatures_c={"nct6798/AUXTIN1": -128.0}))
    messages = [p.message for p in readings.check_node(report, CFG, NOW)]
    assert [m.split(" = ")[0] for m in messages] == ["impossible reading host_metrics.cpu_pct",
                                                     "impossible reading host_metrics.load1"]
