"""Rolling maintenance: batch by batch, drain (and wait) → provision → reboot → verify → undrain.

A host that fails provisioning or verification stays drained and is marked ``quarantined``
(never undrained automatically); a host whose drain times out stays ``drain_failed``. Each of
those counts as a failure, and no new batch starts once failures exceed ``--max-failures``.
Max-unavailable is enforced by the drain step (one transaction across concurrent fleetctl runs),
so quarantined hosts keep counting against it: a rollout that has broken hosts slows down
instead of taking more of the fleet out.

Each batch's hosts are locked (``fleetctl.state.locks``, holder ``maintain:<run id>``) from before
the drain until after the undrain, so a concurrent ``fleetctl provision`` or ``drain`` of the same
hosts is refused; the provision step runs under those locks.

The reboot step (``--reboot``) is kured-style by default: a host reboots only when its provision
run left ``nvidia_driver_reboot_needed`` true (the nvidia_driver role sets it with ``set_fact``;
the provisioner reads it from the run's events); ``always`` reboots every provisioned host,
``never`` none. A host that does not come back is quarantined as a failed verify is. Hosts stay
``maintaining`` while they reboot (an audited maintaining → maintaining row says so).

With a boot-marker reader (``boot_markers``: the real one is system_reboot.yml's marker and wait
modes) each host's boot marker (boot id, PID 1's start time) is read before its reboot and kept in
the audited ``reboot (...)`` note.

Resuming after a kill: a host left ``maintaining`` whose last audit row is that reboot note is not
provisioned again: the resumed run waits (up to ``--reboot-timeout``) for it to answer and reads its
marker: changed, the reboot happened and the host goes on to verify; unchanged (or no marker was
recorded), it is rebooted now; not answering, it is quarantined as a host not back from its reboot.
Other hosts left ``maintaining`` by a fleetctl that is gone are provisioned again (playbooks are
idempotent), hosts left ``verifying`` are verified again, drained and draining ones carry on.
The reboot and marker runs are internal runs (``ProvisionOptions.internal``): recorded, but no
provision run as far as the lifecycle and burn-in's provision check go.
"""

from __future__ import annotations

import enum
import getpass
import json
import os
import re
import secrets
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
from fleetctl.state.db import Connection
from fleetctl.state.hosts import DrainState
from fleetctl.state.runs import this_machine
from fleetctl.validation import Size, batch_limit_problem, require_reason

REBOOT_FACT = "nvidia_driver_reboot_needed"
STEPS = ("drain", "wait", "provision", "reboot", "verify", "undrain")
# Called with a step's name and its hosts as each step of a batch starts (a test's kill point).
StepHook = Callable[[str, Sequence[str]], None]


class RebootMode(enum.StrEnum):
    AUTO = "auto"  # only hosts whose provision run left REBOOT_FACT true
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Provisioned:
    """One host's provision result: why it failed (None: it succeeded), whether it needs a reboot."""

    problem: str | None = None
    reboot_needed: bool = False


class Provisioner(Protocol):
    """Run ``playbook`` on ``hosts``; per host ``None`` when it succeeded, else why it failed (or a
    :class:`Provisioned`, which also says whether the run left the host needing a reboot).

    ``held_by``: the lock holder id under which the caller already holds the hosts' locks.
    """

    def __call__(self, hosts: Sequence[HostLike], playbook: str, *,
                 held_by: str) -> Mapping[str, str | Provisioned | None]: ...


class Rebooter(Protocol):
    """Reboot ``hosts`` and wait up to ``timeout_s`` for each to come back; per host ``None`` when it
    did, else why not."""

    def __call__(self, hosts: Sequence[HostLike], *, held_by: str,
                 timeout_s: float) -> Mapping[str, str | None]: ...


@dataclass(frozen=True)
class BootMarker:
    """A host's boot marker (changes with each boot), or why it could not be read."""

    marker: str | None = None
    problem: str | None = None


class BootMarkers(Protocol):
    """Read each host's boot marker; with ``wait``, first wait up to ``timeout_s`` for it to answer."""

    def __call__(self, hosts: Sequence[HostLike], *, held_by: str, timeout_s: float,
                 wait: bool) -> Mapping[str, BootMarker]: ...


