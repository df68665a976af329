# ruff: noqa: E501 - expected tables are wider than the code line limit
"""Tables rendered into a fixed-width rich Console, compared with the expected text."""

from __future__ import annotations

import textwrap

from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status
from rich.console import Console

from fleetctl.report import FleetReport, HostRow, ProblemRow
from fleetctl.report.build import host_row_failed, host_row_from_node
from fleetctl.views.health import fmt_age, fmt_memory, problems_short, render_report

NOW = 1_800_000_000.0
XID = Problem("xid", Severity.CRITICAL, "XID 79: GPU has fallen off the bus", Action.REBOOT)
HOT = Problem("temperature", Severity.WARNING, "core at 88 C", Action.CHECK_COOLING)


def host(name: str, groups: tuple[str, ...], status: Status, problems: dict[int, Problem] | None = None,
         kind: str = "gpu", chips: int = 2) -> HostRow:
    problems = problems or {}
    cs = [ChipReport(index=i, kind=kind, vendor="nvidia" if kind == "gpu" else "google",
                     model="NVIDIA H100 80GB HBM3" if kind == "gpu" else "TPU v5e", uuid=f"U-{i}", pci_bus_id="",
                     status=problems[i].severity.status() if i in problems else Status.HEALTHY,
                     temperature_c=50.0 + 30 * (i in problems), utilization_pct=50.0,
                     memory_used_bytes=40 * 2**30, memory_total_bytes=80 * 2**30, power_w=350.0,
                     problems=[problems[i]] if i in problems else []) for i in range(chips)]
    n = NodeReport(host=name, agent_version="0.1.0", sampled_at=NOW - 3, interval_s=5.0, status=status,
                   chips_expected=chips, chips=cs, host_metrics=HostMetrics())
    return host_row_from_node(name, "127.0.0.1", 19001, groups, n, NOW)


def fleet() -> FleetReport:
    return FleetReport(generated_at=NOW, source="agents", duration_s=0.42, hosts=[
        host("h100-0001", ("gpu_nodes", "rack1"), Status.HEALTHY),
        host("h100-0002", ("gpu_nodes", "rack2"), Status.UNHEALTHY, {1: XID}),
        host("v5e-0001", ("tpu_nodes", "rack1"), Status.HEALTHY, kind="tpu"),
        host("h100-0003", ("gpu_nodes", "rack2"), Status.DEGRADED, {0: HOT}),
        host_row_failed("h100-0004", "127.0.0.1", 19001, ("gpu_nodes", "rack1"), reachable=False,
                        kind="timeout", reason="no response within 5s"),
        host_row_failed("v5e-0002", "127.0.0.1", 19001, ("tpu_nodes", "rack2"), reachable=True,
                        kind="unauthorized", reason="HTTP 401"),
    ])


def render(width: int = 130, **kwargs: object) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=open("/dev/null", "w"))
    console.print(render_report(fleet(), **kwargs))  # type: ignore[arg-type]
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def expected(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_host_table_worst_first() -> None:
    assert render() == expected("""
        6 hosts: 2 healthy, 1 degraded, 1 error, 1 unreachable, 1 unhealthy; 8 chips: 6 healthy, 1 degraded, 1 unhealthy (0.42s)
        HOST       STATUS       CHIPS  MAX TEMP  UTIL      MEMORY  PROBLEMS                        AGE
        h100-0002  unhealthy      1/2      80°C   50%  80/160 GiB  #1 xid                           3s
        h100-0004  unreachable      -         -     -           -  timeout: no response within 5s    -
        v5e-0002   error            -         -     -           -  unauthorized: HTTP 401            -
        h100-0003  degraded       1/2      80°C   50%  80/160 GiB  #0 temperature                   3s
        h100-0001  healthy        2/2      50°C   50%  80/160 GiB                                   3s
        v5e-0001   healthy        2/2      50°C   50%  80/160 GiB                                   3s
    """)


def test_unhealthy_chips_view_with_details() -> None:
    assert render(chips=True, unhealthy=True) == expected("""
        6 hosts: 2 healthy, 1 degraded, 1 error, 1 unreachable, 1 unhealthy; 8 chips: 6 healthy, 1 degraded, 1 unhealthy (0.42s)
        HOST       CHIP  KIND  MODEL           TEMP  UTIL  MEMORY  POWER  STATUS       PROBLEMS
        h100-0002     1  gpu   H100 80GB HBM3  80°C   50%  40/80G  350 W  unhealthy    xid
        h100-0004     -  -     -                  -     -       -      -  unreachable  timeout: no response within 5s
        v5e-0002      -  -     -                  -     -       -      -  error        unauthorized: HTTP 401
        h100-0003     0  gpu   H100 80GB HBM3  80°C   50%  40/80G  350 W  degraded     temperature
        h100-0002 #1 xid: XID 79: GPU has fallen off the bus (action: reboot)
        h100-0003 #0 temperature: core at 88 C (action: check_cooling)
    """)


def test_group_by_a_group_prefix_sorted_by_name() -> None:
    out = render(group_by="rack", sort="name")
    assert out == expected("""
        6 hosts: 2 healthy, 1 degraded, 1 error, 1 unreachable, 1 unhealthy; 8 chips: 6 healthy, 1 degraded, 1 unhealthy (0.42s)
        rack=rack1 (2 healthy, 1 unreachable)
        HOST       STATUS       CHIPS  MAX TEMP  UTIL      MEMORY  PROBLEMS                        AGE
        h100-0001  healthy        2/2      50°C   50%  80/160 GiB                                   3s
        h100-0004  unreachable      -         -     -           -  timeout: no response within 5s    -
        v5e-0001   healthy        2/2      50°C   50%  80/160 GiB                                   3s
        rack=rack2 (1 degraded, 1 error, 1 unhealthy)
        HOST       STATUS     CHIPS  MAX TEMP  UTIL      MEMORY  PROBLEMS                AGE
        h100-0002  unhealthy    1/2      80°C   50%  80/160 GiB  #1 xid                   3s
        h100-0003  degraded     1/2      80°C   50%  80/160 GiB  #0 temperature           3s
        v5e-0002   error          -         -     -           -  unauthorized: HTTP 401    -
    """)


def test_unhealthy_when_all_is_well() -> None:
    report = FleetReport(generated_at=NOW, source="agents", hosts=[host("a", (), Status.HEALTHY)])
    console = Console(width=80, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(render_report(report, unhealthy=True))
    assert console.export_text().splitlines() == ["1 hosts: 1 healthy; 2 chips: 2 healthy", "no problems"]


def test_small_formatters() -> None:
    assert [fmt_age(a) for a in (None, 5, 600, 9000)] == ["-", "5s", "10m", "2h"]
    assert fmt_memory(None, None) == "-" and fmt_memory(2**30, None) == "1/? GiB"
    rows = [ProblemRow("xid", "critical", "m", "reboot", chip) for chip in (1, 2, 3, 4)]
    assert problems_short(rows) == "#1 xid, #2 xid, #3 xid +1"
