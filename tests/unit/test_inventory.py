"""Inventory loading through Ansible's own machinery, patterns, the parse cache and its errors."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_agent.config import DEFAULT_PORT

from fleetctl.errors import EXIT_USAGE
from fleetctl.inventory import InventoryError, Secret, load_inventory, resolve_sources

FLEETCTL = str(Path(sys.executable).parent / "fleetctl")

INVENTORY = """\
all:
  children:
    gpu_nodes:
      hosts:
        h100-0001: {ansible_host: 10.0.0.1}
        h100-0002: {ansible_host: 10.0.0.2, fleet_agent_port: 19001}
        h100-0003: {ansible_host: 10.0.0.3}
      vars:
        fleet_agent_expected_chips: 8
    tpu_nodes:
      hosts:
        v5e-0001: {fleet_agent_expected_chips: 4}
    rack1:
      hosts:
        h100-0001:
        v5e-0001:
"""


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text(INVENTORY)
    (d / "group_vars" / "tpu_nodes.yml").write_text("fleet_agent_port: 19500\nrack_row: b\n")
    return d / "hosts.yml"


def names(hosts: list) -> list[str]:  # type: ignore[type-arg]
    return [h.name for h in hosts]


def test_hosts_vars_and_defaults(inv: Path, cache: Path) -> None:
    hosts = load_inventory(str(inv), cache_dir=cache).hosts
    assert list(hosts) == ["h100-0001", "h100-0002", "h100-0003", "v5e-0001"]
    h1, h2, v = hosts["h100-0001"], hosts["h100-0002"], hosts["v5e-0001"]
    assert (h1.address, h1.agent_port, h1.expected_chips) == ("10.0.0.1", DEFAULT_PORT, 8)
    assert h1.groups == ("gpu_nodes", "rack1")
    assert h2.agent_port == 19001
    # group_vars/ next to the file is read (Ansible's vars plugin), name doubles as address
    assert (v.address, v.agent_port, v.expected_chips, v.vars["rack_row"]) == ("v5e-0001", 19500, 4, "b")
    assert "groups" not in v.vars and "inventory_hostname" not in v.vars  # magic vars are dropped


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, ["h100-0001", "h100-0002", "h100-0003", "v5e-0001"]),
        ("gpu_nodes", ["h100-0001", "h100-0002", "h100-0003"]),
        ("v5e-0001", ["v5e-0001"]),
        ("gpu_nodes:&rack1", ["h100-0001"]),
        ("all:!h100-0003", ["h100-0001", "h100-0002", "v5e-0001"]),
        ("gpu_nodes:!h100-0002", ["h100-0001", "h100-0003"]),
        ("h100-*", ["h100-0001", "h100-0002", "h100-0003"]),
        ("~v5e-.*", ["v5e-0001"]),
        ("gpu_nodes[0:1]", ["h100-0001", "h100-0002"]),
        ("tpu_nodes,h100-0003", ["v5e-0001", "h100-0003"]),
    ],
)
def test_patterns_as_ansible_reads_them(
    inv: Path, cache: Path, pattern: str | None, expected: list[str]
) -> None:
    cold = load_inventory(str(inv), cache_dir=cache)
    warm = load_inventory(str(inv), cache_dir=cache)
    assert not cold.from_cache and warm.from_cache
    assert names(cold.select(pattern)) == expected
    assert names(warm.select(pattern)) == expected


@pytest.mark.parametrize("pattern", ["nosuch", "gpu_nodes:&nosuch", "h200-*", "gpu_nodes:&tpu_nodes"])
def test_a_pattern_that_matches_nothing_is_a_usage_error(inv: Path, cache: Path, pattern: str) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(str(inv), cache_dir=cache).select(pattern)
    assert str(inv) in str(err.value) and "matches no host" in str(err.value)
    assert err.value.exit_code == EXIT_USAGE


def test_cache_follows_every_source_file(inv: Path, cache: Path) -> None:
    assert not load_inventory(str(inv), cache_dir=cache).from_cache
    assert load_inventory(str(inv), cache_dir=cache).from_cache
    gv = inv.parent / "group_vars" / "tpu_nodes.yml"
    gv.write_text("fleet_agent_port: 19600\n")
    os.utime(gv, ns=(gv.stat().st_mtime_ns + 10**9,) * 2)
    reloaded = load_inventory(str(inv), cache_dir=cache)
    assert not reloaded.from_cache and reloaded.hosts["v5e-0001"].agent_port == 19600
    assert load_inventory(str(inv), cache_dir=cache).from_cache
    assert not load_inventory(str(inv), cache_dir=cache, use_cache=False).from_cache
    files = list(cache.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_damaged_cache_is_ignored(inv: Path, cache: Path) -> None:
    load_inventory(str(inv), cache_dir=cache)
    for f in cache.iterdir():
        f.write_text("{not json")
    again = load_inventory(str(inv), cache_dir=cache)
    assert not again.from_cache and len(again.hosts) == 4


def test_ini_and_directory_sources(tmp_path: Path, cache: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.ini").write_text("[gpu_nodes]\nh1 ansible_host=127.0.0.1 fleet_agent_port=19002\n")
    (d / "b.yml").write_text("tpu_nodes:\n  hosts:\n    t1:\n")
    inv = load_inventory(str(d), cache_dir=cache)
    assert names(inv.select("all")) == ["h1", "t1"]
    assert inv.hosts["h1"].agent_port == 19002
    assert load_inventory(str(d), cache_dir=cache).from_cache


def test_executable_inventory_is_never_cached(tmp_path: Path, cache: Path) -> None:
    script = tmp_path / "dyn.py"
    script.write_text(
        f"#!{sys.executable}\nimport json\n"
        "print(json.dumps({'gpu_nodes': {'hosts': ['d1', 'd2']}, '_meta': {'hostvars': {}}}))\n"
    )
    script.chmod(0o755)
    first = load_inventory(str(script), cache_dir=cache)
    second = load_inventory(str(script), cache_dir=cache)
    assert names(first.select("gpu_nodes")) == ["d1", "d2"]
    assert not first.from_cache and not second.from_cache
    assert not cache.exists() or not list(cache.iterdir())


def test_missing_inventory(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(InventoryError, match=r"nope\.yml: inventory not found"):
        load_inventory(str(tmp_path / "nope.yml"), cache_dir=cache)


def test_malformed_yaml_names_file_and_line(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    a: {ansible_host: 1.2.3.4\n    b:\n")
    with pytest.raises(InventoryError) as err:
        load_inventory(str(bad), cache_dir=cache)
    message = str(err.value)
    assert message.startswith(f"{bad}:4:"), message
    assert "\n" not in message and "YAML" in message


def test_malformed_structure_names_file(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  children:\n    g:\n      hosts: 3\n")
    with pytest.raises(InventoryError, match=r"bad\.yml: Invalid \"hosts\" entry for \"g\" group"):
        load_inventory(str(bad), cache_dir=cache)


@pytest.mark.parametrize(("host_vars", "message"), [
    ("{fleet_agent_port: http}", r"bad\.yml: host h1: fleet_agent_port: expected an integer, got 'http'"),
    ("{ansible_host: [10.0.0.1]}", r"bad\.yml: host h1: ansible_host: expected a string, got a list"),
])
def test_a_variable_of_the_wrong_type_names_host_and_variable(tmp_path: Path, cache: Path, host_vars: str,
                                                              message: str) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(f"all:\n  hosts:\n    h1: {host_vars}\n")
    with pytest.raises(InventoryError, match=message):
        load_inventory(str(bad), cache_dir=cache)


def test_templated_address_is_rendered(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text(
        "all:\n  vars:\n    domain: lab.example\n  hosts:\n"
        "    h1: {ansible_host: '{{ inventory_hostname }}.{{ domain }}'}\n"
    )
    assert load_inventory(str(f), cache_dir=cache).hosts["h1"].address == "h1.lab.example"


def test_connection_and_scheduler_vars_are_rendered_also_from_the_cache(tmp_path: Path, cache: Path) -> None:
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n")
    (d / "group_vars" / "all.yml").write_text(
        "ansible_ssh_private_key_file: '{{ inventory_dir }}/id_ed25519'\n"
        "ansible_ssh_common_args: '-o UserKnownHostsFile={{ inventory_dir }}/known_hosts'\n"
        "ansible_user: '{{ ops_user }}'\n"
        "ops_user: fleetops\n"
        "fleet_slurm_controller: '{{ ctl }}'\n"
        "ctl: h1\n"
        "fleet_agent_drained_file: '{{ inventory_dir }}/drained'\n"
        "unrelated: '{{ inventory_dir }}'\n"
    )
    for from_cache in (False, True):
        inventory = load_inventory(str(d / "hosts.yml"), cache_dir=cache)
        assert inventory.from_cache is from_cache
        v = inventory.hosts["h1"].vars
        assert v["ansible_ssh_private_key_file"] == f"{d}/id_ed25519"
        assert v["ansible_ssh_common_args"] == f"-o UserKnownHostsFile={d}/known_hosts"
        assert v["ansible_user"] == "fleetops"
        assert v["fleet_slurm_controller"] == "h1"
        assert v["fleet_agent_drained_file"] == f"{d}/drained"
        assert v["unrelated"] == "{{ inventory_dir }}"  # not fleetctl's to render


def test_a_connection_var_that_cannot_render_names_host_and_variable(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text("all:\n  hosts:\n    h1: {ansible_user: '{{ nowhere }}'}\n")
    with pytest.raises(InventoryError, match=r"host h1: ansible_user"):
        load_inventory(str(f), cache_dir=cache)


def test_plain_token_is_a_secret_and_not_a_var(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "t.yml"
    f.write_text("all:\n  hosts:\n    h1: {fleet_agent_token: hunter2}\n")
    h = load_inventory(str(f), cache_dir=cache).hosts["h1"]
    assert isinstance(h.agent_token, Secret) and h.agent_token.reveal() == "hunter2"
    assert "hunter2" not in repr(h) and "hunter2" not in str(h.agent_token)
    assert "fleet_agent_token" not in h.vars


def test_empty_token_means_none_and_a_non_string_token_is_an_error(tmp_path: Path, cache: Path) -> None:
    # As in the fleet_agent role: an empty token serves without one (the example inventory's
    # default when no vault is loaded), so fleetctl sends no Authorization header.
    f = tmp_path / "t.yml"
    f.write_text("all:\n  hosts:\n    h1: {fleet_agent_token: \"{{ vault_tok | default('') }}\"}\n")
    assert load_inventory(str(f), cache_dir=cache).hosts["h1"].agent_token is None
    g = tmp_path / "u.yml"
    g.write_text("all:\n  hosts:\n    h2: {fleet_agent_token: [1, 2]}\n")
    with pytest.raises(InventoryError, match=r"u.yml: host h2: fleet_agent_token: expected a string"):
        load_inventory(str(g), cache_dir=cache)


def test_the_old_expected_chips_name_is_an_error_naming_the_new_one(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "old.yml"
    f.write_text("all:\n  hosts:\n    h1: {fleet_expected_chips: 8}\n")
    with pytest.raises(InventoryError, match=r"old.yml: host h1: fleet_expected_chips was renamed "
                                             r"fleet_agent_expected_chips"):
        load_inventory(str(f), cache_dir=cache)


def test_example_inventory_loads(cache: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    inv = load_inventory(str(repo / "inventory" / "example"), cache_dir=cache)
    assert len(inv.hosts) > 0
    assert all(h.agent_token is None for h in inv.hosts.values())


def test_vault_token_stays_encrypted_in_the_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "vault-pass"
    pw.write_text("correct horse\n")
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(pw),
            "tok-123",
            "--name",
            "fleet_agent_token",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n")
    (d / "group_vars" / "gpu_nodes.yml").write_text(out)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(pw))
    load_inventory(str(d / "hosts.yml"), cache_dir=cache)
    warm = load_inventory(str(d / "hosts.yml"), cache_dir=cache)
    assert warm.from_cache
    token = warm.hosts["h1"].agent_token
    assert token is not None and token.is_vaulted and token.reveal() == "tok-123"
    cached = "".join(f.read_text() for f in cache.iterdir())
    assert "tok-123" not in cached and "$ANSIBLE_VAULT" in cached


def test_sources_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_dir = tmp_path / "proj"
    cfg_dir.mkdir()
    (cfg_dir / "ansible.cfg").write_text("[defaults]\ninventory = inventory/lab\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(cfg_dir / "ansible.cfg"))
    monkeypatch.delenv("FLEETCTL_INVENTORY", raising=False)
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    assert resolve_sources(None) == [str(cfg_dir / "inventory/lab")]
    monkeypatch.setenv("FLEETCTL_INVENTORY", "/x/env.yml")
    assert resolve_sources(None) == ["/x/env.yml"]
    assert resolve_sources("/x/flag.yml") == ["/x/flag.yml"]


def test_no_inventory_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("FLEETCTL_INVENTORY", "ANSIBLE_INVENTORY", "ANSIBLE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    if Path("/etc/ansible/ansible.cfg").exists():
        pytest.fail("this test needs a machine without /etc/ansible/ansible.cfg")
    with pytest.raises(InventoryError, match="no inventory"):
        resolve_sources(None)


def test_an_ipv6_ansible_host_in_brackets_is_the_bare_address(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "v6.yml"
    source.write_text("all:\n  hosts:\n"
                      "    a: {ansible_host: '[2001:db8::2]'}\n    b: {ansible_host: '2001:db8::3'}\n")
    for inv in (load_inventory(str(source), cache_dir=cache), load_inventory(str(source), cache_dir=cache)):
        assert inv.hosts["a"].address == "2001:db8::2"
        assert [inv.hosts[n].agent_endpoint for n in "ab"] == [f"[2001:db8::2]:{DEFAULT_PORT}",
                                                               f"[2001:db8::3]:{DEFAULT_PORT}"]


def encrypt_string(tmp_path: Path, name: str, value: str) -> str:
    pw = tmp_path / "vault-pass"
    pw.write_text("correct horse\n")
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
         "--vault-password-file", str(pw), value, "--name", name],
        check=True, capture_output=True, text=True,
    ).stdout


@pytest.mark.parametrize("reference", ["{{ vault_fleet_agent_token }}",
                                       "{{ vault_fleet_agent_token | default('') }}"])  # inventory/example's
def test_the_vault_idiom_for_the_token_keeps_it_encrypted(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, reference: str) -> None:
    # group_vars: fleet_agent_token: "{{ vault_fleet_agent_token }}", the latter encrypted.
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n")
    (d / "group_vars" / "gpu_nodes.yml").write_text(
        encrypt_string(tmp_path, "vault_fleet_agent_token", "tok-456")
        + f"fleet_agent_token: \"{reference}\"\n")
    (d / "host_vars").mkdir()
    (d / "host_vars" / "h2.yml").write_text(encrypt_string(tmp_path, "fleet_agent_token", "tok-789"))
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n    h2:\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "vault-pass"))
    hosts = load_inventory(str(d / "hosts.yml"), cache_dir=cache).hosts
    # Two different vaulted tokens in one process (Ansible's vault context is set up only once).
    tokens = [hosts[n].agent_token for n in ("h1", "h2")]
    assert all(t is not None and t.is_vaulted for t in tokens)
    assert [t.reveal() for t in tokens if t is not None] == ["tok-456", "tok-789"]
    assert "tok-456" not in "".join(f.read_text() for f in cache.iterdir())


def test_a_vaulted_connection_variable_is_a_one_line_error(tmp_path: Path, cache: Path) -> None:
    d = tmp_path / "inv"
    (d / "host_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n")
    (d / "host_vars" / "h1.yml").write_text(encrypt_string(tmp_path, "ansible_host", "10.1.1.1"))
    with pytest.raises(InventoryError, match=r"hosts.yml: host h1: ansible_host is vault-encrypted"):
        load_inventory(str(d / "hosts.yml"), cache_dir=cache)


@pytest.mark.parametrize(("content", "message"), [
    ("fleet_agent_port: [1, 2\n", r"host_vars/h1.yml:\d+(:\d+)?: "),  # YAML syntax: file and line
    ("just a string\n", r"host h1: .*host_vars/h1.yml"),  # not a mapping
    ("x: {{ unquoted }}\n", r"host_vars/h1.yml:\d+"),
])
def test_a_broken_host_vars_file_is_a_one_line_error_naming_it(tmp_path: Path, cache: Path, content: str,
                                                                message: str) -> None:
    d = tmp_path / "inv"
    (d / "host_vars").mkdir(parents=True)
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n")
    (d / "host_vars" / "h1.yml").write_text(content)
    with pytest.raises(InventoryError, match=message) as err:
        load_inventory(str(d / "hosts.yml"), cache_dir=cache)
    assert "\n" not in str(err.value)


def test_statements_and_comments_are_templates_too(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "j.yml"
    f.write_text("all:\n  hosts:\n    h1:\n      ansible_host: \"{% if true %}10.9.9.9{% endif %}\"\n"
                 "      fleet_agent_port: \"{% if true %}9001{% endif %}\"\n")
    h = load_inventory(str(f), cache_dir=cache).hosts["h1"]
    assert (h.address, h.agent_port) == ("10.9.9.9", 9001)


def test_a_cache_entry_with_the_right_key_but_damaged_content_is_parsed_again(inv: Path, cache: Path) -> None:
    load_inventory(str(inv), cache_dir=cache)
    (entry,) = cache.iterdir()
    doc = json.loads(entry.read_text())
    del doc["groups"]
    entry.write_text(json.dumps(doc))
    again = load_inventory(str(inv), cache_dir=cache)
    assert not again.from_cache and len(again.hosts) == 4
    assert load_inventory(str(inv), cache_dir=cache).from_cache  # and the entry was rewritten


def test_the_cache_sees_edits_that_keep_mtime_and_size(inv: Path, cache: Path) -> None:
    gv = inv.parent / "group_vars" / "tpu_nodes.yml"
    load_inventory(str(inv), cache_dir=cache)
    before = gv.stat()
    gv.write_text(gv.read_text().replace("19500", "19501"))  # same size
    os.utime(gv, ns=(before.st_atime_ns, before.st_mtime_ns))  # as within one second, or tar -p
    reloaded = load_inventory(str(inv), cache_dir=cache)
    assert not reloaded.from_cache and reloaded.hosts["v5e-0001"].agent_port == 19501


def test_the_cache_follows_files_in_symlinked_vars_directories(tmp_path: Path, cache: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "ports.yml").write_text("fleet_agent_port: 9001\n")
    d = tmp_path / "inv"
    (d / "group_vars").mkdir(parents=True)
    (d / "group_vars" / "all").symlink_to(shared)
    (d / "group_vars" / "all" / "loop").symlink_to(shared)  # a cycle must not hang the walk
    (d / "hosts.yml").write_text("gpu_nodes:\n  hosts:\n    h1:\n")
    assert load_inventory(str(d / "hosts.yml"), cache_dir=cache).hosts["h1"].agent_port == 9001
    (shared / "ports.yml").write_text("fleet_agent_port: 9002\n")
    assert load_inventory(str(d / "hosts.yml"), cache_dir=cache).hosts["h1"].agent_port == 9002


def test_ansible_settings_from_the_environment_are_part_of_the_cache_key(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "inv"
    d.mkdir()
    (d / "a.yml").write_text("all:\n  hosts:\n    h1:\n")
    (d / "extra.yml").write_text("all:\n  hosts:\n    h2:\n")
    # (Ansible reads its settings once per process: what matters here is that the entry is not reused.)
    assert sorted(load_inventory(str(d), cache_dir=cache).hosts) == ["h1", "h2"]
    assert load_inventory(str(d), cache_dir=cache).from_cache
    monkeypatch.setenv("ANSIBLE_INVENTORY_IGNORE", "extra.yml")
    assert not load_inventory(str(d), cache_dir=cache).from_cache


def test_a_second_parse_in_one_process_sees_vars_files_added_and_removed(inv: Path, cache: Path) -> None:
    assert "rack_row" not in load_inventory(str(inv), cache_dir=cache).hosts["h100-0001"].vars
    added = inv.parent / "group_vars" / "all.yml"
    added.write_text("rack_row: z\n")
    assert load_inventory(str(inv), cache_dir=cache).hosts["h100-0001"].vars["rack_row"] == "z"
    added.unlink()
    assert "rack_row" not in load_inventory(str(inv), cache_dir=cache).hosts["h100-0001"].vars


@pytest.mark.parametrize("pattern", ["all:&", "all:!"])
def test_a_pattern_ansible_cannot_parse_is_a_usage_error(inv: Path, cache: Path, pattern: str) -> None:
    inventory = load_inventory(str(inv), cache_dir=cache)
    with pytest.raises(InventoryError, match=r"pattern .*: not a host pattern|matches no host"):
        inventory.select(pattern)


def test_join_patterns_joins_as_ansible_does() -> None:
    from fleetctl.inventory import join_patterns

    assert join_patterns(["gpu_nodes", "&rack1", "!h100-0003"]) == "gpu_nodes:&rack1:!h100-0003"
    assert join_patterns(["a,b", " c "]) == "a,b:c"
    assert join_patterns([]) == join_patterns(None) == join_patterns(["", "  "]) == "all"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("h100-[0001,0003]", ["h100-0001", "h100-0003"]),
        ("h100-[0002-0003],v5e-0001", ["h100-0002", "h100-0003", "v5e-0001"]),
        ("all:!h100-[0001-0002]", ["h100-0003", "v5e-0001"]),
        ("gpu_nodes:&h100-[0002-0003]", ["h100-0002", "h100-0003"]),
        ("h100-000[3]", ["h100-0003"]),
        ("rack[1]", ["h100-0001", "v5e-0001"]),  # 'rack' is no group: the Slurm way, a name that is a group
        ("gpu_nodes[1]", ["h100-0002"]),  # a group: Ansible's subscript, as before
        ("gpu_nodes[0-1]", ["h100-0001", "h100-0002"]),
        ("h100-000[!1]", ["h100-0002", "h100-0003"]),  # a glob class: Ansible's
        ("h100-000[1-2]*", ["h100-0001", "h100-0002"]),  # a glob around the bracket: Ansible's
        ("h100-00[0][1-2]?", []),  # (no such host, but Ansible's glob, not a host-list error)
    ],
)
def test_slurm_host_lists_in_patterns(inv: Path, cache: Path, pattern: str, expected: list[str]) -> None:
    inventory = load_inventory(str(inv), cache_dir=cache)
    if not expected:
        with pytest.raises(InventoryError, match=re.escape(f"{pattern!r} matches no host;")):
            inventory.select(pattern)
        return
    assert names(inventory.select(pattern)) == expected


@pytest.mark.parametrize("pattern", [
    "h[0-1999]x[0-999]",  # 2,000,000 names from two brackets
    "h[" + ",".join(f"{i * 100000}-{i * 100000 + 99998}" for i in range(20)) + "]",  # 20 items of 99,999
    "h[0-99999]x[0-99999]",  # 10**10: counted, never built
])
def test_a_host_list_too_long_is_refused_before_it_is_built(inv: Path, cache: Path, pattern: str) -> None:
    import tracemalloc

    inventory = load_inventory(str(inv), cache_dir=cache)
    tracemalloc.start()
    try:
        with pytest.raises(InventoryError, match=r"more than 100000 names"):
            inventory.select(pattern)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024  # the names were never built (2M of them take > 100 MB)


@pytest.mark.parametrize(("pattern", "message"), [
    ("h100-[0003-0001]", "[0003-0001] is not a host list"),
    ("h100-[0001,,2]", "[0001,,2] is not a host list"),
    ("h100-[0001-0003", "unbalanced brackets"),
    ("h100-[0001-0009]", "'h100-0004' (and 5 more) matches no host or group"),
])
def test_a_malformed_or_unknown_host_list_is_a_one_line_error(inv: Path, cache: Path, pattern: str,
                                                             message: str) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(str(inv), cache_dir=cache).select(pattern)
    assert message in str(err.value) and "\n" not in str(err.value) and err.value.exit_code == EXIT_USAGE


def test_summary_host_lists_round_trip_as_patterns(tmp_path: Path, cache: Path) -> None:
    from fleetctl.views.summary import hostlist

    hosts = ["n1", "n2", "n10", "n01", "h100-0999", "h100-1000", "gw"]
    path = tmp_path / "round.yml"
    path.write_text("all:\n  hosts:\n" + "".join(f"    '{h}': {{}}\n" for h in hosts))
    inventory = load_inventory(str(path), cache_dir=cache)
    for chosen in (hosts, hosts[:3], ["n01", "n10", "h100-1000"]):
        text = hostlist(chosen)
        assert sorted(names(inventory.select(text))) == sorted(chosen), text


def test_cached_vars_read_the_same_as_parsed_ones_and_a_non_mapping_entry_is_parsed_again(
        inv: Path, cache: Path) -> None:
    parsed = load_inventory(str(inv), cache_dir=cache)
    cached = load_inventory(str(inv), cache_dir=cache)
    assert cached.from_cache
    for name, host in parsed.hosts.items():
        again = cached.hosts[name]
        assert dict(again.vars) == dict(host.vars) and list(again.vars) == list(host.vars)
        assert (again.address, again.agent_port, again.groups) == (host.address, host.agent_port, host.groups)
    assert cached.hosts["v5e-0001"].vars["rack_row"] == "b" and "rack_row" in cached.hosts["v5e-0001"].vars
    assert cached.hosts["v5e-0001"].vars.get("no_such_var", "x") == "x"
    (entry,) = cache.iterdir()
    doc = json.loads(entry.read_text())
    doc["hosts"][0]["vars"] = ["not", "a", "mapping"]
    entry.write_text(json.dumps(doc))
    again = load_inventory(str(inv), cache_dir=cache)
    name = doc["hosts"][0]["name"]
    assert not again.from_cache and dict(again.hosts[name].vars) == dict(parsed.hosts[name].vars)


def test_an_infinite_or_nan_variable_is_still_read_from_the_cache(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "inv.yml"
    f.write_text("all:\n  hosts:\n    n1: {ansible_host: 127.0.0.1, max_temp: .inf, floor: .nan}\n")
    parsed = load_inventory(str(f), cache_dir=cache)
    cached = load_inventory(str(f), cache_dir=cache)
    assert not parsed.from_cache and cached.from_cache
    assert cached.hosts["n1"].vars["max_temp"] == float("inf") and cached.hosts["n1"].vars["floor"] != 0


@pytest.mark.parametrize(("text", "plugin"), [
    ("plugin: ansible.builtin.generator\n", True),
    ("---\n# a generator\nplugin: ansible.builtin.generator\n", True),
    ("---\r\nplugin: ansible.builtin.generator\r\n", True),
    ("---\rplugin: ansible.builtin.generator\r", True),  # old Mac line breaks: text mode reads them too
    ("all:\n  plugin: not-a-top-level-key\n", False),
    ("# plugin: commented out\nall:\n  hosts: {}\n", False),
])
def test_an_inventory_plugin_config_is_told_by_a_line_that_starts_with_plugin(
        tmp_path: Path, text: str, plugin: bool) -> None:
    from fleetctl.inventory import _cacheable, _is_plugin_config

    f = tmp_path / "inv.yml"
    f.write_bytes(text.encode())
    assert _is_plugin_config(str(f)) is plugin
    assert _cacheable(str(f)) is not plugin


def test_a_plugin_config_is_read_by_ansible_every_time(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "gen.yml"
    f.write_bytes(b"---\r\n# hosts from layers\r\nplugin: ansible.builtin.generator\r\n"
                  b"hosts:\r\n  name: \"gpu-{{ rack }}\"\r\nlayers:\r\n  rack: [r1, r2]\r\n")
    first = load_inventory(str(f), cache_dir=cache)
    second = load_inventory(str(f), cache_dir=cache)
    assert sorted(first.hosts) == sorted(second.hosts) == ["gpu-r1", "gpu-r2"]
    assert not first.from_cache and not second.from_cache


def test_a_host_from_the_cache_is_the_host_as_parsed(inv: Path, cache: Path) -> None:
    import dataclasses

    from fleetctl.inventory import Host

    parsed = load_inventory(str(inv), cache_dir=cache)
    cached = load_inventory(str(inv), cache_dir=cache)
    assert cached.from_cache and list(cached.hosts) == list(parsed.hosts)
    every_field = {f.name for f in dataclasses.fields(Host)}
    for name, host in parsed.hosts.items():
        again = cached.hosts[name]
        assert type(again) is Host and set(vars(again)) == every_field  # built without __init__: all set
        assert again == host and dict(again.vars) == dict(host.vars)
        assert (again.agent_token, again.expected_chips) == (host.agent_token, host.expected_chips)
        with pytest.raises(dataclasses.FrozenInstanceError):
            again.address = "elsewhere"  # type: ignore[misc]
