"""fleet_agent.verdict: the one place that turns problems and observations into a status, for the
agent (chips, node) and for fleetctl (a host in the fleet report, a host fit for work)."""

from __future__ import annotations

import pytest
from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status
from fleet_agent.verdict import (
    HOST_HEALTH_ORDER,
    HostHealth,
    chip_status,
    host_verdict,
    no_report,
    node_status,
    sort_problems,
    unfit_for_work,
    worse,
)

NOW = 1_800_000_000.0
WARN = Problem("temperature", Severity.WARNING, "hot", Action.CHECK_COOLING)
CRIT = Problem("xid", Severity.CRITICAL, "XID 79: fallen off the bus", Action.RESET_CHIP)
INFO = Problem("throttle", Severity.INFO, "power cap", Action.NONE)


def chip(i: int, status: Status = Status.HEALTHY, problems: list[Problem] | None = None) -> ChipReport:
    return ChipReport(index=i, kind="gpu", vendor="nvidia", model="H100", uuid=f"GPU-{i}",
                      pci_bus_id=f"0000:{i:02x}:00.0", status=status, problems=problems or [])


def node(status: Status, chips: int, expected: int | None, problems: list[Problem] | None = None, *,
         age: float = 1.0, interval: float = 5.0) -> NodeReport:
    return NodeReport(host="h", agent_version="1", sampled_at=NOW - age, interval_s=interval, status=status,
                      chips_expected=expected, chips=[chip(i, status) for i in range(chips)],
                      host_metrics=HostMetrics(), problems=problems or [])


def test_a_chip_is_the_worst_of_its_problems_and_unknown_when_unseen() -> None:
    assert chip_status([], unseen=False) is Status.HEALTHY
    assert chip_status([INFO], unseen=False) is Status.HEALTHY
    assert chip_status([INFO, WARN], unseen=False) is Status.DEGRADED
    assert chip_status([WARN, CRIT], unseen=False) is Status.UNHEALTHY
    assert chip_status([WARN], unseen=True) is Status.UNKNOWN
    assert chip_status([CRIT], unseen=True) is Status.UNHEALTHY  # a known fault outranks not seeing


def test_a_node_is_the_worst_of_chips_and_own_problems_and_unknown_without_a_source() -> None:
    assert node_status([chip(0), chip(1)], []) is Status.HEALTHY
    assert node_status([chip(0), chip(1, Status.DEGRADED)], []) is Status.DEGRADED
    assert node_status([chip(0)], [CRIT]) is Status.UNHEALTHY
    assert node_status([chip(0)], [WARN], sources_unreadable=True) is Status.UNKNOWN
    assert node_status([chip(0, Status.UNHEALTHY)], [], sources_unreadable=True) is Status.UNHEALTHY


def test_problems_sort_worst_first_then_by_check_keeping_each_checks_order() -> None:
    xid_43 = Problem("xid", Severity.CRITICAL, "XID 43", Action.CHECK_APPLICATION)
    ordered = sort_problems([INFO, WARN, CRIT, xid_43])
    assert ordered == [CRIT, xid_43, WARN, INFO]


def test_a_root_cause_comes_first_within_its_severity() -> None:
    count = Problem("chip_count", Severity.CRITICAL, "0 of 8 expected chips present", Action.REBOOT)
    missing = Problem("driver", Severity.CRITICAL, "NVML library not found", Action.UPDATE_SOFTWARE)
    bindings = Problem("driver", Severity.WARNING, "NVML bindings not installed", Action.UPDATE_SOFTWARE)
    assert sort_problems([count, missing]) == [missing, count]
    # ... but never above a worse severity.
    assert sort_problems([WARN, bindings, count]) == [count, bindings, WARN]


def test_host_health_ranks_and_worse() -> None:
    assert [h.value for h in HOST_HEALTH_ORDER] == [
        "healthy", "degraded", "unknown", "error", "unreachable", "unhealthy"]
    assert worse(HostHealth.DEGRADED, HostHealth.UNKNOWN) is HostHealth.UNKNOWN
    assert worse(HostHealth.UNHEALTHY, HostHealth.UNKNOWN) is HostHealth.UNHEALTHY
    assert no_report(reachable=True) is HostHealth.ERROR
    assert no_report(reachable=False) is HostHealth.UNREACHABLE
    assert HostHealth.HEALTHY.ok and not HostHealth.DEGRADED.ok


