"""The burn-in gate (fleetctl.burnin.gate) over a real state database, with fakes behind its three
check interfaces: outcomes, what stops what, lifecycle moves and their audit, the stored result,
host locks, and the provision check against recorded provision runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetctl.burnin.dcgm import Status, parse_diag
from fleetctl.burnin.gate import (
    AGENT,
    DCGM,
    EXIT_INCOMPLETE,
    FAILED,
    NOT_RUN,
    PASSED,
    PROVISION,
    SKIPPED,
    WARNED,
    BurnInResult,
    GateOptions,
    Outcome,
    burn_in_hosts,
    dcgm_check,
    judge,
    provision_check,
    remediation_burn_in,
)
from fleetctl.burnin.run import HostBurnIn
from fleetctl.errors import StateConflict, UsageError
from fleetctl.inventory import Host
from fleetctl.runner import HostResult
from fleetctl.state import burnin as store
from fleetctl.state import db, lifecycle, locks, runs
from fleetctl.state.burnin import CheckRecord
from fleetctl.state.db import Connection
from fleetctl.state.lifecycle import LifeState

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dcgm"
GB10_FAIL = (FIXTURES / "dcgm4.2.3_gb10_level1_fail.json").read_text()
PASS8 = (FIXTURES / "dcgm3.1_level1_8gpu_pass.json").read_text()


def host(name: str, groups: tuple[str, ...] = ("gpu_nodes",)) -> Host:
    return Host(name=name, address="127.0.0.1", groups=groups, vars={}, expected_chips=8)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    c = db.connect(tmp_path / "state.db", schema=store.SCHEMA)
    yield c
    c.close()


def passed(h: str, level: int = 1) -> HostBurnIn:
    report = parse_diag(PASS8, host=h)
    return HostBurnIn(h, level, Status.PASS, report.reason(), ran=(f"dcgm diag -r {level}",), rc=0,
                      report=report)


def failed(h: str, level: int = 1) -> HostBurnIn:
    report = parse_diag(GB10_FAIL, host=h)
    return HostBurnIn(h, level, Status.FAIL, report.reason(), ran=(f"dcgm diag -r {level}",), rc=226,
                      report=report)


def not_nvidia(h: str, level: int = 1) -> HostBurnIn:
    why = "not an NVIDIA host (not in group gpu_nodes): DCGM diagnostics do not apply"
    return HostBurnIn(h, level, Status.UNKNOWN, why, not_run=(f"dcgm diag -r {level}: {why}",),
                      applicable=False)


class Fakes:
    """The three checks, answering from tables, remembering whom they were asked about."""

    def __init__(self, provision: Mapping[str, CheckRecord] | None = None,
                 agent: Mapping[str, tuple[CheckRecord, str | None]] | None = None,
                 dcgm: Mapping[str, HostBurnIn] | None = None) -> None:
        self.provision_answers = dict(provision or {})
        self.agent_answers = dict(agent or {})
        self.dcgm_answers = dict(dcgm or {})
        self.asked: dict[str, list[str]] = {"provision": [], "agent": [], "dcgm": []}
        self.levels: list[int] = []

    def provision(self, names: Sequence[str]) -> Mapping[str, CheckRecord]:
        self.asked["provision"] += names
        ok = CheckRecord(PROVISION, PASSED, "run r1 (site.yml) succeeded")
        return {n: self.provision_answers.get(n, ok) for n in names}

    def agent(self, hosts: Sequence[Host]) -> Mapping[str, tuple[CheckRecord, str | None]]:
        self.asked["agent"] += [h.name for h in hosts]
        ok = (CheckRecord(AGENT, PASSED, "healthy, 8/8 chips"), None)
        return {h.name: self.agent_answers.get(h.name, ok) for h in hosts}

    def dcgm(self, hosts: Sequence[Host], level: int) -> Mapping[str, HostBurnIn]:
        self.asked["dcgm"] += [h.name for h in hosts]
        self.levels.append(level)
        return {h.name: self.dcgm_answers.get(h.name) or passed(h.name, level) for h in hosts}


def run(conn: Connection, hosts: list[Host], fakes: Fakes, level: int = 2, **opts: Any) -> BurnInResult:
    options = GateOptions(level=level, actor="ann@bastion", **opts)
    return burn_in_hosts(conn, hosts, hosts, level, options=options, provision=fakes.provision,
                         agent=fakes.agent, diagnostics=fakes.dcgm)


# --- judge and dcgm_check: pure ------------------------------------------------------------------


def test_judge_a_failure_wins_over_a_check_that_could_not_run() -> None:
    status, why = judge([CheckRecord(PROVISION, PASSED, "run r1"), CheckRecord(AGENT, FAILED, "2 of 8 chips"),
                         CheckRecord(DCGM, NOT_RUN, "not run: an earlier check failed")])
    assert status is Outcome.FAIL
    assert why == "agent: 2 of 8 chips"


def test_judge_a_check_that_could_not_run_is_incomplete_unless_allowed() -> None:
    checks = [CheckRecord(PROVISION, PASSED, "run r1"), CheckRecord(AGENT, PASSED, "healthy"),
              CheckRecord(DCGM, NOT_RUN, "not an NVIDIA host")]
    assert judge(checks) == (Outcome.INCOMPLETE, "could not run: dcgm: not an NVIDIA host")
    status, why = judge(checks, frozenset({DCGM}))
    assert status is Outcome.PASS
    assert why == "provision: run r1; agent: healthy; dcgm not run, allowed (not an NVIDIA host)"


def test_judge_warnings_and_skips_pass_and_are_said() -> None:
    status, why = judge([CheckRecord(PROVISION, SKIPPED, "--skip-provision-check"),
                         CheckRecord(AGENT, WARNED, "degraded"), CheckRecord(DCGM, PASSED, "3 tests passed")])
    assert status is Outcome.PASS
    assert why == "agent: degraded; dcgm: 3 tests passed; provision skipped (--skip-provision-check)"


@pytest.mark.parametrize(("result", "expected"), [
    (passed("h"), PASSED),
    (failed("h"), FAILED),
    (not_nvidia("h"), NOT_RUN),
    (HostBurnIn("h", 1, Status.WARN, "memory GPU 0: warn"), WARNED),
    (HostBurnIn("h", 1, Status.UNKNOWN, "dcgmi did not finish within 300 s"), NOT_RUN),
])
def test_dcgm_results_map_to_check_outcomes_unknown_never_passes(result: HostBurnIn, expected: str) -> None:
    assert dcgm_check(result).status == expected


def test_a_dcgm_failure_names_the_test_and_the_gpu_and_the_version() -> None:
    check = dcgm_check(failed("spark"))
    assert check.detail.startswith("software GPU 0: fail (Persistence Mode")
    assert check.detail.endswith("(level 1, DCGM 4.2.3)")


# --- burn_in_hosts with fakes -------------------------------------------------------------------------


def test_outcomes_lifecycle_moves_and_what_each_check_was_asked(conn: Connection) -> None:
    hosts = [host("good"), host("unprov"), host("sick"), host("bad-gpu"), host("tpu", ("tpu_nodes",))]
    lifecycle.set_state(conn, "sick", LifeState.REPAIRING, actor="ann", reason="reseated GPU 3",
                        force=True)
    fakes = Fakes(
        provision={"unprov": CheckRecord(PROVISION, FAILED, "no provision run recorded")},
        agent={"sick": (CheckRecord(AGENT, FAILED, "agent sees 7 of 8 expected chips"), "7 of 8 chips")},
        dcgm={"bad-gpu": failed("bad-gpu"), "tpu": not_nvidia("tpu")})
    result = run(conn, hosts, fakes, level=2)

    by = {g.host: g for g in result.hosts}
    assert [g.host for g in result.hosts] == ["good", "unprov", "sick", "bad-gpu", "tpu"]
    assert {h: g.status for h, g in by.items()} == {
        "good": Outcome.PASS, "unprov": Outcome.FAIL, "sick": Outcome.FAIL, "bad-gpu": Outcome.FAIL,
        "tpu": Outcome.INCOMPLETE}
    assert result.exit_code == 1
    # A gate: each check is asked only about hosts that passed the ones before.
    assert fakes.asked == {"provision": ["good", "unprov", "sick", "bad-gpu", "tpu"],
                           "agent": ["good", "sick", "bad-gpu", "tpu"], "dcgm": ["good", "bad-gpu", "tpu"]}
    assert fakes.levels == [2]
    assert [c.status for c in by["sick"].checks] == [PASSED, FAILED, NOT_RUN]
    assert by["sick"].checks[2].detail == "not run: an earlier check failed"
    assert by["bad-gpu"].reason.startswith("dcgm: software GPU 0: fail (Persistence Mode")

    life = lifecycle.get_many(conn, [h.name for h in hosts])
    assert {h: r.state for h, r in life.items()} == {
        "good": LifeState.IN_SERVICE, "unprov": LifeState.NEW, "sick": LifeState.SUSPECT,
        "bad-gpu": LifeState.SUSPECT, "tpu": LifeState.BURN_IN}
    assert (by["good"].life_from, by["good"].life_to) == ("new", "in_service")
    assert (by["unprov"].life_from, by["unprov"].life_to) == ("new", "new")  # never started
    assert (by["sick"].life_from, by["sick"].life_to) == ("repairing", "suspect")

    audit = [(e.from_state, e.to_state, e.source) for e in lifecycle.history(conn, "bad-gpu")]
    assert audit == [("new", "burn_in", "burn_in"), ("burn_in", "suspect", "burn_in")]
    [start, end] = lifecycle.history(conn, "bad-gpu")
    assert start.actor == "ann@bastion"
    assert start.reason == f"burn-in {result.run_id}: level 2 started"
    assert end.reason is not None
    assert end.reason.startswith(f"burn-in {result.run_id}: failed: dcgm: software GPU 0")
    assert lifecycle.history(conn, "unprov") == []

    # The agent's verdict is each started host's last health.
    health = lifecycle.health_many(conn, ["good", "sick", "unprov"])
    assert health["good"].healthy and health["good"].source == "burn_in"
    assert not health["sick"].healthy and health["sick"].detail == "7 of 8 chips"
    assert "unprov" not in health


def test_incomplete_exits_3_and_allow_missing_passes_it_recorded(conn: Connection) -> None:
    tpu = [host("tpu", ("tpu_nodes",))]
    result = run(conn, tpu, Fakes(dcgm={"tpu": not_nvidia("tpu")}))
    assert result.hosts[0].status is Outcome.INCOMPLETE and result.exit_code == EXIT_INCOMPLETE == 3
    assert result.hosts[0].not_run == ("dcgm: not an NVIDIA host (not in group gpu_nodes): DCGM diagnostics "
                                       "do not apply",)
    assert lifecycle.get(conn, "tpu").state is LifeState.BURN_IN  # incomplete: stays in burn-in

    again = run(conn, tpu, Fakes(dcgm={"tpu": not_nvidia("tpu")}), allow_missing=frozenset({DCGM}))
    assert again.hosts[0].status is Outcome.PASS and again.exit_code == 0
    assert again.allowed == ("missing dcgm",)
    assert lifecycle.get(conn, "tpu").state is LifeState.IN_SERVICE
    stored = store.last_many(conn, ["tpu"])["tpu"]
    assert (stored.run_id, stored.status, stored.allowed) == (again.run_id, "pass", ("missing dcgm",))
    assert [r.status for r in store.history(conn, "tpu")] == ["pass", "incomplete"]


def test_the_stored_result_holds_per_gpu_tests_findings_and_version(conn: Connection) -> None:
    result = run(conn, [host("spark")], Fakes(dcgm={"spark": failed("spark")}), level=1)
    [rec] = store.of_run(conn, result.run_id)
    assert (rec.host, rec.level, rec.status, rec.actor) == ("spark", 1, "fail", "ann@bastion")
    assert rec.dcgm_version == "4.2.3"
    assert rec.per_gpu["0"]["software"] == "fail"
    assert rec.findings[0].startswith("software GPU 0: fail")
    assert [c.name for c in rec.checks] == [PROVISION, AGENT, DCGM]
    assert rec.started_at <= rec.ended_at


def test_skip_provision_check_is_recorded_and_not_asked(conn: Connection) -> None:
    fakes = Fakes()
    result = run(conn, [host("h1")], fakes, skip_provision_check=True)
    assert fakes.asked["provision"] == []
    assert result.hosts[0].status is Outcome.PASS
    assert result.hosts[0].checks[0] == CheckRecord(PROVISION, SKIPPED, "--skip-provision-check")
    assert store.last_many(conn, ["h1"])["h1"].allowed == ("skip provision check",)


def test_states_the_hooks_do_not_name_are_left_alone(conn: Connection) -> None:
    lifecycle.set_state(conn, "q", LifeState.QUARANTINED, actor="ann", reason="flapping", force=True)
    lifecycle.set_state(conn, "live", LifeState.IN_SERVICE, actor="ann", reason="in use", force=True)
    result = run(conn, [host("q"), host("live")], Fakes(dcgm={"live": failed("live")}))
    assert [g.status for g in result.hosts] == [Outcome.PASS, Outcome.FAIL]
    assert lifecycle.get(conn, "q").state is LifeState.QUARANTINED  # a person must release it
    assert lifecycle.get(conn, "live").state is LifeState.SUSPECT  # an in-service host that fails


def test_a_host_locked_by_a_provision_run_is_refused_and_nothing_moves(conn: Connection) -> None:
    other = locks.Holder("run-42", "provision site.yml", "bob", runs.this_machine(), 1)  # pid 1: alive
    locks.acquire(conn, ["h1"], other)
    fakes = Fakes()
    with pytest.raises(StateConflict, match="h1 is held by run-42"):
        run(conn, [host("h1")], fakes)
    assert fakes.asked["provision"] == []
    assert lifecycle.get(conn, "h1").implied
    # The run's own locks are released afterwards: only run-42's remains.
    locks.release(conn, "run-42")
    run(conn, [host("h1")], Fakes())
    assert locks.held(conn, include_stale=True) == []


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"level": 5}, "--level: 5 is not a DCGM run level"),
    ({"allow_missing": frozenset({"nvml"})}, "--allow-missing 'nvml': expected one of dcgm"),
])
def test_bad_requests_are_usage_errors(conn: Connection, kwargs: dict[str, Any], needle: str) -> None:
    level = int(kwargs.pop("level", 1))
    fakes = Fakes()
    with pytest.raises(UsageError, match=needle):
        burn_in_hosts(conn, [host("h")], [], level, options=GateOptions(level=level, **kwargs),
                      provision=fakes.provision, agent=fakes.agent, diagnostics=fakes.dcgm)
    assert fakes.asked == {"provision": [], "agent": [], "dcgm": []}


def test_the_remediation_seam_answers_none_only_for_a_pass_and_moves_nothing(conn: Connection) -> None:
    fakes = Fakes(dcgm={"bad": failed("bad"), "tpu": not_nvidia("tpu")})
    lifecycle.set_state(conn, "bad", LifeState.BURN_IN, actor="loop", reason="repaired", force=True)
    # The loop holds its own lock on the host: the seam must not ask for another.
    locks.acquire(conn, ["good", "bad", "tpu"], locks.Holder("remediate:r1", "remediate", "loop",
                                                             runs.this_machine(), 1))
    check = remediation_burn_in(conn, [], [], level=2, actor="loop", agent=fakes.agent,
                                diagnostics=fakes.dcgm)
    assert check(host("good")) is None
    bad = check(host("bad"))
    assert bad is not None and " fail: dcgm: software GPU 0: fail" in bad
    tpu = check(host("tpu", ("tpu_nodes",)))
    assert tpu is not None and " incomplete: could not run: dcgm: not an NVIDIA host" in tpu
    assert lifecycle.get(conn, "bad").state is LifeState.BURN_IN  # the loop moves it, not the seam
    assert fakes.asked["provision"] == []  # a repair is no provision run
    assert [r.status for r in store.history(conn, "bad")] == ["fail"]


# --- the real provision check over recorded runs ------------------------------------------------------


def record_run(conn: Connection, run_id: str, started: str, hosts: list[HostResult], *,
               status: str = "successful", check: bool = False) -> None:
    runs.start(conn, runs.RunRecord(id=run_id, user="ann", machine="m", pid=1, started_at=started,
                                    heartbeat_at=started, inventory="inv", pattern="all",
                                    playbook="/x/playbooks/site.yml",
                                    options={"check": check}, hosts=hosts))
    if status != "running":
        runs.finish(conn, run_id, status, hosts)


def test_provision_check_reads_the_latest_real_run_of_each_host(conn: Connection) -> None:
    record_run(conn, "r1", "2026-01-01T00:00:00+00:00", [HostResult("a", ok=5), HostResult("b", ok=5),
                                                         HostResult("c", ok=5)])
    record_run(conn, "r2", "2026-01-02T00:00:00+00:00", [HostResult("b", ok=2, failed=1)], status="failed")
    record_run(conn, "r3", "2026-01-03T00:00:00+00:00", [HostResult("a", failed=1)], check=True)  # --check
    record_run(conn, "r4", "2026-01-04T00:00:00+00:00", [HostResult("c")], status="running")
    got = provision_check(conn)(["a", "b", "c", "d"])
    assert got["a"].status == PASSED
    assert got["a"].detail.startswith("run r1 (site.yml) succeeded on the host, ended ")
    assert got["b"] == CheckRecord(PROVISION, FAILED,
                                   "the latest provision run r2 (site.yml) (failed) left the host failed")
    assert got["c"] == CheckRecord(PROVISION, FAILED,
                                   "the latest provision run r4 (site.yml) is still running")
    assert got["d"].status == FAILED and got["d"].detail.startswith("no provision run recorded for the host")
