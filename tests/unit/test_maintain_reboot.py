"""maintain's reboot step (--reboot auto|always|never), its step hook, and the reboot fact read from
ansible-runner events; fakes with the real interfaces (test_maintain.py's scheduler and health)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_maintain import HOSTS, FakeHealth, FakeScheduler

from fleetctl import maintain as mcore
from fleetctl.errors import UsageError
from fleetctl.runner import fake_event
from fleetctl.schedulers.base import HostLike
from fleetctl.state import db, lifecycle
from fleetctl.state import hosts as hs
from fleetctl.state.db import Connection
from fleetctl.validation import Size


class FactProvisioner:
    """Succeeds everywhere; ``needs`` are the hosts whose run leaves the reboot fact true."""

    def __init__(self, log: list[tuple[str, str]], needs: Sequence[str] = ()) -> None:
        self.log, self.needs = log, set(needs)

    def __call__(self, hosts: Sequence[HostLike], playbook: str, *,
                 held_by: str) -> Mapping[str, mcore.Provisioned]:
        self.log += [("provision", h.name) for h in hosts]
        return {h.name: mcore.Provisioned(None, h.name in self.needs) for h in hosts}


class FakeRebooter:
    def __init__(self, log: list[tuple[str, str]], lost: Mapping[str, str] | None = None) -> None:
        self.log, self.lost = log, dict(lost or {})
        self.timeouts: list[float] = []

    def __call__(self, hosts: Sequence[HostLike], *, held_by: str,
                 timeout_s: float) -> Mapping[str, str | None]:
        assert held_by.startswith("maintain:")
        self.timeouts.append(timeout_s)
        self.log += [("reboot", h.name) for h in hosts]
        return {h.name: self.lost.get(h.name) for h in hosts}


@pytest.fixture()
def conn(tmp_path: Path) -> Connection:
    return db.connect(tmp_path / "state.db", schema=(*hs.SCHEMA, *lifecycle.SCHEMA))


def run(conn: Connection, log: list[tuple[str, str]], prov: Any, rebooter: Any, *,
        hosts: Sequence[Any] = HOSTS, on_step: Any = None, boot_markers: Any = None,
        **kw: Any) -> mcore.MaintainResult:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    sched = FakeScheduler(log)
    opts = mcore.MaintainOptions(playbook="site.yml", actor="sre", poll_s=1.0, verify_timeout_s=5, **kw)
    return mcore.maintain(conn, hosts, HOSTS, lambda h: sched, prov, FakeHealth(), opts, sleep=sleep,
                          clock=lambda: now[0], rebooter=rebooter, on_step=on_step,
                          boot_markers=boot_markers)


def test_auto_reboots_only_the_hosts_whose_run_left_the_fact_true(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    rebooter = FakeRebooter(log)
    result = run(conn, log, FactProvisioner(log, needs=["h1", "h2"]), rebooter, batch=Size(2),
                 max_unavailable=Size(2), reboot_timeout_s=42)
    assert result.ok and result.rebooted == ["h1", "h2"]
    assert [h for op, h in log if op == "reboot"] == ["h1", "h2"]
    assert rebooter.timeouts == [42, 42]  # once per batch, each with the option's timeout
    # provision → reboot → undrain, in order, for h1
    assert [op for op, h in log if h == "h1"] == ["drain", "provision", "reboot", "undrain"]
    by = {o.host: o for o in result.outcomes}
    assert by["h1"].message == "maintained, rebooted, verified, back in service"
    assert by["h0"].message == "maintained, verified, back in service"
    audit = [(e.from_state, e.to_state, e.note) for e in hs.audit(conn, "h1")]
    assert ("maintaining", "maintaining", "reboot (nvidia_driver_reboot_needed after provisioning)") in audit
    assert ("maintaining", "verifying", "provisioned, rebooted") in audit
    assert not any(e.note and e.note.startswith("reboot") for e in hs.audit(conn, "h0"))
    assert result.to_dict()["options"]["reboot"] == "auto" and result.to_dict()["rebooted"] == ["h1", "h2"]


@pytest.mark.parametrize(("mode", "rebooted"), [("always", ["h0", "h1"]), ("never", [])])
def test_always_reboots_every_host_and_never_none(conn: Connection, mode: str,
                                                  rebooted: list[str]) -> None:
    log: list[tuple[str, str]] = []
    result = run(conn, log, FactProvisioner(log, needs=["h1"]), FakeRebooter(log), hosts=HOSTS[:2],
                 reboot=mcore.RebootMode(mode))
    assert result.ok and result.rebooted == rebooted
    assert [h for op, h in log if op == "reboot"] == rebooted


def test_a_host_that_does_not_come_back_is_quarantined_and_suspect(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    lifecycle.set_state(conn, "h1", lifecycle.LifeState.IN_SERVICE, actor="sre", reason="racked")
    lost = {"h1": "run r-1: failed: Reboot: Timed out waiting for last boot time check (timeout=900)"}
    result = run(conn, log, FactProvisioner(log), FakeRebooter(log, lost), hosts=HOSTS[:2],
                 reboot=mcore.RebootMode.ALWAYS, max_unavailable=Size(2), max_failures=1)
    by = {o.host: o for o in result.outcomes}
    assert by["h1"].state == "quarantined" and by["h1"].message.startswith("reboot failed: run r-1")
    assert "Timed out" in by["h1"].message
    assert ("undrain", "h1") not in log and by["h0"].ok and result.rebooted == ["h0"]
    assert hs.get(conn, "h1").state is hs.DrainState.QUARANTINED
    life = lifecycle.get(conn, "h1")
    assert life.state is lifecycle.LifeState.SUSPECT and "reboot failed" in (life.reason or "")


def test_auto_without_a_rebooter_quarantines_a_host_that_needs_one(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    result = run(conn, log, FactProvisioner(log, needs=["h0"]), None, hosts=HOSTS[:2],
                 max_unavailable=Size(2), max_failures=1)
    by = {o.host: o for o in result.outcomes}
    assert by["h0"].state == "quarantined" and "cannot reboot" in by["h0"].message
    assert by["h1"].ok
    with pytest.raises(UsageError, match="--reboot always"):
        run(conn, log, FactProvisioner(log), None, reboot=mcore.RebootMode.ALWAYS)


def test_a_plain_provisioner_result_means_no_reboot_is_needed(conn: Connection) -> None:
    log: list[tuple[str, str]] = []

    def plain(hosts: Sequence[HostLike], playbook: str, *, held_by: str) -> Mapping[str, str | None]:
        return {h.name: None for h in hosts}

    result = run(conn, log, plain, FakeRebooter(log), hosts=HOSTS[:1])
    assert result.ok and result.rebooted == [] and not any(op == "reboot" for op, _ in log)


def test_the_step_hook_sees_every_step_in_order(conn: Connection) -> None:
    log: list[tuple[str, str]] = []
    seen: list[tuple[str, list[str]]] = []
    result = run(conn, log, FactProvisioner(log, needs=["h0"]), FakeRebooter(log), hosts=HOSTS[:1],
                 on_step=lambda step, hosts: seen.append((step, list(hosts))))
    assert result.ok
    assert seen == [(step, ["h0"]) for step in mcore.STEPS]


def test_the_plan_and_the_record_show_the_playbook_options(conn: Connection) -> None:
    lines: list[str] = []
    opts = mcore.MaintainOptions(playbook="site.yml", dry_run=True, tags=["nvidia_driver"],
                                 extra_vars=["nvidia_driver_version=550", "token=********"],
                                 reboot=mcore.RebootMode.ALWAYS)
    log: list[tuple[str, str]] = []
    sched = FakeScheduler(log)
    result = mcore.maintain(conn, HOSTS[:1], HOSTS, lambda h: sched, FactProvisioner(log), FakeHealth(), opts,
                            echo=lines.append, rebooter=FakeRebooter(log))
    assert log == []
    assert any("provision → reboot → verify" in line for line in lines)
    assert "  playbook options: --tags nvidia_driver -e nvidia_driver_version=550 -e token=********" in lines
    assert result.options["tags"] == ["nvidia_driver"] and result.options["reboot"] == "always"


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("True", True), ("false", False),
                                                 (False, False), ("yes", True), (0, False)])
def test_the_reboot_fact_is_read_from_a_set_fact_result(value: object, expected: bool) -> None:
    event = fake_event("runner_on_ok", "gpu1", task="Record whether a reboot is needed",
                       res={"ansible_facts": {"nvidia_driver_reboot_needed": value,
                                              "nvidia_driver_module_loaded": False}, "changed": False})
    assert mcore.reboot_facts(event) == ("gpu1", expected)


def test_other_events_say_nothing_about_a_reboot() -> None:
    assert mcore.reboot_facts(fake_event("runner_on_ok", "gpu1", res={"changed": True})) is None
    facts = {"ansible_facts": {"nvidia_driver_reboot_needed": True}}
    failed = fake_event("runner_on_failed", "gpu1", res=facts)
    assert mcore.reboot_facts(failed) is None
    assert mcore.reboot_facts(fake_event("runner_on_ok", "gpu1", res={"ansible_facts": {"other": 1}})) is None


# --- a run killed during the reboot step, resumed (boot markers) ---------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the run's own handling runs."""


