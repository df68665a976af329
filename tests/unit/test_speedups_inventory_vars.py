"""The fast per-host variables give exactly what Ansible's ``VariableManager.get_vars`` gives.

Each case builds an inventory that exercises one of Ansible's precedence rules (group depth,
``ansible_group_priority``, group_vars/host_vars files and directories, ``all`` vars, INI and YAML in
one directory, several sources, an inventory plugin config, templated values) and compares, for
every host, the whole variable dict and every rendered template against Ansible's own answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetctl.errors import EXIT_USAGE, UsageError
from fleetctl.inventory import _ansible_setting, _init_plugin_loader, load_inventory
from fleetctl.speedups import HostTemplar, InventoryVars, inventory_loader_class

HOSTS_YML = """\
all:
  vars:
    layer: all-inline
    domain: lab.example
    nested: {a: {x: 1, y: 1}, keep: all}
  children:
    gpu_nodes:
      vars:
        layer: gpu-inline
        fleet_agent_port: 19000
        nested: {a: {y: 2}}
      children:
        h100:
          vars: {layer: h100-inline, ansible_group_priority: 1}
          hosts:
            h100-0001: {ansible_host: '{{ inventory_hostname }}.{{ domain }}'}
            h100-0002: {layer: host-inline}
            h100-0003:
        l4:
          vars: {layer: l4-inline, ansible_group_priority: 5}
          hosts:
            l4-0001:
            h100-0003:
    rack_a:
      vars: {layer: rack-inline, ansible_group_priority: 10}
      hosts:
        h100-0001:
        h100-0002:
        l4-0001:
    rack_b:
      vars: {layer: rack-b-inline}
      hosts:
        h100-0003:
"""

HOSTS_INI = """\
[tpu_nodes]
v5e-0001 fleet_agent_expected_chips=4 ansible_host=127.0.0.5
v5e-0002 layer=ini-host

[tpu_nodes:vars]
layer=ini-group
fleet_agent_port=19500

[rack_a:children]
tpu_nodes

[ungrouped]
lonely fleet_agent_port=19999
"""

CONSTRUCTED = """\
plugin: ansible.builtin.constructed
strict: true
groups:
  four_chips: fleet_agent_expected_chips | default(0) | int == 4
compose:
  composed: inventory_hostname ~ '-composed'
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def vars_dirs(base: Path) -> None:
    """group_vars/ and host_vars/ as files and as directories, each overriding a level below."""
    write(base / "group_vars" / "all.yml",
          "layer: all-file\n"
          "fleet_agent_token: \"{{ vault_token | default('plain-' ~ inventory_hostname) }}\"\n"
          "ansible_ssh_private_key_file: '{{ inventory_dir }}/id_ed25519'\nnested: {a: {z: 3}}\n")
    write(base / "group_vars" / "gpu_nodes" / "10-main.yml",
          "layer: gpu-file\nfleet_agent_expected_chips: 8\n")
    write(base / "group_vars" / "gpu_nodes" / "20-more.yaml", "gpu_extra: yes\nnested: {a: {x: 9}}\n")
    write(base / "group_vars" / "l4.yml", "layer: l4-file\nfleet_agent_expected_chips: 4\n")
    write(base / "group_vars" / "rack_a.json", '{"rack": "a", "layer": "rack-file"}\n')
    write(base / "group_vars" / "tpu_nodes.yml", "vault_token: tpu-secret\n")
    write(base / "host_vars" / "h100-0002.yml",
          "layer: host-file\nansible_user: '{{ ops_user | default(\"ops\") }}'\n")
    write(base / "host_vars" / "v5e-0001" / "a.yml", "layer: host-dir\nfleet_agent_port: 19501\n")
    write(base / "host_vars" / "lonely.yml", "fleet_agent_expected_chips: 0\n")


def directory_inventory(tmp_path: Path) -> list[str]:
    d = tmp_path / "inv"
    write(d / "10-hosts.yml", HOSTS_YML)
    write(d / "20-hosts.ini", HOSTS_INI)
    write(d / "30-constructed.yml", CONSTRUCTED)
    vars_dirs(d)
    return [str(d)]


def file_inventory(tmp_path: Path) -> list[str]:
    d = tmp_path / "inv"
    write(d / "hosts.yml", HOSTS_YML)
    vars_dirs(d)
    return [str(d / "hosts.yml")]


