"""NVIDIA XID codes: how bad each is, what on-call should do, and what clears it.

Source: NVIDIA, "Analyzing Xid Errors with the Xid Catalog", GPU Deployment and Management
Documentation, https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html — the catalog
for Ampere and newer GPUs (A100, H100, B100, GB200) as published with driver R575 / CUDA 12.9
(its newest driver gate); read 2025. Each entry keeps the catalog's immediate-action resolution
bucket; the wording of the meanings is ours. Codes the catalog marks "Unused" on these GPUs are left
out, except those older GPUs still emit (their bucket there is CONTACT_SUPPORT).

Buckets become our schema's severity and action (BUCKETS below) and say what clears the error:
``window`` (it counts for the XID window, then ages out), ``reset`` (until the GPU was reset or the
host rebooted) or ``reboot`` (until the host rebooted). Two codes carry their verdict in the
message: XID 154 names the recovery the driver wants, XIDs 144-150 say Fatal or Nonfatal; the XID
source keys such an event as ``"<code>:<qualifier>"`` (``"154:node_reboot"``, ``"145:fatal"``).
Sites can override a code's severity (HealthConfig.xid_severity_overrides).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fleet_agent.schema import Action, Severity

Clears = Literal["window", "reset", "reboot"]


@dataclass(frozen=True)
class XidInfo:
    severity: Severity
    meaning: str
    action: Action
    bucket: str = "CONTACT_SUPPORT"
    clears: Clears = "window"


_C, _W, _I = Severity.CRITICAL, Severity.WARNING, Severity.INFO

# NVIDIA's bucket -> (severity, action, what clears it). CHECK_UVM has no action of its own: the UVM
# driver ships with the NVIDIA driver, so it shares UPDATE_SWFW's.
BUCKETS: dict[str, tuple[Severity, Action, Clears]] = {
    "RESTART_APP": (_W, Action.CHECK_APPLICATION, "window"),
    "IGNORE": (_I, Action.NONE, "window"),
    "WORKFLOW_XID_45": (_I, Action.NONE, "window"),  # follows another XID; solo: restart Fabric Manager
    "RESET_GPU": (_C, Action.RESET_CHIP, "reset"),
    "WORKFLOW_XID_48": (_C, Action.RESET_CHIP, "reset"),  # solo: reset; with 63/64: drain and reset
    "WORKFLOW_NVLINK_ERR": (_C, Action.RESET_CHIP, "reset"),
    "WORKFLOW_NVLINK5_ERR": (_W, Action.MONITOR, "window"),  # until the message says Fatal
    "RESTART_BM": (_C, Action.REBOOT, "reboot"),
    "RESTART_VM": (_C, Action.REBOOT, "reboot"),
    "XID_154": (_C, Action.RESET_CHIP, "reset"),  # until the message names the recovery
    "CHECK_MECHANICALS": (_W, Action.CHECK_HARDWARE, "window"),
    "UPDATE_SWFW": (_W, Action.UPDATE_SOFTWARE, "window"),
    "CHECK_UVM": (_W, Action.UPDATE_SOFTWARE, "window"),
    "CONTACT_SUPPORT": (_W, Action.CONTACT_SUPPORT, "window"),
}


def _x(bucket: str, meaning: str) -> XidInfo:
    severity, action, clears = BUCKETS[bucket]
    return XidInfo(severity, meaning, action, bucket, clears)


_APP_ENGINE = "engine exception, reported to the application"
XID_TABLE: dict[int, XidInfo] = {
    8: _x("RESTART_APP", "GPU stopped processing (channel idle timeout)"),
    11: _x("RESTART_APP", "invalid or corrupted push buffer stream"),
    13: _x("RESTART_APP", "graphics engine exception (usually an illegal instruction or address in "
                          "the application)"),
    14: _x("IGNORE", "fake or injected error"),
    25: _x("RESTART_APP", "invalid or illegal push buffer stream"),
    31: _x("RESTART_APP", "GPU memory page fault (usually an illegal memory access by the "
                          "application)"),
    32: _x("RESTART_APP", "invalid or corrupted push buffer stream (driver, PCIe or system memory)"),
    37: _x("IGNORE", "driver firmware error (unimplemented firmware method)"),
    38: _x("IGNORE", "driver firmware error (firmware watchdog timeout)"),
    39: _x("RESTART_APP", f"copy engine 0 {_APP_ENGINE}"),
    40: _x("RESTART_APP", f"copy engine 1 {_APP_ENGINE}"),
    41: _x("RESTART_APP", f"copy engine 2 {_APP_ENGINE}"),
    43: _x("IGNORE", "GPU stopped processing the application's channel after a software fault; "
                     "the GPU stays healthy"),
    44: _x("IGNORE", "graphics engine fault during a context switch"),
    45: _x("WORKFLOW_XID_45", "channel cleaned up after an earlier error or an application being "
                              "stopped (look for the XID before it)"),
    46: _x("RESET_GPU", "GPU stopped processing (GPU timeout)"),
    48: _x("WORKFLOW_XID_48", "double-bit (uncorrectable) ECC error (with XID 63 or 64: drain, then "
                              "reset)"),
    54: _x("CHECK_MECHANICALS", "auxiliary power is not connected to the GPU board (check its power "
                                "cables)"),
    56: _x("CONTACT_SUPPORT", "display engine error (older GPUs)"),
    57: _x("CONTACT_SUPPORT", "error programming the video memory interface (older GPUs)"),
    58: _x("CONTACT_SUPPORT", "unstable video memory interface detected (older GPUs)"),
    60: _x("RESTART_APP", "video processor exception"),
    61: _x("CONTACT_SUPPORT", "internal micro-controller breakpoint or warning (older GPUs)"),
    62: _x("RESET_GPU", "internal micro-controller halted"),
    63: _x("IGNORE", "ECC row remapping or page retirement recorded (the row_remap and "
                     "retired_pages checks judge what is pending)"),
    64: _x("RESET_GPU", "ECC row remapping or page retirement failed to record (RMA if it recurs "
                        "after a reset)"),
    66: _x("IGNORE", "illegal access by the driver (register access violation)"),
    67: _x("IGNORE", "illegal access by the driver (verification violation)"),
    68: _x("RESTART_APP", f"video decoder 0 {_APP_ENGINE}"),
    69: _x("RESTART_APP", "graphics engine class error"),
    70: _x("RESTART_APP", f"copy engine 3 {_APP_ENGINE}"),
    71: _x("RESTART_APP", f"copy engine 4 {_APP_ENGINE}"),
    72: _x("RESTART_APP", f"copy engine 5 {_APP_ENGINE}"),
    74: _x("WORKFLOW_NVLINK_ERR", "NVLink error (a reset retrains the link; check the fabric and the "
                                  "peer at its other end if it recurs)"),
    75: _x("RESTART_APP", f"copy engine 6 {_APP_ENGINE}"),
    76: _x("RESTART_APP", f"copy engine 7 {_APP_ENGINE}"),
    77: _x("RESTART_APP", f"copy engine 8 {_APP_ENGINE}"),
    78: _x("UPDATE_SWFW", "vGPU start error (update the driver or firmware)"),
    79: _x("RESTART_BM", "GPU has fallen off the bus"),
    80: _x("RESTART_APP", "corrupted data sent to the GPU"),
    82: _x("RESTART_APP", f"JPEG decoder 0 {_APP_ENGINE}"),
    83: _x("RESTART_APP", f"video decoder 1 {_APP_ENGINE}"),
    84: _x("RESTART_APP", f"video decoder 2 {_APP_ENGINE}"),
    85: _x("RESTART_APP", f"copy engine 9 {_APP_ENGINE}"),
    86: _x("RESTART_APP", f"optical flow accelerator {_APP_ENGINE}"),
    88: _x("RESTART_APP", f"video decoder 3 {_APP_ENGINE}"),
    89: _x("RESTART_APP", f"video decoder 4 {_APP_ENGINE}"),
    92: _x("IGNORE", "high single-bit ECC error rate (corrected)"),
    93: _x("IGNORE", "InfoROM wear limit reached (non-fatal)"),
    94: _x("RESTART_APP", "contained ECC error: the affected application was stopped; reset the GPU "
                         "when convenient"),
    95: _x("RESET_GPU", "uncontained ECC error: every application on the GPU is affected"),
    **{code: _x("RESTART_APP", f"video decoder {code - 91} {_APP_ENGINE}") for code in (96, 97, 98)},
    **{code: _x("RESTART_APP", f"JPEG decoder {code - 98} {_APP_ENGINE}") for code in range(99, 106)},
    106: _x("IGNORE", "SMBPBI test message"),
    107: _x("IGNORE", "SMBPBI test message (silent)"),
    108: _x("IGNORE", "NVLink remote translation error"),
    109: _x("RESET_GPU", "context switch timeout"),
    110: _x("RESET_GPU", "security fault (revert recent hardware changes; cold reset if a GPU reset "
                         "does not clear it)"),
    119: _x("RESET_GPU", "GSP firmware RPC timeout (power cycle if a reset does not clear it)"),
    120: _x("RESET_GPU", "GSP firmware error (power cycle if a reset does not clear it)"),
    121: _x("IGNORE", "corrected errors on the C2C link to the CPU; a reset at a service window "
                      "retrains it"),
    122: _x("CONTACT_SUPPORT", "SPI PMU RPC read failure (older GPUs)"),
    123: _x("CONTACT_SUPPORT", "SPI PMU RPC write failure (older GPUs)"),
    **{code: _x("RESTART_APP", f"copy engine {code - 116} {_APP_ENGINE}") for code in range(126, 136)},
    136: _x("RESET_GPU", "NVLink link training failed"),
    137: _x("IGNORE", "NVLink privilege error (an illegal peer-to-peer access, usually the "
                      "application)"),
    139: _x("RESTART_APP", f"optical flow accelerator 1 {_APP_ENGINE}"),
    140: _x("RESET_GPU", "unrecovered ECC error (the driver could not retire or remap the memory)"),
    141: _x("IGNORE", "CUDA fast path error"),
    142: _x("CONTACT_SUPPORT", "video encoder 3 error"),
    143: _x("RESET_GPU", "GPU firmware failed to initialise (RMA if it recurs after a power cycle)"),
    144: _x("WORKFLOW_NVLINK5_ERR", "NVLink SAW error"),
    145: _x("WORKFLOW_NVLINK5_ERR", "NVLink RLW error"),
    146: _x("WORKFLOW_NVLINK5_ERR", "NVLink TLW error"),
    147: _x("WORKFLOW_NVLINK5_ERR", "NVLink TREX error"),
    148: _x("WORKFLOW_NVLINK5_ERR", "NVLink NVLPW control error"),
    149: _x("WORKFLOW_NVLINK5_ERR", "NVLink NETIR error (link event)"),
    150: _x("WORKFLOW_NVLINK5_ERR", "NVLink MSE error"),
    151: _x("RESTART_VM", "key rotation error (confidential computing)"),
    152: _x("IGNORE", "DLA SMMU error"),
    153: _x("IGNORE", "DLA timeout"),
    154: _x("XID_154", "the driver asks for a recovery action (see the kernel log)"),
    155: _x("RESET_GPU", "NVLink link down by software (intentional, or a transition to sleep)"),
    156: _x("RESET_GPU", "resource retirement event: a reset applies it"),
    157: _x("IGNORE", "resource retirement failed: no spare resources left; the same XID may recur"),
    158: _x("RESET_GPU", "GPU fatal timeout"),
    159: _x("CHECK_UVM", "CHI non-data error on the C2C link (check the UVM driver)"),
    160: _x("IGNORE", "channel retirement event"),
    161: _x("IGNORE", "channel retirement failure"),
    # The catalog gives these no bucket yet: judged from its text.
    162: XidInfo(_I, "power smoothing circuitry re-engaged", Action.NONE, "NONE"),
    163: XidInfo(_W, "power smoothing circuitry disengaged (thermal events, or a timeout: reload "
                     "the driver or reset the GPU)", Action.MONITOR, "NONE"),
    164: XidInfo(_W, "power smoothing circuitry nearing the end of its lifetime", Action.MONITOR, "NONE"),
    165: XidInfo(_W, "power smoothing circuitry lifetime exhausted: power swings will occur",
                 Action.MONITOR, "NONE"),
    166: XidInfo(_W, "confidential computing traffic before the link was set up for encryption",
                 Action.MONITOR, "NONE"),
    167: XidInfo(_C, "PCIe fatal timeout", Action.RESET_CHIP, "NONE", "reset"),
    168: XidInfo(_W, "reduced GPU memory capacity: errors in the write-protected region (enable ECC)",
                 Action.MONITOR, "NONE"),
    169: XidInfo(_C, "internal micro-controller (SEC2) halted", Action.RESET_CHIP, "NONE", "reset"),
    170: XidInfo(_W, "interrupt seen in confidential computing mode", Action.MONITOR, "NONE"),
    171: XidInfo(_I, "uncorrectable DRAM error: detail of the XID 48 it comes with", Action.NONE, "NONE"),
    172: XidInfo(_I, "uncorrectable SRAM error: detail of the XID 48 it comes with (check the SRAM "
                     "threshold flag)", Action.NONE, "NONE"),
}

# XID 79 means the same as NVML's GpuIsLost: the gpu_lost check keys on both.
XID_GPU_LOST = 79
XID_RECOVERY = 154
NVLINK5_CODES = frozenset(range(144, 151))

# XID 154's recovery actions, by NVML's nvmlDeviceGpuRecoveryAction_t value (the number the kernel
# log prints as "0x2 (Node Reboot Required)"): our key qualifier and how it is judged.
RECOVERY_ACTIONS: dict[int, tuple[str, Severity, Action, Clears]] = {
    0: ("none", _I, Action.NONE, "window"),
    1: ("gpu_reset", _C, Action.RESET_CHIP, "reset"),
    2: ("node_reboot", _C, Action.REBOOT, "reboot"),
    3: ("drain_p2p", _W, Action.MONITOR, "reset"),
    4: ("drain_and_reset", _C, Action.RESET_CHIP, "reset"),
    5: ("recover_imex_domain", _C, Action.RESET_CHIP, "reset"),
    6: ("bus_reset", _C, Action.RESET_CHIP, "reset"),
    7: ("system_reboot", _C, Action.REBOOT, "reboot"),
}
_RECOVERY_BY_NAME = {name: (sev, act, clears) for name, sev, act, clears in RECOVERY_ACTIONS.values()}
# The NVLink5 XIDs' own verdict word.
_NVLINK5_QUALIFIERS: dict[str, tuple[Severity, Action, Clears]] = {
    "fatal": (_C, Action.RESET_CHIP, "reset"),
    "nonfatal": (_W, Action.MONITOR, "window"),
}


def split_key(key: str) -> tuple[int, str | None] | None:
    """``"154:node_reboot"`` -> ``(154, "node_reboot")``, ``"48"`` -> ``(48, None)``; None if not a code."""
    code, sep, qualifier = key.partition(":")
    if not code.isascii() or not code.isdigit():
        return None
    return int(code), (qualifier or None) if sep else None


def xid_info(code: int, overrides: Mapping[int, Severity] | None = None,
             qualifier: str | None = None) -> XidInfo:
    """The verdict on ``code`` (refined by the qualifier its message gave); an unknown code is a
    warning to look up by hand."""
    info = XID_TABLE.get(code) or XidInfo(Severity.WARNING, f"unknown XID {code}", Action.MONITOR)
    judged = (_RECOVERY_BY_NAME.get(qualifier or "") if code == XID_RECOVERY
              else _NVLINK5_QUALIFIERS.get(qualifier or "") if code in NVLINK5_CODES else None)
    if judged is not None:
        severity, action, clears = judged
        what = (f"the driver asks for: {(qualifier or '').replace('_', ' ')}" if code == XID_RECOVERY
                else f"{info.meaning}, {qualifier}")
        info = XidInfo(severity, what, action, info.bucket, clears)
    if overrides and code in overrides:
        info = XidInfo(overrides[code], info.meaning, info.action, info.bucket, info.clears)
    return info


def clears_on(code: int, qualifier: str | None = None) -> Clears:
    """What clears an XID from memory (overrides change severity only, never this)."""
    return xid_info(code, None, qualifier).clears


def critical_codes() -> list[int]:
    """Codes the built-in table rates critical when their message qualifies nothing."""
    return sorted(code for code, info in XID_TABLE.items() if info.severity is Severity.CRITICAL)


def critical_keys() -> list[str]:
    """Every XID key (``fleet_chip_xid_errors_window``'s ``xid`` label) the built-in table rates
    critical, qualified ones included: the alert rules' and the dashboard's fatal-XID set."""
    keys = {str(code) for code in critical_codes()}
    keys |= {f"{XID_RECOVERY}:{name}" for name, (sev, _a, _c) in _RECOVERY_BY_NAME.items()
             if sev is Severity.CRITICAL}
    keys |= {f"{code}:{name}" for code in NVLINK5_CODES for name, (sev, _a, _c) in _NVLINK5_QUALIFIERS.items()
             if sev is Severity.CRITICAL}
    return sorted(keys, key=lambda k: (int(k.partition(":")[0]), k))