# The audited note written before a reboot is asked for; the marker is on one line.
_REBOOT_NOTE = re.compile(r"^reboot \((?P<why>[^;]*)(?:; boot marker (?P<marker>.*))?\)$")


def reboot_note(why: str, marker: str | None) -> str:
    return f"reboot ({why}; boot marker {marker})" if marker else f"reboot ({why})"


def interrupted_reboot(conn: Connection, host: str) -> tuple[bool, str | None]:
    """(whether the host's last audit row is a reboot note, the boot marker it recorded)."""
    last = hstate.audit(conn, host, limit=1)
    match = _REBOOT_NOTE.match(last[0].note or "") if last else None
    if match is None or last[0].to_state != DrainState.MAINTAINING.value:
        return False, None
    return True, match["marker"]


def one_line(marker: str) -> str:
    return " ".join(marker.split())


def _provisioned(value: str | Provisioned | None) -> Provisioned:
    return value if isinstance(value, Provisioned) else Provisioned(problem=value)


def truthy(value: object) -> bool:
    """A fact's value as Ansible would test it (``set_fact`` may leave "True" or a bool)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


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
    reboot: RebootMode = RebootMode.AUTO
    reboot_timeout_s: float = 900.0
    # What the provision step passes to the playbook, as shown and recorded (secret values masked:
    # the real ones go to the provisioner only).
    extra_vars: Sequence[str] = ()
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()

    def recorded(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "batch": str(self.batch),
                "max_unavailable": str(self.max_unavailable), "max_failures": self.max_failures,
                "reboot": self.reboot.value,
                "reboot_timeout_s": self.reboot_timeout_s, "extra_vars": list(self.extra_vars),
                "tags": list(self.tags), "skip_tags": list(self.skip_tags)}

    def provision_note(self) -> str:
        extras = self.passed()
        return f"provision {self.playbook}" + (f" ({' '.join(extras)})" if extras else "")

    def passed(self) -> list[str]:
        """The playbook options, as a command line would show them."""
        return ([f"--tags {','.join(self.tags)}"] * bool(self.tags)
                + [f"--skip-tags {','.join(self.skip_tags)}"] * bool(self.skip_tags)
                + [f"-e {v}" for v in self.extra_vars])


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
        reboot = {RebootMode.AUTO: f"reboot when {REBOOT_FACT} → ", RebootMode.ALWAYS: "reboot → ",
                  RebootMode.NEVER: ""}[opts.reboot]
        out.append(f"  each batch: drain (wait) → provision → {reboot}verify agent health → undrain; "
                   "failures stay drained as quarantined")
        passed = opts.passed()
        if passed:
            out.append(f"  playbook options: {' '.join(passed)}")
        return out


@dataclass
class MaintainResult:
    run_id: str
    outcomes: list[Outcome]
    stopped: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    rebooted: list[str] = field(default_factory=list)  # hosts this run rebooted and saw come back

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "ok": self.ok, "stopped": self.stopped, "options": self.options,
                "rebooted": self.rebooted, "hosts": [o.to_dict() for o in self.outcomes]}


def plan_maintain(conn: Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
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


def maintain(conn: Connection, hosts: Sequence[HostLike], pool: Sequence[HostLike],
             scheduler_for: SchedulerFor, provisioner: Provisioner, verifier: HealthCheck,
             opts: MaintainOptions, *, echo: Echo = drain_core._quiet,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, rebooter: Rebooter | None = None,
             on_step: StepHook | None = None, boot_markers: BootMarkers | None = None) -> MaintainResult:
    """``rebooter`` runs the reboot step (without one, a host that needs a reboot is quarantined);
    ``on_step`` is told as each step of a batch starts (see STEPS); ``boot_markers`` lets a resumed
    run tell whether an interrupted reboot happened (without it such a host is rebooted again)."""
    if opts.reboot is RebootMode.ALWAYS and rebooter is None:
        raise UsageError("--reboot always: this maintain has no way to reboot hosts")
    plan = plan_maintain(conn, hosts, pool, opts)
    run_id = f"m-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    reason = opts.reason or f"maintain {Path(opts.playbook).name} (run {run_id})"
    # Every batch's drain checks this too; here it refuses before the first batch starts.
    drain_core.check_inputs(hosts, scheduler_for, tag_reason(opts.actor, require_reason(reason)))
    for line in plan.lines(opts):
        echo(line)
    if opts.dry_run:
        return MaintainResult(run_id, plan.skipped, options=opts.recorded())
    by_name = {h.name: h for h in hosts}
    rebooted: list[str] = []
    steps = _Steps(on_step, rebooter, rebooted, boot_markers)
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
                                     clock=clock, steps=steps)
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
    return MaintainResult(run_id, sorted(outcomes.values(), key=lambda o: order[o.host]), stopped,
                          options=opts.recorded(), rebooted=rebooted)


@dataclass
class _Steps:
    """What a batch needs besides the verbs: the step hook, the rebooter, the hosts rebooted so far."""

    hook: StepHook | None
    rebooter: Rebooter | None
    rebooted: list[str]
    markers: BootMarkers | None = None

    def start(self, step: str, hosts: Sequence[HostLike]) -> None:
        if self.hook is not None and hosts:
            self.hook(step, [h.name for h in hosts])


def _run_batch(conn: Connection, batch: Sequence[HostLike], pool: Sequence[HostLike],
               scheduler_for: SchedulerFor, provisioner: Provisioner, verifier: HealthCheck,
               opts: MaintainOptions, *, reason: str, owner: str, run_id: str, echo: Echo,
               sleep: Callable[[float], None], clock: Callable[[], float], steps: _Steps) -> list[Outcome]:
    actor = opts.actor
    done: dict[str, Outcome] = {}
    records = hstate.get_many(conn, [h.name for h in batch])
    # 1. drain, 2. wait (hosts already in maintaining/verifying from an interrupted run skip both)
    resuming = (DrainState.MAINTAINING, DrainState.VERIFYING)
    to_drain = [h for h in batch if records[h.name].state not in resuming]
    if to_drain:
        dopts = DrainOptions(reason=reason, actor=actor, wait=False, timeout_s=opts.drain_timeout_s,
                             max_unavailable=opts.max_unavailable, poll_s=opts.poll_s, owner=owner,
                             run_id=run_id, lock_holder=lock_holder_id(run_id))
        steps.start("drain", to_drain)
        outs = drain_core.drain(conn, to_drain, pool, scheduler_for, dopts, echo=echo, sleep=sleep,
                                clock=clock)
        draining = {o.host for o in outs if o.ok and o.state == DrainState.DRAINING.value}
        waiting = [h for h in to_drain if h.name in draining]
        steps.start("wait", waiting)
        if waiting:
            outs = [o for o in outs if o.host not in draining] + drain_core.wait_drained(
                conn, waiting, scheduler_for, tag_reason(actor, reason), dopts, echo=echo, sleep=sleep,
                clock=clock)
        for o in outs:
            if not o.ok:
                done[o.host] = Outcome(o.host, False, o.state, o.message if o.message.startswith("refused")
                                       else f"drain: {o.message}")
    # 3. provision the drained hosts (and resume those left maintaining)
    provision: list[HostLike] = []
    verify: list[HostLike] = []
    resumed_reboot: dict[str, str | None] = {}  # host -> the marker its interrupted reboot recorded
    for h in batch:
        if h.name in done:
            continue
        state = hstate.get(conn, h.name).state
        if state is DrainState.VERIFYING:
            verify.append(h)
            continue
        if records[h.name].state is DrainState.MAINTAINING:
            was_rebooting, marker = interrupted_reboot(conn, h.name)
            if was_rebooting:  # killed during the reboot step: finish that, do not provision again
                resumed_reboot[h.name] = marker
                continue
        hstate.transition(conn, h.name, DrainState.MAINTAINING, actor=actor, owner=owner, run_id=run_id,
                          expect={DrainState.DRAINED, DrainState.MAINTAINING}, note=opts.provision_note())
        provision.append(h)
    provisioned: list[HostLike] = []
    reboot: list[HostLike] = []
    if provision:
        steps.start("provision", provision)
        echo(f"provisioning {', '.join(h.name for h in provision)} with {opts.playbook}")
        try:
            raw = provisioner(provision, opts.playbook, held_by=lock_holder_id(run_id))
            results = {h.name: _provisioned(raw.get(h.name, "no result from the provision run"))
                       for h in provision}
        except FleetctlError as exc:
            results = {h.name: Provisioned(f"provision did not run: {exc}") for h in provision}
        for h in provision:
            problem = results[h.name].problem
            if problem:
                done[h.name] = _quarantine(conn, h.name, actor, f"provision failed: {problem}", echo,
                                           run_id=run_id)
            else:
                provisioned.append(h)
        # 4. reboot where needed (the hosts stay maintaining until they are back)
        reboot = [h for h in provisioned if opts.reboot is RebootMode.ALWAYS
                  or (opts.reboot is RebootMode.AUTO and results[h.name].reboot_needed)]
    resumed = [h for h in batch if h.name in resumed_reboot]
    came_back, again, lost = _resume_reboot(conn, resumed, resumed_reboot, opts, steps, run_id=run_id,
                                            echo=echo)
    back = _reboot(conn, [*reboot, *again], opts, steps, actor=actor, owner=owner, run_id=run_id, echo=echo)
    back.update(lost)
    back.update({h.name: None for h in came_back})
    rebooting = {h.name for h in (*reboot, *resumed)}
    if provisioned or resumed:
        locks.refresh(conn, lock_holder_id(run_id),
                      ttl=timedelta(seconds=opts.verify_timeout_s) + locks.DEFAULT_TTL)
    for h in (*provisioned, *resumed):
        if h.name in rebooting and back[h.name]:
            done[h.name] = _quarantine(conn, h.name, actor, f"reboot failed: {back[h.name]}", echo,
                                       run_id=run_id)
            continue
        note = ("provisioned, rebooted (the interrupted run's reboot)" if h.name in steps.rebooted
                and h.name in resumed_reboot
                else "provisioned, rebooted" if h.name in rebooting else "provisioned")
        hstate.transition(conn, h.name, DrainState.VERIFYING, actor=actor, owner=owner, run_id=run_id,
                          expect={DrainState.MAINTAINING}, note=note)
        verify.append(h)
    # 5. verify through the agents (retried: an agent restarted by the playbook needs a moment)
    healthy: list[HostLike] = []
    if verify:
        steps.start("verify", verify)
        verdicts = _verify(verifier, verify, opts, sleep=sleep, clock=clock)
        lifecycle.record_health(conn, {h.name: verdicts.get(h.name) for h in verify}, source="maintain")
        for h in verify:
            problem = verdicts.get(h.name)
            if problem:
                done[h.name] = _quarantine(conn, h.name, actor, f"verification failed: {problem}", echo,
                                           run_id=run_id)
            else:
                healthy.append(h)
    # 6. back into service
    if healthy:
        steps.start("undrain", healthy)
        for o in drain_core.undrain(conn, healthy, scheduler_for, None, actor=actor, echo=echo,
                                    note=f"maintain {run_id}: verified healthy",
                                    lock_holder=lock_holder_id(run_id)):
            message = ("maintained, rebooted, verified, back in service" if o.host in steps.rebooted
                       else "maintained, verified, back in service")
            done[o.host] = o if not o.ok else Outcome(o.host, True, o.state, message)
            if o.ok:
                lifecycle.on_maintain_result(conn, o.host, ok=True, actor=actor, run_id=run_id)
    return [done[h.name] for h in batch]


def _resume_reboot(conn: Connection, hosts: Sequence[HostLike], recorded: Mapping[str, str | None],
                   opts: MaintainOptions, steps: _Steps, *, run_id: str,
                   echo: Echo) -> tuple[list[HostLike], list[HostLike], dict[str, str | None]]:
    """Hosts whose reboot a killed run had asked for: (back from it, to reboot now, host -> why lost).
    Each is waited for before its marker is compared: it may still be booting."""
    if not hosts:
        return [], [], {}
    if steps.markers is None:
        return [], list(hosts), {}
    locks.refresh(conn, lock_holder_id(run_id),
                  ttl=timedelta(seconds=opts.reboot_timeout_s + opts.verify_timeout_s) + locks.DEFAULT_TTL)
    echo(f"{', '.join(h.name for h in hosts)}: an interrupted run rebooted them; waiting up to "
         f"{opts.reboot_timeout_s:.0f}s for them to answer")
    try:
        got = steps.markers(hosts, held_by=lock_holder_id(run_id), timeout_s=opts.reboot_timeout_s, wait=True)
    except FleetctlError as exc:
        got = {h.name: BootMarker(problem=f"boot marker not read: {exc}") for h in hosts}
    came_back: list[HostLike] = []
    again: list[HostLike] = []
    lost: dict[str, str | None] = {}
    for h in hosts:
        now = got.get(h.name) or BootMarker(problem="no result from the boot marker run")
        before = recorded.get(h.name)
        if now.problem or now.marker is None:
            lost[h.name] = f"not back from the interrupted run's reboot: {now.problem or 'no boot marker'}"
        elif before is not None and one_line(now.marker) != before:
            came_back.append(h)
        else:
            again.append(h)  # no marker recorded, or the same boot: the reboot never happened
    steps.rebooted += [h.name for h in came_back]
    return came_back, again, lost


def _reboot(conn: Connection, hosts: Sequence[HostLike], opts: MaintainOptions, steps: _Steps, *,
            actor: str, owner: str, run_id: str, echo: Echo) -> dict[str, str | None]:
    """Reboot ``hosts`` through the rebooter; per host None when it came back, else why not."""
    if not hosts:
        return {}
    why = "--reboot always" if opts.reboot is RebootMode.ALWAYS else f"{REBOOT_FACT} after provisioning"
    if steps.rebooter is not None:
        wait = timedelta(seconds=opts.reboot_timeout_s + opts.verify_timeout_s)
        locks.refresh(conn, lock_holder_id(run_id), ttl=wait + locks.DEFAULT_TTL)
    markers = _markers_before(hosts, steps, run_id=run_id, timeout_s=opts.reboot_timeout_s)
    unread = {n: f"boot marker not read before the reboot: {m.problem}" for n, m in markers.items()
              if m.problem}
    hosts = [h for h in hosts if h.name not in unread]
    for h in hosts:  # audited before the reboot is asked for: a kill from here on leaves the trace
        marker = markers[h.name].marker if h.name in markers else None
        hstate.transition(conn, h.name, DrainState.MAINTAINING, actor=actor, owner=owner, run_id=run_id,
                          expect={DrainState.MAINTAINING},
                          note=reboot_note(why, one_line(marker) if marker else None))
    if not hosts:
        return dict(unread)
    steps.start("reboot", hosts)
    if steps.rebooter is None:
        return {h.name: "a reboot is needed but this maintain cannot reboot hosts" for h in hosts}
    echo(f"rebooting {', '.join(h.name for h in hosts)} ({why}; waiting up to {opts.reboot_timeout_s:.0f}s)")
    try:
        got = steps.rebooter(hosts, held_by=lock_holder_id(run_id), timeout_s=opts.reboot_timeout_s)
        back = {h.name: got.get(h.name, "no result from the reboot run") for h in hosts}
    except FleetctlError as exc:
        back = {h.name: f"reboot did not run: {exc}" for h in hosts}
    steps.rebooted += [h.name for h in hosts if not back[h.name]]
    return {**back, **unread}


def _markers_before(hosts: Sequence[HostLike], steps: _Steps, *, run_id: str,
                    timeout_s: float) -> dict[str, BootMarker]:
    """The hosts' boot markers before their reboot (none without a reader or a rebooter)."""
    if steps.markers is None or steps.rebooter is None:
        return {}
    try:
        got = steps.markers(hosts, held_by=lock_holder_id(run_id), timeout_s=timeout_s, wait=False)
    except FleetctlError as exc:
        return {h.name: BootMarker(problem=str(exc)) for h in hosts}
    none = BootMarker(problem="no result from the boot marker run")
    return {h.name: got.get(h.name) or none for h in hosts}


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


