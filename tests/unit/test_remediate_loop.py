"""The remediation loop's engine over the real SQLite store and fake steps: rounds, the per-step audit,
quarantine on a failed step, resume after a kill at any step, Ctrl-C after the current step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fleet_agent.verdict import HostHealth

from fleetctl.remediate.loop import Engine, RoundResult, keep_window_s
from fleetctl.remediate.policy import parse_policy
from fleetctl.report.model import HostRow, ProblemRow
from fleetctl.state import db
from fleetctl.state import remediation as rstate
from fleetctl.state.remediation import RemediationRecord, SqlStore
from fleetctl.state.runs import this_machine

POLICY = parse_policy("""\
hysteresis: {count: 3, span_s: 60}
flap_damping: {max_remediations: 2, window_s: 3600}
budgets:
  max_unavailable: [{scope: all, max: 2}]
  max_starts_per_hour: 10
fleet_stop: [{scope: all, fraction: 0.5}]
actions:
  reset_chip: {steps: [drain, reset_gpu, burn_in, undrain]}
  reboot: {steps: [drain, reboot, burn_in, undrain]}
  check_hardware: {terminal: quarantine}
  rma: {terminal: rma}
""", "policy.yaml")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the engine but its ``finally``."""


@dataclass
class FakeSteps:
    """Records each step; fails or 'kills' at the steps it is told; hosts it drained are out of service."""

    fail: dict[str, str] = field(default_factory=dict)
    kill_at: str | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    out: dict[str, str] = field(default_factory=dict)

    busy: str | None = None  # claim's answer: another loop's live host lock

    def out_of_service(self, hosts: Sequence[str]) -> Mapping[str, str]:
        return {h: s for h, s in self.out.items() if h in hosts}

    def claim(self, rec: RemediationRecord) -> str | None:
        return self.busy

    def run(self, step: str, rec: RemediationRecord) -> str | None:
        if step == self.kill_at:
            self.kill_at = None
            raise Killed(step)
        self.calls.append((step, rec.host))
        if step in self.fail:
            return self.fail[step]
        if step == "drain":
            self.out[rec.host] = "drained"
        elif step == "undrain":
            self.out.pop(rec.host, None)
        return None

    def quarantine(self, rec: RemediationRecord, why: str) -> None:
        self.quarantined.append((rec.host, why))
        self.out[rec.host] = "quarantined"

    def released(self, rec: RemediationRecord) -> None:
        pass


def row(name: str, status: HostHealth = HostHealth.HEALTHY, action: str = "reset_chip",
        chip: int | None = 1) -> HostRow:
    problems = [] if status is HostHealth.HEALTHY else [
        ProblemRow("xid", "critical", "XID 95: uncontained ECC error", action, chip)]
    return HostRow(name, "127.0.0.1", 1, ("gpu",), status, problems=problems)


def fleet(bad: Sequence[str] = (), action: str = "reset_chip") -> list[HostRow]:
    return [row(f"h{i}", HostHealth.UNHEALTHY if f"h{i}" in bad else HostHealth.HEALTHY, action)
            for i in range(1, 7)]


@pytest.fixture()
def store(tmp_path: Path) -> SqlStore:
    conn = db.connect(tmp_path / "state.db", schema=rstate.SCHEMA)
    return SqlStore(conn)


