"""XID memory that survives restarts and clock steps, clears on a reset or a reboot, and the
recovery action XID 154's message names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fleet_agent.collectors.xid import KernelLogReader, XidTracker, parse_xid_event
from fleet_agent.collectors.xid_history import FILE_NAME, XidHistoryStore
from fleet_agent.config import ConfigError, config_from_dict
from fleet_agent.health.checks import xid as xid_check
from fleet_agent.health.config import HealthConfig
from fleet_agent.schema import Action, ChipReport, GpuDetails, Severity

PCI = "0000:3b:00"


class Clock:
    def __init__(self, t: float = 5_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def boot(tmp_path: Path, boot_id: str) -> str:
    path = tmp_path / "boot_id"
    path.write_text(boot_id + "\n")
    return str(path)


def tracker(tmp_path: Path, clock: Clock, boot_id: str = "boot-a") -> XidTracker:
    return XidTracker(window_s=3600, clock=clock, state_dir=str(tmp_path / "state"),
                      boot_id_path=boot(tmp_path, boot_id))


def verdict(tr: XidTracker) -> list[tuple[Severity, Action]]:
    chip = ChipReport(0, "gpu", "nvidia", "H100", "GPU-1", PCI, gpu=GpuDetails())
    assert chip.gpu is not None
    chip.gpu.xid_counts = tr.snapshot(PCI).counts
    return [(p.severity, p.action) for p in xid_check.check(chip, HealthConfig(), 0.0)]


@pytest.mark.parametrize(("line", "expected"), [
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 "
     "(Node Reboot Required)", (PCI, 154, "node_reboot")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 "
     "(GPU Reset Required)", (PCI, 154, "gpu_reset")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 (OS Reboot)",
     (PCI, 154, "node_reboot")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (PF FLR)",
     (PCI, 154, "gpu_reset")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x2 (Node Reboot Required) "
     "to 0x0 (None)", (PCI, 154, "none")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x9 "
     "(Drain and Reset)", (PCI, 154, "drain_and_reset")),
    ("NVRM: Xid (PCI:0000:3b:00): 154, something new", (PCI, 154, None)),
    ("NVRM: Xid (PCI:0018:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 09 (0x025525c6 0x0)",
     ("0018:01:00", 149, "fatal")),
    ("NVRM: Xid (PCI:0000:04:00): 145, RLW_REMAP Nonfatal XC0 i0 Link 00 (0x00000004 0x00000001)",
     ("0000:04:00", 145, "nonfatal")),
    ("NVRM: Xid (PCI:0000:3b:00): 48, pid=1, name=x, Fatal DBE", (PCI, 48, None)),
])
def test_kernel_log_message_qualifies_154_and_nvlink5(line: str,
                                                      expected: tuple[str, int, str | None]) -> None:
    assert parse_xid_event(line) == expected


def test_154_is_judged_by_the_recovery_its_message_names() -> None:
    tr = XidTracker(clock=Clock())
    reader = KernelLogReader(tr, "/nonexistent")
    reader.feed("NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 "
                "(GPU Reset Required)")
    assert verdict(tr) == [(Severity.CRITICAL, Action.RESET_CHIP)]


def test_nvml_event_then_kernel_line_keeps_the_kernel_lines_recovery() -> None:
    clock = Clock()
    tr = XidTracker(clock=clock)
    assert tr.record(PCI, 154, "nvml")
    clock.t += 1
    assert not tr.record(PCI, 154, "kernel", qualifier="node_reboot")  # same event, now with words
    assert tr.snapshot(PCI).counts == {"154:node_reboot": 1}
    assert verdict(tr) == [(Severity.CRITICAL, Action.REBOOT)]


def test_a_clock_step_changes_no_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = XidTracker(window_s=3600, state_dir=str(tmp_path), boot_id_path=boot(tmp_path, "b"))
    tr.record(PCI, 48, "nvml")  # uncorrectable: until a reset
    tr.record(PCI, 13, "nvml")  # application: inside the window
    before = verdict(tr)
    assert (Severity.CRITICAL, Action.RESET_CHIP) in before and len(before) == 2
    real = time.time
    for step in (+86_400.0, -86_400.0, +10 * 365 * 86_400.0):
        monkeypatch.setattr(time, "time", lambda step=step: real() + step)
        assert verdict(tr) == before


def test_restart_keeps_an_uncorrectable_xid_and_the_window(tmp_path: Path) -> None:
    clock = Clock()
    first = tracker(tmp_path, clock)
    first.record(PCI, 48, "nvml")
    first.record(PCI, 31, "kernel", seq=900)
    first.snapshot(PCI)  # a sample writes the history
    state = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    assert state["boot_id"] == "boot-a"

    clock.t += 600
    second = tracker(tmp_path, clock)  # the agent restarted: same boot, same state directory
    assert second.snapshot(PCI).counts == {"48": 1, "31": 1}
    # The kernel log read again from the start does not count its old record twice.
    assert not second.record(PCI, 31, "kernel", seq=900)
    clock.t += 3600  # the window passes: the application error ages out, the ECC error stays
    assert second.snapshot(PCI).counts == {"48": 1}
    assert second.snapshot(PCI).total == 2 and second.warning is None


def test_a_new_boot_id_clears_everything(tmp_path: Path) -> None:
    clock = Clock()
    first = tracker(tmp_path, clock)
    first.record(PCI, 79, "nvml")
    first.record(PCI, 48, "nvml")
    first.snapshot(PCI)
    rebooted = tracker(tmp_path, Clock(t=30.0), boot_id="boot-b")
    assert rebooted.snapshot(PCI).counts == {} and rebooted.snapshot(PCI).total == 0
    assert verdict(rebooted) == []


def test_a_reset_clears_what_a_reset_clears_but_not_a_reboot_xid(tmp_path: Path) -> None:
    clock = Clock()
    tr = tracker(tmp_path, clock)
    marker = {"uuid": "GPU-1", "ecc_volatile_uncorrected": 0, "row_remap_pending": False}
    tr.observe_chip(PCI, marker)
    clock.t += 5
    tr.record(PCI, 48, "nvml")
    tr.record(PCI, 79, "nvml")
    clock.t += 5
    assert not tr.observe_chip(PCI, {**marker, "ecc_volatile_uncorrected": 1, "row_remap_pending": True})
    assert tr.snapshot(PCI).counts == {"48": 1, "79": 1}
    tr.snapshot(PCI)
    # The agent restarts, then sees the chip reset while it was down (the pending remap applied).
    clock.t += 5
    again = tracker(tmp_path, clock)
    assert again.observe_chip(PCI, {**marker, "ecc_volatile_uncorrected": 0, "row_remap_pending": False})
    assert again.snapshot(PCI).counts == {"79": 1}


def test_recovery_action_back_to_none_is_a_reset(tmp_path: Path) -> None:
    clock = Clock()
    tr = XidTracker(clock=clock)
    tr.record(PCI, 154, "kernel", qualifier="gpu_reset")
    clock.t += 1
    tr.observe_chip(PCI, {"recovery_action": 1})
    clock.t += 1
    assert tr.snapshot(PCI).counts == {"154:gpu_reset": 1}
    assert tr.observe_chip(PCI, {"recovery_action": 0})
    assert tr.snapshot(PCI).counts == {}


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"format": "other"}',
                                     b'{"format": "fleet-agent.xid-history/1", "boot_id": "boot-a", '
                                     b'"chips": {"0000:3b:00": {"events": [["x", 48]]}}}'])
def test_a_corrupt_history_is_set_aside_with_a_warning(tmp_path: Path, content: bytes) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(content)
    tr = tracker(tmp_path, Clock())
    assert tr.warning is not None and "set aside" in tr.warning and FILE_NAME in tr.warning
    assert (state / (FILE_NAME + ".corrupt")).read_bytes() == content
    assert tr.snapshot(PCI).counts == {}
    tr.record(PCI, 48, "nvml")
    tr.snapshot(PCI)
    assert json.loads((state / FILE_NAME).read_text())["chips"][PCI]["events"][0][1] == 48


def test_an_unwritable_state_dir_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    tr = XidTracker(clock=Clock(), state_dir=str(blocker / "state"), boot_id_path=boot(tmp_path, "b"))
    tr.record(PCI, 48, "nvml")
    assert tr.snapshot(PCI).counts == {"48": 1}
    assert tr.warning is not None and "cannot write" in tr.warning


def test_history_file_stays_bounded_in_an_xid_storm(tmp_path: Path) -> None:
    clock = Clock()
    tr = tracker(tmp_path, clock)
    for _ in range(5000):
        clock.t += 0.01
        tr.record(PCI, 48, "nvml")
        tr.record(PCI, 13, "nvml")
    assert tr.snapshot(PCI).counts["48"] == 5000
    assert (tmp_path / "state" / FILE_NAME).stat().st_size < 64 * 1024


def test_store_writes_atomically(tmp_path: Path) -> None:
    store = XidHistoryStore(str(tmp_path))
    assert store.save({"format": "fleet-agent.xid-history/1", "boot_id": "b", "chips": {}})
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind
    loaded = store.load(time.monotonic())
    assert loaded == {"format": "fleet-agent.xid-history/1", "boot_id": "b", "chips": {}}


def test_state_dir_config_key(tmp_path: Path) -> None:
    assert config_from_dict({}).state_dir == "/var/lib/fleet-agent"
    assert config_from_dict({"state_dir": str(tmp_path) + "/"}).state_dir == str(tmp_path)
    for bad, words in (("relative/dir", "absolute"), ("", "directory path"), (5, "directory path")):
        with pytest.raises(ConfigError, match=r"^c\.yaml: state_dir: ") as e:
            config_from_dict({"state_dir": bad}, "c.yaml")
        assert words in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        config_from_dict({"state_dir": str(tmp_path / "f")}, "c.yaml")


def test_a_one_shot_reader_sees_the_services_history_and_never_writes_or_moves_it(tmp_path: Path) -> None:
    # `fleet-agent check` run by slurmd as root beside the service: it must judge by the service's
    # history, and leave the file exactly as it was (a root-owned rewrite would lock the service out).
    clock = Clock()
    service = tracker(tmp_path, clock)
    service.record(PCI, 48, "nvml")
    service.snapshot(PCI)
    path = tmp_path / "state" / FILE_NAME
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns

    reader = XidTracker(window_s=3600, clock=clock, state_dir=str(tmp_path / "state"),
                        boot_id_path=boot(tmp_path, "boot-a"), read_only=True)
    reader.record(PCI, 79, "nvml")
    assert reader.snapshot(PCI).counts == {"48": 1, "79": 1}
    reader.flush()
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime

    path.write_bytes(b"{not json")
    broken = XidTracker(window_s=3600, clock=clock, state_dir=str(tmp_path / "state"),
                        boot_id_path=boot(tmp_path, "boot-a"), read_only=True)
    broken.snapshot(PCI)  # a sample does not write, nor forget why the history was ignored
    assert broken.warning is not None and "read-only" in broken.warning
    assert path.read_bytes() == b"{not json" and not (tmp_path / "state" / (FILE_NAME + ".corrupt")).exists()


def _history(chip: dict[str, object], **top: object) -> bytes:
    doc: dict[str, object] = {"format": "fleet-agent.xid-history/1", "boot_id": "boot-a", "kernel_seq": -1,
                              "chips": {PCI: chip}}
    doc.update(top)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("content", "where"), [
    (_history({"events": [[10**400, 48, None, None, ["nvml"]]]}), "events"),  # float() overflows
    (b'{"format": "fleet-agent.xid-history/1", "boot_id": "boot-a", "chips": {"0000:3b:00": '
     b'{"events": [[Infinity, 13, null, null, ["nvml"]]]}}}', "events"),  # counts forever
    (_history({"events": [[1e12, 31, None, None, ["nvml"]]]}), "events"),  # from the future
    (_history({"events": [[-1.0, 48, None, None, ["nvml"]]]}), "events"),
    (_history({"events": [], "marker": {}, "marker_at": 10**400}), "marker"),
    (_history({"events": [], "marker": {"uuid": ["x"]}, "marker_at": 1.0}), "marker"),
    (_history({"events": [], "last": ["yesterday", 79]}), "last"),
    (_history({"events": [], "last": [None, 79]}), "last"),
    (_history({"events": [], "carry": {"junk": 1, "48": 3}}), "carry"),
    (_history({"events": []}, kernel_seq=2**62), "kernel_seq"),  # would drop every new kernel XID
    (b'{"format": "fleet-agent.xid-history/1", "boot_id": "boot-a", '
     b'"chips": {"not-a-pci-id": {"events": []}}}', "PCI address"),
])
def test_a_history_that_looks_right_but_is_not_is_set_aside_never_a_crash(
        tmp_path: Path, content: bytes, where: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(content)
    tr = tracker(tmp_path, Clock())
    assert tr.warning is not None and "set aside" in tr.warning and where in tr.warning, tr.warning
    assert (state / (FILE_NAME + ".corrupt")).read_bytes() == content
    assert tr.snapshot(PCI).counts == {}
    assert tr.record(PCI, 79, "kernel", seq=5)  # new XIDs still count


def test_a_marker_value_of_another_type_is_no_reset_and_no_crash(tmp_path: Path) -> None:
    tr = tracker(tmp_path, Clock())
    tr.record(PCI, 48, "nvml")
    assert not tr.observe_chip(PCI, {"recovery_action": "0x2", "ecc_volatile_corrected": 3})
    assert not tr.observe_chip(PCI, {"recovery_action": 0, "ecc_volatile_corrected": "1"})
    assert tr.snapshot(PCI).counts == {"48": 1}


def test_a_reset_does_not_clear_xid_154_while_the_driver_still_asks_for_a_recovery(tmp_path: Path) -> None:
    # NVML alone (no kernel log) numbers 154 without its words; its recovery-action field says
    # what the driver still wants: a GPU reset that left "node reboot required" did not satisfy it.
    clock = Clock()
    tr = tracker(tmp_path, clock)
    tr.observe_chip(PCI, {"ecc_volatile_corrected": 5, "recovery_action": 2})
    tr.record(PCI, 154, "nvml")
    tr.record(PCI, 48, "nvml")
    clock.t += 10
    assert tr.observe_chip(PCI, {"ecc_volatile_corrected": 0, "recovery_action": 2})  # a reset
    assert tr.snapshot(PCI).counts == {"154": 1}  # 48 cleared by the reset, 154 not
    clock.t += 10
    tr.observe_chip(PCI, {"ecc_volatile_corrected": 0, "recovery_action": 2})
    clock.t += 10
    assert tr.observe_chip(PCI, {"ecc_volatile_corrected": 0, "recovery_action": 0})  # recovered
    assert tr.snapshot(PCI).counts == {}


def test_a_ticking_reset_marker_is_written_once_a_minute_an_xid_at_once(tmp_path: Path) -> None:
    # Eight GPUs whose corrected-ECC counts tick would otherwise rewrite (and fsync) the file after
    # every chip of every sample.
    clock = Clock()
    tr = tracker(tmp_path, clock)
    path = tmp_path / "state" / FILE_NAME
    tr.observe_chip(PCI, {"ecc_volatile_corrected": 1})
    tr.snapshot(PCI)
    first = path.stat().st_ino  # every write replaces the file: a new inode
    for n in range(2, 6):
        clock.t += 5
        tr.observe_chip(PCI, {"ecc_volatile_corrected": n})
        tr.snapshot(PCI)
    assert path.stat().st_ino == first  # markers only: not yet
    tr.record(PCI, 48, "nvml")
    tr.snapshot(PCI)
    assert json.loads(path.read_text())["chips"][PCI]["marker"] == {"ecc_volatile_corrected": 5}
    clock.t += 5
    tr.observe_chip(PCI, {"ecc_volatile_corrected": 6})
    tr.flush(final=True)  # on close, whatever changed
    assert json.loads(path.read_text())["chips"][PCI]["marker"] == {"ecc_volatile_corrected": 6}


XID_48 = "[ 12.0] NVRM: Xid (PCI:0000:3b:00): 48, pid=1, name=x, DBE (0x0)\n"
XID_79 = "[ 80.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=x, GPU has fallen off the bus.\n"


def read_file_log(tr: XidTracker, log: Path, booted_at: float = 0.0) -> KernelLogReader:
    """Start a reader on a plain file and let it read what is there (start() reads it at once)."""
    reader = KernelLogReader(tr, str(log), poll_s=60, booted_at=booted_at)
    assert reader.start(), reader.error
    return reader


def restart(tr: XidTracker, reader: KernelLogReader) -> None:
    reader.stop()
    tr.flush(final=True)  # as the collector's close does


def test_a_plain_file_log_is_not_counted_again_at_each_agent_start(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text("[ 1.0] nvidia: module loaded\n" + XID_48)
    clock = Clock()
    first = tracker(tmp_path, clock)
    restart(first, read_file_log(first, log))
    assert first.snapshot(PCI).counts == {"48": 1}
    for _ in range(3):  # restarts in the same boot: the same line is the same XID
        clock.t += 60
        again = tracker(tmp_path, clock)
        reader = read_file_log(again, log)
        assert again.snapshot(PCI).counts == {"48": 1} and again.snapshot(PCI).total == 1
        restart(again, reader)
    with log.open("a") as f:  # written while the agent was down: read on from where it stopped
        f.write(XID_79)
    later = tracker(tmp_path, clock)
    reader = read_file_log(later, log)
    try:
        assert later.snapshot(PCI).counts == {"48": 1, "79": 1} and later.snapshot(PCI).total == 2
    finally:
        reader.stop()


def test_after_a_reboot_a_plain_file_logs_old_xids_are_not_new(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(XID_79)
    first = tracker(tmp_path, Clock())
    restart(first, read_file_log(first, log))
    assert first.snapshot(PCI).counts == {"79": 1}
    with log.open("a") as f:  # the file lives on across the reboot; this boot logs one more XID
        f.write("[ 3.0] nvidia: module loaded\n" + XID_48)
    rebooted = tracker(tmp_path, Clock(t=30.0), boot_id="boot-b")
    reader = read_file_log(rebooted, log)
    try:
        assert rebooted.snapshot(PCI).counts == {"48": 1}  # the old 79 stays with the old boot
    finally:
        reader.stop()


def test_a_plain_file_written_before_this_boot_holds_no_xid_of_it(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(XID_79)
    os.utime(log, (1_000_000.0, 1_000_000.0))  # last written long before the boot began
    tr = XidTracker(clock=Clock())  # no history at all (no state directory)
    reader = KernelLogReader(tr, str(log), poll_s=0.02, booted_at=2_000_000.0)
    assert reader.start()
    try:
        assert tr.snapshot(PCI).counts == {}
        with log.open("a") as f:
            f.write(XID_48)
        deadline = time.monotonic() + 10
        while tr.snapshot(PCI).total == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tr.snapshot(PCI).counts == {"48": 1}
    finally:
        reader.stop()


def test_a_plain_file_rewritten_in_place_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(XID_48)
    clock = Clock()
    first = tracker(tmp_path, clock)
    restart(first, read_file_log(first, log))
    stored = json.loads((tmp_path / "state" / FILE_NAME).read_text())["kernel_file"]
    assert stored["path"] == str(log) and stored["offset"] == len(XID_48)
    with log.open("r+") as f:  # same inode, other lines (a copytruncate rotation refilled it)
        f.write(XID_79.replace("[ 80.0]", "[ 9.0]") + XID_79)
    again = tracker(tmp_path, clock)
    reader = read_file_log(again, log)
    try:
        assert again.snapshot(PCI).counts == {"48": 1, "79": 2}
    finally:
        reader.stop()