def _quarantine(conn: Connection, host: str, actor: str, why: str, echo: Echo, *,
                run_id: str) -> Outcome:
    hstate.transition(conn, host, DrainState.QUARANTINED, actor=actor, note=why)
    lifecycle.on_maintain_result(conn, host, ok=False, actor=actor, run_id=run_id, why=why)
    echo(f"{host}: quarantined ({why})")
    return Outcome(host, False, DrainState.QUARANTINED.value, why)


@dataclass(frozen=True)
class PlaybookArgs:
    """What maintain passes through to ansible-playbook: ``-e`` as ``fleetctl provision`` takes them
    (the real values), ``--tags``/``--skip-tags`` (the provision step only)."""

    extra_vars: Sequence[str] = ()
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()


def reboot_facts(event: Mapping[str, Any]) -> tuple[str, bool] | None:
    """(host, value) when an Ansible event is a task result that set REBOOT_FACT (the nvidia_driver
    role's ``set_fact``), else None."""
    if event.get("event") != "runner_on_ok":
        return None
    data = event.get("event_data") or {}
    res = data.get("res") if isinstance(data, Mapping) else None
    facts = res.get("ansible_facts") if isinstance(res, Mapping) else None
    if not isinstance(facts, Mapping) or REBOOT_FACT not in facts or not data.get("host"):
        return None
    return str(data["host"]), truthy(facts[REBOOT_FACT])


