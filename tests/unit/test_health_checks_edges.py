"""The health checks' exact verdicts: each problem's check name, severity, message and action, and the
boundaries of the impossible-reading rules.

Written against the mutants that survived the mutation run (docs/mutation.md): most existing tests
asserted a severity or a word of the message, so a wrong action or a garbled message passed.
"""

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
from fleet_agent.health.xid_codes import XID_TABLE
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
CFG = HealthConfig()


def _chip(gpu: GpuDetails | None = None, **fields: Any) -> ChipReport:
    base: dict[str, Any] = dict(index=0, kind="gpu", vendor="nvidia", model="NVIDIA H100", uuid="GPU-0",
                                pci_bus_id="0000:01:00.0", sampled_at=NOW - 1, temperature_c=40.0,
                                utilization_pct=10.0, gpu=gpu if gpu is not None else GpuDetails())
    base.update(fields)
    return ChipReport(**base)


def _node(chips: int = 0, collectors: list[CollectorState] | None = None, **fields: Any) -> NodeReport:
    fields.setdefault("chips_expected", None)
    fields.setdefault("host_metrics", HostMetrics())
    return NodeReport(host="gpu-a-01", agent_version="0.1.0", sampled_at=NOW, interval_s=5.0,
                      status=Status.UNKNOWN, chips=[_chip() for _ in range(chips)],
                      collectors=collectors or [], **fields)


def test_chip_count_missing_and_extra_chips() -> None:
    assert chip_count.check_node(_node(6, chips_expected=8), CFG, NOW) == [Problem(
        "chip_count", Severity.CRITICAL,
        "6 of 8 expected chips present: reboot, investigate the missing ones (PCIe, power, RMA)",
        Action.REBOOT)]
    assert chip_count.check_node(_node(9, chips_expected=8), CFG, NOW) == [Problem(
        "chip_count", Severity.INFO, "9 chips present, 8 expected: update expected_chips", Action.NONE)]
    assert chip_count.check_node(_node(8, chips_expected=8), CFG, NOW) == []
    assert chip_count.check_node(_node(2, chips_expected=None), CFG, NOW) == []


def test_collector_failed_or_in_part_in_name_order() -> None:
    report = _node(collectors=[CollectorState("tpu", ok=False), CollectorState("host", ok=True),
                               CollectorState("nvml", ok=True, error="kernel log unreadable")])
    assert collector.check_node(report, CFG, NOW) == [
        Problem("collector", Severity.WARNING, "collector nvml in part: kernel log unreadable",
                Action.MONITOR),
        Problem("collector", Severity.WARNING, "collector tpu failed: no reason given", Action.MONITOR),
    ]


def test_a_driver_failure_is_the_driver_checks_unless_that_check_is_off() -> None:
    failed = CollectorState("nvml", ok=False, error="NVML library not found")
    report = _node(collectors=[failed])
    assert collector.check_node(report, CFG, NOW) == []
    (problem,) = driver.check_node(report, CFG, NOW)
    assert (problem.check, problem.severity, problem.action) == ("driver", Severity.CRITICAL,
                                                                 Action.UPDATE_SOFTWARE)
    assert problem.message.endswith("; install the driver (NVML library not found)")
    off = HealthConfig(disabled_checks=frozenset({"driver"}))
    assert collector.check_node(report, off, NOW) == [Problem(
        "collector", Severity.WARNING, "collector nvml failed: NVML library not found", Action.MONITOR)]


def test_driver_detail_is_nvmls_own_words_or_the_error_but_none_for_missing_bindings() -> None:
    def message(error: str) -> str:
        (problem,) = driver.check_node(_node(collectors=[CollectorState("nvml", ok=False, error=error)]),
                                       CFG, NOW)
        return str(problem.message)

    assert message("nvmlInit failed (NVML: Driver Not Loaded)").endswith(
        "reinstall the driver for the running kernel (NVML: Driver Not Loaded)")
    assert message("NVML bindings not installed").endswith("on a GPU host)")
    # two failures, one problem each; a failure that names no driver state is not the driver's
    report = _node(collectors=[CollectorState("nvml", ok=False, error="timeout"),
                               CollectorState("nvml", ok=False, error="Driver/library version mismatch")])
    assert [p.action for p in driver.check_node(report, CFG, NOW)] == [Action.REBOOT]


