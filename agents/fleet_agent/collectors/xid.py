"""XID errors: counts per chip and code, fed by NVML's event API and the kernel log, kept on disk.

Two sources, because each misses cases the other sees: NVML delivers XIDs only to a process that
registered before they happened, while the kernel log (``NVRM: Xid (PCI:0000:3b:00): 79, ...``)
also holds XIDs from before the agent started, and still works when NVML itself is wedged. An XID
both sources report within ``dedup_s`` of each other counts once.

What clears an XID is the table's word (fleet_agent.health.xid_codes): most age out of a window;
one whose resolution is a GPU reset stays until the chip was reset (or the host rebooted), one that
needs a reboot until the boot id changes. Times are CLOCK_MONOTONIC seconds, the clock /dev/kmsg
stamps its records with, so a wall-clock step changes nothing, and within one boot a restarted
agent compares its stored times with new ones directly.

Chips are keyed by PCI address (``0000:3b:00``, domain:bus:device): the one name both sources use.

A plain file in place of /dev/kmsg (``xid.kmsg_path``) numbers no records, so the reader keeps its
place instead: the file's identity and the offset read up to go into the history, and a restart
(or a reboot) reads on from there. A file last written before this boot began holds only earlier
boots' lines and is read from its end.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from fleet_agent.collectors.xid_history import XidHistoryStore, read_boot_id
from fleet_agent.health.xid_codes import NVLINK5_CODES, RECOVERY_ACTIONS, XID_RECOVERY, clears_on

log = logging.getLogger(__name__)

_PCI_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.[0-7])?$")
# "NVRM: Xid (PCI:0000:3b:00): 79, ..." and, from older drivers, "NVRM: Xid (0000:03:00): 14, ...".
_XID_RE = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\): (\d+)")
# "154, GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
_RECOVERY_RE = re.compile(r"recovery action changed from\s+0x[0-9a-fA-F]+\s*(?:\([^)]*\))?\s*to\s+"
                          r"(0x[0-9a-fA-F]+)\s*(?:\(([^)]*)\))?", re.IGNORECASE)
# "145, RLW_REMAP Fatal XC1 i0 Link 10 (...)": the NVLink5 XIDs' own verdict word.
_NVLINK5_RE = re.compile(r"\b(nonfatal|fatal)\b", re.IGNORECASE)
MAX_EVENTS_PER_CHIP = 512


def pci_key(bus_id: str | bytes) -> str | None:
    """Normalise a PCI address: ``00000000:3B:00.0``, ``0000:3b:00`` and ``3b:00.0`` -> ``0000:3b:00``."""
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode("ascii", "replace")
    m = _PCI_RE.match(bus_id.strip().rstrip("\x00"))
    if not m:
        return None
    domain = int(m.group(1) or "0", 16)
    return f"{domain:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}"


def _recovery_qualifier(value: str, name: str | None) -> str | None:
    known = RECOVERY_ACTIONS.get(int(value, 16))
    if known is not None:
        return known[0]
    words = (name or "").lower()  # a value newer than our table: go by its words
    for needle, qualifier in (("drain and reset", "drain_and_reset"), ("reboot", "node_reboot"),
                              ("reset", "gpu_reset"), ("drain", "drain_p2p")):
        if needle in words:
            return qualifier
    return None


def parse_xid_event(line: str) -> tuple[str, int, str | None] | None:
    """``(pci key, code, qualifier)`` from a kernel log line reporting an XID, else None. The
    qualifier is what the message says about the verdict: XID 154's recovery action
    (``node_reboot``, ``gpu_reset`` ...), ``fatal``/``nonfatal`` for XIDs 144-150."""
    m = _XID_RE.search(line)
    if not m:
        return None
    key = pci_key(m.group(1))
    if key is None:
        return None
    code = int(m.group(2))
    rest = line[m.end():]
    qualifier: str | None = None
    if code == XID_RECOVERY:
        r = _RECOVERY_RE.search(rest)
        qualifier = _recovery_qualifier(r.group(1), r.group(2)) if r else None
    elif code in NVLINK5_CODES:
        w = _NVLINK5_RE.search(rest)
        qualifier = w.group(1).lower() if w else None
    return key, code, qualifier


def parse_xid_line(line: str) -> tuple[str, int] | None:
    """``(pci key, code)`` from a kernel log line reporting an XID, else None."""
    hit = parse_xid_event(line)
    return None if hit is None else (hit[0], hit[1])


@dataclass(frozen=True)
class XidSnapshot:
    # "code" or "code:qualifier" -> events that still count (inside the window, or since the reset
    # or boot that clears them)
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0  # all events seen this boot
    last: int | None = None


@dataclass
class _Event:
    t: float
    code: int
    qualifier: str | None
    seq: int | None  # the kernel log record's sequence number: a re-read log repeats it
    sources: dict[str, float]

    @property
    def key(self) -> str:
        return str(self.code) if self.qualifier is None else f"{self.code}:{self.qualifier}"


@dataclass
class _Chip:
    events: list[_Event] = field(default_factory=list)
    carry: dict[str, int] = field(default_factory=dict)  # sticky events dropped to stay bounded
    total: int = 0
    last: tuple[float, int] | None = None
    marker: dict[str, Any] | None = None  # what a reset would change (see observe_chip)
    marker_at: float = 0.0


ResetMarker = Mapping[str, "int | bool | str | None"]


@dataclass(frozen=True)
class LogPosition:
    """How far a plain-file kernel log was read: the file (device, inode), the offset after the last
    whole line, and a digest of the bytes just before it (a file rewritten in place differs)."""

    path: str
    dev: int
    ino: int
    offset: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "digest": self.digest}


def chip_was_reset(before: ResetMarker, now: ResetMarker) -> bool:
    """Whether NVML's readings show a reset between two samples of the same PCI slot: another board
    (UUID), a volatile ECC counter that went down (they zero on a reset or driver reload), a pending
    row remap or page retirement that went away (applied by a reset), or the driver's recovery action
    back to none."""
    def both(name: str) -> tuple[Any, Any] | None:
        a, b = before.get(name), now.get(name)
        return None if a is None or b is None else (a, b)

    def counts(name: str) -> tuple[int, int] | None:
        pair = both(name)
        if pair is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            return None  # a reading of another type says nothing about a reset
        return int(pair[0]), int(pair[1])

    uuid = both("uuid")
    if uuid is not None and uuid[0] and uuid[1] and uuid[0] != uuid[1]:
        return True
    for name in ("ecc_volatile_corrected", "ecc_volatile_uncorrected"):
        ecc = counts(name)
        if ecc is not None and ecc[1] < ecc[0]:
            return True
    for name in ("row_remap_pending", "retired_pages_pending"):
        pair = both(name)
        if pair is not None and pair[0] is True and pair[1] is False:
            return True
    action = counts("recovery_action")
    return action is not None and action[0] != 0 and action[1] == 0


MARKER_WRITE_S = 60.0


class XidTracker:
    """Thread-safe XID bookkeeping per chip; on disk when given a state directory."""

    def __init__(self, window_s: float = 3600.0, *, dedup_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, state_dir: str | None = None,
                 boot_id_path: str | None = None, read_only: bool = False,
                 clears: Callable[[int, str | None], str] = clears_on) -> None:
        self.window_s = window_s
        self.dedup_s = dedup_s
        self._clock = clock
        self._clears = clears
        self._lock = threading.Lock()
        self._chips: dict[str, _Chip] = {}
        self._dirty = False  # XIDs changed: written after the snapshot
        # Only reset markers changed (a corrected-ECC count ticking): written at most every
        # MARKER_WRITE_S, not after every chip of every sample. A stale stored marker still shows a
        # reset (counters only go down on one), so nothing is lost by waiting.
        self._markers_changed = False
        self._written_at = -math.inf
        self._kernel_seq = -1
        self._log_position: LogPosition | None = None  # a plain-file kernel log's place
        self._position_changed = False
        self.boot_id = read_boot_id(boot_id_path) if boot_id_path else read_boot_id()
        self._store = XidHistoryStore(state_dir, read_only=read_only) if state_dir else None
        self._load_warning: str | None = None
        if self._store is not None:
            self._load()

    @property
    def warning(self) -> str | None:
        """Why the history is not (fully) on disk, if it is not: shown in the collector's state."""
        store = self._store.warning if self._store is not None else None
        return "; ".join(w for w in (self._load_warning, store) if w) or None

    # --- recording ---

    def record(self, pci: str, code: int, source: str, at: float | None = None, *,
               qualifier: str | None = None, seq: int | None = None,
               position: LogPosition | None = None) -> bool:
        """Count one XID; False when it is the other source's report of an XID already counted, or
        a kernel log record already counted (the log is read again after a restart). ``position``:
        the plain-file log's place after this line, stored together with the XID it counted."""
        t = self._clock() if at is None else at
        with self._lock:
            if position is not None:
                self._set_position(position)
            if seq is not None:
                # /dev/kmsg numbers its records in order within a boot: one at or below the
                # highest seen was counted before (by this agent, or before its restart).
                if seq <= self._kernel_seq:
                    return False
                self._kernel_seq = seq
            chip = self._chips.setdefault(pci, _Chip())
            recent = chip.events[-64:]
            for e in reversed(recent):
                if e.code != code or source in e.sources:
                    continue
                if any(abs(other - t) <= self.dedup_s for other in e.sources.values()):
                    e.sources[source] = t
                    if e.seq is None:
                        e.seq = seq
                    if e.qualifier is None and qualifier is not None:
                        e.qualifier = qualifier  # the kernel log's words for what NVML only numbered
                    self._dirty = True
                    return False
            chip.events.append(_Event(t, code, qualifier, seq, {source: t}))
            chip.total += 1
            if chip.last is None or t >= chip.last[0]:
                chip.last = (t, code)
            self._prune(chip, t)
            self._dirty = True
            return True

    def stored_position(self) -> LogPosition | None:
        """Where the plain-file kernel log was read up to (by this agent or before its restart)."""
        with self._lock:
            return self._log_position

    def note_position(self, position: LogPosition) -> None:
        """The log was read up to ``position`` (lines without an XID): written with the markers."""
        with self._lock:
            self._set_position(position)

    def _set_position(self, position: LogPosition) -> None:
        if position != self._log_position:
            self._log_position = position
            self._position_changed = True

    def _sticky(self, e: _Event) -> bool:
        return self._clears(e.code, e.qualifier) != "window"

    def _prune(self, chip: _Chip, now: float) -> None:
        """Drop what no longer counts; past MAX_EVENTS_PER_CHIP, the oldest (a sticky one is
        remembered as a count) — an XID storm must not grow memory or the file without end."""
        cutoff = now - self.window_s
        keep = [e for e in chip.events if self._sticky(e) or e.t >= cutoff or now - e.t < 2 * self.dedup_s]
        while len(keep) > MAX_EVENTS_PER_CHIP:
            dropped = keep.pop(0)
            if self._sticky(dropped):
                chip.carry[dropped.key] = chip.carry.get(dropped.key, 0) + 1
        chip.events = keep

    def observe_chip(self, pci: str, marker: ResetMarker) -> bool:
        """Compare this sample's reset marker with the last; on a reset, forget what a reset clears
        (events up to the previous sample: what came after may already be past the reset).
        True when a reset was seen."""
        now = self._clock()
        with self._lock:
            chip = self._chips.setdefault(pci, _Chip())
            before, before_at = chip.marker, chip.marker_at
            chip.marker, chip.marker_at = dict(marker), now
            self._markers_changed = self._markers_changed or before != chip.marker
            if before is None or not chip_was_reset(before, marker):
                return False
            # While the driver still asks for a recovery (NVML's recovery action, the field behind XID
            # 154), a reset did not give it what it asked for: 154 stays, qualified or not.
            pending = marker.get("recovery_action")
            still_asked = isinstance(pending, int) and not isinstance(pending, bool) and pending != 0

            def cleared(code: int, qualifier: str | None) -> bool:
                return self._clears(code, qualifier) == "reset" and not (still_asked and code == XID_RECOVERY)

            chip.events = [e for e in chip.events if not (cleared(e.code, e.qualifier) and e.t <= before_at)]
            chip.carry = {k: n for k, n in chip.carry.items() if not cleared(*self._split_carry(k))}
            self._dirty = True
            return True

    @staticmethod
    def _split_carry(key: str) -> tuple[int, str | None]:
        code, _, qualifier = key.partition(":")
        return int(code), qualifier or None

    # --- reading ---

    def snapshot(self, pci: str) -> XidSnapshot:
        now = self._clock()
        with self._lock:
            chip = self._chips.get(pci)
            if chip is None:
                return XidSnapshot()
            self._prune(chip, now)
            counts: dict[str, int] = dict(chip.carry)
            cutoff = now - self.window_s
            for e in chip.events:
                if self._sticky(e) or e.t >= cutoff:
                    counts[e.key] = counts.get(e.key, 0) + 1
            snap = XidSnapshot(counts, chip.total, None if chip.last is None else chip.last[1])
        self.flush()
        return snap

    # --- on disk ---

    def flush(self, *, final: bool = False) -> None:
        """Write the history when its XIDs changed (called after each snapshot), when only markers
        changed and MARKER_WRITE_S passed, or whatever changed when ``final`` (on close)."""
        if self._store is None or self._store.read_only or self.boot_id is None:
            return
        now = self._clock()
        lazy = self._markers_changed or self._position_changed  # worth a write, not at once
        due = self._dirty or (lazy and (final or now - self._written_at >= MARKER_WRITE_S))
        if not due:
            return
        with self._lock:
            doc = self._document()
            dirty, markers, position = self._dirty, self._markers_changed, self._position_changed
            self._dirty = self._markers_changed = self._position_changed = False
        if not self._store.save(doc):
            self._dirty, self._markers_changed, self._position_changed = dirty, markers, position
        else:
            self._written_at = now
            self._store.warning = None

    def _document(self) -> dict[str, Any]:
        chips: dict[str, Any] = {}
        for pci, c in self._chips.items():
            chips[pci] = {
                "events": [[e.t, e.code, e.qualifier, e.seq, sorted(e.sources)] for e in c.events],
                "carry": dict(c.carry), "total": c.total,
                "last": None if c.last is None else [c.last[0], c.last[1]],
                "marker": c.marker, "marker_at": c.marker_at,
            }
        doc: dict[str, Any] = {"format": "fleet-agent.xid-history/1", "boot_id": self.boot_id,
                               "kernel_seq": self._kernel_seq, "chips": chips}
        if self._log_position is not None:
            doc["kernel_file"] = self._log_position.to_json()
        return doc

    def _load(self) -> None:
        assert self._store is not None
        if self.boot_id is None:
            self._load_warning = "XID history off: no kernel boot id to tell a reboot by"
            self._store = None
            return
        doc = self._store.load(self._clock(), self.boot_id)
        if doc is not None and isinstance(doc.get("kernel_file"), dict):
            # Kept across a reboot: what a plain file held was read then, in whichever boot.
            self._log_position = LogPosition(**doc["kernel_file"])
        if doc is None or doc["boot_id"] != self.boot_id:
            return  # nothing stored, set aside, or from an earlier boot: a reboot clears every XID
        try:
            self._restore(doc)
        except Exception as exc:  # noqa: BLE001 - a file the checks missed must not stop the agent
            self._chips.clear()
            self._kernel_seq = -1
            self._store.set_aside(f"cannot be restored ({type(exc).__name__})")

    def _restore(self, doc: dict[str, Any]) -> None:
        assert self._store is not None
        seq = doc.get("kernel_seq", -1)
        self._kernel_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else -1
        for pci, c in doc["chips"].items():
            chip = _Chip(total=c.get("total", 0), carry=dict(c.get("carry", {})))
            for t, code, qualifier, seq, sources in c["events"]:
                chip.events.append(_Event(float(t), code, qualifier, seq, {s: float(t) for s in sources}))
            last = c.get("last")
            if isinstance(last, list) and len(last) == 2:
                chip.last = (float(last[0]), int(last[1]))
            if c.get("marker") is not None:
                chip.marker, chip.marker_at = dict(c["marker"]), float(c["marker_at"])
            self._chips[pci] = chip


