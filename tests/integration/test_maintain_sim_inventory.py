"""The simulated fleet's inventory never lets a play without its own connection reach this machine:
every sim host is 127.0.0.1 on a port nothing listens on, so such a play (site.yml, system_reboot.yml
from `fleetctl maintain --reboot always`) finds each host unreachable. A real ansible-playbook run."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from fleet_agent.sim.inventory import SIM_SSH_PORT, inventory_doc


def _runtime(name: str, port: int) -> Any:
    return SimpleNamespace(name=name, port=port, group="rack1", kind="gpu",
                           sampler=SimpleNamespace(expected_chips=8))


def test_a_play_without_a_connection_finds_sim_hosts_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:  # nothing may listen there, or the test proves nothing
        assert s.connect_ex(("127.0.0.1", SIM_SSH_PORT)) != 0
    doc = inventory_doc([_runtime("sim-0", 38101), _runtime("sim-1", 38102)])
    assert doc["all"]["vars"]["ansible_port"] == SIM_SSH_PORT  # for every host
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(doc))
    marker = tmp_path / "ran"
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"ansible.builtin.file": {"path": str(marker), "state": "touch"}}]}]))
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(tmp_path / "inv.yml"),
                          str(tmp_path / "play.yml"), "-e", "ansible_ssh_timeout=5"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_HOST_KEY_CHECKING": "False",
                              "HOME": str(tmp_path)})
    assert out.returncode == 4, out.stdout + out.stderr  # 4: hosts unreachable
    assert "sim-0" in out.stdout and "unreachable=1" in out.stdout
    assert "port 1" in out.stdout or "Connection refused" in out.stdout
    assert not marker.exists()
