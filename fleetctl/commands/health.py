"""``fleetctl health``: the fleet health table (direct fan-out to the agents, or via Prometheus)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetctl.commands import add
from fleetctl.commands.params import InventoryOpt

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetctl.report import FleetReport

SOURCES = ("agents", "prometheus")


def register(app: typer.Typer) -> None:
    add(app, "health", health)


def health(
    pattern: Annotated[str, typer.Argument(help="Ansible host pattern (gpu_nodes:&rack1, !h100-0003)")]
    = "all",
    inventory: InventoryOpt = None,
    chips: Annotated[bool, typer.Option("--chips", help="One row per chip")] = False,
    unhealthy: Annotated[bool, typer.Option("--unhealthy", help="Only what is wrong")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fleet report as JSON")] = False,
    watch: Annotated[float | None, typer.Option(
        "--watch", metavar="SECONDS", help="Redraw every SECONDS until Ctrl-C", min=0.1)] = None,
    sort: Annotated[str, typer.Option(
        "--sort", help="status (worst first), name, temp, util or age")] = "status",
    group_by: Annotated[str | None, typer.Option(
        "--group-by", metavar="GROUP",
        help="One table per value: 'group' (first inventory group), an inventory variable, "
             "or a group-name prefix such as 'rack'")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-host timeout, seconds", min=0.01)] = 5.0,
    deadline: Annotated[float, typer.Option("--deadline", help="Overall deadline, seconds", min=0.01)] = 30.0,
    concurrency: Annotated[int, typer.Option(
        "--concurrency", help="Requests being answered at once (hung hosts wait aside)", min=1)] = 512,
    source: Annotated[str, typer.Option("--source", help="agents (direct) or prometheus")] = "agents",
    prometheus_url: Annotated[str | None, typer.Option(
        "--prometheus-url", help="Prometheus base URL (default: $FLEETCTL_PROMETHEUS_URL)")] = None,
) -> int:
    """Ask every agent for its health and show the fleet, worst first.

    Exit 0 when every host is healthy, 1 when any is degraded, unhealthy, unknown or unreachable,
    2 on usage or configuration errors.
    """
    from fleetctl.report import SORT_KEYS
    from fleetctl.validation import one_of

    one_of("--sort", sort, SORT_KEYS)
    one_of("--source", source, SOURCES)
    collect = _collector(pattern, inventory, source, prometheus_url, timeout, deadline, concurrency)
    if watch is None:
        report = collect()
        _show(report, as_json=as_json, chips=chips, unhealthy=unhealthy, group_by=group_by, sort=sort)
        return report.exit_code
    return _watch(collect, watch, as_json=as_json, chips=chips, unhealthy=unhealthy, group_by=group_by,
                  sort=sort)


def _collector(pattern: str, inventory: str | None, source: str, prometheus_url: str | None,
               timeout: float, deadline: float, concurrency: int) -> Callable[[], FleetReport]:
    """Load the inventory once; return a function that takes one fresh fleet report."""
    from fleetctl.errors import UsageError
    from fleetctl.inventory import load_inventory

    inv = load_inventory(inventory)
    hosts = inv.select(pattern)
    if source == "prometheus":
        from fleetctl.promsource import ENV_URL, HttpPrometheus, prometheus_report

        url = prometheus_url or os.environ.get(ENV_URL)
        if not url:
            raise UsageError(f"--source prometheus needs --prometheus-url (or ${ENV_URL})")
        client = HttpPrometheus(url, timeout_s=timeout)

        def from_prometheus() -> FleetReport:
            return prometheus_report(hosts, client, inventory=inv.label, pattern=pattern, deadline_s=deadline)

        return from_prometheus

    from fleetctl.fanout import FanoutOptions, raise_fd_limit
    from fleetctl.report.build import agents_report

    # Hung hosts wait aside without a concurrency slot, but each holds a socket: up to every host.
    max_open = raise_fd_limit(min(max(concurrency, len(hosts)), 16384))
    options = FanoutOptions(timeout_s=timeout, deadline_s=deadline, concurrency=min(concurrency, max_open),
                            max_open=max_open)

    def from_agents() -> FleetReport:
        return agents_report(hosts, options, inventory=inv.label, pattern=pattern)

    return from_agents


def _show(report: FleetReport, *, as_json: bool, chips: bool, unhealthy: bool, group_by: str | None,
          sort: str) -> None:
    if as_json:
        from fleetctl.views.console import print_json  # without rich: --json stays light

        report.sort(sort)
        print_json(report.to_json_bytes())
        return
    from fleetctl.views.health import print_report

    print_report(report, chips=chips, unhealthy=unhealthy, group_by=group_by, sort=sort)


def _watch(collect: Callable[[], FleetReport], every: float, *, as_json: bool, chips: bool, unhealthy: bool,
           group_by: str | None, sort: str) -> int:
    """Redraw in place until Ctrl-C; the exit code is the last completed round's."""
    from fleetctl.speedups import release_frozen

    code = 0
    with _CtrlC() as ctrl_c, contextlib.ExitStack() as stack:
        draw = _watch_drawer(stack, as_json=as_json, chips=chips, unhealthy=unhealthy, group_by=group_by,
                             sort=sort, every=every)
        try:
            while not ctrl_c.pressed:
                report = collect()
                code = report.exit_code
                draw(report)
                release_frozen()  # last round's cyclic garbage, while we wait anyway
                ctrl_c.sleep(every)
        except KeyboardInterrupt:
            pass  # Live restores the cursor on its way out; the last table stays on screen
    return code


def _watch_drawer(stack: contextlib.ExitStack, *, as_json: bool, chips: bool, unhealthy: bool,
                  group_by: str | None, sort: str, every: float) -> Callable[[FleetReport], None]:
    """How one round is shown: a JSON document per line, or a table redrawn in place."""
    if as_json:
        return lambda report: _show(report, as_json=True, chips=chips, unhealthy=unhealthy,
                                    group_by=group_by, sort=sort)
    from fleetctl.views.health import live_drawer

    return live_drawer(stack, chips=chips, unhealthy=unhealthy, group_by=group_by, sort=sort, every=every)


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
        raise KeyboardInterrupt

    def sleep(self, seconds: float) -> None:
        if not self.pressed:
            time.sleep(seconds)  # a SIGINT here raises in this frame: never lost
