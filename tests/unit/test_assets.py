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


def test_the_fact_cache_prefix_names_the_fleet_by_its_inventory(tmp_path: Path) -> None:
    for name in ("staging", "production"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "hosts.ini").write_text("gpu-001\n")
    staging = assets.fact_cache_prefix(["staging/hosts.ini"], {}, cwd=tmp_path)
    assert staging.startswith("fleet-") and staging.endswith("-")
    # The same file named relative or absolute is the same fleet; another file is another.
    assert assets.fact_cache_prefix([str(tmp_path / "staging" / "hosts.ini")], {}, cwd=tmp_path) == staging
    assert assets.fact_cache_prefix(["production/hosts.ini"], {}, cwd=tmp_path) != staging
    # Ansible's "host1,host2," lists are fleets by their text.
    listed = assets.fact_cache_prefix(["gpu-001,"], {}, cwd=tmp_path)
    assert listed != staging
    assert listed == assets.fact_cache_prefix(["gpu-001,"], {}, cwd=tmp_path / "staging")


def test_the_fact_cache_prefix_keeps_the_configured_one_in_front(tmp_path: Path) -> None:
    (tmp_path / "ansible.cfg").write_text("[defaults]\nfact_caching_prefix = site1_\n")
    fleet = assets.fact_cache_prefix(["a,"], {}, cwd=tmp_path / "elsewhere").removeprefix("fleet-")
    assert assets.fact_cache_prefix(["a,"], {}, cwd=tmp_path) == f"site1_fleet-{fleet}"
    env = {"ANSIBLE_CACHE_PLUGIN_PREFIX": "env_"}  # the environment wins over ansible.cfg, as in Ansible
    assert assets.fact_cache_prefix(["a,"], env, cwd=tmp_path) == f"env_fleet-{fleet}"
