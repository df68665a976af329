"""The ``libyaml`` trick: a plain YAML inventory file read by libyaml's safe loader gives the values
Ansible's loader gives, templates in it stay trusted, and every other file is left to Ansible."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from ansible._internal._datatag._tags import TrustedAsTemplate
from ansible.parsing.dataloader import DataLoader

from fleetctl.inventory import InventoryError, load_inventory
from fleetctl.speedups import ENV_OFF, NOT_PLAIN, inventory_loader_class, plain_yaml

MIXED = """\
# every kind of scalar YAML 1.1 resolves, as an inventory might hold them
all:
  vars:
    flags: [yes, no, on, off, true, False, ~, null, '']
    numbers: [1, -7, 0o17, 0x1f, 1_000, 1.5, -2.0e+3, .inf, -.inf, 3:25, 190:20:30]
    words: [1e3, '42', "07", v1.2, 10.0.0.7, h100-0001, "a: b"]
    when: [2024-01-31, 2024-01-31 10:20:30, 2001-12-14t21:59:43.10-05:00]
    text: |
      two
      lines
    folded: >
      one
      line
    base: &base {port: 10400, labels: {rack: r1}}
    merged:
      <<: *base
      port: 10401
  hosts:
    h1:
    h2: {ansible_host: "{{ inventory_hostname }}.lab", note: "{% if true %}x{% endif %}"}
    h3: {"{{ key }}": "#jinja2:variable_start_string:'[%'\\n[% x %]", plain: 'curly { brace'}
    h4: {extra: ["{{ a }}", {k: "{{ b }}"}, plain]}
"""


def _typed(v: Any) -> Any:
    """``v`` with each value's plain type beside it: 1 == True and a tagged str == str otherwise."""
    for kind in (bool, int, float, str, bytes, datetime.datetime, datetime.date):
        if isinstance(v, kind):
            return (kind.__name__, v)
    if v is None:
        return None
    if isinstance(v, dict):
        return ("dict", [(_typed(k), _typed(x)) for k, x in v.items()])
    if isinstance(v, (list, tuple)):  # Ansible's are subclasses (tagged with where they came from)
        return ("list" if isinstance(v, list) else "tuple", [_typed(x) for x in v])
    if isinstance(v, set):
        return ("set", sorted(map(str, v)))
    raise AssertionError(f"unexpected type {type(v)}")


def _ansible(path: Path) -> Any:
    return DataLoader().load_from_file(str(path), cache="none", trusted_as_template=True)


