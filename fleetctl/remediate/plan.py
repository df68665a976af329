"""The one decision: given the policy, what was observed, what was done, what is out of service and
the time, which hosts start which remediation now, which do not and why.

:func:`plan` is pure: no clock, no I/O, the same inputs give the same :class:`Plan`. In order:

1. a host whose newest observation is not in ``act_on`` is left out (nothing to decide);
2. the fleet-wide stop: in each scope value where the hosts unhealthy now reach the policy's fraction
   (and its ``min_hosts``), nothing starts: a bad driver push or a cooling failure is a person's
   call. Quarantined hosts are out of the fleet for this count, on both sides of the fraction;
3. per unhealthy host: one already out of service is left to whoever has it; its remediation is the
   heaviest of its worst problems' actions through the policy (an unknown action: report it);
   report-only waits for nobody; otherwise hysteresis must be met by observations made after its
   last remediation ended, and a host that flaps gets a quarantine in place of another repair;
4. the budgets choose among the rest, oldest unhealthy first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetctl.remediate import budget
from fleetctl.remediate.flap import Started, answered_until, flapping
from fleetctl.remediate.hysteresis import Observation, eligibility, latest
from fleetctl.remediate.policy import KNOWN_ACTIONS, REPORT, SCOPE_ALL, Kind, Policy, Remediation

QUARANTINE = Remediation(Kind.QUARANTINE, ("drain", "quarantine"))
# Drain states whose hosts are out of the fleet until a person returns them (not counted by the stop).
OUT_OF_FLEET = frozenset({"quarantined"})


@dataclass(frozen=True)
class HostHistory:
    """One host: its observations, oldest first, and its value for each scope key (budget.host_scopes)."""

    name: str
    observations: Sequence[Observation]
    scopes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedAction:
    host: str
    action: str  # the problem action it answers (reset_chip, ...)
    remediation: Kind
    steps: tuple[str, ...]
    reason: str
    since: float  # first observation of the unhealthy streak

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "action": self.action, "remediation": self.remediation.value,
                "steps": list(self.steps), "reason": self.reason, "since": self.since}


# Why a host starts nothing this round (NO_OBSERVATION: the loop's fresh look before it failed).
WAITING, REPORTED, UNAVAILABLE, STOPPED, BUDGET = "hysteresis", "report", "unavailable", "stopped", "budget"
NO_OBSERVATION = "no_observation"


@dataclass(frozen=True)
class Skipped:
    host: str
    kind: str  # one of WAITING, REPORTED, UNAVAILABLE, STOPPED, BUDGET, NO_OBSERVATION
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "kind": self.kind, "why": self.why}


@dataclass(frozen=True)
class Stop:
    """A scope value where too many hosts are unhealthy at once."""

    scope: str
    value: str
    unhealthy: int
    total: int
    fraction: float  # the policy's threshold

    @property
    def label(self) -> str:
        return budget.label(self.scope, self.value)

    def message(self) -> str:
        share = f"{self.unhealthy} of {self.total} hosts unhealthy ({self.unhealthy / self.total:.0%}) >= " \
                f"{self.fraction:.0%}"
        if self.scope == SCOPE_ALL:
            return f"{share}: automatic action stopped; a person's call"
        return f"{self.label}: {share}: automatic action stopped in {self.label}; a person's call"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "value": self.value, "unhealthy": self.unhealthy, "total": self.total,
                "fraction": self.fraction, "message": self.message()}


@dataclass(frozen=True)
class Plan:
    at: float
    actions: list[PlannedAction]
    skipped: list[Skipped]
    stops: list[Stop]

    @property
    def fleet_stopped(self) -> bool:
        """Automatic action is stopped for the whole fleet."""
        return any(s.scope == SCOPE_ALL for s in self.stops)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "fleet_stopped": self.fleet_stopped,
                "stops": [s.to_dict() for s in self.stops],
                "actions": [a.to_dict() for a in self.actions],
                "skipped": [s.to_dict() for s in self.skipped]}


@dataclass(frozen=True)
class _Candidate:
    host: str
    action: str
    remediation: Remediation
    reason: str
    since: float


def plan(policy: Policy, hosts: Sequence[HostHistory], history: Sequence[Started],
         unavailable: Mapping[str, str], now: float) -> Plan:
    """Decide this round. ``hosts``: the whole fleet in scope (its pools); ``history``: remediations
    started so far; ``unavailable``: host -> its drain state (or why) for hosts out of service now."""
    scopes = {h.name: h.scopes for h in hosts}
    bad = {h.name: obs for h in hosts
           if (obs := latest(h.observations)) is not None and obs.status in policy.act_on}
    stops = _stops(policy, scopes, bad, unavailable)
    stopped = {(s.scope, s.value): s for s in stops}
    skipped: list[Skipped] = []
    candidates: list[_Candidate] = []
    for h in sorted(hosts, key=lambda h: h.name):
        if h.name not in bad:
            continue
        if h.name in unavailable:
            skipped.append(Skipped(h.name, UNAVAILABLE, f"already out of service ({unavailable[h.name]})"))
            continue
        found = _decide(policy, h, bad[h.name], history, now)
        if isinstance(found, Skipped):
            skipped.append(found)
            continue
        stop = next((stopped[k] for k in stopped if budget.scope_value(scopes, h.name, k[0]) == k[1]), None)
        if stop is not None:
            skipped.append(Skipped(h.name, STOPPED, f"{found.action}: {stop.message()}"))
            continue
        candidates.append(found)
    candidates.sort(key=lambda c: (c.since, c.host))
    choice = budget.choose([c.host for c in candidates], scopes=scopes, unavailable=unavailable.keys(),
                           rules=policy.max_unavailable, history=history,
                           cap_per_hour=policy.max_starts_per_hour, now=now)
    by_host = {c.host: c for c in candidates}
    actions = [PlannedAction(c.host, c.action, c.remediation.kind, c.remediation.steps, c.reason, c.since)
               for c in map(by_host.__getitem__, choice.start)]
    skipped += [Skipped(w.host, BUDGET, f"{by_host[w.host].action}: waits: {w.why}") for w in choice.wait]
    skipped.sort(key=lambda s: s.host)
    return Plan(now, actions, skipped, stops)


def _decide(policy: Policy, host: HostHistory, obs: Observation, history: Sequence[Started],
            now: float) -> _Candidate | Skipped:
    """The remediation one unhealthy host would start, or why it starts none."""
    action, remediation, note = _remediation(policy, obs)
    detail = f" ({obs.detail})" if obs.detail else ""
    if not remediation.acts:
        return Skipped(host.name, REPORTED, f"{note}{detail}")
    # What the host showed before its last remediation ended (a reboot's unreachable minutes, the
    # fault itself) was that remediation's to answer, and burn-in checked it: a new streak starts after.
    cut = answered_until(host.name, history)
    window = host.observations if cut is None else [o for o in host.observations if o.at > cut]
    found = eligibility(window, policy.act_on, policy.hysteresis_for(remediation))
    if not found.eligible or found.streak.since is None:
        return Skipped(host.name, WAITING, f"{action}: {found.why()}: waiting")
    reason = f"{action}{detail}; {found.why()}"
    if remediation.kind is Kind.REPAIR:
        flaps = flapping(host.name, history, now, policy.flap)
        if flaps.flapping:
            remediation, reason = QUARANTINE, f"{action}{detail}; {flaps.why()}"
    return _Candidate(host.name, action, remediation, reason, found.streak.since)


def _remediation(policy: Policy, obs: Observation) -> tuple[str, Remediation, str]:
    """(action, remediation, a note for report-only) for the heaviest of ``obs``'s actions."""
    if not obs.actions:
        return "none", REPORT, f"{obs.status}, but no problem names an action: reported"
    best: tuple[str, Remediation] | None = None
    for action in obs.actions:
        remediation = policy.remediation(action)
        if best is None or remediation.weight > best[1].weight:
            best = (action, remediation)
    assert best is not None
    action, remediation = best
    if remediation.acts:
        return action, remediation, ""
    unknown = [a for a in obs.actions if a not in KNOWN_ACTIONS]
    if unknown:
        names = ", ".join(f'"{a}"' for a in unknown)
        return action, remediation, f"unknown action {names} (a newer agent?): no policy entry, reported"
    return action, remediation, f"{action}: no automatic action in the policy: reported"


def _stops(policy: Policy, scopes: budget.Scopes, bad: Mapping[str, Observation],
           unavailable: Mapping[str, str]) -> list[Stop]:
    out = []
    for rule in policy.stops:
        for value, members in sorted(budget.pools(scopes, rule.scope).items()):
            present = [m for m in members if unavailable.get(m) not in OUT_OF_FLEET]
            unhealthy = sum(1 for m in present if m in bad)
            if present and unhealthy >= rule.min_hosts and unhealthy / len(present) >= rule.fraction:
                out.append(Stop(rule.scope, value, unhealthy, len(present), rule.fraction))
    return out