class Machines:
    """Each host's boot count: the marker changes when a reboot happens."""

    def __init__(self, log: list[tuple[str, str]], down: Mapping[str, str] | None = None,
                 unreadable: Mapping[str, str] | None = None) -> None:
        self.log, self.boots = log, {h.name: 0 for h in HOSTS}
        self.down, self.unreadable = dict(down or {}), dict(unreadable or {})
        self.asked: list[tuple[bool, float]] = []

    def markers(self, hosts: Sequence[HostLike], *, held_by: str, timeout_s: float,
                wait: bool) -> Mapping[str, mcore.BootMarker]:
        assert held_by.startswith("maintain:")
        self.asked.append((wait, timeout_s))
        self.log += [("wait" if wait else "marker", h.name) for h in hosts]
        problems = self.down if wait else self.unreadable
        return {h.name: mcore.BootMarker(problem=problems[h.name]) if h.name in problems
                else mcore.BootMarker(f"boot-{self.boots[h.name]}\n  1234") for h in hosts}

    def rebooter(self, *, killed: bool = False, takes_effect: bool = True) -> Any:
        def reboot(hosts: Sequence[HostLike], *, held_by: str, timeout_s: float) -> Mapping[str, str | None]:
            self.log += [("reboot", h.name) for h in hosts]
            for h in hosts:
                self.boots[h.name] += int(takes_effect)
            if killed:
                raise Killed()
            return {h.name: None for h in hosts}
        return reboot