class _RebootFactWatcher:
    """A provision run's observer that keeps each host's last REBOOT_FACT."""

    def __init__(self) -> None:
        self.needed: dict[str, bool] = {}

    def started(self, run_id: str, hosts: Sequence[str], playbook: str) -> None:
        pass

    def batch(self, index: int, total: int, hosts: Sequence[str]) -> None:
        pass

    def event(self, event: Mapping[str, Any], tally: object) -> None:
        found = reboot_facts(event)
        if found is not None:
            self.needed[found[0]] = found[1]

    def finished(self, result: object) -> None:
        pass


def check_playbook_args(inventory: Sequence[str], pattern: str, playbook: str, args: PlaybookArgs, *,
                        cwd: Path | None = None) -> None:
    """Refuse bad ``-e`` values and unknown tags (UsageError, exit 2) before anything is drained."""
    if not (args.extra_vars or args.tags or args.skip_tags):
        return
    from fleetctl.provision import ProvisionOptions, plan
    from fleetctl.runner import AnsibleRunner

    plan(ProvisionOptions(inventory=list(inventory), pattern=pattern, playbook=playbook,
                          extra_vars=list(args.extra_vars), tags=list(args.tags),
                          skip_tags=list(args.skip_tags)),
         AnsibleRunner(), cwd=cwd)


