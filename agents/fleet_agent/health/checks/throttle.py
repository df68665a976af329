"""Clock throttling, by reason; HealthConfig.throttle_reasons says which reasons count and how much.

By default hardware slowdown, hardware thermal, power brake and software thermal slowdown are
degraded (cooling or power delivery is failing the chip); the software power cap is info only,
since a busy GPU sits at its power limit by design.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "throttle"

_SEVERITY_ORDER = (Severity.CRITICAL, Severity.WARNING, Severity.INFO)


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if chip.gpu is None:
        return []
    by_severity: dict[Severity, list[str]] = {}
    for reason in sorted(set(chip.gpu.throttle_reasons)):
        severity = cfg.throttle_reasons.get(reason)
        if severity is not None:
            by_severity.setdefault(severity, []).append(reason)
    problems = []
    for severity in _SEVERITY_ORDER:
        reasons = by_severity.get(severity)
        if not reasons:
            continue
        if severity is Severity.INFO:
            message, action = "clocks limited by " + ", ".join(reasons), Action.NONE
        else:
            message = "clocks throttled by " + ", ".join(reasons) + ": check cooling and power delivery"
            action = Action.CHECK_COOLING
        problems.append(Problem(NAME, severity, message, action))
    return problems