def two_sources(tmp_path: Path) -> list[str]:
    """Two inventories whose group_vars disagree: the later source wins, in Ansible and here."""
    first, second = tmp_path / "one", tmp_path / "two"
    write(first / "hosts.yml", HOSTS_YML)
    vars_dirs(first)
    write(second / "hosts.ini", HOSTS_INI + "\n[gpu_nodes]\nh100-0001 layer=second-source\n")
    write(second / "group_vars" / "all.yml", "layer: second-all-file\nfrom_second: true\n")
    write(second / "group_vars" / "gpu_nodes.yml", "fleet_agent_expected_chips: 16\n")
    return [str(first / "hosts.yml"), str(second / "hosts.ini")]


BUILDERS = {"directory": directory_inventory, "file": file_inventory, "two_sources": two_sources}

SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "merge": {"DEFAULT_HASH_BEHAVIOUR": "merge"},
    "precedence_reversed": {"VARIABLE_PRECEDENCE": [
        "groups_plugins_play", "groups_plugins_inventory", "groups_inventory",
        "all_plugins_play", "all_plugins_inventory", "all_inventory"]},
    "no_fact_injection": {"INJECT_FACTS_AS_VARS": False},
}


def ansible_answer(sources: list[str]) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The reference: plain DataLoader, InventoryManager and VariableManager.get_vars per host."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    _init_plugin_loader()  # as ansible-inventory does: plugin configs name collection plugins

    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=sources)
    with _ansible_setting("CACHE_PLUGIN", "memory"):  # no facts from a fact cache on disk
        variables = VariableManager(loader=loader, inventory=manager)
    hosts = manager.get_hosts("all")
    return loader, {h.name: variables.get_vars(host=h, include_hostvars=False) for h in hosts}


def fast_answer(sources: list[str]) -> tuple[Any, dict[str, dict[str, Any]]]:
    from ansible.inventory.manager import InventoryManager
    from ansible.vars.manager import VariableManager

    _init_plugin_loader()
    loader = inventory_loader_class()()
    manager = InventoryManager(loader=loader, sources=sources)
    fast = InventoryVars(loader, manager, VariableManager(loader=loader, inventory=manager))
    return loader, {h.name: fast.get(h) for h in manager.get_hosts("all")}


