"""The remediation steps on a real fleet, through the verbs a person uses.

- ``drain``: :func:`fleetctl.drain.drain` (max-unavailable checked again in one transaction, shared
  with ``drain`` and ``maintain``; waits for the workloads to leave) with the tagged reason
  ``remediate:<id> <action>``, under host locks held by ``remediate:<id>`` for the whole remediation,
  so a ``provision``/``maintain``/``drain`` of the host meanwhile is refused;
- ``reset_gpu`` / ``reboot`` / ``reprovision``: a playbook (``playbooks/remediate/reset_gpu.yml``,
  ``reboot.yml``, or the re-provision playbook, default ``site.yml``) as a recorded fleetctl run
  (maintain's :func:`fleetctl.maintain.ansible_provisioner`); the host is ``maintaining`` meanwhile;
- ``burn_in``: :data:`BurnIn`: the agent asked until fit (:func:`agent_burn_in`), then ``fleetctl
  burn-in``'s gate with DCGM's diagnostics (:func:`burn_in_with`); the host is ``verifying`` meanwhile;
- ``undrain``: :func:`fleetctl.drain.undrain` (burn-in just checked the host);
- ``quarantine`` / ``rma`` (terminal) and a failed step: the host stays drained, its drain state
  ``quarantined`` (only ``undrain --force`` returns it) and its lifecycle ``quarantined`` (then
  ``rma``).

Lifecycle moves (source ``remediate``): in_service/suspect -> repairing once drained, repairing ->
burn_in before burn-in, burn_in -> in_service once back in service, -> quarantined (-> rma).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from fleetctl import drain as drain_core
from fleetctl.drain import DrainOptions, SchedulerFor
from fleetctl.errors import FleetctlError
from fleetctl.inventory import Host
from fleetctl.remediate.budget import NO_VALUE
from fleetctl.remediate.policy import SCOPE_ALL, Policy
from fleetctl.report.model import group_value
from fleetctl.state import hosts as hstate
from fleetctl.state import lifecycle, locks
from fleetctl.state.db import Connection
from fleetctl.state.hosts import DrainState
from fleetctl.state.lifecycle import LifeState
from fleetctl.state.remediation import RemediationRecord
from fleetctl.state.runs import this_machine
from fleetctl.validation import Size

SOURCE = "remediate"
# Which playbook under playbooks/remediate/ runs each repair step (reprovision: RemediateOptions).
REPAIR_PLAYBOOKS = {"reset_gpu": "reset_gpu.yml", "reboot": "reboot.yml"}
Echo = Callable[[str], None]
# A playbook runner: (host, playbook path, extra vars as JSON texts, lock holder) -> None or why it failed.
PlaybookRun = Callable[[Host, str, Sequence[str], str], "str | None"]
# Burn-in: (host) -> None when fit for work, else why not.
# `burn_in_with` below is the one place that chooses it.
BurnIn = Callable[[Host], "str | None"]


def lock_holder_id(rid: str, loop: str = "") -> str:
    """The host locks' holder: the remediation and the loop working on it, so that a second loop
    resuming the remediation (the first presumed dead) cannot enter the first's live locks."""
    return f"remediate:{rid}:{loop}" if loop else f"remediate:{rid}"


def drain_reason(rec: RemediationRecord) -> str:
    return f"remediate:{rec.id} {rec.action}"


@dataclass
class RemediateOptions:
    actor: str
    drain_timeout_s: float = 3600.0
    repair_timeout_s: float = 1800.0
    reprovision_playbook: str = "site.yml"
    extra_vars: Sequence[str] = ()  # to every repair playbook (connection settings, nvidia_smi path)


