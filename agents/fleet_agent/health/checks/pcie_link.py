"""PCIe link below its maximum.

Rule: a link *narrower* than its maximum (x8 of x16) always counts: power saving never changes
the width, a bad slot, riser or seating does. A *lower generation* counts only while the chip is
busy (utilisation >= HealthConfig.pcie_gen_min_utilization_pct): GPUs drop to gen 1 at idle to
save power and climb back under load, so an idle GPU at gen 1 is normal. Both are degraded: the
chip works, more slowly; a reboot retrains the link, a link that stays down needs reseating.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "pcie_link"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    gpu = chip.gpu
    if gpu is None:
        return []
    problems = []
    width, width_max = gpu.pcie_link_width, gpu.pcie_link_width_max
    if cfg.pcie_check_width and width is not None and width_max is not None and width < width_max:
        problems.append(Problem(NAME, Severity.WARNING,
                                f"PCIe link is x{width} of x{width_max}: reseat or check the slot",
                                Action.REBOOT))
    gen, gen_max = gpu.pcie_link_gen, gpu.pcie_link_gen_max
    busy = chip.utilization_pct
    if (gen is not None and gen_max is not None and gen < gen_max
            and busy is not None and busy >= cfg.pcie_gen_min_utilization_pct):
        problems.append(Problem(NAME, Severity.WARNING,
                                f"PCIe link at gen {gen} of gen {gen_max} while {busy:g}% busy",
                                Action.REBOOT))
    return problems
