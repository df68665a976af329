"""fleetctl.speedups: the ansible-core internals each trick relies on are still there, in the shape
the trick was written for (checked directly, each failure naming the internal); each trick can be
switched off without changing an answer; and the garbage-collector pause behaves (moved here from
test_gc_paused.py).

When a guard below fails after an ansible-core upgrade: the trick it names must be adapted or
removed, re-measured with benchmarks/bench_speedups.py, and the pin in pyproject.toml moved.
"""

from __future__ import annotations

import gc
import importlib
import inspect
import os
import re
import signal
import weakref
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from fleetctl import speedups
from fleetctl.inventory import load_inventory
from fleetctl.speedups import ENV_OFF, TRICKS, enabled, gc_paused, release_frozen

REPO = Path(__file__).resolve().parents[2]


# --- the ansible-core internals the tricks rely on -----------------------------------------------------


def _resolve(dotted: str) -> Any:
    """``package.module:Attr.attr`` -> the object, or a failure that names what is missing."""
    module_name, _, attrs = dotted.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"ansible-core internal changed: module {module_name} is gone ({exc})")
    for attr in attrs.split(".") if attrs else []:
        if not hasattr(obj, attr):
            pytest.fail(f"ansible-core internal changed: {dotted} is gone")
        obj = getattr(obj, attr)
    return obj


# (internal, the trick that relies on it, the parameters it must take, in order)
SIGNATURES: list[tuple[str, str, list[str]]] = [
    ("ansible.parsing.dataloader:DataLoader.load_from_file", "parse_once",
     ["self", "file_name", "cache", "unsafe", "json_only", "trusted_as_template"]),
    ("ansible.parsing.dataloader:DataLoader.path_dwim", "parse_once", ["self", "given"]),
    ("ansible._internal._datatag._tags:TrustedAsTemplate.tag", "libyaml", ["self", "value"]),
    ("ansible.vars.manager:VariableManager._get_magic_variables", "group_vars_once",
     ["self", "play", "host", "task", "include_hostvars"]),
    ("ansible.vars.manager:VariableManager.get_vars", "group_vars_once",
     ["self", "play", "host", "task", "include_hostvars"]),
    ("ansible.vars.plugins:get_vars_from_inventory_sources", "group_vars_once",
     ["loader", "sources", "entities", "stage"]),
    ("ansible.vars.plugins:get_vars_from_path", "group_vars_once", ["loader", "path", "entities", "stage"]),
    ("ansible.inventory.helpers:get_group_vars", "group_vars_once", ["groups"]),
    ("ansible.inventory.helpers:sort_groups", "group_vars_once", ["groups"]),
    ("ansible.utils.vars:combine_vars", "group_vars_once", ["a", "b"]),
    ("ansible._internal._templating._engine:TemplateEngine._compile_template", "compile_once",
     ["self", "template", "options"]),
]


