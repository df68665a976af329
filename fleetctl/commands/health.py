"""``fleetctl health``: the fleet health table (direct fan-out to the agents, or via Prometheus)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl import quick_exit
from fleetctl.commands import add
from fleetctl.commands.params import (
    InventoryOpt,
    OutputOpt,
    PatternsArg,
    PrometheusTenantOpt,
    PrometheusTokenFileOpt,
    PrometheusUrlOpt,
)
from fleetctl.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from rich.console import RenderableType

    from fleetctl.inventory import Host
    from fleetctl.report import FleetReport, HealthView, HostRow
    from fleetctl.views.health import Drawer
    from fleetctl.views.output import OutputFormat

class Source(str, Enum):
    agents = "agents"
    prometheus = "prometheus"


class SortKey(str, Enum):
    status = "status"
    name = "name"
    temp = "temp"
    power = "power"
    memory = "memory"
    xid = "xid"
    util = "util"
    age = "age"


class State(str, Enum):
    """What ``--status`` accepts (a comma list of these): the host states of fleet_agent.verdict."""

    healthy = "healthy"
    degraded = "degraded"
    unknown = "unknown"
    error = "error"
    unreachable = "unreachable"
    unhealthy = "unhealthy"


def parse_states(text: str | None) -> frozenset[str] | None:
    """``degraded,unhealthy`` -> those states; an unknown one is a usage error naming the closest."""
    import difflib

    if text is None:
        return None
    known = [s.value for s in State]
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--status {text!r}: expected a comma list of {', '.join(known)}")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"--status {name!r}: not a state; {hint}"
                             f"expected a comma list of {', '.join(known)}")
    return frozenset(names)


def _complete_states(incomplete: str) -> list[str]:
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    taken = set(done.split(","))
    return [prefix + s.value for s in State if s.value.startswith(last) and s.value not in taken]


def register(app: typer.Typer) -> None:
    add(app, "health", health)


def health(
    patterns: PatternsArg = None,
    inventory: InventoryOpt = None,
    output: OutputOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as -o json")] = False,
    chips: Annotated[bool, typer.Option("--chips", help="One row per chip")] = False,
    summary: Annotated[bool, typer.Option(
        "--summary", help="One line per model (or --group-by) with counts per state and host lists")] = False,
    fleet_map: Annotated[bool, typer.Option(
        "--map", help="Every host as one cell, one line per rack (or --group-by)")] = False,
    unhealthy: Annotated[bool, typer.Option("--unhealthy", help="Only what is wrong")] = False,
    status: Annotated[str | None, typer.Option(
        "--status", metavar="STATE[,STATE...]", autocompletion=_complete_states,
        help="Only hosts (chips with --chips) in these states: "
             "healthy, degraded, unknown, error, unreachable, unhealthy")] = None,
    watch: Annotated[float | None, typer.Option(
        "--watch", metavar="SECONDS", help="Redraw every SECONDS until Ctrl-C", min=0.1)] = None,
    sort: Annotated[SortKey, typer.Option(
        "--sort", case_sensitive=False,
        help="status (worst first), name, or largest first: temp, power, memory, xid, util, age "
             "(with --chips: the chips)")] = SortKey.status,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order")] = False,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", metavar="KEY",
        help="One table per value: 'group' (first inventory group), 'model', an inventory variable, "
             "or a group-name prefix such as 'rack'")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-host timeout, seconds", min=0.01)] = 5.0,
    deadline: Annotated[float, typer.Option("--deadline", help="Overall deadline, seconds", min=0.01)] = 30.0,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", help="Requests being answered at once (hung hosts wait aside)", min=1)] = 512,
    source: Annotated[Source, typer.Option(
        "--source", case_sensitive=False, help="agents (direct) or prometheus")] = Source.agents,
    prometheus_url: PrometheusUrlOpt = None,
    prometheus_token_file: PrometheusTokenFileOpt = None,
    prometheus_tenant: PrometheusTenantOpt = None,
    query_timeout: Annotated[float, typer.Option(
        "--query-timeout", help="With --source prometheus: time limit of each query, seconds",
        min=0.01)] = 25.0,
) -> int:
    """Ask every agent for its health and show the fleet, worst first.

    Exit 0 when every host is healthy, 1 when any is degraded, unhealthy, unknown or unreachable,
    2 on usage or configuration errors.
    """
    from fleetctl.inventory import join_patterns
    from fleetctl.report import HealthView
    from fleetctl.views.output import OutputFormat, resolve

    fmt = resolve(output, as_json=as_json)
    if summary and fleet_map:
        raise UsageError("--summary and --map are two views: give one")
    if chips and (summary or fleet_map):
        raise UsageError(f"--chips and {'--summary' if summary else '--map'} are two views: give one")
    if fleet_map and fmt is OutputFormat.name:
        raise UsageError("--map and -o name are two views: give one")
    if watch is not None and fmt is OutputFormat.name:
        raise UsageError("-o name lists the hosts once: drop --watch")
    mode = "summary" if summary else "map" if fleet_map else "table"
    pattern = join_patterns(patterns)
    view = HealthView(chips=chips, unhealthy=unhealthy, statuses=parse_states(status), group_by=group_by,
                      sort=sort.value, reverse=reverse, wide=fmt is OutputFormat.wide)
    access = PrometheusAccess(prometheus_url, prometheus_token_file, prometheus_tenant)
    # What the source says of a watch's round is shown with that round (see _watch_drawer).
    notes: list[str] | None = [] if watch is not None else None
    collect, _hosts = _collector(pattern, inventory, source.value, access, timeout, deadline,
                                 concurrency, query_timeout, ask_early=True,
                                 check=None if group_by is None else partial(_check_group_by, group_by),
                                 notice=None if notes is None else notes.append)
    if watch is None:
        report = collect()
        _show(report, view, fmt, mode)
        quick_exit.hold(report, _hosts)  # freed by the process's end, not object by object (0.25 s at 100k)
        return report.exit_code
    return _watch(collect, watch, view, fmt=fmt, mode=mode, notes=notes)


def _check_group_by(key: str, hosts: list[Host]) -> None:
    """--group-by checked against the inventory before any agent is asked (``model`` needs no inventory)."""
    from fleetctl.report import HostHealth, HostRow, check_group_by

    rows = [HostRow(h.name, h.address, h.agent_port, h.groups, HostHealth.UNKNOWN, vars=h.vars)
            for h in hosts]
    check_group_by(key, rows)


@dataclass(frozen=True)
class PrometheusAccess:
    """--prometheus-url, --prometheus-token-file, --prometheus-tenant."""

    url: str | None = None
    token_file: Path | None = None
    tenant: str | None = None


def _collector(pattern: str, inventory: str | None, source: str, prometheus: PrometheusAccess,
               timeout: float, deadline: float, concurrency: int, query_timeout: float = 25.0, *,
               ask_early: bool = False, check: Callable[[list[Host]], None] | None = None,
               notice: Callable[[str], None] | None = None) -> tuple[Callable[[], FleetReport], list[Host]]:
    """Load the inventory once (``check`` sees its selection); return a function that takes one fresh
    fleet report, and the hosts. ``notice`` hears what Prometheus's reports say in one line (default:
    stderr).

    ``ask_early``: for a report taken at once, Prometheus is asked its first round before the inventory
    is read (those queries need none), so it answers while fleetctl reads; a bad --prometheus-url is
    then said before a bad inventory. A caller that does more before its first report leaves it off.
    Not while Ansible parses the inventory (no cache entry yet): for the seconds that takes, the whole
    round's answers would wait decoded (~2.5 KB a host) beside the parse (~8 KB a host).
    """
    from fleetctl.inventory import load_inventory, start_loading

    if source != "prometheus":
        inv = load_inventory(inventory)
        hosts = inv.select(pattern)
        if check is not None:
            check(hosts)
        return _agents_collector(inv.label, pattern, hosts, timeout, deadline, concurrency), hosts

    from fleetctl.promsource import ENV_URL, FirstRound, HttpPrometheus, prometheus_report

    url = prometheus.url or os.environ.get(ENV_URL)
    if not url:
        raise UsageError(f"--source prometheus needs --prometheus-url (or ${ENV_URL})")
    client = HttpPrometheus(url, timeout_s=query_timeout, token_file=prometheus.token_file,
                            tenant=prometheus.tenant)
    pending = start_loading(inventory)  # before the first round's threads: a cold parse forks
    early: list[FirstRound] = []
    try:
        if ask_early and not pending.parse:
            early.append(FirstRound(client))
        inv = pending.result()
        hosts = inv.select(pattern)
        if check is not None:
            check(hosts)
    except BaseException:
        pending.cancel()
        for first in early:
            first.close()
        raise

    def from_prometheus() -> FleetReport:
        first = early.pop() if early else None  # the first report only: later ones (--watch) ask afresh
        return prometheus_report(hosts, client, inventory=inv.label, pattern=pattern, deadline_s=deadline,
                                 first=first, notice=notice)

    return from_prometheus, hosts


def _agents_collector(label: str, pattern: str, hosts: list[Host], timeout: float, deadline: float,
                      concurrency: int) -> Callable[[], FleetReport]:
    """Reports by direct fan-out to the agents."""
    from fleetctl.fanout import FanoutOptions, raise_fd_limit
    from fleetctl.report.build import agents_report

    # Hung hosts wait aside without a concurrency slot, but each holds a socket: up to every host.
    max_open = raise_fd_limit(min(max(concurrency, len(hosts)), 16384))
    options = FanoutOptions(timeout_s=timeout, deadline_s=deadline, concurrency=min(concurrency, max_open),
                            max_open=max_open)

    def from_agents() -> FleetReport:
        return agents_report(hosts, options, inventory=label, pattern=pattern)

    return from_agents


def _selected(report: FleetReport, view: HealthView) -> list[HostRow]:
    """The hosts -o json/yaml/name and the map list: sorted, only the --status/--unhealthy ones."""
    from fleetctl.report import selected_hosts

    return selected_hosts(report.hosts, view)


def _document(report: FleetReport, view: HealthView, mode: str) -> Any:
    if mode == "summary":
        from fleetctl.views.summary import DEFAULT_KEY, summary_doc

        return summary_doc(report, _selected(report, view), view.group_by or DEFAULT_KEY)
    return report.to_dict(_selected(report, view))


def _show(report: FleetReport, view: HealthView, fmt: OutputFormat, mode: str, *,
          one_line: bool = False) -> None:
    """``one_line``: a JSON document on one line (a watch writes one per line and round)."""
    from fleetctl.views.output import OutputFormat

    if fmt is OutputFormat.json and mode != "summary":
        from fleetctl.speedups import gc_paused
        from fleetctl.views.console import print_json_pieces  # without rich: --json stays light

        with gc_paused():  # the encoder's objects are short-lived and acyclic: nothing to collect
            print_json_pieces(report.json_chunks(_selected(report, view)))
        return
    if fmt is OutputFormat.json and one_line:
        import json

        from fleetctl.views.console import print_json

        print_json(json.dumps(_document(report, view, mode), separators=(",", ":")).encode())
        return
    if fmt in (OutputFormat.json, OutputFormat.yaml):
        from fleetctl.views.output import emit

        emit(fmt, doc=lambda: _document(report, view, mode), names=list, table=lambda wide: None)
        return
    if fmt is OutputFormat.name:
        from fleetctl.views.output import print_names

        if mode == "table":
            from fleetctl.views.health import names

            print_names(names(report, view))
        else:
            print_names(h.name for h in _selected(report, view))
        return
    _print_view(report, view, mode)


def _print_view(report: FleetReport, view: HealthView, mode: str) -> None:
    from fleetctl.views.console import show, stdout_console
    from fleetctl.views.health import print_report

    if mode == "table":
        print_report(report, view)
        return
    console = stdout_console()
    show(_view_renderable(report, view, mode, console.width if console.is_terminal else None), console)


def _watch(collect: Callable[[], FleetReport], every: float, view: HealthView, *, fmt: OutputFormat,
           mode: str, notes: list[str] | None = None) -> int:
    """Redraw in place until Ctrl-C; the exit code is the last completed round's. ``notes``: where
    ``collect`` puts what the source says of a round, shown with that round.

    A round after a good one that cannot ask its source (Prometheus restarting, a query past its time,
    a token file mid-rotation) is said and the last report stays up; the next round tries again: a
    wall display outlives its Prometheus's restart. The first round's failure is the command's (a wrong
    URL or token: exit 2)."""
    from fleetctl.errors import SourceUnavailable
    from fleetctl.speedups import release_frozen

    code = 0
    last: FleetReport | None = None
    ending: tuple[str, ...] = ()  # the notes of a round that ends the watch: said once the view is gone
    try:
        with _CtrlC() as ctrl_c, contextlib.ExitStack() as stack:
            draw = _watch_drawer(stack, view, fmt=fmt, mode=mode, every=every)
            try:
                while not ctrl_c.pressed:
                    if notes is not None:
                        notes.clear()  # each round its own
                    try:
                        report = collect()
                    except SourceUnavailable as exc:
                        if last is None:
                            ending = tuple(notes or ())  # the failure that ends the command may be why
                            raise
                        shown = time.strftime("%H:%M:%S", time.localtime(last.generated_at))
                        draw(last, failed=f"{time.strftime('%H:%M:%S')} round failed (last good round "
                                          f"{shown}, next try in {every:g}s): {exc.one_line()}",
                             notes=tuple(notes or ()))
                        ctrl_c.sleep(every)
                        continue
                    except BaseException:
                        ending = tuple(notes or ())  # a round that ends the watch (Ctrl-C, an error)
                        raise
                    with ctrl_c.held():  # a round is shown whole (a document never cut): Ctrl-C after it
                        draw(report, notes=tuple(notes or ()))
                        last, code = report, report.exit_code
                    release_frozen()  # last round's cyclic garbage, while we wait anyway
                    ctrl_c.sleep(every)
            except KeyboardInterrupt:
                if last is None:
                    raise  # no round shown: canceled, as a one-shot report is (130), never "all healthy"
                # Live restores the cursor on its way out; the last table stays on screen
    finally:
        # Here, after Live has stopped: written while it runs, its last redraw would erase them.
        _say_on_stderr(ending)
    return code


def _say_on_stderr(lines: Sequence[str] | None) -> None:
    """Lines of a round that no view shows, on stderr as a one-shot report says them."""
    from fleetctl.views.text import echo

    for line in lines or ():
        echo(f"fleetctl health: {line}", err=True)


def _watch_drawer(stack: contextlib.ExitStack, view: HealthView, *, fmt: OutputFormat, mode: str,
                  every: float) -> Drawer:
    """How one round is shown: a JSON document per line (YAML: one document each), the table redrawn
    in place on a terminal, or each round after a time-stamped line in a pipe. A failed round
    (``failed``: what to say) and the round's notes are lines on stderr beside documents, in the view
    beside a table."""
    from fleetctl.views.output import OutputFormat

    if fmt in (OutputFormat.yaml, OutputFormat.json):
        def document_round(report: FleetReport, failed: str | None = None, notes: Sequence[str] = ()) -> None:
            if failed is not None:  # stdout stays one document per round
                _say_on_stderr([*notes, failed])
                return
            _say_on_stderr(notes)
            if fmt is OutputFormat.yaml:
                print("---", flush=True)
            _show(report, view, fmt, mode, one_line=True)

        return document_round
    from fleetctl.views.health import live_drawer

    return live_drawer(stack, view, every=every,
                       body=None if mode == "table" else lambda r, w: _view_renderable(r, view, mode, w))


def _view_renderable(report: FleetReport, view: HealthView, mode: str, width: int | None) -> RenderableType:
    """--summary or --map for this round; ``width`` None: for a pipe."""
    hosts = _selected(report, view)
    if mode == "summary":
        from rich.console import Group

        from fleetctl.views.health import summary_line
        from fleetctl.views.summary import DEFAULT_KEY, render_summary

        key = view.group_by or DEFAULT_KEY
        return Group(summary_line(report), render_summary(hosts, key, wide=view.wide, width=width))
    from fleetctl.views.map import render_fleet_map

    return render_fleet_map(report, hosts, view.group_by, width=width)


class _CtrlC:
    """SIGINT raises KeyboardInterrupt as usual, and is also remembered.

    Python runs a signal handler between any two bytecodes, a finalizer's included, and there
    the KeyboardInterrupt is printed as "ignored" and lost: the watch would go on for ever. The
    flag ends it after the round in progress. (While a handler other than Python's default one is
    installed, asyncio.run raises KeyboardInterrupt through the loop instead of cancelling its task:
    either way the round's sockets are closed as its tasks are cancelled.)
    """

    def __init__(self) -> None:
        self.pressed = False
        self._holding = False
        self._deferred = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        self._previous = signal.getsignal(signal.SIGINT)
        if self._previous is not signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, a job): keep it so
            signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.pressed = True
        if self._holding and not self._deferred:
            self._deferred = True  # raised when the block ends (see held); a second Ctrl-C does not wait
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A first Ctrl-C in the block takes effect when it ends: a document written whole (a
        100,000-host one takes seconds), never cut where a log appending rounds would keep half."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._deferred:
            self._deferred = False
            raise KeyboardInterrupt

    def sleep(self, seconds: float) -> None:
        if not self.pressed:
            time.sleep(seconds)  # a SIGINT here raises in this frame: never lost
