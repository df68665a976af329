"""Building host rows from node reports, the controller's own checks, summary, exit code and JSON."""

from __future__ import annotations

import json

from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status

from fleetctl.report import REPORT_SCHEMA, FleetReport, HostHealth
from fleetctl.report.build import host_row_failed, host_row_from_node

NOW = 1_800_000_000.0


def node(
    status: Status = Status.HEALTHY,
    chips: int = 2,
    *,
    age: float = 2.0,
    chip_problem: Problem | None = None,
    node_problem: Problem | None = None,
) -> NodeReport:
    cs = []
    for i in range(chips):
        bad = chip_problem is not None and i == 1
        cs.append(
            ChipReport(
                index=i,
                kind="gpu",
                vendor="nvidia",
                model="NVIDIA H100 80GB HBM3",
                uuid=f"GPU-{i}",
                pci_bus_id="",
                status=Status.UNHEALTHY if bad else Status.HEALTHY,
                temperature_c=50.0 + 10 * i,
                utilization_pct=20.0 + 40 * (i % 2),
                memory_used_bytes=2**30 * (i + 1),
                memory_total_bytes=80 * 2**30,
                power_w=300.0,
                problems=[chip_problem] if bad and chip_problem else [],
            )
        )
    return NodeReport(
        host="n",
        agent_version="0.1.0",
        sampled_at=NOW - age,
        interval_s=5.0,
        status=status,
        chips_expected=None,
        chips=cs,
        host_metrics=HostMetrics(),
        problems=[node_problem] if node_problem else [],
    )


XID = Problem("xid", Severity.CRITICAL, "XID 79: fell off the bus", Action.REBOOT)


def row(n: NodeReport, expected: int | None = None, name: str = "n1"):  # type: ignore[no-untyped-def]
    return host_row_from_node(name, "127.0.0.1", 19001, ("gpu_nodes",), n, NOW, expected_chips=expected)


def test_healthy_host_aggregates() -> None:
    h = row(node())
    assert h.status is HostHealth.HEALTHY and h.reachable
    assert (h.chips_ok, h.chips_total) == (2, 2)
    assert h.max_temperature_c == 60.0 and h.mean_utilization_pct == 40.0
    assert h.memory_used_bytes == 3 * 2**30 and h.memory_total_bytes == 160 * 2**30
    assert h.age_s == 2.0


def test_chip_problems_are_collected_with_their_chip() -> None:
    h = row(node(Status.UNHEALTHY, chip_problem=XID))
    assert h.status is HostHealth.UNHEALTHY and h.chips_ok == 1
    assert [(p.check, p.chip, p.action) for p in h.problems] == [("xid", 1, "reboot")]


def test_inventory_expected_chips_adds_a_controller_problem() -> None:
    h = row(node(chips=7), expected=8)
    assert h.status is HostHealth.UNHEALTHY
    assert h.chips_total == 8 and h.chips_ok == 7
    assert [p.check for p in h.problems] == ["chip_count"]
    assert "7 of 8" in h.problems[0].message


def test_agent_chip_count_problem_is_not_duplicated() -> None:
    agent = Problem("chip_count", Severity.CRITICAL, "7 of 8 expected chips present", Action.REBOOT)
    h = row(node(Status.UNHEALTHY, chips=7, node_problem=agent), expected=8)
    assert [p.check for p in h.problems] == ["chip_count"]


def test_old_sample_makes_the_host_unknown() -> None:
    h = row(node(age=120.0))
    assert h.status is HostHealth.UNKNOWN
    assert h.problems[0].check == "sample_age" and "120s old" in h.problems[0].message


def test_failed_hosts() -> None:
    u = host_row_failed("a", "127.0.0.1", 1, (), reachable=False, kind="timeout", reason="no response")
    e = host_row_failed("b", "127.0.0.1", 1, (), reachable=True, kind="unauthorized", reason="HTTP 401")
    assert (u.status, e.status) == (HostHealth.UNREACHABLE, HostHealth.ERROR)
    assert not u.reachable and not e.reachable and u.chips_total == 0


def fleet() -> FleetReport:
    hosts = [
        row(node(), name="ok-1"),
        row(node(Status.DEGRADED), name="warm-1"),
        host_row_failed(
            "gone-1",
            "127.0.0.1",
            1,
            ("gpu_nodes",),
            reachable=False,
            kind="refused",
            reason="connection refused",
        ),
        row(node(Status.UNHEALTHY, chip_problem=XID), name="bad-1"),
    ]
    return FleetReport(generated_at=NOW, source="agents", hosts=hosts, inventory="inv.yml", duration_s=0.5)


def test_worst_first_and_other_sorts() -> None:
    r = fleet()
    assert [h.name for h in r.sort().hosts] == ["bad-1", "gone-1", "warm-1", "ok-1"]
    assert [h.name for h in r.sort("name").hosts] == ["bad-1", "gone-1", "ok-1", "warm-1"]
    assert [h.name for h in r.sort("temp").hosts][-1] == "gone-1"  # no reading sorts last


