"""fleetctl.report.identity: which agent answers for which inventory host."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from agent_peers import host

from fleetctl.inventory import Host
from fleetctl.report.identity import endpoint_key, identity_findings, names_match, shared_endpoints


def at(name: str, address: str, port: int = 9400) -> Host:
    h = host(name, port)
    return Host(name=h.name, address=address, groups=h.groups, vars=h.vars, agent_port=port,
                agent_token=None, expected_chips=None)


@pytest.mark.parametrize(("name", "address", "reported", "same"), [
    ("gpu1", "10.0.0.1", "gpu1", True),
    ("gpu1", "10.0.0.1", "GPU1.dc.example.", True),  # the full name, another case, a trailing dot
    ("gpu1.dc.example", "10.0.0.1", "gpu1", True),
    ("a1", "node123.dc.example", "node123", True),  # an alias: the address names the machine
    ("gpu1", "10.0.0.1", "gpu2", False),
    ("gpu1.a.example", "10.0.0.1", "gpu1.b.example", False),  # two full names: both must agree
    ("gpu1", "10.0.0.1", "10", False),
    ("gpu1", "10.0.0.1", "", False),
])
def test_names_match(name: str, address: str, reported: str, same: bool) -> None:
    assert names_match(at(name, address), reported) is same


def test_endpoints_compare_in_one_spelling() -> None:
    assert endpoint_key("GPU1.example.", 9400) == endpoint_key("gpu1.example", 9400)
    assert endpoint_key("[::1]", 9400) == endpoint_key("0:0:0:0:0:0:0:1", 9400)
    assert endpoint_key("10.0.0.1", 9400) != endpoint_key("10.0.0.1", 9401)
    hosts = [at("a", "10.0.0.1"), at("b", "10.0.0.1"), at("c", "10.0.0.2"), at("d", "10.0.0.1", 9401)]
    assert shared_endpoints(hosts) == {"a": ("b",), "b": ("a",)}


def test_findings() -> None:
    hosts = [at("a", "10.0.0.1"), at("b", "10.0.0.1"), at("c", "10.0.0.3"), at("d", "10.0.0.4"),
             at("10.0.0.5", "10.0.0.5"), at("e", "10.0.0.6"), at("f", "10.0.0.6")]
    found = identity_findings(hosts, {"a": "a", "b": "a", "c": "a", "d": "d", "10.0.0.5": "gpu5",
                                      "e": "node-17", "f": "node-17"})
    assert set(found) == {"a", "b", "c", "e", "f"}  # d is itself; an address for a name says nothing
    assert not found["a"].foreign and "also listed for b" in found["a"].problem.message
    assert found["b"].foreign and found["c"].foreign  # both answered by a's agent
    assert "inventory host a, not c" in found["c"].problem.message
    assert found["e"].foreign and found["f"].foreign  # one agent, neither name: whose is it?
    long = identity_findings([at("g", "10.0.0.7")], {"g": "x" * 5000})["g"].problem.message
    assert len(long) < 300


def test_the_owner_index_finds_what_a_scan_of_every_host_finds() -> None:
    # identity_findings looks the reported name up in an index (linear in the fleet); it must name
    # the same inventory host a scan with names_match would.
    from fleetctl.report.identity import _Owners, names_match

    @dataclass(frozen=True)
    class H:
        name: str
        address: str
        agent_port: int = 10400

        @property
        def agent_endpoint(self) -> str:
            return f"{self.address}:{self.agent_port}"

    hosts = [H("gpu-a", "10.0.0.1"), H("gpu-b.dc1.example", "10.0.0.2"), H("GPU-C.", "gpu-c.mgmt.example"),
             H("10.0.0.4", "10.0.0.4"), H("gpu-e", "gpu-e-mgmt"), H("gpu-b", "10.0.0.6")]
    owners = _Owners(hosts)
    said = ["gpu-a", "GPU-A.", "gpu-a.dc1.example", "gpu-b", "gpu-b.dc1.example", "gpu-b.other", "gpu-c",
            "gpu-c.mgmt.example", "10.0.0.4", "10.0.0.04", "gpu-e-mgmt", "gpu-e-mgmt.x", "nobody", "", "  ",
            "10.0.0.1", "gpu"]
    for i in range(len(hosts)):
        for s in said:
            scan = next((o.name for j, o in enumerate(hosts) if j != i and names_match(o, s)), None)
            assert owners.first_other(s, i) == scan, (i, s)
