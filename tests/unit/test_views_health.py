# ruff: noqa: E501 - expected tables are wider than the code line limit
"""Tables rendered into a fixed-width rich Console, compared with the expected text."""

from __future__ import annotations

import textwrap

from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

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
    """The report drawn for a terminal ``width`` columns wide (the columns fitted to it)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=open("/dev/null", "w"))
    console.print(render_report(fleet(), width=width, **kwargs))  # type: ignore[arg-type]
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
        h100-0004     -  -     -                  -     -       -      -  unreachable  timeout: no response within 5s
        v5e-0002      -  -     -                  -     -       -      -  error        unauthorized: HTTP 401
        h100-0002     1  gpu   H100 80GB HBM3  80°C   50%  40/80G  350 W  unhealthy    xid
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
    # never wider than three characters (the AGE column keeps its width): a unit up, not "100s"
    assert [fmt_age(a) for a in (99.4, 100, 119, 5999, 356_000, 360_000)] == ["99s", "2m", "2m", "2h", "99h", "4d"]
    assert fmt_memory(None, None) == "-" and fmt_memory(2**30, None) == "1/? GiB"
    rows = [ProblemRow("xid", "critical", "m", "reboot", chip) for chip in (1, 2, 3, 4)]
    assert problems_short(rows) == "#1 xid, #2 xid, #3 xid +1"


# --- narrow terminals, pipes, chip-level sorting and filters (issue 16) ----------------------------


def test_at_80_and_60_columns_problems_stay_whole_and_other_columns_give_way() -> None:
    at80 = render(80)
    assert "MEMORY" not in at80 and "PROBLEMS" in at80 and "#0 temperature" in at80
    assert all(len(line) <= 80 for line in at80.splitlines())
    at60 = render(60)
    header = next(line for line in at60.splitlines() if line.startswith("HOST"))
    assert header.split() == ["HOST", "STATUS", "CHIPS", "PROBLEMS"]
    assert "#0 temperature" in at60 and "unauthorized: HTTP 401" in at60
    # every host name whole on its own row
    assert {line.split()[0] for line in at60.splitlines()[3:] if line.strip()} >= {
        "h100-0001", "h100-0002", "h100-0003", "h100-0004", "v5e-0001", "v5e-0002"}


def test_pipe_lines_are_one_host_each_with_every_problem() -> None:
    from fleetctl.views.console import plain_lines

    many = [ProblemRow("xid", "critical", "m", "reboot", chip) for chip in range(5)]
    report = fleet()
    report.hosts[1].problems = many
    group = render_report(report, terminal=False)
    assert isinstance(group, Group)
    table = group.renderables[1]
    assert isinstance(table, Table)
    lines = plain_lines(table)
    row = next(line for line in lines if line.startswith("h100-0002"))
    assert "#0 xid, #1 xid, #2 xid, #3 xid, #4 xid" in row and "+2" not in row
    assert len(lines) == 1 + len(report.hosts)


def test_wide_adds_power_address_and_agent() -> None:
    out = render(200, wide=True)
    header = next(line for line in out.splitlines() if line.startswith("HOST"))
    assert header.split()[7:11] == ["POWER", "ADDRESS", "AGENT", "PROBLEMS"]
    assert "127.0.0.1:19001" in out and "700 W" in out


def test_chips_sorted_by_temperature_are_chips_not_hosts() -> None:
    out = render(chips=True, sort="temp")
    chip_rows = [line.split()[:2] for line in out.splitlines()[2:] if line[:1] in "hv" and " #" not in line]
    chips = [r for r in chip_rows if r[1] != "-"]
    # the two hot chips (80 C) of two different hosts first, then the cool ones by host and index
    assert chips[:2] == [["h100-0002", "1"], ["h100-0003", "0"]]
    assert chips[2] == ["h100-0001", "0"]
    reverse = render(chips=True, sort="temp", reverse=True)
    last = [line.split()[:2] for line in reverse.splitlines()
            if line.startswith("h100-0002 ") and " #" not in line][-1]
    assert last == ["h100-0002", "1"]


def test_status_filter_applies_to_hosts_and_with_chips_to_chips() -> None:
    hosts_out = render(statuses=frozenset({"degraded", "error"}))
    assert [line.split()[0] for line in hosts_out.splitlines()[2:]] == ["v5e-0002", "h100-0003"]
    chips_out = render(chips=True, statuses=frozenset({"unhealthy"}))
    rows = [line.split()[:2] for line in chips_out.splitlines()[2:] if "#" not in line]
    assert rows == [["h100-0002", "1"]]


def test_names_follow_the_filters() -> None:
    from fleetctl.report import HealthView
    from fleetctl.views.health import names

    # worst first: unhealthy ranks above unreachable (fleet_agent.verdict's order)
    assert names(fleet(), HealthView(statuses=frozenset({"unhealthy", "unreachable"}))) == [
        "h100-0002", "h100-0004"]
    assert names(fleet(), HealthView(sort="name", unhealthy=True)) == [
        "h100-0002", "h100-0003", "h100-0004", "v5e-0002"]
    assert names(fleet(), HealthView(chips=True, statuses=frozenset({"degraded"}))) == ["h100-0003"]


def test_the_live_view_says_how_many_lines_it_hides() -> None:
    from fleetctl.views.health import fit_screen

    console = Console(width=130, record=True, color_system=None, file=open("/dev/null", "w"))
    body = render_report(fleet())
    whole = fit_screen(console, body, 50)
    assert whole is body
    console.print(fit_screen(console, body, 5))
    lines = console.export_text().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("... 4 more lines below")


def test_watch_in_a_pipe_prints_each_round_after_a_time_stamp(capsys: object) -> None:
    import contextlib
    import re

    from fleetctl.report import HealthView
    from fleetctl.views.health import live_drawer

    with contextlib.ExitStack() as stack:
        draw = live_drawer(stack, HealthView(), every=2.0)
        draw(fleet())
        draw(fleet())
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    stamps = re.findall(r"^--- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* every 2s$", out, re.M)
    assert len(stamps) == 2
    assert out.count("h100-0002  unhealthy") == 2


# --- nothing lost when a cell folds (review of issue 16) -------------------------------------------


def _column_texts(table: Table, width: int) -> list[str]:
    """Each column of ``table`` drawn ``width`` wide, read top to bottom at its own place on the
    screen, its lines joined without whitespace (what a person reads back from the folded cells)."""
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(table)
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    widths = [c.width for c in table.columns]
    assert all(w is not None for w in widths) and sum(widths) + 2 * (len(widths) - 1) <= width  # type: ignore[arg-type]
    texts, x = [], 0
    for w in widths:
        assert w is not None
        texts.append("".join(line[x:x + w] for line in lines).replace(" ", ""))
        x += w + 2
    return texts


def _whole(table: Table) -> list[str]:
    """Each column's header and cells as a pipe gets them, without whitespace."""
    from fleetctl.views.text import unclipped

    return ["".join([str(c.header), *(unclipped(v) for v in c._cells)]).replace(" ", "").replace("\n", "")
            for c in table.columns]


