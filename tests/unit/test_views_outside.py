"""Every view, fed hostile outside text: brackets are shown as typed, never read as rich markup (no
crash, nothing dropped), control sequences never reach the terminal raw, absurd lengths stay in their
cell. Rendered into a terminal Console without colours: any escape byte in the output came from the
data."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from fleet_agent.schema import Action, ChipReport, HostMetrics, NodeReport, Problem, Severity, Status
from rich.console import Console

from fleetctl.drain import HostStatus, Outcome
from fleetctl.inventory import Host
from fleetctl.provision import ProvisionResult
from fleetctl.report import FleetReport, HostRow
from fleetctl.report.build import host_row_failed, host_row_from_node
from fleetctl.runner import EventTally, HostResult, fake_event
from fleetctl.state.hosts import AuditEntry
from fleetctl.state.runs import RunRecord
from fleetctl.views import console as console_view
from fleetctl.views import drain as drain_view
from fleetctl.views import health as health_view
from fleetctl.views import runs as runs_view
from fleetctl.views.health import live_drawer, render_report

NOW = 1_800_000_000.0
MARKUP = "[bold]x[/] [/] [link=http://evil.example]click[/link]"
REASON = "[maint] swap PSU"
CONTROLS = "a\x1b[2Jb\x1b]8;;http://x\x07c\x1b]8;;\x07d\x9b31me\rf\x07g\x08h"
CONTROLS_SHOWN = "a\\x1b[2Jb\\x1b]8;;http://x\\x07c\\x1b]8;;\\x07d\\x9b31me\\rf\\x07g\\x08h"
RAW = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))} - {"\n"}


def terminal(width: int = 200) -> Console:
    return Console(file=StringIO(), width=width, color_system=None, force_terminal=True, legacy_windows=False)


def out(c: Console) -> str:
    return c.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def assert_safe(text: str) -> None:
    assert not RAW & set(text), f"raw controls reached the terminal: {sorted(RAW & set(text))!r}"


@contextlib.contextmanager
def stdout_terminal(monkeypatch: pytest.MonkeyPatch, width: int = 200) -> Iterator[Console]:
    """The views' own stdout Console, replaced by a terminal one that is read back."""
    c = terminal(width)
    # the view modules are imported above: importing one here would bind it to the patched function
    for module in (console_view, drain_view, health_view, runs_view):
        if hasattr(module, "stdout_console"):  # the table views reach it through console_view.show
            monkeypatch.setattr(module, "stdout_console", lambda: c)
    yield c


# --- health (and --watch, which draws the same renderables) -----------------------------------------


def node_host(name: str, message: str, *, model: str = "NVIDIA H100 80GB HBM3", check: str = "xid",
              groups: tuple[str, ...] = ("gpu_nodes",)) -> HostRow:
    problem = Problem(check, Severity.CRITICAL, message, Action.REBOOT)
    chips = [ChipReport(index=i, kind="gpu", vendor="nvidia", model=model, uuid=f"U-{i}", pci_bus_id="",
                        status=Status.UNHEALTHY if i == 0 else Status.HEALTHY, temperature_c=50.0,
                        problems=[problem] if i == 0 else []) for i in range(2)]
    n = NodeReport(host=name, agent_version="0.1.0", sampled_at=NOW - 3, interval_s=5.0,
                   status=Status.UNHEALTHY, chips_expected=2, chips=chips, host_metrics=HostMetrics())
    return host_row_from_node(name, "127.0.0.1", 19001, groups, n, NOW)


def healthy(name: str) -> HostRow:
    chips = [ChipReport(index=0, kind="gpu", vendor="nvidia", model="NVIDIA H100 80GB HBM3", uuid="U",
                        pci_bus_id="", status=Status.HEALTHY, temperature_c=41.0, utilization_pct=7.0)]
    n = NodeReport(host=name, agent_version="0.1.0", sampled_at=NOW - 3, interval_s=5.0,
                   status=Status.HEALTHY, chips_expected=1, chips=chips, host_metrics=HostMetrics())
    return host_row_from_node(name, "127.0.0.1", 19001, ("gpu_nodes",), n, NOW)


