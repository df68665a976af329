"""Faults over time and GPU resets in the simulation: a fault's on/off windows, the nvidia-smi
stand-in's answers and the resets it records, and the chips (the agent's collector, the dcgmi
stand-in) honouring them: a fault a reset clears ends, a persistent one stays."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fleet_agent.collectors.nvml import NvmlCollector
from fleet_agent.sim import ScenarioError, dcgmi, nvidia_smi, parse_scenario
from fleet_agent.sim.inventory import burn_in_vars, remediate_vars
from fleet_agent.sim.resets import (
    ResetLog,
    SimStateError,
    read_start,
    record_reset,
    state_dir_for,
    write_start,
)

from fleetctl.burnin.dcgm import Status, parse_diag


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def doc(*faults: dict[str, Any], driver: str = "570.124.06") -> dict[str, Any]:
    return {"seed": 3, "groups": [{"name": "g", "count": 2, "kind": "gpu", "model": "H100-SXM5-80GB",
                                   "chips": 2, "driver_version": driver}],
            "faults": [{"group": "g", "hosts": [0], "chips": [1], **f} for f in faults]}


# --- faults over time --------------------------------------------------------------------------

def test_until_and_repeat_windows() -> None:
    clock = Clock()
    sc = parse_scenario(doc({"kind": "thermal_throttle", "at": 10, "repeat_every": 20, "for_s": 5,
                             "until": 70}), clock=clock)
    gpu = sc.host(0).nvml.present_gpus()[1]
    on = [t for t in range(0, 100) if gpu.active("thermal_throttle", float(t))]
    assert on == [*range(10, 15), *range(30, 35), *range(50, 55)]  # 70 is past `until`


def test_a_flapping_fault_reaches_the_agent_on_and_off() -> None:
    clock = Clock()
    fault = {"kind": "row_remap_pending", "at": 2, "repeat_every": 10, "for_s": 4}
    sc = parse_scenario(doc(fault), clock=clock)
    nv = sc.host(0).nvml
    collector = NvmlCollector(nv, xid_events="off")
    chip = collector.discover()[1]
    seen = []
    for t in (1, 3, 7, 13, 17):
        clock.t = sc.start + t
        seen.append(collector.sample_chip(chip).gpu.row_remap_pending)
    assert seen == [False, True, False, True, False]


@pytest.mark.parametrize(("fault", "message"), [
    ({"until": 5, "at": 5}, "faults[0].until: must be after at (5), got 5"),
    ({"repeat_every": 0}, "faults[0].repeat_every: must be > 0, got 0"),
    ({"repeat_every": 10, "for_s": 10},
     "faults[0].for_s: must be below repeat_every (10), or the fault never goes off"),
    ({"reset_clears": "no"}, "faults[0].reset_clears: expected true or false, got 'no'"),
    ({"for_s": "2s"}, "faults[0].for_s: expected a number, got '2s'"),
])
def test_bad_timing_keys_are_one_line_errors(fault: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc({"kind": "thermal_throttle", **fault}), "t.yaml")
    assert str(err.value) == f"t.yaml: {message}"


def test_a_repeating_xid_raises_its_events_each_time() -> None:
    sc = parse_scenario(doc({"kind": "xid", "code": 95, "at": 4, "repeat_every": 12, "until": 40}),
                        clock=Clock())
    assert [at for at, _, _ in sc.host(0).nvml.present_gpus()[1].xids] == [4, 16, 28]


# --- which faults a reset ends -------------------------------------------------------------------

@pytest.mark.parametrize(("fault", "clears"), [
    ({"kind": "xid", "code": 95}, True),           # uncontained ECC: RESET_GPU
    ({"kind": "xid", "code": 79}, False),          # off the bus: RESTART_BM
    ({"kind": "ecc_uncorrectable"}, True),         # the volatile count zeroes
    ({"kind": "row_remap_pending"}, True),         # a reset applies the remap
    ({"kind": "retired_pages_pending"}, True),
    ({"kind": "nvlink_down", "links": [0]}, True),
    ({"kind": "row_remap_failure"}, False),        # RMA
    ({"kind": "thermal_throttle"}, False),
    ({"kind": "gpu_lost"}, False),
    ({"kind": "xid", "code": 95, "reset_clears": False}, False),  # a chip a reset does not mend
])
def test_reset_clears_per_kind(fault: dict[str, Any], clears: bool) -> None:
    [spec] = parse_scenario(doc(fault)).faults
    assert spec.reset_clears is clears


def shared(tmp_path: Path, *faults: dict[str, Any], driver: str = "570.124.06") -> tuple[Any, Clock, Path]:
    clock = Clock()
    state = tmp_path / "fleet.yml.sim"
    sc = parse_scenario(doc(*faults, driver=driver), clock=clock)
    write_start(state, sc.start)
    return sc.sharing(ResetLog(state, refresh_s=0.0, clock=clock)), clock, state


def test_a_reset_ends_a_resettable_xid_for_the_agent_and_the_diagnostic(tmp_path: Path) -> None:
    sc, clock, state = shared(tmp_path, {"kind": "xid", "code": 95, "at": 4})
    host = sc.host(0)
    collector = NvmlCollector(host.nvml, xid_events="poll")
    one = collector.discover()[1]
    clock.t = sc.start + 6
    assert collector.sample_chip(one).gpu.xid_counts == {"95": 1}
    gpu = host.nvml.present_gpus()[1]
    assert gpu.xids_seen(6) == [95] and gpu.recovery_action(6) == 1  # NVML asks for a GPU reset
    record_reset(state, host.name, 1, 7.0)
    clock.t = sc.start + 8
    assert collector.sample_chip(one).gpu.xid_counts == {}  # the recovery action is back to none

    assert gpu.xids_seen(9) == [] and gpu.recovery_action(9) == 0


def test_before_r570_the_recovery_field_is_not_supported(tmp_path: Path) -> None:
    sc, _clock, _ = shared(tmp_path, {"kind": "xid", "code": 95, "at": 4}, driver="535.183.06")
    nv = sc.host(0).nvml
    nv.nvmlInit()
    [value] = nv.nvmlDeviceGetFieldValues(nv.nvmlDeviceGetHandleByIndex(1), [230])
    assert value.nvmlReturn == 3


def test_a_reset_zeroes_volatile_ecc_but_not_aggregate_and_leaves_a_remap_failure(tmp_path: Path) -> None:
    sc, clock, state = shared(tmp_path, {"kind": "ecc_uncorrectable", "count": 2},
                              {"kind": "row_remap_failure"})
    nv = sc.host(0).nvml
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(1)
    clock.t = sc.start + 5
    assert (nv.nvmlDeviceGetTotalEccErrors(h, 1, 0), nv.nvmlDeviceGetTotalEccErrors(h, 1, 1)) == (2, 2)
    record_reset(state, "g-0000", 1, 6.0)
    clock.t = sc.start + 7
    assert (nv.nvmlDeviceGetTotalEccErrors(h, 1, 0), nv.nvmlDeviceGetTotalEccErrors(h, 1, 1)) == (0, 2)
    assert nv.nvmlDeviceGetRemappedRows(h)[3] == 1  # the failure stays: RMA


def test_a_later_occurrence_comes_back_after_a_reset(tmp_path: Path) -> None:
    sc, _clock, state = shared(tmp_path, {"kind": "xid", "code": 95, "at": 4, "repeat_every": 10})
    gpu = sc.host(0).nvml.present_gpus()[1]
    record_reset(state, "g-0000", 1, 6.0)
    assert gpu.xids_seen(8) == []
    assert gpu.xids_seen(15) == [95] and gpu.recovery_action(15) == 1


def test_the_reset_log_reads_again_only_after_its_refresh(tmp_path: Path) -> None:
    clock = Clock(0.0)
    log = ResetLog(tmp_path, refresh_s=1.0, clock=clock)
    assert log.latest("h", 0) is None
    record_reset(tmp_path, "h", 0, 3.0)
    assert log.latest("h", 0) is None  # cached
    clock.t = 1.5
    assert log.latest("h", 0) == 3.0
    record_reset(tmp_path, "h", 0, 9.0)
    clock.t = 3.0
    assert log.latest("h", 0) == 9.0 and log.latest("h", 1) is None


def test_state_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SimStateError, match=rf"^{tmp_path / 'start'}: cannot read the sim fleet's start"):
        read_start(tmp_path)
    (tmp_path / "start").write_text("soon\n")
    with pytest.raises(SimStateError, match=rf"^{tmp_path / 'start'}: not a number: 'soon'"):
        read_start(tmp_path)
    (tmp_path / "start").write_text(f"{time.monotonic() + 1e6}\n")
    with pytest.raises(SimStateError, match="not a start of this boot"):
        read_start(tmp_path)
    with pytest.raises(SimStateError, match="cannot name a directory"):
        record_reset(tmp_path, "../etc", 0, 1.0)
    assert state_dir_for("/x/fleet.yml") == Path("/x/fleet.yml.sim")


# --- the nvidia-smi stand-in ---------------------------------------------------------------------

SCENARIO = """\
seed: 3
groups:
  - {name: g, count: 2, kind: gpu, model: H100-SXM5-80GB, chips: 2, driver_version: 570.124.06}