@dataclass
class FleetSteps:
    """:class:`fleetctl.remediate.loop.Steps` over the state database, the schedulers and Ansible."""

    conn: Connection
    hosts: Mapping[str, Host]  # the inventory's, by name
    pool: Sequence[Host]  # what max-unavailable counts over (the inventory)
    scheduler_for: SchedulerFor
    policy: Policy
    opts: RemediateOptions
    playbook: PlaybookRun
    burn_in: BurnIn
    playbooks_dir: Path
    echo: Echo = lambda _: None
    loop_id: str = ""  # the lease holder id of this loop (lock_holder_id)
    _locked: set[str] = field(default_factory=set)

    # --- who is out of service (the planner's `unavailable`) ----------------------------------
    def out_of_service(self, hosts: Sequence[str]) -> Mapping[str, str]:
        """As hstate.reserve counts them: any drain state but active here, or not available in the
        scheduler; quarantined and rma hosts (drain state or lifecycle) read ``quarantined``."""
        out: dict[str, str] = {}
        records = hstate.get_many(self.conn, hosts)
        life = lifecycle.get_many(self.conn, hosts)
        for name in hosts:
            if life[name].state in (LifeState.QUARANTINED, LifeState.RMA, LifeState.RETIRED):
                out[name] = "quarantined"
            elif records[name].state is not DrainState.ACTIVE:
                out[name] = records[name].label
        known = [self.hosts[n] for n in hosts if n in self.hosts and n not in out]
        if known:
            scheds = drain_core.scheduler_map(known, self.scheduler_for)
            for name, st in drain_core.probe(known, scheds, tolerate=True).items():
                if not st.available:
                    out[name] = f"scheduler {st.state.value}"
        return out

    # --- the steps ----------------------------------------------------------------------------
    def run(self, step: str, rec: RemediationRecord) -> str | None:
        host = self.hosts.get(rec.host)
        if host is None:
            return f"{rec.host} is not in the inventory"
        busy = self.claim(rec)
        if busy is not None:
            return busy
        try:
            if step == "drain":
                return self._drain(host, rec)
            if step in ("reset_gpu", "reboot", "reprovision"):
                return self._repair(step, host, rec)
            if step == "burn_in":
                return self._burn_in(host, rec)
            if step == "undrain":
                return self._undrain(host, rec)
            if step in ("quarantine", "rma"):
                return self._terminal(step, rec)
        except locks.LocksHeld as exc:
            return f"refused: {exc}"
        except FleetctlError as exc:
            return exc.one_line()
        return f"unknown step {step!r}"

    def claim(self, rec: RemediationRecord) -> str | None:
        """This loop's host lock on ``rec``'s host; why not when another holder's (a loop presumed
        dead that still works, a person's maintain) is live."""
        if rec.id in self._locked or rec.host not in self.hosts:
            return None
        try:
            locks.acquire(self.conn, [rec.host], self._holder(rec), ttl=self._ttl())
        except locks.LocksHeld as exc:
            return f"refused: {exc}"
        self._locked.add(rec.id)
        return None

    def _lock_id(self, rec: RemediationRecord) -> str:
        return lock_holder_id(rec.id, self.loop_id)

    def _holder(self, rec: RemediationRecord) -> locks.Holder:
        return locks.Holder(self._lock_id(rec), f"remediate {rec.action}", getpass.getuser(),
                            this_machine(), os.getpid())

    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.opts.drain_timeout_s + self.opts.repair_timeout_s) + locks.DEFAULT_TTL

    def _drain(self, host: Host, rec: RemediationRecord) -> str | None:
        limit = next((r.max for r in self.policy.max_unavailable if r.scope == SCOPE_ALL), Size(100, True))
        opts = DrainOptions(reason=drain_reason(rec), actor=self.opts.actor, wait=True,
                            timeout_s=self.opts.drain_timeout_s, max_unavailable=limit,
                            owner=hstate.this_process(), run_id=rec.id, lock_holder=self._lock_id(rec),
                            scoped=self.scoped_limits(host))
        outcomes = drain_core.drain(self.conn, [host], self.pool, self.scheduler_for, opts, echo=self.echo)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            return bad[0].message
        # Drained (or found drained by this remediation before a kill): a working host is repairing now.
        lifecycle.advance(self.conn, host.name, LifeState.REPAIRING,
                          frm={LifeState.IN_SERVICE, LifeState.SUSPECT, LifeState.NEW, LifeState.BURN_IN},
                          actor=self.opts.actor, reason=f"remediate {rec.id}: {rec.action}", source=SOURCE)
        return None

    def scoped_limits(self, host: Host) -> list[hstate.ScopedLimit]:
        """Every per-scope rule of the policy over ``host``'s pool for that scope (its rack), so that
        the drain re-checks them all in its transaction: a person's drain since the plan counts."""
        out = []
        for rule in self.policy.max_unavailable:
            if rule.scope == SCOPE_ALL:
                continue
            value = group_value(host.groups, host.vars, rule.scope)
            if value == NO_VALUE:  # a host without a rack is under no rack rule (as the planner says)
                continue
            members = frozenset(p.name for p in self.pool
                                if group_value(p.groups, p.vars, rule.scope) == value) | {host.name}
            out.append(hstate.ScopedLimit(f"{rule.scope}={value}", members, rule.max.of(len(members))))
        return out

    def _to(self, host: str, rec: RemediationRecord, state: DrainState, note: str) -> None:
        """The drain state while the remediation works on the host (as maintain's), audited."""
        hstate.transition(self.conn, host, state, actor=self.opts.actor, owner=hstate.this_process(),
                          run_id=rec.id, note=f"remediate {rec.id}: {note}",
                          expect={DrainState.DRAINED, DrainState.MAINTAINING, DrainState.VERIFYING})

    def _repair(self, step: str, host: Host, rec: RemediationRecord) -> str | None:
        self._to(host.name, rec, DrainState.MAINTAINING, step)
        locks.refresh(self.conn, self._lock_id(rec), ttl=self._ttl())
        if step == "reprovision":
            playbook = self.opts.reprovision_playbook
            extra: list[str] = []
        else:
            playbook = str(self.playbooks_dir / REPAIR_PLAYBOOKS[step])
            extra = [json.dumps({"fleetctl_remediate_chips": list(rec.chips),
                                 "fleetctl_remediate_id": rec.id,
                                 "fleetctl_reboot_timeout": max(1, round(self.opts.repair_timeout_s))})]
        self.echo(f"{host.name}: {step} ({Path(playbook).name}) for remediation {rec.id}")
        return self.playbook(host, playbook, [*self.opts.extra_vars, *extra], self._lock_id(rec))

    def _burn_in(self, host: Host, rec: RemediationRecord) -> str | None:
        self._to(host.name, rec, DrainState.VERIFYING, "burn-in")
        lifecycle.advance(self.conn, host.name, LifeState.BURN_IN, frm={LifeState.REPAIRING},
                          actor=self.opts.actor, reason=f"remediate {rec.id}: repaired", source=SOURCE)
        problem = self.burn_in(host)
        lifecycle.record_health(self.conn, {host.name: problem}, source=SOURCE)
        return problem

    def _undrain(self, host: Host, rec: RemediationRecord) -> str | None:
        outs = drain_core.undrain(self.conn, [host], self.scheduler_for, None, actor=self.opts.actor,
                                  echo=self.echo, note=f"remediate {rec.id}: burned in",
                                  lock_holder=self._lock_id(rec))
        bad = [o for o in outs if not o.ok]
        if bad:
            return bad[0].message
        lifecycle.advance(self.conn, host.name, LifeState.IN_SERVICE,
                          frm={LifeState.BURN_IN, LifeState.REPAIRING, LifeState.SUSPECT},
                          actor=self.opts.actor, reason=f"remediate {rec.id}: burned in", source=SOURCE)
        return None

    def _terminal(self, step: str, rec: RemediationRecord) -> str | None:
        self._mark_quarantined(rec, f"remediate {rec.id}: {step} for {rec.action}")
        if step == "rma":
            lifecycle.advance(self.conn, rec.host, LifeState.RMA, frm={LifeState.QUARANTINED},
                              actor=self.opts.actor, reason=f"remediate {rec.id}: {rec.action}",
                              source=SOURCE)
        return None

    def _mark_quarantined(self, rec: RemediationRecord, why: str) -> None:
        current = hstate.get(self.conn, rec.host).state
        if current is DrainState.DRAINED:  # the state machine reaches quarantined through maintaining
            self._to(rec.host, rec, DrainState.MAINTAINING, "quarantine")
            current = DrainState.MAINTAINING
        if current in (DrainState.MAINTAINING, DrainState.VERIFYING):
            hstate.transition(self.conn, rec.host, DrainState.QUARANTINED, actor=self.opts.actor, note=why)
        lifecycle.advance(self.conn, rec.host, LifeState.QUARANTINED,
                          frm={LifeState.NEW, LifeState.IN_SERVICE, LifeState.SUSPECT, LifeState.REPAIRING,
                               LifeState.BURN_IN}, actor=self.opts.actor, reason=why, source=SOURCE)

    def quarantine(self, rec: RemediationRecord, why: str) -> None:
        self._mark_quarantined(rec, f"remediate {rec.id}: {why}")

    def released(self, rec: RemediationRecord) -> None:
        locks.release(self.conn, self._lock_id(rec))
        self._locked.discard(rec.id)