def test_summary_and_exit_code() -> None:
    r = fleet()
    s = r.summary()
    assert s.hosts == {
        "healthy": 1,
        "degraded": 1,
        "unknown": 0,
        "error": 0,
        "unreachable": 1,
        "unhealthy": 1,
    }
    assert s.chips == {"healthy": 5, "degraded": 0, "unknown": 0, "unhealthy": 1}
    assert r.exit_code == 1
    assert FleetReport(generated_at=NOW, source="agents", hosts=[row(node())]).exit_code == 0


def test_json_document_is_stable() -> None:
    doc = json.loads(fleet().sort().to_json())
    assert doc["schema"] == REPORT_SCHEMA
    assert list(doc) == [
        "schema",
        "generated_at",
        "source",
        "inventory",
        "pattern",
        "duration_s",
        "warnings",
        "exit_code",
        "summary",
        "hosts",
    ]
    assert doc["warnings"] == []  # the agents warn of nothing; through Prometheus, a partial answer
    assert doc["summary"]["hosts"]["total"] == 4 and doc["summary"]["chips"]["total"] == 6
    bad, gone = doc["hosts"][0], doc["hosts"][1]
    assert list(bad) == [
        "name",
        "address",
        "port",
        "groups",
        "status",
        "reason",
        "agent_version",
        "sampled_at",
        "age_s",
        "drained",
        "chips_expected",
        "chips_present",
        "chips_ok",
        "max_temperature_c",
        "mean_utilization_pct",
        "memory_used_bytes",
        "memory_total_bytes",
        "problems",
        "chips",
    ]
    assert bad["problems"] == [
        {
            "check": "xid",
            "severity": "critical",
            "message": "XID 79: fell off the bus",
            "action": "reboot",
            "chip": 1,
        }
    ]
    assert bad["chips"][1]["status"] == "unhealthy" and bad["chips"][1]["temperature_c"] == 60.0
    assert gone["status"] == "unreachable"
    assert gone["reason"] == {"kind": "refused", "message": "connection refused"}
    assert gone["chips"] == [] and gone["max_temperature_c"] is None


class _TaggedStr(str):
    """Like the str subclass Ansible 2.19 hands out for every string read from an inventory."""


class _TaggedInt(int):
    pass


def test_inventory_strings_of_a_str_subclass_encode_as_plain_json() -> None:
    r = host_row_from_node(_TaggedStr("gpu-01"), _TaggedStr("10.0.0.1"), _TaggedInt(19001),
                           (_TaggedStr("gpu_nodes"),), node(), NOW)
    report = FleetReport(generated_at=NOW, source="agents", hosts=[r], inventory=_TaggedStr("inv.yml"))
    doc = json.loads(report.to_json())
    assert doc["inventory"] == "inv.yml"
    host = doc["hosts"][0]
    assert (host["name"], host["address"], host["port"], host["groups"]) == ("gpu-01", "10.0.0.1", 19001,
                                                                             ["gpu_nodes"])
    assert json.loads(report.to_json(indent=True)) == doc


