"""The roles path fleetctl gives Ansible: fleetctl's roles win in its own playbooks, the user's in theirs."""

from __future__ import annotations

import hashlib
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



def _no_cfg(tmp_path: Path) -> dict[str, str]:
    # An empty ansible.cfg of the test's own: never the developer's ~/.ansible.cfg or /etc/ansible's.
    (tmp_path / "empty.cfg").write_text("[defaults]\n")
    return {"ANSIBLE_CONFIG": str(tmp_path / "empty.cfg")}


def test_the_fact_cache_prefix_names_the_fleet_by_its_inventory(tmp_path: Path) -> None:
    env = _no_cfg(tmp_path)
    for name in ("staging", "production"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "hosts.ini").write_text("gpu-001\n")

    def fact(sources: list[str], cwd: Path = tmp_path) -> str:
        return assets.cache_prefixes(sources, env, cwd=cwd)["ANSIBLE_CACHE_PLUGIN_PREFIX"]

    staging = fact(["staging/hosts.ini"])
    assert staging.startswith("fleet-") and staging.endswith("-")
    # The same file named relative or absolute is the same fleet; another file is another.
    assert fact([str(tmp_path / "staging" / "hosts.ini")]) == staging
    assert fact(["production/hosts.ini"]) != staging
    # Ansible's "host1,host2," lists are fleets by their text.
    listed = fact(["gpu-001,"])
    assert listed != staging
    assert listed == fact(["gpu-001,"], cwd=tmp_path / "staging")


def test_the_cache_prefixes_keep_the_configured_ones(tmp_path: Path) -> None:
    empty = _no_cfg(tmp_path)
    fleet = hashlib.sha256(b"a,").hexdigest()[:12] + "-"  # the inventory's text: a host list
    assert assets.cache_prefixes(["a,"], empty, cwd=tmp_path) == {
        "ANSIBLE_CACHE_PLUGIN_PREFIX": f"fleet-{fleet}",
        "ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX": "ansible_inventory_"}
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text('[defaults]\nfact_caching_prefix = "site1_"\n')  # quoted, as Ansible allows
    configured = {"ANSIBLE_CONFIG": str(cfg)}
    # The inventory cache reads fact_caching_prefix too, and keeps it: only the facts move.
    assert assets.cache_prefixes(["a,"], configured, cwd=tmp_path) == {
        "ANSIBLE_CACHE_PLUGIN_PREFIX": f"site1_fleet-{fleet}",
        "ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX": "site1_"}
    cfg.write_text("[defaults]\nfact_caching_prefix = site1_\n[inventory]\ncache_prefix = inv_\n")
    got = assets.cache_prefixes(["a,"], configured, cwd=tmp_path)
    assert got["ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX"] == "inv_"
    # The environment wins over ansible.cfg, as in Ansible.
    got = assets.cache_prefixes(["a,"], {**configured, "ANSIBLE_CACHE_PLUGIN_PREFIX": "env_"}, cwd=tmp_path)
    assert got == {"ANSIBLE_CACHE_PLUGIN_PREFIX": f"env_fleet-{fleet}",
                   "ANSIBLE_INVENTORY_CACHE_PLUGIN_PREFIX": "env_"}
