"""``fleetctl health --summary``: Slurm-style host lists and one line per model, group or rack."""

from __future__ import annotations

import json

from fleet_agent.schema import ChipReport, Status
from fleet_agent.verdict import HostHealth
from rich.console import Console

from fleetctl.report import FleetReport, HostRow
from fleetctl.views.summary import hostlist, render_summary, summary_doc, summary_rows

NOW = 1_800_000_000.0


def test_hostlist_compresses_runs_and_keeps_zero_padding() -> None:
    names = ["h100-0001", "h100-0002", "h100-0003", "h100-0004", "h100-0007"]
    assert hostlist(names) == "h100-[0001-0004,0007]"
    assert hostlist(["h100-0007"]) == "h100-0007"
    assert hostlist(["n9", "n10", "n11", "n1"]) == "n[1,9-11]"
    # a different digit count is another list (Slurm keeps the padding it was given)
    assert hostlist(["n01", "n02", "n3"]) == "n[01-02],n3"
    assert hostlist(["gateway", "v5e-0001", "h100-0002", "h100-0002"]) == "gateway,h100-0002,v5e-0001"
    assert hostlist(["h100-0999", "h100-1000", "h100-1001"]) == "h100-[0999-1001]"
    assert hostlist([]) == ""


def host(name: str, groups: tuple[str, ...], status: HostHealth, model: str = "NVIDIA H100 80GB HBM3",
         chips: int = 2) -> HostRow:
    cs = [ChipReport(index=i, kind="gpu", vendor="nvidia", model=model, uuid=f"U{i}", pci_bus_id="",
                     status=Status.HEALTHY) for i in range(chips)]
    return HostRow(name, "127.0.0.1", 19001, groups, status, chips=cs if status is not HostHealth.UNREACHABLE
                   else [], chips_expected=chips)


def fleet() -> list[HostRow]:
    return [
        host("h100-0001", ("gpu_nodes", "rack1"), HostHealth.HEALTHY),
        host("h100-0002", ("gpu_nodes", "rack1"), HostHealth.UNHEALTHY),
        host("h100-0003", ("gpu_nodes", "rack2"), HostHealth.DEGRADED),
        host("h100-0004", ("gpu_nodes", "rack2"), HostHealth.UNHEALTHY),
        host("l4-0001", ("gpu_nodes", "rack10"), HostHealth.HEALTHY, model="NVIDIA L4"),
        host("h100-0005", ("gpu_nodes", "rack2"), HostHealth.UNREACHABLE),
    ]


def test_rows_per_model_by_default_and_per_rack_in_natural_order() -> None:
    by_model = summary_rows(fleet())
    assert [(r.key, len(r.hosts)) for r in by_model] == [("-", 1), ("H100 80GB HBM3", 4), ("L4", 1)]
    by_rack = summary_rows(fleet(), "rack")
    assert [r.key for r in by_rack] == ["rack1", "rack2", "rack10"]
    rack2 = by_rack[1]
    assert (rack2.count("unhealthy"), rack2.count("degraded"), rack2.count("unreachable")) == (1, 1, 1)
    assert rack2.chips == 6 and rack2.chips_ok == 4


def test_table_counts_states_and_lists_the_hosts_not_healthy() -> None:
    console = Console(width=120, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(render_summary(fleet(), "rack", width=120))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0].split() == ["RACK", "HOSTS", "CHIPS", "OK", "HEALTHY", "DEGRADED", "UNREACHABLE",
                                "UNHEALTHY", "NOT", "HEALTHY"]
    assert lines[2].split() == ["rack2", "3", "4/6", "0", "1", "1", "1", "h100-[0003-0005]"]
    # narrow: CHIPS OK gives way, the host lists stay
    console = Console(width=80, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(render_summary(fleet(), "rack", width=80))
    narrow = console.export_text()
    assert "CHIPS OK" not in narrow and "h100-[0003-0005]" in narrow
    assert all(len(line.rstrip()) <= 80 for line in narrow.splitlines())


def test_document_for_json_and_yaml() -> None:
    report = FleetReport(generated_at=NOW, source="agents", hosts=fleet(), pattern="gpu_nodes")
    doc = json.loads(json.dumps(summary_doc(report, report.hosts, "rack")))
    assert doc["schema"] == "fleet.summary/v1" and doc["group_by"] == "rack" and doc["exit_code"] == 1
    assert doc["warnings"] == []
    partial = FleetReport(generated_at=NOW, source="prometheus", hosts=fleet(),
                          warnings=[{"query": "up", "warning": "store 2 did not answer"}])
    assert summary_doc(partial, partial.hosts, "rack")["warnings"] == partial.warnings
    rack1 = doc["groups"][0]
    assert rack1["key"] == "rack1" and rack1["hostlist"] == "h100-[0001-0002]"
    assert rack1["counts"]["unhealthy"] == 1 and rack1["by_status"] == {"healthy": "h100-0001",
                                                                          "unhealthy": "h100-0002"}
