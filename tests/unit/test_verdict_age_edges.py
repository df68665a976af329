"""fleet_agent.verdict's view of a sample's age and the two clocks at their edges: each problem in full
(severity, action, words), the boundaries of skew and staleness, impossible node numbers, and which
chip fields the controller blanks.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

from fleet_agent.health.checks import readings
from fleet_agent.schema import (
    Action,
    ChipReport,
    GpuDetails,
    HostMetrics,
    NodeReport,
    Problem,
    Severity,
    Status,
)
from fleet_agent.verdict import HostHealth, host_verdict

NOW = 1_800_000_000.0  # every offset below is exact in binary floating point
SYNC = "check time sync on both (chronyc tracking)"


def chip(i: int, problems: list[Problem] | None = None) -> ChipReport:
    return ChipReport(index=i, kind="gpu", vendor="nvidia", model="H100", uuid=f"GPU-{i}",
                      pci_bus_id=f"0000:{i:02x}:00.0", status=Status.HEALTHY, problems=problems or [])


def report(*, wall_age: float, own_age: float | None = None, duration: float | None = None,
           interval: float = 5.0, chips: int = 1, problems: list[Problem] | None = None) -> NodeReport:
    """A healthy report stamped ``wall_age`` before NOW by the agent's clock (stale past 30 s)."""
    return NodeReport(host="h", agent_version="1", sampled_at=NOW - wall_age, interval_s=interval,
                      status=Status.HEALTHY, chips_expected=None, chips=[chip(i) for i in range(chips)],
                      host_metrics=HostMetrics(), problems=problems or [], sample_duration_s=duration,
                      sample_age_s=own_age)


def skew(seconds: int, side: str, age: int) -> Problem:
    return Problem("clock_skew", Severity.WARNING,
                   f"the agent's clock is {seconds}s {side} this machine's (the sample's own age is {age}s): "
                   f"{SYNC}", Action.CHECK_CONFIGURATION)


def test_skew_either_way_is_a_warning_naming_the_side_and_the_own_age() -> None:
    behind = host_verdict(report(wall_age=30.0, own_age=10.0, duration=2.0), NOW)
    assert behind.added == (skew(18, "behind", 12),)
    assert (behind.health, behind.age_s) == (HostHealth.DEGRADED, 12.0)
    ahead = host_verdict(report(wall_age=0.0, own_age=10.0, duration=2.0), NOW)
    assert ahead.added == (skew(12, "ahead of", 12),)
    assert ahead.health is HostHealth.DEGRADED


def test_skew_counts_from_just_past_the_tolerance() -> None:
    # Tolerance 5 s and no uncertainty by default: 5 s apart is in sync, 5.5 s is not.
    assert host_verdict(report(wall_age=6.0, own_age=1.0), NOW).added == ()
    late = host_verdict(report(wall_age=6.5, own_age=1.0), NOW)
    assert [p.check for p in late.added] == ["clock_skew"]
    assert host_verdict(report(wall_age=7.0, own_age=1.0), NOW, uncertainty_s=1.0).added == ()
    # A negative uncertainty is no uncertainty, not a narrower tolerance.
    assert host_verdict(report(wall_age=5.0, own_age=1.0), NOW, uncertainty_s=-3.0).added == ()


def test_by_the_agents_own_clock_a_sample_is_stale_only_past_the_threshold() -> None:
    at = host_verdict(report(wall_age=30.0, own_age=30.0), NOW)
    assert (at.added, at.health) == ((), HostHealth.HEALTHY)
    past = host_verdict(report(wall_age=31.0, own_age=31.0), NOW)
    assert past.added == (Problem("sample_age", Severity.WARNING,
                                  "latest sample is 31s old (interval 5s, the agent's own clock)",
                                  Action.RESTART_AGENT),)
    assert past.health is HostHealth.UNKNOWN


def test_without_the_agents_own_age_the_future_and_the_past_have_their_own_words() -> None:
    future = host_verdict(report(wall_age=-7.0), NOW)
    assert future.added == (Problem(
        "clock_skew", Severity.WARNING,
        "sample stamped 7s in the future: the agent's clock is ahead of this machine's, so the sample's "
        f"age is unknown: {SYNC}", Action.CHECK_CONFIGURATION),)
    assert (future.age_s, future.health) == (None, HostHealth.UNKNOWN)
    just = host_verdict(report(wall_age=-5.0), NOW)  # exactly the tolerance: in sync, and age 0
    assert (just.added, just.age_s, just.health) == ((), 0.0, HostHealth.HEALTHY)
    at = host_verdict(report(wall_age=30.0), NOW)
    assert (at.added, at.age_s) == ((), 30.0)
    past = host_verdict(report(wall_age=31.0), NOW)
    assert past.added == (Problem(
        "sample_age", Severity.WARNING,
        "latest sample is 31s old by this machine's clock (interval 5s): a stuck sampling loop, or the "
        "agent's clock is behind", Action.RESTART_AGENT),)
    assert past.health is HostHealth.UNKNOWN


