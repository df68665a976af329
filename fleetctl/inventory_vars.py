"""Each inventory host's variables, as Ansible's ``VariableManager.get_vars`` gives them, at fleet scale.

``VariableManager.get_vars(host=h, include_hostvars=False)`` outside a play costs about a millisecond
a host: for every host it asks the vars plugins (``host_group_vars``: the ``group_vars/`` and
``host_vars/`` directories) about ``all`` and every group of the host again, and cleans an empty
fact set. At 10,000 hosts that was most of a cold ``fleetctl`` start.

:class:`InventoryVars` follows ``get_vars`` step by step, in its order and with its own functions
(``get_group_vars``, ``get_vars_from_inventory_sources``, ``combine_vars``, the configured
``VARIABLE_PRECEDENCE``), but computes the group part once per distinct set of groups: hosts of a
fleet share a few group sets, so the vars plugins run once per group set plus once per host (for
``host_vars/``). The answer equals ``get_vars``' for every key (tests/unit/test_inventory_vars.py
checks it on tricky inventories); it assumes, as Ansible's own caching does, that a vars plugin's
answer for a group depends only on the inventory source and the groups it is asked about.

It leans on a few private names of ansible-core 2.19 (``VariableManager._get_magic_variables`` and
``_ALLOWED``, ``InventoryManager._sources``, the template engine's ``_compile_template``), as
``get_vars`` does; the equivalence tests are what notices if a new ansible-core moves them.

Facts are left out on purpose: they are not inventory, and fleetctl caches this result keyed by
the inventory's files, which a fact cache refresh would not invalidate. The result is what
``get_vars`` gives with an empty fact cache (``ansible_facts: {}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleetctl.errors import UsageError

# VariableManager._ALLOWED entries this module computes; both Ansible and we ignore unknown ones.
_GROUP_STEPS = frozenset({
    "all_inventory", "all_plugins_inventory", "all_plugins_play",
    "groups_inventory", "groups_plugins_inventory", "groups_plugins_play",
})
# get_vars' default stage: vars plugins configured to run only at inventory load are skipped.
_STAGE = "task"


class InventoryVars:
    """Variables of the hosts of one parsed inventory (``InventoryManager``)."""

    def __init__(self, loader: Any, inventory: Any, variables: Any) -> None:
        from ansible import constants as C
        from ansible.vars.manager import VariableManager

        self._loader = loader
        self._inventory = inventory
        self._all = inventory.groups.get("all")
        unsupported = [e for e in C.VARIABLE_PRECEDENCE
                       if e in VariableManager._ALLOWED and e not in _GROUP_STEPS]
        if unsupported:
            # Ansible itself fails on these (no such function in get_vars): say so in one line.
            raise UsageError(f"Ansible setting precedence ([defaults] precedence, ANSIBLE_PRECEDENCE): "
                             f"entry {unsupported[0]!r} is not supported")
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


class HostTemplar:
    """Ansible's templating of host variables, one host after another.

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
        if engine is not None and compile_ is not None:
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