class Clock:
    """The rounds' time: each round sets it; the engine stamps a remediation's end with it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def engine(store: SqlStore, steps: FakeSteps, **kw: object) -> Engine:
    clock = Clock()
    e = Engine(POLICY, store, steps, actor="sre1", interval_s=30.0, clock=clock, **kw)  # type: ignore[arg-type]
    real_round = e.round

    def round(rows: Sequence[HostRow], now: float, *, apply: bool, record: bool = True) -> RoundResult:
        clock.now = now
        return real_round(rows, now, apply=apply, record=record)

    e.round = round  # type: ignore[method-assign]
    return e


def test_a_host_unhealthy_three_rounds_over_a_minute_is_drained_reset_burned_in_and_returned(
        store: SqlStore) -> None:
    steps = FakeSteps()
    e = engine(store, steps)
    for t in (0.0, 30.0):
        result = e.round(fleet(["h2"]), 1000.0 + t, apply=True)
        assert result.plan.actions == [] and steps.calls == []
        assert [(s.host, s.kind) for s in result.plan.skipped] == [("h2", "hysteresis")]
    result = e.round(fleet(["h2"]), 1060.0, apply=True)
    assert [(a.host, a.action) for a in result.plan.actions] == [("h2", "reset_chip")]
    assert steps.calls == [("drain", "h2"), ("reset_gpu", "h2"), ("burn_in", "h2"), ("undrain", "h2")]
    [done] = result.finished
    assert done.ok and done.state == "done"
    rec = store.get(done.id)
    assert rec.chips == (1,) and rec.state == "done" and rec.next_step == 4 and not rec.step_open
    audit = [(s.step, s.phase) for s in store.steps(done.id)]
    assert audit == [(step, phase) for step in ("drain", "reset_gpu", "burn_in", "undrain")
                     for phase in ("started", "ended")]
    # back in service and healthy: nothing more to do
    result = e.round(fleet(), 1090.0, apply=True)
    assert result.plan.actions == [] and result.finished == []


def test_without_apply_the_round_records_and_plans_but_acts_on_nothing(store: SqlStore) -> None:
    steps = FakeSteps()
    e = engine(store, steps)
    for t in (0.0, 30.0, 60.0):
        result = e.round(fleet(["h2"]), 1000.0 + t, apply=False)
    assert [a.host for a in result.plan.actions] == ["h2"]
    assert steps.calls == [] and store.open() == [] and store.recent() == []
    assert [o.at for o in store.observations(0.0)["h2"]] == [1000.0, 1030.0, 1060.0]


def _three_rounds(e: Engine, bad: Sequence[str] = ("h2",), action: str = "reset_chip") -> list[RoundResult]:
    out = []
    for t in (0.0, 30.0, 60.0):
        out.append(e.round(fleet(bad, action), 1000.0 + t, apply=True))
    return out


def test_a_failed_repair_quarantines_the_host_and_never_undrains_it(store: SqlStore) -> None:
    steps = FakeSteps(fail={"burn_in": "agent reports unhealthy (XID 95)"})
    *_, result = _three_rounds(engine(store, steps))
    assert steps.calls == [("drain", "h2"), ("reset_gpu", "h2"), ("burn_in", "h2")]
    assert steps.quarantined == [("h2", "burn_in failed: agent reports unhealthy (XID 95)")]
    [rec] = store.recent()
    assert rec.state == "quarantined" and rec.outcome == "burn_in failed: agent reports unhealthy (XID 95)"
    assert [(s.step, s.phase) for s in store.steps(rec.id)][-1] == ("burn_in", "failed")
    # the host is out of the fleet now: later rounds leave it alone
    result = engine(store, steps).round(fleet(["h2"]), 1090.0, apply=True)
    assert [(s.host, s.kind) for s in result.plan.skipped] == [("h2", "unavailable")]


def test_a_failed_drain_ends_the_remediation_as_failed_without_quarantine(store: SqlStore) -> None:
    steps = FakeSteps(fail={"drain": "refused: max-unavailable is 1 of 6 hosts"})
    _three_rounds(engine(store, steps))
    assert steps.calls == [("drain", "h2")] and steps.quarantined == []
    [rec] = store.recent()
    assert rec.state == "failed" and (rec.outcome or "").startswith("drain failed: refused")


@pytest.mark.parametrize("kill_at", ["drain", "reset_gpu", "burn_in", "undrain"])
def test_killed_at_any_step_the_next_run_resumes_there_without_doubling_what_was_done(
        store: SqlStore, kill_at: str) -> None:
    steps = FakeSteps(kill_at=kill_at)
    with pytest.raises(Killed):
        _three_rounds(engine(store, steps))
    [rec] = store.open()
    assert rec.steps[rec.next_step] == kill_at and rec.step_open  # recorded as started, never ended
    # the next run (a new engine: a new process) resumes it first, before planning anything
    result = engine(store, steps).round(fleet(["h2"]), 1090.0, apply=True)
    [done] = result.finished
    assert done.resumed and done.ok and done.id == rec.id
    order = ["drain", "reset_gpu", "burn_in", "undrain"]
    assert [s for s, _ in steps.calls] == order  # each once: the killed step ran once, after the kill
    assert store.open() == [] and len(store.recent()) == 1


def test_a_reboot_that_started_and_was_not_seen_to_end_is_not_repeated(store: SqlStore) -> None:
    steps = FakeSteps(kill_at="reboot")
    with pytest.raises(Killed):
        _three_rounds(engine(store, steps), action="reboot")
    result = engine(store, steps).round(fleet(["h2"], "reboot"), 1090.0, apply=True)
    [done] = result.finished
    assert done.ok
    assert [s for s, _ in steps.calls] == ["drain", "burn_in", "undrain"]
    phases = [(s.step, s.phase) for s in store.steps(done.id)]
    assert ("reboot", "skipped") in phases and ("reboot", "ended") not in phases
    skipped = next(s for s in store.steps(done.id) if s.phase == "skipped")
    assert "not idempotent" in (skipped.detail or "")


def test_ctrl_c_stops_after_the_step_in_progress_recorded_interrupted_then_resumed(store: SqlStore) -> None:
    steps = FakeSteps()
    pressed = {"now": False}

    class Stopping(FakeSteps):
        def run(self, step: str, rec: RemediationRecord) -> str | None:
            got = FakeSteps.run(steps, step, rec)
            if step == "drain":
                pressed["now"] = True  # Ctrl-C while the drain waits
            return got

    e = engine(store, Stopping(), stop=lambda: pressed["now"])
    e.round(fleet(["h2"]), 1000.0, apply=True)
    e.round(fleet(["h2"]), 1030.0, apply=True)
    result = e.round(fleet(["h2"]), 1060.0, apply=True)
    assert result.interrupted and steps.calls == [("drain", "h2")]
    [rec] = store.recent()
    assert rec.state == "interrupted" and rec.steps[rec.next_step] == "reset_gpu" and not rec.step_open
    pressed["now"] = False
    result = engine(store, steps).round(fleet(["h2"]), 1090.0, apply=True)
    assert [s for s, _ in steps.calls] == ["drain", "reset_gpu", "burn_in", "undrain"]
    assert result.finished[0].resumed and store.get(rec.id).state == "done"


def test_a_terminal_action_drains_and_marks_the_host(store: SqlStore) -> None:
    steps = FakeSteps()
    _three_rounds(engine(store, steps), action="check_hardware")
    assert steps.calls == [("drain", "h2"), ("quarantine", "h2")]
    [rec] = store.recent()
    assert rec.kind == "quarantine" and rec.state == "quarantined"


def test_a_fleet_wide_event_starts_nothing_and_says_so(store: SqlStore) -> None:
    steps = FakeSteps()
    *_, result = _three_rounds(engine(store, steps), bad=("h1", "h2", "h3"))
    assert result.plan.fleet_stopped and steps.calls == []
    [stop] = result.plan.stops
    assert stop.message() == "3 of 6 hosts unhealthy (50%) >= 50%: automatic action stopped; a person's call"


def test_the_budget_holds_across_rounds_while_hosts_are_out(store: SqlStore) -> None:
    steps = FakeSteps(fail={"burn_in": "still broken"})  # each stays out, quarantined
    e = engine(store, steps)
    _three_rounds(e, bad=("h1", "h2"))
    assert sorted(h for s, h in steps.calls if s == "drain") == ["h1", "h2"]  # max_unavailable 2
    result = e.round(fleet(["h1", "h2", "h3"]), 1090.0, apply=True)
    # h3 became unhealthy later; with two out it would make three: its streak is too short anyway,
    # and once it is long enough the budget holds it
    for t in (1120.0, 1150.0):
        result = e.round(fleet(["h1", "h2", "h3"]), t, apply=True)
    assert "h3" not in [h for s, h in steps.calls]
    assert [(s.host, s.kind) for s in result.plan.skipped if s.host == "h3"] == [("h3", "budget")]


def test_a_host_repaired_too_often_is_quarantined_instead(store: SqlStore) -> None:
    steps = FakeSteps()
    e = engine(store, steps)
    t = 1000.0
    for _ in range(2):  # two repairs that return the host, each time it fails again
        for _ in range(3):
            e.round(fleet(["h2"]), t, apply=True)
            t += 30.0
    assert [s for s, _ in steps.calls].count("reset_gpu") == 2
    for _ in range(3):
        result = e.round(fleet(["h2"]), t, apply=True)
        t += 30.0
    assert [a.remediation.value for a in result.plan.actions] == ["quarantine"]
    assert "flapping: 2 remediations" in result.plan.actions[0].reason
    assert steps.calls[-2:] == [("drain", "h2"), ("quarantine", "h2")]


def test_observations_are_kept_only_for_the_longest_window(store: SqlStore) -> None:
    e = engine(store, FakeSteps())
    keep = keep_window_s(POLICY, 30.0)
    e.observe(fleet(), 1000.0)
    e.observe(fleet(), 1000.0 + keep + 1)
    assert [o.at for o in store.observations(0.0)["h1"]] == [1000.0 + keep + 1]


# --- the lease ------------------------------------------------------------------------------------


def test_a_second_loop_is_refused_naming_the_holder_until_it_is_gone_or_expired(tmp_path: Path) -> None:
    import os
    import subprocess

    conn = db.connect(tmp_path / "state.db", schema=rstate.SCHEMA)
    gone = subprocess.Popen(["true"])
    gone.wait()
    a = rstate.LeaseHolder("a", "sre1", this_machine(), os.getpid())
    b = rstate.LeaseHolder("b", "sre2", this_machine(), os.getpid())
    assert rstate.acquire_lease(conn, a, ttl_s=60, now=1000.0) is None
    with pytest.raises(rstate.LeaseHeld, match=rf"sre1@{this_machine()} pid {os.getpid()} since "):
        rstate.acquire_lease(conn, b, ttl_s=60, now=1030.0)
    rstate.acquire_lease(conn, a, ttl_s=60, now=1050.0)  # renewal keeps its start
    lease = rstate.current_lease(conn)
    assert lease is not None and lease.since == 1000.0 and lease.expires_at == 1110.0
    # expired: taken over, and the one taken over is named
    taken = rstate.acquire_lease(conn, b, ttl_s=60, now=1111.0)
    assert taken is not None and taken.holder.id == "a"
    with pytest.raises(rstate.LeaseHeld):
        rstate.renew_lease(conn, a, ttl_s=60, now=1112.0)  # a lost it: it must stop
    # a holder whose process is gone on this machine is taken over at once
    dead = rstate.LeaseHolder("c", "sre3", this_machine(), gone.pid)
    rstate.release_lease(conn, b)
    rstate.acquire_lease(conn, dead, ttl_s=3600)
    assert rstate.acquire_lease(conn, a, ttl_s=60) is not None
    # one on another machine is presumed alive until it expires
    rstate.release_lease(conn, a)
    far = rstate.LeaseHolder("d", "sre4", "elsewhere", 1)
    rstate.acquire_lease(conn, far, ttl_s=3600)
    with pytest.raises(rstate.LeaseHeld, match="sre4@elsewhere pid 1"):
        rstate.acquire_lease(conn, a, ttl_s=60)


def test_a_plan_only_look_while_a_loop_runs_never_hastens_its_hysteresis(store: SqlStore) -> None:
    steps = FakeSteps()
    e = engine(store, steps)
    e.round(fleet(["h2"]), 1000.0, apply=True)
    for t in (1005.0, 1010.0, 1015.0):  # a person looking three times in a row
        look = e.round(fleet(["h2"]), t, apply=False, record=False)
        assert "unhealthy 2 of 3" in look.plan.skipped[0].why  # the loop's one + this look's own
    assert [o.at for o in store.observations(0.0)["h2"]] == [1000.0]
    e.round(fleet(["h2"]), 1030.0, apply=True)
    assert steps.calls == []  # still two real observations: waiting


# --- regressions of the issue 19 review -----------------------------------------------------------


class KillIn(FakeSteps):
    """'Killed' as a failed step's consequence is carried out (quarantine), or as the end is recorded."""

    kill_quarantine: bool = True

    def quarantine(self, rec: RemediationRecord, why: str) -> None:
        if self.kill_quarantine:
            raise Killed("quarantine")
        super().quarantine(rec, why)


