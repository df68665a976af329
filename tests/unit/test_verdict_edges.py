"""fleet_agent.verdict.unfit_for_work at its edges: what the one line says and what it leaves out.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status
from fleet_agent.verdict import HostHealth, host_verdict, unfit_for_work


def _chip(i: int, status: Status, problems: list[Problem] | None = None) -> ChipReport:
    return ChipReport(index=i, kind="gpu", vendor="nvidia", model="H100", uuid=f"GPU-{i}",
                      pci_bus_id=f"0000:{i:02x}:00.0", status=status, problems=problems or [])


def _node(status: Status, chips: list[ChipReport], problems: list[Problem] | None = None) -> NodeReport:
    return NodeReport(host="h", agent_version="1", sampled_at=1.0, interval_s=5.0, status=status,
                      chips_expected=None, chips=chips, host_metrics=HostMetrics(), problems=problems or [])


def _problem(message: str) -> Problem:
    return Problem("collector", Severity.CRITICAL, message, Action.MONITOR)


def test_at_most_three_reasons_node_problems_first_then_each_chips() -> None:
    chips = [_chip(0, Status.UNHEALTHY, [_problem("c0")]), _chip(1, Status.UNKNOWN)]
    node = _node(Status.UNHEALTHY, chips, [_problem("n1"), _problem("n2")])
    assert unfit_for_work(node) == "agent reports unhealthy (n1; n2; chip 0: c0)"


def test_a_healthy_chip_without_problems_is_not_a_reason() -> None:
    chips = [_chip(0, Status.HEALTHY), _chip(1, Status.UNKNOWN), _chip(2, Status.DEGRADED)]
    node = _node(Status.UNKNOWN, chips)
    assert unfit_for_work(node) == "agent reports unknown (chip 1 unknown)"


def test_no_reason_at_all_says_so() -> None:
    assert unfit_for_work(_node(Status.UNHEALTHY, [_chip(0, Status.HEALTHY)])) == (
        "agent reports unhealthy (no detail)")


def test_identity_problems_make_a_healthy_host_unknown_and_the_verdict_keeps_time_and_count() -> None:
    node = _node(Status.HEALTHY, [_chip(0, Status.HEALTHY), _chip(1, Status.HEALTHY)])
    other = Problem("identity", Severity.WARNING, "answered as another host", Action.CHECK_CONFIGURATION)
    verdict = host_verdict(node, now=3.0, expected_chips=2, also=[other])
    assert verdict.health is HostHealth.UNKNOWN and verdict.added[-1] == other
    assert (verdict.sampled_at, verdict.chips_expected, len(verdict.chips)) == (1.0, 2, 2)
    plain = host_verdict(node, now=3.0)
    assert plain.health is HostHealth.HEALTHY and plain.chips_expected is None and plain.added == ()

