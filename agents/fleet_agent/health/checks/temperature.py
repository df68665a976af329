"""Core temperature against the chip's own slowdown and shutdown thresholds; HBM temperature.

At the slowdown threshold the hardware cuts clocks hard and the shutdown threshold is a few
degrees away, so reaching either is unhealthy; within ``temperature_margin_c`` below slowdown is
degraded (the cooling has no headroom left). A chip that reports no thresholds (TPUs, GPUs where
NVML says NotSupported) is judged against HealthConfig's per-kind defaults.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.health.units import temp
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "temperature"


def thresholds(chip: ChipReport, cfg: HealthConfig) -> tuple[float | None, float | None]:
    """(slowdown, shutdown) in C: the chip's own where it reports them, else the kind's default."""
    slowdown = chip.gpu.slowdown_temp_c if chip.gpu is not None else None
    shutdown = chip.gpu.shutdown_temp_c if chip.gpu is not None else None
    if slowdown is None:
        slowdown = cfg.default_slowdown_temp_c.get(chip.kind)
    if shutdown is None:
        shutdown = cfg.default_shutdown_temp_c.get(chip.kind)
    return slowdown, shutdown


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    problems = []
    core = chip.temperature_c
    if core is not None:
        problem = _core(core, *thresholds(chip, cfg), cfg.temperature_margin_c)
        if problem is not None:
            problems.append(problem)
    hbm = chip.memory_temperature_c
    if hbm is not None and hbm >= cfg.memory_temperature_max_c:
        problems.append(Problem(
            NAME, Severity.WARNING,
            f"memory at {temp(hbm)}, at or above its {temp(cfg.memory_temperature_max_c)} limit",
            Action.CHECK_COOLING))
    return problems


def _core(core: float, slowdown: float | None, shutdown: float | None,
          margin: float) -> Problem | None:
    if shutdown is not None and core >= shutdown:
        return Problem(NAME, Severity.CRITICAL,
                       f"core at {temp(core)}, at or above the {temp(shutdown)} shutdown threshold",
                       Action.CHECK_COOLING)
    if slowdown is not None and core >= slowdown:
        return Problem(NAME, Severity.CRITICAL,
                       f"core at {temp(core)}, at or above the {temp(slowdown)} slowdown threshold",
                       Action.CHECK_COOLING)
    # Without a slowdown threshold, the margin is kept below shutdown instead.
    limit, what = (slowdown, "slowdown") if slowdown is not None else (shutdown, "shutdown")
    if limit is not None and core >= limit - margin:
        return Problem(NAME, Severity.WARNING,
                       f"core at {temp(core)}, within {temp(margin)} of the {temp(limit)} {what} "
                       "threshold",
                       Action.CHECK_COOLING)
    return None
