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


def test_more_chips_than_the_inventory_expects_is_a_notice_not_a_fault() -> None:
    v = host_verdict(node(Status.HEALTHY, 8, None), NOW, expected_chips=4)
    assert v.health is HostHealth.HEALTHY
    assert [(p.check, p.severity, p.action) for p in v.added] == [
        ("chip_count", Severity.INFO, Action.CHECK_CONFIGURATION)]
    assert "8 chips present, 4 expected" in v.added[0].message


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


# --- clocks: the sample's age against skew (issue 17 item 4) ---------------------------------------


def aged(*, wall_age: float, own_age: float | None, duration: float = 0.0) -> NodeReport:
    """A healthy report stamped ``wall_age`` before NOW by the agent's clock, whose own (monotonic)
    age at answer time is ``own_age``."""
    n = node(Status.HEALTHY, 1, None, age=wall_age, interval=5.0)
    n.sample_age_s = own_age
    n.sample_duration_s = duration
    return n


@pytest.mark.parametrize("skew", [3600.0, -600.0])  # the agent's clock behind, then ahead
def test_skew_is_named_and_the_age_comes_from_the_agents_own_clock(skew: float) -> None:
    v = host_verdict(aged(wall_age=2.0 + skew, own_age=1.5, duration=0.5), NOW)
    assert [p.check for p in v.added] == ["clock_skew"]  # not a stale sample, not a fresh one
    assert v.added[0].action is Action.CHECK_CONFIGURATION
    assert ("behind" if skew > 0 else "ahead of") in v.added[0].message
    assert f"{abs(skew):.0f}s" in v.added[0].message
    assert v.age_s == 2.0 and v.health is HostHealth.DEGRADED


def test_a_stuck_sampler_is_stale_whatever_the_clocks_say() -> None:
    in_sync = host_verdict(aged(wall_age=100.0, own_age=100.0), NOW)
    assert [p.check for p in in_sync.added] == ["sample_age"] and in_sync.health is HostHealth.UNKNOWN
    assert "the agent's own clock" in in_sync.added[0].message
    # The agent's clock is 10 minutes ahead: its sample looks fresh by the wall clocks, it is not.
    ahead = host_verdict(aged(wall_age=100.0 - 600.0, own_age=100.0), NOW)
    assert sorted(p.check for p in ahead.added) == ["clock_skew", "sample_age"]
    assert ahead.health is HostHealth.UNKNOWN and ahead.age_s == 100.0


def test_clocks_within_the_answers_uncertainty_are_not_skewed() -> None:
    assert host_verdict(aged(wall_age=4.0, own_age=1.0), NOW).added == ()
    # A fan-out reads its clock once for all hosts: an answer may have come 40 s before NOW.
    late = host_verdict(aged(wall_age=41.0, own_age=1.0), NOW, uncertainty_s=45.0)
    assert late.added == () and late.health is HostHealth.HEALTHY


def test_without_the_agents_own_age_a_sample_from_the_future_is_skew_not_fresh() -> None:
    v = host_verdict(aged(wall_age=-120.0, own_age=None), NOW)
    assert [p.check for p in v.added] == ["clock_skew"] and "120s in the future" in v.added[0].message
    assert v.age_s is None and v.health is HostHealth.UNKNOWN
    assert host_verdict(aged(wall_age=-3.0, own_age=None), NOW).health is HostHealth.HEALTHY
    old = host_verdict(aged(wall_age=100.0, own_age=None), NOW)
    assert [p.check for p in old.added] == ["sample_age"] and "clock is behind" in old.added[0].message


# --- impossible readings (issue 17 item 6) ---------------------------------------------------------


def test_impossible_chip_readings_are_named_blanked_and_not_healthy() -> None:
    n = node(Status.HEALTHY, 2, None)
    bad = n.chips[1]
    bad.temperature_c, bad.utilization_pct, bad.memory_used_bytes = -12.0, 250.0, -1
    bad.power_w, bad.memory_total_bytes = 1e300, 10**30
    v = host_verdict(n, NOW)
    assert v.health is HostHealth.DEGRADED
    judged = v.chips[1]
    named = sorted(p.message.split(" = ")[0].removeprefix("impossible reading ") for p in judged.problems)
    assert named == ["memory_total_bytes", "memory_used_bytes", "power_w", "temperature_c", "utilization_pct"]
    assert all(p.check == "invalid_reading" for p in judged.problems)
    assert (judged.temperature_c, judged.utilization_pct, judged.power_w, judged.memory_total_bytes) == (
        None, None, None, None)
    assert judged.status is Status.DEGRADED and v.chips[0] is n.chips[0]
    assert bad.temperature_c == -12.0 and bad.problems == []  # the report itself is left as it came
    assert "1e+30" in next(p.message for p in judged.problems if "memory_total" in p.message)


def test_the_agents_own_invalid_reading_problem_is_not_repeated() -> None:
    from fleet_agent.health.checks import readings

    n = node(Status.DEGRADED, 1, None)
    n.chips[0].temperature_c = -5.0
    n.chips[0].problems = readings.check(n.chips[0], None, NOW)  # type: ignore[arg-type]  # cfg unused
    assert len(n.chips[0].problems) == 1
    assert len(host_verdict(n, NOW).chips[0].problems) == 1


@pytest.mark.parametrize(("field", "value", "health"), [
    ("interval_s", 1e300, HostHealth.UNKNOWN),  # an endless interval must not hide a day-old sample
    ("sampled_at", 1e300, HostHealth.UNKNOWN),
    ("chips_expected", 10**30, HostHealth.DEGRADED),
    ("sample_age_s", -5.0, HostHealth.UNKNOWN),
])
def test_impossible_node_numbers_are_named_and_not_used(field: str, value: float, health: HostHealth) -> None:
    n = node(Status.HEALTHY, 1, None, age=86400.0 if field == "interval_s" else 1.0)
    if field == "sample_age_s":
        n.sampled_at = NOW - 86400.0  # without a usable own age, the wall clocks say it is old
    setattr(n, field, value)
    v = host_verdict(n, NOW)
    assert v.health is health
    invalid = [p for p in v.added if p.check == "invalid_reading"]
    assert len(invalid) == 1 and invalid[0].message.startswith(f"impossible reading {field} = ")
    assert len(invalid[0].message) < 200
    assert not any(p.check == "chip_count" for p in v.added)  # 1 of 10**30 chips: not a count


def test_a_chip_reading_stamped_long_after_its_sample_is_impossible() -> None:
    n = node(Status.HEALTHY, 1, None)
    n.chips[0].sampled_at = n.sampled_at + 86400.0
    v = host_verdict(n, NOW)
    assert v.health is HostHealth.DEGRADED and v.chips[0].sampled_at is None
    assert "impossible reading sampled_at" in v.chips[0].problems[0].message
