"""Health rules: one check per module (``checks/``), thresholds in :class:`HealthConfig`, and
:func:`assess`, which turns a sampled node report into chip and node status with problems."""

from fleet_agent.health.assess import assess
from fleet_agent.health.checks import CHECK_NAMES, CHIP_CHECKS, NODE_CHECKS
from fleet_agent.health.config import HealthConfig, health_config_from_dict
from fleet_agent.health.xid_codes import XID_TABLE, XidInfo, xid_info

__all__ = [
    "CHECK_NAMES",
    "CHIP_CHECKS",
    "NODE_CHECKS",
    "XID_TABLE",
    "HealthConfig",
    "XidInfo",
    "assess",
    "health_config_from_dict",
    "xid_info",
]