faults:
  - {kind: xid, group: g, hosts: [0], chips: [1], code: 95, at: 0}
  - {kind: row_remap_failure, group: g, hosts: [1], chips: [0], at: 0}
  - {kind: gpu_lost, group: g, hosts: [1], chips: [1], at: 0}
"""


@pytest.fixture()
def fleet(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    state = tmp_path / "inv.yml.sim"
    write_start(state, time.monotonic())
    return path, state


def smi(capsys: pytest.CaptureFixture[str], fleet: tuple[Path, Path], host: str,
        *args: str) -> tuple[int, str]:
    path, state = fleet
    code = nvidia_smi.main(["--scenario", str(path), "--host", host, "--state-dir", str(state), "--", *args])
    return code, capsys.readouterr().out


def test_smi_answers_the_reset_playbooks_queries(capsys: pytest.CaptureFixture[str],
                                                 fleet: tuple[Path, Path]) -> None:
    assert smi(capsys, fleet, "g-0000", "--query-gpu=index", "--format=csv,noheader") == (0, "0\n1\n")
    code, out = smi(capsys, fleet, "g-0000", "--query-gpu=index,pci.bus_id", "--format=csv")
    assert (code, out.splitlines()[0]) == (0, "index, pci.bus_id")
    assert out.splitlines()[1].startswith("0, 00000000:")
    # no compute process on a simulated host: no line at all without a header
    apps = smi(capsys, fleet, "g-0000", "--query-compute-apps=pid", "--format=csv,noheader", "-i", "1")
    assert apps == (0, "")
    assert smi(capsys, fleet, "g-0000", "--query-compute-apps=pid,used_memory", "--format=csv") == \
        (0, "pid, used_memory\n")


def test_smi_errors_are_nvidia_smis(capsys: pytest.CaptureFixture[str], fleet: tuple[Path, Path]) -> None:
    assert smi(capsys, fleet, "g-0000", "--query-gpu=temp", "--format=csv") == \
        (2, 'Field "temp" is not a valid field to query.\n')
    assert smi(capsys, fleet, "g-0000", "-r", "-i", "7") == (6, "No devices were found\n")
    code, out = smi(capsys, fleet, "g-0000", "-q")
    assert code == 2 and out.startswith("Invalid combination of input arguments.")
    code, out = smi(capsys, fleet, "g-0001", "-r", "-i", "1")
    assert code == 15 and "GPU is lost.  Reboot the system to recover this GPU" in out


def test_a_reset_is_recorded_and_the_dcgmi_stand_in_sees_it(capsys: pytest.CaptureFixture[str],
                                                           fleet: tuple[Path, Path]) -> None:
    path, state = fleet

    def diag(host: str) -> Any:
        code = dcgmi.main(["--scenario", str(path), "--host", host, "--state-dir", str(state),
                           "diag", "-r", "2", "-j"])
        return code, parse_diag(capsys.readouterr().out, host=host)

    code, report = diag("g-0000")
    assert code != 0 and {(f.test, f.gpu) for f in report.findings()} == {("memory", 1)}
    code, out = smi(capsys, fleet, "g-0000", "-r", "-i", "1")
    assert code == 0 and out.startswith("GPU 00000000:") and out.endswith(":00.0 was successfully reset.\n")
    assert len((state / "resets" / "g-0000" / "1").read_text().split()) == 1
    code, report = diag("g-0000")
    assert (code, report.status) == (0, Status.PASS)
    # a failed row remap is for good: reset or not, DCGM fails the chip
    assert smi(capsys, fleet, "g-0001", "-r", "-i", "0")[0] == 0
    code, report = diag("g-0001")
    assert report.status is Status.FAIL and ("memory", 0) in {(f.test, f.gpu) for f in report.findings()}


def test_a_reset_needs_the_state_dir(capsys: pytest.CaptureFixture[str], fleet: tuple[Path, Path]) -> None:
    path, _ = fleet
    assert nvidia_smi.main(["--scenario", str(path), "--host", "g-0000", "-r", "-i", "0"]) == 2
    assert "give --state-dir" in capsys.readouterr().out


def test_the_inventory_vars_name_the_stand_ins_for_the_remediation_plays_only(
        fleet: tuple[Path, Path]) -> None:
    path, state = fleet
    rv = remediate_vars(str(path), 2, str(state), host_index=0)
    assert rv["remediate_connection"] == "local" and "ansible_connection" not in rv
    assert rv["fleetctl_reset_stop_services"] == [] and rv["fleetctl_remediate_become"] is False
    argv = [*rv["remediate_nvidia_smi"], "--query-gpu=index", "--format=csv,noheader"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "0\n1\n"), done.stderr
    bv = burn_in_vars(str(path), 2, state_dir=str(state), host_index=0)
    assert bv["burn_in_dcgmi"][-4:] == ["--host-index", "0", "--state-dir", str(state)]
    assert bv["burn_in_dcgmi"][:3] == [sys.executable, "-m", "fleet_agent.sim.dcgmi"]
    json.dumps(rv)  # the inventory is YAML/JSON data


def test_the_sim_fleets_inventory_carries_the_state_dir_for_both_stand_ins() -> None:
    from types import SimpleNamespace

    from fleet_agent.sim.inventory import inventory_doc

    rt = SimpleNamespace(name="h100-0000", port=38700, group="h100", kind="gpu",
                         sampler=SimpleNamespace(expected_chips=8))
    assert "remediate_nvidia_smi" not in inventory_doc([rt], scenario="/s.yaml")["all"]["vars"]
    variables = inventory_doc([rt], scenario="/s.yaml", state_dir="/i/fleet.yml.sim")["all"]["vars"]
    assert variables["burn_in_dcgmi"][-2:] == ["--state-dir", "/i/fleet.yml.sim"]
    assert variables["remediate_nvidia_smi"][3:] == ["--scenario", "/s.yaml", "--hosts", "1", "--host",
                                                     "{{ inventory_hostname }}", "--state-dir",
                                                     "/i/fleet.yml.sim", "--"]
    assert "ansible_connection" not in variables