# --- the real playbook runner and burn-in -------------------------------------------------------------


def ansible_playbook_run(inventory: Sequence[str], db_path: Path | None, *,
                         cwd: Path | None = None) -> PlaybookRun:
    """Each repair playbook as a recorded fleetctl run (maintain's provisioner), limited to the host."""
    from fleetctl.maintain import PlaybookArgs, ansible_provisioner

    def run(host: Host, playbook: str, extra_vars: Sequence[str], held_by: str) -> str | None:
        # internal: a repair is no provision run (no lifecycle move, not counted by burn-in's check)
        provision = ansible_provisioner(inventory, db_path, cwd=cwd, args=PlaybookArgs(extra_vars=extra_vars),
                                        internal=True)
        try:
            got = provision([host], playbook, held_by=held_by)
        except FleetctlError as exc:
            return f"did not run: {exc.one_line()}"
        result = got.get(host.name)
        problem = result.problem if result is not None and not isinstance(result, str) else result
        return str(problem) if problem else None

    return run


def agent_burn_in(inventory: Sequence[Host], *, timeout_s: float = 120.0, poll_s: float = 5.0,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> BurnIn:
    """The agent's verdict (fit for work, the inventory's expected chips all seen), asked until it is
    fit or ``timeout_s`` passed: an agent that a reboot or reset restarted needs a moment."""

    def check(host: Host) -> str | None:
        deadline = clock() + timeout_s
        while True:
            problem = drain_core.agent_health([host], inventory=inventory).get(host.name, "no answer")
            if problem is None:
                return None
            if clock() >= deadline:
                return f"burn-in: the agent did not report the host fit within {timeout_s:g} s: {problem}"
            sleep(max(0.0, min(poll_s, deadline - clock())))

    return check


def burn_in_with(conn: Connection, inventory: Sequence[Host], inventory_sources: Sequence[str], *,
                 timeout_s: float = 120.0, level: int = 1,
                 allow_missing: frozenset[str] = frozenset()) -> BurnIn:
    """The burn-in the loop uses: first the agent, asked until it is fit (a reset or reboot restarted
    it), then ``fleetctl burn-in``'s gate (agent with every expected chip, DCGM's diagnostics at
    ``level``; a check that could not run fails the step unless ``allow_missing``), recorded like a
    person's burn-in. No provision check: a reset or a reboot is no provision run."""
    from fleetctl.burnin.gate import remediation_burn_in

    agent = agent_burn_in(inventory, timeout_s=timeout_s, poll_s=min(5.0, max(0.5, timeout_s / 4)))
    gate = remediation_burn_in(conn, inventory, inventory_sources, level=level, allow_missing=allow_missing)

    def check(host: Host) -> str | None:
        return agent(host) or gate(host)

    return check