@pytest.fixture(params=sorted(SETTINGS))
def settings(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    with contextlib.ExitStack() as stack:
        for key, value in SETTINGS[name].items():
            stack.enter_context(_ansible_setting(key, value))
        yield name


def rendered(templar_render: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """Every templated string value rendered (or the error's type when it cannot be)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and "{{" in value:
            try:
                out[key] = templar_render(value, raw)
            except Exception as exc:  # the failure itself is compared
                out[key] = ("error", type(exc).__name__)
    return out


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_every_host_gets_exactly_ansibles_variables(tmp_path: Path, builder: str, settings: str) -> None:
    sources = BUILDERS[builder](tmp_path)
    ref_loader, expected = ansible_answer(sources)
    fast_loader, got = fast_answer(sources)
    assert list(got) == list(expected)
    assert len(got) >= 4
    for name in expected:
        assert got[name] == expected[name], f"{builder}/{settings}: {name}"

    from ansible.template import Templar

    def ansible_render(value: str, raw: dict[str, Any]) -> Any:
        return Templar(loader=ref_loader, variables=raw).template(value)

    templar = HostTemplar(fast_loader)
    for name in expected:
        want = rendered(ansible_render, expected[name])
        assert want, "each host has templated values"
        assert rendered(templar.render, got[name]) == want, f"{builder}/{settings}: {name}"


def test_the_cases_really_differ_where_precedence_decides(tmp_path: Path) -> None:
    """Guards the fixtures: the comparisons above would be weak if every level agreed."""
    _, got = fast_answer(directory_inventory(tmp_path))
    assert got["h100-0001"]["layer"] == "rack-file"  # rack_a: higher ansible_group_priority, same depth
    assert got["h100-0002"]["layer"] == "host-file"  # host_vars file over inline host var
    assert got["h100-0003"]["layer"] == "l4-file"  # l4 (priority 5) over h100 (1) and rack_b (1)
    assert got["v5e-0001"]["layer"] == "host-dir" and got["v5e-0001"]["fleet_agent_port"] == 19501
    assert got["v5e-0002"]["layer"] == "ini-host"
    assert got["lonely"]["fleet_agent_port"] == 19999 and got["lonely"]["fleet_agent_expected_chips"] == 0
    assert got["h100-0001"]["composed"] == "h100-0001-composed"  # the constructed plugin config ran
    assert "four_chips" in got["v5e-0001"]["group_names"]  # inline INI var, as Ansible sees it
    assert got["h100-0001"]["nested"] == {"a": {"x": 9}}  # replace: the last level wins whole


def test_hosts_of_one_group_set_share_the_group_work_but_not_host_values(tmp_path: Path) -> None:
    d = tmp_path / "inv"
    write(d / "hosts.yml", "gpu_nodes:\n  hosts:\n" + "".join(f"    g{i}: {{idx: {i}}}\n" for i in range(50)))
    write(d / "group_vars" / "gpu_nodes.yml", "shared: '{{ idx * 2 }}'\n")
    write(d / "host_vars" / "g7.yml", "shared: own\n")
    inv = load_inventory(str(d / "hosts.yml"), use_cache=False)
    assert inv.hosts["g3"].vars["shared"] == "{{ idx * 2 }}"  # not one of fleetctl's rendered vars
    loader, got = fast_answer([str(d / "hosts.yml")])
    templar = HostTemplar(loader)
    values = [templar.render(got[f"g{i}"]["shared"], got[f"g{i}"]) for i in range(50)]
    assert values[3] == 6 and values[49] == 98 and values[7] == "own"


def test_parse_once_loader_returns_ansibles_parse_once(tmp_path: Path) -> None:
    from ansible.parsing.dataloader import DataLoader

    f = tmp_path / "hosts.yml"
    f.write_text(HOSTS_YML)
    loader = inventory_loader_class()()
    first = loader.load_from_file(str(f), cache="none")
    assert loader.load_from_file(str(f), cache="none", trusted_as_template=True) is first
    assert loader.read_by_libyaml == [str(f)]  # a plain file: one libyaml parse for both plugins
    assert first == DataLoader().load_from_file(str(f), cache="none", trusted_as_template=True)
    cached = loader.load_from_file(str(f))  # the ordinary cached path is Ansible's own
    assert cached == first and cached is not first


def test_a_precedence_entry_ansible_cannot_run_is_a_one_line_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    f.write_text("all:\n  hosts:\n    h1:\n")
    order = ["all_inventory", "plugins_by_group", "groups_inventory"]
    with _ansible_setting("VARIABLE_PRECEDENCE", order), pytest.raises(UsageError) as err:
        load_inventory(str(f), use_cache=False)
    assert "'plugins_by_group' is not supported" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == EXIT_USAGE


def test_facts_in_a_fact_cache_are_not_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A jsonfile fact cache (as this repository's ansible.cfg configures) holds facts and
    ``set_fact: cacheable`` values; get_vars would mix them in, and the inventory cache would keep
    them past the next fact refresh. Host variables here come from the inventory alone."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    f = tmp_path / "hosts.yml"
    f.write_text("all:\n  hosts:\n    h1: {fleet_agent_port: 19001}\n")
    monkeypatch.setenv("ANSIBLE_CACHE_PLUGIN_CONNECTION", str(tmp_path / "facts"))
    with _ansible_setting("CACHE_PLUGIN", "jsonfile"):
        loader = DataLoader()
        manager = InventoryManager(loader=loader, sources=[str(f)])
        VariableManager(loader=loader, inventory=manager).set_host_facts(
            "h1", {"ansible_hostname": "h1-real", "fleet_agent_port": 1})
        with_facts = VariableManager(loader=loader, inventory=manager).get_vars(
            host=manager.get_host("h1"), include_hostvars=False)
        # the fixture is real: Ansible's get_vars reads these facts back from disk
        assert with_facts["fleet_agent_port"] == 1 and with_facts["ansible_hostname"] == "h1-real"
        host = load_inventory(str(f), use_cache=False).hosts["h1"]
    assert host.agent_port == 19001
    assert "ansible_hostname" not in host.vars