@pytest.mark.parametrize(("up", "total", "expected"), [
    (0, 18, [Problem("nvlink", Severity.CRITICAL, "all 18 NVLink links down", Action.REBOOT)]),
    (16, 18, [Problem("nvlink", Severity.WARNING, "2 of 18 NVLink links down", Action.RESET_CHIP)]),
    (18, 18, []),
    (0, 0, []),  # no NVLink on this GPU
    (None, 18, []),
])
def test_nvlink(up: int | None, total: int, expected: list[Problem]) -> None:
    gpu = GpuDetails(nvlink_links_up=up, nvlink_links_total=total)
    assert nvlink.check(_chip(gpu), CFG, NOW) == expected


def test_pcie_link_width_and_generation() -> None:
    gpu = GpuDetails(pcie_link_width=8, pcie_link_width_max=16, pcie_link_gen=3, pcie_link_gen_max=5)
    assert pcie_link.check(_chip(gpu, utilization_pct=50.0), CFG, NOW) == [
        Problem("pcie_link", Severity.WARNING, "PCIe link is x8 of x16: reseat or check the slot",
                Action.REBOOT),
        Problem("pcie_link", Severity.WARNING, "PCIe link at gen 3 of gen 5 while 50% busy", Action.REBOOT),
    ]
    assert pcie_link.check(_chip(gpu, utilization_pct=49.9), HealthConfig(pcie_check_width=False), NOW) == []


def test_ecc_uncorrectable_exact_problem_and_threshold() -> None:
    assert ecc_uncorrectable.check(_chip(GpuDetails(ecc_volatile_uncorrected=2)), CFG, NOW) == [Problem(
        "ecc_uncorrectable", Severity.CRITICAL,
        "2 uncorrectable ECC error(s) since the driver loaded: drain and reset the GPU so the bad memory is "
        "remapped or retired", Action.RESET_CHIP)]
    lenient = HealthConfig(ecc_volatile_uncorrected_max=2)
    assert ecc_uncorrectable.check(_chip(GpuDetails(ecc_volatile_uncorrected=2)), lenient, NOW) == []


def test_gpu_lost_names_all_its_evidence() -> None:
    chip = _chip(GpuDetails(xid_counts={"79": 2}), error="nvmlDeviceGetTemperature: GPU is lost")
    assert gpu_lost.check(chip, CFG, NOW) == [Problem(
        "gpu_lost", Severity.CRITICAL,
        "GPU fell off the bus (nvmlDeviceGetTemperature: GPU is lost; XID 79 x2 in the last 1h): reboot "
        "(a GPU reset rarely recovers it); RMA if it recurs", Action.REBOOT)]
    assert gpu_lost.check(_chip(GpuDetails(), error="nvmlDeviceGetPower: Timeout"), CFG, NOW) == []


def test_memory_row_and_page_problems_exactly() -> None:
    assert row_remap.check(_chip(GpuDetails(row_remap_failure=True, row_remap_pending=True)), CFG, NOW) == [
        Problem("row_remap", Severity.CRITICAL,
                "row remapping failed: the GPU has run out of spare memory rows; replace it", Action.RMA)]
    assert row_remap.check(_chip(GpuDetails(row_remap_pending=True)), CFG, NOW) == [Problem(
        "row_remap", Severity.WARNING, "row remapping pending: reset the GPU to apply it", Action.RESET_CHIP)]
    assert retired_pages.check(_chip(GpuDetails(retired_pages_pending=True)), CFG, NOW) == [Problem(
        "retired_pages", Severity.WARNING,
        "memory pages pending retirement: reset the GPU (or reload the driver) to retire them",
        Action.RESET_CHIP)]


