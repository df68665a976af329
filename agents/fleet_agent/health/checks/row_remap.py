"""Row remapping (A100 and later): a failed remap means the chip has no spare rows left.

``row_remap_failure`` -> unhealthy, replace the GPU (RMA). ``row_remap_pending`` -> degraded: a
remap is recorded but only applied at the next GPU reset, until then the bad row is still used.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "row_remap"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    gpu = chip.gpu
    if gpu is None:
        return []
    if gpu.row_remap_failure:
        # A pending remap no longer matters when the chip is to be replaced.
        return [Problem(NAME, Severity.CRITICAL,
                        "row remapping failed: the GPU has run out of spare memory rows; replace it",
                        Action.RMA)]
    if gpu.row_remap_pending:
        return [Problem(NAME, Severity.WARNING,
                        "row remapping pending: reset the GPU to apply it",
                        Action.RESET_CHIP)]
    return []
