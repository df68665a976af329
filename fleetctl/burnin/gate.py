"""The burn-in gate: may these hosts take work? Three checks in order, each host's outcome recorded.

1. ``provision``: the host's latest provision run recorded in the state database (not ``--check``,
   not fleetctl's internal reboot/repair runs) finished and succeeded on it, naming the run;
   ``--skip-provision-check`` skips it, recorded;
2. ``agent``: the host's agent answers for itself (not another host's agent) with a healthy report
   and every chip the inventory expects (the fleet report's verdict, :func:`agent_check`);
   degraded passes as a warning;
3. ``dcgm``: DCGM's diagnostics at the level asked (:func:`fleetctl.burnin.run.run_dcgm_diagnostics`).

A check that fails stops the host's later checks (a gate: DCGM's stress tests are not run on a host
that is not provisioned or whose agent is unhealthy). The host's outcome:

- ``fail``: some check failed; the reason names it (for DCGM, the test and the GPU);
- ``incomplete``: nothing failed but a check could not run (no DCGM on a TPU host, no dcgmi, a
  diagnostic that timed out or printed no result), unless the operator allowed that check to be
  missing (``--allow-missing dcgm``, recorded): never a silent pass;
- ``pass``: every check passed (or was allowed to be missing).

Lifecycle (source ``burn_in``): a host that passes the provision check starts burn-in (new,
repairing, suspect, rma -> burn_in); pass -> in_service, fail -> suspect, incomplete -> no move.
A host that fails the provision check never started: its state is left as it is.

The checks sit behind three small interfaces (:data:`ProvisionCheck`, :data:`AgentCheck`,
:data:`Diagnostics`) so the gate is tested with fakes; :func:`burn_in_hosts` wires the real ones.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetctl.burnin.dcgm import Status
from fleetctl.burnin.run import HostBurnIn
from fleetctl.state import burnin as store
from fleetctl.state.burnin import BurnInRecord, CheckRecord
from fleetctl.views.text import visible

if TYPE_CHECKING:
    from fleetctl.inventory import Host
    from fleetctl.state.db import Connection

PROVISION, AGENT, DCGM = "provision", "agent", "dcgm"
CHECKS = (PROVISION, AGENT, DCGM)
MAY_BE_MISSING = (DCGM,)  # checks --allow-missing accepts
EXIT_INCOMPLETE = 3  # beside 0 pass, 1 fail, 2 usage: a check could not run
# Check outcomes (CheckRecord.status).
PASSED, WARNED, FAILED, NOT_RUN, SKIPPED = "pass", "warn", "fail", "not_run", "skipped"
# Per level, seconds DCGM may take on a host (playbooks/burn_in.yml's burn_in_timeouts defaults).
LEVEL_TIMEOUT_S = {1: 300, 2: 900, 3: 3600, 4: 14400}


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome word
    FAIL = "fail"
    INCOMPLETE = "incomplete"


# (host names) -> host -> the provision check's record
ProvisionCheck = Callable[[Sequence[str]], Mapping[str, CheckRecord]]
# (hosts, every inventory host) -> host -> (the agent check's record, the verdict for host_health:
# None when fit for work, else why not)
AgentCheck = Callable[[Sequence["Host"]], Mapping[str, tuple[CheckRecord, "str | None"]]]
# (hosts, level) -> host -> DCGM's result
Diagnostics = Callable[[Sequence["Host"], int], Mapping[str, HostBurnIn]]


@dataclass(frozen=True)
class GateOptions:
    level: int = 1
    actor: str = "fleetctl"
    skip_provision_check: bool = False
    allow_missing: frozenset[str] = frozenset()
    move_lifecycle: bool = True  # False: the caller (the remediation loop) moves the lifecycle itself


@dataclass(frozen=True)
class HostGate:
    """One host's burn-in: its outcome, why, every check, and the lifecycle move it made."""

    host: str
    status: Outcome
    reason: str
    checks: tuple[CheckRecord, ...]
    allowed: tuple[str, ...] = ()
    dcgm: HostBurnIn | None = None
    life_from: str | None = None
    life_to: str | None = None

    @property
    def not_run(self) -> tuple[str, ...]:
        return tuple(f"{c.name}: {c.detail}" for c in self.checks if c.status == NOT_RUN)

    def record(self, run_id: str, level: int, actor: str, started_at: float, ended_at: float) -> BurnInRecord:
        report = self.dcgm.report if self.dcgm is not None else None
        per_gpu = {str(g): {t: s.value for t, s in tests.items()} for g, tests in
                   sorted(report.per_gpu().items())} if report is not None else {}
        findings = tuple(visible(f.line(), limit=300) for f in report.findings()) if report else ()
        return BurnInRecord(run_id=run_id, host=self.host, started_at=started_at, ended_at=ended_at,
                            actor=actor, level=level, status=self.status.value, reason=self.reason,
                            checks=self.checks, not_run=self.not_run, allowed=self.allowed,
                            dcgm_version=report.version if report is not None else None, per_gpu=per_gpu,
                            findings=findings)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "status": self.status.value, "reason": self.reason,
                "checks": [c.to_dict() for c in self.checks], "not_run": list(self.not_run),
                "allowed": list(self.allowed), "lifecycle": {"from": self.life_from, "to": self.life_to},
                "dcgm": self.dcgm.to_dict() if self.dcgm is not None else None}


