"""fleetctl.maintain with a fake scheduler, provisioner and health check (the real ones' interfaces)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetctl import maintain as mcore
from fleetctl.errors import UsageError
from fleetctl.schedulers.base import HostLike, NodeState, SchedState
from fleetctl.state import db, locks
from fleetctl.state import hosts as hs
from fleetctl.state.db import Connection
from fleetctl.state.hosts import DrainState as S
from fleetctl.state.runs import this_machine
from fleetctl.validation import Size


@dataclass(frozen=True)
class FakeHost:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


class FakeScheduler:
    """Drains complete at once; records every call in ``log`` (shared with the other fakes)."""

    kind = "fake"

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.log = log

    def state(self, host: HostLike) -> NodeState:
        return self.nodes.get(host.name, NodeState(SchedState.ACTIVE))

    def drain(self, host: HostLike, reason: str) -> None:
        if self.state(host).state is SchedState.ACTIVE:
            self.log.append(("drain", host.name))
            self.nodes[host.name] = NodeState(SchedState.DRAINED, reason, "idle+drain")

    def undrain(self, host: HostLike) -> None:
        self.log.append(("undrain", host.name))
        self.nodes[host.name] = NodeState(SchedState.ACTIVE)

    def running_workloads(self, host: HostLike) -> list[str]:
        return []


class FakeProvisioner:
    """Records each batch and, given the state database, who held its hosts' locks at the time."""

    def __init__(self, log: list[tuple[str, str]], fail: Mapping[str, str] | None = None,
                 conn: Connection | None = None) -> None:
        self.log = log
        self.fail = dict(fail or {})
        self.batches: list[list[str]] = []
        self.conn = conn
        self.held_by: list[str] = []
        self.lock_holders: list[dict[str, str]] = []

    def __call__(self, hosts: Sequence[HostLike], playbook: str, *,
                 held_by: str) -> Mapping[str, str | None]:
        self.batches.append([h.name for h in hosts])
        self.held_by.append(held_by)
        if self.conn is not None:
            self.lock_holders.append({lk.host: lk.holder.id for lk in locks.held(self.conn)})
        self.log += [("provision", h.name) for h in hosts]
        return {h.name: self.fail.get(h.name) for h in hosts}


class FakeHealth:
    def __init__(self, sick: Mapping[str, str] | None = None) -> None:
        self.sick = dict(sick or {})
        self.asked: list[list[str]] = []

    def __call__(self, hosts: Sequence[HostLike]) -> Mapping[str, str | None]:
        self.asked.append([h.name for h in hosts])
        return {h.name: self.sick.get(h.name) for h in hosts}


HOSTS = [FakeHost(f"h{i}") for i in range(4)]


@pytest.fixture()
def conn(tmp_path: Path) -> Connection:
    return db.connect(tmp_path / "state.db", schema=hs.SCHEMA)


def run(conn: Connection, sched: FakeScheduler, prov: FakeProvisioner, health: FakeHealth,
        hosts: Sequence[FakeHost] = HOSTS, **kw: Any) -> mcore.MaintainResult:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    opts = mcore.MaintainOptions(playbook="site.yml", actor="sre", poll_s=1.0, verify_timeout_s=5, **kw)
    return mcore.maintain(conn, hosts, HOSTS, lambda h: sched, prov, health, opts, sleep=sleep,
                          clock=lambda: now[0])


def test_one_host_failing_verification_is_quarantined_the_rest_come_back(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log)
    health = FakeHealth({"h1": "agent reports unhealthy (XID 79)"})
    result = run(conn, sched, prov, health, max_unavailable=Size(2), max_failures=1)
    by = {o.host: o for o in result.outcomes}
    assert by["h1"].state == "quarantined" and "XID 79" in by["h1"].message
    assert [by[h].state for h in ("h0", "h2", "h3")] == ["active"] * 3
    assert sched.nodes["h1"].state is SchedState.DRAINED  # never undrained automatically
    assert ("undrain", "h1") not in log
    # one batch at a time: drain → provision → undrain before the next host is touched
    assert log[:3] == [("drain", "h0"), ("provision", "h0"), ("undrain", "h0")]
    assert prov.batches == [["h0"], ["h1"], ["h2"], ["h3"]]
    assert result.stopped is None and not result.ok
    # verification was retried until its timeout before quarantining
    assert sum(1 for a in health.asked if a == ["h1"]) > 1
    audit = [(e.from_state, e.to_state) for e in hs.audit(conn, "h0")]
    assert audit == [("active", "cordoned"), ("cordoned", "draining"), ("draining", "drained"),
                     ("drained", "maintaining"), ("maintaining", "verifying"), ("verifying", "active")]


