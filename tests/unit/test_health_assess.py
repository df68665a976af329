"""assess(): checks in, chip and node status out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fleet_agent.health import CHIP_CHECKS, HealthConfig, assess
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
    parse_node_report,
)

NOW = 1_700_000_000.0


def chip(index: int = 0, **fields: Any) -> ChipReport:
    gpu = GpuDetails(slowdown_temp_c=90.0, shutdown_temp_c=92.0, ecc_volatile_uncorrected=0,
                     pcie_link_gen=4, pcie_link_gen_max=4, pcie_link_width=16, pcie_link_width_max=16)
    for key in list(fields):
        if key in GpuDetails.__dataclass_fields__:
            setattr(gpu, key, fields.pop(key))
    base: dict[str, Any] = dict(index=index, kind="gpu", vendor="nvidia", model="NVIDIA A100-SXM4-80GB",
                                uuid=f"GPU-{index}", pci_bus_id=f"0000:{index:02x}:00.0",
                                sampled_at=NOW - 1, temperature_c=40.0, utilization_pct=10.0, gpu=gpu)
    base.update(fields)
    return ChipReport(**base)


def report(chips: list[ChipReport], **fields: Any) -> NodeReport:
    base: dict[str, Any] = dict(host="gpu-b-07", agent_version="0.1.0", sampled_at=NOW - 1, interval_s=5.0,
                                status=Status.UNKNOWN, chips_expected=None, chips=chips,
                                host_metrics=HostMetrics())
    base.update(fields)
    return NodeReport(**base)


def test_healthy_node() -> None:
    out = assess(report([chip(0), chip(1)]), HealthConfig(), NOW)
    assert out.status is Status.HEALTHY
    assert [c.status for c in out.chips] == [Status.HEALTHY, Status.HEALTHY]
    assert out.problems == [] and all(c.problems == [] for c in out.chips)


@pytest.mark.parametrize(("fields", "chip_status"), [
    ({"xid_counts": {"48": 1}}, Status.UNHEALTHY),
    ({"row_remap_pending": True}, Status.DEGRADED),
    ({"throttle_reasons": ["sw_power_cap"]}, Status.HEALTHY),      # info only
    ({"temperature_c": 86.0}, Status.DEGRADED),
    ({"stale": True}, Status.UNKNOWN),
    ({"error": "nvmlDeviceGetClockInfo: Timeout"}, Status.UNKNOWN),
    ({"stale": True, "row_remap_pending": True}, Status.UNKNOWN),   # unknown beats degraded
    ({"stale": True, "error": "GPU is lost"}, Status.UNHEALTHY),    # critical beats unknown
    ({"sampled_at": NOW - 16.0}, Status.UNKNOWN),                   # > 3 x 5 s interval
    ({"sampled_at": NOW - 14.0}, Status.HEALTHY),
])
def test_chip_status_rules(fields: dict[str, Any], chip_status: Status) -> None:
    out = assess(report([chip(0), chip(1, **fields)]), HealthConfig(), NOW)
    assert out.chips[0].status is Status.HEALTHY
    assert out.chips[1].status is chip_status
    # Node: the worst chip (healthy chips do not dilute it).
    assert out.status is chip_status


def test_info_problem_is_listed_without_changing_status() -> None:
    out = assess(report([chip(0, throttle_reasons=["sw_power_cap"])]), HealthConfig(), NOW)
    assert [p.severity for p in out.chips[0].problems] == [Severity.INFO]


def test_node_problems_set_node_status() -> None:
    out = assess(report([chip(0)]), HealthConfig(expected_chips=2), NOW)
    assert out.chips[0].status is Status.HEALTHY
    assert [p.check for p in out.problems] == ["chip_count"]
    assert out.status is Status.UNHEALTHY
    # A chip source that cannot be read: the collector check's warning, and the node is unknown
    # (fleet_agent.verdict.node_status; the sampler applied this rule after assess before).
    out = assess(report([chip(0)], collectors=[CollectorState("tpu", ok=False, error="boom")]),
                 HealthConfig(), NOW)
    assert [p.check for p in out.problems] == ["collector"]
    assert out.status is Status.UNKNOWN
    # The host collector failing says nothing about chips: only its warning counts.
    out = assess(report([chip(0)], collectors=[CollectorState("host", ok=False, error="boom")]),
                 HealthConfig(), NOW)
    assert out.status is Status.DEGRADED


def test_error_on_a_chip_without_stale_check_is_still_unknown() -> None:
    cfg = HealthConfig(disabled_checks=frozenset({"stale"}))
    out = assess(report([chip(0, error="nvmlDeviceGetPowerUsage: Unknown Error")]), cfg, NOW)
    assert out.chips[0].problems == []
    assert out.chips[0].status is Status.UNKNOWN


def test_disabled_checks_do_not_run() -> None:
    faulty = dict(xid_counts={"13": 1}, nvlink_links_up=0, nvlink_links_total=12)
    out = assess(report([chip(0, **faulty)]), HealthConfig(disabled_checks=frozenset({"nvlink"})), NOW)
    assert [p.check for p in out.chips[0].problems] == ["xid"]
    assert out.chips[0].status is Status.DEGRADED


def test_problems_are_ordered_by_severity_then_check() -> None:
    c = chip(0, xid_counts={"13": 1, "79": 1, "140": 1, "48": 2}, row_remap_pending=True, temperature_c=93.0,
             throttle_reasons=["sw_power_cap", "hw_thermal"])
    problems = assess(report([c]), HealthConfig(), NOW).chips[0].problems
    keys = [(p.severity.value, p.check) for p in problems]
    assert keys == [
        ("critical", "gpu_lost"), ("critical", "temperature"), ("critical", "xid"), ("critical", "xid"),
        ("critical", "xid"),
        ("warning", "row_remap"), ("warning", "throttle"), ("warning", "xid"),
        ("info", "throttle"),
    ]
    assert [p.message[:6] for p in problems if p.check == "xid"] == ["XID 48", "XID 79", "XID 14", "XID 13"]


def test_assess_replaces_earlier_results_and_is_deterministic() -> None:
    r = report([chip(0, row_remap_pending=True)])
    r.chips[0].problems = [Problem("old", Severity.CRITICAL, "from the last sample", Action.RMA)]
    first = json.dumps(assess(r, HealthConfig(), NOW).to_dict(), sort_keys=True)
    second = json.dumps(assess(r, HealthConfig(), NOW).to_dict(), sort_keys=True)
    assert first == second
    assert [p.check for p in r.chips[0].problems] == ["row_remap"]
    r.chips[0].gpu.row_remap_pending = False  # type: ignore[union-attr]
    assert assess(r, HealthConfig(), NOW).status is Status.HEALTHY


def test_assessed_report_is_valid_wire_schema() -> None:
    out = assess(report([chip(0, xid_counts={"79": 1}), chip(1, stale=True)]), HealthConfig(), NOW)
    back = parse_node_report(json.loads(json.dumps(out.to_dict())))
    assert back.status is Status.UNHEALTHY
    assert back.chips[0].problems == out.chips[0].problems
    assert back.chips[1].status is Status.UNKNOWN


def test_a_check_that_raises_becomes_a_problem_and_others_still_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
        raise KeyError("field")

    monkeypatch.setitem(CHIP_CHECKS, "nvlink", broken)
    out = assess(report([chip(0, row_remap_failure=True)]), HealthConfig(), NOW)
    checks = {p.check: p for p in out.chips[0].problems}
    assert checks["row_remap"].severity is Severity.CRITICAL
    assert checks["nvlink"].severity is Severity.WARNING
    assert "KeyError" in checks["nvlink"].message
    assert out.chips[0].status is Status.UNHEALTHY


def test_tpu_and_gpu_on_one_node() -> None:
    tpu = ChipReport(index=0, kind="tpu", vendor="google", model="TPU v4", uuid="tpu-0",
                     pci_bus_id="0000:00:05.0", sampled_at=NOW - 1, temperature_c=None)
    out = assess(report([tpu, chip(1, xid_counts={"31": 1})]), HealthConfig(), NOW)
    assert [c.status for c in out.chips] == [Status.HEALTHY, Status.DEGRADED]
    assert out.status is Status.DEGRADED