@dataclass(frozen=True)
class BurnInResult:
    """A whole ``fleetctl burn-in`` run."""

    run_id: str
    level: int
    hosts: list[HostGate] = field(default_factory=list)
    allowed: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 every host passed, 1 some host failed, else 3 (:data:`EXIT_INCOMPLETE`) when some host's
        burn-in is incomplete."""
        statuses = {h.status for h in self.hosts}
        if Outcome.FAIL in statuses:
            return 1
        return EXIT_INCOMPLETE if Outcome.INCOMPLETE in statuses else 0

    def to_dict(self) -> dict[str, Any]:
        counts = {o.value: sum(1 for h in self.hosts if h.status is o) for o in Outcome}
        return {"run_id": self.run_id, "level": self.level, "allowed": list(self.allowed),
                "summary": counts, "hosts": [h.to_dict() for h in self.hosts]}


# --- the pure part ------------------------------------------------------------------------------------


def judge(checks: Sequence[CheckRecord], allow_missing: frozenset[str] = frozenset()) -> tuple[Outcome, str]:
    """A host's outcome and one-line reason from its checks (see the module's docstring)."""
    failed = [c for c in checks if c.status == FAILED]
    if failed:
        return Outcome.FAIL, "; ".join(f"{c.name}: {c.detail}" for c in failed)
    missing = [c for c in checks if c.status == NOT_RUN and c.name not in allow_missing]
    if missing:
        return Outcome.INCOMPLETE, "could not run: " + "; ".join(f"{c.name}: {c.detail}" for c in missing)
    said = [f"{c.name}: {c.detail}" for c in checks if c.status in (PASSED, WARNED)]
    said += [f"{c.name} not run, allowed ({c.detail})" for c in checks if c.status == NOT_RUN]
    said += [f"{c.name} skipped ({c.detail})" for c in checks if c.status == SKIPPED]
    return Outcome.PASS, "; ".join(said) or "no checks"


def dcgm_check(result: HostBurnIn) -> CheckRecord:
    """DCGM's result as the gate's ``dcgm`` check: unknown (it could not run, or ran and said
    nothing usable) is ``not_run``, never a pass."""
    detail = visible(result.reason, limit=1000)
    version = result.report.version if result.report is not None else None
    where = f"level {result.level}" + (f", DCGM {version}" if version else "")
    if result.status is Status.PASS:
        return CheckRecord(DCGM, PASSED, f"{detail} ({where})")
    if result.status is Status.WARN:
        return CheckRecord(DCGM, WARNED, f"{detail} ({where})")
    if result.status is Status.FAIL:
        return CheckRecord(DCGM, FAILED, f"{detail} ({where})")
    return CheckRecord(DCGM, NOT_RUN, detail)


def _blocked(name: str) -> CheckRecord:
    return CheckRecord(name, NOT_RUN, "not run: an earlier check failed")


# --- the real checks ------------------------------------------------------------------------------------


def provision_check(conn: Connection) -> ProvisionCheck:
    """Each host's latest provision run recorded here (a ``--check`` run or an internal one does not
    count) must have
    finished and succeeded on it."""
    from fleetctl.runner import HostResult

    def check(hosts: Sequence[str]) -> Mapping[str, CheckRecord]:
        found: dict[str, CheckRecord] = {}
        for name in hosts:
            rows = conn.execute(
                "SELECT r.id, r.status, r.playbook, r.ended_at, r.options, h.result "
                "FROM provision_run_hosts h JOIN provision_runs r ON r.id = h.run_id WHERE h.host = ? "
                "ORDER BY r.started_at DESC, r.id DESC", (name,)).fetchall()
            latest = next((r for r in rows if _provision_like(r["options"])), None)
            if latest is None:
                found[name] = CheckRecord(PROVISION, FAILED, "no provision run recorded for the host in the "
                                          "state database (fleetctl provision, or --skip-provision-check)")
                continue
            try:
                result = HostResult.from_dict(json.loads(latest["result"])).state
            except (ValueError, TypeError, KeyError):
                result = "?"
            run = f"run {latest['id']} ({Path(str(latest['playbook'])).name})"
            if latest["status"] == "running":
                found[name] = CheckRecord(PROVISION, FAILED, f"the latest provision {run} is still running")
            elif result in ("ok", "changed"):
                ended = f", ended {latest['ended_at']}" if latest["ended_at"] else ""
                found[name] = CheckRecord(PROVISION, PASSED, f"{run} succeeded on the host{ended}")
            else:
                why = f"the latest provision {run} ({latest['status']}) left the host {result}"
                found[name] = CheckRecord(PROVISION, FAILED, why)
        return found

    return check


def _provision_like(options: object) -> bool:
    """Not a ``--check`` run, nor one of fleetctl's internal runs (maintain's reboot, a remediation's
    repair): neither says whether the host is provisioned."""
    try:
        o = json.loads(str(options))
    except ValueError:
        return True
    return not (isinstance(o, dict) and (o.get("check") or o.get("internal")))


def agent_check(inventory: Sequence[Host], *, timeout_s: float = 5.0) -> AgentCheck:
    """The fleet report's verdict on each host (:mod:`fleetctl.report.build`): the agent's own status,
    the inventory's expected chip count, a stale sample, and an answer that is another host's agent
    (judged over the whole ``inventory``, as undrain's check is)."""
    from fleetctl.fanout import FanoutOptions, agent_tokens, fetch_all
    from fleetctl.report.build import host_row_from_node
    from fleetctl.report.identity import identity_findings

    def check(hosts: Sequence[Host]) -> Mapping[str, tuple[CheckRecord, str | None]]:
        tokens = agent_tokens(hosts)
        results = fetch_all(hosts, lambda h: tokens[h.name],
                            FanoutOptions(timeout_s=timeout_s, deadline_s=timeout_s + 30.0))
        now = time.time()
        asked = {h.name for h in hosts}
        everyone = [*hosts, *(h for h in inventory if h.name not in asked)]
        said = {r.host.name: r.report.host for r in results if r.report is not None}
        wrong = identity_findings(everyone, said)
        found: dict[str, tuple[CheckRecord, str | None]] = {}
        for r in results:
            h = r.host
            if r.report is None:
                why = f"agent at {h.agent_endpoint} {r.kind}: {r.detail}"
            elif h.name in wrong and wrong[h.name].foreign:
                why = wrong[h.name].problem.message
            else:
                row = host_row_from_node(h.name, h.address, h.agent_port, h.groups, r.report, now,
                                         expected_chips=h.expected_chips)
                chips = f"{row.chips_present}/{row.chips_total} chips"
                problems = ", ".join(f"{p.short()}: {p.message}" for p in row.problems[:3])
                status = row.status.value
                if status == "healthy":
                    found[h.name] = (CheckRecord(AGENT, PASSED, f"healthy, {chips}"), None)
                    continue
                if status == "degraded":
                    found[h.name] = (CheckRecord(AGENT, WARNED, f"degraded, {chips} ({problems})"), None)
                    continue
                why = f"agent reports {status}, {chips}" + (f" ({problems})" if problems else "")
            why = visible(why, limit=1000)
            found[h.name] = (CheckRecord(AGENT, FAILED, why), why)
        return found

    return check


def dcgm_diagnostics(inventory_sources: Sequence[str], *, timeout_s: float | None = None,
                     cwd: Path | None = None, forks: int | None = None) -> Diagnostics:
    """DCGM through ``playbooks/burn_in.yml`` on the hosts given, one ansible-playbook run for all;
    ``timeout_s`` replaces the level's time limit per host."""
    from fleetctl.burnin.run import run_dcgm_diagnostics

    def run(hosts: Sequence[Host], level: int) -> Mapping[str, HostBurnIn]:
        names = [h.name for h in hosts]
        extra = {"burn_in_timeouts": {str(level): max(1, round(timeout_s))}} if timeout_s else None
        with tempfile.TemporaryDirectory(prefix="fleetctl-burn-in-") as work:
            result = run_dcgm_diagnostics(list(inventory_sources), workdir=Path(work) / "runner",
                                          pattern=",".join(names), level=level, expected_hosts=names,
                                          extra_vars=extra, cwd=cwd, forks=forks)
        return result.hosts

    return run


# --- the gate -------------------------------------------------------------------------------------------


def new_run_id() -> str:
    return f"bi-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def burn_in_hosts(conn: Connection, hosts: Sequence[Host], inventory: Sequence[Host], level: int, *,
                  options: GateOptions | None = None, provision: ProvisionCheck | None = None,
                  agent: AgentCheck | None = None, diagnostics: Diagnostics | None = None,
                  inventory_sources: Sequence[str] = (), timeout_s: float | None = None,
                  locked_by: str | None = None, run_id: str | None = None,
                  echo: Callable[[str], None] = lambda _: None) -> BurnInResult:
    """Burn in ``hosts`` (inventory :class:`~fleetctl.inventory.Host`\\ s) at DCGM ``level``: the three
    checks, each host's result recorded (:mod:`fleetctl.state.burnin`), its agent verdict recorded as
    its last health, its lifecycle moved (unless ``options.move_lifecycle`` is False).

    The checks default to the real ones (the state database, the agents, DCGM through Ansible on
    ``inventory_sources``). The hosts are locked for the run (holder ``burn-in:<run id>``) unless the
    caller holds them already (``locked_by``): a provision or maintain of them meanwhile is refused.
    Raises :class:`~fleetctl.errors.UsageError` for a bad level and
    :class:`~fleetctl.errors.StateConflict` when another holder has one of the hosts locked.
    """
    import os

    from fleetctl.burnin.run import LEVELS
    from fleetctl.errors import StateConflict, UsageError
    from fleetctl.state import locks
    from fleetctl.state.runs import this_machine

    opts = options or GateOptions(level=level)
    if level not in LEVELS:
        raise UsageError(f"--level: {level} is not a DCGM run level (1, 2, 3 or 4)")
    unknown = sorted(opts.allow_missing - set(MAY_BE_MISSING))
    if unknown:
        raise UsageError(f"--allow-missing {unknown[0]!r}: expected one of {', '.join(MAY_BE_MISSING)}")
    run_id = run_id or new_run_id()
    allowed = tuple([f"missing {c}" for c in sorted(opts.allow_missing)]
                    + (["skip provision check"] if opts.skip_provision_check else []))
    names = [h.name for h in hosts]
    if locked_by is None:
        holder = locks.Holder(f"burn-in:{run_id}", f"burn-in level {level}", opts.actor, this_machine(),
                              os.getpid())
        limit = timeout_s or LEVEL_TIMEOUT_S[level]
        try:
            locks.acquire(conn, names, holder, ttl=timedelta(seconds=limit + 900))
        except locks.LocksHeld as exc:
            raise StateConflict(f"refused: {exc}") from exc
    started = time.time()
    diagnostics = diagnostics or dcgm_diagnostics(inventory_sources, timeout_s=timeout_s)
    try:
        gates = _run_checks(conn, hosts, inventory, level, opts, run_id, allowed,
                            provision=provision or provision_check(conn),
                            agent=agent or agent_check(inventory), diagnostics=diagnostics, echo=echo)
        ended = time.time()
        store.record(conn, [g.record(run_id, level, opts.actor, started, ended) for g in gates])
    finally:
        if locked_by is None:
            locks.release(conn, f"burn-in:{run_id}")
    return BurnInResult(run_id=run_id, level=level, hosts=gates, allowed=allowed)


