"""``fleetctl health --map``: one cell per host, grouped, a glyph per status, 1,000 hosts on one screen."""

from __future__ import annotations

from fleet_agent.verdict import HostHealth
from rich.console import Console

from fleetctl.report import FleetReport, HostRow
from fleetctl.views.map import GLYPH, default_group_by, natural_key, render_fleet_map, render_map

NOW = 1_800_000_000.0


def row(name: str, rack: str, status: HostHealth = HostHealth.HEALTHY) -> HostRow:
    return HostRow(name, "127.0.0.1", 19001, ("gpu_nodes", rack), status)


def fleet(n: int = 1000, per_rack: int = 40, bad_rack: int = 12) -> list[HostRow]:
    hosts = []
    for i in range(n):
        rack = f"rack{i // per_rack + 1}"
        status = HostHealth.UNHEALTHY if i // per_rack + 1 == bad_rack and i % 3 == 0 else HostHealth.HEALTHY
        hosts.append(row(f"h100-{i:04d}", rack, status))
    hosts[5].status = HostHealth.UNREACHABLE
    hosts[6].status = HostHealth.DEGRADED
    return hosts


def draw(hosts: list[HostRow], width: int, group_by: str | None = None) -> list[str]:
    report = FleetReport(generated_at=NOW, source="agents", hosts=hosts, duration_s=0.5)
    console = Console(width=width, height=40, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(render_fleet_map(report, hosts, group_by, width=width))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_every_status_has_its_own_glyph() -> None:
    assert len(set(GLYPH.values())) == len(GLYPH) == len(HostHealth)


def test_a_thousand_hosts_fit_120_by_40_and_the_bad_rack_stands_out() -> None:
    lines = draw(fleet(), 120)
    assert len(lines) <= 40 and all(len(line) <= 120 for line in lines)
    rack12 = next(line for line in lines if line.startswith("rack12 "))
    assert rack12.split()[1] == "13/40" and rack12.count("X") == 13
    rack1 = next(line for line in lines if line.startswith("rack1 "))
    assert rack1.split()[1] == "2/40" and "!" in rack1 and "o" in rack1
    assert lines[-1] == "· healthy 985  o degraded 1  ! unreachable 1  X unhealthy 13"
    # hosts in name order, in blocks of ten: h100-0005 (unreachable) is the sixth cell
    cells = rack1.split(None, 2)[2]
    assert cells[:12] == "·····!o··· ·"


def test_one_big_group_wraps_under_its_label_at_80_columns() -> None:
    hosts = [row(f"n{i}", "rack1") for i in range(1000)]
    hosts[999].status = HostHealth.UNHEALTHY
    lines = draw(hosts, 80, group_by="group")
    first = next(i for i, line in enumerate(lines) if line.startswith("gpu_nodes"))
    map_lines = lines[first:-1]
    assert all(len(line) <= 80 for line in lines)
    assert map_lines[0].startswith("gpu_nodes 1/1000 ")
    assert all(line.startswith(" " * len("gpu_nodes 1/1000 ")) for line in map_lines[1:])
    assert sum(line.count("·") + line.count("X") for line in map_lines) == 1000
    assert map_lines[-1].rstrip().endswith("X")  # natural order: n999 last, not n99


def test_a_pipe_gets_one_line_per_group() -> None:
    text = render_map(fleet(), "rack", width=None).plain.splitlines()
    assert len(text) == 25 + 1 and all(len(line.split()[2].replace(" ", "")) <= 40 for line in text[:-1])
    assert text[0].startswith("rack1 ") and text[1].startswith("rack2 ") and text[9].startswith("rack10 ")


def test_racks_when_the_inventory_has_them() -> None:
    assert default_group_by(fleet(40)) == "rack"
    assert default_group_by([HostRow("a", "x", 1, ("gpu_nodes",), HostHealth.HEALTHY)]) == "group"
    assert sorted(["rack10", "rack9", "rack1"], key=natural_key) == ["rack1", "rack9", "rack10"]


def test_at_40_columns_the_legend_keeps_each_item_whole() -> None:
    lines = draw(fleet(), 40)
    assert all(len(line) <= 40 for line in lines)
    start = next(i for i, line in enumerate(lines) if line.startswith("· healthy"))
    legend = lines[start:]
    assert legend == ["· healthy 985  o degraded 1", "! unreachable 1  X unhealthy 13"]


def test_a_wide_character_label_lines_up_by_display_width() -> None:
    # 机架一号 is four characters and eight columns: padded by characters, its cells would start three
    # columns late and its lines run past the screen's width, where rich wraps them.
    from rich.cells import cell_len

    hosts = [row(f"a{i}", "rack机架一号") for i in range(60)] + [row(f"b{i}", "rack2") for i in range(60)]
    lines = render_map(hosts, "rack", width=40).plain.splitlines()
    cells = [line for line in lines if line.startswith(("rack", " "))]
    assert cells and max(cell_len(line) for line in cells) <= 40
    # Each group's cells start at the same column.
    starts = {cell_len(line[:line.index("·")]) for line in cells if "·" in line}
    assert len(starts) == 1, lines
