"""Dynamic page retirement (GPUs before A100): pages marked bad are retired at the next reset."""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "retired_pages"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if chip.gpu is None or not chip.gpu.retired_pages_pending:
        return []
    return [Problem(NAME, Severity.WARNING,
                    "memory pages pending retirement: reset the GPU (or reload the driver) to retire them",
                    Action.RESET_CHIP)]