def _to_failure(store: SqlStore, failing_step: str) -> RemediationRecord:
    steps = KillIn(fail={failing_step: f"{failing_step}: GPU 1 memory test FAIL"})
    e = engine(store, steps)
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            e.round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store.open()
    return rec


@pytest.mark.parametrize("failing_step", ["burn_in", "reset_gpu"])
def test_a_failed_step_killed_before_quarantine_is_quarantined_on_resume_never_run_again(
        store: SqlStore, failing_step: str) -> None:
    rec = _to_failure(store, failing_step)
    assert rec.state == "failing" and rec.outcome and failing_step in rec.outcome
    steps = FakeSteps(out={"h2": "drained"})  # the step would pass now: it must not run
    result = engine(store, steps).round(fleet(["h2"]), 1090.0, apply=True)
    assert steps.calls == [] and [h for h, _ in steps.quarantined] == ["h2"]
    [done] = result.finished
    assert done.state == "quarantined" and done.resumed and f"{failing_step} failed" in done.message
    assert store.get(rec.id).state == "quarantined" and store.open() == []


def test_a_quarantine_done_but_not_recorded_is_done_again_once_and_recorded(store: SqlStore) -> None:
    rec = _to_failure(store, "burn_in")
    steps = KillIn(out={"h2": "drained"})
    steps.kill_quarantine = False

    class KillAtFinish(SqlStore):
        def finish(self, rec: RemediationRecord, state: str, outcome: str, *,
                   at: float | None = None) -> None:
            raise Killed("finish")

    with pytest.raises(Killed):  # the host is quarantined, the record not yet ended
        engine(KillAtFinish(store.conn), steps).round(fleet(["h2"]), 1090.0, apply=True)
    assert store.get(rec.id).state == "failing"
    again = FakeSteps(out={"h2": "quarantined"})
    result = engine(store, again).round(fleet(["h2"]), 1120.0, apply=True)
    assert again.calls == [] and [f.state for f in result.finished] == ["quarantined"]


