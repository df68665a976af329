"""Drain, undrain and status: the core behind ``fleetctl drain|undrain|status``.

Order of work for a drain, so that a fleetctl killed at any point leaves a true record:

1. ask each host's scheduler for its state (a scheduler that is down aborts here, nothing changed);
   a drain someone else set is reported and left alone;
2. in one ``BEGIN IMMEDIATE`` transaction, count the unavailable hosts of the pool and move the
   requested ones to ``cordoned`` (refused with the numbers past max-unavailable);
3. tell the scheduler (cordoned → draining; a refusal puts the host back to active, audited);
4. with ``--wait``, poll until no workload runs (→ drained) or the timeout (→ drain_failed).

A re-run finds hosts in cordoned/draining/drain_failed and carries on from there.

Before step 1, every input is checked against what the hosts' schedulers accept (a reason too long
for one scontrol argument or a Kubernetes annotation, a name Kubernetes cannot hold): refused with
one line, nothing asked or changed. A scheduler call that fails in an unexpected way after step 2
(an OS error running its client, a bug) becomes that host's outcome, never a traceback, and the
host keeps the state recorded before the call (cordoned or draining), which a re-run resumes.
A host in a state this fleetctl does not know (a newer one wrote it) is reported and left alone.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fleet_agent.verdict import unfit_for_work

from fleetctl.errors import FleetctlError, UsageError
from fleetctl.schedulers.base import (
    ForeignDrainError,
    HostLike,
    NodeState,
    SchedState,
    Scheduler,
    SchedulerError,
    states,
    tag_reason,
)
from fleetctl.state import hosts as hstate
from fleetctl.state import lifecycle, locks
from fleetctl.state.db import Connection
from fleetctl.state.hosts import DrainState, HostRecord
from fleetctl.validation import Size, require_reason, scheduler_input_problem

SchedulerFor = Callable[[HostLike], Scheduler]
Echo = Callable[[str], None]
_POLL_MAX_S = 10.0


def _quiet(_: str) -> None:
    pass


class HealthCheck(Protocol):
    """``None`` for a host healthy enough to take work again, else the reason it is not."""

    def __call__(self, hosts: Sequence[HostLike]) -> Mapping[str, str | None]: ...


def current_user() -> str:
    """Who runs fleetctl, for reasons and the audit log (the human behind sudo, if any)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


@dataclass
class Outcome:
    host: str
    ok: bool
    state: str  # fleetctl state afterwards
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DrainOptions:
    reason: str
    actor: str = field(default_factory=current_user)
    wait: bool = True
    timeout_s: float = 3600.0
    dry_run: bool = False
    force: bool = False  # past max-unavailable (an emergency); never over someone else's drain
    max_unavailable: Size = field(default_factory=lambda: Size(1))
    poll_s: float = 2.0
    owner: str | None = None  # maintain marks its hosts
    run_id: str | None = None
    lock_holder: str | None = None  # the caller's own host locks (maintain) do not block it
    # Further max-unavailable limits over parts of ``pool`` (remediate's per-rack rules), checked in
    # the same transaction as max_unavailable.
    scoped: Sequence[hstate.ScopedLimit] = ()


@dataclass
class DrainPlan:
    hosts: list[str]  # to cordon or resume
    skipped: list[Outcome]  # already drained, someone else's drain, in maintenance
    pool: int
    limit: int
    unavailable: list[str]  # in the pool, besides the requested hosts
    states: dict[str, NodeState]
    records: dict[str, HostRecord]

    def lines(self) -> list[str]:
        total = len(set(self.unavailable) | set(self.hosts))
        out = [f"max-unavailable {self.limit} of {self.pool} hosts; unavailable now {len(self.unavailable)}"
               f"{' (' + ', '.join(self.unavailable[:10]) + ')' if self.unavailable else ''}; "
               f"after this drain {total}"]
        for h in self.hosts:
            rec, st = self.records[h], self.states[h]
            action = "resume drain" if rec.state is not DrainState.ACTIVE else "drain"
            out.append(f"  {action} {h}: fleetctl {rec.state}, scheduler {st.state} ({st.detail})")
        out += [f"  skip {o.host}: {o.message}" for o in self.skipped]
        return out