@pytest.mark.parametrize(("internal", "trick", "params"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_an_ansible_function_a_trick_calls_or_replaces_keeps_its_signature(
        internal: str, trick: str, params: list[str]) -> None:
    func = _resolve(internal)
    assert callable(func), f"ansible-core internal changed: {internal} is no longer callable (trick {trick})"
    got = list(inspect.signature(func).parameters)
    assert got[:len(params)] == params, (
        f"ansible-core internal changed: {internal}{tuple(got)}, the trick {trick!r} was written for "
        f"{internal}({', '.join(params)})")


def test_load_from_file_takes_cache_as_a_word() -> None:
    """parse_once tells Ansible's uncached loads by ``cache="none"`` (a bool before 2.19)."""
    from ansible.parsing.dataloader import DataLoader

    default = inspect.signature(DataLoader.load_from_file).parameters["cache"].default
    assert default == "all", (f"ansible-core internal changed: DataLoader.load_from_file(cache=...) "
                              f"defaults to {default!r}, parse_once was written for 'all'/'include'/'none'")


@pytest.mark.parametrize("plugin", ["ansible.plugins.inventory.yaml:InventoryModule.parse",
                                    "ansible.plugins.inventory.auto:InventoryModule.parse",
                                    "ansible.plugins.inventory:BaseInventoryPlugin._read_config_data"])
def test_the_inventory_plugins_still_load_their_source_uncached(plugin: str) -> None:
    """parse_once serves exactly these calls: ``loader.load_from_file(path, cache='none', ...)``."""
    source = inspect.getsource(_resolve(plugin))
    assert re.search(r"load_from_file\(\s*path,\s*cache=['\"]none['\"]", source), (
        f"ansible-core internal changed: {plugin} no longer calls load_from_file(path, cache='none'): "
        f"the parse_once trick no longer saves a parse there")


def test_variable_manager_internals_of_group_vars_once() -> None:
    from ansible import constants as C
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    allowed = getattr(VariableManager, "_ALLOWED", None)
    assert isinstance(allowed, frozenset), "ansible-core internal changed: VariableManager._ALLOWED is gone"
    missing = speedups._GROUP_STEPS - allowed
    assert not missing, f"ansible-core internal changed: VariableManager._ALLOWED lacks {sorted(missing)}"
    assert set(allowed) - speedups._GROUP_STEPS == {"plugins_by_group"}, (
        f"ansible-core internal changed: VariableManager._ALLOWED has new steps "
        f"{sorted(set(allowed) - speedups._GROUP_STEPS - {'plugins_by_group'})}: InventoryVars computes none")
    for name in ("VARIABLE_PRECEDENCE", "INJECT_FACTS_AS_VARS", "CACHE_PLUGIN"):
        assert hasattr(C, name), f"ansible-core internal changed: ansible.constants.{name} is gone"
    loader = DataLoader()
    manager = InventoryManager(loader=loader, sources=[])
    assert isinstance(getattr(manager, "_sources", None), list), (
        "ansible-core internal changed: InventoryManager._sources is no longer the list of sources")
    variables = VariableManager(loader=loader, inventory=manager)
    for attr in ("extra_vars", "safe_basedir"):
        assert hasattr(variables, attr), f"ansible-core internal changed: VariableManager.{attr} is gone"


def test_templar_engine_internal_of_compile_once() -> None:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    engine = getattr(Templar(loader=DataLoader()), "_engine", None)
    assert engine is not None, "ansible-core internal changed: Templar._engine is gone (compile_once)"
    assert callable(getattr(engine, "_compile_template", None)), (
        "ansible-core internal changed: Templar._engine._compile_template is gone (compile_once)")


def test_compile_once_really_replaces_the_engines_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible._internal._templating._engine import TemplateEngine
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import trust_as_template

    compiled: list[str] = []
    original = TemplateEngine._compile_template

    def counting(self: Any, template: str, options: Any) -> Any:
        compiled.append(template)
        return original(self, template, options)

    monkeypatch.setattr(TemplateEngine, "_compile_template", counting)
    templar = speedups.HostTemplar(DataLoader())
    assert getattr(templar._templar._engine._compile_template, "__name__", "") == "compile_once", (
        "ansible-core internal changed: Templar._engine._compile_template could not be replaced")
    template = trust_as_template("{{ a }}-{{ b }}")
    assert templar.render(template, {"a": 1, "b": 2}) == "1-2"
    assert templar.render(template, {"a": 3, "b": 4}) == "3-4"
    assert compiled == ["{{ a }}-{{ b }}"], (
        "ansible-core internal changed: rendering no longer goes through TemplateEngine._compile_template "
        "as compile_once expects")


def test_the_installed_ansible_core_is_in_the_pinned_range() -> None:
    from packaging.requirements import Requirement

    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"(ansible-core[^"]+)"', text)
    assert match, "pyproject.toml pins no ansible-core range for the speed tricks"
    pin = Requirement(match.group(1))
    installed = metadata.version("ansible-core")
    assert pin.specifier.contains(installed), (
        f"ansible-core {installed} is outside {pin.specifier}, the range fleetctl.speedups is tested against")


