"""The Ansible inventory sim-fleet writes, so that ``fleetctl`` can be pointed at the fleet.

Given the fleet's scenario, the inventory also lets ``fleetctl burn-in`` run on it: the hosts are
reached on this machine by the burn-in play only (``burn_in_connection: local``, this Python) and
each GPU host's ``dcgmi`` is the stand-in (``burn_in_dcgmi``), which answers from that host's scenario,
below the real burn-in playbook and parser. Not ``ansible_connection``: every other playbook run on
this inventory (``fleetctl provision``) would then act on this machine. Inventory variables, not
``-e``: an extra var would override every host's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import yaml

from fleet_agent.atomic import write_atomic
from fleet_agent.daemon import AgentRuntime


def burn_in_vars(scenario: str, hosts: int, *, python: str | None = None) -> dict[str, Any]:
    """The variables that point ``fleetctl burn-in`` (playbooks/burn_in.yml) at the dcgmi stand-in of
    a fleet of ``hosts`` hosts over ``scenario`` (a path or a shipped scenario's name)."""
    py = python or sys.executable
    return {"burn_in_connection": "local", "ansible_python_interpreter": py,
            "burn_in_dcgmi": [py, "-m", "fleet_agent.sim.dcgmi", "--scenario", scenario,
                              "--hosts", str(hosts), "--host", "{{ inventory_hostname }}"]}


def inventory_doc(runtimes: Sequence[AgentRuntime], *, token: str | None = None,
                  scenario: str | None = None) -> dict[str, Any]:
    """An Ansible YAML inventory of the simulated hosts (host vars once, under ``all.hosts``).

    With ``token`` the fleet's bearer token goes in ``all.vars.fleet_agent_token`` so that
    ``fleetctl health`` on this inventory authenticates (the file is then written 0600). With
    ``scenario`` (the fleet's), :func:`burn_in_vars` go in ``all.vars`` too.
    """
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, None]] = {}
    for rt in runtimes:
        hv: dict[str, Any] = {"ansible_host": "127.0.0.1", "fleet_agent_port": rt.port}
        if rt.sampler.expected_chips is not None:
            hv["fleet_agent_expected_chips"] = rt.sampler.expected_chips
        hosts[rt.name] = hv
        names = [rt.group] if rt.group else []
        if rt.kind in ("gpu", "tpu"):
            names.append(f"{rt.kind}_nodes")
        for g in names:
            groups.setdefault(_group_name(g), {})[rt.name] = None
    doc: dict[str, Any] = {"all": {"hosts": hosts}}
    variables: dict[str, Any] = burn_in_vars(scenario, len(runtimes)) if scenario else {}
    if token:
        variables["fleet_agent_token"] = token
    if variables:
        doc["all"]["vars"] = variables
    if groups:
        doc["all"]["children"] = {g: {"hosts": members} for g, members in sorted(groups.items())}
    return doc


def _group_name(name: str) -> str:
    # Ansible group names: letters, digits and underscores.
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def write_inventory(path: str, runtimes: Sequence[AgentRuntime], *, token: str | None = None,
                    scenario: str | None = None) -> None:
    doc = inventory_doc(runtimes, token=token, scenario=scenario)
    text = "# written by fleet-agent sim-fleet\n" + yaml.safe_dump(doc, sort_keys=False)
    write_atomic(path, text, mode=0o600 if token else 0o644)
