"""Host lifecycles moved by real provision runs on the SSH lab (tests/lab/lab.py), over real SSH.

A new host is ``in_service`` after a whole run that succeeded on it; a host in service whose run
failed, or that the run could not reach (its sshd stopped), is ``suspect``; a run limited by
``--tags`` moves no new host. Run under ``flock -o /tmp/fleet-lab.lock`` (the lab is shared).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_server import new_database, pg_server  # noqa: F401 - a fixture
from test_maintain_reboot_lab import lab_env, lab_module, run

pytestmark = pytest.mark.integration

PLAYBOOK = """\
- name: A change that breaks where it is told to
  hosts: all
  gather_facts: false
  tasks:
    - name: Touch nothing, answer
      ansible.builtin.ping:
      tags: [ping]
    - name: Fail where asked
      ansible.builtin.fail:
        msg: "{{ inventory_hostname }} breaks"
      when: inventory_hostname in (fail_on | default('')).split(',')
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    module = lab_module()
    module.up()
    state = tmp_path_factory.mktemp("lifecycle-lab")
    (state / "change.yml").write_text(PLAYBOOK)
    yield {"env": lab_env(state), "playbook": str(state / "change.yml"), "lab": module,
           "hosts": {h.name: h for h in module.lab_hosts()}, "state": state}


def states(lab: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    done = run(lab["env"], "hosts", "lab", "-o", "json")
    assert done.returncode == 0, done.stderr
    return {h["host"]: (h["state"], h["implied"]) for h in json.loads(done.stdout)["hosts"]}


def provision(lab: dict[str, Any], *args: str) -> dict[str, Any]:
    done = run(lab["env"], "provision", "lab", "--playbook", lab["playbook"], "--json", *args)
    assert done.stdout.strip(), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_provision_runs_move_hosts_through_their_lives(lab: dict[str, Any], backend: str,
                                                        request: pytest.FixtureRequest) -> None:
    # the same scenario on each state backend: a fresh database each time (the lab is shared)
    db = (str(lab["state"] / "fleetctl.db") if backend == "sqlite"
          else new_database(request.getfixturevalue("pg_server")))
    lab = {**lab, "env": {**lab["env"], "FLEETCTL_DB": db}}
    assert set(states(lab).values()) == {("new", True)}  # nothing recorded yet
    # a run limited by tags says nothing about a whole host: no one leaves new
    assert provision(lab, "--tags", "ping")["status"] == "successful"
    assert set(states(lab).values()) == {("new", True)}

    result = provision(lab)
    assert result["status"] == "successful"
    # in service from then on, the move new -> in_service written down (audited), not only implied
    assert states(lab) == dict.fromkeys(lab["hosts"], ("in_service", False))

    # lab-node1's run fails, lab-node3 cannot be reached: both in service → suspect
    ssh3 = lab["hosts"]["lab-node3"].container
    subprocess.run(["docker", "exec", ssh3, "systemctl", "stop", "ssh.service"], check=True)
    lab["lab"].close_ssh_masters()  # Ansible's open connections would outlive the sshd
    try:
        result = provision(lab, "-e", "fail_on=lab-node1")
    finally:
        subprocess.run(["docker", "exec", ssh3, "systemctl", "start", "ssh.service"], check=True)
    by = {h["host"]: h["state"] for h in result["hosts"]}
    assert by == {"lab-node1": "failed", "lab-node2": "ok", "lab-node3": "unreachable"}, result
    assert states(lab) == {"lab-node1": ("suspect", False), "lab-node2": ("in_service", False),
                           "lab-node3": ("suspect", False)}

    # who, why and the run, in the host's page
    page = run(lab["env"], "hosts", "show", "lab-node3", "-o", "json", "--timeout", "5")
    doc = json.loads(page.stdout)
    [last] = [e for e in doc["history"] if e["to_state"] == "suspect"]
    assert last["from_state"] == "in_service" and last["source"] == "provision"
    assert result["run_id"] in last["reason"] and "unreachable" in last["reason"]
    assert any(r["run_id"] == result["run_id"] and r["result"] == "unreachable" for r in doc["runs"])


def test_lab_inventory_copy_keeps_the_connection_settings(tmp_path: Path) -> None:
    from test_maintain_reboot_lab import lab_inventory

    copy = lab_inventory(tmp_path / "inv")
    text = (copy / "group_vars" / "lab.yml").read_text()
    assert "inventory_dir" not in text and "ansible_become: true" in text
    assert (copy / "hosts.yml").read_text() == (Path(__file__).resolve().parents[2] / "inventory" / "lab"
                                                / "hosts.yml").read_text()