def test_every_step_done_but_the_end_not_recorded_finishes_without_running_a_step(store: SqlStore) -> None:
    class KillAtFinish(SqlStore):
        def finish(self, rec: RemediationRecord, state: str, outcome: str, *,
                   at: float | None = None) -> None:
            raise Killed("finish")

    steps = FakeSteps()
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(KillAtFinish(store.conn), steps).round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store.open()
    assert rec.next_step == 4 and not rec.step_open
    again = FakeSteps()
    result = engine(store, again).round(fleet(["h2"]), 1090.0, apply=True)
    assert again.calls == [] and [f.state for f in result.finished] == ["done"]


def test_a_loop_that_lost_the_lease_writes_nothing_more_to_the_record(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "s.db", schema=rstate.SCHEMA)
    a = rstate.LeaseHolder("a", "sre1", "elsewhere-a", 1)
    rstate.acquire_lease(conn, a, ttl_s=60, now=1000.0)
    steps = FakeSteps(kill_at="reset_gpu")
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(SqlStore(conn, holder="a"), steps).round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store_open = SqlStore(conn).open()
    assert store_open[0].steps[rec.next_step] == "reset_gpu"
    # a second loop takes the expired lease; the first (alive after all) goes on with its record
    rstate.acquire_lease(conn, rstate.LeaseHolder("b", "sre2", "elsewhere-b", 2), ttl_s=60, now=2000.0)
    before = [(s.step, s.phase) for s in SqlStore(conn).steps(rec.id)]
    loser = engine(SqlStore(conn, holder="a"), FakeSteps(out={"h2": "drained"}))
    assert loser.lease_lost is None
    result = loser.round(fleet(["h2"]), 1090.0, apply=True)
    assert [f.state for f in result.finished] == ["interrupted"] and "lease" in result.finished[0].message
    assert loser.lease_lost is not None and "lease" in loser.lease_lost  # the command exits 1, not 130
    assert [(s.step, s.phase) for s in SqlStore(conn).steps(rec.id)] == before
    assert SqlStore(conn).get(rec.id).state == "running"  # not finish(INTERRUPTED) over b's record