def _verdicts(result: Any, names: Sequence[str]) -> dict[str, str | None]:
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


def ansible_provisioner(inventory: Sequence[str], db_path: Path | None, *, cwd: Path | None = None,
                        args: PlaybookArgs = PlaybookArgs(), internal: bool = False) -> Provisioner:
    """The real provisioner: ``fleetctl.provision.run`` (ansible-runner), limited to the batch; each
    host's REBOOT_FACT is read from the run's events. ``internal``: the runs are no provisioning (a
    remediation's repair playbooks), see ``ProvisionOptions.internal``."""

    def run(hosts: Sequence[HostLike], playbook: str, *, held_by: str) -> Mapping[str, Provisioned]:
        from fleetctl.provision import ProvisionOptions
        from fleetctl.provision import run as provision_run
        from fleetctl.runner import AnsibleRunner

        names = [h.name for h in hosts]
        watcher = _RebootFactWatcher()
        result = provision_run(ProvisionOptions(inventory=list(inventory), pattern=",".join(names),
                                                playbook=playbook, extra_vars=list(args.extra_vars),
                                                tags=list(args.tags), skip_tags=list(args.skip_tags),
                                                internal=internal),
                               AnsibleRunner(), db_path=db_path, cwd=cwd, held_by=held_by,
                               observer=watcher)
        return {name: Provisioned(problem, watcher.needed.get(name, False))
                for name, problem in _verdicts(result, names).items()}

    return run


