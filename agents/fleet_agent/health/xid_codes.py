"""NVIDIA XID codes: how bad each is and what on-call should do.

Wording is ours, from NVIDIA's XID documentation (the Xid catalog and the GPU debug guidelines,
docs.nvidia.com/deploy/xid-errors). The severity rule: ``critical`` when the chip should take no
new work until it has been reset, rebooted or replaced; ``warning`` when the event is usually the
application's fault or the chip keeps working but needs a look; ``info`` when the code only
echoes an earlier error. Sites can override a code's severity (HealthConfig.xid_severity_overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleet_agent.schema import Action, Severity


@dataclass(frozen=True)
class XidInfo:
    severity: Severity
    meaning: str
    action: Action


_C, _W, _I = Severity.CRITICAL, Severity.WARNING, Severity.INFO

XID_TABLE: dict[int, XidInfo] = {
    13: XidInfo(_W, "graphics engine exception (usually an illegal instruction or address in the "
                    "application)", Action.CHECK_APPLICATION),
    31: XidInfo(_W, "GPU memory page fault (usually an illegal memory access by the application)",
                Action.CHECK_APPLICATION),
    32: XidInfo(_W, "invalid or corrupted push buffer stream (driver, PCIe or system memory)",
                Action.MONITOR),
    38: XidInfo(_W, "driver firmware error", Action.RESET_CHIP),
    43: XidInfo(_W, "GPU stopped processing the application's channel (usually the application)",
                Action.CHECK_APPLICATION),
    45: XidInfo(_I, "channel cleaned up after an earlier error or an application being stopped",
                Action.NONE),
    48: XidInfo(_C, "double-bit (uncorrectable) ECC error", Action.RESET_CHIP),
    56: XidInfo(_W, "display engine error", Action.MONITOR),
    57: XidInfo(_W, "error programming the video memory interface", Action.RESET_CHIP),
    58: XidInfo(_W, "unstable video memory interface detected", Action.RESET_CHIP),
    61: XidInfo(_W, "internal micro-controller breakpoint or warning", Action.RESET_CHIP),
    62: XidInfo(_C, "internal micro-controller halted", Action.RESET_CHIP),
    63: XidInfo(_W, "ECC page retirement or row remapping recorded; takes effect after a reset",
                Action.RESET_CHIP),
    64: XidInfo(_C, "ECC page retirement or row remapping failed to record (RMA if it recurs "
                    "after a reset)", Action.RESET_CHIP),
    68: XidInfo(_W, "video decoder (NVDEC) exception", Action.CHECK_APPLICATION),
    69: XidInfo(_W, "graphics engine class error", Action.CHECK_APPLICATION),
    74: XidInfo(_C, "NVLink error (link needs retraining; check the fabric if it recurs)",
                Action.RESET_CHIP),
    79: XidInfo(_C, "GPU has fallen off the bus", Action.REBOOT),
    92: XidInfo(_W, "high single-bit ECC error rate", Action.MONITOR),
    94: XidInfo(_W, "contained ECC error: the affected application was stopped, a reset remaps "
                    "the row", Action.RESET_CHIP),
    95: XidInfo(_C, "uncontained ECC error: every application on the GPU is affected",
                Action.RESET_CHIP),
    109: XidInfo(_W, "context switch timeout", Action.CHECK_APPLICATION),
    110: XidInfo(_C, "security fault", Action.REBOOT),
    119: XidInfo(_C, "GSP firmware RPC timeout", Action.REBOOT),
    120: XidInfo(_C, "GSP firmware error", Action.REBOOT),
    121: XidInfo(_W, "corrected errors on the C2C link to the CPU; a reset retrains it",
                 Action.RESET_CHIP),
    122: XidInfo(_W, "SPI PMU RPC read failure", Action.RESET_CHIP),
    123: XidInfo(_W, "SPI PMU RPC write failure", Action.RESET_CHIP),
    140: XidInfo(_C, "unrecovered ECC error", Action.RESET_CHIP),
    143: XidInfo(_C, "GPU firmware failed to initialise (RMA if it recurs after a power cycle)",
                 Action.REBOOT),
    154: XidInfo(_C, "the driver asks for a recovery action (GPU reset or node reboot, see the "
                     "kernel log)", Action.REBOOT),
}

# XID 79 means the same as NVML's GpuIsLost: the gpu_lost check keys on both.
XID_GPU_LOST = 79


def xid_info(code: int, overrides: Mapping[int, Severity] | None = None) -> XidInfo:
    """The table entry for ``code``; an unknown code is a warning to look up by hand."""
    info = XID_TABLE.get(code) or XidInfo(Severity.WARNING, f"unknown XID {code}", Action.MONITOR)
    if overrides and code in overrides:
        info = XidInfo(overrides[code], info.meaning, info.action)
    return info


def critical_codes() -> list[int]:
    """Codes the built-in table rates critical (the alert rules' fatal-XID set)."""
    return sorted(code for code, info in XID_TABLE.items() if info.severity is Severity.CRITICAL)
