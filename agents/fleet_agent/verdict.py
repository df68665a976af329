"""Health verdicts: the one place where problems and observations become a status.

Beside the wire schema because both sides decide with it: the agent when it judges its chips
(:func:`chip_status`, :func:`node_status`), and fleetctl when it turns a node report — fetched from
the agent or rebuilt from Prometheus — into a host's place in the fleet report (:func:`host_verdict`,
:func:`no_report`) or decides whether a host may take work again (:func:`unfit_for_work`).

The rules:

- a problem's severity maps to a status (warning -> degraded, critical -> unhealthy, info leaves
  it healthy); a chip is the worst of its problems, and ``unknown`` when it could not be read and
  nothing critical is known about it;
- a node is the worst of its chips and its own problems, and at least ``unknown`` when one of its
  chip sources could not be read (a source we cannot read says nothing about the chips behind it);
- in the fleet report a host is the agent's verdict, made worse by what only the controller sees
  (fewer chips than the inventory expects, a sample too old to trust), or ``error``/``unreachable``
  when there is no report at all.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet_agent.schema import Action, ChipReport, NodeReport, Problem, Severity, Status

# Worst first when sorted by descending rank.
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

# A sample older than this many agent intervals (and at least STALE_MIN_S) is not current.
STALE_INTERVALS = 3.0
STALE_MIN_S = 30.0


# Checks whose problem explains others of the same node (no driver: no chips either): listed first
# within their severity, so that a one-line reason (a Slurm drain, `fleet-agent check`) names the cause.
ROOT_CAUSE_CHECKS = ("driver",)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Worst severity first, root causes first within a severity, then check name; a stable sort keeps
    each check's own order (XIDs by code), so the same state always renders the same way."""
    return sorted(problems, key=lambda p: (-SEVERITY_RANK[p.severity], p.check not in ROOT_CAUSE_CHECKS,
                                           p.check))


def problems_status(problems: Iterable[Problem]) -> Status:
    """The status the worst of ``problems`` implies (healthy when there are none)."""
    return Status.worst([p.severity.status() for p in problems])


def chip_status(problems: Sequence[Problem], *, unseen: bool) -> Status:
    """A chip: the worst of its problems; ``unseen`` (stale or failed reading) makes it unknown
    unless something critical is already known."""
    status = problems_status(problems)
    if unseen and status is not Status.UNHEALTHY:
        return Status.UNKNOWN
    return status


def node_status(chips: Sequence[ChipReport], problems: Sequence[Problem], *,
                sources_unreadable: bool = False) -> Status:
    """A node: the worst of its chips and its own problems; at least unknown when a chip source
    (NVML, the TPU runtime) could not be read."""
    status = Status.worst([c.status for c in chips] + [problems_status(problems)])
    if sources_unreadable and status.rank < Status.UNKNOWN.rank:
        return Status.UNKNOWN
    return status


# --- the fleet's view of a host ---------------------------------------------------------------


class HostHealth(enum.StrEnum):
    """A host's state in the fleet report: the agent's node status, or why there is none."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNKNOWN = "unknown"  # the agent answered but cannot see (some of) its chips
    ERROR = "error"  # something answered, but not a valid report (401, garbage, wrong schema)
    UNREACHABLE = "unreachable"  # no answer: refused, timed out, hung
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        """Higher is worse; tables list the worst first."""
        return _HEALTH_RANK[self]

    @property
    def ok(self) -> bool:
        return self is HostHealth.HEALTHY

    @staticmethod
    def of(status: Status) -> HostHealth:
        return HostHealth(status.value)


_HEALTH_RANK = {
    HostHealth.HEALTHY: 0, HostHealth.DEGRADED: 1, HostHealth.UNKNOWN: 2,
    HostHealth.ERROR: 3, HostHealth.UNREACHABLE: 4, HostHealth.UNHEALTHY: 5,
}
HOST_HEALTH_ORDER: tuple[HostHealth, ...] = tuple(sorted(HostHealth, key=lambda s: s.rank))


def worse(a: HostHealth, b: HostHealth) -> HostHealth:
    return a if a.rank >= b.rank else b


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """A reporting host's state, the node-level problems the controller added, and the sample's
    age (None when it cannot be told)."""

    health: HostHealth
    added: tuple[Problem, ...]
    age_s: float | None


def host_verdict(node: NodeReport, now: float, *, expected_chips: int | None = None,
                 sample_time_known: bool = True) -> HostVerdict:
    """The agent's own verdict, plus what only the controller can see: the inventory's expected chip
    count against the chips present (when the agent does not check it itself), and the sample's
    age (an agent whose sampling loop is stuck keeps serving an old sample). Without a sample time
    (a source that does not carry one) the age is unknown, and so is the host's state."""
    health = HostHealth.of(node.status)
    added: list[Problem] = []
    expected = expected_chips if expected_chips is not None else node.chips_expected
    # Not when the agent named why it sees no chips (the driver): that problem says it already.
    if (expected is not None and len(node.chips) != expected
            and not _has_check(node, "chip_count") and not _has_check(node, "driver")):
        added.append(Problem("chip_count", Severity.CRITICAL,
                             f"{len(node.chips)} of {expected} chips present (inventory)", Action.REBOOT))
        health = worse(health, HostHealth.UNHEALTHY)
    age: float | None = None
    if not sample_time_known:
        added.append(Problem("sample_age", Severity.WARNING,
                             "no usable fleet_sample_timestamp_seconds: the sample's age is unknown",
                             Action.RESTART_AGENT))
        health = worse(health, HostHealth.UNKNOWN)
    else:
        age = max(0.0, now - node.sampled_at)
        if age > max(STALE_INTERVALS * node.interval_s, STALE_MIN_S):
            added.append(Problem("sample_age", Severity.WARNING,
                                 f"latest sample is {age:.0f}s old (interval {node.interval_s:g}s)",
                                 Action.RESTART_AGENT))
            health = worse(health, HostHealth.UNKNOWN)
    return HostVerdict(health, tuple(added), age)


def _has_check(node: NodeReport, check: str) -> bool:
    return any(p.check == check for p in node.problems) or any(
        p.check == check for c in node.chips for p in c.problems)


def no_report(*, reachable: bool) -> HostHealth:
    """A host without a report: something answered (``error``) or nothing did (``unreachable``)."""
    return HostHealth.ERROR if reachable else HostHealth.UNREACHABLE


def unfit_for_work(node: NodeReport) -> str | None:
    """``None`` when a node report says the host can take work (healthy or degraded, every expected
    chip present); else why not, in one line."""
    if node.status in (Status.UNHEALTHY, Status.UNKNOWN):
        found = [p.message for p in node.problems]
        found += [f"chip {c.index}: {p.message}" for c in node.chips for p in c.problems]
        found += [f"chip {c.index} {c.status.value}" for c in node.chips
                  if c.status in (Status.UNHEALTHY, Status.UNKNOWN) and not c.problems]
        detail = "; ".join(found[:3]) or "no detail"
        return f"agent reports {node.status.value} ({detail})"
    if node.chips_expected is not None and len(node.chips) < node.chips_expected:
        return f"agent sees {len(node.chips)} of {node.chips_expected} expected chips"
    return None