def test_host_verdict_is_the_agents_when_nothing_more_is_seen() -> None:
    v = host_verdict(node(Status.DEGRADED, 8, 8), NOW)
    assert (v.health, v.added, v.age_s) == (HostHealth.DEGRADED, (), 1.0)


@pytest.mark.parametrize(("expected", "from_inventory"), [(8, True), (8, False)])
def test_missing_chips_make_the_host_unhealthy(expected: int, from_inventory: bool) -> None:
    report = node(Status.HEALTHY, 7, None if from_inventory else expected)
    v = host_verdict(report, NOW, expected_chips=expected if from_inventory else None)
    assert v.health is HostHealth.UNHEALTHY
    assert [(p.check, p.severity, p.action) for p in v.added] == [
        ("chip_count", Severity.CRITICAL, Action.REBOOT)]
    assert "7 of 8 chips present" in v.added[0].message


def test_the_agents_own_chip_count_problem_is_not_repeated() -> None:
    own = Problem("chip_count", Severity.CRITICAL, "7 of 8 chips", Action.REBOOT)
    v = host_verdict(node(Status.UNHEALTHY, 7, 8, [own]), NOW, expected_chips=8)
    assert v.added == () and v.health is HostHealth.UNHEALTHY


@pytest.mark.parametrize(("status", "severity", "health"), [
    (Status.UNHEALTHY, Severity.CRITICAL, HostHealth.UNHEALTHY),  # the driver is missing
    (Status.UNKNOWN, Severity.WARNING, HostHealth.UNKNOWN),  # the agent lacks its NVML bindings
])
def test_chips_missing_for_a_named_driver_problem_are_not_counted_again(
        status: Status, severity: Severity, health: HostHealth) -> None:
    named = Problem("driver", severity, "NVML library not found", Action.UPDATE_SOFTWARE)
    v = host_verdict(node(status, 0, None, [named]), NOW, expected_chips=8)
    assert v.added == () and v.health is health


def test_an_old_sample_makes_a_healthy_host_unknown_but_not_a_worse_one_better() -> None:
    fresh = host_verdict(node(Status.HEALTHY, 1, None, age=29.0, interval=5.0), NOW)
    assert fresh.health is HostHealth.HEALTHY  # under the 30 s floor
    old = host_verdict(node(Status.HEALTHY, 1, None, age=31.0, interval=5.0), NOW)
    assert old.health is HostHealth.UNKNOWN and [p.check for p in old.added] == ["sample_age"]
    slow_agent = host_verdict(node(Status.HEALTHY, 1, None, age=50.0, interval=20.0), NOW)
    assert slow_agent.health is HostHealth.HEALTHY  # 3 intervals of a 20 s agent
    bad = host_verdict(node(Status.UNHEALTHY, 1, None, age=100.0), NOW)
    assert bad.health is HostHealth.UNHEALTHY


def test_without_a_sample_time_the_age_and_the_state_are_unknown() -> None:
    v = host_verdict(node(Status.HEALTHY, 1, None, age=0.0), NOW, sample_time_known=False)
    assert v.health is HostHealth.UNKNOWN and v.age_s is None
    assert [p.check for p in v.added] == ["sample_age"] and "age is unknown" in v.added[0].message


def test_a_host_is_fit_for_work_when_healthy_or_degraded_with_every_chip() -> None:
    assert unfit_for_work(node(Status.HEALTHY, 8, 8)) is None
    assert unfit_for_work(node(Status.DEGRADED, 8, 8)) is None
    assert "XID 79" in (unfit_for_work(node(Status.UNHEALTHY, 8, 8, [CRIT])) or "")
    assert unfit_for_work(node(Status.HEALTHY, 7, 8)) == "agent sees 7 of 8 expected chips"
    unknown = unfit_for_work(node(Status.UNKNOWN, 2, 2))
    assert unknown == "agent reports unknown (chip 0 unknown; chip 1 unknown)"
