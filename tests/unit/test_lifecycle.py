"""fleetctl.state.lifecycle: transitions, refusals, the verbs' hooks, the v1 → v2 migration, states a
newer fleetctl wrote."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetctl import drain as drain_core
from fleetctl import maintain as maintain_core
from fleetctl.errors import UsageError
from fleetctl.schedulers.base import HostLike, NodeState, SchedState
from fleetctl.state import db, lifecycle
from fleetctl.state import hosts as hs
from fleetctl.state.lifecycle import LifecycleError, LifeState
from fleetctl.validation import Size

L = LifeState


@pytest.fixture()
def conn(tmp_path: Path) -> sqlite3.Connection:
    return db.connect(tmp_path / "state.db")


def test_a_host_never_seen_is_new_and_implied(conn: sqlite3.Connection) -> None:
    rec = lifecycle.get(conn, "h1")
    assert (rec.state, rec.implied, rec.since) == (L.NEW, True, None)


def test_a_person_moves_a_host_and_each_move_is_audited_with_who_why_when(conn: sqlite3.Connection) -> None:
    lifecycle.set_state(conn, "h1", L.BURN_IN, actor="alice", reason="racked")
    before = lifecycle.set_state(conn, "h1", L.IN_SERVICE, actor="bob@bastion2", reason="burn-in passed")
    assert before.state is L.BURN_IN
    rec = lifecycle.get(conn, "h1")
    assert (rec.state, rec.reason, rec.actor, rec.source, rec.implied) == (
        L.IN_SERVICE, "burn-in passed", "bob@bastion2", "person", False)
    assert rec.since is not None
    entries = lifecycle.history(conn, "h1")
    assert [(e.from_state, e.to_state, e.reason, e.forced) for e in entries] == [
        ("new", "burn_in", "racked", False), ("burn_in", "in_service", "burn-in passed", False)]
    assert entries[0].actor.startswith("alice@")  # user@machine
    assert hs.audit(conn, "h1") == []  # not mixed into the drain audit


def test_a_transition_not_allowed_is_refused_naming_both_states_unless_forced(
        conn: sqlite3.Connection) -> None:
    with pytest.raises(LifecycleError) as refused:
        lifecycle.set_state(conn, "h1", L.RMA, actor="alice", reason="dead")
    assert "h1: cannot go from new to rma" in str(refused.value) and "--force" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert lifecycle.get(conn, "h1").implied and lifecycle.history(conn, "h1") == []  # nothing written
    lifecycle.set_state(conn, "h1", L.RMA, actor="alice", reason="dead on arrival", force=True)
    assert lifecycle.get(conn, "h1").state is L.RMA
    assert lifecycle.history(conn, "h1")[-1].forced
    lifecycle.set_state(conn, "h1", L.RETIRED, actor="a", reason="scrapped")
    with pytest.raises(LifecycleError, match="cannot go from retired to in_service"):
        lifecycle.set_state(conn, "h1", L.IN_SERVICE, actor="a", reason="x")


def test_a_typed_state_gets_the_closest_name() -> None:
    assert lifecycle.parse_state("In-Service") is L.IN_SERVICE
    with pytest.raises(UsageError, match="did you mean repairing"):
        lifecycle.parse_state("repiaring")


def test_every_hook_moves_only_along_allowed_edges() -> None:
    # the hooks' (from, to) pairs, as written in lifecycle.on_*: each must be an edge of ALLOWED
    hooks = {L.REPAIRING: {L.BURN_IN, L.IN_SERVICE, L.SUSPECT},
             L.IN_SERVICE: {L.SUSPECT, L.REPAIRING, L.NEW},
             L.SUSPECT: {L.IN_SERVICE, L.BURN_IN, L.REPAIRING}}
    for to, sources in hooks.items():
        for frm in sources:
            assert to in lifecycle.ALLOWED[frm], (frm, to)


def test_a_state_a_newer_fleetctl_wrote_is_shown_and_needs_force(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO host_lifecycle VALUES ('h1', 'burn_in_stage2', 'gpu burn', 'eve@b3', 5.0, "
                 "'remediation')")
    rec = lifecycle.get(conn, "h1")
    assert (rec.state, rec.label, rec.to_dict()["known"]) == (L.UNKNOWN, "burn_in_stage2", False)
    assert not lifecycle.on_undrain(conn, "h1", actor="alice", reason="undrain")  # hooks leave it alone
    with pytest.raises(LifecycleError, match="'burn_in_stage2' is unknown to this fleetctl"):
        lifecycle.set_state(conn, "h1", L.IN_SERVICE, actor="alice", reason="done")
    lifecycle.set_state(conn, "h1", L.IN_SERVICE, actor="alice", reason="done", force=True)
    assert lifecycle.history(conn, "h1")[-1].from_state == "burn_in_stage2"


# --- migration ------------------------------------------------------------------------------------


def _v1_file(path: Path) -> None:
    """A database as fleetctl of schema version 1 left it: its tables, a drain, a provision run."""
    raw = sqlite3.connect(path, isolation_level=None)
    for statement in db._layout_v1():  # version 1's tables (a step never edits earlier DDL)
        raw.execute(statement)
    raw.execute("INSERT INTO host_state VALUES "
                "('h2', 'drained', 'fleetctl:bob: psu', 'bob', 1.0, NULL, NULL)")
    raw.execute("INSERT INTO provision_runs VALUES ('r1', 'bob', 'm', 1, '2025-01-01T00:00:00+00:00', "
                "'2025-01-01T00:05:00+00:00', '2025-01-01T00:05:00+00:00', 'inv', 'all', 'site.yml', '{}', "
                "'failed', NULL, NULL)")
    for host, counts in (("h1", {"ok": 5, "changed": 1}), ("h3", {"ok": 2, "failed": 1})):
        raw.execute("INSERT INTO provision_run_hosts VALUES ('r1', ?, ?)",
                    (host, json.dumps({"host": host, **counts})))
    raw.execute("PRAGMA user_version = 1")
    raw.execute(f"PRAGMA application_id = {db.APPLICATION_ID}")
    raw.close()


def test_a_version_1_file_migrates_to_the_current_version_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_file(path)
    c = db.connect(path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 3
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"host_lifecycle", "lifecycle_audit", "host_health", "host_state"} <= tables
    # version 3: burn-in results and the remediation loop's records and lease
    assert {"burn_in_results", "remediation_observations", "remediations", "remediation_steps",
            "remediation_lease"} <= tables
    assert hs.get(c, "h2").state is hs.DrainState.DRAINED
    life = lifecycle.get_many(c, ["h1", "h2", "h3"])
    # h1 succeeded in a recorded run: in service, implied; h3 failed in it and h2 was never provisioned
    assert (life["h1"].state, life["h1"].implied, life["h1"].reason) == (
        L.IN_SERVICE, True, "provisioned by run r1")
    assert life["h2"].state is L.NEW and life["h3"].state is L.NEW
    lifecycle.set_state(c, "h1", L.SUSPECT, actor="alice", reason="xid 48")  # writable as version 2
    c.close()
    assert lifecycle.get(db.connect(path), "h1").state is L.SUSPECT


# --- the verbs' hooks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    name: str
    address: str = "127.0.0.1"
    vars: Mapping[str, Any] = field(default_factory=dict)


class IdleScheduler:
    """Drains at once (nothing runs), undrains at once."""

    kind = "fake"

    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}

    def state(self, host: HostLike) -> NodeState:
        return self.nodes.get(host.name, NodeState(SchedState.ACTIVE))

    def drain(self, host: HostLike, reason: str) -> None:
        self.nodes[host.name] = NodeState(SchedState.DRAINED, reason, "idle+drain")

    def undrain(self, host: HostLike) -> None:
        self.nodes[host.name] = NodeState(SchedState.ACTIVE)

    def running_workloads(self, host: HostLike) -> list[str]:
        return []


def test_a_persons_drain_makes_a_host_repairing_and_a_healthy_undrain_puts_it_back(
        conn: sqlite3.Connection) -> None:
    sched, h1 = IdleScheduler(), Host("h1")
    lifecycle.set_state(conn, "h1", L.IN_SERVICE, actor="alice", reason="ready")
    opts = drain_core.DrainOptions(reason="fan noise", actor="bob", poll_s=0.01)
    drain_core.drain(conn, [h1], [h1], lambda h: sched, opts)  # type: ignore[arg-type,return-value]
    rec = lifecycle.get(conn, "h1")
    assert (rec.state, rec.reason, rec.source) == (L.REPAIRING, "drain: fan noise", "drain")
    assert rec.actor is not None and rec.actor.startswith("bob@")

    unfit = {"h1": "chip 0: XID 79"}
    out = drain_core.undrain(conn, [h1], lambda h: sched, lambda hosts: unfit,  # type: ignore[arg-type,return-value]
                             actor="bob")
    assert not out[0].ok and lifecycle.get(conn, "h1").state is L.REPAIRING
    health = lifecycle.health_many(conn, ["h1"])["h1"]
    assert (health.healthy, health.detail, health.source) == (False, "chip 0: XID 79", "undrain")

    out = drain_core.undrain(conn, [h1], lambda h: sched, lambda hosts: {"h1": None},  # type: ignore[arg-type,return-value]
                             actor="bob")
    assert out[0].ok
    assert lifecycle.get(conn, "h1").state is L.IN_SERVICE
    assert lifecycle.health_many(conn, ["h1"])["h1"].healthy
    assert [e.source for e in lifecycle.history(conn, "h1")] == ["person", "drain", "undrain"]


def test_a_drain_of_a_retired_host_leaves_its_lifecycle(conn: sqlite3.Connection) -> None:
    sched, h1 = IdleScheduler(), Host("h1")
    lifecycle.set_state(conn, "h1", L.RETIRED, actor="alice", reason="EOL")
    drain_core.drain(conn, [h1], [h1], lambda h: sched,  # type: ignore[arg-type,return-value]
                     drain_core.DrainOptions(reason="decommission", actor="bob", poll_s=0.01))
    assert hs.get(conn, "h1").state is hs.DrainState.DRAINED
    assert lifecycle.get(conn, "h1").state is L.RETIRED


def test_provision_results_move_new_hosts_in_and_failed_ones_to_suspect(conn: sqlite3.Connection) -> None:
    lifecycle.set_state(conn, "h2", L.IN_SERVICE, actor="a", reason="x")
    lifecycle.set_state(conn, "h4", L.RMA, actor="a", reason="x", force=True)
    lifecycle.on_provision_result(conn, "r9", {"h1": "changed", "h2": "unreachable", "h3": "pending",
                                               "h4": "failed"}, actor="carol", playbook="site.yml")
    got = lifecycle.get_many(conn, ["h1", "h2", "h3", "h4"])
    assert got["h1"].state is L.IN_SERVICE and not got["h1"].implied
    assert (got["h2"].state, got["h2"].reason) == (L.SUSPECT, "provision run r9 (site.yml): unreachable")
    assert got["h3"].state is L.NEW and got["h3"].implied  # it never ran
    assert got["h4"].state is L.RMA  # not a working host: left alone


def test_maintain_puts_a_verified_host_in_service_and_a_quarantined_one_suspect(
        conn: sqlite3.Connection) -> None:
    sched = IdleScheduler()
    hosts = [Host("h1"), Host("h2")]
    for h in hosts:
        lifecycle.set_state(conn, h.name, L.IN_SERVICE, actor="a", reason="x")
    lifecycle.set_state(conn, "h1", L.REPAIRING, actor="a", reason="fan swapped")

    def provisioner(batch: Any, playbook: str, *, held_by: str) -> dict[str, str | None]:
        return {h.name: None for h in batch}

    def verifier(batch: Any) -> dict[str, str | None]:
        return {h.name: ("chip 1: XID 48" if h.name == "h2" else None) for h in batch}

    opts = maintain_core.MaintainOptions(playbook="site.yml", actor="dave", batch=Size(2),
                                         max_unavailable=Size(2), max_failures=5, poll_s=0.01,
                                         verify_timeout_s=0.0)
    result = maintain_core.maintain(conn, hosts, hosts, lambda h: sched, provisioner, verifier,  # type: ignore[arg-type,return-value]
                                    opts, sleep=lambda s: None)
    assert [o.ok for o in result.outcomes] == [True, False]
    got = lifecycle.get_many(conn, ["h1", "h2"])
    assert (got["h1"].state, got["h1"].source) == (L.IN_SERVICE, "undrain")  # verified, then undrained
    assert got["h2"].state is L.SUSPECT and got["h2"].reason is not None and "XID 48" in got["h2"].reason
    # the maintain run's own drain did not make the in-service host "repairing"
    assert "drain" not in [e.source for e in lifecycle.history(conn, "h2")]
    health = lifecycle.health_many(conn, ["h1", "h2"])
    assert health["h1"].healthy and not health["h2"].healthy and health["h2"].source == "maintain"


def test_runs_for_lists_the_runs_that_touched_a_host(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_file(path)
    c = db.connect(path)
    got = [(r.run_id, r.status, r.result) for r in lifecycle.runs_for(c, "h3")]
    assert got == [("r1", "failed", "failed")]
    assert lifecycle.runs_for(c, "h2") == []


def test_the_first_whole_run_that_provisions_a_new_host_writes_the_move_down(
        conn: sqlite3.Connection) -> None:
    """The run is recorded before the hook: the host already reads in_service (implied by this run);
    the move new -> in_service is audited all the same, once, and a later run adds nothing."""
    from fleetctl.state import runs
    from fleetctl.state.runs import HostResult

    def record(run_id: str, started: str) -> None:
        hosts = [HostResult("h1", ok=5)]
        runs.start(conn, runs.RunRecord(id=run_id, user="ann", machine="m", pid=1, started_at=started,
                                        heartbeat_at=started, inventory="inv", pattern="all",
                                        playbook="site.yml", options={}, hosts=hosts))
        runs.finish(conn, run_id, "successful", hosts)
        lifecycle.on_provision_result(conn, run_id, {"h1": "ok"}, actor="ann", playbook="site.yml")

    record("r1", "2026-01-01T00:00:00+00:00")
    rec = lifecycle.get(conn, "h1")
    assert (rec.state, rec.implied, rec.source) == (L.IN_SERVICE, False, "provision")
    assert [(e.from_state, e.to_state, e.reason) for e in lifecycle.history(conn, "h1")] == [
        ("new", "in_service", "provisioned by run r1 (site.yml)")]
    record("r2", "2026-01-02T00:00:00+00:00")
    assert len(lifecycle.history(conn, "h1")) == 1
