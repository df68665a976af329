"""Chips present against chips expected (node-level).

A missing GPU has usually fallen off the bus before the driver loaded or failed to initialise:
the host runs with less capacity than the scheduler thinks. Reboot; RMA if it stays missing.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, NodeReport, Problem, Severity

NAME = "chip_count"


def check_node(report: NodeReport, cfg: HealthConfig, now: float) -> list[Problem]:
    expected = cfg.expected_chips if cfg.expected_chips is not None else report.chips_expected
    if expected is None:
        return []
    present = len(report.chips)
    if present < expected:
        return [Problem(NAME, Severity.CRITICAL,
                        f"{present} of {expected} expected chips present: reboot, investigate the "
                        "missing ones (PCIe, power, RMA)",
                        Action.REBOOT)]
    if present > expected:
        return [Problem(NAME, Severity.INFO,
                        f"{present} chips present, {expected} expected: update expected_chips",
                        Action.NONE)]
    return []