# --- the switch ------------------------------------------------------------------------------------------


def test_every_trick_is_on_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_OFF, raising=False)
    assert all(enabled(t) for t in TRICKS)
    monkeypatch.setenv(ENV_OFF, "gc_pause, parse_once")
    assert not enabled("gc_pause") and not enabled("parse_once") and enabled("gc_freeze")
    monkeypatch.setenv(ENV_OFF, "all")
    assert not any(enabled(t) for t in TRICKS)
    with pytest.raises(ValueError, match="unknown speed trick"):
        enabled("warp_drive")


def _hosts(source: str) -> dict[str, Any]:
    inv = load_inventory(source, use_cache=False)
    return {n: (h.address, h.agent_port, h.groups, h.expected_chips, h.agent_token, dict(h.vars))
            for n, h in inv.hosts.items()}


@pytest.mark.parametrize("trick", [*TRICKS, "all"])
def test_a_trick_switched_off_gives_the_same_inventory(trick: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "inv"
    (source / "group_vars").mkdir(parents=True)
    (source / "hosts.yml").write_text(
        "gpu_nodes:\n  vars: {fleet_agent_port: 19100}\n  hosts:\n"
        + "".join(f"    g{i}: {{ansible_host: '10.0.0.{i}'}}\n" for i in range(20))
        + "tpu_nodes:\n  hosts:\n"
        + "    t1: {fleet_agent_expected_chips: 4, ansible_host: \"{{ 'tpu' ~ '-1' }}.lab\"}\n")
    (source / "group_vars" / "gpu_nodes.yml").write_text(
        "fleet_agent_expected_chips: 8\nfleet_agent_token: \"{{ tok | default('') }}\"\n"
        "ansible_user: '{{ ops | default(\"ops\") }}'\n")
    (source / "group_vars" / "all.yml").write_text("tok: s3cret\n")
    monkeypatch.delenv(ENV_OFF, raising=False)
    expected = _hosts(str(source))
    monkeypatch.setenv(ENV_OFF, trick)
    assert _hosts(str(source)) == expected
    assert expected["g3"][4].reveal() == "s3cret" and expected["g3"][5]["ansible_user"] == "ops"
    assert expected["t1"][0] == "tpu-1.lab"  # a template in the inventory file itself is rendered


# --- the cyclic garbage collector (moved from test_gc_paused.py) ----------------------------------------


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_the_block_pauses_collection_and_freezes_what_it_leaves() -> None:
    assert gc.isenabled()
    try:
        with gc_paused():
            assert not gc.isenabled()
            garbage = _Node()
            ref = weakref.ref(garbage)
            del garbage
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None  # frozen: the collector no longer looks at it
        release_frozen()
        assert gc.get_freeze_count() == 0
        assert ref() is None
    finally:
        gc.unfreeze()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


@pytest.mark.parametrize(("off", "paused", "frozen"), [("gc_pause", False, True), ("gc_freeze", True, False)])
def test_each_half_of_the_pause_can_be_switched_off(off: str, paused: bool, frozen: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OFF, off)
    try:
        with gc_paused():
            assert gc.isenabled() is not paused
            _Node()
        assert gc.isenabled()
        assert (gc.get_freeze_count() > 0) is frozen
    finally:
        gc.unfreeze()


class _CtrlCInFinalizer:
    def __init__(self) -> None:
        self.me = self  # freed only by the collection in release_frozen

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_the_collection_is_raised_after_it_not_lost() -> None:
    # Python's own handler, whatever an earlier test in this process left installed
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with gc_paused():
            _CtrlCInFinalizer()
        with pytest.raises(KeyboardInterrupt):
            release_frozen()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGINT, before)

