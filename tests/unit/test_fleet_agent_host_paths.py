"""The fleet_agent role's detection module reads the paths its tasks would create or remove
(roles/fleet_agent/library/fleet_agent_host.py, ``paths``): a task is skipped on what it says."""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
from pathlib import Path
from types import ModuleType

MODULE = Path(__file__).resolve().parents[2] / "roles/fleet_agent/library/fleet_agent_host.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_agent_host", MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_existing_path_as_given_with_its_type_owner_group_and_mode(tmp_path: Path) -> None:
    paths = _module()._paths
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
    found = _module()._paths(["~/x", "$FLEETTEST_DIR/x"])
    assert [v[0] for v in found.values()] == ["directory", "directory"]
    assert set(found) == {"~/x", "$FLEETTEST_DIR/x"}


def test_an_id_without_a_name_is_its_number(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    module = _module()

    def unknown(ident: int) -> object:
        raise KeyError(ident)

    monkeypatch.setattr(module.pwd, "getpwuid", unknown)
    (tmp_path / "d").mkdir()
    assert module._paths([str(tmp_path / "d")])[str(tmp_path / "d")][1] == str(os.getuid())
