"""Hysteresis and flap damping over recorded observation sequences (pure functions, time a parameter)."""

from __future__ import annotations

from fleet_agent.verdict import HostHealth

from fleetctl.remediate.flap import Started, flapping
from fleetctl.remediate.hysteresis import MISSING, Observation, eligibility, latest, missing, observe, streak
from fleetctl.remediate.policy import FlapDamping, Hysteresis
from fleetctl.report.build import host_row_failed
from fleetctl.report.model import HostRow, ProblemRow

ACT_ON = frozenset({"unhealthy", "unreachable"})
NEED = Hysteresis(count=3, span_s=60.0)
INTERVAL = 30.0


def sequence(states: str, *, start: float = 0.0) -> list[Observation]:
    """One observation per character, INTERVAL apart: H healthy, U unhealthy (reset_chip),
    X unreachable, D degraded, - missing."""
    codes = {"H": ("healthy", ()), "U": ("unhealthy", ("reset_chip",)),
             "X": ("unreachable", ("unreachable",)), "D": ("degraded", ("check_cooling",)),
             "-": (MISSING, ())}
    return [Observation(start + i * INTERVAL, codes[c][0], codes[c][1]) for i, c in enumerate(states)]


def first_eligible(states: str) -> int | None:
    """The index of the first observation after which the host is eligible (replaying the sequence)."""
    seq = sequence(states)
    for i in range(len(seq)):
        if eligibility(seq[: i + 1], ACT_ON, NEED).eligible:
            return i
    return None


def test_a_chip_that_fails_and_stays_is_eligible_after_k_observations_spanning_t():
    # Fails at t=300 (index 10) and stays: eligible at index 12 (3 observations, 60 s), not before.
    seq = sequence("H" * 10 + "U" * 6)
    assert first_eligible("H" * 10 + "U" * 6) == 12
    before = eligibility(seq[:12], ACT_ON, NEED)
    assert not before.eligible
    assert before.why() == "unhealthy 2 of 3 observations over 30s of 60s"
    at = eligibility(seq[:13], ACT_ON, NEED)
    assert at.eligible and at.streak.since == 300.0 and at.streak.span_s == 60.0
    assert at.why() == "unhealthy 3 of 3 observations over 60s of 60s"
    # It stays eligible while the fault stays, its streak still dated from the failure.
    assert eligibility(seq, ACT_ON, NEED).streak == streak(seq, ACT_ON)
    assert streak(seq, ACT_ON).since == 300.0 and streak(seq, ACT_ON).count == 6


def test_count_and_span_are_both_needed():
    # Three observations 10 s apart span 20 s: not enough for 60 s.
    fast = [Observation(t, "unhealthy", ("reboot",)) for t in (0.0, 10.0, 20.0)]
    assert not eligibility(fast, ACT_ON, NEED).eligible
    # Two observations 120 s apart span enough but are too few.
    slow = [Observation(t, "unhealthy", ("reboot",)) for t in (0.0, 120.0)]
    assert not eligibility(slow, ACT_ON, NEED).eligible
    assert eligibility(slow, ACT_ON, Hysteresis(2, 60.0)).eligible


def test_a_healthy_observation_resets_the_streak():
    assert first_eligible("UUHUU") is None
    assert first_eligible("UUHUUU") == 5
    # A state the policy does not act on (degraded) resets too: the host was seen doing better.
    assert first_eligible("UUDUU") is None


def test_missing_observations_neither_count_nor_reset():
    # U - U - U: three real unhealthy observations spanning 120 s: eligible on the third.
    assert first_eligible("U-U-U") == 4
    # Missing ones alone never make a streak.
    assert first_eligible("U---") is None
    s = streak(sequence("UU--"), ACT_ON)
    assert (s.count, s.since, s.last) == (2, 0.0, 30.0)
    assert latest(sequence("HU--")) == sequence("HU")[1]
    assert latest(sequence("---")) is None


def test_unreachable_counts_when_the_policy_acts_on_it_and_not_otherwise():
    assert first_eligible("UUX") == 2  # unhealthy, then unreachable: still not a healthy host
    assert not eligibility(sequence("UUX"), {"unhealthy"}, NEED).eligible  # ends the streak


def test_observe_takes_the_actions_of_the_worst_problems():
    row = HostRow("h1", "127.0.0.1", 9100, ("rack1",), HostHealth.UNHEALTHY, problems=[
        ProblemRow("xid", "critical", "XID 79: fell off the bus", "reboot", 3),
        ProblemRow("ecc_uncorrectable", "critical", "2 volatile uncorrectable", "reset_chip", 1),
        ProblemRow("xid", "critical", "XID 48", "reset_chip", 2),
        ProblemRow("throttle", "warning", "hw_thermal", "check_cooling", 0),
        ProblemRow("chip_count", "info", "9 chips present", "check_configuration"),
    ])
    o = observe(row, 1000.0)
    assert o == Observation(1000.0, "unhealthy", ("reboot", "reset_chip"), "#3 xid: XID 79: fell off the bus")
    degraded = HostRow("h2", "127.0.0.1", 9100, (), HostHealth.DEGRADED, problems=[
        ProblemRow("throttle", "warning", "hw_thermal", "check_cooling", 0),
        ProblemRow("chip_count", "info", "x", "check_configuration")])
    assert observe(degraded, 5.0).actions == ("check_cooling",)
    healthy = HostRow("h3", "127.0.0.1", 9100, (), HostHealth.HEALTHY, problems=[
        ProblemRow("chip_count", "info", "x", "check_configuration")])
    assert observe(healthy, 5.0).actions == ()
    # A host without a report maps to its own pseudo-action, not to what it said before.
    gone = host_row_failed("h4", "127.0.0.1", 9100, (), reachable=False, kind="timeout",
                           reason="connect timed out after 2s")
    assert observe(gone, 7.0) == Observation(7.0, "unreachable", ("unreachable",),
                                             "connect timed out after 2s")
    odd = host_row_failed("h5", "127.0.0.1", 9100, (), reachable=True, kind="http", reason="HTTP 401")
    assert observe(odd, 7.0).actions == ("error",)
    assert missing(8.0) == Observation(8.0, MISSING)
    assert observe(row, 1.0).to_dict()["actions"] == ["reboot", "reset_chip"]


def test_flap_damping_counts_repairs_of_this_host_within_the_window():
    damping = FlapDamping(max_remediations=2, window_s=3600.0)
    history = [Started("h1", 100.0), Started("h1", 2000.0), Started("h2", 2100.0),
               Started("h1", 2200.0, kind="quarantine")]
    now = 3000.0
    f = flapping("h1", history, now, damping)
    assert (f.recent, f.flapping) == (2, True)
    assert f.why() == "flapping: 2 remediations within 3600s (max 2): quarantined instead of another repair"
    # One hour after the first repair it has left the window: one more repair is allowed.
    assert not flapping("h1", history, 3700.0, damping).flapping
    # The window is (now - W, now]: a start exactly W ago has left it.
    assert flapping("h1", history, 3600.0 + 100.0 - 0.001, damping).recent == 2
    assert flapping("h1", history, 3600.0 + 100.0, damping).recent == 1
    assert flapping("h2", history, now, damping).recent == 1
