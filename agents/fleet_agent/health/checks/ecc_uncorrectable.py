"""Uncorrectable (double-bit) ECC errors since the driver loaded (NVML's volatile counter).

Data on the chip may be corrupt. NVIDIA's memory-error guidance: on GPUs with row remapping
(A100 and later) the bad row is marked for remapping and the remap takes effect at the next GPU
reset; older GPUs retire the page at the next driver reload. Either way: drain, then reset. A
failed remap is the row_remap check's business (RMA).
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "ecc_uncorrectable"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if chip.gpu is None or chip.gpu.ecc_volatile_uncorrected is None:
        return []
    count = chip.gpu.ecc_volatile_uncorrected
    if count <= cfg.ecc_volatile_uncorrected_max:
        return []
    return [Problem(
        check=NAME,
        severity=Severity.CRITICAL,
        message=f"{count} uncorrectable ECC error(s) since the driver loaded: drain and reset the "
        "GPU so the bad memory is remapped or retired",
        action=Action.RESET_CHIP,
    )]
