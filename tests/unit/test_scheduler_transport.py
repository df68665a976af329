"""Scheduler commands over SSH take the inventory's connection variables as Ansible renders them."""

from __future__ import annotations

from pathlib import Path

from fleetctl.inventory import load_inventory
from fleetctl.schedulers.transport import LocalRunner, SshRunner, runner_for


def test_ssh_argv_has_rendered_key_and_known_hosts_paths(tmp_path: Path) -> None:
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("all:\n  children:\n    lab:\n      hosts:\n        n1:\n")
    # As inventory/lab/group_vars/lab.yml writes them.
    (d / "group_vars" / "lab.yml").write_text(
        "ansible_host: 127.0.0.1\n"
        "ansible_port: '{{ 2200 + 1 }}'\n"
        "ansible_user: fleetops\n"
        "ansible_ssh_private_key_file: \"{{ inventory_dir }}/../.cache/id_ed25519\"\n"
        "ansible_ssh_common_args: >-\n"
        "  -o UserKnownHostsFile={{ inventory_dir }}/../.cache/known_hosts\n"
        "  -o IdentitiesOnly=yes\n"
        "ansible_become: '{{ true }}'\n"
    )
    host = load_inventory(str(d / "hosts.yml"), cache_dir=tmp_path / "cache").hosts["n1"]
    runner = runner_for(host)
    assert isinstance(runner, SshRunner)
    argv = runner.argv(["scontrol", "show", "node", "n1"])
    assert not any("{{" in a for a in argv), argv
    assert argv[argv.index("-i") + 1] == f"{d}/../.cache/id_ed25519"
    assert f"UserKnownHostsFile={d}/../.cache/known_hosts" in argv
    assert argv[argv.index("-p") + 1] == "2201"
    assert argv[-2:] == ["127.0.0.1", "sudo -n -- scontrol show node n1"]


def test_local_connection_from_a_templated_variable(tmp_path: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text("all:\n  vars:\n    how: local\n  hosts:\n    h1: {ansible_connection: '{{ how }}'}\n")
    host = load_inventory(str(f), cache_dir=tmp_path / "cache").hosts["h1"]
    assert isinstance(runner_for(host), LocalRunner)
