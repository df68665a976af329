"""This host's boot marker, for faults a reboot clears (a scenario fault's ``boot:``).

The marker is the kernel's boot id and the start time of PID 1 (clock ticks after the kernel's
boot), so it changes with a machine's reboot and with a container's restart, whose kernel (and
boot id) is the machine's. It cannot change while a process runs (a reboot ends the process), so
it is read once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
PID1_STAT_PATH = Path("/proc/1/stat")


def read_boot_marker(boot_id_path: Path = BOOT_ID_PATH, pid1_stat_path: Path = PID1_STAT_PATH) -> str:
    """``<boot id>/<PID 1 start time>``; a part that cannot be read is left empty."""
    try:
        boot_id = boot_id_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        boot_id = ""
    try:
        stat = pid1_stat_path.read_text(encoding="ascii", errors="replace")
        # Fields after "pid (comm) ": the command name may hold spaces and parentheses.
        start = stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        start = ""
    return f"{boot_id}/{start}"


@functools.cache
def boot_marker() -> str:
    """This host's boot marker (:func:`read_boot_marker`), read once."""
    return read_boot_marker()
