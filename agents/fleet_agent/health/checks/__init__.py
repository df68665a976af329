"""The health checks, one per module; each module has ``NAME`` and ``check`` (per chip) or
``check_node`` (per node). The registries below are what ``assess`` runs, in this order."""

from __future__ import annotations

from collections.abc import Callable

from fleet_agent.health.checks import (
    chip_count,
    collector,
    driver,
    ecc_uncorrectable,
    gpu_lost,
    nvlink,
    pcie_link,
    readings,
    retired_pages,
    row_remap,
    stale,
    temperature,
    throttle,
    xid,
)
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import ChipReport, NodeReport, Problem

ChipCheck = Callable[[ChipReport, HealthConfig, float], list[Problem]]
NodeCheck = Callable[[NodeReport, HealthConfig, float], list[Problem]]

CHIP_CHECKS: dict[str, ChipCheck] = {
    module.NAME: module.check
    for module in (gpu_lost, xid, ecc_uncorrectable, row_remap, retired_pages, temperature,
                   throttle, pcie_link, nvlink, stale, readings)
}
NODE_CHECKS: dict[str, NodeCheck] = {
    module.NAME: module.check_node for module in (chip_count, collector, driver, readings)
}
CHECK_NAMES: frozenset[str] = frozenset(CHIP_CHECKS) | frozenset(NODE_CHECKS)
