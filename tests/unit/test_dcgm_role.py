"""The dcgm role's variables, and the stand-in dcgmi/nv-hostengine its Molecule scenario installs.

The stand-ins run here as real processes (paths moved into a temporary directory, as the recipe
moves the version in): dcgmi answers from the fixture only while the host engine answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fleetctl.burnin.dcgm import DiagParseError, Status, parse_diag

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "dcgm"
STANDIN = REPO / "tests" / "standin_repo" / "dcgm"
FIXTURES = REPO / "tests" / "fixtures" / "dcgm"


def test_every_default_is_declared_with_the_same_value() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    spec = specs["main"]["options"]
    assert set(defaults) == set(spec)
    for name, option in spec.items():
        if "default" in option:
            assert option["default"] == defaults[name], name
        else:  # the mirror variables follow the driver role's
            assert defaults[name] == "{{ " + name.replace("dcgm_", "nvidia_driver_", 1) + " | default('') }}"


def test_the_recipe_ships_fixtures_that_exist() -> None:
    recipe = (REPO / "tests" / "standin_repo" / "recipes" / "dcgm.sh").read_text()
    prepare = (ROLE / "molecule" / "default" / "prepare.yml").read_text()
    names = ("dcgm3.1_level1_8gpu_pass.json", "dcgm4.2.3_gb10_level1_fail.json", "dcgmi_connection_error.txt")
    for name in names:
        assert (FIXTURES / name).is_file() and name in prepare
    assert "dcgm3.1_level1_8gpu_pass.json 0" in recipe and "dcgm4.2.3_gb10_level1_fail.json 226" in recipe


def _install(tmp_path: Path, tool: str) -> Path:
    text = (STANDIN / tool).read_text()
    text = text.replace("@VERSION@", "4.2.3")
    text = text.replace("/run/nvidia-dcgm/standin-hostengine.sock", str(tmp_path / "he.sock"))
    text = text.replace("/usr/share/fleetctl-standin/dcgm", str(tmp_path / "data"))
    path = tmp_path / tool
    path.write_text(text)
    return path


def _dcgmi(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(tmp_path / "dcgmi"), *args], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "diag-r1.json").write_text((FIXTURES / "dcgm4.2.3_gb10_level1_fail.json").read_text())
    (data / "diag-r1.rc").write_text("226\n")
    (data / "connection-error.txt").write_text((FIXTURES / "dcgmi_connection_error.txt").read_text())
    _install(tmp_path, "dcgmi")
    _install(tmp_path, "nv-hostengine")
    return tmp_path


def test_without_a_host_engine_dcgmi_prints_the_connection_error(standin: Path) -> None:
    version = _dcgmi(standin, "--version")
    assert version.returncode == 0 and version.stdout.splitlines()[0] == "Version : 4.2.3"
    assert "Hostengine build info" not in version.stdout
    diag = _dcgmi(standin, "diag", "-r", "1", "-j")
    assert diag.returncode == 256 - 21  # DCGM_ST_CONNECTION_NOT_VALID
    with pytest.raises(DiagParseError, match=r"^h1: dcgmi printed no JSON: Error: unable to establish"):
        parse_diag(diag.stdout, host="h1")


def test_with_the_host_engine_up_dcgmi_answers_the_fixture(standin: Path) -> None:
    engine = subprocess.Popen([sys.executable, str(standin / "nv-hostengine"), "-n"],
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(standin / "he.sock"):
            assert engine.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as probe:  # listening, not only bound
            probe.connect(str(standin / "he.sock"))
        version = _dcgmi(standin, "-v")
        assert "\nHostengine build info:\nVersion : 4.2.3\n" in version.stdout
        diag = _dcgmi(standin, "diag", "-r", "1", "-j")
        assert diag.returncode == 226
        report = parse_diag(diag.stdout, host="h1")
        assert report.status is Status.FAIL and report.version == "4.2.3" and report.layout == "4.x"
        assert _dcgmi(standin, "diag", "-r", "3", "-j").returncode == 2  # only level 1 is canned
    finally:
        engine.terminate()
        engine.wait(timeout=10)
