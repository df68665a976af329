"""XID bookkeeping: windowed counts, de-duplication of the two sources, kernel-log parsing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fleet_agent.collectors.xid import (
    MAX_EVENTS_PER_CHIP,
    KernelLogReader,
    XidTracker,
    parse_xid_line,
    pci_key,
)


class Clock:
    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(("raw", "key"), [
    ("00000000:3B:00.0", "0000:3b:00"),
    ("0000:3b:00", "0000:3b:00"),
    ("3b:00.0", "0000:3b:00"),
    (b"00000001:DB:00.0\x00", "0001:db:00"),
    ("not a bus id", None),
])
def test_pci_key_normalises_nvml_and_kernel_forms(raw: str | bytes, key: str | None) -> None:
    assert pci_key(raw) == key


def test_parse_kernel_log_lines() -> None:
    line = ("[12345.678901] NVRM: Xid (PCI:0000:3b:00): 79, pid=2211, name=python3, "
            "GPU has fallen off the bus.")
    assert parse_xid_line(line) == ("0000:3b:00", 79)
    assert parse_xid_line("NVRM: Xid (PCI:0000:DB:00): 13, Graphics SM Warp Exception") == ("0000:db:00", 13)
    assert parse_xid_line("NVRM: GPU at PCI:0000:3b:00: GPU-abc") is None
    assert parse_xid_line("usb 1-1: new high-speed USB device") is None


def test_window_counts_per_code_and_ages_out() -> None:
    clock = Clock()
    tr = XidTracker(window_s=3600, clock=clock)
    tr.record("0000:3b:00", 31, "nvml")
    clock.t += 600
    tr.record("0000:3b:00", 31, "nvml")
    tr.record("0000:3b:00", 63, "nvml")
    tr.record("0000:5d:00", 13, "nvml")
    snap = tr.snapshot("0000:3b:00")
    assert snap.counts == {"31": 2, "63": 1} and snap.total == 3 and snap.last == 63
    clock.t += 3100  # the first 31 is now 3700 s old
    snap = tr.snapshot("0000:3b:00")
    assert snap.counts == {"31": 1, "63": 1} and snap.total == 3
    clock.t += 3600
    snap = tr.snapshot("0000:3b:00")
    assert snap.counts == {} and snap.total == 3 and snap.last == 63  # totals never age out
    assert tr.snapshot("0000:5d:00").counts == {}
    assert tr.snapshot("0000:99:00").total == 0


def test_same_xid_from_both_sources_counts_once_but_repeats_count() -> None:
    clock = Clock()
    tr = XidTracker(dedup_s=5, clock=clock)
    assert tr.record("0000:3b:00", 79, "nvml") is True
    clock.t += 1
    assert tr.record("0000:3b:00", 79, "kernel") is False  # the same event, seen twice
    clock.t += 1
    assert tr.record("0000:3b:00", 79, "nvml") is True  # a second event
    assert tr.record("0000:3b:00", 79, "kernel") is False  # the second event, seen twice
    snap = tr.snapshot("0000:3b:00")
    assert snap.total == 2
    clock.t += 60
    assert tr.record("0000:3b:00", 79, "kernel") is True  # too late to be a duplicate
    assert tr.snapshot("0000:3b:00").total == 3


def test_dedup_needs_same_chip_and_code() -> None:
    clock = Clock()
    tr = XidTracker(clock=clock)
    assert tr.record("0000:3b:00", 79, "nvml")
    assert tr.record("0000:3b:00", 48, "kernel")
    assert tr.record("0000:5d:00", 79, "kernel")
    assert tr.record("0000:3b:00", 79, "nvml")  # same source twice: two events


def test_kmsg_record_time_places_old_xids_in_the_past() -> None:
    clock = Clock(t=1_000_000.0)
    tr = XidTracker(window_s=60, clock=clock)
    reader = KernelLogReader(tr, "/nonexistent")
    # A /dev/kmsg record stamped two minutes of monotonic time ago: outside the window.
    old_us = int((time.monotonic() - 120) * 1e6)
    assert reader.feed(f"3,811,{old_us},-;NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, "
                       "Graphics SM Warp Exception")
    snap = tr.snapshot("0000:3b:00")
    assert snap.total == 1 and snap.counts == {}
    recent_us = int((time.monotonic() - 10) * 1e6)
    reader.feed(f"3,812,{recent_us},-;NVRM: Xid (PCI:0000:3b:00): 31, pid=1, name=x, MMU Fault")
    assert tr.snapshot("0000:3b:00").counts == {"31": 1}
    # The same record read again (the log is re-read after a restart) counts once.
    assert not reader.feed(f"3,812,{recent_us},-;NVRM: Xid (PCI:0000:3b:00): 31, pid=1, name=x, MMU Fault")


def test_reader_follows_a_growing_file(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("[ 1.0] nvidia: module loaded\n"
                   "[ 2.0] NVRM: Xid (PCI:0000:18:00): 31, pid=7, name=train, Ch 00000008, MMU Fault\n")
    tr = XidTracker()
    reader = KernelLogReader(tr, str(log), poll_s=0.02)
    assert reader.start()
    try:
        wait_for(lambda: tr.snapshot("0000:18:00").total == 1)
        with log.open("a") as f:
            f.write("[ 3.0] NVRM: Xid (PCI:0000:2a:00): 94, pid=7, name=train, Contained ECC error\n"
                    "[ 4.0] NVRM: Xid (PCI:0000:2a")
            f.flush()
            wait_for(lambda: tr.snapshot("0000:2a:00").total == 1)
            f.write(":00): 95, pid=7, name=train, Uncontained ECC error\n")  # the rest of a split line
        wait_for(lambda: tr.snapshot("0000:2a:00").total == 2)
        assert tr.snapshot("0000:2a:00").counts == {"94": 1, "95": 1}
    finally:
        reader.stop()


def test_reader_on_unreadable_source_reports_why(tmp_path: Path) -> None:
    reader = KernelLogReader(XidTracker(), str(tmp_path / "missing"))
    assert reader.start() is False
    assert reader.error is not None and "missing" in reader.error
    reader.stop()


def test_tracker_is_thread_safe() -> None:
    tr = XidTracker(dedup_s=0)
    def worker(code: int) -> None:
        for _ in range(500):
            tr.record("0000:3b:00", code, f"src{code}")
    threads = [threading.Thread(target=worker, args=(c,)) for c in (13, 31, 43, 48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = tr.snapshot("0000:3b:00")
    # Every event counted; memory stays bounded: the sticky 48s survive as a count, the windowed
    # codes keep their most recent events (the verdict is per code, not per count).
    assert snap.total == 2000 and snap.counts["48"] == 500
    assert 0 < sum(n for k, n in snap.counts.items() if k != "48") <= MAX_EVENTS_PER_CHIP


def wait_for(cond: object, timeout: float = 5.0) -> None:
    assert callable(cond)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_the_older_kernel_log_form_without_pci_prefix_is_parsed() -> None:
    assert parse_xid_line("NVRM: Xid (0000:03:00): 14, Channel 00000001") == ("0000:03:00", 14)
