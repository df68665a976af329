"""NVLink links down: some down is degraded (less bandwidth, collectives slow down), all down is
unhealthy (peer-to-peer traffic falls back to PCIe or fails; often Fabric Manager or the switch
tray). A GPU reset retrains a link; a link that stays down needs the fabric checked."""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "nvlink"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    gpu = chip.gpu
    if gpu is None or gpu.nvlink_links_up is None or not gpu.nvlink_links_total:
        return []
    up, total = gpu.nvlink_links_up, gpu.nvlink_links_total
    if up >= total:
        return []
    if up == 0:
        return [Problem(NAME, Severity.CRITICAL, f"all {total} NVLink links down", Action.REBOOT)]
    return [Problem(NAME, Severity.WARNING, f"{total - up} of {total} NVLink links down",
                    Action.RESET_CHIP)]