def killed_then_resumed(conn: Connection, mode: str, machines: Machines, *, takes_effect: bool = True,
                        markers_on_resume: bool = True) -> tuple[list[tuple[str, str]], mcore.MaintainResult]:
    """maintain h0 with a reboot, killed while the reboot runs; then run again. The log of the resumed
    run's actions and its result."""
    prov = FactProvisioner(machines.log, needs=["h0"])
    with pytest.raises(Killed):
        run(conn, machines.log, prov, machines.rebooter(killed=True, takes_effect=takes_effect),
            hosts=HOSTS[:1], reboot=mcore.RebootMode(mode), boot_markers=machines.markers)
    assert hs.get(conn, "h0").state is hs.DrainState.MAINTAINING
    before = len(machines.log)
    result = run(conn, machines.log, prov, machines.rebooter(), hosts=HOSTS[:1],
                 reboot=mcore.RebootMode(mode), reboot_timeout_s=300,
                 boot_markers=machines.markers if markers_on_resume else None)
    return machines.log[before:], result


@pytest.mark.parametrize("mode", ["always", "auto"])
def test_a_resumed_run_waits_for_a_host_whose_reboot_happened_and_verifies_it(
        conn: Connection, mode: str) -> None:
    """Neither provisioned again (auto: it may still be booting, so unreachable) nor rebooted again
    (always): the resumed run waits for the host, sees a new boot, verifies it."""
    machines = Machines([])
    lifecycle.set_state(conn, "h0", lifecycle.LifeState.IN_SERVICE, actor="sre", reason="racked")
    actions, result = killed_then_resumed(conn, mode, machines)
    assert [op for op, _ in actions] == ["wait", "undrain"]
    assert machines.asked[-1] == (True, 300)  # waited within --reboot-timeout
    (o,) = result.outcomes
    assert o.ok and o.message == "maintained, rebooted, verified, back in service"
    assert result.rebooted == ["h0"]
    notes = [e.note for e in hs.audit(conn, "h0")]
    why = "--reboot always" if mode == "always" else "nvidia_driver_reboot_needed after provisioning"
    assert f"reboot ({why}; boot marker boot-0 1234)" in notes  # read before the reboot, on one line
    assert "provisioned, rebooted (the interrupted run's reboot)" in notes
    assert lifecycle.get(conn, "h0").state is lifecycle.LifeState.IN_SERVICE