def _names(hosts: Sequence[HostLike]) -> str:
    names = [h.name for h in hosts]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def scheduler_map(hosts: Sequence[HostLike], scheduler_for: SchedulerFor) -> dict[str, Scheduler]:
    """Each host's scheduler; a misconfigured one (exit 2) or an unreadable kubeconfig (exit 1) ends
    the command with the error it raises."""
    return {h.name: scheduler_for(h) for h in hosts}


def probe(hosts: Sequence[HostLike], scheds: Mapping[str, Scheduler], *,
          tolerate: bool = False) -> dict[str, NodeState]:
    """Scheduler state of each host: one bulk query per scheduler where it has one, else in parallel.

    With ``tolerate`` (counting a pool, ``status``), an adapter's cheaper ``pool_states`` view is
    used where it has one, and a host whose scheduler cannot be asked is reported ``down`` (it
    counts as unavailable); without, the first error aborts (a scheduler that is down: nothing is
    done).
    """
    groups: dict[int, tuple[Scheduler, list[HostLike]]] = {}
    for h in hosts:
        s = scheds[h.name]
        groups.setdefault(id(s), (s, []))[1].append(h)

    def one(h: HostLike, s: Scheduler) -> NodeState:
        try:
            return s.state(h)
        except SchedulerError as exc:
            if not tolerate:
                raise
            return NodeState(SchedState.DOWN, None, f"unreachable: {exc}")

    result: dict[str, NodeState] = {}
    for s, members in groups.values():
        pool_states = getattr(s, "pool_states", None)
        if tolerate and pool_states is not None:  # a cheaper view, good enough for counting a pool
            try:
                result.update(pool_states(members))
                continue
            except SchedulerError:
                pass  # fall back to asking each host
        if hasattr(s, "states"):
            try:
                result.update(states(s, members))
                continue
            except SchedulerError as exc:
                if not tolerate:
                    raise
                down = NodeState(SchedState.DOWN, None, f"unreachable: {exc}")
                result.update({h.name: down for h in members})
                continue
        with ThreadPoolExecutor(max_workers=min(16, len(members))) as pool:
            for h, st in zip(members, pool.map(lambda h, s=s: one(h, s), members), strict=True):
                result[h.name] = st
    return result


def check_inputs(hosts: Sequence[HostLike], scheduler_for: SchedulerFor, reason: str) -> None:
    """Refuse (one line, exit 2) what a host's scheduler cannot take, before anything is asked."""
    problems: list[str] = []
    for h in hosts:
        sched = scheduler_for(h)
        node_name = getattr(sched, "node_name", None)
        try:
            node = str(node_name(h)) if node_name is not None else h.name
        except SchedulerError:
            continue  # a name the adapter rejects is reported by the probe, per host
        problem = scheduler_input_problem(sched.kind, h.name, node, reason)
        if problem:
            problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 1} more hosts)" if len(problems) > 1 else ""
        raise UsageError(f"{problems[0]}{more}; nothing changed")


def _unexpected(exc: Exception) -> str:
    return f"unexpected error: {type(exc).__name__}: {exc}"


def plan_drain(conn: Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
               scheduler_for: SchedulerFor, opts: DrainOptions) -> DrainPlan:
    require_reason(opts.reason)
    scheds = scheduler_map(list({h.name: h for h in [*hosts, *pool]}.values()), scheduler_for)
    try:
        current = probe(hosts, scheds)
    except SchedulerError as exc:
        raise FleetctlError(f"scheduler unavailable for {_names(hosts)}, nothing changed: {exc}") from None
    records = hstate.get_many(conn, [h.name for h in hosts])
    locked = {} if opts.force else _locked_by_others(conn, [h.name for h in hosts], opts.lock_holder)
    todo: list[str] = []
    skipped: list[Outcome] = []
    for h in hosts:
        st, rec = current[h.name], records[h.name]
        if rec.unknown:
            skipped.append(Outcome(h.name, False, rec.label, rec.unknown_message()))
        elif h.name in locked:
            skipped.append(Outcome(h.name, False, rec.state.value,
                                   f"refused: {locked[h.name].describe()}; --force to drain anyway"))
        elif st.foreign_drain:
            skipped.append(Outcome(h.name, False, rec.state.value,
                                   f"already drained by someone else, left as it is: {st.reason!r}"))
        elif rec.state in (DrainState.MAINTAINING, DrainState.VERIFYING, DrainState.QUARANTINED):
            skipped.append(Outcome(h.name, True, rec.state.value,
                                   f"already out of service ({rec.state}, {rec.reason or 'no reason'})"))
        elif rec.state is DrainState.DRAINED and st.state is SchedState.DRAINED:
            skipped.append(Outcome(h.name, True, rec.state.value, "already drained"))
        else:
            todo.append(h.name)
    others = [p for p in pool if p.name not in set(todo)]
    pool_states = probe(others, scheds, tolerate=True) if todo else {}
    pool_records = hstate.get_many(conn, [p.name for p in others])
    unavailable = sorted(
        n for n in pool_states
        if not pool_states[n].available or pool_records[n].state is not DrainState.ACTIVE
    )
    pool_size = len({p.name for p in pool} | {h.name for h in hosts})
    return DrainPlan(todo, skipped, pool_size, opts.max_unavailable.of(pool_size), unavailable,
                     current, records)


