"""XIDs that still count, judged by the code table (fleet_agent.health.xid_codes).

The XID source keeps each XID for as long as the table says it matters: most for HealthConfig.
xid_window_s; one whose resolution is a GPU reset until the chip was reset, one that needs a
reboot until the host rebooted. A key may carry what the message said (``"154:node_reboot"``,
``"145:fatal"``), which the table turns into the verdict: one problem per key.
"""

from __future__ import annotations

from fleet_agent.health.config import HealthConfig
from fleet_agent.health.units import duration
from fleet_agent.health.xid_codes import split_key, xid_info
from fleet_agent.schema import Action, ChipReport, Problem, Severity

NAME = "xid"

_SINCE = {"reset": "since the GPU was last reset", "reboot": "since the host booted"}


def check(chip: ChipReport, cfg: HealthConfig, now: float) -> list[Problem]:
    if chip.gpu is None:
        return []
    window = f"in the last {duration(cfg.xid_window_s)}"
    found: list[tuple[tuple[int, str], Problem]] = []
    for key, count in chip.gpu.xid_counts.items():
        if count <= 0:
            continue
        parsed = split_key(key)
        if parsed is None:
            found.append(((-1, key), Problem(NAME, Severity.WARNING,
                                             f"XID source reported a code that is not a number: {key!r}",
                                             Action.MONITOR)))
            continue
        code, qualifier = parsed
        info = xid_info(code, cfg.xid_severity_overrides, qualifier)
        found.append(((code, qualifier or ""), Problem(
            check=NAME,
            severity=info.severity,
            message=f"XID {code} x{count} {_SINCE.get(info.clears, window)}: {info.meaning}",
            action=info.action,
        )))
    return [problem for _, problem in sorted(found, key=lambda item: item[0])]