def hostile_fleet() -> FleetReport:
    return FleetReport(generated_at=NOW, source="agents", duration_s=0.1, hosts=[
        node_host("n-markup", MARKUP + " " + CONTROLS, model="[red]H100\x1b[5m"),
        host_row_failed("n-reason", "127.0.0.1", 19001, ("gpu_nodes",), reachable=True, kind="bad_report",
                        reason=MARKUP + " " + CONTROLS),
        healthy("n-ok"),
    ])


@pytest.mark.parametrize("kwargs", [{}, {"chips": True}, {"chips": True, "unhealthy": True}])
def test_health_tables_show_hostile_agent_text_literally(kwargs: dict[str, bool]) -> None:
    c = terminal()
    c.print(render_report(hostile_fleet(), **kwargs))  # type: ignore[arg-type]
    text = out(c)
    assert "[/] [link=http://evil.example]" in text  # in the reason; problem details show it all:
    if kwargs.get("chips"):
        assert MARKUP + " " + CONTROLS_SHOWN in text
    assert_safe(text)
    if not kwargs.get("unhealthy"):  # the healthy host's row is intact
        assert any(line.split()[:2] == ["n-ok", "healthy"] or line.split()[:3] == ["n-ok", "0", "gpu"]
                   for line in text.splitlines())


def test_health_group_titles_are_outside_text() -> None:
    hosts = [node_host("n1", "m"), healthy("n2")]
    for h in hosts:
        h.vars = {"rack": "[/]r1\x1b[2J"}
    c = terminal()
    c.print(render_report(FleetReport(generated_at=NOW, source="agents", duration_s=None, hosts=hosts),
                          group_by="rack"))
    assert "rack=[/]r1\\x1b[2J" in out(c)
    assert_safe(out(c))


def test_watch_redraws_hostile_text_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    with stdout_terminal(monkeypatch) as c, contextlib.ExitStack() as stack:
        draw = live_drawer(stack, chips=True, unhealthy=False, group_by=None, sort="status", every=2.0)
        draw(hostile_fleet())
    # the live display's own cursor moves are ESC sequences: take them out, then nothing may remain
    text = out(c)
    for own in ("\x1b[?25l", "\x1b[?25h", "\x1b[2K", "\x1b[1A", "\r"):
        text = text.replace(own, "")
    assert MARKUP + " " + CONTROLS_SHOWN in text
    assert_safe(text)


def test_a_failed_watch_round_shows_the_servers_text_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    with stdout_terminal(monkeypatch) as c, contextlib.ExitStack() as stack:
        draw = live_drawer(stack, chips=False, unhealthy=False, group_by=None, sort="status", every=2.0)
        draw(hostile_fleet(), failed=f"round failed: {MARKUP} {CONTROLS}")
    text = out(c)
    for own in ("\x1b[?25l", "\x1b[?25h", "\x1b[2K", "\x1b[1A", "\r"):
        text = text.replace(own, "")
    assert f"round failed: {MARKUP} {CONTROLS_SHOWN}" in text
    assert_safe(text)


def test_a_watch_rounds_notes_show_the_servers_text_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    # A partial answer's warning is the server's text: shown with the round, markup and controls escaped.
    with stdout_terminal(monkeypatch) as c, contextlib.ExitStack() as stack:
        draw = live_drawer(stack, chips=False, unhealthy=False, group_by=None, sort="status", every=2.0)
        draw(hostile_fleet(), notes=[f"Prometheus answered with warnings: {MARKUP} {CONTROLS}"])
    text = out(c)
    for own in ("\x1b[?25l", "\x1b[?25h", "\x1b[2K", "\x1b[1A", "\r"):
        text = text.replace(own, "")
    assert f"Prometheus answered with warnings: {MARKUP} {CONTROLS_SHOWN}" in text
    assert_safe(text)


