"""Which agent answers for which inventory host.

Two inventory hosts with the same agent endpoint (a copied ``ansible_host``) are answered by one
agent; an agent whose report names another host is not this host's. Either way the answer must not
pass for this host's own: undrain would consult the wrong host's agent. Each finding is a problem
naming both hosts; a report that is another host's (:attr:`Identity.foreign`) is not shown as this
host's at all.

An agent deployed by the fleet_agent role reports its inventory name (``fleet_agent_hostname``);
one configured by hand reports the machine's hostname, which may be the short or the full form of
the inventory name or of its ``ansible_host``: those count as the same host.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fleet_agent.schema import Action, Problem, Severity

NAME = "agent_identity"
_SHOWN = 64  # characters of an agent's self-reported name kept in a message


class Endpoint(Protocol):
    """What identity needs of an inventory host (:class:`fleetctl.inventory.Host` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def agent_port(self) -> int: ...

    @property
    def agent_endpoint(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Identity:
    problem: Problem
    foreign: bool  # the report cannot be this host's (or cannot be told whose it is)


def endpoint_key(address: str, port: int) -> tuple[str, int]:
    """An endpoint as compared: host names without case or trailing dot, addresses in one spelling."""
    text = address.strip().strip("[]").rstrip(".").lower()
    try:
        text = str(ipaddress.ip_address(text))
    except ValueError:
        pass
    return text, port


def shared_endpoints(hosts: Sequence[Endpoint]) -> dict[str, tuple[str, ...]]:
    """Per host that shares its agent endpoint with others, the others' names."""
    groups: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
    for h in hosts:
        groups[endpoint_key(h.address, h.agent_port)].append(h.name)
    return {name: tuple(n for n in names if n != name)
            for names in groups.values() if len(names) > 1 for name in names}


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _same_name(a: str, b: str) -> bool:
    if not a or not b:
        return False
    if a == b:
        return True
    if _is_ip(a) or _is_ip(b):
        return False
    # A short name and a full one: the short one is the full one's first label.
    return ("." in a) != ("." in b) and a.split(".", 1)[0] == b.split(".", 1)[0]


def names_match(host: Endpoint, reported: str) -> bool:
    """Whether ``reported`` (the host an agent's report names) is ``host``, by its inventory name or
    its address."""
    r = _norm(reported)
    return _same_name(_norm(host.name), r) or _same_name(_norm(host.address), r)


class _Owners:
    """Which inventory hosts a reported name is (:func:`names_match`), found by lookups in an index
    built once: a scan of every host per mismatched report would make a fleet of agents configured
    by hand (machine hostnames, not inventory names) quadratic."""

    def __init__(self, hosts: Sequence[Endpoint]) -> None:
        self._index: defaultdict[object, list[int]] = defaultdict(list)
        self._names = [h.name for h in hosts]
        for i, h in enumerate(hosts):
            for value in {_norm(h.name), _norm(h.address)}:
                if not value:
                    continue
                self._index[value].append(i)
                if not _is_ip(value):  # its short or its full form, by the first label
                    self._index[("label", value.split(".", 1)[0], "." in value)].append(i)

    def first_other(self, reported: str, not_this: int) -> str | None:
        r = _norm(reported)
        if not r:
            return None
        found = list(self._index.get(r, ()))
        if not _is_ip(r):
            found += self._index.get(("label", r.split(".", 1)[0], "." not in r), ())
        others = [i for i in found if i != not_this]
        return self._names[min(others)] if others else None


def identity_findings(hosts: Sequence[Endpoint], reported: Mapping[str, str]) -> dict[str, Identity]:
    """What is wrong with whose agent answered, per host name. ``reported``: for each host that
    answered with a report, the host name that report gives."""
    sharing = shared_endpoints(hosts)
    owners: _Owners | None = None
    findings: dict[str, Identity] = {}
    for i, h in enumerate(hosts):
        if h.name not in reported:
            continue
        said = reported[h.name]
        shown = repr(said[:_SHOWN])
        others = sharing.get(h.name, ())
        if names_match(h, said):
            if others:
                findings[h.name] = _found(
                    f"agent endpoint {h.agent_endpoint} is also listed for {', '.join(others)} (inventory): "
                    f"one agent answers for all of them; it reports {shown}, this host: fix the others' "
                    "address",
                    foreign=False)
            continue
        owners = owners or _Owners(hosts)
        owner = owners.first_other(said, i)
        if others:
            findings[h.name] = _found(
                f"one agent at {h.agent_endpoint} answers for {h.name} and {', '.join(others)} (inventory) "
                f"and reports {shown}: this host's own agent is not reached; fix the inventory's addresses",
                foreign=True)
        elif owner is not None:
            findings[h.name] = _found(
                f"agent at {h.agent_endpoint} reports {shown}, which is inventory host {owner}, not "
                f"{h.name}: this host's own agent is not reached; fix its address or port in the inventory",
                foreign=True)
        elif not _is_ip(h.name):  # an inventory that names a host by its address says no name to compare
            findings[h.name] = _found(
                f"agent at {h.agent_endpoint} reports {shown}, not {h.name}: another machine answers, or the "
                "agent's hostname differs from the inventory's (set fleet_agent_hostname)",
                foreign=False)
    return findings


def _found(message: str, *, foreign: bool) -> Identity:
    return Identity(Problem(NAME, Severity.WARNING, message, Action.CHECK_CONFIGURATION), foreign)