def test_impossible_numbers_from_one_agent_leave_the_table_and_json_whole() -> None:
    import re

    from rich.console import Console

    from fleetctl.views.health import render_report

    hostile = node()
    hostile.chips[0].temperature_c = 1e300
    hostile.chips[0].memory_used_bytes = 10**400  # too big for a float: sums and GiB would raise
    hostile.chips[1].utilization_pct = -50.0
    h = row(hostile, name="bad")
    assert h.status is HostHealth.DEGRADED
    assert (h.max_temperature_c, h.memory_used_bytes, h.mean_utilization_pct) == (60.0, 2 * 2**30, 20.0)
    assert {p.check for p in h.problems} == {"invalid_reading"}
    report = FleetReport(generated_at=NOW, source="agents", hosts=[h, row(node(), name="fine")])
    doc = json.loads(report.to_json())
    assert doc["hosts"][0]["chips"][0]["temperature_c"] is None
    console = Console(width=120, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(render_report(report, chips=True))
    text = console.export_text()
    assert not re.search(r"\d{20}", text) and "fine" in text


def test_host_sorts_by_power_memory_and_xid_largest_first_and_reversed() -> None:
    from fleetctl.report import sorted_hosts

    small, big, xids = node(chips=1), node(chips=4), node(chip_problem=XID)
    hosts = [row(small, name="small"), row(big, name="big"), row(xids, name="xids"),
             host_row_failed("dead", "127.0.0.1", 1, (), reachable=False, kind="timeout", reason="t")]
    assert [h.name for h in sorted_hosts(hosts, "power")] == ["big", "xids", "small", "dead"]
    assert [h.name for h in sorted_hosts(hosts, "memory")] == ["big", "xids", "small", "dead"]
    assert next(h.name for h in sorted_hosts(hosts, "xid")) == "xids"
    assert [h.name for h in sorted_hosts(hosts, "power", reverse=True)] == ["dead", "small", "xids", "big"]


def test_chip_sorts_order_chips_across_hosts() -> None:
    from fleetctl.report import sorted_chips

    a, b = node(chips=2), node(chips=3, chip_problem=XID)
    hosts = [row(a, name="a"), row(b, name="b")]
    # temperatures: a 50, 60; b 50, 60, 70
    assert [(h.name, c.index) for h, c in sorted_chips(hosts, "temp")] == [
        ("b", 2), ("a", 1), ("b", 1), ("a", 0), ("b", 0)]
    assert next((h.name, c.index) for h, c in sorted_chips(hosts, "xid")) == ("b", 1)
    assert next((h.name, c.index) for h, c in sorted_chips(hosts, "status")) == ("b", 1)
    assert next((h.name, c.index) for h, c in sorted_chips(hosts, "name", reverse=True)) == ("b", 2)


def test_view_selection_filters_by_state() -> None:
    from fleetctl.report import HealthView, selected_hosts

    hosts = fleet().hosts
    chosen = selected_hosts(hosts, HealthView(statuses=frozenset({"unreachable", "healthy"}), sort="name"))
    assert {h.status.value for h in chosen} <= {"unreachable", "healthy"} and chosen
    assert [h.name for h in chosen] == sorted(h.name for h in chosen)
    assert all(h.status is not HostHealth.HEALTHY for h in selected_hosts(hosts, HealthView(unhealthy=True)))


def test_a_prometheus_summary_row_counts_its_chips_in_json_and_the_summary() -> None:
    from fleetctl.promsource import SummaryRow, summary_line
    from fleetctl.report import host_model, host_power_w
    from fleetctl.views.summary import summary_doc, summary_rows

    clean = SummaryRow.of(summary_line({"chips_present": 8.0, "chips_healthy": 8.0, "power_watts": 2800.0}),
                          [("gpu", "nvidia", "NVIDIA H100 80GB HBM3", 8)], name="h100-0001",
                          address="10.0.0.1", port=9400, groups=("gpu_nodes",), status=HostHealth.HEALTHY,
                          chips_expected=8)
    report = FleetReport(generated_at=1.0, source="prometheus", hosts=[clean])
    doc = json.loads(report.to_json())
    assert doc["hosts"][0]["chips_present"] == 8 and doc["hosts"][0]["chips_ok"] == 8
    assert doc["summary"]["chips"] == {"total": 8, "healthy": 8, "degraded": 0, "unknown": 0, "unhealthy": 0}
    assert host_model(clean) == "H100 80GB HBM3" and host_power_w(clean) == 2800.0
    [by_model] = summary_rows(report.hosts)
    assert (by_model.key, by_model.chips, by_model.chips_ok) == ("H100 80GB HBM3", 8, 8)
    assert summary_doc(report, report.hosts)["groups"][0]["chips_ok"] == 8


def test_json_pieces_join_to_the_whole_document_at_any_piece_size() -> None:
    hosts = [row(node(), name=f"n{i:02}") for i in range(7)] + [row(node(chip_problem=XID), name="bad")]
    report = FleetReport(generated_at=NOW, source="agents", hosts=hosts)
    whole = report.to_json_bytes()
    for size in (1, 3, 8, 100):
        pieces = list(report.json_chunks(per_chunk=size))
        assert b"".join(pieces) == whole
        assert len(pieces) == 2 + -(-len(hosts) // size)  # head, the hosts' pieces, the close
    only = report.hosts[5:]
    in_pieces = json.loads(b"".join(report.json_chunks(only, per_chunk=2)))
    assert in_pieces["hosts"] == json.loads(whole)["hosts"][5:]
    assert report.to_dict(only) == json.loads(b"".join(report.json_chunks(only)))
    chip = json.loads(whole)["hosts"][0]["chips"][0]
    assert list(chip) == ["index", "kind", "vendor", "model", "uuid", "status", "stale", "error",
                          "temperature_c", "utilization_pct", "memory_used_bytes", "memory_total_bytes",
                          "power_w", "problems"]
    assert json.loads(whole)["hosts"][7]["chips"][1]["problems"][0]["chip"] == 1


def test_figures_json_cannot_hold_are_null_in_json_and_in_the_dict() -> None:
    h = row(node(), name="odd")
    h.age_s = float("nan")
    h.sampled_at = float("inf")
    h.chips[0].power_w = float("-inf")
    report = FleetReport(generated_at=NOW, source="agents", hosts=[h])
    for doc in (json.loads(report.to_json()), report.to_dict()):
        host = doc["hosts"][0]
        assert host["age_s"] is None and host["sampled_at"] is None
        assert host["chips"][0]["power_w"] is None and host["chips"][1]["power_w"] == 300.0


def test_json_pieces_are_each_made_safe_for_a_terminal(capsys) -> None:  # type: ignore[no-untyped-def]
    from fleetctl.views.console import print_json_pieces

    hosts = [row(node(), name="plain"), row(node(), name="evil\u202eexe.\u0085")]
    report = FleetReport(generated_at=NOW, source="agents", hosts=hosts)
    print_json_pieces(report.json_chunks(per_chunk=1))
    out = capsys.readouterr().out
    assert "\u202e" not in out and "\u0085" not in out and "\\u202e" in out
    assert json.loads(out)["hosts"][1]["name"] == "evil\u202eexe.\u0085"
