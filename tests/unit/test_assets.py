"""The roles path fleetctl gives Ansible: fleetctl's roles win in its own playbooks, the user's in theirs."""

from __future__ import annotations

import os
from pathlib import Path

from fleetctl import assets


def test_fleetctls_own_playbooks_resolve_fleetctls_roles_first(tmp_path: Path) -> None:
    ours = str(assets.roles_dir())
    site = assets.playbooks_dir() / "site.yml"
    path = assets.ansible_roles_path({"ANSIBLE_ROLES_PATH": "/mine:/srv/roles"}, cwd=tmp_path, playbook=site)
    assert path.split(os.pathsep) == [ours, "/mine", "/srv/roles"]


def test_a_users_own_playbook_keeps_the_users_roles_first(tmp_path: Path) -> None:
    ours = str(assets.roles_dir())
    (tmp_path / "ansible.cfg").write_text("[defaults]\nroles_path = my-roles\n")
    mine = tmp_path / "playbooks" / "site.yml"  # named like fleetctl's, but not under its playbooks
    path = assets.ansible_roles_path({}, cwd=tmp_path, playbook=mine)
    assert path.split(os.pathsep) == [str(tmp_path / "my-roles"), ours]
    assert assets.ansible_roles_path({}, cwd=tmp_path).split(os.pathsep)[0] == str(tmp_path / "my-roles")


def test_fleetctls_roles_are_listed_once(tmp_path: Path) -> None:
    ours = str(assets.roles_dir())
    site = assets.playbooks_dir() / "site.yml"
    path = assets.ansible_roles_path({"ANSIBLE_ROLES_PATH": f"/mine:{ours}"}, cwd=tmp_path, playbook=site)
    assert path.split(os.pathsep) == [ours, "/mine"]