def _kmsg_record(line: str, clock: Callable[[], float]) -> tuple[str, float | None, int | None]:
    """Split a /dev/kmsg record (``6,1234,5678901,-;text``) into text, time and sequence number."""
    head, sep, text = line.partition(";")
    if not sep:
        return line, None, None
    parts = head.split(",")
    if len(parts) < 3 or not parts[2].isdigit():
        return line, None, None
    seq = int(parts[1]) if parts[1].isdigit() else None
    # The record's stamp is CLOCK_MONOTONIC in µs, the clock time.monotonic() reads (and the
    # tracker's, unless a test hands it another).
    return text, clock() - (time.monotonic() - int(parts[2]) / 1e6), seq


class KernelLogReader:
    """Follows a kernel log (``/dev/kmsg``, or a plain file) and records the XIDs in it."""

    def __init__(self, tracker: XidTracker, path: str = "/dev/kmsg", *, poll_s: float = 0.5,
                 booted_at: float | None = None) -> None:
        self.tracker = tracker
        self.path = path
        self.poll_s = poll_s
        # When this boot began (wall clock): a plain file last written before it is all old lines.
        self.booted_at = booted_at if booted_at is not None else _boot_wall_time()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: IO[bytes] | None = None
        self._pending: bytes | None = b""
        self._file: tuple[int, int] | None = None  # a plain file's (device, inode); None: /dev/kmsg
        self._offset = 0  # bytes of whole lines read so far (a plain file)
        self._tail = b""  # the last bytes of those lines, for the position's digest

    def feed(self, line: str) -> bool:
        """Record the XID in one log line, if any; True when it counted. Reading a plain file, the
        reader's place after the line is stored with the XID (read again, it would count twice)."""
        text, at, seq = _kmsg_record(line, self.tracker._clock)
        hit = parse_xid_event(text)
        return hit is not None and self.tracker.record(hit[0], hit[1], "kernel", at, qualifier=hit[2],
                                                       seq=seq, position=self._position())

    def _position(self) -> LogPosition | None:
        if self._file is None:
            return None
        return LogPosition(self.path, self._file[0], self._file[1], self._offset, _digest(self._tail))

    def _resume(self, fd: int) -> None:
        """For a plain file: go on from where the history says it was read up to, if it is the same
        file; from its end if it was last written before this boot; else from its start."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        self._file = (st.st_dev, st.st_ino)
        start = 0
        stored = self.tracker.stored_position()
        if (stored is not None and stored.path == self.path and (stored.dev, stored.ino) == self._file
                and stored.offset <= st.st_size):
            before = _bytes_before(fd, stored.offset)
            if _digest(before) == stored.digest:
                start, self._tail = stored.offset, before
        if st.st_mtime < self.booted_at and st.st_size > start:
            # Nothing in it was written this boot: its XIDs belong to a boot that is over.
            start = st.st_size
            self._tail = _bytes_before(fd, start)
        os.lseek(fd, start, os.SEEK_SET)
        self._offset = start
        position = self._position()
        if position is not None and position != stored:
            self.tracker.note_position(position)

    def start(self) -> bool:
        """Open the log and follow it in a daemon thread; False (and ``error`` set) if unreadable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._resume(fd)
            self._stream = os.fdopen(fd, "rb", buffering=0)
        except OSError as e:
            self.error = f"cannot read {self.path}: {e.strerror or e}"
            log.warning("XID kernel-log source off: %s", self.error)
            return False
        # What the log holds already is read here, before the first sample (`fleet-agent once`
        # and the first report after a start must show an XID logged before it).
        self._pending = self._read_available(b"")
        if self._pending is None:
            return False
        self._thread = threading.Thread(target=self._run, name="xid-kernel-log", daemon=True)
        self._thread.start()
        return True

    def _read_available(self, pending: bytes) -> bytes | None:
        """Feed every complete line readable now; the partial rest, or None when the log failed."""
        assert self._stream is not None
        for _ in range(100_000):  # bounded: a log written faster than we read must not pin us here
            try:
                chunk = self._stream.read(8192)
            except BlockingIOError:
                return pending
            except OSError as e:
                # /dev/kmsg answers EPIPE when records were overwritten before we read them: go on.
                if e.errno == 32:
                    continue
                self.error = f"reading {self.path}: {e.strerror or e}"
                log.warning("XID kernel-log source stopped: %s", self.error)
                return None
            if not chunk:
                return pending
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                if self._file is not None:
                    self._offset += len(raw) + 1
                    self._tail = (self._tail + raw + b"\n")[-_TAIL_BYTES:]
                self.feed(raw.decode("utf-8", "replace"))
            position = self._position()
            if lines and position is not None:
                self.tracker.note_position(position)  # past lines without an XID, too
        return pending

    def _run(self) -> None:
        pending: bytes | None = self._pending
        while pending is not None and not self._stop.is_set():
            self._stop.wait(self.poll_s)
            pending = self._read_available(pending)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._stream is not None:
            self._stream.close()
            self._stream = None


