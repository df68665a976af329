"""fleetctl.drain against a fake scheduler behind the same interface as the real adapters."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetctl import drain as core
from fleetctl.errors import FleetctlError, UsageError
from fleetctl.schedulers.base import ForeignDrainError, HostLike, NodeState, SchedState, SchedulerError
from fleetctl.state import db
from fleetctl.state import hosts as hs
from fleetctl.state.hosts import DrainState as S
from fleetctl.validation import Size


@dataclass(frozen=True)
class FakeHost:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


class FakeScheduler:
    """Hosts are active/draining/drained/down; ``jobs`` run until ``finish_after`` state polls."""

    kind = "fake"

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.jobs: dict[str, list[str]] = {}
        self.finish_after: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.down = False  # the whole scheduler unreachable
        self.fail_drain: set[str] = set()
        self.fail_undrain: set[str] = set()

    def _node(self, host: HostLike) -> NodeState:
        return self.nodes.setdefault(host.name, NodeState(SchedState.ACTIVE))

    def state(self, host: HostLike) -> NodeState:
        if self.down:
            raise SchedulerError("fake controller: connection refused")
        node = self._node(host)
        if node.state is SchedState.DRAINING:
            left = self.finish_after.get(host.name, 0)
            if left <= 0:
                self.jobs[host.name] = []
                node = self.nodes[host.name] = NodeState(SchedState.DRAINED, node.reason, "idle+drain")
            else:
                self.finish_after[host.name] = left - 1
        return node

    def drain(self, host: HostLike, reason: str) -> None:
        self.calls.append(("drain", host.name))
        node = self.state(host)
        if node.foreign_drain:
            raise ForeignDrainError(f"{host.name}: drained by someone else")
        if host.name in self.fail_drain:
            raise SchedulerError(f"{host.name}: update refused")
        if node.state is SchedState.ACTIVE:
            busy = bool(self.jobs.get(host.name))
            self.nodes[host.name] = NodeState(SchedState.DRAINING if busy else SchedState.DRAINED, reason,
                                              "alloc+drain" if busy else "idle+drain")

    def undrain(self, host: HostLike) -> None:
        self.calls.append(("undrain", host.name))
        if host.name in self.fail_undrain:
            raise SchedulerError(f"{host.name}: resume refused")
        self.nodes[host.name] = NodeState(SchedState.ACTIVE)

    def running_workloads(self, host: HostLike) -> list[str]:
        return list(self.jobs.get(host.name, []))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


HOSTS = [FakeHost(f"h{i}") for i in range(5)]


@pytest.fixture()
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db", schema=hs.SCHEMA)


@pytest.fixture()
def sched() -> FakeScheduler:
    return FakeScheduler()


def run_drain(conn: sqlite3.Connection, sched: FakeScheduler, hosts: Sequence[FakeHost],
              clock: Clock | None = None, **kw: Any) -> list[core.Outcome]:
    clock = clock or Clock()
    opts = core.DrainOptions(reason=kw.pop("reason", "bad fan"), actor="alice", poll_s=1.0, **kw)
    return core.drain(conn, hosts, HOSTS, lambda h: sched, opts, sleep=clock.sleep, clock=clock)


def test_drain_idle_host_goes_all_the_way_with_a_tagged_reason(conn: sqlite3.Connection,
                                                               sched: FakeScheduler) -> None:
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert out.ok and out.state == "drained"
    assert sched.nodes["h0"].reason == "fleetctl:alice: bad fan"
    assert [e.to_state for e in hs.audit(conn, "h0")] == ["cordoned", "draining", "drained"]


def test_drain_waits_for_jobs_with_backoff(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    sched.jobs["h0"] = ["job 42"]
    sched.finish_after["h0"] = 12
    clock = Clock()
    [out] = run_drain(conn, sched, [HOSTS[0]], clock)
    assert out.ok and out.state == "drained"
    assert clock.sleeps[:5] == [1.0, 2.0, 4.0, 8.0, 10.0]  # doubling poll interval, capped


def test_drain_timeout_leaves_drain_failed_and_cordoned(conn: sqlite3.Connection,
                                                        sched: FakeScheduler) -> None:
    sched.jobs["h0"] = ["job 42"]
    sched.finish_after["h0"] = 10_000
    [out] = run_drain(conn, sched, [HOSTS[0]], timeout_s=30)
    assert not out.ok and out.state == "drain_failed"
    assert "timed out after 30s" in out.message and "job 42" in out.message
    assert sched.nodes["h0"].state is SchedState.DRAINING  # still unschedulable
    assert hs.get(conn, "h0").state is S.DRAIN_FAILED


def test_no_wait_leaves_draining(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    sched.jobs["h0"] = ["job 1"]
    sched.finish_after["h0"] = 5
    [out] = run_drain(conn, sched, [HOSTS[0]], wait=False)
    assert out.ok and out.state == "draining"
    assert hs.get(conn, "h0").state is S.DRAINING


def test_foreign_drain_is_reported_and_left_alone(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    sched.nodes["h0"] = NodeState(SchedState.DRAINED, "bob: replacing PSU", "idle+drain")
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert not out.ok and "someone else" in out.message and "replacing PSU" in out.message
    assert sched.nodes["h0"].reason == "bob: replacing PSU"
    assert ("drain", "h0") not in sched.calls
    assert hs.audit(conn, "h0") == []


def test_scheduler_down_aborts_with_nothing_written(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    sched.down = True
    with pytest.raises(FleetctlError,
                       match="scheduler unavailable for h0, nothing changed: fake controller") as err:
        run_drain(conn, sched, [HOSTS[0]])
    assert err.value.exit_code == 1
    assert hs.audit(conn, "h0") == []


def test_scheduler_refusal_after_cordon_reverts_to_active(conn: sqlite3.Connection,
                                                          sched: FakeScheduler) -> None:
    sched.fail_drain.add("h0")
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert not out.ok and out.state == "active" and "update refused" in out.message
    assert [(e.from_state, e.to_state) for e in hs.audit(conn, "h0")] == [("active", "cordoned"),
                                                                        ("cordoned", "active")]


def test_missing_reason_is_a_usage_error(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    with pytest.raises(UsageError, match="reason is required") as err:
        run_drain(conn, sched, [HOSTS[0]], reason="  ")
    assert err.value.exit_code == 2


def test_budget_refusal_has_the_numbers_and_changes_nothing(conn: sqlite3.Connection,
                                                            sched: FakeScheduler) -> None:
    sched.nodes["h4"] = NodeState(SchedState.DOWN, None, "down")  # down hosts count
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert not out.ok
    assert "max-unavailable is 1 of 5 hosts; 1 already unavailable (h4) + 1 requested = 2" in out.message
    assert sched.nodes.get("h0", NodeState(SchedState.ACTIVE)).state is SchedState.ACTIVE
    outs = run_drain(conn, sched, HOSTS[:2], max_unavailable=Size(60, percent=True))  # 3 of 5
    assert all(o.ok for o in outs)


def test_rerun_after_kill_resumes_without_recounting(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    # a fleetctl killed while waiting: the record says draining, the jobs have since ended
    sched.jobs["h0"] = ["job 7"]
    sched.finish_after["h0"] = 1
    run_drain(conn, sched, [HOSTS[0]], wait=False)
    sched.nodes["h3"] = NodeState(SchedState.DOWN, None, "down")  # budget now full
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert out.ok and out.state == "drained"
    assert hs.audit(conn, "h0")[-1].to_state == "drained"


def test_kill_after_the_cordon_record_but_before_the_scheduler_call(conn: sqlite3.Connection,
                                                                    sched: FakeScheduler) -> None:
    hs.transition(conn, "h0", S.CORDONED, actor="alice", reason="fleetctl:alice: bad fan")
    [row] = core.status(conn, [HOSTS[0]], lambda h: sched)
    assert row.state == "cordoned" and row.scheduler_state == "active"
    assert row.note == "interrupted before the scheduler was told: re-run drain, or undrain"
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert out.ok and out.state == "drained" and sched.nodes["h0"].state is SchedState.DRAINED
    # undrain of a host whose record is only cordoned works too (nothing was done yet)
    hs.transition(conn, "h1", S.CORDONED, actor="alice")
    [out] = core.undrain(conn, [HOSTS[1]], lambda h: sched, healthy)
    assert out.ok and hs.get(conn, "h1").state is S.ACTIVE


def test_kill_during_undrain_then_rerun(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])
    hs.transition(conn, "h0", S.ACTIVE, actor="bob", note="undrain")  # recorded, then killed
    [row] = core.status(conn, [HOSTS[0]], lambda h: sched)
    assert row.note == "interrupted undrain: re-run undrain"
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy)
    assert out.ok and sched.nodes["h0"].state is SchedState.ACTIVE


def test_already_drained_is_ok_and_idempotent(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])
    n = len(hs.audit(conn, "h0"))
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert out.ok and out.message == "already drained"
    assert len(hs.audit(conn, "h0")) == n


def test_dry_run_changes_nothing(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    lines: list[str] = []
    opts = core.DrainOptions(reason="x", actor="a", dry_run=True)
    core.drain(conn, [HOSTS[0]], HOSTS, lambda h: sched, opts, echo=lines.append)
    assert hs.audit(conn, "h0") == [] and sched.calls == []
    assert any("drain h0" in ln for ln in lines)


# --- undrain ----------------------------------------------------------------------------------


def healthy(hosts: Sequence[HostLike]) -> dict[str, str | None]:
    return {h.name: None for h in hosts}


def test_undrain_puts_a_healthy_host_back(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, actor="bob")
    assert out.ok and out.state == "active"
    assert sched.nodes["h0"].state is SchedState.ACTIVE
    assert hs.audit(conn, "h0")[-1].actor == "bob"


def test_undrain_refuses_an_unhealthy_host_unless_forced(conn: sqlite3.Connection,
                                                         sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])

    def sick(hosts: Sequence[HostLike]) -> dict[str, str | None]:
        return {h.name: "agent reports unhealthy (xid: XID 79)" for h in hosts}

    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, sick, actor="bob")
    assert not out.ok and "XID 79" in out.message and "--force" in out.message
    assert sched.nodes["h0"].state is SchedState.DRAINED
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, sick, actor="bob", force=True)
    assert out.ok and sched.nodes["h0"].state is SchedState.ACTIVE


def test_undrain_never_touches_a_foreign_drain(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    sched.nodes["h0"] = NodeState(SchedState.DRAINED, "bob: PSU", "idle+drain")
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, force=True)
    assert not out.ok and "someone else" in out.message
    assert ("undrain", "h0") not in sched.calls


def test_undrain_of_quarantined_needs_force(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])
    hs.transition(conn, "h0", S.MAINTAINING, actor="m")
    hs.transition(conn, "h0", S.QUARANTINED, actor="m", note="verify failed")
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy)
    assert not out.ok and "quarantined" in out.message
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, force=True)
    assert out.ok and hs.get(conn, "h0").state is S.ACTIVE


def test_undrain_loses_to_maintenance_that_started_during_the_health_check(conn: sqlite3.Connection,
                                                                         sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])

    def slow_check(hosts: Sequence[HostLike]) -> dict[str, str | None]:
        # While the agents are asked, a maintain run takes the host.
        hs.transition(conn, "h0", S.MAINTAINING, actor="maint", owner="other:1", run_id="r1")
        return {h.name: None for h in hosts}

    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, slow_check, actor="bob")
    assert not out.ok and out.state == "maintaining" and "changed meanwhile" in out.message
    assert hs.get(conn, "h0").state is S.MAINTAINING
    assert ("undrain", "h0") not in sched.calls
    assert sched.nodes["h0"].state is SchedState.DRAINED


def test_failed_undrain_restores_the_record(conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    run_drain(conn, sched, [HOSTS[0]])
    sched.fail_undrain.add("h0")
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy)
    assert not out.ok and "resume refused" in out.message
    assert hs.get(conn, "h0").state is S.DRAINED


def test_status_shows_both_sides_and_a_note_when_they_disagree(conn: sqlite3.Connection,
                                                               sched: FakeScheduler) -> None:
    sched.jobs["h0"] = ["job 9"]
    sched.finish_after["h0"] = 1
    run_drain(conn, sched, [HOSTS[0]], wait=False)
    rows = {r.host: r for r in core.status(conn, HOSTS[:2], lambda h: sched)}
    assert rows["h0"].state == "draining" and rows["h0"].scheduler_state == "draining"
    assert rows["h0"].workloads == ["job 9"] and rows["h0"].actor == "alice"
    rows = {r.host: r for r in core.status(conn, HOSTS[:2], lambda h: sched)}
    assert rows["h0"].scheduler_state == "drained"
    assert rows["h0"].note == "no workload left: re-run drain to record it"
    assert rows["h1"].state == "active" and rows["h1"].note is None


# --- scheduler none: the drained file, through the real local runner ---------------------------


def test_none_scheduler_writes_and_removes_the_drained_file(tmp_path: Path) -> None:
    from fleetctl.schedulers.none import NoneScheduler

    path = tmp_path / "agent" / "drained"
    host = FakeHost("h", vars={"ansible_connection": "local", "fleet_agent_drained_file": str(path)})
    s = NoneScheduler()
    assert s.state(host).state is SchedState.ACTIVE
    s.drain(host, "fleetctl:al: disk")
    assert path.read_text() == "fleetctl:al: disk\n"
    assert not list(path.parent.glob("*tmp*"))  # written through a temp file, renamed
    st = s.state(host)
    assert st.state is SchedState.DRAINED and st.reason == "fleetctl:al: disk" and st.ours
    s.undrain(host)
    assert not path.exists()
    path.write_text("drained by hand\n")
    with pytest.raises(ForeignDrainError, match="drained by hand"):
        s.drain(host, "fleetctl:al: disk")
    with pytest.raises(ForeignDrainError):
        s.undrain(host)
    assert path.read_text() == "drained by hand\n"


def test_none_scheduler_rejects_a_relative_path_and_reports_unreadable_files(tmp_path: Path) -> None:
    from fleetctl.schedulers.none import NoneScheduler

    with pytest.raises(SchedulerError, match="must be an absolute path"):
        NoneScheduler().state(FakeHost("h", vars={"ansible_connection": "local",
                                                  "fleet_agent_drained_file": "drained"}))
    (tmp_path / "dir").mkdir()
    with pytest.raises(SchedulerError, match=r"h: cannot read .*dir: .*Is a directory"):
        NoneScheduler().state(FakeHost("h", vars={"ansible_connection": "local",
                                                  "fleet_agent_drained_file": str(tmp_path / "dir")}))


# --- the command wrapper: one line and an exit code, never a traceback --------------------------


def test_unreadable_state_database_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fleetctl.cli import app

    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1: {fleet_scheduler: none}\n")
    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for args in (["drain", "h1", "-r", "x"], ["undrain", "h1"], ["status", "h1"]):
        result = CliRunner().invoke(app, [*args, "-i", str(inv), "--db", str(not_a_dir / "state.db")])
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)  # not an escaped sqlite3/OS error
        assert f"state database {not_a_dir / 'state.db'}" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("error", "code", "text"), [
    (hs.TransitionError("h1: expected state drained, found maintaining"), 1, "state conflict: h1:"),
    (sqlite3.OperationalError("disk I/O error"), 2, "state database: disk I/O error"),
])
def test_state_errors_from_the_core_become_one_line(error: Exception, code: int, text: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from fleetctl.commands import run_command
    from fleetctl.errors import state_database

    def body() -> int:
        with state_database():  # the boundary every command uses its state database behind
            raise error

    with pytest.raises(typer.Exit) as exited:
        run_command("undrain", body)()
    assert exited.value.exit_code == code
    err = capsys.readouterr().err
    assert err.startswith(f"fleetctl undrain: {text}"), err
    assert len(err.strip().splitlines()) == 1


def test_drain_refuses_a_host_under_a_live_provision_lock_unless_forced(conn: sqlite3.Connection,
                                                                        sched: FakeScheduler) -> None:
    import os

    from fleetctl.state import locks
    from fleetctl.state.runs import this_machine

    for statement in locks.SCHEMA:
        conn.execute(statement)
    holder = locks.Holder("r-20260101-abc", "provision site.yml", "carol", this_machine(), os.getpid())
    locks.acquire(conn, ["h0"], holder)
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert not out.ok and "r-20260101-abc" in out.message and "carol" in out.message
    assert "--force" in out.message
    assert ("drain", "h0") not in sched.calls and hs.get(conn, "h0").state is S.ACTIVE
    # The lock's own holder (maintain draining its batch) is not refused; nor is --force.
    [out] = run_drain(conn, sched, [HOSTS[0]], lock_holder="r-20260101-abc")
    assert out.ok and out.state == "drained"
    locks.acquire(conn, ["h1"], holder)
    [out] = run_drain(conn, sched, [HOSTS[1]], force=True, max_unavailable=Size(2))
    assert out.ok and out.state == "drained"


def test_undrain_refuses_a_host_another_run_holds_unless_forced(conn: sqlite3.Connection,
                                                                sched: FakeScheduler) -> None:
    import os

    from fleetctl.state import locks
    from fleetctl.state.runs import this_machine

    run_drain(conn, sched, [HOSTS[0]])
    for statement in locks.SCHEMA:
        conn.execute(statement)
    locks.acquire(conn, ["h0"], locks.Holder("maintain:m-1", "maintain site.yml", "bob", this_machine(),
                                            os.getpid()))
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, actor="alice")
    assert not out.ok and "maintain:m-1" in out.message and "--force" in out.message
    assert ("undrain", "h0") not in sched.calls and hs.get(conn, "h0").state is S.DRAINED
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, actor="m", lock_holder="maintain:m-1")
    assert out.ok and out.state == "active"  # the lock's own holder


def test_a_host_undrained_by_someone_else_during_the_wait_is_left_alone(conn: sqlite3.Connection,
                                                                        sched: FakeScheduler) -> None:
    sched.jobs["h0"] = ["job 1"]
    sched.finish_after["h0"] = 100
    clock = Clock()
    undone = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if not undone:  # another admin undrains it while the drain waits for its jobs
            undone.append(core.undrain(conn, [HOSTS[0]], lambda h: sched, None, actor="bob", force=True))

    opts = core.DrainOptions(reason="bad fan", actor="alice", poll_s=1.0, wait=True, timeout_s=30)
    [out] = core.drain(conn, [HOSTS[0]], HOSTS, lambda h: sched, opts, sleep=sleep, clock=clock)
    assert undone[0][0].ok
    assert not out.ok and "changed meanwhile by bob" in out.message and out.state == "active"
    after = sched.calls[sched.calls.index(("undrain", "h0")):]
    assert ("drain", "h0") not in after  # not drained again behind bob's back
    assert hs.get(conn, "h0").state is S.ACTIVE


# --- state a newer fleetctl wrote (#17 item 7) -------------------------------------------------


def test_a_host_in_a_state_this_fleetctl_does_not_know_is_shown_and_left_alone(
        conn: sqlite3.Connection, sched: FakeScheduler) -> None:
    conn.execute("INSERT INTO host_state VALUES "
                 "('h0', 'rebooting', 'fleetctl:bob: fw', 'bob', 1.0, 'other:1', 'r-9')")
    sched.nodes["h0"] = NodeState(SchedState.DRAINED, "fleetctl:bob: fw", "idle+drain")
    [st] = core.status(conn, [HOSTS[0]], lambda h: sched)
    assert st.state == "rebooting" and st.reason == "fleetctl:bob: fw"
    assert st.note == "state unknown to this fleetctl (a newer one wrote it): left alone"
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert not out.ok and out.state == "rebooting"
    assert "'rebooting' is unknown to this fleetctl" in out.message
    for force in (False, True):
        [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, actor="alice", force=force)
        assert not out.ok and "unknown to this fleetctl" in out.message
    assert [c for c in sched.calls if c[0] in ("drain", "undrain")] == []
    assert conn.execute("SELECT state FROM host_state WHERE host = 'h0'").fetchone()[0] == "rebooting"
    # and it holds one unit of max-unavailable like any host out of service
    [out] = run_drain(conn, sched, [HOSTS[1]])
    assert not out.ok and "1 already unavailable (h0)" in out.message


def _inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1: {fleet_scheduler: none, ansible_connection: local, "
                   f"fleet_agent_drained_file: {tmp_path / 'drained'}}}\n")
    return inv


def test_a_database_of_a_newer_schema_reads_for_status_and_refuses_drain_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from fleetctl.cli import app

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "state.db"
    c = db.connect(path)
    c.execute("INSERT INTO host_state VALUES ('h1', 'rebooting', 'fleetctl:bob: fw', 'bob', 1.0, NULL, NULL)")
    c.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    c.close()
    common = ["-i", str(_inventory(tmp_path)), "--db", str(path)]
    shown = CliRunner().invoke(app, ["status", "h1", "--json", *common])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["hosts"][0]["state"] == "rebooting"
    for args in (["drain", "h1", "-r", "x"], ["undrain", "h1", "--force"]):
        refused = CliRunner().invoke(app, [*args, *common])
        assert refused.exit_code == 2, refused.output
        assert refused.output.strip().splitlines() == [
            f"fleetctl {args[0]}: state database {path} is schema version {db.SCHEMA_VERSION + 1}, "
            f"written by a newer fleetctl; this fleetctl knows up to version {db.SCHEMA_VERSION}: "
            "it can read it (status, hosts, runs list) "
            "but changes nothing: upgrade fleetctl"]
    assert not (tmp_path / "drained").exists()  # the scheduler was never told


def test_db_into_a_missing_directory_is_one_line_and_creates_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fleetctl.cli import app

    monkeypatch.setenv("FLEETCTL_CACHE_DIR", str(tmp_path / "cache"))
    missing = tmp_path / "no" / "such" / "state.db"
    for args in (["status", "h1", "-i", str(_inventory(tmp_path))], ["runs", "list"]):
        result = CliRunner().invoke(app, [*args, "--db", str(missing)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert f"directory {missing.parent} does not exist" in result.output
    assert not (tmp_path / "no").exists()


# --- inputs past what the scheduler takes; failures half-way (#17 item 8) -----------------------


class NamedScheduler(FakeScheduler):
    """A fake with a real adapter's kind and node name, for the limits of that kind."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    @staticmethod
    def node_name(host: HostLike) -> str:
        return str(host.vars.get("node") or host.name)


