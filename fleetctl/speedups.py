"""fleetctl's speed tricks, all in one place: each is a rule a maintainer must know.

Each trick here buys a measured, material share of a benchmark target (``fleetctl health`` over
1,000 and 10,000 hosts, warm and cold inventory cache; ``parse_apart``: the memory of a cold
100,000-host command); the figures with and without each one, the
threshold that decided, and how to measure again are in docs/performance.md
(benchmarks/bench_speedups.py prints them). Tricks that did not pay their way were removed; that
page names them too, with their figures.

Every trick can be switched off, for that benchmark and for debugging a suspected trick:
``FLEETCTL_SPEEDUPS_OFF=name[,name...]`` (or ``all``), read by :func:`enabled` alone. Off, fleetctl
does the same work the plain way and gives the same answer.

The tricks that lean on ansible-core internals say which in their docstrings;
tests/unit/test_speedups.py checks each of those internals directly and names it when it changed.
The ansible-core range they were written and tested for is pinned in pyproject.toml.

Only the standard library is imported at module level (the fleet report builder imports it too);
Ansible is imported where a trick runs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

ENV_OFF = "FLEETCTL_SPEEDUPS_OFF"

#: Every switchable trick, by the name :func:`enabled` and ``FLEETCTL_SPEEDUPS_OFF`` use.
TRICKS: dict[str, str] = {
    "gc_pause": "no cyclic garbage collection while the inventory or the fleet report is built (gc_paused)",
    "gc_freeze": "what those builds leave is frozen (gc.freeze) at the end of the block (gc_paused)",
    "parse_once": "each inventory source file parsed once per load, not once per inventory plugin",
    "libyaml": "a YAML inventory file read by libyaml's safe loader, without Ansible's tag on every value",
    "group_vars_once": "host variables: vars plugins asked once per distinct group set, not per host",
    "compile_once": "a template shared by many hosts (a group_vars value) compiled once, not per host",
    "parse_apart": "a cold inventory parse runs in a forked child: Ansible's objects end with it (memory)",
}


def enabled(trick: str) -> bool:
    """Whether ``trick`` (a key of :data:`TRICKS`) is on: all are, unless ``FLEETCTL_SPEEDUPS_OFF``
    names it or says ``all``."""
    if trick not in TRICKS:
        raise ValueError(f"unknown speed trick {trick!r}")
    off = {name.strip() for name in os.environ.get(ENV_OFF, "").split(",")}
    return trick not in off and "all" not in off


# --- the cyclic garbage collector around big builds --------------------------------------------------


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while Ansible builds the inventory, or the fleet report its rows.

    Relies on: CPython's ``gc.disable``/``gc.freeze`` (no ansible-core internal).

    Both builds allocate millions of objects that all stay alive to the end of the command, so each
    collection pass finds nothing to free yet walks an ever larger heap (``gc_pause``). On the way
    out everything is frozen (``gc_freeze``): the first collections after the block would otherwise
    walk it all once more. Reference counting still frees everything as usual; cyclic garbage made
    in the block waits for :func:`release_frozen`, which long-running commands (``health --watch``)
    call while idle.
    """
    pause = enabled("gc_pause")
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if enabled("gc_freeze"):
            gc.freeze()
        if pause and was_enabled:
            gc.enable()


def release_frozen() -> None:
    """Hand what :func:`gc_paused` froze back to the collector, and collect (when idle).

    A Ctrl-C during the collection is held until it is over, then raised again for the handler
    that was in place: raised inside an object's finalizer, where a collection runs Python code,
    Python would print it as "ignored" and carry on. (A handler that only records it, rather than
    a blocked signal mask: a mask left set by an exception would make the process deaf to Ctrl-C.)
    """
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
        gc.unfreeze()
        gc.collect()
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        gc.unfreeze()
        gc.collect()
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)  # now, to the handler (or default action) in place again


# --- the inventory parse: each source file parsed once --------------------------------------------------