def test_a_remediation_whose_host_lock_another_loop_holds_waits_and_writes_nothing(store: SqlStore) -> None:
    steps = FakeSteps(kill_at="reset_gpu")
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(store, steps).round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store.open()
    busy = FakeSteps(out={"h2": "drained"}, busy="refused: h2 held by remediate:r-1:a")
    result = engine(store, busy).round(fleet(["h2"]), 1090.0, apply=True)
    assert busy.calls == [] and [f.state for f in result.finished] == ["waiting"]
    assert not result.interrupted and store.get(rec.id).step_open  # left as the other loop has it


def test_each_new_start_is_planned_on_a_fresh_observation(store: SqlStore) -> None:
    """Two hosts planned; while the first is remediated a third of the fleet goes bad (a fleet-wide
    event): the second is not started on the stale plan."""
    steps = FakeSteps()
    now_rows: list[list[HostRow]] = [fleet(["h2", "h3"])]
    e = engine(store, steps, rows_now=lambda: now_rows[-1])
    for t in (0.0, 30.0):
        e.round(fleet(["h2", "h3"]), 1000.0 + t, apply=True)
    real_run = steps.run

    def run(step: str, rec: RemediationRecord) -> str | None:
        if step == "undrain":  # the event begins while h2 is worked on
            now_rows.append(fleet(["h3", "h4", "h5", "h6"]))
        return real_run(step, rec)

    steps.run = run  # type: ignore[method-assign]
    result = e.round(fleet(["h2", "h3"]), 1060.0, apply=True)
    assert [f.host for f in result.finished] == ["h2"]
    assert ("drain", "h3") not in steps.calls
    assert result.plan.fleet_stopped and [a.host for a in result.plan.actions] == ["h2"]


