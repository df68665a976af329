"""XID errors: windowed counts per chip and code, fed by NVML's event API and the kernel log.

Two sources, because each misses cases the other sees: NVML delivers XIDs only to a process that
registered before they happened, while the kernel log (``NVRM: Xid (PCI:0000:3b:00): 79, ...``)
also holds XIDs from before the agent started, and still works when NVML itself is wedged. An XID
both sources report within ``dedup_s`` of each other counts once.

Chips are keyed by PCI address (``0000:3b:00``, domain:bus:device): the one name both sources use.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

log = logging.getLogger(__name__)

_PCI_RE = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.[0-7])?$")
# "NVRM: Xid (PCI:0000:3b:00): 79, ..." and, from older drivers, "NVRM: Xid (0000:03:00): 14, ...".
_XID_RE = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\): (\d+)")


def pci_key(bus_id: str | bytes) -> str | None:
    """Normalise a PCI address: ``00000000:3B:00.0``, ``0000:3b:00`` and ``3b:00.0`` -> ``0000:3b:00``."""
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode("ascii", "replace")
    m = _PCI_RE.match(bus_id.strip().rstrip("\x00"))
    if not m:
        return None
    domain = int(m.group(1) or "0", 16)
    return f"{domain:04x}:{int(m.group(2), 16):02x}:{int(m.group(3), 16):02x}"


def parse_xid_line(line: str) -> tuple[str, int] | None:
    """``(pci key, code)`` from a kernel log line reporting an XID, else None."""
    m = _XID_RE.search(line)
    if not m:
        return None
    key = pci_key(m.group(1))
    return None if key is None else (key, int(m.group(2)))


@dataclass(frozen=True)
class XidSnapshot:
    counts: dict[str, int] = field(default_factory=dict)  # code -> events inside the window
    total: int = 0  # all events seen since the agent started
    last: int | None = None


class XidTracker:
    """Thread-safe XID bookkeeping: per chip, per code, over a sliding window."""

    def __init__(self, window_s: float = 3600.0, *, dedup_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.dedup_s = dedup_s
        self._clock = clock
        self._lock = threading.Lock()
        self._events: dict[str, dict[int, deque[float]]] = {}
        self._total: dict[str, int] = {}
        self._last: dict[str, tuple[float, int]] = {}
        # (chip, code) -> source -> times not yet matched by another source, for de-duplication
        self._unmatched: dict[tuple[str, int], dict[str, deque[float]]] = {}

    def record(self, pci: str, code: int, source: str, at: float | None = None) -> bool:
        """Count one XID; False when it is the other source's report of an XID already counted."""
        t = self._clock() if at is None else at
        with self._lock:
            by_source = self._unmatched.setdefault((pci, code), {})
            for src, times in by_source.items():
                while times and times[0] < t - 2 * self.dedup_s:
                    times.popleft()  # too old to match anything that still comes
                if src == source:
                    continue
                for i, other in enumerate(times):
                    if abs(other - t) <= self.dedup_s:
                        del times[i]
                        return False
            by_source.setdefault(source, deque()).append(t)
            times = self._events.setdefault(pci, {}).setdefault(code, deque())
            times.append(t)
            while times and times[0] < t - self.window_s:
                times.popleft()  # keep an XID storm on a chip nobody samples from growing without end
            self._total[pci] = self._total.get(pci, 0) + 1
            if pci not in self._last or t >= self._last[pci][0]:
                self._last[pci] = (t, code)
            return True

    def snapshot(self, pci: str) -> XidSnapshot:
        cutoff = self._clock() - self.window_s
        with self._lock:
            counts: dict[str, int] = {}
            for code, times in self._events.get(pci, {}).items():
                kept = sorted(x for x in times if x >= cutoff)
                times.clear()
                times.extend(kept)
                if kept:
                    counts[str(code)] = len(kept)
            last = self._last.get(pci)
            return XidSnapshot(counts, self._total.get(pci, 0), None if last is None else last[1])


def _kmsg_time(line: str, clock: Callable[[], float]) -> tuple[str, float | None]:
    """Split a /dev/kmsg record (``6,1234,5678901,-;text``) into text and wall-clock time."""
    head, sep, text = line.partition(";")
    if not sep:
        return line, None
    parts = head.split(",")
    if len(parts) < 3 or not parts[2].isdigit():
        return line, None
    # The record's stamp is CLOCK_MONOTONIC in µs, the clock time.monotonic() reads.
    return text, clock() - (time.monotonic() - int(parts[2]) / 1e6)


class KernelLogReader:
    """Follows a kernel log (``/dev/kmsg``, or a plain file) and records the XIDs in it."""

    def __init__(self, tracker: XidTracker, path: str = "/dev/kmsg", *, poll_s: float = 0.5) -> None:
        self.tracker = tracker
        self.path = path
        self.poll_s = poll_s
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: IO[bytes] | None = None
        self._pending: bytes | None = b""

    def feed(self, line: str) -> bool:
        """Record the XID in one log line, if any; True when it counted."""
        text, at = _kmsg_time(line, self.tracker._clock)
        hit = parse_xid_line(text)
        return hit is not None and self.tracker.record(hit[0], hit[1], "kernel", at)

    def start(self) -> bool:
        """Open the log and follow it in a daemon thread; False (and ``error`` set) if unreadable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
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
                self.feed(raw.decode("utf-8", "replace"))
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


def _handle_key(handle: Any) -> int:
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
            key = _handle_key(handle)
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
            pci = self._by_handle.get(_handle_key(data.device))
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
