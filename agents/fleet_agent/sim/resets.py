"""What the simulated fleet and its stand-ins share on disk: the scenario's start and the GPU resets.

A sim fleet that writes an inventory keeps a state directory beside it (:func:`state_dir_for`):

- ``start``: the scenario's start on CLOCK_MONOTONIC (one clock for every process of this machine),
  so that the stand-ins (``dcgmi``, ``nvidia-smi``), started later, see the faults the agents see;
- ``resets/<host>/<chip>``: one line per reset of that chip by the ``nvidia-smi`` stand-in, in
  seconds on the scenario's clock, written atomically. The chips read them (:class:`ResetLog`) and a
  fault that a reset clears ends at the latest reset (``FaultSpec.on``).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fleet_agent.atomic import write_atomic

START_FILE = "start"
RESETS_DIR = "resets"
# A host's resets are read again at most this often by a long-lived process (the agents): a stat
# of one directory per host, so that a fleet of thousands of simulated hosts does not pay per call.
REFRESH_S = 0.25
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


class SimStateError(ValueError):
    """A state directory that cannot be used; the message names the file."""


def state_dir_for(inventory: str | os.PathLike[str]) -> Path:
    """The state directory of the sim fleet whose inventory is ``inventory`` (``fleet.yml`` ->
    ``fleet.yml.sim/``), beside it so that the stand-ins the inventory names find it."""
    p = Path(inventory)
    return p.with_name(p.name + ".sim")


def write_start(state_dir: Path, start: float) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(str(state_dir / START_FILE), f"{start!r}\n")


def read_start(state_dir: Path) -> float:
    """The scenario's start that the sim fleet recorded (CLOCK_MONOTONIC seconds)."""
    path = state_dir / START_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SimStateError(f"{path}: cannot read the sim fleet's start: "
                            f"{getattr(e, 'strerror', None) or e}") from None
    try:
        value = float(text)
    except ValueError:
        raise SimStateError(f"{path}: not a number: {text[:40]!r}") from None
    if not math.isfinite(value) or value > time.monotonic():
        raise SimStateError(f"{path}: {text[:40]!r} is not a start of this boot (written before a reboot?)")
    return value


def _host_dir(state_dir: Path, host: str) -> Path:
    if not _HOST_RE.match(host):
        raise SimStateError(f"host name {host!r} cannot name a directory")
    return state_dir / RESETS_DIR / host


def record_reset(state_dir: Path, host: str, chip: int, at: float) -> None:
    """Record that ``host``'s chip ``chip`` was reset at ``at`` (seconds on the scenario's clock)."""
    d = _host_dir(state_dir, host)
    d.mkdir(parents=True, exist_ok=True)
    path = d / str(chip)
    times = read_resets(path)
    write_atomic(str(path), "".join(f"{t!r}\n" for t in [*times, at]))


def read_resets(path: Path) -> list[float]:
    """The reset times in one chip's file (none when it does not exist); a line that is not a number
    is skipped: the file is only ever written whole."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise SimStateError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    out = []
    for line in text.split():
        try:
            value = float(line)
        except ValueError:
            continue
        if math.isfinite(value):
            out.append(value)
    return out


RACY_NS = 2_000_000_000  # coarser than any filesystem's timestamps (FAT's 2 s)


class ResetLog:
    """The resets under a state directory, as the chips ask for them: ``latest(host, chip)``.

    ``refresh_s`` bounds how stale an answer may be (0: read on every call, what the one-shot
    stand-ins use); ``clock`` is only for that bound."""

    def __init__(self, state_dir: Path, *, refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state_dir = state_dir
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        # host -> (read at, directory mtime or None: not to be trusted, chip -> latest reset)
        self._hosts: dict[str, tuple[float, int | None, dict[int, float]]] = {}

    def latest(self, host: str, chip: int) -> float | None:
        return self._host(host).get(chip)

    def lookup(self, host: str) -> Callable[[int], float | None]:
        """``latest`` bound to one host (what a simulated host hands its chips)."""
        return lambda chip: self.latest(host, chip)

    def _host(self, host: str) -> dict[int, float]:
        now = self._clock()
        with self._lock:
            cached = self._hosts.get(host)
            if cached is not None and now - cached[0] < self.refresh_s:
                return cached[2]
        d = _host_dir(self.state_dir, host)
        try:
            mtime = d.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if cached is not None and cached[1] == mtime:
            chips = cached[2]  # nothing new (a reset renames a file into the directory)
        else:
            chips = {}
            if mtime != -1:
                for entry in os.scandir(d):
                    if entry.name.isdigit():
                        times = read_resets(Path(entry.path))
                        if times:
                            chips[int(entry.name)] = max(times)
        # A directory changed within the filesystem's timestamp granularity of this read may change
        # again with the same mtime (git's "racy" entries): read it again next time.
        racy = mtime != -1 and time.time_ns() - mtime < RACY_NS
        with self._lock:
            self._hosts[host] = (now, None if racy else mtime, chips)
        return chips