def test_an_open_remediation_under_a_fleet_wide_stop_is_held_with_its_host_drained(store: SqlStore) -> None:
    steps = FakeSteps(kill_at="reset_gpu")
    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(store, steps).round(fleet(["h2"]), 1000.0 + t, apply=True)
    [rec] = store.open()
    held = FakeSteps(out={"h2": "drained"})
    result = engine(store, held).round(fleet(["h1", "h2", "h3", "h4"]), 1090.0, apply=True)
    assert result.plan.fleet_stopped and held.calls == []
    [f] = result.finished
    assert f.state == "held" and "automatic action stopped" in f.message and not result.interrupted
    assert store.get(rec.id).state == "interrupted"
    # the stop is gone: the next round resumes it where it was
    later = FakeSteps(out={"h2": "drained"})
    result = engine(store, later).round(fleet(["h2"]), 1120.0, apply=True)
    assert later.calls == [("reset_gpu", "h2"), ("burn_in", "h2"), ("undrain", "h2")]


def test_a_stop_that_begins_between_steps_holds_the_remediation_after_its_step(store: SqlStore) -> None:
    steps = FakeSteps()
    now_rows: list[list[HostRow]] = [fleet(["h2"])]
    e = engine(store, steps, rows_now=lambda: now_rows[-1])
    for t in (0.0, 30.0):
        e.round(fleet(["h2"]), 1000.0 + t, apply=True)
    real_run = steps.run

    def run(step: str, rec: RemediationRecord) -> str | None:
        if step == "reset_gpu":
            now_rows.append(fleet(["h2", "h3", "h4"]))
        return real_run(step, rec)

    steps.run = run  # type: ignore[method-assign]
    result = e.round(fleet(["h2"]), 1060.0, apply=True)
    assert [s for s, _ in steps.calls] == ["drain", "reset_gpu"]
    assert [f.state for f in result.finished] == ["held"]


