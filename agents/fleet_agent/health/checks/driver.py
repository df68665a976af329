"""The NVIDIA driver (node-level): missing, installed but not loaded, or not matching its library; or
the agent without the NVML bindings.

These are named problems, not the generic "collector failed" warning: each has its own cause and fix.
A driver that cannot serve NVML leaves the GPUs unable to run work, which is critical. Bindings
missing from the agent's environment are a deploy fault of the agent, not of the host: a warning, and
the node stays "could not tell" (a bad agent package rolled out everywhere must not drain the fleet).

The cause is read from the NVML collector's error (fleet_agent.collectors.nvml words it; NVML's own
texts are recognised too, for reports from agents that only pass them on).
"""

from __future__ import annotations

import re

from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, CollectorState, NodeReport, Problem, Severity

NAME = "driver"

# (cause, pattern over the collector's error, severity, message, action); the first match wins.
_CAUSES: tuple[tuple[str, re.Pattern[str], Severity, str, Action], ...] = (
    ("bindings", re.compile(r"NVML bindings not installed|nvidia-ml-py is not installed", re.I),
     Severity.WARNING,
     "NVML bindings not installed: the agent's environment lacks nvidia-ml-py, so it cannot see the "
     "GPUs; reinstall the agent with its nvml extra (pip install 'fleetctl-agent[nvml]', or the "
     "fleet_agent role on a GPU host)",
     Action.UPDATE_SOFTWARE),
    ("missing", re.compile(r"NVML (shared )?library not found", re.I),
     Severity.CRITICAL,
     "NVML library not found: the NVIDIA driver is not installed (or libnvidia-ml.so.1 is not on the "
     "library path), so the GPUs cannot run work; install the driver",
     Action.UPDATE_SOFTWARE),
    ("mismatch", re.compile(r"version mismatch", re.I),
     Severity.CRITICAL,
     "NVIDIA driver/library version mismatch: the kernel module still running is older or newer than "
     "the installed library (a driver updated without a reboot), so no new GPU work can start; reboot "
     "to load the installed driver",
     Action.REBOOT),
    ("not_loaded", re.compile(r"driver not loaded|kernel module (is )?not (loaded|running)", re.I),
     Severity.CRITICAL,
     "NVIDIA driver not loaded: its library is installed but its kernel module is not running (a "
     "driver installed since boot, or a module that failed to load), so the GPUs cannot run work; "
     "reboot to load it, and if it still does not load, reinstall the driver for the running kernel",
     Action.REBOOT),
)


def driver_cause(error: str | None) -> str | None:
    """The driver state a collector error means (``missing``, ``not_loaded``, ``mismatch``,
    ``bindings``), or None for any other failure."""
    if not error:
        return None
    return next((cause for cause, pattern, *_ in _CAUSES if pattern.search(error)), None)


# The collector ends its message with NVML's own words: "... (NVML: Driver Not Loaded)".
_NVML_SAID = re.compile(r"\(NVML: (.+)\)\s*$")


def covers(state: CollectorState) -> bool:
    """Whether this check reports ``state`` (a failed NVML collector whose error names the driver)."""
    return state.name == "nvml" and not state.ok and driver_cause(state.error) is not None


def check_node(report: NodeReport, cfg: HealthConfig, now: float) -> list[Problem]:
    problems = []
    for c in report.collectors:
        if not covers(c) or not c.error:
            continue
        for cause, pattern, severity, message, action in _CAUSES:
            if pattern.search(c.error):
                said = _NVML_SAID.search(c.error)
                detail = (f" (NVML: {said.group(1)})" if said
                          else "" if cause == "bindings" else f" ({c.error})")
                problems.append(Problem(NAME, severity, message + detail, action))
                break
    return problems
