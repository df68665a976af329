"""tests/lab/lab.py reads the lab's hosts and ports from inventory/lab/hosts.yml (the one place)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

LAB_PY = Path(__file__).resolve().parents[1] / "lab" / "lab.py"


def _lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleetctl_lab", LAB_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lab_inventory_has_three_hosts_on_distinct_loopback_ports() -> None:
    lab = _lab()
    hosts = lab.lab_hosts()
    assert [h.name for h in hosts] == ["lab-node1", "lab-node2", "lab-node3"]
    ports = [h.ssh_port for h in hosts] + [h.agent_port for h in hosts]
    assert len(set(ports)) == len(ports)
    assert [h.container for h in hosts] == [
        "fleetctl-lab-lab-node1", "fleetctl-lab-lab-node2", "fleetctl-lab-lab-node3"]


def test_lab_inventory_without_ports_names_the_host(tmp_path: Path) -> None:
    lab = _lab()
    bad = tmp_path / "hosts.yml"
    bad.write_text("all:\n  children:\n    lab:\n      hosts:\n        n1:\n          ansible_port: 2201\n")
    with pytest.raises(lab.LabError, match=r"all\.children\.lab\.hosts\.n1: needs integer"):
        lab.lab_hosts(bad)


def test_playbook_env_drops_molecule_and_ansible_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = _lab()
    monkeypatch.setenv("ANSIBLE_ROLES_PATH", "/elsewhere")
    monkeypatch.setenv("MOLECULE_FILE", "x")
    env = lab.playbook_env()
    assert "ANSIBLE_ROLES_PATH" not in env and "MOLECULE_FILE" not in env
    assert env["ANSIBLE_CONFIG"] == str(lab.REPO / "ansible.cfg")


def test_the_lab_wheelhouse_carries_every_extra_of_the_agent(tmp_path: Path) -> None:
    lab = _lab()
    requirements = lab.wheelhouse_requirements()
    names = {r.split(">")[0].split("=")[0].split("[")[0] for r in requirements}
    # The lab's GPU hosts install fleetctl-agent[nvml], its TPU host fleetctl-agent[tpu], offline.
    assert {"psutil", "h11", "nvidia-ml-py", "tpu-info", "grpcio"} <= names
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["a>=1"]\n'
                         '[project.optional-dependencies]\nz = ["z1"]\nb = ["b1", "b2"]\n')
    assert lab.wheelhouse_requirements(pyproject) == ["a>=1", "b1", "b2", "z1"]
