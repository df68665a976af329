"""Stale or failed readings: the chip's state is not known, so its status is ``unknown``.

A reading is stale when the sampler marked it so (a collector call hung past its deadline) or
when it is older than HealthConfig.stale_after_s; a collector error on the chip (other than the
chip being lost, which is gpu_lost's) also leaves the state unknown. ``assess`` turns these into
status ``unknown`` unless another check found the chip unhealthy.
"""

from __future__ import annotations

from fleet_agent.health.checks.gpu_lost import is_lost_message
from fleet_agent.health.config import HealthConfig
from fleet_agent.health.units import duration
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "stale"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if is_lost_message(chip.error):
        return []  # gpu_lost reports it, as critical; "no fresh reading" would only add noise
    age = None if chip.sampled_at is None else now - chip.sampled_at
    if age is not None and age < 0:
        age = None  # stamped after this sample began: no age to tell (the sampler's stamps never are)
    too_old = age is not None and cfg.stale_after_s is not None and age > cfg.stale_after_s
    error = chip.error
    if chip.stale or too_old:
        since = f" for {duration(age)}" if age is not None else ""
        why = f" ({error})" if error else ""
        return [Problem(
            NAME, Severity.WARNING,
            f"no fresh reading{since}{why}: a collector call hung or keeps failing; if it persists, "
            "check the driver (nvidia-smi) and reset the chip",
            Action.MONITOR)]
    if error:
        return [Problem(NAME, Severity.WARNING, f"reading failed: {error}", Action.MONITOR)]
    return []