@pytest.mark.parametrize(("value", "shown"), [
    (True, "True"), ("x" * 50, repr("x" * 50)[:40]), (None, "None"),
    (10**12 - 1, "999999999999"), (10**12, "1e+12"), (-(10**12), "-1e+12"), (0.5, "0.5"), (-5.0, "-5"),
    (10**400, "1e+400+"), (-(10**400), "-1e+400+"),
])
def test_show_keeps_a_number_short(value: Any, shown: str) -> None:
    assert readings.show(value) == shown


@pytest.mark.parametrize(("value", "outside"), [
    (0.0, False), (101.0, False), (-0.001, True), (101.001, True), (float("nan"), True), ("50", True),
    (10**400, True),
])
def test_out_of_range_bounds_are_inclusive(value: Any, outside: bool) -> None:
    assert readings.out_of_range(value, 0.0, 101.0) is outside


@pytest.mark.parametrize(("fields", "plausible"), [
    ({}, True),
    ({"temperature_c": 0.0, "utilization_pct": 0.0, "power_w": 0.0}, True),
    ({"temperature_c": 200.0, "utilization_pct": 101.0, "power_w": 1e5}, True),
    ({"temperature_c": -0.5}, False), ({"temperature_c": 200.5}, False),
    ({"utilization_pct": -0.5}, False), ({"utilization_pct": 101.5}, False),
    ({"power_w": -1.0}, False), ({"power_w": 1e5 + 1}, False),
    ({"memory_used_bytes": 0, "memory_total_bytes": 2**60}, True),
    ({"memory_used_bytes": -1}, False), ({"memory_total_bytes": 2**60 + 1}, False),
    ({"memory_used_bytes": 2, "memory_total_bytes": 1}, False),
    ({"memory_used_bytes": 2, "memory_total_bytes": 0}, True),  # total unknown (0): not judged
    ({"memory_used_bytes": 2**60, "memory_total_bytes": 2**60}, True),  # all memory in use
    ({"memory_used_bytes": 5, "memory_total_bytes": 5}, True),
    ({"sampled_at": 0.0}, True), ({"sampled_at": 0.5}, True),
    ({"sampled_at": NOW + 60}, True), ({"sampled_at": NOW + 61}, False), ({"sampled_at": -1.0}, False),
])
def test_chip_plausible_at_the_bounds(fields: dict[str, Any], plausible: bool) -> None:
    chip = _chip(**fields)
    assert readings.chip_plausible(chip, NOW) is plausible
    assert (readings.chip_invalid(chip, NOW, details=False) == []) is plausible


def test_an_impossible_reading_names_field_value_and_range() -> None:
    chip = _chip(GpuDetails(pcie_link_width=2048, xid_counts={"13": -1}), temperature_c=-5.0)
    problems = readings.check(chip, CFG, NOW)
    assert [p.message.split(" (expected")[0] for p in problems] == [
        "impossible reading temperature_c = -5", "impossible reading gpu.pcie_link_width = 2048",
        "impossible reading gpu.xid_counts[13] = -1"]
    assert problems[0] == Problem(
        "invalid_reading", Severity.WARNING,
        "impossible reading temperature_c = -5 (expected 0 to 200): the driver, a sensor or the agent "
        "reports values that cannot be real", Action.MONITOR)
    host = readings.check_node(_node(host_metrics=HostMetrics(cpu_pct=250.0)), CFG, NOW)
    assert [p.message.split(" (")[0] for p in host] == ["impossible reading host_metrics.cpu_pct = 250"]