def inventory_loader(libyaml: bool = True) -> Any:
    """The ``DataLoader`` an inventory parse uses: :func:`inventory_loader_class`'s, or Ansible's.
    ``libyaml=False``: Ansible's YAML loader whatever the switches say (for its wording of an error)."""
    libyaml = libyaml and enabled("libyaml")
    if enabled("parse_once") or libyaml:
        return inventory_loader_class()(parse_once=enabled("parse_once"), libyaml=libyaml)
    from ansible.parsing.dataloader import DataLoader

    return DataLoader()


def inventory_loader_class() -> type[Any]:
    """A ``DataLoader`` subclass for the uncached loads of an inventory parse (its source files).

    Relies on: ``DataLoader.load_from_file(file_name, cache, unsafe, json_only, trusted_as_template)``
    and ``DataLoader.path_dwim`` of ansible-core 2.19 (``cache`` one of ``"all"``, ``"include"``,
    ``"none"``), on the ``auto`` and ``yaml`` inventory plugins asking for their source with
    ``cache="none"``, and (``libyaml``) on ``TrustedAsTemplate`` and the ``DUPLICATE_YAML_DICT_KEY``
    setting.

    ``parse_once``: both plugins load a YAML source uncached, and the loader hands each a deep copy of
    its fresh parse: for a large file, two parses and two copies. Here each such file is parsed once,
    as the ``yaml`` plugin and plugin configs ask (trusted as template: it is the user's own file), and
    every plugin gets that parse. ``auto``, which alone asks without trust, only reads the top-level
    ``plugin`` key; ``yaml`` rejects a file that has one before changing anything.

    ``libyaml``: Ansible's YAML loader tags every scalar with where it came from (file, line, column)
    and, asked to trust the file, with trust; at 10,000 hosts that is half the parse. A file of plain
    YAML is read by :func:`plain_yaml` instead. Anything else (JSON, Ansible's own ``!vault`` and
    ``!unsafe`` tags, a vault-encrypted file, a file that is not UTF-8, a syntax error, an inventory
    plugin's config, sets and ordered maps) is Ansible's to read, as is every file while duplicate
    keys are configured to be errors.
    """
    from ansible.parsing.dataloader import DataLoader

    class InventoryLoader(DataLoader):  # type: ignore[misc]
        def __init__(self, parse_once: bool = True, libyaml: bool = True) -> None:
            super().__init__()
            self._parsed: dict[tuple[str, bool], Any] = {}
            self._parse_once = parse_once
            self._libyaml = libyaml
            self.read_by_libyaml: list[str] = []  # the files plain_yaml read

        def load_from_file(self, file_name: str, cache: Any = "all", unsafe: bool = False,
                           json_only: bool = False, **kwargs: Any) -> Any:
            if cache != "none":  # also ansible-core < 2.19, whose ``cache`` is a bool: Ansible's own path
                return super().load_from_file(file_name, cache=cache, unsafe=unsafe, json_only=json_only,
                                              **kwargs)
            key = (self.path_dwim(file_name), json_only)
            if self._parse_once:
                if key not in self._parsed:
                    # unsafe: no defensive deep copy of a parse nobody else holds.
                    self._parsed[key] = self._load(key[0], json_only, {**kwargs, "trusted_as_template": True},
                                                   unsafe=True)
                return self._parsed[key]
            return self._load(key[0], json_only, kwargs, unsafe)

        def _load(self, path: str, json_only: bool, kwargs: dict[str, Any], unsafe: bool) -> Any:
            if self._libyaml and not json_only:
                parsed = plain_yaml(path, trusted=bool(kwargs.get("trusted_as_template")))
                if parsed is not NOT_PLAIN:
                    self.read_by_libyaml.append(path)
                    return parsed
            return super().load_from_file(path, cache="none", unsafe=unsafe, json_only=json_only, **kwargs)

    return InventoryLoader


#: What :func:`plain_yaml` answers for a file it leaves to Ansible's loader.
NOT_PLAIN: Any = object()