def _run_checks(conn: Connection, hosts: Sequence[Host], inventory: Sequence[Host], level: int,
                opts: GateOptions, run_id: str, allowed: tuple[str, ...], *, provision: ProvisionCheck,
                agent: AgentCheck, diagnostics: Diagnostics, echo: Callable[[str], None]) -> list[HostGate]:
    from fleetctl.state import lifecycle

    checks: dict[str, list[CheckRecord]] = {h.name: [] for h in hosts}
    names = list(checks)
    before = {n: r.label for n, r in lifecycle.get_many(conn, names).items()}
    # 1. provision
    if opts.skip_provision_check:
        for n in names:
            checks[n].append(CheckRecord(PROVISION, SKIPPED, "--skip-provision-check"))
    else:
        got = provision(names)
        for n in names:
            checks[n].append(got.get(n) or CheckRecord(PROVISION, FAILED, "no answer from the check"))
    started = [h for h in hosts if checks[h.name][-1].status != FAILED]
    if opts.move_lifecycle:
        for h in started:
            lifecycle.on_burn_in_start(conn, h.name, actor=opts.actor, run_id=run_id, level=level)
    echo(f"burn-in {run_id}: level {level} on {len(started)} of {len(hosts)} hosts")
    # 2. the agent
    healthy: list[Host] = []
    if started:
        verdicts = dict(agent(started))
        for h in started:
            rec, _ = verdicts.setdefault(h.name, (CheckRecord(AGENT, FAILED, "no answer from the check"),
                                                  "no answer from the agent check"))
            checks[h.name].append(rec)
            if rec.status in (PASSED, WARNED):
                healthy.append(h)
        lifecycle.record_health(conn, {h.name: verdicts[h.name][1] for h in started}, source="burn_in")
    # 3. DCGM
    dcgm: Mapping[str, HostBurnIn] = {}
    if healthy:
        echo(f"burn-in {run_id}: DCGM diagnostics level {level} on {len(healthy)} hosts")
        dcgm = diagnostics(healthy, level)
    gates: list[HostGate] = []
    for h in hosts:
        mine = checks[h.name]
        if h.name in dcgm:
            mine.append(dcgm_check(dcgm[h.name]))
        elif h in healthy:
            mine.append(CheckRecord(DCGM, NOT_RUN, "no result from the diagnostics run"))
        for name in CHECKS[len(mine):]:
            mine.append(_blocked(name))
        status, why = judge(mine, opts.allow_missing)
        if opts.move_lifecycle and h in started:
            lifecycle.on_burn_in_result(conn, h.name, status=status.value, actor=opts.actor, run_id=run_id,
                                        why=why)
        gates.append(HostGate(h.name, status, visible(why, limit=2000), tuple(mine), allowed,
                              dcgm.get(h.name), before[h.name], lifecycle.get(conn, h.name).label))
    return gates


def remediation_burn_in(conn: Connection, inventory: Sequence[Host], inventory_sources: Sequence[str], *,
                        level: int = 1, actor: str = "fleetctl", allow_missing: frozenset[str] = frozenset(),
                        check_provision: bool = False, agent: AgentCheck | None = None,
                        diagnostics: Diagnostics | None = None) -> Callable[[Host], str | None]:
    """The remediation loop's burn-in seam (``fleetctl.remediate.actions.BurnIn``): None when the host
    passed, else why not (an incomplete burn-in is not a pass). The loop holds the host's locks and
    moves its lifecycle itself; the result is recorded all the same. The provision check is off by
    default: a repair (reset, reboot) is no provision run."""

    def check(host: Host) -> str | None:
        result = burn_in_hosts(conn, [host], inventory, level, inventory_sources=inventory_sources,
                               options=GateOptions(level=level, actor=actor,
                                                   skip_provision_check=not check_provision,
                                                   allow_missing=allow_missing, move_lifecycle=False),
                               agent=agent, diagnostics=diagnostics, locked_by="remediate")
        gate = result.hosts[0]
        if gate.status is Outcome.PASS:
            return None
        return f"burn-in {result.run_id} {gate.status}: {gate.reason}"

    return check
