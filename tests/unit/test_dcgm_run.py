"""fleetctl.burnin.run: per-host burn-in results from the playbook's events (FakeRunner, no Ansible)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetctl.burnin.dcgm import Status
from fleetctl.burnin.run import host_result, results_from_events, run_dcgm_diagnostics
from fleetctl.errors import UsageError
from fleetctl.runner import FakeRunner, fake_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dcgm"
GB10 = (FIXTURES / "dcgm4.2.3_gb10_level1_fail.json").read_text()
PASS8 = (FIXTURES / "dcgm3.1_level1_8gpu_pass.json").read_text()


def fact(host: str, **result: Any) -> dict[str, Any]:
    return fake_event("runner_on_ok", host, task="Record", res={"ansible_facts": {"burn_in_result": result}})


def ran(stdout: str, rc: int | str | None = 0, **more: Any) -> dict[str, Any]:
    return {"ran": True, "level": 1, "rc": rc, "stdout": stdout, "msg": "", "timeout_s": 300, **more}


def test_a_passing_diagnostic_passes_and_names_the_check() -> None:
    result = host_result("h", ran(PASS8, expected_gpus=8), 1)
    assert result.status is Status.PASS
    assert result.ran == ("dcgm diag -r 1",) and result.not_run == ()
    assert result.report is not None and result.report.version == "3.1.0"


def test_a_failing_gpu_fails_the_host_with_dcgm_s_words() -> None:
    result = host_result("spark", ran(GB10, rc=226), 1)
    assert result.status is Status.FAIL
    assert result.rc == 226
    assert "software GPU 0: fail (Persistence Mode" in result.reason


def test_rc_as_text_is_read() -> None:
    assert host_result("spark", ran(GB10, rc="226"), 1).rc == 226


def test_a_non_nvidia_host_is_not_applicable_and_never_passes() -> None:
    result = host_result("tpu-1", {"ran": False, "applicable": False,
                                   "reason": "not an NVIDIA host (not in group gpu_nodes)"}, 1)
    assert result.status is Status.UNKNOWN
    assert result.applicable is False
    assert result.not_run == ("dcgm diag -r 1: not an NVIDIA host (not in group gpu_nodes)",)


def test_no_dcgmi_is_unknown_and_applicable() -> None:
    result = host_result("gpu-1", {"ran": False, "reason": "dcgmi not found on the host"}, 2)
    assert (result.status, result.applicable) == (Status.UNKNOWN, True)
    assert result.not_run == ("dcgm diag -r 2: dcgmi not found on the host",)


def test_a_timeout_is_unknown_with_its_limit() -> None:
    result = host_result("gpu-1", ran("", rc=None, msg="Timeout exceeded", timeout_s=900), 2)
    assert result.status is Status.UNKNOWN
    assert result.reason == "dcgmi did not finish within 900 s (Timeout exceeded)"


def test_dcgmi_s_error_line_is_unknown_with_exit_status() -> None:
    result = host_result("gpu-1", ran("Error: unable to establish a connection to the specified host: x\n",
                                      rc=235), 1)
    assert result.status is Status.UNKNOWN
    assert result.reason == ("gpu-1: dcgmi printed no JSON: Error: unable to establish a connection to the "
                             "specified host: x (dcgmi exited 235)")


def test_a_non_zero_exit_with_passing_results_is_not_a_pass() -> None:
    result = host_result("gpu-1", ran(PASS8, rc=226), 1)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("dcgmi exited 226 but its results show no failure")


def test_fewer_gpus_than_expected_fails() -> None:
    result = host_result("gpu-1", ran(PASS8, expected_gpus="9"), 1)
    assert result.status is Status.FAIL
    assert result.reason == "DCGM saw 8 of 9 expected GPUs"


def test_hosts_without_a_result_are_unknown_with_why() -> None:
    events = [
        fact("good", **ran(PASS8)),
        fake_event("runner_on_unreachable", "gone", task="Look for dcgmi",
                   res={"msg": "Failed to connect to the host via ssh"}),
        fake_event("runner_on_failed", "broken", task="Check the run level", res={"msg": "level 9"}),
    ]
    results = results_from_events(events, 1, expected_hosts=["good", "gone", "broken", "silent"])
    assert list(results) == ["broken", "gone", "good", "silent"]
    assert results["good"].status is Status.PASS
    assert results["gone"].reason == "unreachable: Look for dcgmi: Failed to connect to the host via ssh"
    assert results["broken"].reason.startswith("the burn-in playbook failed before the diagnostic")
    assert results["silent"].reason == "no result (the host was not reached by the burn-in playbook)"
    assert all(results[h].status is Status.UNKNOWN for h in ("gone", "broken", "silent"))


def test_run_passes_level_and_command_and_reads_the_events(tmp_path: Path) -> None:
    runner = FakeRunner(events=[fact("spark", **ran(GB10, rc=226)),
                                fact("tpu", ran=False, applicable=False, reason="not an NVIDIA host")])
    result = run_dcgm_diagnostics(["inv.yml"], workdir=tmp_path / "w", pattern="burn", level=3,
                                  dcgmi=["python3", "-m", "fleet_agent.sim.dcgmi"], runner=runner)
    [request] = runner.requests
    assert request.playbook.name == "burn_in.yml" and request.playbook.is_file()
    assert request.limit == "burn"
    assert request.cmdline[0] == "-e"
    assert json.loads(request.cmdline[1]) == {"burn_in_level": 3,
                                              "burn_in_dcgmi": ["python3", "-m", "fleet_agent.sim.dcgmi"]}
    assert result.hosts["spark"].status is Status.FAIL
    assert result.hosts["tpu"].applicable is False
    assert result.status is Status.FAIL


@pytest.mark.parametrize(("level", "dcgmi"), [(0, None), (5, None), (1, []), (1, [""])])
def test_bad_requests_are_usage_errors(tmp_path: Path, level: int, dcgmi: list[str] | None) -> None:
    with pytest.raises(UsageError):
        run_dcgm_diagnostics(["inv.yml"], workdir=tmp_path, level=level, dcgmi=dcgmi, runner=FakeRunner())


def test_a_pass_that_names_no_gpu_is_unknown_when_gpus_are_expected() -> None:
    doc = json.loads(PASS8)
    for category in doc["DCGM GPU Diagnostic"]["test_categories"]:
        for test in category.get("tests") or ():
            for result in (test or {}).get("results") or ():
                result.pop("gpu_ids", None)
    result = host_result("gpu-1", ran(json.dumps(doc), expected_gpus=8), 1)
    assert result.status is Status.UNKNOWN
    assert result.reason.startswith("DCGM's results name none of the 8 expected GPUs")


def test_burn_in_keeps_host_key_checking_on_whatever_is_inherited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ansible-runner copies os.environ and defaults the setting to False: the request must say True.
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    runner = FakeRunner()
    run_dcgm_diagnostics(["inv.yml"], workdir=tmp_path / "w", level=1, runner=runner)
    [request] = runner.requests
    assert request.envvars["ANSIBLE_HOST_KEY_CHECKING"] == "True"