def reboot_playbook() -> Path:
    from fleetctl import assets

    return assets.playbooks_dir() / "system_reboot.yml"


def ansible_rebooter(inventory: Sequence[str], db_path: Path | None, *, cwd: Path | None = None,
                     extra_vars: Sequence[str] = ()) -> Rebooter:
    """The real rebooter: playbooks/system_reboot.yml (``ansible.builtin.reboot``) as a recorded
    internal run under the batch's locks; the maintain's ``-e`` go with it (connection settings,
    reboot_command)."""

    def run(hosts: Sequence[HostLike], *, held_by: str, timeout_s: float) -> Mapping[str, str | None]:
        from fleetctl.provision import ProvisionOptions
        from fleetctl.provision import run as provision_run
        from fleetctl.runner import AnsibleRunner

        names = [h.name for h in hosts]
        timeout = json.dumps({"fleetctl_reboot_timeout": max(1, round(timeout_s))})
        result = provision_run(ProvisionOptions(inventory=list(inventory), pattern=",".join(names),
                                                playbook=str(reboot_playbook()),
                                                extra_vars=[*extra_vars, timeout], internal=True),
                               AnsibleRunner(), db_path=db_path, cwd=cwd, held_by=held_by)
        return _verdicts(result, names)

    return run


MARKER_FACT = "fleetctl_boot_marker"


