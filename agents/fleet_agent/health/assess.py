"""Run the enabled checks over a node report and derive chip and node status from the problems.

Rules: a chip's status is the worst severity among its problems (warning -> degraded,
critical -> unhealthy, info leaves it healthy); a chip whose reading is stale or failed and that
has no critical problem is ``unknown``; the node's status is the worst of its chips and its own
(node-level) problems. Problems are ordered worst first, then by check name, keeping each check's
own order (XIDs by code), so the same state always renders the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

from fleet_agent.health import checks
from fleet_agent.health.checks import stale
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, NodeReport, Problem, Severity, Status

log = logging.getLogger(__name__)

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

T = TypeVar("T")


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """Worst severity first, then check name; a stable sort keeps each check's own order."""
    return sorted(problems, key=lambda p: (-_SEVERITY_RANK[p.severity], p.check))


def assess(report: NodeReport, cfg: HealthConfig, now: float) -> NodeReport:
    """Fill ``problems`` and ``status`` of every chip and of the node; returns ``report``."""
    # Resolve "3 x the interval" once, so the stale check sees a number.
    cfg = dataclasses.replace(cfg, stale_after_s=cfg.stale_threshold_s(report.interval_s))
    for chip in report.chips:
        found: list[Problem] = []
        for name, chip_check in checks.CHIP_CHECKS.items():
            if name not in cfg.disabled_checks:
                found += _run(name, chip_check, chip, cfg, now)
        chip.problems = sort_problems(found)
        unseen = chip.stale or chip.error is not None or any(p.check == stale.NAME for p in found)
        chip.status = _status(chip.problems, unseen=unseen)
    node_found: list[Problem] = []
    for name, node_check in checks.NODE_CHECKS.items():
        if name not in cfg.disabled_checks:
            node_found += _run(name, node_check, report, cfg, now)
    report.problems = sort_problems(node_found)
    report.status = Status.worst([c.status for c in report.chips]
                                 + [_status(report.problems, unseen=False)])
    return report


def _status(problems: list[Problem], *, unseen: bool) -> Status:
    status = Status.worst([p.severity.status() for p in problems])
    if unseen and status is not Status.UNHEALTHY:
        return Status.UNKNOWN
    return status


def _run(name: str, check: Callable[[T, HealthConfig, float], list[Problem]], subject: T,
         cfg: HealthConfig, now: float) -> list[Problem]:
    try:
        return check(subject, cfg, now)
    # A bug in one check must not stop the others nor the agent; it shows up as a problem.
    except Exception as exc:
        log.exception("health check %s failed", name)
        return [Problem(name, Severity.WARNING, f"health check failed: {type(exc).__name__}: {exc}",
                        Action.MONITOR)]