def test_a_reason_too_long_for_slurm_is_refused_before_anything_is_asked(conn: sqlite3.Connection) -> None:
    from fleetctl.validation import MAX_ARG_BYTES

    sched = NamedScheduler("slurm")
    with pytest.raises(UsageError, match=r"^h0: --reason is too long for Slurm: .* at most 131072; "
                                         r"shorten it \(and 1 more hosts\); nothing changed$"):
        run_drain(conn, sched, HOSTS[:2], reason="x" * MAX_ARG_BYTES)
    assert sched.calls == [] and hs.audit(conn) == []
    # the longest that fits goes through: the limit is the tool's, not a guess below it
    command = "sudo -n -- scontrol update NodeName=h0 State=DRAIN 'Reason=fleetctl:alice: '"
    fits = MAX_ARG_BYTES - 1 - len(command)
    [out] = run_drain(conn, sched, [HOSTS[0]], reason="y" * fits)
    assert out.ok, out.message
    with pytest.raises(UsageError, match="too long for Slurm"):
        run_drain(conn, sched, [HOSTS[1]], reason="y" * (fits + 1))


def test_kubernetes_names_and_annotation_sizes_are_refused_up_front(conn: sqlite3.Connection) -> None:
    sched = NamedScheduler("kubernetes")
    for node in ("GPU_Node1", "n" * 254):
        with pytest.raises(UsageError, match=r"is not a Kubernetes node name: .* at most 253"):
            run_drain(conn, sched, [FakeHost("h0", vars={"node": node})])
    with pytest.raises(UsageError, match=r"too long for Kubernetes: .* at most 262144"):
        run_drain(conn, sched, [HOSTS[0]], reason="z" * 262144)
    assert sched.calls == [] and hs.audit(conn) == []
    [out] = run_drain(conn, sched, [FakeHost("h0", vars={"node": "n" * 253})], reason="z" * 200_000)
    assert out.ok, out.message