def test_absurd_lengths_stay_in_their_cells() -> None:
    long_name = "h100-" + "x" * 300 + "-0007"
    report = FleetReport(generated_at=NOW, source="agents", duration_s=0.1, hosts=[
        node_host(long_name, "XID 79: " + "y" * 10_000 + " END"),
        healthy("n-ok"),
    ])
    for width, kwargs in itertools.product((80, 120, 200), ({}, {"chips": True})):
        c = terminal(width)
        c.print(render_report(report, **kwargs))  # type: ignore[arg-type]
        lines = out(c).splitlines()
        assert all(len(line) <= width for line in lines)
        # the name clipped in its middle (it may fold in its own cell), the message clipped: not the
        # hundreds of lines 10,000 characters would fold into
        assert len(lines) < 40, "\n".join(lines)
        assert "h100-xxx" in out(c) and "-0007" in out(c) and "x" * 300 not in out(c)
        assert " END" not in out(c)
        # every other host's row is whole: its status, chips and values in their columns
        ok = next(line.split() for line in lines if line.startswith("n-ok "))
        assert ok[:4] == (["n-ok", "healthy", "1/1", "41°C"] if not kwargs else ["n-ok", "0", "gpu", "H100"])
    doc = json.loads(report.to_json_bytes())  # --json keeps the full text
    assert doc["hosts"][0]["name"] == long_name
    assert any(p["message"].endswith("y END") for p in doc["hosts"][0]["problems"])


