"""The drain state machine at its edges, asserted outcome for outcome: what every host's result says,
what the audit log records, what is echoed, and that one host's trouble never stops the others.

Written against the mutants that survived the mutation run (docs/mutation.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_drain import Clock

from fleetctl import drain as core
from fleetctl.drain import Outcome
from fleetctl.errors import FleetctlError, UsageError
from fleetctl.schedulers.base import ForeignDrainError, HostLike, NodeState, SchedState, SchedulerError
from fleetctl.state import db, locks
from fleetctl.state import hosts as hs
from fleetctl.state.hosts import DrainState as S
from fleetctl.validation import Size

REASON = "fleetctl:alice: bad fan"


@dataclass(frozen=True)
class Host:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


class Sched:
    """A scheduler whose hosts drain at once unless they run jobs; failures on demand, per host."""

    kind = "fake"

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.jobs: dict[str, list[str]] = {}
        self.refuse: dict[str, Exception] = {}  # sched.drain raises this
        self.refuse_undrain: dict[str, Exception] = {}
        self.state_error: dict[str, Exception] = {}
        self.drain_reasons: list[tuple[str, str]] = []
        self.asked: list[str] = []
        self.down = False

    def state(self, host: HostLike) -> NodeState:
        self.asked.append(host.name)
        if self.down:
            raise SchedulerError("connection refused")
        if host.name in self.state_error:
            raise self.state_error[host.name]
        node = self.nodes.setdefault(host.name, NodeState(SchedState.ACTIVE))
        if node.state is SchedState.DRAINING and not self.jobs.get(host.name):
            node = self.nodes[host.name] = NodeState(SchedState.DRAINED, node.reason, "idle+drain")
        return node

    def drain(self, host: HostLike, reason: str) -> None:
        self.drain_reasons.append((host.name, reason))
        if host.name in self.refuse:
            raise self.refuse[host.name]
        if self.nodes.get(host.name, NodeState(SchedState.ACTIVE)).state is SchedState.ACTIVE:
            self.nodes[host.name] = NodeState(SchedState.DRAINING, reason, "alloc+drain")

    def undrain(self, host: HostLike) -> None:
        if host.name in self.refuse_undrain:
            raise self.refuse_undrain[host.name]
        self.nodes[host.name] = NodeState(SchedState.ACTIVE)

    def running_workloads(self, host: HostLike) -> list[str]:
        return list(self.jobs.get(host.name, []))


H = [Host(f"h{i}") for i in range(8)]


@pytest.fixture()
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=(*hs.SCHEMA, *locks.SCHEMA))


@pytest.fixture()
def sched() -> Sched:
    return Sched()


def opts(**kw: Any) -> core.DrainOptions:
    kw.setdefault("max_unavailable", Size(8))
    return core.DrainOptions(reason="bad fan", actor="alice", poll_s=1.0, **kw)


def drain(conn: sqlite3.Connection, sched: Sched, hosts: Sequence[Host], echoed: list[str] | None = None,
          clock: Clock | None = None, **kw: Any) -> list[Outcome]:
    clock = clock or Clock()
    return core.drain(conn, hosts, H, lambda h: sched, opts(**kw), echo=(echoed if echoed is not None
                      else []).append, sleep=clock.sleep, clock=clock)


def put(conn: sqlite3.Connection, host: str, state: S, *, actor: str = "bob", reason: str | None = None,
        owner: str | None = None, run_id: str | None = None) -> None:
    """A host recorded in ``state`` as an earlier run left it (no audit entry)."""
    conn.execute("INSERT INTO host_state (host, state, reason, actor, updated_at, owner, run_id) "
                 "VALUES (?, ?, ?, ?, 1.0, ?, ?)", (host, state.value, reason, actor, owner, run_id))
    conn.commit()


def wait(conn: sqlite3.Connection, hosts: Sequence[Host], scheduler_for: core.SchedulerFor,
         options: core.DrainOptions) -> list[Outcome]:
    clock = Clock()
    return core.wait_drained(conn, hosts, scheduler_for, REASON, options, sleep=clock.sleep, clock=clock)


def notes(conn: sqlite3.Connection, host: str) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.from_state, e.to_state, e.reason, e.note) for e in hs.audit(conn, host)]


# --- drain -----------------------------------------------------------------------------------------


def test_a_drain_records_owner_run_and_reason_at_every_step_and_echoes_each(conn: sqlite3.Connection,
                                                                            sched: Sched) -> None:
    echoed: list[str] = []
    out = drain(conn, sched, [H[0], H[1]], echoed, owner="m:1", run_id="run-7")
    assert out == [Outcome("h0", True, "drained", "drained"), Outcome("h1", True, "drained", "drained")]
    assert echoed[3:] == ["h0: draining (fake)", "h1: draining (fake)", "h0: drained", "h1: drained"]
    for name in ("h0", "h1"):
        assert notes(conn, name) == [("active", "cordoned", REASON, None),
                                     ("cordoned", "draining", REASON, None),
                                     ("draining", "drained", REASON, None)]
        rec = hs.get(conn, name)
        assert (rec.state, rec.reason, rec.owner, rec.run_id, rec.actor) == (
            S.DRAINED, REASON, "m:1", "run-7", "alice")
    assert sched.drain_reasons[:2] == [("h0", REASON), ("h1", REASON)]


def test_not_waiting_reports_each_host_draining(conn: sqlite3.Connection, sched: Sched) -> None:
    out = drain(conn, sched, [H[0], H[1]], wait=False)
    assert out == [Outcome("h0", True, "draining", "draining (not waiting)"),
                   Outcome("h1", True, "draining", "draining (not waiting)")]


def test_a_refused_drain_puts_the_host_back_and_the_next_host_still_drains(conn: sqlite3.Connection,
                                                                           sched: Sched) -> None:
    sched.refuse["h0"] = SchedulerError("h0: update refused")
    sched.refuse["h1"] = ForeignDrainError("h1: drained by someone else")
    out = drain(conn, sched, [H[0], H[1], H[2]], wait=False)
    assert out == [Outcome("h0", False, "active", "drain failed: h0: update refused"),
                   Outcome("h1", False, "active", "drain refused: h1: drained by someone else"),
                   Outcome("h2", True, "draining", "draining (not waiting)")]
    assert notes(conn, "h0")[-1] == ("cordoned", "active", REASON,
                                     "scheduler refused the drain: h0: update refused")


def test_a_refusal_while_resuming_leaves_the_recorded_state(conn: sqlite3.Connection, sched: Sched) -> None:
    put(conn, "h0", S.DRAIN_FAILED, actor="bob", reason="old")
    sched.refuse["h0"] = SchedulerError("h0: nope")
    out = drain(conn, sched, [H[0]], wait=False)
    assert out == [Outcome("h0", False, "drain_failed", "drain failed: h0: nope")]


def test_an_unexpected_error_is_that_hosts_outcome_and_the_next_host_drains(conn: sqlite3.Connection,
                                                                           sched: Sched) -> None:
    sched.refuse["h0"] = RuntimeError("boom")
    out = drain(conn, sched, [H[0], H[1]], wait=False, owner="m:1", run_id="run-7")
    left = hs.get(conn, "h0")
    assert (left.state, left.owner, left.run_id) == (S.CORDONED, "m:1", "run-7")  # a re-run resumes it
    assert out == [Outcome("h0", False, "cordoned", "drain failed: unexpected error: RuntimeError: boom; "
                           "left cordoned: re-run drain to resume, or undrain"),
                   Outcome("h1", True, "draining", "draining (not waiting)")]


def test_resuming_says_where_from(conn: sqlite3.Connection, sched: Sched) -> None:
    put(conn, "h0", S.DRAIN_FAILED, actor="bob", reason="old")
    sched.nodes["h0"] = NodeState(SchedState.DRAINING, REASON, "alloc+drain")
    sched.jobs["h0"] = ["job 1"]
    echoed: list[str] = []
    drain(conn, sched, [H[0]], echoed, wait=False, owner="m:2", run_id="run-8")
    assert notes(conn, "h0")[-1] == ("drain_failed", "draining", REASON, "resumed from drain_failed")
    rec = hs.get(conn, "h0")
    assert (rec.owner, rec.run_id) == ("m:2", "run-8")
    assert echoed == ["max-unavailable 8 of 8 hosts; unavailable now 0; after this drain 1",
                      "  resume drain h0: fleetctl drain_failed, scheduler draining (alloc+drain)",
                      "h0: draining (fake)"]


def test_over_the_budget_every_requested_host_is_refused_and_force_passes(conn: sqlite3.Connection,
                                                                          sched: Sched) -> None:
    sched.nodes["h7"] = NodeState(SchedState.DOWN, None, "down")
    out = drain(conn, sched, [H[0], H[1]], max_unavailable=Size(2), wait=False)
    msg = ("refused: max-unavailable is 2 of 8 hosts; 1 already unavailable (h7) + 2 requested = 3 "
           "(--max-unavailable 2)")
    assert out == [Outcome("h0", False, "active", msg), Outcome("h1", False, "active", msg)]
    forced = drain(conn, sched, [H[0], H[1]], max_unavailable=Size(2), wait=False, force=True,
                   owner="m:3", run_id="run-9")
    assert [o.state for o in forced] == ["draining", "draining"]
    assert notes(conn, "h0")[0] == ("active", "cordoned", REASON, "--force: past max-unavailable")
    assert (hs.get(conn, "h0").owner, hs.get(conn, "h0").run_id) == ("m:3", "run-9")


def test_the_plan_lists_at_most_ten_unavailable_hosts_and_what_it_will_do(conn: sqlite3.Connection,
                                                                          sched: Sched) -> None:
    pool = [Host(f"p{i:02d}") for i in range(12)]
    for p in pool:
        sched.nodes[p.name] = NodeState(SchedState.DOWN, None, "down")
    put(conn, "h1", S.CORDONED, actor="bob", reason="r")
    echoed: list[str] = []
    core.drain(conn, [H[0], H[1]], [*pool, H[0], H[1]], lambda h: sched,
               opts(max_unavailable=Size(20), dry_run=True), echo=echoed.append)
    assert echoed == [
        "max-unavailable 20 of 14 hosts; unavailable now 12 (" + ", ".join(f"p{i:02d}" for i in range(10))
        + "); after this drain 14",
        "  drain h0: fleetctl active, scheduler active ()",
        "  resume drain h1: fleetctl cordoned, scheduler active ()"]
    assert sched.drain_reasons == []  # a dry run asks, changes nothing


def test_skipped_hosts_say_why(conn: sqlite3.Connection, sched: Sched) -> None:
    put(conn, "h0", S.MAINTAINING, actor="bob", reason="fw")
    put(conn, "h1", S.QUARANTINED, actor="bob")
    put(conn, "h2", S.DRAINED, actor="bob", reason="old")
    sched.nodes["h2"] = NodeState(SchedState.DRAINED, "fleetctl:bob: old", "idle+drain")
    sched.nodes["h3"] = NodeState(SchedState.DRAINED, "fleetctl:bob: x", "idle+drain")  # not ours on record
    sched.nodes["h4"] = NodeState(SchedState.DRAINED, "hardware", "idle+drain")
    holder = locks.Holder("prov-1", "provision site.yml", "carol", "m", 1)
    locks.acquire(conn, ["h5"], holder)
    [lock] = locks.held(conn)
    conn.execute("INSERT INTO host_state (host, state, actor, updated_at) VALUES ('h6', 'future', 'x', 1)")
    conn.commit()
    out = drain(conn, sched, H[:7], wait=False)
    assert out == [
        Outcome("h0", True, "maintaining", "already out of service (maintaining, fw)"),
        Outcome("h1", True, "quarantined", "already out of service (quarantined, no reason)"),
        Outcome("h2", True, "drained", "already drained"),
        Outcome("h4", False, "active", "already drained by someone else, left as it is: 'hardware'"),
        Outcome("h5", False, "active", f"refused: {lock.describe()}; --force to drain anyway"),
        Outcome("h6", False, "future", hs.get(conn, "h6").unknown_message()),
        Outcome("h3", True, "draining", "draining (not waiting)"),
    ]


@pytest.mark.parametrize(("count", "names"), [
    (5, "h0, h1, h2, h3, h4"), (6, "h0, h1, h2, h3, h4 and 1 more"), (7, "h0, h1, h2, h3, h4 and 2 more")])
def test_a_scheduler_that_is_down_changes_nothing_and_names_five_hosts(
        conn: sqlite3.Connection, sched: Sched, count: int, names: str) -> None:
    sched.down = True
    message = f"scheduler unavailable for {names}, nothing changed: connection refused"
    with pytest.raises(FleetctlError) as drained:
        drain(conn, sched, H[:count])
    assert str(drained.value) == message
    with pytest.raises(FleetctlError) as undrained:
        core.undrain(conn, H[:count], lambda h: sched, None, actor="alice")
    assert str(undrained.value) == message
    assert hs.audit(conn) == []


class K8s(Sched):
    kind = "kubernetes"

    def node_name(self, host: HostLike) -> str:
        if host.name == "h0":
            raise SchedulerError("no node name")
        return host.name.upper()


def test_inputs_a_scheduler_cannot_take_are_refused_naming_the_first_and_counting_the_rest(
        conn: sqlite3.Connection) -> None:
    k8s = K8s()
    with pytest.raises(UsageError) as two:
        core.check_inputs([H[0], H[1], H[2]], lambda h: k8s, REASON)
    assert str(two.value).startswith("h1: 'H1' (2 characters) is not a Kubernetes node name")
    assert str(two.value).endswith(" (and 1 more hosts); nothing changed")
    with pytest.raises(UsageError) as one:
        core.check_inputs([H[0], H[3]], lambda h: k8s, REASON)
    assert str(one.value).endswith("at most 253; nothing changed")
    core.check_inputs([H[0]], lambda h: k8s, REASON)  # a name the adapter rejects: the probe reports it


# --- wait_drained ----------------------------------------------------------------------------------


def test_waiting_reports_what_still_runs_at_the_timeout(conn: sqlite3.Connection, sched: Sched) -> None:
    sched.jobs["h0"] = [f"job {i}" for i in range(7)]
    echoed: list[str] = []
    clock = Clock()
    out = drain(conn, sched, [H[0]], echoed, clock, timeout_s=3.5)
    note = "timed out after 4s: scheduler alloc+drain; running: job 0, job 1, job 2, job 3, job 4"
    assert out == [Outcome("h0", False, "drain_failed", note)]
    assert echoed[-1] == f"h0: drain_failed ({note})"
    assert notes(conn, "h0")[-1] == ("draining", "drain_failed", REASON, note)
    assert clock.sleeps == [1.0, 2.0, 0.5]  # never past the deadline
    assert sched.drain_reasons[-1] == ("h0", REASON)  # re-asked each round with the same reason


def test_waiting_with_nothing_to_report_says_still_draining_or_none(conn: sqlite3.Connection,
                                                                    sched: Sched) -> None:
    sched.nodes["h0"] = NodeState(SchedState.DRAINING, REASON, "")
    sched.jobs["h0"] = []
    put(conn, "h0", S.DRAINING, actor="alice", reason="bad fan")
    sched.state_error["h1"] = SchedulerError("controller restarting")
    put(conn, "h1", S.DRAINING, actor="alice", reason="bad fan")
    out = wait(conn, [H[1]], lambda h: sched, opts(timeout_s=0.0))
    assert out == [Outcome("h1", False, "drain_failed", "timed out after 0s: controller restarting")]

    class Busy(Sched):
        def state(self, host: HostLike) -> NodeState:
            return NodeState(SchedState.DRAINING, REASON, "")

    busy = Busy()
    put(conn, "h2", S.DRAINING, actor="alice", reason="bad fan")
    out = wait(conn, [H[2]], lambda h: busy, opts(timeout_s=0.0))
    assert out == [Outcome("h2", False, "drain_failed",
                           "timed out after 0s: scheduler draining; running: none")]


def test_a_foreign_drain_while_waiting_fails_that_host_only(conn: sqlite3.Connection, sched: Sched) -> None:
    class Foreign(Sched):
        def state(self, host: HostLike) -> NodeState:
            if host.name == "h0":
                return NodeState(SchedState.DRAINING, "hardware", "alloc+drain")
            return super().state(host)

    foreign = Foreign()
    foreign.jobs["h0"] = ["job"]
    for n in ("h0", "h1"):
        put(conn, n, S.DRAINING, actor="bob", reason="bad fan")
    out = wait(conn, [H[0], H[1]], lambda h: foreign, opts(owner="m:1", run_id="r-1"))
    message = "someone else changed the drain ('hardware')"
    assert out == [Outcome("h0", False, "drain_failed", message), Outcome("h1", True, "drained", "drained")]
    assert notes(conn, "h0")[-1] == ("draining", "drain_failed", "bad fan", message)
    assert hs.audit(conn, "h0")[-1].actor == "alice"
    rec = hs.get(conn, "h1")
    assert (rec.owner, rec.run_id, rec.actor) == ("m:1", "r-1", "alice")


def test_an_unexpected_error_while_waiting_and_a_host_undrained_meanwhile(conn: sqlite3.Connection,
                                                                          sched: Sched) -> None:
    sched.state_error["h0"] = RuntimeError("boom")
    put(conn, "h0", S.DRAINING, actor="alice")
    put(conn, "h2", S.DRAINING, actor="alice")
    out = wait(conn, [H[0], H[1], H[2]], lambda h: sched, opts())
    assert out == [
        Outcome("h0", False, "draining", "drain failed: unexpected error: RuntimeError: boom; left draining: "
                "re-run drain to resume"),
        Outcome("h1", False, "active", "changed meanwhile by someone else (active); stopped waiting"),
        Outcome("h2", True, "drained", "drained")]
    put(conn, "h1", S.ACTIVE, actor="dave")
    out = wait(conn, [H[1]], lambda h: sched, opts())
    assert out == [Outcome("h1", False, "active", "changed meanwhile by dave (active); stopped waiting")]


def test_a_drained_scheduler_state_with_jobs_left_is_not_drained(conn: sqlite3.Connection) -> None:
    class Lingering(Sched):
        def state(self, host: HostLike) -> NodeState:
            return NodeState(SchedState.DRAINED, REASON, "drained")

    lingering = Lingering()
    lingering.jobs["h0"] = ["job 9"]
    put(conn, "h0", S.DRAINING, actor="alice")
    out = wait(conn, [H[0]], lambda h: lingering, opts(timeout_s=0.0))
    assert out == [Outcome("h0", False, "drain_failed",
                           "timed out after 0s: scheduler drained; running: job 9")]


# --- undrain ---------------------------------------------------------------------------------------


def test_undrain_reports_every_host_in_the_order_asked(conn: sqlite3.Connection, sched: Sched) -> None:
    for n in ("h0", "h1", "h2", "h4", "h5"):
        put(conn, n, S.DRAINED, actor="bob", reason="r")
        sched.nodes[n] = NodeState(SchedState.DRAINED, "fleetctl:bob: r", "idle+drain")
    put(conn, "h3", S.QUARANTINED, actor="bob", reason="bad dimm")
    sched.refuse_undrain["h1"] = SchedulerError("h1: resume refused")
    sched.refuse_undrain["h2"] = RuntimeError("boom")
    sched.nodes["h6"] = NodeState(SchedState.DRAINED, "hardware", "idle+drain")
    echoed: list[str] = []
    out = core.undrain(conn, [H[6], H[5], H[4], H[3], H[2], H[1], H[0], H[7]], lambda h: sched,
                       lambda hosts: {"h4": "agent reports unhealthy (xid 79)"}, actor="alice",
                       echo=echoed.append)
    assert out == [
        Outcome("h6", False, "active", "drained by someone else, not touching it: 'hardware'"),
        Outcome("h5", True, "active", "back in service"),
        Outcome("h4", False, "drained",
                "not undrained (--force to override): agent reports unhealthy (xid 79)"),
        Outcome("h3", False, "quarantined", "quarantined: fix it, then undrain with --force (bad dimm)"),
        Outcome("h2", False, "drained", "undrain failed: unexpected error: RuntimeError: boom"),
        Outcome("h1", False, "drained", "undrain failed: h1: resume refused"),
        Outcome("h0", True, "active", "back in service"),
        Outcome("h7", True, "active", "not drained (scheduler: active)"),
    ]
    assert echoed == ["h5: back in service", "h0: back in service"]
    assert notes(conn, "h0")[-1] == ("drained", "active", "r", "undrain")
    assert notes(conn, "h1")[-2:] == [("drained", "active", "r", "undrain"),
                                      ("active", "drained", "r", "undrain failed: h1: resume refused")]


def test_a_forced_undrain_says_so_and_a_caller_names_its_own_note(conn: sqlite3.Connection,
                                                                  sched: Sched) -> None:
    put(conn, "h0", S.QUARANTINED, actor="bob", reason="bad dimm")
    put(conn, "h1", S.DRAINED, actor="bob", reason="r")
    asked: list[list[str]] = []

    def health(hosts: Sequence[HostLike]) -> dict[str, str | None]:
        asked.append([h.name for h in hosts])
        return {h.name: "sick" for h in hosts}

    out = core.undrain(conn, [H[0]], lambda h: sched, health, actor="alice", force=True)
    assert out == [Outcome("h0", True, "active", "back in service")] and asked == []
    assert notes(conn, "h0")[-1] == ("quarantined", "active", "bad dimm", "undrain --force")
    core.undrain(conn, [H[1]], lambda h: sched, None, actor="alice", note="maintain verify")
    assert notes(conn, "h1")[-1] == ("drained", "active", "r", "maintain verify")


def test_maintenance_by_a_live_run_of_another_process_is_left_alone(conn: sqlite3.Connection,
                                                                    sched: Sched) -> None:
    put(conn, "h0", S.MAINTAINING, actor="bob", owner="elsewhere:1", run_id="m-1")
    put(conn, "h1", S.VERIFYING, actor="bob", owner=hs.this_process(), run_id="m-2")
    put(conn, "h2", S.DRAINED, actor="bob", owner="elsewhere:1", run_id="m-3")
    put(conn, "h3", S.MAINTAINING, actor="bob", owner="elsewhere:1", run_id="m-4")
    holder = locks.Holder("prov-1", "provision site.yml", "carol", "m", 1)
    locks.acquire(conn, ["h4"], holder)
    [lock] = locks.held(conn)
    put(conn, "h4", S.DRAINED, actor="bob")
    out = core.undrain(conn, H[:5], lambda h: sched, None, actor="alice")
    assert out == [
        Outcome("h0", False, "maintaining", "in maintenance by elsewhere:1 (run m-1); --force to override"),
        Outcome("h1", True, "active", "back in service"),  # this process's own maintenance
        Outcome("h2", True, "active", "back in service"),
        Outcome("h3", False, "maintaining", "in maintenance by elsewhere:1 (run m-4); --force to override"),
        Outcome("h4", False, "drained", f"refused: {lock.describe()}; --force to undrain anyway"),
    ]
    forced = core.undrain(conn, [H[0], H[4]], lambda h: sched, None, actor="alice", force=True)
    assert [o.ok for o in forced] == [True, True]


def test_a_host_of_unknown_state_is_left_alone_even_forced(conn: sqlite3.Connection, sched: Sched) -> None:
    conn.execute("INSERT INTO host_state (host, state, actor, updated_at) VALUES ('h0', 'future', 'x', 1)")
    conn.commit()
    expected = Outcome("h0", False, "future", hs.get(conn, "h0").unknown_message())
    assert core.undrain(conn, [H[0]], lambda h: sched, None, actor="a", force=True) == [expected]


# --- status ----------------------------------------------------------------------------------------


def test_status_counts_a_host_that_cannot_be_asked_as_down(conn: sqlite3.Connection) -> None:
    class Pooled(Sched):
        def pool_states(self, hosts: Sequence[HostLike]) -> dict[str, NodeState]:
            raise SchedulerError("no pool view")

    pooled = Pooled()
    pooled.state_error["h0"] = SchedulerError("timeout")
    [row] = core.status(conn, [H[0]], lambda h: pooled)
    assert (row.scheduler_state, row.scheduler_detail, row.workloads) == ("down", "unreachable: timeout", [])


def test_each_host_is_asked_of_its_own_scheduler(conn: sqlite3.Connection) -> None:
    mine = {"h0": Sched(), "h1": Sched()}
    mine["h1"].jobs["h1"] = ["job"]
    clock = Clock()

    def settle(seconds: float) -> None:
        clock.sleep(seconds)
        mine["h1"].jobs["h1"] = []

    out = core.drain(conn, [H[0], H[1]], [H[0], H[1]], lambda h: mine[h.name], opts(), sleep=settle,
                     clock=clock)
    assert out == [Outcome("h0", True, "drained", "drained"), Outcome("h1", True, "drained", "drained")]
    assert [n for n, _ in mine["h0"].drain_reasons] == ["h0"]
    assert {n for n, _ in mine["h1"].drain_reasons} == {"h1"}


def test_a_pool_host_whose_scheduler_cannot_be_asked_counts_as_unavailable(conn: sqlite3.Connection,
                                                                           sched: Sched) -> None:
    sched.state_error["h7"] = SchedulerError("timeout")
    echoed: list[str] = []
    out = drain(conn, sched, [H[0]], echoed, wait=False)
    assert out == [Outcome("h0", True, "draining", "draining (not waiting)")]
    assert echoed[0] == "max-unavailable 8 of 8 hosts; unavailable now 1 (h7); after this drain 2"


def test_nothing_to_drain_asks_nothing_of_the_pool(conn: sqlite3.Connection, sched: Sched) -> None:
    put(conn, "h0", S.QUARANTINED)
    assert drain(conn, sched, [H[0]])[0].message == "already out of service (quarantined, no reason)"
    assert sched.asked == ["h0"]


def test_undrain_goes_on_after_a_host_changed_during_the_health_check(conn: sqlite3.Connection,
                                                                      sched: Sched) -> None:
    for n in ("h0", "h1"):
        put(conn, n, S.DRAINED, reason="r")
        sched.nodes[n] = NodeState(SchedState.DRAINED, "fleetctl:bob: r", "idle+drain")

    def health(hosts: Sequence[HostLike]) -> dict[str, str | None]:
        hs.transition(conn, "h0", S.MAINTAINING, actor="maintain")  # another run wins meanwhile
        return {h.name: None for h in hosts}

    out = core.undrain(conn, [H[0], H[1]], lambda h: sched, health, actor="alice")
    assert out == [Outcome("h0", False, "maintaining", "not undrained: changed meanwhile (h0: expected state "
                           "drained, found maintaining)"),
                   Outcome("h1", True, "active", "back in service")]


def test_status_uses_a_schedulers_pool_view_where_it_has_one(conn: sqlite3.Connection) -> None:
    class Pooled(Sched):
        def pool_states(self, hosts: Sequence[HostLike]) -> dict[str, NodeState]:
            return {h.name: NodeState(SchedState.DRAINED, "fleetctl:bob: r", "pool view") for h in hosts}

    pooled = Pooled()
    [row] = core.status(conn, [H[0]], lambda h: pooled)
    assert (row.scheduler_state, row.scheduler_detail) == ("drained", "pool view")
    assert pooled.asked == []


def test_every_host_is_looked_at_in_the_round_that_meets_the_deadline(conn: sqlite3.Connection,
                                                                      sched: Sched) -> None:
    for n in ("h1", "h2", "h3"):
        put(conn, n, S.DRAINING, reason="bad fan")
        sched.nodes[n] = NodeState(SchedState.DRAINED, REASON, "idle+drain")
    out = wait(conn, [H[0], H[1], H[2], H[3]], lambda h: sched, opts(timeout_s=0.0))
    assert out == [Outcome("h0", False, "active",
                           "changed meanwhile by someone else (active); stopped waiting"),
                   Outcome("h1", True, "drained", "drained"), Outcome("h2", True, "drained", "drained"),
                   Outcome("h3", True, "drained", "drained")]
