"""Run ``playbooks/burn_in.yml`` through fleetctl's runner and read each host's diagnostic.

:func:`run_dcgm_diagnostics` is what ``fleetctl burn-in`` calls: one ansible-playbook run over the
pattern, every host's ``dcgmi diag -j`` output parsed by :mod:`fleetctl.burnin.dcgm`, and per host a
:class:`HostBurnIn` that names the checks that ran and those that could not (not an NVIDIA host,
no dcgmi, a timeout, output that is no diagnostic, an unreachable host). Only a diagnostic that ran
and was read can pass; every other case is ``unknown`` with its reason, never a silent pass.

:func:`results_from_events` is the pure half (events in, results out), tested without Ansible.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl import assets
from fleetctl.burnin.dcgm import DiagParseError, DiagReport, Status, parse_diag, worst
from fleetctl.errors import UsageError
from fleetctl.runner import (
    AnsibleRunner,
    Event,
    EventCallback,
    EventTally,
    PlaybookRequest,
    PlaybookRunner,
    RunOutcome,
)
from fleetctl.views.text import visible

PLAYBOOK = "burn_in.yml"
LEVELS = (1, 2, 3, 4)
FACT = "burn_in_result"  # what the playbook's set_fact tasks record per host
DCGM_CHECK = "dcgm diag"


@dataclass(frozen=True)
class HostBurnIn:
    """One host's burn-in diagnostics.

    ``status`` is pass/warn/fail only when the diagnostic ran and its output was read; ``unknown``
    otherwise, ``reason`` saying why. ``applicable`` is False where DCGM does not apply (a host
    outside the GPU group, e.g. a TPU host): its checks must come from elsewhere.
    """

    host: str
    level: int
    status: Status
    reason: str
    ran: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()
    applicable: bool = True
    rc: int | None = None
    report: DiagReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "level": self.level, "status": self.status.value, "reason": self.reason,
                "ran": list(self.ran), "not_run": list(self.not_run), "applicable": self.applicable,
                "rc": self.rc, "dcgm": self.report.to_dict() if self.report else None}


@dataclass(frozen=True)
class BurnInRun:
    """The hosts of one burn-in run and how ansible-playbook ended."""

    level: int
    hosts: dict[str, HostBurnIn]
    outcome: RunOutcome | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def status(self) -> Status:
        return worst(h.status for h in self.hosts.values()) or Status.UNKNOWN


def run_dcgm_diagnostics(
    inventory: Sequence[str],
    *,
    workdir: Path,
    pattern: str = "all",
    level: int = 1,
    dcgmi: Sequence[str] | None = None,
    expected_hosts: Sequence[str] = (),
    extra_vars: Mapping[str, Any] | None = None,
    runner: PlaybookRunner | None = None,
    forks: int | None = None,
    cwd: Path | None = None,
    on_event: EventCallback | None = None,
    should_cancel: Callable[[], bool] = lambda: False,
) -> BurnInRun:
    """Run DCGM's diagnostics at ``level`` (1-4) on the hosts ``pattern`` selects.

    ``dcgmi`` replaces the command (an argv list: a simulated fleet passes the stand-in,
    ``[python, -m, fleet_agent.sim.dcgmi, ...]``); ``expected_hosts`` are hosts that must answer
    (one that never reports is ``unknown``, "no result"). ``workdir`` holds ansible-runner's
    private data (artifacts). Raises :class:`~fleetctl.errors.UsageError` for a bad level.
    """
    if level not in LEVELS:
        raise UsageError(f"--level: {level} is not a DCGM run level (1, 2, 3 or 4)")
    variables: dict[str, Any] = dict(extra_vars or {})
    variables["burn_in_level"] = level
    if dcgmi is not None:
        if not dcgmi or not all(isinstance(a, str) and a for a in dcgmi):
            raise UsageError("dcgmi: expected a non-empty command (a list of arguments)")
        variables["burn_in_dcgmi"] = list(dcgmi)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    request = PlaybookRequest(
        playbook=assets.playbooks_dir() / PLAYBOOK,
        inventory=list(inventory),
        private_data_dir=workdir,
        ident=f"burn-in-{secrets.token_hex(4)}",
        cwd=cwd or Path.cwd(),
        limit=pattern,
        cmdline=["-e", json.dumps(variables)],
        forks=forks,
        # Always on: ansible-runner defaults it to False when unset, and an inherited
        # ANSIBLE_HOST_KEY_CHECKING=False would let a host in the middle answer the diagnostic.
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "True"},
    )
    events: list[Event] = []

    def keep(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    outcome = (runner or AnsibleRunner()).run(request, keep, should_cancel)
    hosts = results_from_events(events, level, expected_hosts)
    notes = outcome.notes + ((f"ansible-playbook ended {outcome.status} (rc {outcome.rc})",)
                             if outcome.status not in ("successful", "failed") else ())
    return BurnInRun(level=level, hosts=hosts, outcome=outcome, notes=notes)


def results_from_events(events: Iterable[Event], level: int, expected_hosts: Sequence[str] = ()
                        ) -> dict[str, HostBurnIn]:
    """Each host's :class:`HostBurnIn` from the playbook's events (its ``burn_in_result`` facts)."""
    tally = EventTally(hosts=expected_hosts)
    facts: dict[str, Mapping[str, Any]] = {}
    for event in events:
        tally.feed(event)
        data: Mapping[str, Any] = event.get("event_data") or {}
        if event.get("event") != "runner_on_ok" or not data.get("host"):
            continue
        res = data.get("res") or {}
        found = (res.get("ansible_facts") or {}).get(FACT) if isinstance(res, Mapping) else None
        if isinstance(found, Mapping):
            facts[str(data["host"])] = found
    results: dict[str, HostBurnIn] = {}
    for host in tally.hosts.values():
        fact = facts.get(host.host)
        if fact is not None:
            results[host.host] = host_result(host.host, fact, level)
            continue
        if host.unreachable:
            why = f"unreachable: {host.first_failure or 'no answer'}"
        elif host.failed:
            why = f"the burn-in playbook failed before the diagnostic: {host.first_failure or 'no message'}"
        else:
            why = "no result (the host was not reached by the burn-in playbook)"
        why = visible(why, limit=500)
        results[host.host] = HostBurnIn(host.host, level, Status.UNKNOWN, why,
                                        not_run=(f"{DCGM_CHECK}: {why}",))
    return dict(sorted(results.items()))


def host_result(host: str, fact: Mapping[str, Any], level: int) -> HostBurnIn:
    """One host's result from what the playbook recorded for it."""
    check = f"{DCGM_CHECK} -r {level}"
    if not fact.get("ran"):
        why = visible(fact.get("reason") or "the diagnostic did not run", limit=500)
        applicable = fact.get("applicable") is not False  # False: not an NVIDIA host
        return HostBurnIn(host, level, Status.UNKNOWN, why, not_run=(f"{check}: {why}",),
                          applicable=applicable)
    rc = _as_int(fact.get("rc"))
    stdout = fact.get("stdout") if isinstance(fact.get("stdout"), str) else ""
    msg = " ".join(str(fact.get("msg") or "").split())
    if rc is None:
        # No exit status: the async job was stopped (burn_in_timeouts) or never finished.
        timeout = _as_int(fact.get("timeout_s"))
        why = (f"dcgmi did not finish within {timeout} s" if timeout else "dcgmi did not finish") + (
            f" ({visible(msg, limit=200)})" if msg else "")
        return HostBurnIn(host, level, Status.UNKNOWN, why, not_run=(f"{check}: {why}",))
    try:
        report = parse_diag(stdout or "", host=host)
    except DiagParseError as exc:
        why = f"{exc} (dcgmi exited {rc})"
        return HostBurnIn(host, level, Status.UNKNOWN, why, not_run=(f"{check}: {why}",), rc=rc)
    status, why = report.status, report.reason()
    if status in (Status.PASS, Status.WARN) and rc != 0:
        status, why = Status.UNKNOWN, f"dcgmi exited {rc} but its results show no failure ({why})"
    expected = _as_int(fact.get("expected_gpus"))
    seen = len(report.gpus) or len(report.gpus_tested)
    if expected and not seen and status is not Status.FAIL:
        # Results that name no GPU prove nothing about the GPUs expected: never a pass.
        status, why = Status.UNKNOWN, f"DCGM's results name none of the {expected} expected GPUs ({why})"
    elif expected is not None and seen and seen < expected and status is not Status.UNKNOWN:
        status = Status.FAIL
        why = f"DCGM saw {seen} of {expected} expected GPUs" + ("" if why.endswith("passed") else f"; {why}")
    return HostBurnIn(host, level, status, why, ran=(check,), rc=rc, report=report)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
