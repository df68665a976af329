"""The Ansible inventory sim-fleet writes, so that ``fleetctl`` can be pointed at the fleet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from fleet_agent.atomic import write_atomic
from fleet_agent.daemon import AgentRuntime


def inventory_doc(runtimes: Sequence[AgentRuntime], *, token: str | None = None) -> dict[str, Any]:
    """An Ansible YAML inventory of the simulated hosts (host vars once, under ``all.hosts``).

    With ``token`` the fleet's bearer token goes in ``all.vars.fleet_agent_token`` so that
    ``fleetctl health`` on this inventory authenticates (the file is then written 0600).
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
    if token:
        doc["all"]["vars"] = {"fleet_agent_token": token}
    if groups:
        doc["all"]["children"] = {g: {"hosts": members} for g, members in sorted(groups.items())}
    return doc


def _group_name(name: str) -> str:
    # Ansible group names: letters, digits and underscores.
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def write_inventory(path: str, runtimes: Sequence[AgentRuntime], *, token: str | None = None) -> None:
    doc = inventory_doc(runtimes, token=token)
    text = "# written by fleet-agent sim-fleet\n" + yaml.safe_dump(doc, sort_keys=False)
    write_atomic(path, text, mode=0o600 if token else 0o644)
