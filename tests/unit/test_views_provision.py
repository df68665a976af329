"""Rendering: the final table worst first, plain lines for logs, the live view's content."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from rich.console import Console

from fleetctl.provision import ProvisionResult
from fleetctl.runner import EventTally, HostResult, fake_event
from fleetctl.views.provision import LiveProgress, PlainProgress, make_progress, summary_table


def console(width: int = 120) -> Console:
    return Console(file=StringIO(), width=width, color_system=None, legacy_windows=False)


def text(c: Console) -> str:
    out = c.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in out.splitlines()).strip("\n")


HOSTS = [
    HostResult("n1", ok=3, changed=1,
               started="2026-01-01T00:00:00+00:00", ended="2026-01-01T00:01:05.5+00:00"),
    HostResult("n2", ok=1, failed=1, skipped=2, first_failure="install: apt broke"),
    HostResult("n3", unreachable=1, first_failure="gather: ssh refused"),
    HostResult("n4"),
]


def test_summary_table_is_worst_first_with_counts_duration_and_first_failure() -> None:
    c = console()
    c.print(summary_table(HOSTS))
    lines = text(c).splitlines()
    columns = "  host   state         ok   changed   failed   unreachable   skipped   duration   "
    assert lines[0] == columns + "first failure"
    assert set(lines[1].strip()) == {"─"}
    assert lines[2:] == [
        "  n2     failed         1         0        1             0         2          -   "
        "install: apt broke",
        "  n3     unreachable    0         0        0             1         0          -   "
        "gather: ssh refused",
        "  n4     pending        0         0        0             0         0          -",
        "  n1     changed        3         1        0             0         0    1m05.5s",
    ]


def result(status: str = "failed") -> ProvisionResult:
    return ProvisionResult("r1", status, HOSTS, Path("/state/runs/r1/artifacts"), Path("/p/site.yml"))


def test_plain_progress_prints_plays_tasks_and_results_worth_a_line() -> None:
    c = console()
    view = PlainProgress(c)
    tally = EventTally(["n1", "n2"], redact=lambda s: s.replace("pw123", "***"))
    view.started("r1", ["n1", "n2"], "site.yml")
    for event in [
        fake_event("playbook_on_play_start", play="Base"),
        fake_event("playbook_on_task_start", task="install"),
        fake_event("runner_on_ok", "n1", task="install", res={"changed": True}),
        fake_event("runner_on_ok", "n2", task="install", res={"changed": False}),
        fake_event("runner_on_failed", "n2", task="login", res={"msg": "bad pw123"}),
        fake_event("runner_on_unreachable", "n1", task="login", res={"msg": "ssh down"}),
        fake_event("playbook_on_task_start", task="next"),
    ]:
        tally.feed(event)
        view.event(event, tally)
    assert text(c).splitlines() == [
        "run r1: site.yml on 2 host(s)",
        "PLAY Base",
        "TASK install [0/2 hosts done]",
        "  n1: changed",
        "  n2: failed: login: bad ***",
        "  n1: unreachable: login: ssh down",
        "TASK next [2/2 hosts done]",
    ]


def test_plain_progress_ends_with_the_table_and_a_summary_line() -> None:
    c = console(160)
    view = PlainProgress(c)
    view.finished(result())
    # not a terminal: the table is plain lines, one host each, worst first
    assert text(c).splitlines() == [
        "host  state        ok  changed  failed  unreachable  skipped  duration  first failure",
        "n2    failed        1        0       1            0        2         -  install: apt broke",
        "n3    unreachable   0        0       0            1        0         -  gather: ssh refused",
        "n4    pending       0        0       0            0        0         -  -",
        "n1    changed       3        1       0            0        0   1m05.5s  -",
        "run r1 failed: 1 failed, 1 unreachable, 1 pending, 1 changed",
        "artifacts: /state/runs/r1/artifacts",
    ]


def test_live_view_shows_play_task_hosts_done_and_host_states() -> None:
    c = console()
    view = LiveProgress(c)
    view.started("r1", ["n1", "n2", "n3"], "site.yml")
    try:
        tally = EventTally(["n1", "n2", "n3"])
        for event in [
            fake_event("playbook_on_play_start", play="Base"),
            fake_event("playbook_on_task_start", task="install packages"),
            fake_event("runner_on_failed", "n2", task="install packages", res={"msg": "x"}),
            fake_event("runner_on_ok", "n1", task="install packages", res={"changed": True}),
        ]:
            tally.feed(event)
            view.event(event, tally)
        snapshot = console()
        snapshot.print(view.render())
        out = text(snapshot)
    finally:
        view.close()
    assert "play: Base" in out and "task: install packages" in out
    assert "1/3" in out  # n2 is done (failed); n1 is still in the play
    rows = [line.split()[:2] for line in out.splitlines() if line.strip().startswith("n")]
    assert rows == [["n2", "failed"], ["n3", "pending"], ["n1", "changed"]]


def test_make_progress_is_plain_when_not_a_terminal() -> None:
    assert isinstance(make_progress(console()), PlainProgress)
    assert isinstance(make_progress(Console(file=StringIO(), force_terminal=True)), LiveProgress)


def test_diffs_are_printed_as_ansible_rendered_them_with_secrets_redacted() -> None:
    c = console()
    view = PlainProgress(c)
    tally = EventTally(["n1"], redact=lambda s: s.replace("pw123", "***"))
    rendered = "\x1b[0;31m--- before: /etc/x\x1b[0m\r\n+++ after: /etc/x\r\n-old\r\n+token=pw123\r\n"
    diff = fake_event("runner_on_file_diff", "n1", task="template", stdout=rendered,
                      diff=[{"before": "old", "after": "token=pw123"}])
    changed = fake_event("runner_on_ok", "n1", task="template", stdout="changed: [n1]", res={"changed": True})
    for event in (diff, changed):
        tally.feed(event)
        view.event(event, tally)
    assert text(c).splitlines() == [
        "--- before: /etc/x", "+++ after: /etc/x", "-old", "+token=***", "  n1: changed",
    ]


def test_brackets_in_names_and_messages_are_text_not_markup() -> None:
    hosts = [HostResult("gpu[1]", failed=1, first_failure="check: missing [/dev/nvidia0] [bold]x[/bold]",
                        last_task="probe [/dev/nvidia0]")]
    c = console(200)
    c.print(summary_table(hosts))  # "[/dev/nvidia0]" used to raise rich's MarkupError
    out = text(c)
    assert "gpu[1]" in out and "missing [/dev/nvidia0] [bold]x[/bold]" in out
    live = LiveProgress(console(200))
    live.started("r1", ["gpu[1]"], "site.yml")
    try:
        tally = EventTally(["gpu[1]"])
        event = fake_event("runner_on_ok", "gpu[1]", task="probe [/dev/nvidia0]", res={})
        tally.feed(event)
        live.event(event, tally)
        c2 = console(200)
        c2.print(live.render())
    finally:
        live.close()
    assert "gpu[1]" in text(c2) and "probe [/dev/nvidia0]" in text(c2)


def test_task_names_that_template_a_secret_are_redacted_everywhere() -> None:
    c = console(200)
    view = PlainProgress(c)
    tally = EventTally(["n1"], redact=lambda s: s.replace("tok-991122", "***"))
    view.started("r1", ["n1"], "site.yml")
    for event in [
        fake_event("playbook_on_play_start", play="Base"),
        fake_event("playbook_on_task_start", task="Register with tok-991122"),
        fake_event("runner_on_failed", "n1", task="Register with tok-991122", res={"msg": "no"}),
    ]:
        tally.feed(event)
        view.event(event, tally)
    out = text(c)
    assert "tok-991122" not in out and "Register with ***" in out
    assert tally.task == "Register with ***" and tally.hosts["n1"].last_task == "Register with ***"
