"""Collectors that failed on their last run (node-level), or work only in part.

Without this a host whose chip source failed would list no chips and look healthy whenever
expected_chips is unset. Degraded, not unhealthy: the agent cannot see the chips, which is not
proof of a fault. A failure that names the NVIDIA driver's state (missing, not loaded, mismatched,
bindings missing) is the driver check's, with its own action; it is said here only while that check
is disabled. (A TPU runtime metrics service that is silent because no workload runs is not a
collector failure; the TPU collector reports it as ok.)
"""

from __future__ import annotations

from fleet_agent.health.checks import driver
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, NodeReport, Problem, Severity

NAME = "collector"


def check_node(report: NodeReport, cfg: HealthConfig, now: float) -> list[Problem]:
    named = driver.NAME not in cfg.disabled_checks
    # An ok collector with an error is working in part (its XID sources, say): a blind spot.
    return [
        Problem(NAME, Severity.WARNING,
                f"collector {c.name} failed: {c.error or 'no reason given'}" if not c.ok
                else f"collector {c.name} in part: {c.error}",
                Action.MONITOR)
        for c in sorted(report.collectors, key=lambda c: c.name)
        if (not c.ok or c.error) and not (named and driver.covers(c))
    ]
