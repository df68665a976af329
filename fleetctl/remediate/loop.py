"""The remediation loop: observe, plan, act; every step recorded before it starts and after it ends.

One round (:meth:`Engine.round`): each host's fleet-report row becomes an observation (recorded),
remediations left open by a loop that died or was interrupted are resumed, then
:func:`fleetctl.remediate.plan.plan` decides and, with ``apply``, each planned remediation runs its
steps in order through :class:`Steps` (drain, the repair, burn-in, undrain; or drain and mark for
quarantine / RMA). A step that fails quarantines the host (it stays drained); nothing after it runs:
the failure is recorded with its consequence (state ``failing``) in one transaction, so a loop
killed before quarantining resumes by quarantining, never by running the failed step again.

New starts run one at a time, and before each (and between the steps of a remediation) the loop
observes the fleet again (``rows_now``) and plans again: a remediation takes minutes, and the plan
it was chosen from is stale by its end. A stop (fleet-wide, or a rack's) covering a host holds its
open remediation where it is (the host stays drained, the record ``interrupted`` with the stop's
message) until the stop is gone.

Resume. The store says which step is next and whether it had started. A step that started and was
not seen to end is run again when it is idempotent (:data:`IDEMPOTENT`): drain (fleetctl's drain
resumes from its own record and never drains twice), reset_gpu (it resets only a chip with no
compute process left; a second reset of an idle chip changes nothing), reprovision (playbooks are
idempotent), burn_in (it only reads), undrain, quarantine, rma. A reboot is not: one that started
and was not seen to end is not repeated, and burn-in decides whether the host came back fit.

The engine reads no clock but the one it is handed and does no I/O of its own: ``Store`` and
``Steps`` are small interfaces (:class:`fleetctl.state.remediation.SqlStore`,
:class:`fleetctl.remediate.actions.FleetSteps`; fakes in the unit tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetctl.errors import SourceUnavailable
from fleetctl.remediate import budget
from fleetctl.remediate.flap import Started
from fleetctl.remediate.hysteresis import Observation, missing, observe
from fleetctl.remediate.plan import NO_OBSERVATION, HostHistory, Plan, PlannedAction, Skipped, plan
from fleetctl.remediate.policy import Policy
from fleetctl.report.model import HostRow
from fleetctl.state.remediation import (
    DONE,
    FAILED,
    FAILING,
    INTERRUPTED,
    QUARANTINED,
    LeaseLost,
    RemediationRecord,
    chips_of,
)

# Steps that may run again when a loop died after starting them (see the module docstring).
IDEMPOTENT = frozenset({"drain", "reset_gpu", "reprovision", "burn_in", "undrain", "quarantine", "rma"})
Echo = Callable[[str], None]
StepHook = Callable[[str, str], None]  # (step, host) as a step starts: a test's kill point
RowsNow = Callable[[], Sequence[HostRow]]  # a fresh fleet report (the loop's collector)
# What became of a remediation that is left open, not ended (Finished.state; never a stored state):
# held under a fleet-wide (or scope) stop, or waiting for a host lock another loop still holds.
HELD, WAITING_LOCK = "held", "waiting"


class Store(Protocol):
    def record_observations(self, observations: Mapping[str, Observation]) -> None: ...

    def observations(self, since: float) -> dict[str, list[Observation]]: ...

    def prune(self, before: float) -> None: ...

    def start(self, host: str, action: str, kind: str, steps: Sequence[str], chips: Sequence[int], *,
              reason: str, actor: str, at: float) -> RemediationRecord: ...

    def get(self, rid: str) -> RemediationRecord: ...

    def open(self) -> list[RemediationRecord]: ...

    def history(self, since: float) -> list[Started]: ...

    def step_started(self, rec: RemediationRecord, index: int, *, detail: str | None = None) -> None: ...

    def step_ended(self, rec: RemediationRecord, index: int, *, ok: bool, detail: str | None = None,
                   phase: str | None = None, outcome: str | None = None) -> None: ...

    def finish(self, rec: RemediationRecord, state: str, outcome: str, *,
               at: float | None = None) -> None: ...


class Steps(Protocol):
    """The actions. Each returns None when the step succeeded, else why it failed."""

    def out_of_service(self, hosts: Sequence[str]) -> Mapping[str, str]:
        """Hosts out of service now (fleetctl's records or the scheduler's) -> their state."""
        ...

    def claim(self, rec: RemediationRecord) -> str | None:
        """Take what ``rec`` holds while it works (host locks, this loop's own); None when taken,
        else who holds them (another loop still at work: the remediation waits, nothing written)."""
        ...

    def run(self, step: str, rec: RemediationRecord) -> str | None:
        """One step of ``rec`` (drain, reset_gpu, reboot, reprovision, burn_in, undrain, quarantine, rma)."""
        ...

    def quarantine(self, rec: RemediationRecord, why: str) -> None:
        """After a failed step: the host stays drained, marked quarantined (never undrained)."""
        ...

    def released(self, rec: RemediationRecord) -> None:
        """The remediation ended (any way): drop what it held (host locks)."""
        ...


@dataclass(frozen=True)
class Finished:
    """What became of one remediation this round."""

    id: str
    host: str
    remediation: str
    state: str  # done, quarantined, failed, interrupted
    message: str
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.state == DONE

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "remediation": self.remediation, "state": self.state,
                "message": self.message, "resumed": self.resumed}


@dataclass
class RoundResult:
    plan: Plan
    finished: list[Finished] = field(default_factory=list)
    interrupted: bool = False
    # Why the round stopped short: the fresh look it needed failed (its source down or partial); what
    # it had not started is left for a round that can see the fleet. None: it could look each time.
    blind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "finished": [f.to_dict() for f in self.finished],
                "interrupted": self.interrupted, "blind": self.blind}


def keep_window_s(policy: Policy, interval_s: float) -> float:
    """How long observations are kept: the longest hysteresis (its span, or its count of rounds)."""
    rules = [policy.hysteresis, *(r.hysteresis for r in policy.actions.values() if r.hysteresis)]
    return max(max(h.span_s, h.count * interval_s) for h in rules) * 2 + interval_s


class Engine:
    def __init__(self, policy: Policy, store: Store, steps: Steps, *, actor: str, interval_s: float = 30.0,
                 echo: Echo = lambda _: None, stop: Callable[[], bool] = lambda: False,
                 on_step: StepHook | None = None, clock: Callable[[], float] = time.time,
                 rows_now: RowsNow | None = None) -> None:
        self.policy, self.store, self.steps = policy, store, steps
        self.actor, self.interval_s, self.echo = actor, interval_s, echo
        self.stop, self.on_step, self.clock = stop, on_step, clock
        # Observe again before each new start and between steps (see :meth:`round`); without it the
        # round's rows are planned with again.
        self.rows_now = rows_now
        # Why the store refused a write because another loop holds the lease now (None: it did not).
        self.lease_lost: str | None = None
        self._rows: Sequence[HostRow] = ()
        self._plan: Plan | None = None
        self._blind: str | None = None  # this round's fresh look failed: why (see RoundResult.blind)
        self._scopes: dict[str, dict[str, str]] = {}

    # --- observe and plan ---------------------------------------------------------------------
    def observe(self, rows: Sequence[HostRow], now: float) -> None:
        self.store.record_observations({r.name: observe(r, now) for r in rows})
        self.store.prune(now - keep_window_s(self.policy, self.interval_s))

    def plan(self, rows: Sequence[HostRow], now: float, *,
             unrecorded: Mapping[str, Observation] | None = None) -> Plan:
        """``unrecorded``: this round's observations when they are not stored (see :meth:`round`)."""
        seen = self.store.observations(now - keep_window_s(self.policy, self.interval_s))
        for host, obs in (unrecorded or {}).items():
            seen.setdefault(host, []).append(obs)
        keys = self.policy.scope_keys()
        self._scopes = {r.name: budget.host_scopes(r, keys) for r in rows}
        hosts = [HostHistory(r.name, seen.get(r.name) or [missing(now)], self._scopes[r.name]) for r in rows]
        history = self.store.history(now - max(self.policy.flap.window_s, budget.HOUR_S))
        # Who is out of service matters only to a round with an unhealthy host (nothing else starts
        # or stops anything): a healthy fleet's round asks no scheduler.
        acting = any(r.status.value in self.policy.act_on for r in rows)
        out = self.steps.out_of_service([r.name for r in rows]) if acting else {}
        self._rows, self._plan = rows, plan(self.policy, hosts, history, out, now)
        return self._plan

    def _replan(self) -> Plan | None:
        """Plan again on a fresh observation (``rows_now``), or on the round's rows when there is none.
        None when the fleet cannot be observed now (its source, Prometheus, is down or answered in
        part): nothing may then be decided, said once."""
        if self.rows_now is None:
            return self.plan(self._rows, self.clock())
        if self._blind is not None:  # asked once a round: the rest of it waits for the next
            return None
        try:
            rows = self.rows_now()
        except SourceUnavailable as exc:
            self._blind = exc.one_line()
            self.echo(f"no fresh observation of the fleet: {self._blind}; the rest waits for the next round")
            return None
        now = self.clock()
        self.observe(rows, now)
        return self.plan(rows, now)

    def _stop_for(self, host: str) -> str | None:
        """The message of the latest plan's stop covering ``host`` (fleet-wide, or its rack's)."""
        for s in self._plan.stops if self._plan is not None else ():
            if budget.scope_value(self._scopes, host, s.scope) == s.value:
                return s.message()
        return None

    # --- act ----------------------------------------------------------------------------------
    def round(self, rows: Sequence[HostRow], now: float, *, apply: bool, record: bool = True) -> RoundResult:
        """Observe, resume what is open (``apply``), plan, and start the planned remediations (``apply``).

        ``record`` False (a plan-only look while another loop runs): this round's observations are
        planned with but not stored, so that they never hasten that loop's hysteresis."""
        self._blind = None
        if record or apply:
            self.observe(rows, now)
            result = RoundResult(self.plan(rows, now))
        else:
            result = RoundResult(self.plan(rows, now, unrecorded={r.name: observe(r, now) for r in rows}))
        if not apply:
            return result
        # Open remediations first. One under a stop covering its host goes no further than it is
        # (a drained host stays drained): a fleet-wide event is a person's call.
        for rec in self.store.open():
            if self.stop():
                result.interrupted = True
                return self._ended(result, [], now)
            if self._blind is not None:  # left open, as it is, for a round that can see the fleet
                break
            result.finished.append(self.execute(rec, resumed=True))
        if result.finished:  # resumed work changed who is out of service: plan again
            fresh = self._replan()
            if fresh is None:  # no fresh look: nothing new starts this round
                return self._ended(result, [], now)
            result.plan = fresh
        # New starts, one at a time, each on a fresh plan: a remediation takes minutes (a reboot, a
        # drain waiting for jobs), and what the round saw before it (a rack going hot meanwhile, a
        # host that recovered) must not decide the next one.
        handled = {f.host for f in result.finished}
        by_name = {r.name: r for r in rows}
        started: list[PlannedAction] = []
        while True:
            action = next((a for a in result.plan.actions if a.host not in handled), None)
            if action is None:
                break
            if self.stop():
                result.interrupted = True
                break
            handled.add(action.host)
            started.append(action)
            row = next((r for r in self._rows if r.name == action.host), by_name.get(action.host))
            try:
                rec = self.store.start(action.host, action.action, action.remediation.value, action.steps,
                                       _chips(row, action), reason=action.reason, actor=self.actor,
                                       at=result.plan.at)  # the time of the plan that chose it
            except LeaseLost as exc:
                self.echo(f"{action.host}: not started: {exc}")
                self.lease_lost = str(exc)
                result.interrupted = True
                break
            self.echo(f"{action.host}: remediation {rec.id} started: {action.remediation.value} "
                      f"({' → '.join(action.steps)}) for {action.reason}")
            done = self.execute(rec)
            result.finished.append(done)
            if done.state == INTERRUPTED:
                break
            fresh = self._replan()
            if fresh is None:
                break
            result.plan = fresh
        return self._ended(result, started, now)

    def _ended(self, result: RoundResult, started: list[PlannedAction], now: float) -> RoundResult:
        """The round's result as shown: what it started, then the latest plan's word on the rest (a
        round without a fresh look: the rest not started, and why)."""
        latest, names = result.plan, {a.host for a in started}
        if started or self._blind is not None:
            rest = [a for a in latest.actions if a.host not in names]
            if self._blind is not None:  # planned on the round's first look, not started: shown so
                held = [Skipped(a.host, NO_OBSERVATION, f"{a.action}: not started: no fresh observation "
                                f"of the fleet ({self._blind})") for a in rest]
                rest = []
            else:
                held = []
            result.plan = Plan(now, started + rest, held + [s for s in latest.skipped if s.host not in names],
                               latest.stops)
        result.interrupted = result.interrupted or any(f.state == INTERRUPTED for f in result.finished)
        result.blind = self._blind
        return result

    def execute(self, rec: RemediationRecord, *, resumed: bool = False) -> Finished:
        """Run ``rec``'s steps from the recorded one on; every step recorded as it starts and ends.
        A loop that lost the lease (:class:`LeaseLost` from the store) stops and writes nothing more."""
        busy = self.steps.claim(rec)
        if busy is not None:
            self.echo(f"{rec.host}: remediation {rec.id} waits: {busy}")
            return Finished(rec.id, rec.host, rec.kind, WAITING_LOCK, busy, resumed)
        try:
            return self._execute(rec, resumed)
        except LeaseLost as exc:
            self.echo(f"{rec.host}: remediation {rec.id}: stopped: {exc}")
            self.lease_lost = str(exc)
            return Finished(rec.id, rec.host, rec.kind, INTERRUPTED, str(exc), resumed)
        finally:
            self.steps.released(rec)

    def _execute(self, rec: RemediationRecord, resumed: bool) -> Finished:
        if rec.state == FAILING:
            # A step failed and the loop stopped before carrying out what that decided: carry it out
            # (quarantine, idempotent), never run the failed step again.
            self.echo(f"{rec.host}: remediation {rec.id}: completing after a failure: {rec.outcome}")
            return self._failed(rec, rec.steps[min(rec.next_step, len(rec.steps) - 1)],
                                rec.outcome or "failed", resumed)
        if resumed:
            self.echo(f"{rec.host}: resuming remediation {rec.id} at step {rec.steps[rec.next_step]}"
                      if rec.next_step < len(rec.steps) else f"{rec.host}: finishing remediation {rec.id}")
        index = rec.next_step
        while index < len(rec.steps):
            step = rec.steps[index]
            held = self._held(rec, step, resumed=resumed, first=index == rec.next_step)
            if held is not None:
                return held
            if index == rec.next_step and rec.step_open and step not in IDEMPOTENT:
                # Started by a loop that died: not repeated (burn-in checks what it left).
                self.store.step_ended(rec, index, ok=True, phase="skipped",
                                      detail=f"{step} started by a loop that stopped; not repeated "
                                             "(not idempotent): burn-in checks the host")
                index += 1
                continue
            self.store.step_started(rec, index)
            if self.on_step is not None:
                self.on_step(step, rec.host)
            problem = self.steps.run(step, rec)
            if problem is not None:
                why = f"{step} failed: {problem}"
                # The failure and its consequence in one transaction: see FAILING.
                self.store.step_ended(rec, index, ok=False, detail=problem, outcome=why)
                return self._failed(rec, step, why, resumed)
            self.store.step_ended(rec, index, ok=True)
            index += 1
        outcome = {"repair": "repaired, burned in, back in service" if rec.steps[-1] == "undrain"
                   else "repaired, left drained for a person",
                   "quarantine": "quarantined: drained until a person returns it",
                   "rma": "marked for RMA: drained until a person returns it"}.get(rec.kind, "done")
        state = QUARANTINED if rec.kind in ("quarantine", "rma") else DONE
        self.store.finish(rec, state, outcome, at=self.clock())
        self.echo(f"{rec.host}: remediation {rec.id}: {outcome}")
        return Finished(rec.id, rec.host, rec.kind, state, outcome, resumed)

    def _held(self, rec: RemediationRecord, step: str, *, resumed: bool, first: bool) -> Finished | None:
        """Before a step: Ctrl-C or a lost lease (between steps), or a stop covering the host (for a
        resumed remediation before its first step too; between steps after a fresh observation).
        The record is left interrupted: the next run resumes it once the stop is gone."""
        if not first and self.stop():
            why = f"interrupted before {step}"
            self.store.finish(rec, INTERRUPTED, why)
            return Finished(rec.id, rec.host, rec.kind, INTERRUPTED, why, resumed)
        if first and not resumed:
            return None  # just planned: the plan had no stop over this host
        if not first and self._replan() is None:
            # Between steps without a fresh look (the source is down): left where it is, resumed once
            # the fleet can be seen again, rather than carried on blind.
            why = f"held before {step}: no fresh observation of the fleet"
            self.store.finish(rec, INTERRUPTED, why)
            self.echo(f"{rec.host}: remediation {rec.id} {why}")
            return Finished(rec.id, rec.host, rec.kind, HELD, why, resumed)
        message = self._stop_for(rec.host)
        if message is None:
            return None
        why = f"held, the host left as it is: {message}"
        self.store.finish(rec, INTERRUPTED, why)
        self.echo(f"{rec.host}: remediation {rec.id} {why}")
        return Finished(rec.id, rec.host, rec.kind, HELD, why, resumed)

    def _failed(self, rec: RemediationRecord, step: str, why: str, resumed: bool) -> Finished:
        """After a failed step (recorded ``failing`` already): drain never drained, so the remediation
        failed; any later step leaves the host drained and quarantined."""
        if step == "drain":
            # Never drained: nothing to quarantine (drain left its own record: drain_failed, refused).
            self.store.finish(rec, FAILED, why, at=self.clock())
            self.echo(f"{rec.host}: remediation {rec.id} failed: {why}")
            return Finished(rec.id, rec.host, rec.kind, FAILED, why, resumed)
        self.steps.quarantine(rec, why)
        self.store.finish(rec, QUARANTINED, why, at=self.clock())
        self.echo(f"{rec.host}: remediation {rec.id}: quarantined ({why})")
        return Finished(rec.id, rec.host, rec.kind, QUARANTINED, why, resumed)


def _chips(row: HostRow | None, action: PlannedAction) -> tuple[int, ...]:
    """The chips whose problems carry the action being remediated (reset_gpu resets those only)."""
    if row is None:
        return ()
    return chips_of(p.chip for p in row.problems if p.action == action.action)
