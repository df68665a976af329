"""The budgets as a pure function: max-unavailable per scope (as drain counts it) and the hourly cap."""

from __future__ import annotations

import pytest
from fleet_agent.verdict import HostHealth

from fleetctl.remediate.budget import Wait, choose, host_scopes, pools
from fleetctl.remediate.flap import Started
from fleetctl.remediate.policy import BudgetRule
from fleetctl.report.model import HostRow
from fleetctl.validation import Size

# Two racks of four, one host without a rack.
SCOPES = {f"h{i}": {"rack": f"r0{1 + i // 4}"} for i in range(8)} | {"loose": {}}
RULES = (BudgetRule("all", Size(3)), BudgetRule("rack", Size(1)))


def run(candidates: list[str], unavailable: set[str] = frozenset(), history: list[Started] = (),
        cap: int = 10, rules: tuple[BudgetRule, ...] = RULES, now: float = 10_000.0):
    return choose(candidates, scopes=SCOPES, unavailable=unavailable, rules=rules, history=history,
                  cap_per_hour=cap, now=now)


def test_one_per_rack_in_the_order_given():
    c = run(["h1", "h0", "h5", "h6"])
    assert c.start == ["h1", "h5"]
    assert c.wait == [Wait("h0", "budget rack=r01 1/1"), Wait("h6", "budget rack=r02 1/1")]


def test_a_full_rack_does_not_hold_up_another():
    c = run(["h0", "h1", "h4"], unavailable={"h2"})
    assert c.start == ["h4"]
    assert c.wait == [Wait("h0", "budget rack=r01 1/1"), Wait("h1", "budget rack=r01 1/1")]


def test_the_fleet_wide_limit_counts_every_unavailable_host():
    # Hosts out of service count whatever put them there; one without a rack only meets the 'all' rule.
    c = run(["loose", "h4"], unavailable={"h0", "h7"})
    assert c.start == ["loose"]
    assert c.wait == [Wait("h4", "budget all 3/3")]  # r02 has h7 out too, but 'all' is checked first
    # A host outside the fleet (not in the scopes) does not count against its pools.
    assert run(["h4"], unavailable={"elsewhere"}).start == ["h4"]


def test_percent_limits_round_down_and_never_below_one_as_drain_does():
    rules = (BudgetRule("all", Size(25, percent=True)),)  # 25% of 9 hosts = 2.25 -> 2
    assert run(["h0", "h1", "h2"], rules=rules).start == ["h0", "h1"]
    tiny = (BudgetRule("rack", Size(10, percent=True)),)  # 10% of 4 = 0.4 -> at least 1
    assert run(["h0", "h1", "h4"], rules=tiny).start == ["h0", "h4"]


def test_hourly_cap_counts_starts_in_the_last_hour():
    history = [Started("x", 6400.0), Started("y", 6401.0), Started("z", 9000.0)]
    c = run(["h0", "h4", "loose"], history=history, cap=3)
    assert c.start == ["h0"]  # the start at 6400 is exactly an hour old: out of the window
    assert c.wait == [Wait("h4", "hourly cap 3/3"), Wait("loose", "hourly cap 3/3")]
    assert run(["h0"], history=history, cap=2).wait == [Wait("h0", "hourly cap 2/2")]


def test_a_candidate_outside_the_fleet_is_a_programming_error():
    with pytest.raises(ValueError, match="'ghost' is not in the fleet"):
        run(["ghost"])


def test_scopes_come_from_the_report_rows_as_group_by_reads_them():
    row = HostRow("g1", "127.0.0.1", 9100, ("gpu_nodes", "rack07"), HostHealth.HEALTHY,
                  vars={"row": "B"})
    assert host_scopes(row, ["rack", "row", "pod"]) == {"rack": "rack07", "row": "B"}
    assert pools({"a": {"rack": "r1"}, "b": {"rack": "r1"}, "c": {}}, "rack") == {"r1": ["a", "b"]}
    assert pools({"a": {}, "b": {}}, "all") == {"all": ["a", "b"]}
