"""The dcgmi stand-in (fleet_agent.sim.dcgmi), read back through the production parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fleet_agent.sim import dcgmi

from fleetctl.burnin.dcgm import DiagParseError, Status, parse_diag

SCENARIO = {
    "seed": 11,
    "groups": [
        {"name": "h100", "count": 6, "kind": "gpu", "model": "H100-SXM5-80GB", "chips": 4},
        {"name": "v5e", "count": 1, "kind": "tpu", "model": "v5e", "chips": 4},
    ],
    "faults": [
        {"kind": "ecc_uncorrectable", "group": "h100", "hosts": [1], "chips": [2], "count": 3},
        {"kind": "thermal_throttle", "group": "h100", "hosts": [2], "chips": [0]},
        {"kind": "pcie_downgrade", "group": "h100", "hosts": [3], "chips": [1], "gen": 4},
        {"kind": "row_remap_pending", "group": "h100", "hosts": [4], "chips": [3]},
        {"kind": "gpu_lost", "group": "h100", "hosts": [5], "chips": [1]},
        {"kind": "chip_missing", "group": "h100", "hosts": [5], "chips": [3]},
        {"kind": "xid", "group": "h100", "hosts": [0], "chips": [1], "code": 31, "at": 100},
    ],
}


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    return path


def run(capsys: pytest.CaptureFixture[str], scenario: Path, host: str, level: int, *more: str
        ) -> tuple[int, str, str]:
    code = dcgmi.main(["--scenario", str(scenario), "--host", host, *more, "diag", "-r", str(level), "-j"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_healthy_host_passes_every_test_of_its_level(capsys: pytest.CaptureFixture[str],
                                                       scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "h100-0000", 4)
    report = parse_diag(out, host="h100-0000")
    assert code == 0
    assert report.status is Status.PASS
    assert [t.key for t in report.tests] == list(dcgmi.LEVEL_TESTS[4])
    assert report.gpus == (0, 1, 2, 3)
    assert report.driver_version and report.version == "4.2.3"


@pytest.mark.parametrize("layout", ["3", "4"])
def test_memory_errors_fail_the_memory_test_on_that_gpu(capsys: pytest.CaptureFixture[str], scenario: Path,
                                                        layout: str) -> None:
    code, out, _ = run(capsys, scenario, "h100-0001", 2, "--layout", layout)
    report = parse_diag(out)
    assert code == dcgmi.EXIT_ISOLATE == 205  # a double-bit error asks to isolate the GPU
    assert report.status is Status.FAIL
    table = report.per_gpu()
    assert table[2]["memory"] is Status.FAIL
    assert all(table[g]["memory"] is Status.PASS for g in (0, 1, 3))
    [finding] = report.findings()
    assert (finding.test, finding.gpu) == ("memory", 2)
    assert finding.messages[0].text == "Detected 3 volatile double-bit ECC error(s) in GPU 2."
    assert (finding.messages[0].error_id, finding.messages[0].severity) == (4, 2)


def test_level_one_does_not_see_what_only_level_two_tests(capsys: pytest.CaptureFixture[str],
                                                          scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "h100-0003", 1)
    assert (code, parse_diag(out).status) == (0, Status.PASS)
    code, out, _ = run(capsys, scenario, "h100-0003", 2)
    report = parse_diag(out)
    assert code == dcgmi.EXIT_FAIL == 226
    assert report.per_gpu()[1]["pcie"] is Status.FAIL
    assert report.findings()[0].messages[0].error_id == 45  # DCGM_FR_PCIE_GENERATION


def test_thermal_throttling_fails_the_stress_tests(capsys: pytest.CaptureFixture[str],
                                                   scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "h100-0002", 3)
    report = parse_diag(out)
    assert code == 226
    assert {f.test for f in report.findings()} == {"targeted_stress", "targeted_power"}
    assert {f.gpu for f in report.findings()} == {0}


@pytest.mark.parametrize("layout", ["3", "4"])
def test_a_pending_row_remap_fails_the_level_one_software_check(capsys: pytest.CaptureFixture[str],
                                                                scenario: Path, layout: str) -> None:
    code, out, _ = run(capsys, scenario, "h100-0004", 1, "--layout", layout)
    report = parse_diag(out)
    assert code == 226
    assert report.status is Status.FAIL
    assert report.per_gpu()[3]["software"] is Status.FAIL
    assert report.findings()[0].messages[0].error_id == 85  # DCGM_FR_PENDING_ROW_REMAP


def test_a_lost_gpu_fails_everything_and_a_missing_one_is_not_listed(capsys: pytest.CaptureFixture[str],
                                                                     scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "h100-0005", 2)
    report = parse_diag(out)
    assert code == 226
    assert report.gpus == (0, 1, 2)  # chip 3 is not enumerated
    assert report.per_gpu()[1] == {"software": Status.FAIL, "pcie": Status.FAIL, "memory": Status.FAIL}
    assert "GPU is lost" in report.findings()[0].messages[0].text


def test_fault_times_count_from_the_start_or_elapsed(capsys: pytest.CaptureFixture[str],
                                                     scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "h100-0000", 2)
    assert (code, parse_diag(out).status) == (0, Status.PASS)
    code, out, _ = run(capsys, scenario, "h100-0000", 2, "--elapsed", "150")
    report = parse_diag(out)
    assert code == 226
    assert report.findings()[0].messages[0].text == "Detected XID 31 for GPU 1"


def test_a_tpu_host_has_no_nvml_and_dcgmi_says_so_in_one_line(capsys: pytest.CaptureFixture[str],
                                                               scenario: Path) -> None:
    code, out, _ = run(capsys, scenario, "v5e-0000", 1)
    assert code == dcgmi.EXIT_NVML_NOT_LOADED == 200
    with pytest.raises(DiagParseError,
                       match="v5e-0000: dcgmi printed no JSON: Error: Unable to start an embedded"):
        parse_diag(out, host="v5e-0000")


def test_a_driver_that_is_not_loaded_stops_dcgmi(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({
        "groups": [{"name": "g", "count": 1, "kind": "gpu", "model": "L4", "chips": 1}],
        "faults": [{"kind": "driver_not_loaded", "group": "g", "hosts": [0]}]}))
    code, out, _ = run(capsys, path, "g-0000", 1)
    assert code == dcgmi.EXIT_NVML_ERROR == 248
    assert out == "Error: Unable to start an embedded host engine. NVML error.\n"


def test_the_host_comes_from_an_agent_config(capsys: pytest.CaptureFixture[str], scenario: Path,
                                             tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"simulation": {"scenario": str(scenario), "host_index": 1}}))
    code = dcgmi.main(["--config", str(config), "diag", "-r", "2", "-j"])
    report = parse_diag(capsys.readouterr().out)
    assert code == 205
    assert report.per_gpu()[2]["memory"] is Status.FAIL


def test_the_gpu_list_limits_the_run(capsys: pytest.CaptureFixture[str], scenario: Path) -> None:
    code = dcgmi.main(["--scenario", str(scenario), "--host", "h100-0001",
                       "diag", "-r", "2", "-j", "-i", "0,1"])
    report = parse_diag(capsys.readouterr().out)
    assert (code, report.status, report.gpus) == (0, Status.PASS, (0, 1))


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "nope-0001", "diag", "-r", "1", "-j"], "'nope-0001' is not a host of"),
    (["diag", "-r", "1", "-j"], "give the host as --host NAME or --host-index I"),
    (["--host-index", "99", "diag", "-r", "1", "-j"], "host index 99 is outside the scenario's 7 hosts"),
    (["--host", "h100-0000", "diag", "-r", "9", "-j"], "runs levels 1-4"),
    (["--host", "h100-0000", "diag", "-r", "1"], "answers only with JSON"),
])
def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], scenario: Path,
                                            args: list[str], message: str) -> None:
    code = dcgmi.main(["--scenario", str(scenario), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
