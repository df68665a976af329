"""The drain step of a remediation re-checks every max-unavailable rule of the policy (all, rack, ...)
in the drain's own transaction: a person's drain between the plan and the drain step counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.drain import DrainOptions, drain
from fleetctl.inventory import Host
from fleetctl.remediate.actions import FleetSteps, RemediateOptions
from fleetctl.remediate.policy import Policy, parse_policy
from fleetctl.schedulers import SchedulerFactory
from fleetctl.schedulers.none import NoneScheduler
from fleetctl.state import db
from fleetctl.state import hosts as hstate
from fleetctl.state import remediation as rstate
from fleetctl.state.remediation import SqlStore
from fleetctl.validation import Size

STEPS = ("drain", "reset_gpu", "burn_in", "undrain")


def _policy(rules: str) -> Policy:
    return parse_policy(f"budgets:\n  max_unavailable: {rules}\n"
                        "actions:\n  reset_chip: {steps: [drain, reset_gpu, burn_in, undrain]}\n",
                        "policy.yaml")


@pytest.fixture()
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Host]:
    # No agents here: the scheduler's pool view is the drained files themselves.
    monkeypatch.setattr(NoneScheduler, "pool_states",
                        lambda self, hosts: {h.name: self._state_or_down(h) for h in hosts})
    return {f"h{i}": Host(f"h{i}", "127.0.0.1", ("gpu",),
                          {"rack": "r1" if i <= 3 else "r2", "ansible_connection": "local",
                           "fleet_agent_drained_file": str(tmp_path / f"drained-h{i}")})
            for i in range(1, 7)}


def _steps(conn: db.Connection, inv: dict[str, Host], policy: Policy, tmp_path: Path) -> FleetSteps:
    return FleetSteps(conn, inv, list(inv.values()), SchedulerFactory(inv.get), policy,
                      RemediateOptions("loop", drain_timeout_s=5), lambda *a: None, lambda h: None, tmp_path)


def _person_drains(conn: db.Connection, inv: dict[str, Host], name: str) -> None:
    [o] = drain(conn, [inv[name]], list(inv.values()), SchedulerFactory(inv.get),
                DrainOptions(reason="person", actor="sre1", max_unavailable=Size(6), timeout_s=5))
    assert o.ok, o.message


@pytest.mark.parametrize("rules", ["[{scope: all, max: 50%}, {scope: rack, max: 1}]",
                                   "[{scope: rack, max: 1}]"])  # no `all` rule: the rack still counts
def test_a_person_drain_after_the_plan_keeps_the_rack_within_its_budget(
        tmp_path: Path, fleet: dict[str, Host], rules: str) -> None:
    conn = db.connect(tmp_path / "s.db", schema=rstate.SCHEMA)
    steps = _steps(conn, fleet, _policy(rules), tmp_path)
    _person_drains(conn, fleet, "h1")  # rack r1: 1/1 now, after the loop planned h2
    rec = SqlStore(conn).start("h2", "reset_chip", "repair", STEPS, (1,), reason="x", actor="loop", at=0.0)
    problem = steps.run("drain", rec)
    assert problem is not None and "max-unavailable in rack=r1 is 1 of 3 hosts" in problem
    assert hstate.get(conn, "h2").state is hstate.DrainState.ACTIVE
    steps.released(rec)
    # the other rack has room
    other = SqlStore(conn).start("h4", "reset_chip", "repair", STEPS, (1,), reason="x", actor="loop", at=0.0)
    assert steps.run("drain", other) is None
    assert hstate.get(conn, "h4").state is hstate.DrainState.DRAINED


def test_reserve_checks_each_scoped_limit_only_for_the_requested_hosts_in_it(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "s.db", schema=rstate.SCHEMA)
    pool = [f"h{i}" for i in range(1, 7)]
    r1 = hstate.ScopedLimit("rack=r1", frozenset(pool[:3]), 1)
    r2 = hstate.ScopedLimit("rack=r2", frozenset(pool[3:]), 1)
    common = {"pool": pool, "limit": 6, "scheduler_unavailable": (), "actor": "t", "reason": "x"}
    assert hstate.reserve(conn, ["h1"], **common, scoped=[r1, r2]) == ["h1"]  # type: ignore[arg-type]
    with pytest.raises(hstate.BudgetExceeded) as refused:
        hstate.reserve(conn, ["h2"], **common, scoped=[r1, r2])  # type: ignore[arg-type]
    assert refused.value.scope == "rack=r1" and refused.value.unavailable == ["h1"]
    assert hstate.reserve(conn, ["h5"], **common, scoped=[r1, r2]) == ["h5"]  # type: ignore[arg-type]
    # a resumed drain of a host already out takes nothing more, and without scoped limits as before
    assert hstate.reserve(conn, ["h1"], **common, scoped=[r1, r2]) == []  # type: ignore[arg-type]
    assert hstate.reserve(conn, ["h2"], **common) == ["h2"]  # type: ignore[arg-type]