def marker_facts(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(host, marker) when an Ansible event is system_reboot.yml's ``set_fact`` of MARKER_FACT."""
    if event.get("event") != "runner_on_ok":
        return None
    data = event.get("event_data") or {}
    res = data.get("res") if isinstance(data, Mapping) else None
    facts = res.get("ansible_facts") if isinstance(res, Mapping) else None
    if not isinstance(facts, Mapping) or MARKER_FACT not in facts or not data.get("host"):
        return None
    return str(data["host"]), one_line(str(facts[MARKER_FACT]))


class _MarkerWatcher(_RebootFactWatcher):
    """A run's observer that keeps each host's boot marker."""

    def __init__(self) -> None:
        super().__init__()
        self.markers: dict[str, str] = {}

    def event(self, event: Mapping[str, Any], tally: object) -> None:
        found = marker_facts(event)
        if found is not None:
            self.markers[found[0]] = found[1]


def ansible_boot_markers(inventory: Sequence[str], db_path: Path | None, *, cwd: Path | None = None,
                         extra_vars: Sequence[str] = ()) -> BootMarkers:
    """The real boot-marker reader: system_reboot.yml in its ``marker`` mode (or ``wait``: first
    ``wait_for_connection`` within the timeout), an internal run; the maintain's ``-e`` go with it."""

    def run(hosts: Sequence[HostLike], *, held_by: str, timeout_s: float,
            wait: bool) -> Mapping[str, BootMarker]:
        from fleetctl.provision import ProvisionOptions
        from fleetctl.provision import run as provision_run
        from fleetctl.runner import AnsibleRunner

        names = [h.name for h in hosts]
        mode = json.dumps({"fleetctl_reboot_mode": "wait" if wait else "marker",
                           "fleetctl_reboot_timeout": max(1, round(timeout_s))})
        watcher = _MarkerWatcher()
        result = provision_run(ProvisionOptions(inventory=list(inventory), pattern=",".join(names),
                                                playbook=str(reboot_playbook()),
                                                extra_vars=[*extra_vars, mode], internal=True),
                               AnsibleRunner(), db_path=db_path, cwd=cwd, held_by=held_by, observer=watcher)
        out: dict[str, BootMarker] = {}
        for name, problem in _verdicts(result, names).items():
            marker = watcher.markers.get(name)
            out[name] = BootMarker(marker, problem or (None if marker else "the run reported no marker"))
        return out

    return run