def plain_yaml(path: str, trusted: bool) -> Any:
    """``path`` parsed by libyaml's safe loader, as Ansible's loader would parse it but for the tag
    telling each value's file, line and column; or :data:`NOT_PLAIN` for a file Ansible must read.

    Values are those of Ansible's loader: it is PyYAML's safe constructor with the same resolver,
    plus tags. ``trusted``: each string that could be a template (has a ``{`` or starts with Jinja's
    override header) is marked trusted, which is all that trusting the file changes for templating.
    A duplicate key keeps its last value either way (Ansible also warns, which fleetctl does not show).
    """
    import json

    import yaml
    from ansible import constants as C

    constructor = getattr(yaml, "CSafeLoader", None)
    if constructor is None or C.config.get_config_value("DUPLICATE_YAML_DICT_KEY") == "error":
        return NOT_PLAIN
    try:
        with open(path, "rb") as f:
            text = f.read()
        # Ansible reads the file as UTF-8 (libyaml would also take UTF-16, which Ansible rejects).
        text.decode("utf-8")
        if text.lstrip().startswith(b"$ANSIBLE_VAULT"):
            return NOT_PLAIN
    except (OSError, UnicodeDecodeError):
        return NOT_PLAIN
    try:
        json.loads(text)
    except ValueError:  # not JSON: Ansible would read it as YAML too
        pass
    else:  # JSON: Ansible's decoder (its own markers for unsafe and vaulted values)
        return NOT_PLAIN
    try:
        parsed = yaml.load(text, Loader=constructor)  # noqa: S506 - CSafeLoader: the safe constructor
        if isinstance(parsed, dict) and "plugin" in parsed:
            # An inventory plugin's config: its strings include Jinja expressions without braces
            # (`compose`, `keyed_groups`), which need the trust only Ansible's loader gives all of them.
            return NOT_PLAIN
        return _trusted_templates(parsed) if trusted else parsed
    except Exception:  # noqa: BLE001 - Ansible's tags, syntax errors, a set or ordered map to trust,
        return NOT_PLAIN  # an anchor that holds itself: Ansible's loader and its wording


class _NeedsAnsible(Exception):
    """A value :func:`_trusted_templates` leaves to Ansible's loader to trust."""


def _trusted_templates(value: Any) -> Any:
    """``value`` with each string that could be a template (keys too, as Ansible templates those)
    tagged ``TrustedAsTemplate``; lists and mappings are changed in place. A set or an ordered map
    (``!!set``, ``!!omap``, ``!!pairs``: tuples) raises :class:`_NeedsAnsible`."""
    from ansible._internal._datatag._tags import TrustedAsTemplate

    trust = TrustedAsTemplate()
    walked = (str, dict, list, tuple, set)  # what may hold or be a template; the rest is left as is

    def template_like(v: Any) -> bool:
        return isinstance(v, str) and ("{" in v or v.startswith("#jinja2:"))

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return trust.tag(v) if template_like(v) else v
        if isinstance(v, (tuple, set)):
            raise _NeedsAnsible(type(v).__name__)
        if isinstance(v, dict):
            if any(template_like(k) for k in v):
                items = [(walk(k), walk(x)) for k, x in v.items()]
                v.clear()
                v.update(items)
            else:
                for k, x in v.items():
                    if isinstance(x, walked) and (y := walk(x)) is not x:
                        v[k] = y  # an existing key: the dict's size does not change
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, walked) and (y := walk(x)) is not x:
                    v[i] = y
        return v

    return walk(value)


# --- host variables: the group part once per distinct set of groups ------------------------------------

# VariableManager._ALLOWED entries InventoryVars computes; both Ansible and we ignore unknown ones.
_GROUP_STEPS = frozenset({
    "all_inventory", "all_plugins_inventory", "all_plugins_play",
    "groups_inventory", "groups_plugins_inventory", "groups_plugins_play",
})
# get_vars' default stage: vars plugins configured to run only at inventory load are skipped.
_STAGE = "task"


