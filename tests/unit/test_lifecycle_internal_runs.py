"""fleetctl's internal runs (maintain's reboot and boot-marker runs, a remediation's repair playbooks):
recorded like provision runs, but no provision run for the lifecycle, nor for burn-in's provision check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetctl import provision
from fleetctl.burnin.gate import FAILED, PASSED, provision_check
from fleetctl.inventory import Host
from fleetctl.provision import ProvisionOptions
from fleetctl.runner import FakeRunner, HostResult, fake_event
from fleetctl.state import db, lifecycle, runs
from fleetctl.state.lifecycle import LifeState


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "system_reboot.yml").write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "hosts.ini").write_text("fresh\nworking\n")
    monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    return tmp_path


def provision_run(env: Path, *, internal: bool) -> provision.ProvisionResult:
    """system_reboot.yml: ok on ``fresh`` (a new host), failed on ``working`` (in service)."""
    events = [fake_event("playbook_on_play_start", play="Reboot"),
              fake_event("playbook_on_task_start", task="reboot"),
              fake_event("runner_on_ok", "fresh", task="reboot", res={"changed": True}),
              fake_event("runner_on_failed", "working", task="reboot", res={"msg": "timed out"})]
    return provision.run(ProvisionOptions(inventory=[str(env / "hosts.ini")], playbook="system_reboot.yml",
                                          internal=internal),
                         FakeRunner(events), db_path=env / "state.db", cwd=env,
                         select_hosts=lambda sources, pattern: ["fresh", "working"])


@pytest.mark.parametrize("internal", [True, False])
def test_an_internal_run_moves_no_host_in_its_lifecycle(env: Path, internal: bool) -> None:
    conn = db.connect(env / "state.db")
    lifecycle.set_state(conn, "working", LifeState.IN_SERVICE, actor="sre", reason="racked")
    result = provision_run(env, internal=internal)
    record = runs.get(runs.connect(env / "state.db"), result.run_id)
    assert record is not None and bool(record.options.get("internal")) is internal
    fresh, working = lifecycle.get(conn, "fresh"), lifecycle.get(conn, "working")
    if internal:  # a reboot neither provisions a new host nor makes a working one suspect
        assert fresh.state is LifeState.NEW and lifecycle.history(conn, "fresh") == []
        assert working.state is LifeState.IN_SERVICE
    else:  # the same run as a real provision run does both
        assert fresh.state is LifeState.IN_SERVICE and fresh.reason == \
            f"provisioned by run {result.run_id} (system_reboot.yml)"
        assert working.state is LifeState.SUSPECT


def record_run(conn: Any, run_id: str, started: str, hosts: list[HostResult], *, status: str = "successful",
               internal: bool = False, playbook: str = "site.yml") -> None:
    runs.start(conn, runs.RunRecord(id=run_id, user="ann", machine="m", pid=1, started_at=started,
                                    heartbeat_at=started, inventory="inv", pattern="all",
                                    playbook=f"/x/playbooks/{playbook}",
                                    options={"check": False, **({"internal": True} if internal else {})},
                                    hosts=hosts))
    runs.finish(conn, run_id, status, hosts)


def test_an_internal_run_does_not_imply_a_host_is_provisioned(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "state.db")
    record_run(conn, "r1", "2026-01-01T00:00:00+00:00", [HostResult("a", ok=1)], internal=True,
               playbook="system_reboot.yml")
    record_run(conn, "r2", "2026-01-01T00:00:00+00:00", [HostResult("b", ok=1)])
    assert lifecycle.get(conn, "a").state is LifeState.NEW
    b = lifecycle.get(conn, "b")
    assert (b.state, b.reason) == (LifeState.IN_SERVICE, "provisioned by run r2")


def test_burn_ins_provision_check_skips_internal_runs(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "state.db")
    record_run(conn, "r1", "2026-01-01T00:00:00+00:00", [HostResult("a", ok=5), HostResult("b", failed=1)],
               status="failed")
    # later reboots/repairs: a failed one on a, a successful one on b and c
    record_run(conn, "r2", "2026-01-02T00:00:00+00:00", [HostResult("a", failed=1)], status="failed",
               internal=True, playbook="system_reboot.yml")
    record_run(conn, "r3", "2026-01-02T00:00:00+00:00", [HostResult("b", ok=1), HostResult("c", ok=1)],
               internal=True, playbook="reset_gpu.yml")
    got = provision_check(conn)(["a", "b", "c"])
    assert got["a"].status == PASSED and got["a"].detail.startswith("run r1 (site.yml) succeeded")
    assert got["b"].status == FAILED and "run r1 (site.yml) (failed) left the host failed" in got["b"].detail
    assert got["c"].status == FAILED and got["c"].detail.startswith("no provision run recorded")


def test_remediations_repair_playbooks_run_as_internal_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.remediate.actions import ansible_playbook_run

    seen: list[ProvisionOptions] = []

    class Result:
        run_id, status, message = "r-1", "successful", None
        hosts = [HostResult("h0", ok=1)]

    def fake_run(options: ProvisionOptions, runner: Any, **kw: Any) -> Any:
        seen.append(options)
        return Result()

    monkeypatch.setattr(provision, "run", fake_run)
    got = ansible_playbook_run(["inv"], None)(Host("h0", "h0", (), {}), "remediate/reset_gpu.yml", [],
                                                       "remediate:x")
    assert got is None and [o.internal for o in seen] == [True]
