"""XID events inside the window, judged by the code table (fleet_agent.health.xid_codes).

The XID source keeps per-code counts over HealthConfig.xid_window_s, so an XID counts for as long
as it is inside that window and clears by itself afterwards: one problem per code seen.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.health.units import duration
from fleet_agent.health.xid_codes import xid_info
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "xid"


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if chip.gpu is None:
        return []
    window = duration(cfg.xid_window_s)
    found: list[tuple[int, Problem]] = []
    for key, count in chip.gpu.xid_counts.items():
        if count <= 0:
            continue
        try:
            code = int(key)
        except ValueError:
            found.append((-1, Problem(NAME, Severity.WARNING,
                                      f"XID source reported a code that is not a number: {key!r}",
                                      Action.MONITOR)))
            continue
        info = xid_info(code, cfg.xid_severity_overrides)
        found.append((code, Problem(
            check=NAME,
            severity=info.severity,
            message=f"XID {code} x{count} in the last {window}: {info.meaning}",
            action=info.action,
        )))
    return [problem for _, problem in sorted(found, key=lambda item: item[0])]