def host_vars_reader(loader: Any, inventory: Any) -> Callable[[Any], dict[str, Any]]:
    """Each host's variables, as ``VariableManager.get_vars(host=h, include_hostvars=False)`` gives
    them with an empty fact cache: through :class:`InventoryVars`, or (``group_vars_once`` off)
    through ``get_vars`` itself with an in-memory fact cache.

    Facts are left out on purpose: they are not inventory, and fleetctl caches this result keyed by
    the inventory's files, which a fact cache refresh would not invalidate.
    """
    from ansible import constants as C
    from ansible.vars.manager import VariableManager

    from fleetctl.errors import UsageError

    allowed = VariableManager._ALLOWED
    unsupported = [e for e in C.VARIABLE_PRECEDENCE if e in allowed and e not in _GROUP_STEPS]
    if unsupported:
        # Ansible itself fails on these (no such function in get_vars): say so in one line.
        raise UsageError(f"Ansible setting precedence ([defaults] precedence, ANSIBLE_PRECEDENCE): "
                         f"entry {unsupported[0]!r} is not supported")
    if enabled("group_vars_once"):
        return InventoryVars(loader, inventory, VariableManager(loader=loader, inventory=inventory)).get
    saved = C.CACHE_PLUGIN
    C.CACHE_PLUGIN = "memory"  # an empty fact cache, whatever ansible.cfg configures
    try:
        variables = VariableManager(loader=loader, inventory=inventory)
    finally:
        C.CACHE_PLUGIN = saved
    return lambda host: dict(variables.get_vars(host=host, include_hostvars=False))


class InventoryVars:
    """``VariableManager.get_vars`` for every host of one parsed inventory (``InventoryManager``),
    with the group part computed once per distinct set of groups.

    Relies on: ``VariableManager._get_magic_variables(play, host, task, include_hostvars)``,
    ``VariableManager._ALLOWED``, ``VariableManager.extra_vars`` and ``safe_basedir``,
    ``InventoryManager._sources``, and the public helpers ``get_group_vars``, ``sort_groups``,
    ``get_vars_from_inventory_sources``, ``get_vars_from_path``, ``combine_vars`` and the
    ``VARIABLE_PRECEDENCE`` and ``INJECT_FACTS_AS_VARS`` settings.

    ``get_vars`` outside a play asks the vars plugins (``host_group_vars``: the ``group_vars/`` and
    ``host_vars/`` directories) about ``all`` and every group of the host again for every host.
    This follows ``get_vars`` step by step, in its order and with its own functions, but hosts of a
    fleet share a few group sets, so the vars plugins run once per group set plus once per host (for
    ``host_vars/``). The answer equals ``get_vars``' for every key
    (tests/unit/test_speedups_inventory_vars.py checks it on tricky inventories); it assumes, as
    Ansible's own caching does, that a vars plugin's answer for a group depends only on the
    inventory source and the groups it is asked about.
    """

    def __init__(self, loader: Any, inventory: Any, variables: Any) -> None:
        from ansible import constants as C

        self._loader = loader
        self._inventory = inventory
        self._all = inventory.groups.get("all")
        self._steps = [e for e in C.VARIABLE_PRECEDENCE if e in _GROUP_STEPS]
        self._inject_facts = bool(C.INJECT_FACTS_AS_VARS)
        self._extra: dict[str, Any] = dict(variables.extra_vars)
        # The same for every host outside a play (groups, playbook_dir, option vars); no hostvars.
        self._magic: dict[str, Any] = variables._get_magic_variables(
            play=None, host=None, task=None, include_hostvars=False)
        # Playbook-adjacent group_vars/host_vars: none for a VariableManager made without a
        # basedir, as fleetctl's is; kept so the steps mirror get_vars'.
        self._play_basedirs = [loader.get_basedir()] if variables.safe_basedir else []
        self._by_groups: dict[tuple[str, ...], dict[str, Any]] = {}

    def get(self, host: Any) -> dict[str, Any]:
        """What ``get_vars(host=host, include_hostvars=False)`` returns with an empty fact cache."""
        from ansible.inventory.helpers import sort_groups

        groups = sort_groups([g for g in host.get_groups() if g.name != "all"])
        key = tuple(g.name for g in groups)
        data = self._by_groups.get(key)
        if data is None:
            data = self._by_groups[key] = self._group_part(groups)
        data = _combine(data, host.get_vars())
        data = _combine(data, self._plugins_inventory([host]))
        data = _combine(data, self._plugins_play([host]))
        # get_vars with an empty fact cache: an empty ansible_facts, and with fact injection off
        # an empty ansible_local.
        data = {**data, "ansible_facts": {}}
        if not self._inject_facts:
            data = _combine(data, {"ansible_local": {}})
        data = _combine(data, self._extra)
        return _combine(data, self._magic)

    def _group_part(self, groups: list[Any]) -> dict[str, Any]:
        from ansible.inventory.helpers import get_group_vars

        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "all_inventory": lambda: dict(self._all.get_vars()),
            "all_plugins_inventory": lambda: self._plugins_inventory([self._all]),
            "all_plugins_play": lambda: self._plugins_play([self._all]),
            "groups_inventory": lambda: dict(get_group_vars(groups)),
            "groups_plugins_inventory": lambda: self._plugins_inventory(groups),
            "groups_plugins_play": lambda: self._plugins_play(groups),
        }
        data: dict[str, Any] = {}
        for step in self._steps:
            data = _combine(data, steps[step]())
        return data

    def _plugins_inventory(self, entities: list[Any]) -> dict[str, Any]:
        from ansible.vars.plugins import get_vars_from_inventory_sources

        result: dict[str, Any] = get_vars_from_inventory_sources(
            self._loader, self._inventory._sources, entities, _STAGE)
        return result

    def _plugins_play(self, entities: list[Any]) -> dict[str, Any]:
        from ansible.vars.plugins import get_vars_from_path

        data: dict[str, Any] = {}
        for path in self._play_basedirs:
            data = _combine(data, get_vars_from_path(self._loader, path, entities, _STAGE))
        return data


