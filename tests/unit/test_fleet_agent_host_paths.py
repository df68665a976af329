"""The fleet_agent role's detection module reads the paths its tasks would create or remove
(roles/fleet_agent/library/fleet_agent_host.py, ``paths``): a task is skipped on what it says."""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
from pathlib import Path
from types import ModuleType

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

MODULE = Path(__file__).resolve().parents[2] / "roles/fleet_agent/library/fleet_agent_host.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_agent_host", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOST = _module()  # loaded once: every test reads the same file


def test_each_existing_path_as_given_with_its_type_owner_group_and_mode(tmp_path: Path) -> None:
    paths = HOST._paths
    (tmp_path / "d").mkdir()
    (tmp_path / "d").chmod(0o2750)
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o640)
    (tmp_path / "l").symlink_to(tmp_path / "d")
    os.mkfifo(tmp_path / "p")
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    given = [str(tmp_path / "d"), str(tmp_path / "f"), str(tmp_path / "l"), str(tmp_path / "p"),
             str(tmp_path / "missing"), f"{tmp_path}//d/"]
    assert paths(given) == {
        given[0]: ["directory", me, group, "2750"],  # setgid kept: "0750" would not match it
        given[1]: ["file", me, group, "0640"],
        given[2]: ["link", me, group, "0777"],  # the link itself, not the directory it leads to
        given[3]: ["other", me, group, format(os.stat(given[3]).st_mode & 0o7777, "04o")],
        given[5]: ["directory", me, group, "2750"],  # keyed as given, so the task's own string finds it
    }


def test_a_path_is_expanded_as_a_task_s_path_argument(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FLEETTEST_DIR", str(tmp_path))
    (tmp_path / "x").mkdir(mode=0o755)
    (tmp_path / "x").chmod(0o755)
    found = HOST._paths(["~/x", "$FLEETTEST_DIR/x"])
    assert [v[0] for v in found.values()] == ["directory", "directory"]
    assert set(found) == {"~/x", "$FLEETTEST_DIR/x"}


def test_an_id_without_a_name_is_its_number(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    module = HOST

    def unknown(ident: int) -> object:
        raise KeyError(ident)

    monkeypatch.setattr(module.pwd, "getpwuid", unknown)
    (tmp_path / "d").mkdir()
    assert module._paths([str(tmp_path / "d")])[str(tmp_path / "d")][1] == str(os.getuid())


def _task(name: str, path: str) -> dict:  # type: ignore[type-arg]
    tasks = yaml.safe_load((MODULE.parents[1] / "tasks" / path).read_text(encoding="utf-8"))
    return next(t for t in tasks if t["name"] == name)


def _skipped(task: dict, variables: dict) -> bool:  # type: ignore[type-arg]
    templar = Templar(loader=DataLoader(), variables=variables)
    return not templar.evaluate_conditional(trust_as_template(task["when"]))


def test_a_directory_is_skipped_only_when_it_is_what_the_task_leaves() -> None:
    task = _task("Create the agent's directories", "files.yml")
    args = task["ansible.builtin.file"]
    # What the `when` compares is the task's own: a directory, owner root, the item's group and mode.
    assert (args["state"], args["owner"], args["group"], args["mode"]) == (
        "directory", "root", "{{ item.group }}", "{{ item.mode }}")
    dirs = [{"path": "/opt/fa", "group": "root", "mode": "0755"},
            {"path": "/etc/fa", "group": "fleet-agent", "mode": "0750"}]
    item = dirs[1]
    right = {"/opt/fa": ["directory", "root", "root", "0755"],
             "/etc/fa": ["directory", "root", "fleet-agent", "0750"]}
    base = {"fleet_agent_directories": dirs, "item": item}
    assert _skipped(task, {**base, "fleet_agent_detect": {"paths": right}})
    for wrong in (["directory", "root", "root", "0750"], ["directory", "nobody", "fleet-agent", "0750"],
                  ["directory", "root", "fleet-agent", "2750"], ["link", "root", "fleet-agent", "0750"]):
        drifted = {"paths": {**right, "/etc/fa": wrong}}
        assert not _skipped(task, {**base, "fleet_agent_detect": drifted}), wrong
    assert not _skipped(task, {**base, "fleet_agent_detect": {"paths": {"/opt/fa": right["/opt/fa"]}}})
    # The same directory twice: an earlier item may have changed it since it was read.
    twice = [{"path": "/etc/fa/", "group": "root", "mode": "0755"}, item]
    assert not _skipped(task, {"fleet_agent_directories": twice, "item": item,
                               "fleet_agent_detect": {"paths": right}})


def test_the_wrapper_is_removed_only_when_unwanted_and_there() -> None:
    task = _task("Remove the Slurm health check wrapper when it is not wanted", "slurm.yml")
    assert task["ansible.builtin.file"] == {"path": "{{ fleet_agent_slurm_health_check_program }}",
                                            "state": "absent"}
    wrapper = "/usr/local/sbin//fleet-agent-healthcheck"
    there = {"paths": {wrapper: ["file", "root", "root", "0755"]}}
    unwanted = {"fleet_agent_slurm_health_check_program": wrapper, "fleet_agent_slurm_health_check": False}
    assert not _skipped(task, {**unwanted, "fleet_agent_detect": there})
    assert _skipped(task, {**unwanted, "fleet_agent_detect": {"paths": {}}})
    assert _skipped(task, {**unwanted, "fleet_agent_slurm_health_check": True, "fleet_agent_detect": there})