def test_stale_says_how_old_and_why_or_that_the_reading_failed() -> None:
    cfg = HealthConfig(stale_after_s=30.0)
    old = _chip(sampled_at=NOW - 120, error="nvmlDeviceGetPower: Timeout")
    assert stale.check(old, cfg, NOW) == [Problem(
        "stale", Severity.WARNING,
        "no fresh reading for 2m (nvmlDeviceGetPower: Timeout): a collector call hung or keeps failing; "
        "if it persists, check the driver (nvidia-smi) and reset the chip", Action.MONITOR)]
    (marked,) = stale.check(_chip(sampled_at=NOW + 5, stale=True), cfg, NOW)  # stamped later: no age
    assert marked.message.startswith("no fresh reading: a collector call hung")
    (zero,) = stale.check(_chip(sampled_at=NOW, stale=True), cfg, NOW)
    assert zero.message.startswith("no fresh reading for 0s: ")
    assert stale.check(_chip(sampled_at=NOW - 1, error="nvmlDeviceGetClockInfo: Timeout"), cfg, NOW) == [
        Problem("stale", Severity.WARNING, "reading failed: nvmlDeviceGetClockInfo: Timeout", Action.MONITOR)]
    assert stale.check(_chip(sampled_at=NOW - 1), cfg, NOW) == []


@pytest.mark.parametrize(("core", "gpu", "expected"), [
    (92.0, GpuDetails(slowdown_temp_c=90.0, shutdown_temp_c=92.0),
     Problem("temperature", Severity.CRITICAL, "core at 92 C, at or above the 92 C shutdown threshold",
             Action.CHECK_COOLING)),
    (90.0, GpuDetails(slowdown_temp_c=90.0, shutdown_temp_c=92.0),
     Problem("temperature", Severity.CRITICAL, "core at 90 C, at or above the 90 C slowdown threshold",
             Action.CHECK_COOLING)),
    (85.0, GpuDetails(slowdown_temp_c=90.0, shutdown_temp_c=92.0),
     Problem("temperature", Severity.WARNING, "core at 85 C, within 5 C of the 90 C slowdown threshold",
             Action.CHECK_COOLING)),
    # the GPU reports a shutdown but no slowdown threshold: the default slowdown (89 C) applies
    (84.0, GpuDetails(shutdown_temp_c=100.0),
     Problem("temperature", Severity.WARNING, "core at 84 C, within 5 C of the 89 C slowdown threshold",
             Action.CHECK_COOLING)),
    (91.0, GpuDetails(slowdown_temp_c=95.0, shutdown_temp_c=91.0),
     Problem("temperature", Severity.CRITICAL, "core at 91 C, at or above the 91 C shutdown threshold",
             Action.CHECK_COOLING)),
])
def test_temperature_exact_problems(core: float, gpu: GpuDetails, expected: Problem) -> None:
    assert temperature.check(_chip(gpu, temperature_c=core), CFG, NOW) == [expected]


def test_temperature_margin_below_shutdown_when_no_slowdown_is_known() -> None:
    cfg = HealthConfig(default_slowdown_temp_c={}, default_shutdown_temp_c={})
    chip = _chip(GpuDetails(shutdown_temp_c=100.0), temperature_c=96.0, memory_temperature_c=95.0)
    assert temperature.check(chip, cfg, NOW) == [
        Problem("temperature", Severity.WARNING, "core at 96 C, within 5 C of the 100 C shutdown threshold",
                Action.CHECK_COOLING),
        Problem("temperature", Severity.WARNING, "memory at 95 C, at or above its 95 C limit",
                Action.CHECK_COOLING)]
    assert temperature.thresholds(chip, cfg) == (None, 100.0)
    assert temperature.thresholds(_chip(GpuDetails()), CFG) == (89.0, 92.0)


def test_throttle_one_problem_per_severity_with_its_reasons_sorted() -> None:
    gpu = GpuDetails(throttle_reasons=["sw_thermal", "sw_power_cap", "hw_slowdown", "hw_slowdown",
                                       "gpu_idle"])
    assert throttle.check(_chip(gpu), CFG, NOW) == [
        Problem("throttle", Severity.WARNING,
                "clocks throttled by hw_slowdown, sw_thermal: check cooling and power delivery",
                Action.CHECK_COOLING),
        Problem("throttle", Severity.INFO, "clocks limited by sw_power_cap", Action.NONE)]


