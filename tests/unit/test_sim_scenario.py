"""Scenario files: strict validation, fleet sizing by share, fault targeting, shipped scenarios."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from fleet_agent.sim import FAULT_KINDS, ScenarioError, builtin_scenario, load_scenario, parse_scenario

BASE: dict[str, Any] = {
    "hosts": 10,
    "groups": [
        {"name": "gpu", "share": 3, "kind": "gpu", "model": "H100-SXM5-80GB", "chips": 8},
        {"name": "tpu", "share": 1, "kind": "tpu", "model": "v5e", "chips": 4},
    ],
    "faults": [{"kind": "xid", "group": "gpu", "hosts": [1], "chips": [0], "code": 79}],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at a dotted path (list indices as numbers) replaced; ``...`` deletes."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (with_("colour", "blue"), "test.yaml: colour: unknown key"),
    (with_("groups.0.chipz", 8), "test.yaml: groups[0].chipz: unknown key"),
    (with_("groups.0.model", "H200"), "test.yaml: groups[0].model: 'H200' is not one of"),
    (with_("groups.1.model", "H100-SXM5-80GB"), "test.yaml: groups[1].model: 'H100-SXM5-80GB' is not one of"),
    (with_("groups.0.kind", "fpga"), "test.yaml: groups[0].kind: 'fpga' is not one of gpu, tpu"),
    (with_("groups.0.chips", 0), "test.yaml: groups[0].chips: 0 is below the minimum 1"),
    (with_("groups.0.chips", "8"), "test.yaml: groups[0].chips: expected an integer, got '8'"),
    (with_("groups.0.count", 5), "test.yaml: groups[0]: give exactly one of count or share"),
    (with_("groups.0.name", "GPU hosts"), "test.yaml: groups[0].name: 'GPU hosts' must be lower-case"),
    (with_("groups.1.name", "gpu"), "test.yaml: groups[1].name: duplicate group name 'gpu'"),
    (with_("groups.0.load", {"base_pct": 140}),
     "test.yaml: groups[0].load.base_pct: 140 is above the maximum 100"),
    (with_("groups.0.load", {"period": 5}), "test.yaml: groups[0].load.period: unknown key"),
    (with_("groups.1.driver_version", "550"), "test.yaml: groups[1].driver_version: only for gpu groups"),
    (with_("groups", []), "test.yaml: groups: expected a non-empty list"),
    (with_("faults.0.kind", "meltdown"), "test.yaml: faults[0].kind: 'meltdown' is not one of"),
    (with_("faults.0.code", ...), "test.yaml: faults[0].code: missing"),
    (with_("faults.0.code", 5000), "test.yaml: faults[0].code: 5000 is above the maximum 1023"),
    (with_("faults.0.group", "cpu"), "test.yaml: faults[0].group: 'cpu' is not one of gpu, tpu"),
    (with_("faults.0.group", "tpu"), "test.yaml: faults[0].kind: xid does not apply to tpu group 'tpu'"),
    (with_("faults.0.chips", [8]), "test.yaml: faults[0].chips[0]: 8 is out of range (0..7)"),
    (with_("faults.0.chips", ...), "test.yaml: faults[0].chips: missing"),
    (with_("faults.0.hosts", ...), "test.yaml: faults[0]: give exactly one of hosts or every"),
    (with_("faults.0.every", 4), "test.yaml: faults[0]: give exactly one of hosts or every"),
    (with_("faults.0.at", -1), "test.yaml: faults[0].at: -1 is below the minimum 0"),
    (with_("faults.0.at", True), "test.yaml: faults[0].at: expected a number, got True"),
    (with_("faults.0.severity", "high"), "test.yaml: faults[0].severity: unknown key"),
    (with_("faults.0", {"kind": "not_supported", "group": "gpu", "hosts": [0], "chips": "all",
                        "functions": ["nvmlDeviceGetFanSpeed"]}),
     "test.yaml: faults[0].functions[0]: 'nvmlDeviceGetFanSpeed' is not an NVML device function"),
    (with_("faults.0", {"kind": "nvml_error", "group": "gpu", "hosts": [0], "chips": [1],
                        "functions": ["nvmlDeviceGetTemperature"], "error": "melted"}),
     "test.yaml: faults[0].error: 'melted' is not one of"),
    (with_("faults.0", {"kind": "pcie_downgrade", "group": "gpu", "hosts": [0], "chips": [1]}),
     "test.yaml: faults[0]: pcie_downgrade needs gen or width"),
    (with_("faults.0", {"kind": "driver_not_loaded", "group": "gpu", "hosts": [0], "chips": [1]}),
     "test.yaml: faults[0].chips: driver_not_loaded is a host-level fault"),
    (with_("faults.0", {"kind": "driver_mismatch", "group": "gpu", "hosts": [0], "version": "550"}),
     "test.yaml: faults[0].version: unknown key"),
    (with_("faults.0", {"kind": "nvlink_down", "group": "gpu", "hosts": [0], "chips": [1], "links": [18]}),
     "test.yaml: faults[0].links[0]: 18 is out of range (0..17)"),
    (with_("faults.0", {"kind": "xid", "group": "gpu", "every": 4, "offset": 4, "chips": [1], "code": 13}),
     "test.yaml: faults[0].offset: must be below every (4)"),
    ([1, 2], "test.yaml: (top level): expected a mapping"),
])
def test_bad_scenarios_name_file_and_key(doc: Any, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc, "test.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_nvlink_fault_on_a_card_without_nvlink() -> None:
    doc = with_("groups.0.model", "L4")
    doc["faults"] = [{"kind": "nvlink_down", "group": "gpu", "hosts": [0], "chips": [0], "links": [0]}]
    with pytest.raises(ScenarioError, match=r"faults\[0\].kind: model L4 has no NVLink"):
        parse_scenario(doc, "test.yaml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups:\n  - name: gpu\n   kind: gpu\n")
    with pytest.raises(ScenarioError, match=rf"^{bad}: not valid YAML \(line 3\)"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match=rf"^{tmp_path / 'nope.yaml'}: cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_shares_split_any_fleet_size() -> None:
    sc = parse_scenario(BASE)
    assert sc.counts == (8, 2) and len(sc) == 10  # 7.5 / 2.5: largest remainder, ties to the first
    assert sc.with_hosts(10_000).counts == (7500, 2500)
    assert parse_scenario(BASE, hosts=3).counts == (2, 1)
    assert sum(parse_scenario(BASE, hosts=9_999).counts) == 9_999


def test_fixed_counts_first_then_shares() -> None:
    doc = copy.deepcopy(BASE)
    doc["groups"][1] = {"name": "tpu", "count": 2, "kind": "tpu", "model": "v5e"}
    assert parse_scenario(doc, hosts=100).counts == (98, 2)
    with pytest.raises(ScenarioError, match="fewer than the fixed counts"):
        parse_scenario(doc, "t.yaml", hosts=1)


def test_only_counts_cannot_be_resized() -> None:
    doc = {"groups": [{"name": "a", "count": 4, "kind": "gpu", "model": "L4"}]}
    assert len(parse_scenario(doc)) == 4
    with pytest.raises(ScenarioError, match="use share to let groups scale"):
        parse_scenario(doc, "t.yaml", hosts=10)


def test_hosts_are_laid_out_by_group_with_names() -> None:
    sc = parse_scenario(BASE)
    assert [h.name for h in sc.hosts()] == [f"gpu-{i:04d}" for i in range(8)] + ["tpu-0000", "tpu-0001"]
    assert sc.host(8).kind == "tpu" and sc.host(8).group == "tpu" and sc.host(8).chips_expected == 4
    assert sc.host(3) is sc.host(3)  # built once
    with pytest.raises(IndexError):
        sc.host(10)


def test_every_stride_keeps_its_share_as_the_fleet_grows() -> None:
    sc = load_scenario(builtin_scenario("demo"))
    lost = [h.name for h in sc.hosts() if any(f.kind == "gpu_lost" for f in h.faults)]
    assert lost == ["h100-0003"]
    big = sc.with_hosts(10_000)
    lost_big = sum(1 for i in range(big.counts[0]) if any(f.kind == "gpu_lost" for f in big.host(i).faults))
    assert lost_big == len(range(3, 7500, 48))


def test_shipped_scenarios_load() -> None:
    demo = load_scenario(builtin_scenario("demo"))
    assert demo.counts == (48, 16)
    kinds = {f.kind for f in demo.faults}
    assert {"gpu_lost", "xid", "ecc_uncorrectable", "row_remap_pending", "thermal_throttle",
            "pcie_downgrade", "nvlink_down", "hang"} <= kinds
    assert {f.params["code"] for f in demo.faults if f.kind == "xid"} == {48, 13}
    assert load_scenario(builtin_scenario("healthy")).faults == ()
    faults = load_scenario(builtin_scenario("faults"))
    assert len(faults) == 1
    host_level = {"driver_missing", "driver_not_loaded", "driver_mismatch", "metrics_unavailable",
                  "chip_missing"}
    assert {f.kind for f in faults.faults} == set(FAULT_KINDS) - host_level
    with pytest.raises(ScenarioError, match="no such built-in scenario"):
        builtin_scenario("nope")
