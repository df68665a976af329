"""Simulated GPU resets at their edges: the nvidia-smi stand-in resets the GPU that ``-i`` names among
those enumerated now (with a GPU missing, NVML's indexes shift: the reset must land on the chip named,
not on the chip whose own index is the number given); a reset ends an XID occurrence for NVML's event
API too, not only for the readings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.sim import nvidia_smi, parse_scenario
from fleet_agent.sim.resets import ResetLog, read_start, record_reset, write_start


def test_a_reset_by_nvml_index_lands_on_that_chip_when_a_gpu_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scen = {"seed": 3, "groups": [{"name": "g", "count": 1, "kind": "gpu", "model": "H100-SXM5-80GB",
                                   "chips": 3, "driver_version": "570.124.06"}],
            "faults": [{"group": "g", "kind": "chip_missing", "hosts": [0], "chips": [0], "at": 0},
                       {"group": "g", "kind": "row_remap_pending", "hosts": [0], "chips": [2], "at": 0}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scen))
    state = tmp_path / "fleet.yml.sim"
    write_start(state, time.monotonic() - 5)
    sc = parse_scenario(scen, str(path)).sharing(ResetLog(state, refresh_s=0.0), start=read_start(state))
    col = NvmlCollector(sc.host(0).nvml, xid_events="off")
    chips = col.discover()
    pending = [c for c in chips if col.sample_chip(c).gpu.row_remap_pending]  # type: ignore[union-attr]
    assert len(chips) == 2 and pending == [chips[1]]  # NVML index 1 is the third physical chip
    rc = nvidia_smi.main(["--scenario", str(path), "--host", sc.host(0).name, "--state-dir", str(state),
                          "--", "-r", "-i", "1"])
    assert rc == 0 and "was successfully reset." in capsys.readouterr().out
    assert [p.name for p in (state / "resets" / sc.host(0).name).iterdir()] == ["2"]  # the physical chip
    assert not any(col.sample_chip(c).gpu.row_remap_pending for c in chips)  # type: ignore[union-attr]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_reset_stops_the_events_of_the_occurrence_it_ended(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    doc = {"seed": 3, "groups": [{"name": "g", "count": 1, "kind": "gpu", "model": "H100-SXM5-80GB",
                                  "chips": 1, "driver_version": "570.124.06"}],
           "faults": [{"group": "g", "hosts": [0], "chips": [0], "kind": "xid", "code": 48, "count": 5,
                       "interval_s": 10, "at": 0}]}  # events at 0, 10, 20, 30, 40
    sc = parse_scenario(doc, clock=clock)
    write_start(tmp_path, sc.start)
    sc = sc.sharing(ResetLog(tmp_path, refresh_s=0.0, clock=clock))
    host = sc.host(0)
    nv = host.nvml
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    events = nv.nvmlEventSetCreate()
    nv.nvmlDeviceRegisterEvents(gpu, 0x8, events)
    record_reset(tmp_path, host.name, 0, 15.0)  # nvidia-smi -r at t=15
    clock.t = sc.start + 100
    got = []
    while True:
        try:
            got.append(nv.nvmlEventSetWait_v2(events, 0).eventData)
        except nv.NVMLError:
            break
    assert got == [48, 48]  # the two before the reset; the occurrence ended there
    assert gpu.xids_seen(100) == []


def test_a_reset_written_within_the_mtime_granularity_of_a_read_is_not_missed(tmp_path: Path) -> None:
    """A directory whose mtime is recent is read again: a second reset may leave the same mtime on a
    filesystem with coarse timestamps (emulated here by setting it back)."""
    import os

    log = ResetLog(tmp_path, refresh_s=0.0)
    record_reset(tmp_path, "g-0000", 0, 5.0)
    assert log.latest("g-0000", 0) == 5.0
    host_dir = tmp_path / "resets" / "g-0000"
    before = host_dir.stat().st_mtime_ns
    record_reset(tmp_path, "g-0000", 0, 9.0)
    os.utime(host_dir, ns=(before, before))  # the same mtime as the first read saw
    assert log.latest("g-0000", 0) == 9.0
