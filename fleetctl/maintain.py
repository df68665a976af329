"""Rolling maintenance: batch by batch, drain (and wait) → provision → verify → undrain.

A host that fails provisioning or verification stays drained and is marked ``quarantined``
(never undrained automatically); a host whose drain times out stays ``drain_failed``. Each of
those counts as a failure, and no new batch starts once failures exceed ``--max-failures``.
Max-unavailable is enforced by the drain step (one transaction across concurrent fleetctl runs),
so quarantined hosts keep counting against it: a rollout that has broken hosts slows down
instead of taking more of the fleet out.

Each batch's hosts are locked (``fleetctl.state.locks``, holder ``maintain:<run id>``) from before
the drain until after the undrain, so a concurrent ``fleetctl provision`` or ``drain`` of the same
hosts is refused; the provision step runs under those locks.

Resuming after a kill: hosts left ``maintaining`` by a fleetctl that is gone are provisioned again
(playbooks are idempotent), hosts left ``verifying`` are verified again, drained ones carry on.
"""

from __future__ import annotations

import getpass
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from fleetctl import drain as drain_core
from fleetctl.drain import DrainOptions, Echo, HealthCheck, Outcome, SchedulerFor, current_user
from fleetctl.errors import FleetctlError, UsageError
from fleetctl.schedulers.base import HostLike, tag_reason
from fleetctl.state import hosts as hstate
from fleetctl.state import lifecycle, locks
from fleetctl.state.hosts import DrainState
from fleetctl.state.runs import this_machine
from fleetctl.validation import Size, batch_limit_problem, require_reason


class Provisioner(Protocol):
    """Run ``playbook`` on ``hosts``; per host ``None`` when it succeeded, else why it failed.

    ``held_by``: the lock holder id under which the caller already holds the hosts' locks.
    """

    def __call__(self, hosts: Sequence[HostLike], playbook: str, *,
                 held_by: str) -> Mapping[str, str | None]: ...


def lock_holder_id(run_id: str) -> str:
    return f"maintain:{run_id}"


@dataclass
class MaintainOptions:
    playbook: str
    reason: str = ""
    actor: str = field(default_factory=current_user)
    batch: Size = field(default_factory=lambda: Size(1))
    max_unavailable: Size = field(default_factory=lambda: Size(1))
    max_failures: int = 0
    dry_run: bool = False
    drain_timeout_s: float = 3600.0
    verify_timeout_s: float = 120.0
    poll_s: float = 2.0


@dataclass
class MaintainPlan:
    batches: list[list[str]]
    skipped: list[Outcome]
    limit: int
    pool: int
    batch_size: int

    def lines(self, opts: MaintainOptions) -> list[str]:
        out = [f"maintain with playbook {opts.playbook}: {sum(map(len, self.batches))} hosts in "
               f"{len(self.batches)} batches of up to {self.batch_size}; max-unavailable {self.limit} of "
               f"{self.pool}; stop after {opts.max_failures} failures"]
        out += [f"  batch {i}: {', '.join(b)}" for i, b in enumerate(self.batches, start=1)]
        out += [f"  skip {o.host}: {o.message}" for o in self.skipped]
        out.append("  each batch: drain (wait) → provision → verify agent health → undrain; "
                   "failures stay drained as quarantined")
        return out


@dataclass
class MaintainResult:
    run_id: str
    outcomes: list[Outcome]
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "ok": self.ok, "stopped": self.stopped,
                "hosts": [o.to_dict() for o in self.outcomes]}


def plan_maintain(conn: sqlite3.Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
                  opts: MaintainOptions) -> MaintainPlan:
    if opts.max_failures < 0:
        raise UsageError(f"--max-failures {opts.max_failures}: must be 0 or more")
    pool_size = len({p.name for p in pool} | {h.name for h in hosts})
    limit = opts.max_unavailable.of(pool_size)
    size = opts.batch.of(len(hosts))
    if size > limit:
        raise UsageError(f"--batch {opts.batch} ({size} hosts) is more than --max-unavailable "
                         f"{opts.max_unavailable} ({limit} of {pool_size}): no batch could start")
    records = hstate.get_many(conn, [h.name for h in hosts])
    todo: list[str] = []
    skipped: list[Outcome] = []
    for h in hosts:
        rec = records[h.name]
        if rec.unknown:
            skipped.append(Outcome(h.name, False, rec.label, rec.unknown_message()))
        elif rec.state is DrainState.QUARANTINED:
            skipped.append(Outcome(h.name, False, rec.state.value,
                                   f"quarantined ({rec.reason}); fix it and undrain --force first"))
        elif rec.state in (DrainState.MAINTAINING, DrainState.VERIFYING) and hstate.owner_alive(rec.owner) \
                and rec.owner != hstate.this_process():
            skipped.append(Outcome(h.name, False, rec.state.value,
                                   f"in maintenance by {rec.owner} (run {rec.run_id})"))
        elif rec.state in (DrainState.DRAINING, DrainState.DRAINED) and rec.run_id is None:
            # Drained by hand (`fleetctl drain`, an RMA, an investigation): maintenance would put it
            # back into service at the end. A maintain run's own drains carry its run id and resume.
            skipped.append(Outcome(h.name, False, rec.state.value,
                                   f"drained by {rec.actor or 'someone'} ({rec.reason or 'no reason'}); "
                                   "left out: undrain it to include it"))
        else:
            todo.append(h.name)
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    for b in batches:
        problem = batch_limit_problem(b)
        if problem:
            raise UsageError(problem)
    return MaintainPlan(batches, skipped, limit, pool_size, size)