def test_a_source_that_goes_away_between_steps_holds_the_remediation_and_starts_nothing(
        store: SqlStore) -> None:
    """Prometheus restarts while h2 is worked on: the step in progress ends, the next is not run
    blind (held, resumed once the fleet can be seen again) and h3 is not started on the old plan."""
    from fleetctl.promsource import PrometheusError

    steps = FakeSteps()
    up = [True]

    def rows_now() -> list[HostRow]:
        if not up[-1]:
            raise PrometheusError("http://127.0.0.1:9: cannot query Prometheus: Connection refused")
        return fleet(["h2", "h3"])

    said: list[str] = []
    e = engine(store, steps, rows_now=rows_now, echo=said.append)
    for t in (0.0, 30.0):
        e.round(fleet(["h2", "h3"]), 1000.0 + t, apply=True)
    real_run = steps.run

    def run(step: str, rec: RemediationRecord) -> str | None:
        if step == "drain":
            up.append(False)
        return real_run(step, rec)

    steps.run = run  # type: ignore[method-assign]
    result = e.round(fleet(["h2", "h3"]), 1060.0, apply=True)
    assert steps.calls == [("drain", "h2")] and steps.out == {"h2": "drained"}
    [f] = result.finished
    assert (f.host, f.state) == ("h2", "held") and not result.interrupted
    rec = store.get(f.id)
    assert rec.state == "interrupted" and rec.next_step == 1
    # Asked once, said once; h3, planned on the round's first look, is shown as not started and why.
    assert [line for line in said if line.startswith("no fresh observation of the fleet")] == [
        "no fresh observation of the fleet: http://127.0.0.1:9: cannot query Prometheus: Connection refused; "
        "the rest waits for the next round"]
    assert result.blind is not None and "Connection refused" in result.blind
    assert [a.host for a in result.plan.actions] == ["h2"]
    assert [(k.host, k.kind) for k in result.plan.skipped if k.host == "h3"] == [("h3", "no_observation")]
    assert result.to_dict()["blind"] == result.blind
    # Back: the next round resumes h2 where it was, then plans h3 afresh.
    up.append(True)
    steps.run = real_run  # type: ignore[method-assign]
    e.round(fleet(["h2", "h3"]), 1090.0, apply=True)
    assert steps.calls[1:4] == [("reset_gpu", "h2"), ("burn_in", "h2"), ("undrain", "h2")]
    assert store.get(f.id).state == "done"


def test_without_a_fresh_look_the_other_open_remediations_wait_as_they_are(store: SqlStore) -> None:
    """Two remediations left open (a loop that stopped between steps); the source is down when the
    first's next step needs a fresh look: the second is not resumed blind (not even its next step)."""
    from fleetctl.promsource import PrometheusError

    for host in ("h2", "h3"):  # each drained, its reset not yet begun
        rec = store.start(host, "reset_chip", "repair", ("drain", "reset_gpu", "burn_in", "undrain"), (1,),
                          reason="XID 95", actor="sre1", at=1000.0)
        store.step_started(rec, 0)
        store.step_ended(store.get(rec.id), 0, ok=True)
    assert sorted(r.host for r in store.open()) == ["h2", "h3"]

    def down() -> list[HostRow]:
        raise PrometheusError("http://127.0.0.1:9: cannot query Prometheus: Connection refused")

    steps = FakeSteps(out={"h2": "drained", "h3": "drained"})
    result = engine(store, steps, rows_now=down).round(fleet(["h2", "h3"]), 1200.0, apply=True)
    [first] = result.finished  # the first resumed: its next step, then held before the one after
    assert steps.calls == [("reset_gpu", first.host)] and first.state == "held"
    assert result.blind is not None and not result.interrupted
    assert sorted(r.host for r in store.open()) == ["h2", "h3"]  # both left to be resumed


def test_ctrl_c_during_a_resumed_step_with_the_source_down_is_still_an_interruption(store: SqlStore) -> None:
    from fleetctl.promsource import PrometheusError

    with pytest.raises(Killed):
        for t in (0.0, 30.0, 60.0):
            engine(store, FakeSteps(kill_at="reset_gpu")).round(fleet(["h2"]), 1000.0 + t, apply=True)
    pressed = {"now": False}
    steps = FakeSteps(out={"h2": "drained"})
    real_run = steps.run

    def run(step: str, rec: RemediationRecord) -> str | None:
        pressed["now"] = True  # Ctrl-C while the resumed step runs
        return real_run(step, rec)

    def down() -> list[HostRow]:
        raise PrometheusError("http://127.0.0.1:9: cannot query Prometheus: Connection refused")

    steps.run = run  # type: ignore[method-assign]
    result = engine(store, steps, rows_now=down, stop=lambda: pressed["now"]).round(
        fleet(["h2"]), 1200.0, apply=True)
    assert [f.state for f in result.finished] == ["interrupted"] and result.interrupted


def test_a_one_shot_run_that_could_not_look_again_exits_2() -> None:
    from fleetctl.commands.remediate import _code
    from fleetctl.remediate.plan import Plan

    assert _code(RoundResult(Plan(0.0, [], [], []))) == 0
    assert _code(RoundResult(Plan(0.0, [], [], []), blind="http://127.0.0.1:9: connection refused")) == 2
