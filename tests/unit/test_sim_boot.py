"""Faults a reboot clears: a scenario fault pinned to a boot (``boot:``) is on only in that boot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fleet_agent.sim import ScenarioError, parse_scenario
from fleet_agent.sim.boot import boot_marker, read_boot_marker
from fleet_agent.sim.fake_nvml import NVMLError

DOC: dict[str, Any] = {
    "hosts": 2,
    "groups": [{"name": "g", "count": 2, "kind": "gpu", "model": "H100-SXM5-80GB", "chips": 2}],
}
# /proc/1/stat of a systemd PID 1 (fields from the 3rd on: state ppid ... starttime is the 22nd).
STAT = "1 (sys temd) (x)) S 0 1 1 0 -1 4194560 100 200 10 20 30 40 50 60 20 0 1 0 {start} 2000 300\n"


def test_the_marker_is_the_boot_id_and_pid_1_start_time(tmp_path: Path) -> None:
    (tmp_path / "boot_id").write_text("1b2c-77\n")
    (tmp_path / "stat").write_text(STAT.format(start=987654))
    assert read_boot_marker(tmp_path / "boot_id", tmp_path / "stat") == "1b2c-77/987654"
    # A container's restart: the same kernel boot id, a new PID 1.
    (tmp_path / "stat").write_text(STAT.format(start=990001))
    assert read_boot_marker(tmp_path / "boot_id", tmp_path / "stat") == "1b2c-77/990001"
    # What cannot be read is empty, never an error (a host without /proc/1 access).
    assert read_boot_marker(tmp_path / "none", tmp_path / "none") == "/"


def test_this_hosts_marker_is_read_once_and_names_a_pid_1_start() -> None:
    assert boot_marker() is boot_marker()
    assert boot_marker().rsplit("/", 1)[1].isdigit()


@pytest.mark.parametrize(("boot", "broken"), [(None, True), ("this", True), ("another/1", False)])
def test_a_fault_pinned_to_a_boot_is_off_in_any_other(boot: str | None, broken: bool) -> None:
    fault: dict[str, Any] = {"kind": "driver_mismatch", "group": "g", "hosts": [0]}
    if boot is not None:
        fault["boot"] = boot_marker() if boot == "this" else boot
    nv = parse_scenario({**DOC, "faults": [fault]}).host(0).nvml
    if broken:
        with pytest.raises(NVMLError) as failed:
            nv.nvmlInit()
        assert type(failed.value).__name__ == "NVMLError_LibRmVersionMismatch"
    else:
        nv.nvmlInit()  # rebooted since: the driver the reboot loaded works
        assert nv.nvmlDeviceGetCount() == 2


def test_an_xid_pinned_to_an_earlier_boot_raises_no_event() -> None:
    fault = {"kind": "xid", "group": "g", "hosts": [0], "chips": [1], "code": 79, "boot": "earlier/5"}
    host = parse_scenario({**DOC, "faults": [fault]}).host(0)
    assert host.faults[0].occurrence(10.0) is None
    pinned = parse_scenario({**DOC, "faults": [{**fault, "boot": boot_marker()}]}).host(0)
    assert pinned.faults[0].occurrence(10.0) == 0.0


def test_a_boot_that_is_not_a_string_is_refused() -> None:
    fault = {"kind": "driver_mismatch", "group": "g", "hosts": [0], "boot": 17}
    with pytest.raises(ScenarioError, match=r"test.yaml: faults\[0\].boot: expected a non-empty string"):
        parse_scenario({**DOC, "faults": [fault]}, "test.yaml")