def maintain(conn: sqlite3.Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
             scheduler_for: SchedulerFor, provisioner: Provisioner, verifier: HealthCheck,
             opts: MaintainOptions, *, echo: Echo = drain_core._quiet,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> MaintainResult:
    plan = plan_maintain(conn, hosts, pool, opts)
    run_id = f"m-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    reason = opts.reason or f"maintain {Path(opts.playbook).name} (run {run_id})"
    # Every batch's drain checks this too; here it refuses before the first batch starts.
    drain_core.check_inputs(hosts, scheduler_for, tag_reason(opts.actor, require_reason(reason)))
    for line in plan.lines(opts):
        echo(line)
    if opts.dry_run:
        return MaintainResult(run_id, plan.skipped)
    by_name = {h.name: h for h in hosts}
    owner = hstate.this_process()
    outcomes: dict[str, Outcome] = {o.host: o for o in plan.skipped}
    failures = 0
    stopped: str | None = None
    for index, batch in enumerate(plan.batches, start=1):
        if failures > opts.max_failures:
            stopped = f"stopped: {failures} failures exceed --max-failures {opts.max_failures}"
        if stopped:
            for name in batch:
                state = hstate.get(conn, name).state.value
                outcomes[name] = Outcome(name, False, state, "not started: " + stopped)
            continue
        echo(f"batch {index}/{len(plan.batches)}: {', '.join(batch)}")
        batch_hosts = [by_name[n] for n in batch]
        holder = locks.Holder(lock_holder_id(run_id), f"maintain {Path(opts.playbook).name}",
                              getpass.getuser(), this_machine(), os.getpid())
        try:
            # Long enough for the drain wait; provision's heartbeat and the verify step extend it.
            ttl = timedelta(seconds=opts.drain_timeout_s) + locks.DEFAULT_TTL
            locks.acquire(conn, batch, holder, ttl=ttl)
        except locks.LocksHeld as exc:
            results = [Outcome(n, False, hstate.get(conn, n).state.value, f"refused: {exc}") for n in batch]
        else:
            try:
                results = _run_batch(conn, batch_hosts, pool, scheduler_for, provisioner, verifier, opts,
                                     reason=reason, owner=owner, run_id=run_id, echo=echo, sleep=sleep,
                                     clock=clock)
            finally:
                locks.release(conn, holder.id, batch)
        for o in results:
            outcomes[o.host] = o
        failures += sum(1 for o in results if not o.ok)
        refused = [o for o in results if not o.ok and o.message.startswith("refused: max-unavailable")]
        if refused:
            stopped = f"stopped at batch {index}: {refused[0].message}"
    if stopped is None and failures > opts.max_failures:
        stopped = f"{failures} failures exceed --max-failures {opts.max_failures}"
    order = {h.name: i for i, h in enumerate(hosts)}
    return MaintainResult(run_id, sorted(outcomes.values(), key=lambda o: order[o.host]), stopped)


def _run_batch(conn: sqlite3.Connection, batch: Sequence[HostLike], pool: Sequence[HostLike],
               scheduler_for: SchedulerFor, provisioner: Provisioner, verifier: HealthCheck,
               opts: MaintainOptions, *, reason: str, owner: str, run_id: str, echo: Echo,
               sleep: Callable[[float], None], clock: Callable[[], float]) -> list[Outcome]:
    actor = opts.actor
    done: dict[str, Outcome] = {}
    records = hstate.get_many(conn, [h.name for h in batch])
    # 1. drain (hosts already in maintaining/verifying from an interrupted run skip it)
    resuming = (DrainState.MAINTAINING, DrainState.VERIFYING)
    to_drain = [h for h in batch if records[h.name].state not in resuming]
    if to_drain:
        dopts = DrainOptions(reason=reason, actor=actor, wait=True, timeout_s=opts.drain_timeout_s,
                             max_unavailable=opts.max_unavailable, poll_s=opts.poll_s, owner=owner,
                             run_id=run_id, lock_holder=lock_holder_id(run_id))
        for o in drain_core.drain(conn, to_drain, pool, scheduler_for, dopts, echo=echo, sleep=sleep,
                                  clock=clock):
            if not o.ok:
                done[o.host] = Outcome(o.host, False, o.state, o.message if o.message.startswith("refused")
                                       else f"drain: {o.message}")
    # 2. provision the drained hosts (and resume those left maintaining)
    provision: list[HostLike] = []
    verify: list[HostLike] = []
    for h in batch:
        if h.name in done:
            continue
        state = hstate.get(conn, h.name).state
        if state is DrainState.VERIFYING:
            verify.append(h)
            continue
        hstate.transition(conn, h.name, DrainState.MAINTAINING, actor=actor, owner=owner, run_id=run_id,
                          expect={DrainState.DRAINED, DrainState.MAINTAINING},
                          note=f"provision {opts.playbook}")
        provision.append(h)
    if provision:
        echo(f"provisioning {', '.join(h.name for h in provision)} with {opts.playbook}")
        try:
            results = provisioner(provision, opts.playbook, held_by=lock_holder_id(run_id))
        except FleetctlError as exc:
            results = {h.name: f"provision did not run: {exc}" for h in provision}
        locks.refresh(conn, lock_holder_id(run_id),
                      ttl=timedelta(seconds=opts.verify_timeout_s) + locks.DEFAULT_TTL)
        for h in provision:
            problem = results.get(h.name, "no result from the provision run")
            if problem:
                done[h.name] = _quarantine(conn, h.name, actor, f"provision failed: {problem}", echo,
                                           run_id=run_id)
            else:
                hstate.transition(conn, h.name, DrainState.VERIFYING, actor=actor, owner=owner, run_id=run_id,
                                  expect={DrainState.MAINTAINING}, note="provisioned")
                verify.append(h)
    # 3. verify through the agents (retried: an agent restarted by the playbook needs a moment)
    healthy: list[HostLike] = []
    if verify:
        verdicts = _verify(verifier, verify, opts, sleep=sleep, clock=clock)
        lifecycle.record_health(conn, {h.name: verdicts.get(h.name) for h in verify}, source="maintain")
        for h in verify:
            problem = verdicts.get(h.name)
            if problem:
                done[h.name] = _quarantine(conn, h.name, actor, f"verification failed: {problem}", echo,
                                           run_id=run_id)
            else:
                healthy.append(h)
    # 4. back into service
    if healthy:
        for o in drain_core.undrain(conn, healthy, scheduler_for, None, actor=actor, echo=echo,
                                    note=f"maintain {run_id}: verified healthy",
                                    lock_holder=lock_holder_id(run_id)):
            done[o.host] = o if not o.ok else Outcome(o.host, True, o.state,
                                                      "maintained, verified, back in service")
            if o.ok:
                lifecycle.on_maintain_result(conn, o.host, ok=True, actor=actor, run_id=run_id)
    return [done[h.name] for h in batch]


def _verify(verifier: HealthCheck, hosts: Sequence[HostLike], opts: MaintainOptions, *,
            sleep: Callable[[float], None], clock: Callable[[], float]) -> dict[str, str | None]:
    deadline = clock() + opts.verify_timeout_s
    pending = list(hosts)
    verdicts: dict[str, str | None] = {}
    while True:
        try:
            got = verifier(pending)
        except FleetctlError as exc:
            got = {h.name: str(exc) for h in pending}
        verdicts.update({h.name: got.get(h.name, "no answer") for h in pending})
        pending = [h for h in pending if verdicts[h.name]]
        if not pending or clock() >= deadline:
            return verdicts
        sleep(max(0.0, min(opts.poll_s, deadline - clock())))


def _quarantine(conn: sqlite3.Connection, host: str, actor: str, why: str, echo: Echo, *,
                run_id: str) -> Outcome:
    hstate.transition(conn, host, DrainState.QUARANTINED, actor=actor, note=why)
    lifecycle.on_maintain_result(conn, host, ok=False, actor=actor, run_id=run_id, why=why)
    echo(f"{host}: quarantined ({why})")
    return Outcome(host, False, DrainState.QUARANTINED.value, why)


def ansible_provisioner(inventory: Sequence[str], db_path: Path | None, *,
                        cwd: Path | None = None) -> Provisioner:
    """The real provisioner: ``fleetctl.provision.run`` (ansible-runner), limited to the batch."""

    def run(hosts: Sequence[HostLike], playbook: str, *, held_by: str) -> Mapping[str, str | None]:
        from fleetctl.provision import ProvisionOptions
        from fleetctl.provision import run as provision_run
        from fleetctl.runner import AnsibleRunner

        names = [h.name for h in hosts]
        result = provision_run(ProvisionOptions(inventory=list(inventory), pattern=",".join(names),
                                                playbook=playbook),
                               AnsibleRunner(), db_path=db_path, cwd=cwd, held_by=held_by)
        by_host = {r.host: r for r in result.hosts}
        verdicts: dict[str, str | None] = {}
        for name in names:
            r = by_host.get(name)
            if r is None or r.state == "pending":
                verdicts[name] = f"run {result.run_id}: no task ran ({result.message or result.status})"
            elif r.failed or r.unreachable:
                verdicts[name] = f"run {result.run_id}: {r.state}: {r.first_failure or r.last_task or ''}"
            else:
                verdicts[name] = None
        return verdicts

    return run