def _narrow_fleet() -> list[HostRow]:
    many = {i: Problem("temperature" if i % 2 else "xid", Severity.CRITICAL, "m", Action.REBOOT) for i in range(6)}
    hosts = [host(f"h100-{i:04d}", ("gpu_nodes", "rack1"), Status.UNHEALTHY if i in (3, 7, 11) else Status.HEALTHY,
                  many if i == 3 else {1: XID} if i in (7, 11) else None, chips=6 if i == 3 else 2)
             for i in range(1, 16)]
    return [*hosts, *fleet().hosts]


def test_joined_folded_lines_give_back_every_cell_at_every_width() -> None:
    from fleetctl.views.health import chips_table, hosts_table
    from fleetctl.views.summary import render_summary

    rows = _narrow_fleet()
    for width in range(30, 201):
        tables = [hosts_table(rows, width=width), chips_table(rows, width=width)]
        summary = render_summary(rows, "model", width=width)
        assert isinstance(summary, Table)
        for table in [*tables, summary]:
            shown = _column_texts(table, width)
            whole = _whole(table)
            # a folded cell keeps its text: columns compared whole (header and every cell, in order)
            assert shown == whole, f"at {width} columns: {shown} != {whole}"


def test_a_host_list_folds_at_its_commas() -> None:
    from fleetctl.views.health import folded

    out = folded("h100-[0003,0007,0011]", 10)
    assert isinstance(out, Text) and out.plain.split("\n") == ["h100-[", "0003,0007,", "0011]"]
    assert folded("h100-[0003,0007,0011]", 30) == "h100-[0003,0007,0011]"
    long = folded("#1 xid, #2 temperature", 8)
    assert isinstance(long, Text) and long.plain.split("\n") == ["#1 xid,", "#2", "temperat", "ure"]
