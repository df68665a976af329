"""What a provision run looks like on screen: live progress while it runs, a table at the end.

``LiveProgress`` (a terminal) redraws the current play and task, a bar of hosts done of total and
each host's state a few times a second; ``PlainProgress`` (a pipe, a CI log) prints one line per
play, task and per non-ok host result. ``summary_table`` is the final per-host table, worst first.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fleetctl.provision import ProvisionResult
from fleetctl.runner import Event, EventTally, HostResult, failure_message, worst_first
from fleetctl.views.text import cell, from_ansi, ident, outside

STATE_STYLE = {
    "failed": "bold red",
    "unreachable": "bold magenta",
    "pending": "dim",
    "changed": "yellow",
    "ok": "green",
}
LIVE_ROWS = 15  # hosts shown live; the rest are summed up in one line


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s" if minutes else f"{secs:.1f}s"


def summary_table(hosts: Sequence[HostResult], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("host", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name in ("ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("first failure", overflow="fold", ratio=1)
    for h in worst_first(hosts):
        table.add_row(
            ident(h.host), _state(h.state), str(h.ok), str(h.changed), str(h.failed), str(h.unreachable),
            str(h.skipped), _duration(h.duration_s), cell(h.first_failure),
        )
    return table


def summary_line(result: ProvisionResult) -> Text:
    counts: dict[str, int] = {}
    for h in result.hosts:
        counts[h.state] = counts.get(h.state, 0) + 1
    parts = ", ".join(f"{counts[s]} {s}" for s in STATE_STYLE if counts.get(s))
    style = "green" if result.status == "successful" else "bold red"
    text = Text(f"run {result.run_id} {result.status}", style=style)
    text.append(f": {parts}" if parts else "")
    if result.message:
        text.append(" — ")
        text.append_text(outside(result.message))
    return text


def diff_text(event: Event, tally: EventTally) -> Text | None:
    """Ansible's own rendering of a ``--diff`` (the ``runner_on_file_diff`` event's stdout)."""
    if event.get("event") != "runner_on_file_diff":
        return None
    # pexpect reads through a pty: CRLF line ends, ANSI colours
    stdout = str(event.get("stdout") or "").replace("\r\n", "\n").strip("\n")
    return from_ansi(tally.redact(stdout)) if stdout else None


def print_summary(console: Console, result: ProvisionResult) -> None:
    from fleetctl.views.console import show

    show(summary_table(result.hosts), console)  # plain lines, whole names, on a pipe
    console.print(summary_line(result))
    console.print(outside(f"artifacts: {result.artifacts}", style="dim"), soft_wrap=True)


class PlainProgress:
    """Line-per-event output for logs; only plays, tasks and results worth a line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.total = 0
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            self.console.print(outside(text), highlight=False, soft_wrap=True)

    def started(self, run_id: str, hosts: Sequence[str], playbook: str) -> None:
        self.total = len(hosts)
        self._say(f"run {run_id}: {playbook} on {len(hosts)} host(s)")

    def batch(self, index: int, total: int, hosts: Sequence[str]) -> None:
        if total > 1:
            self._say(f"batch {index}/{total}: {', '.join(hosts)}")

    def event(self, event: Event, tally: EventTally) -> None:
        diff = diff_text(event, tally)
        if diff is not None:
            with self._lock:
                self.console.print(diff, highlight=False, soft_wrap=True)
        name = event.get("event")
        data: dict[str, Any] = event.get("event_data") or {}
        if name == "playbook_on_play_start":
            self._say(tally.redact(f"PLAY {data.get('play') or data.get('name') or ''}"))
        elif name == "playbook_on_task_start":
            _, _, done = tally.current()
            self._say(tally.redact(f"TASK {data.get('task') or ''}") + f" [{done}/{self.total} hosts done]")
        elif name in ("runner_on_failed", "runner_on_unreachable", "runner_on_async_failed"):
            state = "unreachable" if name == "runner_on_unreachable" else "failed"
            if data.get("ignore_errors"):
                state = "failed (ignored)"
            message = failure_message(data.get("res") or {})
            self._say(tally.redact(f"  {data.get('host')}: {state}: {data.get('task') or '?'}: {message}"))
        elif name == "runner_on_ok" and (data.get("res") or {}).get("changed"):
            self._say(f"  {data.get('host')}: changed")

    def finished(self, result: ProvisionResult) -> None:
        print_summary(self.console, result)

    def close(self) -> None:
        pass


class LiveProgress:
    """A rich ``Live`` display, redrawn from the tally (the runner thread only feeds events)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tally: EventTally | None = None
        self.batch_text = ""
        self.progress = Progress(
            TextColumn("[bold]hosts done"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task_id: TaskID | None = None
        self.live = Live(console=console, refresh_per_second=4, transient=True, get_renderable=self.render)

    def started(self, run_id: str, hosts: Sequence[str], playbook: str) -> None:
        self.header = f"run {run_id}: {playbook} on {len(hosts)} host(s)"
        self.task_id = self.progress.add_task("hosts", total=len(hosts))
        self.live.start()

    def batch(self, index: int, total: int, hosts: Sequence[str]) -> None:
        self.batch_text = f"batch {index}/{total}" if total > 1 else ""

    def event(self, event: Event, tally: EventTally) -> None:
        self.tally = tally
        diff = diff_text(event, tally)
        if diff is not None:
            self.live.console.print(diff, highlight=False, soft_wrap=True)  # printed above the live view

    def render(self) -> RenderableType:
        if self.tally is None or self.task_id is None:
            return outside(getattr(self, "header", "starting"))
        play, task, done = self.tally.current()
        self.progress.update(self.task_id, completed=done)
        lines = outside(self.header + (f" — {self.batch_text}" if self.batch_text else ""), style="bold")
        lines.append_text(Text.assemble("\nplay: ", cell(play or "-"), "\ntask: ", cell(task or "-")))
        hosts = worst_first(self.tally.snapshot())
        table = Table(box=None, show_header=True, pad_edge=False)
        table.add_column("host", no_wrap=True)
        table.add_column("state")
        table.add_column("ok", justify="right")
        table.add_column("changed", justify="right")
        table.add_column("last task", overflow="ellipsis", no_wrap=True)
        for h in hosts[:LIVE_ROWS]:
            table.add_row(ident(h.host), _state(h.state), str(h.ok), str(h.changed), cell(h.last_task))
        parts: list[RenderableType] = [lines, self.progress, table]
        if len(hosts) > LIVE_ROWS:
            parts.append(Text(f"... and {len(hosts) - LIVE_ROWS} more hosts", style="dim"))
        return Group(*parts)

    def finished(self, result: ProvisionResult) -> None:
        self.live.stop()
        print_summary(self.console, result)

    def close(self) -> None:
        """Leave the terminal usable when the run ended in an exception."""
        self.live.stop()


def make_progress(console: Console) -> PlainProgress | LiveProgress:
    return LiveProgress(console) if console.is_terminal else PlainProgress(console)