def test_failures_past_the_limit_stop_new_batches(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log, {"h0": "task 'install driver' failed"})
    result = run(conn, sched, prov, FakeHealth(), max_unavailable=Size(2), max_failures=0)
    by = {o.host: o for o in result.outcomes}
    assert by["h0"].state == "quarantined" and "install driver" in by["h0"].message
    assert all(by[h].message.startswith("not started") for h in ("h1", "h2", "h3"))
    assert prov.batches == [["h0"]]
    assert result.stopped and "--max-failures 0" in result.stopped


def test_quarantined_hosts_count_against_max_unavailable(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log)
    result = run(conn, sched, prov, FakeHealth({"h0": "unhealthy"}), max_unavailable=Size(1), max_failures=5)
    assert result.stopped and "max-unavailable is 1" in result.stopped
    assert prov.batches == [["h0"]]  # h0 quarantined uses the whole budget: nothing else drained
    assert ("drain", "h1") not in log


def test_batch_larger_than_max_unavailable_is_a_usage_error(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    with pytest.raises(UsageError, match=r"--batch 2 .* more than --max-unavailable 1"):
        run(conn, FakeScheduler(log), FakeProvisioner(log), FakeHealth(), batch=Size(2))
    assert log == []


def test_dry_run_prints_the_plan_and_touches_nothing(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    lines: list[str] = []
    opts = mcore.MaintainOptions(playbook="site.yml", batch=Size(50, percent=True), max_unavailable=Size(2),
                                 dry_run=True)
    sched = FakeScheduler(log)
    mcore.maintain(conn, HOSTS, HOSTS, lambda h: sched, FakeProvisioner(log), FakeHealth(), opts,
                   echo=lines.append)
    assert log == [] and hs.audit(conn) == []
    assert "  batch 1: h0, h1" in lines and "  batch 2: h2, h3" in lines


def test_resume_after_kill_provisions_hosts_left_maintaining(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    sched = FakeScheduler(log)
    sched.nodes["h0"] = NodeState(SchedState.DRAINED, "fleetctl:sre: maintain", "idle+drain")
    for to in (S.CORDONED, S.DRAINING, S.DRAINED):
        hs.transition(conn, "h0", to, actor="sre")
    hs.transition(conn, "h0", S.MAINTAINING, actor="sre", owner="gone-machine-never:1", run_id="old")
    # the owner is "alive" on another machine: the plan skips it
    plan = mcore.plan_maintain(conn, HOSTS[:1], HOSTS, mcore.MaintainOptions(playbook="p"))
    assert plan.skipped and "in maintenance by gone-machine-never:1" in plan.skipped[0].message
    # a dead owner on this machine: resumed
    dead = f"{hs.this_process().rpartition(':')[0]}:{2**22 + 4242}"
    hs.transition(conn, "h0", S.MAINTAINING, actor="sre", owner=dead, run_id="old")
    prov = FakeProvisioner(log)
    result = run(conn, sched, prov, FakeHealth(), hosts=HOSTS[:1])
    assert result.ok and prov.batches == [["h0"]]
    assert ("drain", "h0") not in log and ("undrain", "h0") in log


def test_each_batch_is_locked_for_the_run_and_provisioned_under_that_lock(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    prov = FakeProvisioner(log, conn=conn)
    result = run(conn, FakeScheduler(log), prov, FakeHealth(), batch=Size(2), max_unavailable=Size(2))
    assert result.ok
    holder = f"maintain:{result.run_id}"
    assert prov.held_by == [holder, holder]
    assert prov.lock_holders == [{"h0": holder, "h1": holder}, {"h2": holder, "h3": holder}]
    assert locks.held(conn, include_stale=True) == []  # released after the undrain


def test_a_host_under_a_live_provision_lock_is_refused_and_untouched(conn: Connection) -> None:
    import os

    for statement in locks.SCHEMA:
        conn.execute(statement)
    other = locks.Holder("r-provision-1", "provision site.yml", "carol", this_machine(), os.getpid())
    locks.acquire(conn, ["h1"], other)
    log: list[tuple[str, str]] = []
    prov = FakeProvisioner(log, conn=conn)
    result = run(conn, FakeScheduler(log), prov, FakeHealth(), max_failures=4)
    by = {o.host: o for o in result.outcomes}
    assert not by["h1"].ok and "r-provision-1" in by["h1"].message and by["h1"].state == "active"
    assert ("drain", "h1") not in log and ("provision", "h1") not in log
    assert all(by[h].ok for h in ("h0", "h2", "h3"))
    assert [lk.holder.id for lk in locks.held(conn)] == ["r-provision-1"]  # theirs is left alone


def test_a_host_drained_by_hand_is_left_out_not_put_back_into_service(conn: Connection) -> None:
    from fleetctl import drain as dcore

    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log)
    opts = dcore.DrainOptions(reason="XID 79, RMA ticket 42", actor="alice", poll_s=1.0)
    [drained] = dcore.drain(conn, [HOSTS[1]], HOSTS, lambda h: sched, opts, sleep=lambda s: None)
    assert drained.ok
    result = run(conn, sched, prov, FakeHealth(), max_unavailable=Size(2))
    by = {o.host: o for o in result.outcomes}
    assert not by["h1"].ok and "drained by alice" in by["h1"].message and "RMA ticket 42" in by["h1"].message
    assert ("provision", "h1") not in log and ("undrain", "h1") not in log
    assert hs.get(conn, "h1").state is S.DRAINED and "RMA ticket 42" in (hs.get(conn, "h1").reason or "")
    assert [by[h].state for h in ("h0", "h2", "h3")] == ["active"] * 3


def test_a_host_in_a_state_this_fleetctl_does_not_know_is_left_out(conn: Connection) -> None:
    conn.execute("INSERT INTO host_state VALUES "
                 "('h1', 'rebooting', 'fleetctl:bob: fw', 'bob', 1.0, NULL, NULL)")
    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log)
    result = run(conn, sched, prov, FakeHealth(), hosts=HOSTS[:2], max_unavailable=Size(2))
    by = {o.host: o for o in result.outcomes}
    assert not by["h1"].ok and by["h1"].state == "rebooting"
    assert "unknown to this fleetctl" in by["h1"].message
    assert by["h0"].ok and prov.batches == [["h0"]]
    assert conn.execute("SELECT state FROM host_state WHERE host = 'h1'").fetchone()[0] == "rebooting"


def test_inputs_past_the_tools_limits_are_refused_before_the_first_batch(conn: Connection) -> None:
    from fleetctl.validation import MAX_ARG_BYTES

    log: list[tuple[str, str]] = []
    sched, prov = FakeScheduler(log), FakeProvisioner(log)
    sched.kind = "slurm"  # type: ignore[misc]
    with pytest.raises(UsageError, match="too long for Slurm"):
        run(conn, sched, prov, FakeHealth(), reason="r" * MAX_ARG_BYTES)
    # a batch whose host list cannot be one `--limit` argument of ansible-playbook
    many = [FakeHost(f"gpu-node-{i:06d}.example.org") for i in range(5000)]
    with pytest.raises(UsageError, match=r"--batch: 5000 hosts make a host list of \d+ bytes"):
        mcore.maintain(conn, many, many, lambda h: sched, prov, FakeHealth(),
                       mcore.MaintainOptions(playbook="site.yml", batch=Size(100, percent=True),
                                             max_unavailable=Size(100, percent=True)))
    assert log == [] and hs.audit(conn) == []
