"""playbooks/burn_in.yml through fleetctl's real runner (ansible-runner, ansible-playbook), hosts on
``ansible_connection=local``, each simulated GPU host's ``dcgmi`` the stand-in
(``python -m fleet_agent.sim.dcgmi``) answering from one scenario; the results are the production
parser's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from fleetctl.burnin.dcgm import Status
from fleetctl.burnin.run import run_dcgm_diagnostics

pytestmark = pytest.mark.integration

SCENARIO = {
    "seed": 5,
    "groups": [
        {"name": "h100", "count": 3, "kind": "gpu", "model": "H100-SXM5-80GB", "chips": 4},
        {"name": "v5e", "count": 1, "kind": "tpu", "model": "v5e", "chips": 4},
    ],
    "faults": [
        {"kind": "ecc_uncorrectable", "group": "h100", "hosts": [1], "chips": [2], "count": 2},
        {"kind": "thermal_throttle", "group": "h100", "hosts": [2], "chips": [3]},
    ],
}


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inventory of the scenario's hosts, run locally, and one GPU host without dcgmi."""
    for name in [k for k in os.environ if k.startswith("ANSIBLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    # An absolute async directory: with a HOME of its own, "~" in Ansible's default can expand to
    # different directories for the job's writer and its poller on a local connection.
    monkeypatch.setenv("ANSIBLE_ASYNC_DIR", str(tmp_path / "async"))
    scenario = tmp_path / "fleet.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    stand_in = [sys.executable, "-m", "fleet_agent.sim.dcgmi", "--scenario", str(scenario),
                "--host", "{{ inventory_hostname }}"]
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "burn_in_dcgmi": stand_in, "fleet_agent_expected_chips": 4},
        "children": {
            "gpu_nodes": {"hosts": {"h100-0000": {}, "h100-0001": {}, "h100-0002": {},
                                    "gpu-nodcgm": {"burn_in_dcgmi": [str(tmp_path / "no" / "dcgmi")]}}},
            "tpu_nodes": {"hosts": {"v5e-0000": {}}},
        }}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def test_level_two_fails_the_memory_test_of_the_gpu_with_memory_errors(fleet: Path, tmp_path: Path) -> None:
    result = run_dcgm_diagnostics([str(fleet)], workdir=tmp_path / "runner", level=2, cwd=tmp_path)
    hosts = result.hosts
    assert sorted(hosts) == ["gpu-nodcgm", "h100-0000", "h100-0001", "h100-0002", "v5e-0000"]

    bad = hosts["h100-0001"]
    assert bad.status is Status.FAIL
    assert bad.rc == 205  # DCGM_ST_NVVS_ISOLATE_ERROR: a double-bit error isolates the GPU
    assert bad.report is not None
    table = bad.report.per_gpu()
    assert table[2] == {"software": Status.PASS, "pcie": Status.PASS, "memory": Status.FAIL}
    assert all(table[g]["memory"] is Status.PASS for g in (0, 1, 3))
    [finding] = bad.report.findings()
    assert finding.messages[0].text == "Detected 2 volatile double-bit ECC error(s) in GPU 2."

    good = hosts["h100-0000"]
    assert good.status is Status.PASS and good.ran == ("dcgm diag -r 2",)
    assert good.report is not None and good.report.gpus == (0, 1, 2, 3)

    # Thermal trouble shows under stress (level 3), not at level 2.
    assert hosts["h100-0002"].status is Status.PASS

    assert hosts["gpu-nodcgm"].status is Status.UNKNOWN
    assert "dcgmi not found on the host" in hosts["gpu-nodcgm"].not_run[0]
    tpu = hosts["v5e-0000"]
    assert (tpu.status, tpu.applicable) == (Status.UNKNOWN, False)
    assert tpu.not_run[0].startswith("dcgm diag -r 2: not an NVIDIA host")
    assert result.status is Status.FAIL


def test_level_three_catches_thermal_throttling_under_stress(fleet: Path, tmp_path: Path) -> None:
    result = run_dcgm_diagnostics([str(fleet)], workdir=tmp_path / "runner", pattern="h100-0002", level=3,
                                  cwd=tmp_path)
    [hot] = result.hosts.values()
    assert hot.status is Status.FAIL
    assert hot.report is not None
    assert {(f.test, f.gpu) for f in hot.report.findings()} == {("targeted_stress", 3), ("targeted_power", 3)}


def test_a_diagnostic_that_overruns_its_level_s_time_is_unknown(fleet: Path, tmp_path: Path) -> None:
    scenario = yaml.safe_load((tmp_path / "fleet.yaml").read_text())
    scenario["faults"].append({"kind": "hang", "group": "h100", "hosts": [0], "chips": [1], "seconds": 30})
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(scenario))
    try:
        result = run_dcgm_diagnostics([str(fleet)], workdir=tmp_path / "runner", pattern="h100-0000",
                                      level=1, cwd=tmp_path, extra_vars={"burn_in_timeouts": {"1": 3}})
    finally:
        # Ansible's async timeout stops its job, not always the stand-in below it: end ours.
        for proc in psutil.process_iter(["cmdline"]):
            if str(tmp_path / "fleet.yaml") in (proc.info["cmdline"] or []):
                proc.kill()
    [hung] = result.hosts.values()
    assert hung.status is Status.UNKNOWN
    assert hung.reason == "dcgmi did not finish within 3 s (Timeout exceeded)"
