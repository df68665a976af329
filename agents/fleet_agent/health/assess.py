"""Run the enabled checks over a node report; the statuses they imply come from
:mod:`fleet_agent.verdict`, the one place that decides health."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeVar

from fleet_agent.health import checks
from fleet_agent.health.checks import stale
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, NodeReport, Problem, Severity
from fleet_agent.verdict import chip_status, node_status, sort_problems

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        chip.status = chip_status(chip.problems, unseen=unseen)
    node_found: list[Problem] = []
    for name, node_check in checks.NODE_CHECKS.items():
        if name not in cfg.disabled_checks:
            node_found += _run(name, node_check, report, cfg, now)
    report.problems = sort_problems(node_found)
    # A chip source we cannot read says nothing about the chips behind it.
    unreadable = any(not s.ok for s in report.collectors if s.name != "host")
    report.status = node_status(report.chips, report.problems, sources_unreadable=unreadable)
    return report


def _run(name: str, check: Callable[[T, HealthConfig, float], list[Problem]], subject: T,
         cfg: HealthConfig, now: float) -> list[Problem]:
    try:
        return check(subject, cfg, now)
    # A bug in one check must not stop the others nor the agent; it shows up as a problem.
    except Exception as exc:
        log.exception("health check %s failed", name)
        return [Problem(name, Severity.WARNING, f"health check failed: {type(exc).__name__}: {exc}",
                        Action.MONITOR)]