def test_a_report_without_a_usable_sample_time_says_so_and_keeps_no_time() -> None:
    v = host_verdict(report(wall_age=1.0), NOW, sample_time_known=False)
    assert v.added == (Problem("sample_age", Severity.WARNING,
                               "no usable fleet_sample_timestamp_seconds: the sample's age is unknown",
                               Action.RESTART_AGENT),)
    assert (v.health, v.age_s, v.sampled_at) == (HostHealth.UNKNOWN, None, None)


def test_a_sample_time_just_after_the_epoch_is_possible() -> None:
    n = report(wall_age=0.0)
    n.sampled_at = 0.5
    v = host_verdict(n, 10.0)
    assert (v.added, v.health, v.sampled_at) == ((), HostHealth.HEALTHY, 0.5)


def test_impossible_node_numbers_are_named_with_their_value_and_bounds_are_inclusive() -> None:
    n = report(wall_age=1.0, duration=-2.0, interval=-1.0)
    v = host_verdict(n, NOW)
    assert v.added == (readings.problem(readings.Invalid("interval_s", -1.0, 0.0, 86400.0)),
                       readings.problem(readings.Invalid("sample_duration_s", -2.0, 0.0, 86400.0)))
    assert "= -2 " in v.added[1].message
    assert v.health is HostHealth.DEGRADED
    # Without a usable interval the stale threshold falls back to its minimum, and the words say 0s.
    stale = host_verdict(report(wall_age=40.0, interval=-1.0), NOW)
    assert stale.added[-1].message.startswith(
        "latest sample is 40s old by this machine's clock (interval 0s)")
    edge = host_verdict(report(wall_age=1.0, duration=86400.0, interval=86400.0), NOW)
    assert edge.added == ()


def test_the_more_chips_notice_is_left_out_only_for_the_agents_own_chip_count_problem() -> None:
    notice = Problem("chip_count", Severity.INFO, "3 chips present, 2 expected (inventory): update "
                     "fleet_agent_expected_chips", Action.CHECK_CONFIGURATION)
    other = Problem("collector", Severity.INFO, "slow", Action.MONITOR)
    with_node_problem = report(wall_age=1.0, chips=3, problems=[other])
    assert host_verdict(with_node_problem, NOW, expected_chips=2).added == (notice,)
    with_chip_problem = report(wall_age=1.0, chips=3)
    with_chip_problem.chips[0].problems = [other]
    assert host_verdict(with_chip_problem, NOW, expected_chips=2).added == (notice,)
    own = Problem("chip_count", Severity.INFO, "3 chips, 2 configured", Action.CHECK_CONFIGURATION)
    by_agent = report(wall_age=1.0, chips=3, problems=[own])
    assert host_verdict(by_agent, NOW, expected_chips=2).added == ()
    on_a_chip = report(wall_age=1.0, chips=3)
    on_a_chip.chips[2].problems = [own]
    assert host_verdict(on_a_chip, NOW, expected_chips=2).added == ()


def test_the_controller_blanks_shown_chip_fields_and_leaves_gpu_details_to_the_agent() -> None:
    n = report(wall_age=1.0, chips=2)
    bad = n.chips[0]
    bad.temperature_c, bad.memory_temperature_c = 250.0, 300.0
    bad.gpu = GpuDetails(ecc_volatile_uncorrected=-5, xid_counts={"79": -1})
    v = host_verdict(n, NOW)
    judged = v.chips[0]
    assert judged.temperature_c is None  # shown in fleet tables: blanked and named
    assert judged.memory_temperature_c == 300.0  # not shown: the agent's check names it
    assert judged.gpu == GpuDetails(ecc_volatile_uncorrected=-5, xid_counts={"79": -1})
    assert [p.message.split(" = ")[0] for p in judged.problems] == [
        "impossible reading temperature_c"]
    assert (judged.status, v.health) == (Status.DEGRADED, HostHealth.DEGRADED)
    assert v.chips[1] is n.chips[1]
