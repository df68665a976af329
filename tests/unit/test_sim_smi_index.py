"""The nvidia-smi stand-in resets the GPU that ``-i`` names among those enumerated now: with a GPU
missing, NVML's indexes shift, and the reset must land on the chip that was named, not on the chip whose
own index is the number given."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.sim import nvidia_smi, parse_scenario
from fleet_agent.sim.resets import ResetLog, read_start, write_start


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