_TAIL_BYTES = 256


def _bytes_before(fd: int, offset: int) -> bytes:
    """The last bytes of a file before ``offset`` (what the position's digest covers)."""
    size = min(offset, _TAIL_BYTES)
    return os.pread(fd, size, offset - size)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _boot_wall_time() -> float:
    """When this boot began, on the wall clock (the file times' clock)."""
    try:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # no CLOCK_BOOTTIME (not Linux): judge no file by its age
        return -math.inf


def handle_key(handle: Any) -> int:
    """A stable key for an NVML device handle (a ctypes pointer from pynvml; an object in fakes)."""
    try:
        return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)
    except (ctypes.ArgumentError, TypeError):
        return id(handle)


class NvmlXidWatcher:
    """Receives XID events from NVML's event API: a thread waiting on the event set, or ``poll()``."""

    def __init__(self, nvml: Any, tracker: XidTracker, *, wait_ms: int = 500) -> None:
        self.nvml = nvml
        self.tracker = tracker
        self.wait_ms = wait_ms
        self.error: str | None = None
        self._lock = threading.Lock()
        self._set: Any = None
        self._by_handle: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, pci: str, handle: Any) -> bool:
        """Ask NVML for this chip's XID events; False when it cannot (NotSupported, lost...)."""
        nv = self.nvml
        with self._lock:
            key = handle_key(handle)
            if key in self._by_handle:
                return True
            try:
                if self._set is None:
                    self._set = nv.nvmlEventSetCreate()
                nv.nvmlDeviceRegisterEvents(handle, nv.nvmlEventTypeXidCriticalError, self._set)
            except nv.NVMLError as e:
                self.error = f"XID events for {pci}: {e}"
                return False
            self._by_handle[key] = pci
            return True

    def poll(self, timeout_ms: int = 0, limit: int = 64) -> int:
        """Record the events NVML has for us (waiting up to ``timeout_ms`` for the first)."""
        nv = self.nvml
        with self._lock:
            es = self._set
        if es is None:
            return 0
        n = 0
        for i in range(limit):
            try:
                data = nv.nvmlEventSetWait_v2(es, timeout_ms if i == 0 else 0)
            except nv.NVMLError as e:
                if e.value != nv.NVML_ERROR_TIMEOUT:
                    self.error = f"waiting for XID events: {e}"
                    self._stop.wait(min(self.wait_ms / 1000, 1.0))  # no busy loop on a broken set
                return n
            if not data.eventType & nv.nvmlEventTypeXidCriticalError:
                continue
            pci = self._by_handle.get(handle_key(data.device))
            if pci is None:
                try:
                    pci = pci_key(nv.nvmlDeviceGetPciInfo(data.device).busId)
                except nv.NVMLError:
                    pci = None
            if pci is not None and self.tracker.record(pci, int(data.eventData), "nvml"):
                n += 1
        return n

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="xid-nvml-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._set is None:
                self._stop.wait(self.wait_ms / 1000)
                continue
            self.poll(self.wait_ms)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 + self.wait_ms / 1000)
            self._thread = None
        with self._lock:
            if self._set is not None:
                try:
                    self.nvml.nvmlEventSetFree(self._set)
                except self.nvml.NVMLError:
                    pass
                self._set = None
