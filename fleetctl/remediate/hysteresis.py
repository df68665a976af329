"""Observations of a host over time, and whether it has been unhealthy long enough to act on.

One :class:`Observation` per host per round of the remediation loop, taken from its fleet report
row by :func:`observe`. A host is *eligible* (:func:`eligibility`) when its newest observations are
``count`` unhealthy ones in a row spanning at least ``span_s`` seconds (the policy's hysteresis):
a single bad sample, or a fault that clears by itself within the span, never drains a host.

What breaks a streak, and what does not:

- an observation in a state the policy does not act on (healthy, and by default degraded and
  unknown) resets it: the host was seen doing better;
- ``unreachable`` and ``error`` are observations like any other: they count when the policy acts
  on them (``act_on``), and then map to their own policy entries (``actions.unreachable``), never
  to the last problem seen before the host went quiet. A host that went unreachable is not
  healthy, and not proof of the fault it last reported either;
- a *missing* observation (the round had no word on the host at all: the source failed, the host
  was not in the report) neither counts nor resets: nothing was learnt. It cannot make a streak
  either, so a host seen unhealthy twice around a long gap still needs ``count`` real observations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet_agent.verdict import HostHealth

from fleetctl.remediate.policy import Hysteresis
from fleetctl.report.model import HostRow, ProblemRow

MISSING = "missing"
_SEVERITY_ORDER = ("critical", "warning", "info")


@dataclass(frozen=True)
class Observation:
    """A host at time ``at``: its fleet-report state (or :data:`MISSING`), the actions of its worst
    problems (``unreachable``/``error`` for a host without a report) and the first of them, shown."""

    at: float
    status: str
    actions: tuple[str, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "actions": list(self.actions), "detail": self.detail}


def observe(row: HostRow, at: float) -> Observation:
    """``row`` at ``at``: the actions are those of the problems of its worst severity, in the row's
    order (a warning's action never drives a host that a critical problem made unhealthy)."""
    if row.status in (HostHealth.UNREACHABLE, HostHealth.ERROR):
        return Observation(at, row.status.value, (row.status.value,), row.reason or "")
    worst = _worst(row.problems)
    actions = tuple(dict.fromkeys(p.action for p in worst))
    detail = f"{worst[0].short()}: {worst[0].message}" if worst else ""
    return Observation(at, row.status.value, actions, detail)


def missing(at: float) -> Observation:
    """A round without word on the host."""
    return Observation(at, MISSING)


def _worst(problems: Iterable[ProblemRow]) -> list[ProblemRow]:
    by_severity: dict[str, list[ProblemRow]] = {}
    for p in problems:
        by_severity.setdefault(p.severity, []).append(p)
    for severity in _SEVERITY_ORDER[:2]:  # info problems leave a host healthy: no action of theirs
        if severity in by_severity:
            return by_severity[severity]
    return []


@dataclass(frozen=True)
class Streak:
    """The newest unhealthy observations in a row: how many, from when, to when."""

    count: int
    since: float | None
    last: float | None

    @property
    def span_s(self) -> float:
        return 0.0 if self.since is None or self.last is None else self.last - self.since


def streak(observations: Sequence[Observation], act_on: Iterable[str]) -> Streak:
    """The current streak of ``observations`` (oldest first) in ``act_on`` states, missing ones
    skipped; any other state ends it."""
    bad = frozenset(act_on)
    count, since, last = 0, None, None
    for o in reversed(observations):
        if o.status == MISSING:
            continue
        if o.status not in bad:
            break
        count += 1
        since = o.at
        last = o.at if last is None else last
    return Streak(count, since, last)


def latest(observations: Sequence[Observation]) -> Observation | None:
    """The newest observation that is not missing."""
    return next((o for o in reversed(observations) if o.status != MISSING), None)


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    streak: Streak
    needed: Hysteresis

    def why(self) -> str:
        """One line: how far the host is (``unhealthy 2 of 3 observations over 40s of 120s``)."""
        s, need = self.streak, self.needed
        return f"unhealthy {min(s.count, need.count)} of {need.count} observations over " \
               f"{s.span_s:.0f}s of {need.span_s:.0f}s"


def eligibility(observations: Sequence[Observation], act_on: Iterable[str],
                needed: Hysteresis) -> Eligibility:
    """Whether the host's current streak meets ``needed``: at least ``count`` unhealthy observations
    in a row spanning at least ``span_s`` seconds."""
    s = streak(observations, act_on)
    return Eligibility(s.count >= needed.count and s.span_s >= needed.span_s, s, needed)
