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
  (fewer chips than the inventory expects, a sample too old to trust, two machines' clocks apart,
  readings no chip can have, an answer from another host's agent), or ``error``/``unreachable``
  when there is no report at all (or one that is not this host's).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fleet_agent.schema import Action, ChipReport, NodeReport, Problem, Severity, Status

if TYPE_CHECKING:
    from fleet_agent.health.checks import readings

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
    """A reporting host's state, the node-level problems the controller added, the sample's age and
    time (None when they cannot be told), and its chips as the controller judged them: a chip with
    impossible readings is a copy, those fields blanked and a problem naming each added."""

    health: HostHealth
    added: tuple[Problem, ...]
    age_s: float | None
    chips: tuple[ChipReport, ...] = ()
    sampled_at: float | None = None
    chips_expected: int | None = None  # the count it held the chips against (None: none known)


# Two clocks further apart than this, beyond the uncertainty of when the answer came, are skewed.
SKEW_TOLERANCE_S = 5.0
# A sample time this far after the controller's clock is no clock's: an impossible reading.
ABSURD_FUTURE_S = 365 * 86400.0
# Node-level numbers outside these ranges are impossible readings; the verdict then goes without.
_INTERVAL_S = (0.0, 86400.0)
_DURATION_S = (0.0, 86400.0)
_AGE_S = (0.0, 10 * 365 * 86400.0)
_CHIPS = (0.0, 1024.0)


def host_verdict(node: NodeReport, now: float, *, expected_chips: int | None = None,
                 sample_time_known: bool = True, uncertainty_s: float = 0.0,
                 also: Sequence[Problem] = (), chips_present: int | None = None) -> HostVerdict:
    """The agent's own verdict, plus what only the controller can see: the inventory's expected chip
    count against the chips present (when the agent does not check it itself), readings no chip can
    have, the sample's age (an agent whose sampling loop is stuck keeps serving an old sample), the
    two machines' clocks disagreeing, and ``also`` (identity problems: each makes the state at
    least unknown). Without a sample time (a source that does not carry one) the age is unknown,
    and so is the host's state.

    ``now`` is the controller's wall clock when the answer was read, give or take ``uncertainty_s``
    (a fan-out reads its clock once for every host). The age comes from the agent's monotonic clock
    when the report carries it (``sample_age_s``), and the wall-clock difference then measures skew;
    without it, a sample stamped in the future is skew and one that looks old may be either.

    ``chips_present``: how many chips the host has when ``node`` lists only some of them (a source that
    reads the chips that are not healthy, and counts the rest); default, the chips listed."""
    # Here, not at the top: the health package imports this module.
    from fleet_agent.health.checks import readings

    health = HostHealth.of(node.status)
    added: list[Problem] = []
    plausible, at = readings.chip_plausible, node.sampled_at
    chips = tuple(node.chips)
    if not all(map(plausible, chips, itertools.repeat(at))):
        chips = tuple(c if plausible(c, at) else _judged_chip(c, at) for c in chips)
        health = worse(health, HostHealth.DEGRADED)
    # Not the host metrics: no fleet report shows them, and the agent judges them itself.
    invalid: list[readings.Invalid] = []
    interval = _valid("interval_s", node.interval_s, _INTERVAL_S, invalid)
    node_expected = (node.chips_expected if _valid("chips_expected", node.chips_expected, _CHIPS, invalid)
                     is not None else None)
    duration = _valid("sample_duration_s", node.sample_duration_s, _DURATION_S, invalid)
    own_age = _valid("sample_age_s", node.sample_age_s, _AGE_S, invalid)
    if sample_time_known:
        sample_time_known = _valid("sampled_at", node.sampled_at, (0.0, now + ABSURD_FUTURE_S),
                                   invalid) is not None
    found = [readings.problem(f) for f in invalid]
    if found:
        added += found
        health = worse(health, HostHealth.DEGRADED)
    expected = expected_chips if expected_chips is not None else node_expected
    present = len(node.chips) if chips_present is None else chips_present
    # Not when the agent named why it sees no chips (the driver): that problem says it already.
    if (expected is not None and present < expected
            and not _has_check(node, "chip_count") and not _has_check(node, "driver")):
        added.append(Problem("chip_count", Severity.CRITICAL,
                             f"{present} of {expected} chips present (inventory)", Action.REBOOT))
        health = worse(health, HostHealth.UNHEALTHY)
    elif expected is not None and present > expected and not _has_check(node, "chip_count"):
        # More chips than the inventory says is its own mistake, not a fault of the host.
        added.append(Problem("chip_count", Severity.INFO,
                             f"{present} chips present, {expected} expected (inventory): update "
                             "fleet_agent_expected_chips", Action.CHECK_CONFIGURATION))
    age: float | None = None
    if not sample_time_known:
        added.append(Problem("sample_age", Severity.WARNING,
                             "no usable fleet_sample_timestamp_seconds: the sample's age is unknown",
                             Action.RESTART_AGENT))
        health = worse(health, HostHealth.UNKNOWN)
    else:
        age, health = _sample_age(node, now, interval or 0.0, own_age, duration, uncertainty_s, added, health)
    for p in also:
        added.append(p)
        health = worse(health, HostHealth.UNKNOWN)
    return HostVerdict(health, tuple(added), age, chips, node.sampled_at if sample_time_known else None,
                       expected)


def _sample_age(node: NodeReport, now: float, interval: float, own_age: float | None,
                duration: float | None, uncertainty_s: float, added: list[Problem],
                health: HostHealth) -> tuple[float | None, HostHealth]:
    """The sample's age, with the sample_age and clock_skew problems it implies (appended to ``added``)."""
    wall_age = now - node.sampled_at
    tolerance = SKEW_TOLERANCE_S + max(0.0, uncertainty_s)
    threshold = max(STALE_INTERVALS * interval, STALE_MIN_S)
    if own_age is not None:
        age = own_age + (duration or 0.0)
        skew = wall_age - age  # positive: the agent's clock is behind the controller's
        if abs(skew) > tolerance:
            side = "behind" if skew > 0 else "ahead of"
            added.append(Problem(
                "clock_skew", Severity.WARNING,
                f"the agent's clock is {abs(skew):.0f}s {side} this machine's (the sample's own age is "
                f"{age:.0f}s): check time sync on both (chronyc tracking)", Action.CHECK_CONFIGURATION))
            health = worse(health, HostHealth.DEGRADED)
        if age > threshold:
            added.append(Problem("sample_age", Severity.WARNING,
                                 f"latest sample is {age:.0f}s old (interval {interval:g}s, the agent's "
                                 "own clock)", Action.RESTART_AGENT))
            health = worse(health, HostHealth.UNKNOWN)
        return age, health
    if wall_age < -tolerance:
        added.append(Problem(
            "clock_skew", Severity.WARNING,
            f"sample stamped {-wall_age:.0f}s in the future: the agent's clock is ahead of this machine's, "
            "so the sample's age is unknown: check time sync on both (chronyc tracking)",
            Action.CHECK_CONFIGURATION))
        return None, worse(health, HostHealth.UNKNOWN)
    age = max(0.0, wall_age)
    if age > threshold:
        added.append(Problem("sample_age", Severity.WARNING,
                             f"latest sample is {age:.0f}s old by this machine's clock (interval "
                             f"{interval:g}s): a stuck sampling loop, or the agent's clock is behind",
                             Action.RESTART_AGENT))
        health = worse(health, HostHealth.UNKNOWN)
    return age, health


def _valid(name: str, value: float | None, bounds: tuple[float, float],
           invalid: list[readings.Invalid]) -> float | None:
    """``value`` when it is None or possible; else None, and the impossible value noted."""
    if value is None or bounds[0] <= value <= bounds[1]:  # NaN compares false
        return value
    from fleet_agent.health.checks import readings

    invalid.append(readings.Invalid(name, value, *bounds))
    return None


def _judged_chip(chip: ChipReport, node_sampled_at: float) -> ChipReport:
    """``chip`` itself, or a copy without its impossible values and with a problem naming each."""
    from fleet_agent.health.checks import readings

    found = [f for f in readings.chip_invalid(chip, node_sampled_at, details=False)
             if f.field in readings.SHOWN_FIELDS]
    if not found:
        return chip
    new = [p for p in map(readings.problem, found) if p not in chip.problems]
    # Only the chip's own shown fields: the GPU's and TPU's are the agent's to judge (details=False).
    blank: dict[str, Any] = {f.field: None for f in found}
    problems = sort_problems([*chip.problems, *new])
    status = Status.worst([chip.status, problems_status(new)])
    return replace(chip, **blank, problems=problems, status=status)


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