def test_a_resumed_run_reboots_a_host_whose_reboot_never_happened(conn: Connection) -> None:
    machines = Machines([])
    actions, result = killed_then_resumed(conn, "always", machines, takes_effect=False)
    assert [op for op, _ in actions] == ["wait", "marker", "reboot", "undrain"]
    assert result.ok and result.rebooted == ["h0"] and machines.boots["h0"] == 1


def test_a_host_not_back_from_the_killed_runs_reboot_is_quarantined(conn: Connection) -> None:
    machines = Machines([], down={"h0": "run r-9: failed: timed out waiting for connection port"})
    actions, result = killed_then_resumed(conn, "auto", machines)
    assert [op for op, _ in actions] == ["wait"]
    (o,) = result.outcomes
    assert o.state == "quarantined"
    assert o.message == ("reboot failed: not back from the interrupted run's reboot: "
                         "run r-9: failed: timed out waiting for connection port")


def test_without_a_marker_reader_the_resumed_run_reboots_rather_than_provisions(conn: Connection) -> None:
    machines = Machines([])
    actions, result = killed_then_resumed(conn, "always", machines, markers_on_resume=False)
    assert [op for op, _ in actions] == ["reboot", "undrain"] and result.ok


def test_a_host_whose_marker_cannot_be_read_is_not_rebooted(conn: Connection) -> None:
    machines = Machines([], unreadable={"h0": "run r-3: unreachable: ssh: connect refused"})
    result = run(conn, machines.log, FactProvisioner(machines.log), machines.rebooter(), hosts=HOSTS[:1],
                 reboot=mcore.RebootMode.ALWAYS, boot_markers=machines.markers)
    (o,) = result.outcomes
    assert o.state == "quarantined" and "boot marker not read before the reboot" in o.message
    assert not any(op == "reboot" for op, _ in machines.log)


def test_the_marker_is_read_from_the_set_fact_result() -> None:
    event = fake_event("runner_on_ok", "h0", task="Report the boot marker",
                       res={"ansible_facts": {mcore.MARKER_FACT: "5f0c\n 812"}})
    assert mcore.marker_facts(event) == ("h0", "5f0c 812")
    assert mcore.marker_facts(fake_event("runner_on_ok", "h0", task="x", res={})) is None


def test_the_reboot_and_marker_runs_are_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither counts as a provision run (lifecycle, burn-in's provision check)."""
    from fleetctl import provision
    from fleetctl.runner import HostResult

    seen: list[Any] = []

    class Result:
        run_id, status, message = "r-1", "successful", None
        hosts = [HostResult("h0", ok=1)]

    def fake_run(options: Any, runner: Any, **kw: Any) -> Any:
        seen.append(options)
        return Result()

    monkeypatch.setattr(provision, "run", fake_run)
    mcore.ansible_rebooter(["inv"], None)(HOSTS[:1], held_by="maintain:x", timeout_s=5)
    mcore.ansible_boot_markers(["inv"], None)(HOSTS[:1], held_by="maintain:x", timeout_s=5, wait=True)
    mcore.ansible_provisioner(["inv"], None)(HOSTS[:1], "site.yml", held_by="maintain:x")
    assert [o.internal for o in seen] == [True, True, False]
    assert '"fleetctl_reboot_mode": "wait"' in seen[1].extra_vars[-1]