def test_xid_problems_one_per_key_in_code_order() -> None:
    counts = {"154:node_reboot": 1, "79": 0, "bogus": 2, "13": 3, "31": 1}
    problems = xid.check(_chip(GpuDetails(xid_counts=counts)), CFG, NOW)
    assert problems == [
        Problem("xid", Severity.WARNING, "XID source reported a code that is not a number: 'bogus'",
                Action.MONITOR),
        Problem("xid", Severity.WARNING, f"XID 13 x3 in the last 1h: {XID_TABLE[13].meaning}",
                Action.CHECK_APPLICATION),
        Problem("xid", Severity.WARNING, f"XID 31 x1 in the last 1h: {XID_TABLE[31].meaning}",
                Action.CHECK_APPLICATION),
        Problem("xid", Severity.CRITICAL,
                "XID 154 x1 since the host booted: the driver asks for: node reboot", Action.REBOOT),
    ]
    plain_and_qualified = xid.check(_chip(GpuDetails(xid_counts={"154:gpu_reset": 1, "154": 1})), CFG, NOW)
    assert [p.message.split(":")[0] for p in plain_and_qualified] == [
        "XID 154 x1 since the GPU was last reset", "XID 154 x1 since the GPU was last reset"]
    assert plain_and_qualified[1].message.endswith("the driver asks for: gpu reset")


def test_a_readings_time_and_its_bounds_are_named() -> None:
    (early,) = readings.chip_invalid(_chip(sampled_at=-1.0), NOW)
    assert (early.field, early.value, early.low, early.high) == ("sampled_at", -1.0, 0.0, NOW + 60)
    # without its node's time a reading may be any time after the epoch
    assert readings.chip_invalid(_chip(sampled_at=NOW * 10), None) == []
    (late,) = readings.chip_invalid(_chip(sampled_at=NOW + 61), NOW)
    assert late.message().startswith(f"impossible reading sampled_at = {NOW + 61:.6g} (expected 0 to ")


def test_xid_counts_keys_are_cut_to_sixteen_characters_in_the_field_name() -> None:
    (found,) = readings.chip_invalid(_chip(GpuDetails(xid_counts={"x" * 20: -3})), NOW)
    assert found.field == f"gpu.xid_counts[{'x' * 16}]" and found.value == -3


def test_a_tpu_chips_own_and_common_fields_are_both_judged() -> None:
    chip = _chip(None, kind="tpu", vendor="google", temperature_c=-1.0,
                 tpu=TpuDetails(duty_cycle_pct=250.0))
    chip.gpu = None
    assert [f.field for f in readings.chip_invalid(chip, NOW)] == ["temperature_c", "tpu.duty_cycle_pct"]


def test_several_info_throttle_reasons_share_one_problem() -> None:
    cfg = HealthConfig(throttle_reasons={"sw_power_cap": Severity.INFO, "gpu_idle": Severity.INFO})
    gpu = GpuDetails(throttle_reasons=["sw_power_cap", "gpu_idle"])
    assert throttle.check(_chip(gpu), cfg, NOW) == [
        Problem("throttle", Severity.INFO, "clocks limited by gpu_idle, sw_power_cap", Action.NONE)]


def test_xid_keys_that_are_not_numbers_come_first_and_equal_codes_keep_their_order() -> None:
    problems = xid.check(_chip(GpuDetails(xid_counts={"1": 1, "bogus": 1})), CFG, NOW)
    assert [p.message.split(":")[0] for p in problems] == [
        "XID source reported a code that is not a number", "XID 1 x1 in the last 1h"]
    # "13" and "013" are the same code: both shown, in the report's order (never compared as problems)
    same = xid.check(_chip(GpuDetails(xid_counts={"13": 1, "013": 2})), CFG, NOW)
    assert [p.message.split(":")[0] for p in same] == [
        "XID 13 x1 in the last 1h", "XID 13 x2 in the last 1h"]