class Breaking(FakeScheduler):
    """The scheduler's client breaks in a way no adapter foresaw, once the host is recorded."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    def drain(self, host: HostLike, reason: str) -> None:
        if self.error is not None:
            raise self.error
        super().drain(host, reason)

    def undrain(self, host: HostLike) -> None:
        if self.error is not None:
            raise self.error
        super().undrain(host)


@pytest.mark.parametrize("error", [OSError(7, "Argument list too long"), RuntimeError("client bug")])
def test_a_failure_half_way_is_an_outcome_recorded_and_resumable(conn: sqlite3.Connection,
                                                                 error: Exception) -> None:
    sched = Breaking(error)
    [out] = run_drain(conn, sched, [HOSTS[0]])  # no exception escapes
    assert not out.ok and out.state == "cordoned"
    assert f"unexpected error: {type(error).__name__}" in out.message and "re-run drain" in out.message
    assert hs.get(conn, "h0").state is S.CORDONED
    [st] = core.status(conn, [HOSTS[0]], lambda h: sched)
    assert st.note == "interrupted before the scheduler was told: re-run drain, or undrain"
    sched.error = None  # fixed: the re-run carries on without a second budget unit
    [out] = run_drain(conn, sched, [HOSTS[0]])
    assert out.ok and out.state == "drained"
    sched.error = error
    [out] = core.undrain(conn, [HOSTS[0]], lambda h: sched, healthy, actor="alice")
    assert not out.ok and out.state == "drained" and "undrain failed: unexpected error" in out.message
    assert hs.get(conn, "h0").state is S.DRAINED


def test_undrain_health_gate_never_trusts_another_hosts_agent() -> None:
    from agent_peers import node_json, threaded_agent

    from fleetctl.inventory import Host

    with threaded_agent(node_json("gpu-2")) as port:
        gpu1 = Host("gpu-1", "127.0.0.1", ("gpu_nodes",), {}, agent_port=port)  # a copied address
        gpu2 = Host("gpu-2", "127.0.0.1", ("gpu_nodes",), {}, agent_port=port)
        verdicts = core.agent_health([gpu1], inventory=[gpu1, gpu2])
        assert verdicts["gpu-1"] is not None and "gpu-2" in verdicts["gpu-1"]  # the answer is gpu-2's
        assert core.agent_health([gpu2]) == {"gpu-2": None}  # its own agent: healthy
        both = core.agent_health([gpu1, gpu2])  # one endpoint for two hosts: it is gpu-2's agent
        assert both["gpu-1"] is not None and both["gpu-2"] is None
    with threaded_agent(node_json("node17")) as port:  # gpu-2's own agent, its hostname set by hand
        gpu2 = Host("gpu-2", "127.0.0.1", ("gpu_nodes",), {}, agent_port=port)
        assert core.agent_health([gpu2]) == {"gpu-2": None}  # judged on its report, not refused
