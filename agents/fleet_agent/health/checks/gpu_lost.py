"""GPU lost: NVML says the GPU is lost, or the driver logged XID 79 (fallen off the bus).

Such a GPU answers no calls and runs nothing; a GPU reset rarely brings it back, a reboot
usually does, and one that keeps falling off needs its slot, riser or power checked (or RMA).
"""

from __future__ import annotations

import re

from fleet_agent.health.config import HealthConfig
from fleet_agent.health.units import duration
from fleet_agent.health.xid_codes import XID_GPU_LOST
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "gpu_lost"

# NVML's text for NVML_ERROR_GPU_IS_LOST is "GPU is lost"; the kernel says "fallen off the bus".
_LOST = re.compile(r"gpu\s*is\s*lost|gpu lost|fallen off the bus|fell off the bus", re.IGNORECASE)


def is_lost_message(text: str | None) -> bool:
    """Whether a collector error says the chip is gone (rather than a call merely failing)."""
    return text is not None and _LOST.search(text) is not None


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    evidence = []
    if is_lost_message(chip.error):
        evidence.append(str(chip.error))
    xid79 = chip.gpu.xid_counts.get(str(XID_GPU_LOST), 0) if chip.gpu is not None else 0
    if xid79 > 0:
        evidence.append(f"XID {XID_GPU_LOST} x{xid79} in the last {duration(cfg.xid_window_s)}")
    if not evidence:
        return []
    return [Problem(
        check=NAME,
        severity=Severity.CRITICAL,
        message=f"GPU fell off the bus ({'; '.join(evidence)}): reboot (a GPU reset rarely "
        "recovers it); RMA if it recurs",
        action=Action.REBOOT,
    )]
