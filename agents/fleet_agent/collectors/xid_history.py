"""The XID history on disk: what the agent knew about each chip's XIDs, kept across restarts.

One JSON file under the agent's state directory, rewritten whole and atomically (a temporary file
in the same directory, fsync, rename), so a crash leaves the old or the new file, never half of one.
A file that cannot be read or does not hold this format is renamed aside (``<name>.corrupt``) and
reported as a warning: the agent starts with an empty history rather than not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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

    def load(self) -> dict[str, Any] | None:
        """The stored document, or None (nothing stored, or set aside with a warning)."""
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
        problem = _invalid(doc)
        if problem is not None:
            self._set_aside(problem)
            return None
        assert isinstance(doc, dict)
        return doc

    def save(self, doc: dict[str, Any]) -> bool:
        """Replace the file with ``doc`` atomically; False (and ``warning`` set) when it failed."""
        if self.read_only:
            return True
        directory = os.path.dirname(self.path)
        tmp: str | None = None
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".xid-history.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            _fsync_dir(directory)
        except OSError as e:
            self.warning = f"XID history {self.path}: cannot write: {e.strerror or e} (kept in memory only)"
            return False
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return True

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


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _invalid(doc: Any) -> str | None:
    """Why ``doc`` is not a history document of this format, or None when it is."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return f"is not a {FORMAT} document"
    if not isinstance(doc.get("boot_id"), str) or not isinstance(doc.get("chips"), dict):
        return "lacks boot_id or chips"
    for pci, chip in doc["chips"].items():
        if not isinstance(chip, dict):
            return f"chips.{pci}: expected a mapping"
        events = chip.get("events")
        if not isinstance(events, list) or not all(_event_ok(e) for e in events):
            return f"chips.{pci}.events: malformed"
        carry = chip.get("carry", {})
        if not isinstance(carry, dict) or not all(_count(v) for v in carry.values()):
            return f"chips.{pci}.carry: malformed"
        if not _count(chip.get("total", 0)):
            return f"chips.{pci}.total: malformed"
        marker = chip.get("marker")
        if marker is not None and not (isinstance(marker, dict) and _number(chip.get("marker_at"))):
            return f"chips.{pci}.marker: malformed"
    return None


def _event_ok(e: Any) -> bool:
    # [time, code, qualifier, kernel record seq, sources]
    return (isinstance(e, list) and len(e) == 5 and _number(e[0]) and _count(e[1])
            and (e[2] is None or isinstance(e[2], str)) and (e[3] is None or _count(e[3]))
            and isinstance(e[4], list) and all(isinstance(s, str) for s in e[4]))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