def test_json_on_a_terminal_carries_no_raw_control(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    report = hostile_fleet()
    report.hosts[0].problems[0] = type(report.hosts[0].problems[0])(
        "xid", "critical", CONTROLS + "\x7f\x9b\u202e", "reboot", 0)
    console_view.print_json(report.to_json_bytes())
    console_view.print_json({"reason": CONTROLS + "\x7f\u202e"})
    data = capfdbinary.readouterr().out
    assert not {b for b in data} & {*range(0x20), 0x7F} - {0x0A}
    assert b"\xc2\x9b" not in data and b"\xe2\x80\xae" not in data  # the UTF-8 of C1 CSI and RLO
    first, second = data.split(b"\n", 1)  # the report is one compact line; the dict is indented
    assert json.loads(first)["hosts"][0]["problems"][0]["message"] == CONTROLS + "\x7f\x9b\u202e"
    assert json.loads(second)["reason"] == CONTROLS + "\x7f\u202e"


# --- drain, undrain, maintain, status -----------------------------------------------------------------


def test_drain_outcomes_show_the_message_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.views.drain import print_outcomes

    with stdout_terminal(monkeypatch) as c:
        print_outcomes([Outcome("h1", False, "active", f"refused: {REASON} {MARKUP} {CONTROLS}"),
                        Outcome("h[2]", True, "drained", "drained")])
    text = out(c)
    assert f"refused: {REASON} {MARKUP} {CONTROLS_SHOWN}" in text
    assert "h[2]" in text and "FAILED" in text
    assert_safe(text)


def status_row(host: str, **changes: object) -> HostStatus:
    row = HostStatus(host=host, scheduler="none", scheduler_state="drained", scheduler_detail="drained file",
                     scheduler_reason=None, state="drained", reason=f"fleetctl:sre: {REASON}", actor="sre",
                     since=NOW, run_id=None, workloads=[])
    for key, value in changes.items():
        setattr(row, key, value)
    return row


def test_status_shows_an_sres_bracketed_reason_whole_and_escapes_scheduler_text(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fleetctl.views.drain import print_status

    rows = [status_row("h1"),
            status_row("h2", state="active", reason=None, scheduler_reason="[/]\x1b[2J\x9b[link=x]",
                       actor=None, workloads=["job[1]", "\x1b[2Jjob2"], note="[/] note"),
            status_row("h3", reason="r" * 10_000)]
    audit = [AuditEntry("h1", NOW, "sre\x1b[2J", "active", "drained", f"{REASON} {CONTROLS}", "[/]")]
    with stdout_terminal(monkeypatch) as c:
        print_status(rows, audit)
    text = out(c)
    assert f"fleetctl:sre: {REASON}" in text
    assert "[/]\\x1b[2J\\x9b[link=x]" in text
    assert "job[1], \\x1b[2Jjob2" in text and "[/] note" in text
    assert all(len(line) <= 200 for line in text.splitlines())
    assert "r" * 10_000 not in text
    assert_safe(text)
    err_or_out = capsys.readouterr()
    audit_line = err_or_out.out + err_or_out.err
    assert f"by sre\\x1b[2J: {REASON} {CONTROLS_SHOWN} ([/])" in audit_line
    assert_safe(audit_line)


# --- runs, inventory, provision ----------------------------------------------------------------------


def run_record(**changes: object) -> RunRecord:
    record = RunRecord(id="r1", user="sre", machine="m1", pid=7, started_at="2026-01-01T00:00:00Z",
                       heartbeat_at="2026-01-01T00:00:00Z", inventory="inv", pattern=f"gpu[0:3] {CONTROLS}",
                       playbook="/p/[b]site.yml", options={"k": CONTROLS}, status="failed[/]",
                       message=f"{MARKUP} {CONTROLS}",
                       hosts=[HostResult("n[1]", failed=1, first_failure=f"{MARKUP} {CONTROLS}")])
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_runs_list_and_show_print_database_text_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.views.runs import print_run, print_runs

    with stdout_terminal(monkeypatch) as c:
        print_runs([run_record()])
        print_run(run_record())
    text = out(c)
    assert "gpu[0:3] " + CONTROLS_SHOWN in text
    assert "[b]site.yml" in text
    assert "run r1: failed[/]" in text
    assert f"{MARKUP} {CONTROLS_SHOWN}" in text
    assert_safe(text)


def test_inventory_hosts_and_vars_are_outside_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.views.inventory import print_hosts

    host = Host(name="n[1]", address="10.0.0.1\x1b[2J", groups=("[/]rack",),
                vars={"note": f"{MARKUP} {CONTROLS}"})
    with stdout_terminal(monkeypatch) as c:
        print_hosts([host], with_vars=True)
    text = out(c)
    assert "n[1]" in text and "10.0.0.1\\x1b[2J" in text and "[/]rack" in text
    assert f"note={MARKUP} {CONTROLS_SHOWN}" in text
    assert_safe(text)


def test_provision_views_escape_task_names_host_names_and_failures() -> None:
    from fleetctl.views.provision import LiveProgress, PlainProgress, diff_text, print_summary

    c = terminal()
    view = PlainProgress(c)
    tally = EventTally(["n1"], redact=lambda s: s)
    view.started("r1", ["n1"], "site.yml")
    for event in [
        fake_event("playbook_on_play_start", play=f"Base {CONTROLS}"),
        fake_event("playbook_on_task_start", task=f"[/] task {CONTROLS}"),
        fake_event("runner_on_failed", host="n1\x1b[2J", task="t", res={"msg": f"{MARKUP} {CONTROLS}"}),
        fake_event("runner_on_file_diff", host="n1", stdout="\x1b[31m-a\x1b[0m\n+b\x1b]8;;http://x\x07\x9b\n"),
    ]:
        tally.feed(event)
        view.event(event, tally)
    result = ProvisionResult("r1", "failed", [HostResult("n[1]\x1b[2J", failed=1,
                                                         first_failure=f"{MARKUP} {CONTROLS}")],
                             Path("/a\x1b[2J"), Path("/p/site.yml"), message=f"{MARKUP} {CONTROLS}")
    print_summary(c, result)
    text = out(c)
    assert f"PLAY Base {CONTROLS_SHOWN}" in text
    assert "n1\\x1b[2J: failed: t:" in text
    assert f"{MARKUP} {CONTROLS_SHOWN}" in text
    assert "+b\\x1b]8;;http://x\\x07\\x9b" in text
    assert "n[1]\\x1b[2J" in text and "/a\\x1b[2J" in text
    assert_safe(text)
    diff = diff_text(fake_event("runner_on_file_diff", stdout="\x1b[32m+ok\x1b[0m\x9b"), tally)
    assert diff is not None and diff.plain == "+ok\\x9b"

    live = LiveProgress(terminal())
    live.started("r1", ["n1"], "site\x1b[2J.yml")
    live.tally = tally
    rendered = terminal()
    rendered.print(live.render())
    assert "site\\x1b[2J.yml" in out(rendered) and "[/] task " + CONTROLS_SHOWN in out(rendered)
    assert_safe(out(rendered))
