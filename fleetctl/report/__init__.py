"""The fleet report: :mod:`~fleetctl.report.model` (rows, summary, JSON; re-exported here) and
:mod:`~fleetctl.report.build` (rows from node reports, from the fan-out or from Prometheus; import it
from there: it brings the fan-out client with it)."""

from fleet_agent.verdict import HOST_HEALTH_ORDER, HostHealth

from fleetctl.report.model import (
    CHIP_STATES,
    REPORT_SCHEMA,
    SORT_KEYS,
    FleetReport,
    HostRow,
    ProblemRow,
    Summary,
    group_value,
    problem_row,
    sort_key,
    sort_problem_rows,
    summarize,
)

__all__ = [
    "CHIP_STATES",
    "HOST_HEALTH_ORDER",
    "REPORT_SCHEMA",
    "SORT_KEYS",
    "FleetReport",
    "HostHealth",
    "HostRow",
    "ProblemRow",
    "Summary",
    "group_value",
    "problem_row",
    "sort_key",
    "sort_problem_rows",
    "summarize",
]