def _combine(data: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    # get_vars' _combine_and_track: an empty contribution leaves the data as it is.
    if new == {}:
        return data
    from ansible.utils.vars import combine_vars

    combined: dict[str, Any] = combine_vars(data, new)
    return combined


# --- templates shared by many hosts, compiled once -------------------------------------------------------


class HostTemplar:
    """Ansible's templating of host variables, one host after another.

    Relies on (``compile_once``): ``Templar._engine`` and its ``_compile_template(template,
    options)`` method of ansible-core 2.19's template engine; without them the templar renders as
    Ansible does, compiling every time.

    Ansible compiles a template every time it renders one; a value from ``group_vars/`` (say
    ``fleet_agent_token: "{{ vault_token | default('') }}"``) is one and the same string object for
    every host of the group, so its compiled form is kept and only rendering is per host. A compiled
    template is a function of its text and options alone, so the result is Ansible's.
    """

    def __init__(self, loader: Any) -> None:
        from ansible.template import Templar

        self._templar = Templar(loader=loader)
        engine = getattr(self._templar, "_engine", None)
        compile_ = getattr(engine, "_compile_template", None)
        if enabled("compile_once") and engine is not None and compile_ is not None:
            # Keyed by identity; the key's object is kept alive with the entry so its id is not reused.
            compiled: dict[tuple[int, Any], tuple[Any, Any]] = {}

            def compile_once(template: Any, options: Any) -> Any:
                key = (id(template), options)
                try:
                    hit = compiled.get(key)
                except TypeError:  # options that cannot be a key: compile as Ansible does
                    return compile_(template, options)
                if hit is None or hit[0] is not template:
                    hit = compiled[key] = (template, compile_(template, options))
                return hit[1]

            engine._compile_template = compile_once

    def render(self, value: Any, variables: dict[str, Any]) -> Any:
        """``value`` templated with ``variables``, as ``Templar(variables=...).template`` does."""
        self._templar.available_variables = variables
        return self._templar.template(value)