def _locked_by_others(conn: Connection, names: Sequence[str],
                      own: str | None) -> dict[str, locks.Lock]:
    """Live host locks (a provision or maintain run at work) on ``names`` not held by ``own``."""
    wanted = set(names)
    return {lk.host: lk for lk in locks.held(conn) if lk.host in wanted and lk.holder.id != own}


def drain(conn: Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
          scheduler_for: SchedulerFor, opts: DrainOptions, *, echo: Echo = _quiet,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """Drain ``hosts``; max-unavailable is counted over ``pool`` (the fleet or a group)."""
    reason = tag_reason(opts.actor, require_reason(opts.reason))
    check_inputs(hosts, scheduler_for, reason)
    plan = plan_drain(conn, hosts, pool, scheduler_for, opts)
    for line in plan.lines():
        echo(line)
    if opts.dry_run or not plan.hosts:
        return plan.skipped
    by_name = {h.name: h for h in hosts}
    try:
        hstate.reserve(conn, plan.hosts, pool=[p.name for p in pool] + plan.hosts, limit=plan.limit,
                       scheduler_unavailable=plan.unavailable, actor=opts.actor, reason=reason,
                       force=opts.force, owner=opts.owner, run_id=opts.run_id, scoped=opts.scoped)
    except hstate.BudgetExceeded as exc:
        msg = str(exc) if exc.scope else f"{exc} (--max-unavailable {opts.max_unavailable})"
        return plan.skipped + [Outcome(h, False, plan.records[h].state.value, msg) for h in plan.hosts]

    outcomes = list(plan.skipped)
    pending: list[str] = []
    for name in plan.hosts:
        host, sched = by_name[name], scheduler_for(by_name[name])
        before = hstate.get(conn, name)
        try:
            sched.drain(host, reason)
        except SchedulerError as exc:
            if before.state is DrainState.CORDONED:
                hstate.transition(conn, name, DrainState.ACTIVE, actor=opts.actor,
                                  expect={DrainState.CORDONED}, note=f"scheduler refused the drain: {exc}")
            kind = "refused" if isinstance(exc, ForeignDrainError) else "failed"
            outcomes.append(Outcome(name, False, hstate.get(conn, name).state.value, f"drain {kind}: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - whatever it was, the host's record says where it is
            left = hstate.get(conn, name).state.value
            outcomes.append(Outcome(name, False, left, f"drain failed: {_unexpected(exc)}; left {left}: "
                                    "re-run drain to resume, or undrain"))
            continue
        if before.state is not DrainState.DRAINING:
            hstate.transition(conn, name, DrainState.DRAINING, actor=opts.actor, reason=reason,
                              owner=opts.owner, run_id=opts.run_id,
                              note=None if before.state is DrainState.CORDONED
                              else f"resumed from {before.state}")
        lifecycle.on_drain(conn, name, actor=opts.actor, reason=f"drain: {opts.reason}", run_id=opts.run_id)
        echo(f"{name}: draining ({sched.kind})")
        pending.append(name)

    if not opts.wait:
        outcomes += [Outcome(n, True, DrainState.DRAINING.value, "draining (not waiting)") for n in pending]
        return outcomes
    outcomes += wait_drained(conn, [by_name[n] for n in pending], scheduler_for, reason, opts,
                             echo=echo, sleep=sleep, clock=clock)
    return outcomes


def wait_drained(conn: Connection, hosts: Sequence[HostLike], scheduler_for: SchedulerFor,
                 reason: str, opts: DrainOptions, *, echo: Echo = _quiet,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """Poll until each host runs nothing (→ drained) or ``opts.timeout_s`` passes (→ drain_failed).

    Each round calls the scheduler's ``drain`` again for hosts still draining: it is idempotent,
    and for Kubernetes it retries evictions a PodDisruptionBudget refused (backoff: the poll
    interval doubles up to 10 s).
    """
    deadline = clock() + opts.timeout_s
    waiting = {h.name: h for h in hosts}
    last: dict[str, str] = {}
    outcomes: list[Outcome] = []
    interval = opts.poll_s
    while waiting:
        for name, host in list(waiting.items()):
            sched = scheduler_for(host)
            now = hstate.get(conn, name)
            if now.state not in (DrainState.DRAINING, DrainState.DRAINED):
                # Undrained (or taken over) by someone else while we waited: not ours to drain again.
                outcomes.append(Outcome(name, False, now.label,
                                        f"changed meanwhile by {now.actor or 'someone else'} "
                                        f"({now.label}); stopped waiting"))
                del waiting[name]
                continue
            try:
                st = sched.state(host)
                workloads = sched.running_workloads(host) if st.state is SchedState.DRAINED else []
                if st.state is SchedState.DRAINED and not workloads:
                    hstate.transition(conn, name, DrainState.DRAINED, actor=opts.actor,
                                      expect={DrainState.DRAINING, DrainState.DRAINED}, owner=opts.owner,
                                      run_id=opts.run_id)
                    echo(f"{name}: drained")
                    outcomes.append(Outcome(name, True, DrainState.DRAINED.value, "drained"))
                    del waiting[name]
                    continue
                if st.foreign_drain:
                    raise ForeignDrainError(f"someone else changed the drain ({st.reason!r})")
                sched.drain(host, reason)
                running = workloads or sched.running_workloads(host)
                last[name] = f"scheduler {st.detail or st.state}; running: {', '.join(running[:5]) or 'none'}"
            except ForeignDrainError as exc:
                hstate.transition(conn, name, DrainState.DRAIN_FAILED, actor=opts.actor, note=str(exc))
                outcomes.append(Outcome(name, False, DrainState.DRAIN_FAILED.value, str(exc)))
                del waiting[name]
            except (SchedulerError, hstate.TransitionError) as exc:
                last[name] = str(exc)  # transient (a restarting controller); retried until the timeout
            except Exception as exc:  # noqa: BLE001 - the host stays draining (recorded); a re-run resumes
                outcomes.append(Outcome(name, False, DrainState.DRAINING.value,
                                        f"drain failed: {_unexpected(exc)}; left draining: re-run drain "
                                        "to resume"))
                del waiting[name]
        if not waiting:
            break
        if clock() >= deadline:
            for name in waiting:
                note = f"timed out after {opts.timeout_s:.0f}s: {last.get(name, 'still draining')}"
                try:
                    hstate.transition(conn, name, DrainState.DRAIN_FAILED, actor=opts.actor,
                                      expect={DrainState.DRAINING}, note=note)
                except hstate.TransitionError as exc:  # someone else moved it in the last round
                    note = f"{note}; changed meanwhile ({exc})"
                echo(f"{name}: drain_failed ({note})")
                outcomes.append(Outcome(name, False, hstate.get(conn, name).state.value, note))
            break
        sleep(max(0.0, min(interval, deadline - clock())))
        interval = min(interval * 2, _POLL_MAX_S)
    return outcomes


# --- undrain ----------------------------------------------------------------------------------


def undrain(conn: Connection, hosts: Sequence[HostLike], scheduler_for: SchedulerFor,
            health: HealthCheck | None, *, actor: str | None = None, force: bool = False,
            echo: Echo = _quiet, note: str = "undrain", lock_holder: str | None = None) -> list[Outcome]:
    """Put hosts back into service: only drains fleetctl made, only healthy hosts unless ``force``."""
    actor = actor or current_user()
    scheds = scheduler_map(hosts, scheduler_for)
    try:
        current = probe(hosts, scheds)
    except SchedulerError as exc:
        raise FleetctlError(f"scheduler unavailable for {_names(hosts)}, nothing changed: {exc}") from None
    records = hstate.get_many(conn, [h.name for h in hosts])
    locked = {} if force else _locked_by_others(conn, [h.name for h in hosts], lock_holder)
    outcomes: list[Outcome] = []
    candidates: list[HostLike] = []
    for h in hosts:
        st, rec = current[h.name], records[h.name]
        if rec.unknown:  # even with --force: the fleetctl that wrote it knows what it means
            outcomes.append(Outcome(h.name, False, rec.label, rec.unknown_message()))
        elif h.name in locked:
            outcomes.append(Outcome(h.name, False, rec.state.value,
                                    f"refused: {locked[h.name].describe()}; --force to undrain anyway"))
        elif st.foreign_drain:
            outcomes.append(Outcome(h.name, False, rec.state.value,
                                    f"drained by someone else, not touching it: {st.reason!r}"))
        elif rec.state is DrainState.ACTIVE and st.state not in (SchedState.DRAINING, SchedState.DRAINED):
            outcomes.append(Outcome(h.name, True, rec.state.value, f"not drained (scheduler: {st.state})"))
        elif rec.state in (DrainState.MAINTAINING, DrainState.VERIFYING) and hstate.owner_alive(rec.owner) \
                and rec.owner != hstate.this_process() and not force:
            outcomes.append(Outcome(h.name, False, rec.state.value,
                                    f"in maintenance by {rec.owner} (run {rec.run_id}); --force to override"))
        elif rec.state is DrainState.QUARANTINED and not force:
            outcomes.append(Outcome(h.name, False, rec.state.value,
                                    f"quarantined: fix it, then undrain with --force ({rec.reason})"))
        else:
            candidates.append(h)
    verdicts: Mapping[str, str | None] = {}
    if candidates and health is not None and not force:
        verdicts = health(candidates)
        lifecycle.record_health(conn, {h.name: verdicts.get(h.name, "no answer") for h in candidates},
                                source="undrain")
    for h in candidates:
        problem = verdicts.get(h.name)
        rec = records[h.name]
        if problem:  # what to do first: the table clips a long message at its end
            outcomes.append(Outcome(h.name, False, rec.state.value,
                                    f"not undrained (--force to override): {problem}"))
            continue
        try:
            # The agent check above can take up to a minute: a maintain run (or another undrain)
            # that moved the host meanwhile wins, and this host is reported, not re-activated.
            before = hstate.transition(conn, h.name, DrainState.ACTIVE, actor=actor, expect={rec.state},
                                       note=note + (" --force" if force else ""))
        except hstate.TransitionError as exc:
            now = hstate.get(conn, h.name).state.value
            outcomes.append(Outcome(h.name, False, now, f"not undrained: changed meanwhile ({exc})"))
            continue
        try:
            scheds[h.name].undrain(h)
        except Exception as exc:  # noqa: BLE001 - any failure: the record goes back to what it was
            why = str(exc) if isinstance(exc, SchedulerError) else _unexpected(exc)
            hstate.restore(conn, before, actor=actor, note=f"undrain failed: {why}")
            outcomes.append(Outcome(h.name, False, before.state.value, f"undrain failed: {why}"))
            continue
        lifecycle.on_undrain(conn, h.name, actor=actor, reason=note + (" --force" if force else ""))
        echo(f"{h.name}: back in service")
        outcomes.append(Outcome(h.name, True, DrainState.ACTIVE.value, "back in service"))
    order = {h.name: i for i, h in enumerate(hosts)}
    return sorted(outcomes, key=lambda o: order[o.host])


# --- status -----------------------------------------------------------------------------------


@dataclass
class HostStatus:
    host: str
    scheduler: str
    scheduler_state: str
    scheduler_detail: str
    scheduler_reason: str | None
    state: str  # fleetctl's
    reason: str | None
    actor: str | None
    since: float | None
    run_id: str | None
    workloads: list[str]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _note(rec: HostRecord, st: NodeState) -> str | None:
    """Where fleetctl's record and the scheduler disagree: what happened and what to do."""
    s, sched = rec.state, st.state
    if rec.unknown:
        return "state unknown to this fleetctl (a newer one wrote it): left alone"
    if st.foreign_drain:
        return "drained outside fleetctl"
    if s is DrainState.CORDONED and sched is SchedState.ACTIVE:
        return "interrupted before the scheduler was told: re-run drain, or undrain"
    if s is DrainState.DRAINING and sched is SchedState.DRAINED:
        return "no workload left: re-run drain to record it"
    if s in (DrainState.DRAINING, DrainState.DRAINED, DrainState.DRAIN_FAILED) and sched is SchedState.ACTIVE:
        return "schedulable again outside fleetctl"
    if s is DrainState.ACTIVE and sched in (SchedState.DRAINING, SchedState.DRAINED) and st.ours:
        return "interrupted undrain: re-run undrain"
    if s in (DrainState.MAINTAINING, DrainState.VERIFYING) and not hstate.owner_alive(rec.owner):
        return f"maintain run {rec.run_id} is gone: re-run maintain to resume"
    return None


def status(conn: Connection, hosts: Sequence[HostLike],
           scheduler_for: SchedulerFor) -> list[HostStatus]:
    scheds = scheduler_map(hosts, scheduler_for)
    current = probe(hosts, scheds, tolerate=True)
    records = hstate.get_many(conn, [h.name for h in hosts])

    def workloads(h: HostLike) -> list[str]:
        if current[h.name].state in (SchedState.DOWN, SchedState.UNKNOWN):
            return []
        try:
            return scheds[h.name].running_workloads(h)
        except SchedulerError as exc:
            return [f"? ({exc})"]

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(hosts)))) as pool:
        running = dict(zip([h.name for h in hosts], pool.map(workloads, hosts), strict=True))
    result = []
    for h in hosts:
        st, rec = current[h.name], records[h.name]
        result.append(HostStatus(
            host=h.name, scheduler=scheds[h.name].kind, scheduler_state=st.state.value,
            scheduler_detail=st.detail, scheduler_reason=st.reason, state=rec.label,
            reason=rec.reason, actor=rec.actor, since=rec.updated_at, run_id=rec.run_id,
            workloads=running[h.name], note=_note(rec, st),
        ))
    return result


# --- agent health (undrain, maintain's verify) ------------------------------------------------


def agent_health(hosts: Sequence[HostLike], *, inventory: Sequence[HostLike] = ()) -> dict[str, str | None]:
    """Ask each host's fleet-agent (``GET /v1/node``) whether it is healthy enough for work.
    ``inventory``: every inventory host, so that an answer naming one of them, or an endpoint
    shared with one, is recognised although only ``hosts`` are asked."""
    from fleetctl.fanout import FanoutOptions, fetch_all
    from fleetctl.inventory import Host

    real = [h for h in hosts if isinstance(h, Host)]
    missing = [h.name for h in hosts if not isinstance(h, Host)]
    if missing:  # only inventory hosts know their agent's port and token
        raise UsageError(f"no agent endpoint known for {', '.join(missing)}")

    def token(h: Host) -> str | None:
        return h.agent_token.reveal() if h.agent_token is not None else None

    from fleetctl.report.identity import identity_findings

    results = list(fetch_all(real, token, FanoutOptions(timeout_s=5.0, deadline_s=60.0)))
    asked = {h.name for h in real}
    everyone = [*real, *(h for h in inventory if isinstance(h, Host) and h.name not in asked)]
    # An answer that is another host's agent's (a copied address, one agent for several hosts)
    # says nothing about this host: never undrain on it. A host's own agent that merely reports
    # another hostname (configured by hand) is judged on its report as before.
    wrong = identity_findings(everyone, {r.host.name: r.report.host for r in results if r.report is not None})
    verdicts: dict[str, str | None] = {}
    for result in results:
        if result.report is None:
            where = result.host.agent_endpoint
            verdicts[result.host.name] = f"agent at {where} {result.kind}: {result.detail}"
        elif result.host.name in wrong and wrong[result.host.name].foreign:
            verdicts[result.host.name] = wrong[result.host.name].problem.message
        else:
            verdicts[result.host.name] = unfit_for_work(result.report)
    return verdicts
