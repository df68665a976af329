"""Bad input stops every role at argument validation, naming the variable, before any change.

Real ``ansible-playbook`` runs against ``ansible_connection=local`` hosts, in check mode so a role
that wrongly accepted its input still could not change this machine. The bad values are derived
from each role's meta/argument_specs.yml (an unknown choice for every option with choices, an
unconvertible value for every bool/int/float/dict option), so a new option is covered when it is
added. Through playbooks/site.yml: bad variables on one host fail that host at validation while
the other hosts carry on to the last play, even when every GPU host failed (Ansible ends the whole
run when every host of a play has failed: site.yml's plays target ``all`` for that reason); and a
driver version outside its branch stops the role at its first check, before a task changes anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
VALIDATION_TASK = "Validating arguments against arg spec 'main'"

# A value of the wrong type for each type whose conversion can fail (str, path and list accept
# any scalar: Ansible turns it into a string or a one-item list).
WRONG_TYPE: dict[str, Any] = {"bool": "perhaps", "int": "soon", "float": "quickly", "dict": "not-a-mapping"}


def bad_values(role: str) -> dict[str, Any]:
    """Every option of ``role`` that validation can reject, with a value it must reject."""
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    bad: dict[str, Any] = {}
    for name, option in spec["argument_specs"]["main"]["options"].items():
        kind = option.get("type", "str")
        if "choices" in option:
            bad[name] = ["no-such-choice"] if kind == "list" else "no-such-choice"
        elif kind in WRONG_TYPE:
            bad[name] = WRONG_TYPE[kind]
    return bad


def local_host(**hostvars: Any) -> dict[str, Any]:
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "ansible_become": False, **hostvars}


def run_playbook(tmp_path: Path, playbook: Path, inventory: dict[str, Any],
                 *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # Ansible's defaults (the repository's ansible.cfg enables timing callbacks that would print
    # beside the JSON report), with the repository's roles.
    env.update(ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               HOME=str(tmp_path))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inv), "--check", str(playbook), *extra],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook printed no JSON report (exit {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}", pytrace=False)
    return result, report


def tasks_run(report: dict[str, Any], host: str) -> list[tuple[str, dict[str, Any]]]:
    """(task name, result) of every task that ran on ``host``, in order, skipped ones and role
    includes (site.yml's hardware plays) left out.

    A role's validation task is named "<role> : VALIDATION_TASK" (the spec's description cut off).
    """
    ran = []
    for play in report["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get(host)
            if result is None or result.get("skipped") or result.get("action", "").endswith("include_role"):
                continue
            name = task["task"]["name"]
            role, _, bare = name.rpartition(" : ")
            ran.append((f"{role} : {VALIDATION_TASK}" if bare.startswith(VALIDATION_TASK) else name, result))
    return ran


def test_bad_values_cover_every_role() -> None:
    # The derivation finds something to reject in every role (else a role would pass vacuously).
    assert ROLES == ["base", "container_runtime", "cuda_toolkit", "dcgm", "fleet_agent", "nvidia_driver",
                     "tpu_runtime"]
    assert all(bad_values(role) for role in ROLES)
    assert bad_values("nvidia_driver")["nvidia_driver_branch"] == "no-such-choice"


@pytest.mark.parametrize("role", ROLES)
def test_role_refuses_bad_variables_at_validation(tmp_path: Path, role: str) -> None:
    bad = bad_values(role)
    playbook = tmp_path / "apply.yml"
    playbook.write_text(yaml.safe_dump([{"name": f"Apply {role}", "hosts": "all", "gather_facts": False,
                                         "roles": [{"role": role}]}]))
    result, report = run_playbook(tmp_path, playbook, {"all": {"hosts": {"node1": local_host(**bad)}}})

    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    ran = tasks_run(report, "node1")
    # Validation is the first task and the only one that ran: nothing else was attempted.
    assert [name for name, _ in ran] == [f"{role} : {VALIDATION_TASK}"], ran
    failure = ran[0][1]
    assert failure["failed"] is True and failure["changed"] is False
    message = failure["msg"]
    missing = [name for name in bad if name not in message]
    assert not missing, f"{role}: the validation message does not name {missing}:\n{message}"
    assert report["stats"]["node1"]["changed"] == 0 and report["stats"]["node1"]["failures"] == 1


@pytest.mark.parametrize("other_gpu_host", [True, False], ids=["one-gpu-host-fails", "every-gpu-host-fails"])
def test_site_stops_a_host_with_bad_variables_and_carries_on_with_the_others(
    tmp_path: Path, other_gpu_host: bool
) -> None:
    # gpu1 has an unknown branch and a word for a number; the other hosts have their hardware roles
    # switched off (site_*_enabled), so nothing but validation would touch this machine. Without
    # gpu2, every host of the GPU play fails: the TPU host must still go on to the later plays.
    off = {"site_nvidia_driver_enabled": False, "site_cuda_toolkit_enabled": False,
           "site_container_runtime_enabled": False, "site_tpu_runtime_enabled": False}
    gpu_hosts = {"gpu1": local_host(nvidia_driver_branch="999", nvidia_driver_reboot_timeout="soon")}
    if other_gpu_host:
        gpu_hosts["gpu2"] = local_host(**off)
    inventory = {"all": {"children": {
        "gpu_nodes": {"hosts": gpu_hosts},
        "tpu_nodes": {"hosts": {"tpu1": local_host(**off)}},
    }}}
    # Tags keep base and fleet_agent from working on this machine; validation runs whatever the tags.
    result, report = run_playbook(tmp_path, REPO / "playbooks" / "site.yml", inventory,
                                  "--tags", "nvidia_driver,tpu_runtime")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    ran = tasks_run(report, "gpu1")
    assert [name for name, _ in ran if name != "Gathering Facts"] == [
        f"base : {VALIDATION_TASK}", f"nvidia_driver : {VALIDATION_TASK}"], ran
    failure = ran[-1][1]
    assert failure["failed"] is True
    assert "nvidia_driver_branch" in failure["msg"] and "999" in failure["msg"]
    assert "nvidia_driver_reboot_timeout" in failure["msg"]
    assert report["stats"]["gpu1"] == {**report["stats"]["gpu1"], "changed": 0, "failures": 1}
    # The others went on to the last plays (the node agent's validation) and did not fail.
    for host in ("gpu2", "tpu1") if other_gpu_host else ("tpu1",):
        names = [name for name, _ in tasks_run(report, host)]
        assert f"fleet_agent : {VALIDATION_TASK}" in names, names
        assert report["stats"][host]["failures"] == 0 and report["stats"][host]["changed"] == 0


def test_driver_version_outside_its_branch_stops_before_any_change(tmp_path: Path) -> None:
    playbook = tmp_path / "apply.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Apply nvidia_driver", "hosts": "all", "gather_facts": False,
                                         "roles": [{"role": "nvidia_driver"}]}]))
    host = local_host(nvidia_driver_branch="535", nvidia_driver_version="550.54.15")
    result, report = run_playbook(tmp_path, playbook, {"all": {"hosts": {"gpu1": host}}})
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    ran = tasks_run(report, "gpu1")
    assert ran[-1][0] == "nvidia_driver : Check the combination of variables before changing anything", ran
    assert "nvidia_driver_version (550.54.15) must belong to nvidia_driver_branch (535)" in ran[-1][1]["msg"]
    assert not any(r.get("changed") for _, r in ran), ran


def test_site_validates_a_hardware_role_whatever_the_tags_select(tmp_path: Path) -> None:
    # --tags selecting no role's tasks: only what is tagged `always` runs, which in site.yml is
    # each role's argument validation (the hardware roles' includes carry `always` for that).
    off = {"site_nvidia_driver_enabled": False, "site_cuda_toolkit_enabled": False,
           "site_container_runtime_enabled": False, "site_tpu_runtime_enabled": False}
    inventory = {"all": {"children": {
        "gpu_nodes": {"hosts": {"gpu1": local_host(nvidia_driver_branch="999")}},
        "tpu_nodes": {"hosts": {"tpu1": local_host(**off)}},
    }}}
    result, report = run_playbook(tmp_path, REPO / "playbooks" / "site.yml", inventory,
                                  "--tags", "selects-nothing")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    ran = [name for name, _ in tasks_run(report, "gpu1") if name != "Gathering Facts"]
    assert ran == [f"base : {VALIDATION_TASK}", f"nvidia_driver : {VALIDATION_TASK}"], ran
    assert report["stats"]["gpu1"]["failures"] == 1
    ran = [name for name, _ in tasks_run(report, "tpu1") if name != "Gathering Facts"]
    assert ran == [f"base : {VALIDATION_TASK}", f"fleet_agent : {VALIDATION_TASK}"], ran
    assert report["stats"]["tpu1"]["failures"] == 0


def _apply_fleet_agent(tmp_path: Path, gather_facts: bool, **hostvars: Any) -> tuple[
        subprocess.CompletedProcess[str], list[tuple[str, dict[str, Any]]]]:
    playbook = tmp_path / "apply.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Apply fleet_agent", "hosts": "all",
                                         "gather_facts": gather_facts, "roles": [{"role": "fleet_agent"}]}]))
    result, report = run_playbook(tmp_path, playbook, {"all": {"hosts": {"gpu1": local_host(**hostvars)}}})
    return result, [(name, r) for name, r in tasks_run(report, "gpu1") if name != "Gathering Facts"]


@pytest.mark.parametrize("hostvars", [
    {"ansible_host": "192.0.2.17"},  # the default listen address: where fleetctl reaches the host
    {"fleet_agent_listen_address": "0.0.0.0"},
    {"fleet_agent_listen_address": "gpu1.example.net"},  # a name is not loopback, whatever it maps to
], ids=["ansible_host", "wildcard", "name"])
def test_fleet_agent_beyond_loopback_without_a_token_stops_at_its_first_check(
    tmp_path: Path, hostvars: dict[str, Any]
) -> None:
    result, ran = _apply_fleet_agent(tmp_path, False, **hostvars)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    assert [name for name, _ in ran] == [
        f"fleet_agent : {VALIDATION_TASK}",
        "fleet_agent : Check the agent is not exposed beyond loopback without a token"], ran
    message = ran[-1][1]["msg"]
    assert "\n" not in message.strip()
    assert message.startswith("fleet_agent: gpu1: fleet_agent_listen_address ")
    assert "is not loopback, so fleet_agent_token is required" in message


def test_fleet_agent_on_loopback_or_with_a_token_passes_the_check(tmp_path: Path) -> None:
    # Check mode on this machine: the run goes on past the first check (it fails later, at tasks
    # check mode cannot fake, or not at all); the check itself passed in each case.
    for hostvars in ({"ansible_host": "127.0.0.1"}, {"fleet_agent_listen_address": "[::1]"},
                     {"ansible_host": "192.0.2.17", "fleet_agent_token": "t0ken"}):
        _, ran = _apply_fleet_agent(tmp_path, False, **hostvars)
        check = dict(ran).get("fleet_agent : Check the agent is not exposed beyond loopback without a token")
        assert check is not None and not check.get("failed"), (hostvars, ran)


def test_fleet_agent_refuses_an_unknown_extra(tmp_path: Path) -> None:
    result, ran = _apply_fleet_agent(tmp_path, True, ansible_host="127.0.0.1", fleet_agent_extras=["cuda"])
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    assert ran[-1][0] == "fleet_agent : Check values the argument spec cannot express", ran
    assert "fleet_agent_extras 'auto' or a list of nvml, tpu (got ['cuda'])" in ran[-1][1]["msg"]
    assert not any(r.get("changed") for _, r in ran), ran


def test_fleet_agent_refuses_an_agent_python_that_is_no_absolute_path(tmp_path: Path) -> None:
    # A name looked up on PATH never equals the venv's recorded interpreter: the venv would be made
    # anew on every run.
    result, ran = _apply_fleet_agent(tmp_path, True, ansible_host="127.0.0.1",
                                     fleet_agent_python="python3.12")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    assert ran[-1][0] == "fleet_agent : Check values the argument spec cannot express", ran
    assert "fleet_agent_python empty or an absolute path (got python3.12)" in ran[-1][1]["msg"]
