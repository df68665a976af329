"""The Ansible inventory sim-fleet writes, so that ``fleetctl`` can be pointed at the fleet.

Given the fleet's scenario, the inventory also lets ``fleetctl burn-in`` run on it: the hosts are
reached on this machine by the burn-in play only (``burn_in_connection: local``, this Python) and
each GPU host's ``dcgmi`` is the stand-in (``burn_in_dcgmi``), which answers from that host's scenario,
below the real burn-in playbook and parser. Likewise ``fleetctl remediate``'s repair plays
(``playbooks/remediate/*.yml``: ``remediate_connection: local``) run the ``nvidia-smi`` stand-in
(``remediate_nvidia_smi``), whose resets the fleet's chips honour through the state directory they
share (``fleet_agent.sim.resets``). Not ``ansible_connection``: every other playbook run on this
inventory (``fleetctl provision``) would then act on this machine. Inventory variables, not ``-e``:
an extra var would override every host's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import yaml

from fleet_agent.atomic import write_atomic
from fleet_agent.daemon import AgentRuntime

SIM_SSH_PORT = 1


def _which(scenario: str, hosts: int, state_dir: str | None, host_index: int | None) -> list[str]:
    """A stand-in's options naming the fleet and the host (by index, or the inventory's own name)."""
    host = (["--host-index", str(host_index)] if host_index is not None
            else ["--host", "{{ inventory_hostname }}"])
    return ["--scenario", scenario, "--hosts", str(hosts), *host,
            *(["--state-dir", state_dir] if state_dir is not None else [])]


def burn_in_vars(scenario: str, hosts: int, *, python: str | None = None, state_dir: str | None = None,
                 host_index: int | None = None) -> dict[str, Any]:
    """The variables that point ``fleetctl burn-in`` (playbooks/burn_in.yml) at the dcgmi stand-in of
    a fleet of ``hosts`` hosts over ``scenario`` (a path or a shipped scenario's name). With the
    fleet's ``state_dir`` the stand-in sees the fleet's clock and its GPU resets; ``host_index`` names
    the scenario's host where the inventory's names are not the scenario's."""
    py = python or sys.executable
    return {"burn_in_connection": "local", "ansible_python_interpreter": py,
            "burn_in_dcgmi": [py, "-m", "fleet_agent.sim.dcgmi",
                              *_which(scenario, hosts, state_dir, host_index)]}


def remediate_vars(scenario: str, hosts: int, state_dir: str, *, python: str | None = None,
                   host_index: int | None = None) -> dict[str, Any]:
    """The variables that point ``fleetctl remediate``'s repair plays at the nvidia-smi stand-in: run
    here, without root, and without stopping this machine's own GPU services."""
    py = python or sys.executable
    return {"remediate_connection": "local", "ansible_python_interpreter": py,
            "fleetctl_remediate_become": False, "fleetctl_reset_stop_services": [],
            "remediate_nvidia_smi": [py, "-m", "fleet_agent.sim.nvidia_smi",
                                     *_which(scenario, hosts, state_dir, host_index), "--"]}


def inventory_doc(runtimes: Sequence[AgentRuntime], *, token: str | None = None,
                  scenario: str | None = None, state_dir: str | None = None) -> dict[str, Any]:
    """An Ansible YAML inventory of the simulated hosts (host vars once, under ``all.hosts``).

    With ``token`` the fleet's bearer token goes in ``all.vars.fleet_agent_token`` so that
    ``fleetctl health`` on this inventory authenticates (the file is then written 0600). With
    ``scenario`` (the fleet's), :func:`burn_in_vars` go in ``all.vars`` too, and with its
    ``state_dir`` (where the fleet records its start and GPU resets) :func:`remediate_vars`.
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
    # ansible_port (once, for every host): a port nothing listens on (TCP port 1, tcpmux, long
    # unassigned), so a play without its own connection (site.yml, system_reboot.yml) finds the hosts
    # unreachable instead of reaching this machine's sshd.
    variables: dict[str, Any] = {"ansible_port": SIM_SSH_PORT}
    if scenario:
        variables.update(burn_in_vars(scenario, len(runtimes), state_dir=state_dir))
        if state_dir is not None:
            variables.update(remediate_vars(scenario, len(runtimes), state_dir))
    if token:
        variables["fleet_agent_token"] = token
    doc["all"]["vars"] = variables
    if groups:
        doc["all"]["children"] = {g: {"hosts": members} for g, members in sorted(groups.items())}
    return doc


def _group_name(name: str) -> str:
    # Ansible group names: letters, digits and underscores.
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def write_inventory(path: str, runtimes: Sequence[AgentRuntime], *, token: str | None = None,
                    scenario: str | None = None, state_dir: str | None = None) -> None:
    doc = inventory_doc(runtimes, token=token, scenario=scenario, state_dir=state_dir)
    text = "# written by fleet-agent sim-fleet\n" + yaml.safe_dump(doc, sort_keys=False)
    write_atomic(path, text, mode=0o600 if token else 0o644)
