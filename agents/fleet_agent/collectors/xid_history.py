"""The XID history on disk: what the agent knew about each chip's XIDs, kept across restarts.

One JSON file under the agent's state directory, rewritten whole and atomically (a temporary file
in the same directory, fsync, rename), so a crash leaves the old or the new file, never half of one.
A file that cannot be read or does not hold this format is renamed aside (``<name>.corrupt``) and
reported as a warning: the agent starts with an empty history rather than not at all.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from fleet_agent.atomic import write_atomic

FORMAT = "fleet-agent.xid-history/1"
FILE_NAME = "xid-history.json"
MAX_FILE_BYTES = 4 << 20  # far above what MAX_EVENTS per chip can produce: anything larger is not ours
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def read_boot_id(path: str = BOOT_ID_PATH) -> str | None:
    """The kernel's boot id (new on every boot), or None where there is none to read."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


class XidHistoryStore:
    """Loads and saves the history document; every failure becomes ``warning``, never an exception."""

    def __init__(self, state_dir: str, *, read_only: bool = False) -> None:
        self.path = os.path.join(state_dir, FILE_NAME)
        # One-shot commands (`fleet-agent once`, `check` run by slurmd as root) read the service's
        # history but never write or move it: a root-owned file would lock the service out.
        self.read_only = read_only
        self.warning: str | None = None

    def load(self, now: float, boot_id: str | None = None) -> dict[str, Any] | None:
        """The stored document, or None (nothing stored, or set aside with a warning); ``now`` is
        the monotonic clock, which no stored time may be later than. A document of another boot
        than ``boot_id`` (when given) comes back without its chips: a reboot cleared them, and their
        times are another boot's clock; only where a plain-file kernel log was read up to remains."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._set_aside(f"cannot read: {e.strerror or e}")
            return None
        if len(raw) > MAX_FILE_BYTES:
            self._set_aside(f"larger than {MAX_FILE_BYTES} bytes")
            return None
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            self._set_aside(f"not JSON ({type(e).__name__})")
            return None
        if boot_id is not None and isinstance(doc, dict) and isinstance(doc.get("boot_id"), str) \
                and doc["boot_id"] != boot_id and doc.get("format") == FORMAT:
            earlier: dict[str, Any] = {"format": FORMAT, "boot_id": doc["boot_id"], "kernel_seq": -1,
                                       "chips": {}}
            if _kernel_file_ok(doc.get("kernel_file")):
                earlier["kernel_file"] = doc["kernel_file"]
            return earlier
        problem = _invalid(doc, now)
        if problem is not None:
            self._set_aside(problem)
            return None
        assert isinstance(doc, dict)
        return doc

    def save(self, doc: dict[str, Any]) -> bool:
        """Replace the file with ``doc`` atomically; False (and ``warning`` set) when it failed."""
        if self.read_only:
            return True
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
            write_atomic(self.path, json.dumps(doc, separators=(",", ":"), allow_nan=False), sync_dir=True)
        except OSError as e:
            self.warning = f"XID history {self.path}: cannot write: {e.strerror or e} (kept in memory only)"
            return False
        return True

    def set_aside(self, why: str) -> None:
        """Rename the file aside (read-only: leave it) with a warning saying ``why``."""
        self._set_aside(why)

    def _set_aside(self, why: str) -> None:
        aside = self.path + ".corrupt"
        if self.read_only:
            self.warning = f"XID history {self.path} {why}; ignored (read-only here)"
            return None
        try:
            os.replace(self.path, aside)
            where = f"set aside as {aside}"
        except OSError as e:
            where = f"could not be set aside: {e.strerror or e}"
        self.warning = f"XID history {self.path} {why}; {where}; starting with an empty history"
        return None


# Bounds of what this agent writes: anything outside is not ours (or was tampered with).
MAX_COUNT = 1 << 53  # counts and kernel record numbers: exact in a float, far beyond any real one
_PCI = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}")
_KEY = re.compile(r"[0-9]{1,6}(?::[a-z0-9_]{1,32})?")
_MARKER_VALUE = (str, bool, int, type(None))
_DIGEST = re.compile(r"[0-9a-f]{32}")


def _invalid(doc: Any, now: float) -> str | None:
    """Why ``doc`` is not a history document of this format, or None when it is. Times are this
    boot's monotonic clock: finite, not negative, not later than ``now`` (plus a little slack)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return f"is not a {FORMAT} document"
    if not isinstance(doc.get("boot_id"), str) or not isinstance(doc.get("chips"), dict):
        return "lacks boot_id or chips"
    seq = doc.get("kernel_seq", -1)
    if not (isinstance(seq, int) and not isinstance(seq, bool) and -1 <= seq < MAX_COUNT):
        return "kernel_seq: malformed"
    kernel_file = doc.get("kernel_file")
    if kernel_file is not None and not _kernel_file_ok(kernel_file):
        return "kernel_file: malformed"
    for pci, chip in doc["chips"].items():
        if not isinstance(pci, str) or not _PCI.fullmatch(pci):
            return f"chips: {str(pci)[:40]!r} is not a PCI address"
        if not isinstance(chip, dict):
            return f"chips.{pci}: expected a mapping"
        events = chip.get("events")
        if not isinstance(events, list) or not all(_event_ok(e, now) for e in events):
            return f"chips.{pci}.events: malformed"
        carry = chip.get("carry", {})
        if not isinstance(carry, dict) or not all(
                isinstance(k, str) and _KEY.fullmatch(k) and _count(v) for k, v in carry.items()):
            return f"chips.{pci}.carry: malformed"
        if not _count(chip.get("total", 0)):
            return f"chips.{pci}.total: malformed"
        last = chip.get("last")
        if last is not None and not (isinstance(last, list) and len(last) == 2 and _time(last[0], now)
                                     and _count(last[1])):
            return f"chips.{pci}.last: malformed"
        marker = chip.get("marker")
        if marker is not None and not (
                isinstance(marker, dict) and _time(chip.get("marker_at"), now)
                and all(isinstance(k, str) and isinstance(v, _MARKER_VALUE) and not _huge(v)
                        for k, v in marker.items())):
            return f"chips.{pci}.marker: malformed"
    return None


def _kernel_file_ok(v: Any) -> bool:
    # {path, dev, ino, offset, digest}: how far a plain-file kernel log was read
    return (isinstance(v, dict) and set(v) == {"path", "dev", "ino", "offset", "digest"}
            and isinstance(v["path"], str) and 0 < len(v["path"]) <= 4096
            and _count(v["dev"]) and _count(v["ino"]) and _count(v["offset"])
            and isinstance(v["digest"], str) and _DIGEST.fullmatch(v["digest"]) is not None)


def _event_ok(e: Any, now: float) -> bool:
    # [time, code, qualifier, kernel record seq, sources]
    return (isinstance(e, list) and len(e) == 5 and _time(e[0], now) and _count(e[1])
            and (e[2] is None or (isinstance(e[2], str) and _KEY.fullmatch(f"0:{e[2]}") is not None))
            and (e[3] is None or _count(e[3]))
            and isinstance(e[4], list) and all(isinstance(s, str) for s in e[4]))


def _time(v: Any, now: float) -> bool:
    # 60 s of slack: a file written an instant before this process read the clock.
    return (isinstance(v, int | float) and not isinstance(v, bool) and not _huge(v)
            and math.isfinite(v) and 0 <= v <= now + 60)


def _huge(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_COUNT


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_COUNT