def test_plain_yaml_gives_the_values_and_types_ansibles_loader_gives(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    f.write_text(MIXED)
    got = plain_yaml(str(f), trusted=True)
    assert got is not NOT_PLAIN
    assert _typed(got) == _typed(_ansible(f))
    assert got["all"]["vars"]["merged"] == {"port": 10401, "labels": {"rack": "r1"}}
    assert got["all"]["vars"]["words"][0] == "1e3"  # YAML 1.1: a string, as Ansible reads it


def test_sets_and_ordered_maps_are_read_alike_and_left_to_ansible_to_trust(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    f.write_text("all:\n  vars:\n    set: !!set {a, b}\n    pairs: !!omap [{x: 1}, {y: 2}]\n")
    assert _typed(plain_yaml(str(f), trusted=False)) == _typed(_ansible(f))
    assert plain_yaml(str(f), trusted=True) is NOT_PLAIN  # tuples and sets: not walked for trust


def test_strings_that_could_be_templates_are_trusted_and_no_others(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    f.write_text(MIXED)
    hosts = plain_yaml(str(f), trusted=True)["all"]["hosts"]
    trusted = TrustedAsTemplate.is_tagged_on
    assert trusted(hosts["h2"]["ansible_host"]) and trusted(hosts["h2"]["note"])
    [(key, value)] = [(k, v) for k, v in hosts["h3"].items() if k != "plain"]
    assert trusted(key) and trusted(value)  # a key and a Jinja override header
    assert trusted(hosts["h3"]["plain"])  # any brace: Ansible's own test would look further
    assert not any(trusted(k) for k in hosts) and not trusted(plain_yaml(str(f), trusted=True)["all"]
                                                                ["vars"]["words"][5])
    listed = hosts["h4"]["extra"]
    assert trusted(listed[0]) and trusted(listed[1]["k"]) and not trusted(listed[2])
    untrusted = plain_yaml(str(f), trusted=False)["all"]["hosts"]["h2"]["ansible_host"]
    assert not trusted(untrusted)  # the file was not asked for with trust


LEFT_TO_ANSIBLE: list[tuple[str, str | bytes | None]] = [
    ("vault-tag", "all:\n  vars:\n    tok: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      3031\n"),
    ("unsafe-tag", "all:\n  vars:\n    raw: !unsafe '{{ not a template }}'\n"),
    ("json", '{"all": {"hosts": {"h1": {"n": 1e3}}}}'),
    ("vaulted-file", "$ANSIBLE_VAULT;1.1;AES256\n6162\n"),
    ("syntax-error", "all:\n  hosts:\n    h1: {a: 1\n"),
    ("plugin-config", "plugin: ansible.builtin.constructed\ncompose:\n  x: inventory_hostname ~ '-a'\n"),
    ("missing", None),
    ("utf-16", "all:\n  hosts:\n    h1:\n".encode("utf-16")),
    ("not-utf-8", b"all:\n  hosts:\n    h\xe9:\n"),
    ("template-in-omap", "all:\n  vars:\n    om: !!omap [{a: '{{ base }}.5'}]\n"),
    ("template-in-set", "all:\n  vars:\n    s: !!set {'{{ x }}'}\n"),
    ("anchor-holding-itself", "all:\n  vars:\n    x: &a [*a]\n"),
]


@pytest.mark.parametrize(("name", "text"), LEFT_TO_ANSIBLE, ids=[c[0] for c in LEFT_TO_ANSIBLE])
def test_anything_but_plain_yaml_is_left_to_ansible(tmp_path: Path, name: str,
                                                    text: str | bytes | None) -> None:
    f = tmp_path / f"{name}.yml"
    if isinstance(text, bytes):
        f.write_bytes(text)
    elif text is not None:
        f.write_text(text)
    assert plain_yaml(str(f), trusted=True) is NOT_PLAIN


def test_duplicate_keys_configured_as_errors_leave_every_file_to_ansible(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yml"
    f.write_text("all:\n  hosts:\n    h1:\n    h1:\n")
    assert plain_yaml(str(f), trusted=True) == {"all": {"hosts": {"h1": None}}}
    from ansible import constants as C

    saved = C.config.get_config_value("DUPLICATE_YAML_DICT_KEY")
    C.config._base_defs["DUPLICATE_YAML_DICT_KEY"]["default"] = "error"
    try:
        assert C.config.get_config_value("DUPLICATE_YAML_DICT_KEY") == "error"
        assert plain_yaml(str(f), trusted=True) is NOT_PLAIN
    finally:
        C.config._base_defs["DUPLICATE_YAML_DICT_KEY"]["default"] = saved


def test_without_parse_once_each_load_is_a_libyaml_parse_of_its_own(tmp_path: Path) -> None:
    """With parse_once (the default) the file is read once: test_speedups_inventory_vars.py."""
    f = tmp_path / "hosts.yml"
    f.write_text(MIXED)
    alone = inventory_loader_class()(parse_once=False)
    assert alone.load_from_file(str(f), cache="none") is not alone.load_from_file(str(f), cache="none")
    assert alone.read_by_libyaml == [str(f), str(f)]


def test_a_file_ansible_rejects_is_worded_by_ansibles_loader(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml's values carry no line: a source that fails is parsed again the way that names it."""
    f = tmp_path / "hosts.yml"
    f.write_text("gpu_nodes:\n  hosts:\n    h1:\n  children:\n    - racks\n")  # children: a list
    monkeypatch.setenv(ENV_OFF, "libyaml")
    with pytest.raises(InventoryError) as plain:
        load_inventory(str(f), use_cache=False)
    monkeypatch.delenv(ENV_OFF)
    with pytest.raises(InventoryError) as fast:
        load_inventory(str(f), use_cache=False)
    assert str(fast.value) == str(plain.value)
    assert str(f) in str(fast.value) and "\n" not in str(fast.value)


def test_a_failing_source_libyaml_did_not_read_is_not_run_again(tmp_path: Path) -> None:
    """The second parse is for a file libyaml read; a script (or a cloud plugin) runs once."""
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n")
    runs = tmp_path / "runs"
    script = inv / "zz.sh"
    script.write_text(f"#!/bin/sh\necho run >> {runs}\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(InventoryError):
        load_inventory(str(inv), use_cache=False)
    assert runs.read_text().split() == ["run"]
