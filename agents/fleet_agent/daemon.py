"""``fleet-agent run``: one agent — one sampler, one HTTP server — until SIGTERM or SIGINT.

The parts here (:func:`build_agent`, :meth:`AgentRuntime.sample`, :func:`serve_until_stopped`,
:func:`close_within`) are also what ``sim-fleet`` assembles N agents from (``fleet_agent.sim.fleet``).
Chips come from this host's own collectors, or from a :class:`ChipSource` the caller hands in (the
CLI passes a simulated host when the config has a ``simulation:`` section); this module knows
nothing about simulation and imports nothing from ``fleet_agent.sim``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fleet_agent.collectors.base import ChipCollector
from fleet_agent.collectors.factory import real_collectors, real_host_source
from fleet_agent.config import AgentConfig, ConfigError
from fleet_agent.health.assess import assess
from fleet_agent.health.checks import CHECK_NAMES
from fleet_agent.health.config import health_config_from_dict
from fleet_agent.metrics import MetricsRenderer
from fleet_agent.sampler import AssessFn, DaemonThreadPool, HostSource, Sampler
from fleet_agent.schema import NodeReport
from fleet_agent.server import (
    BACKLOG,
    AgentHttp,
    AgentState,
    ConnectionLimiter,
    Lazy,
    bound_port,
    render_json,
    render_summary_json,
    start_server,
)

CLOSE_TIMEOUT_S = 3.0
# Open files kept out of the connection cap: the agent's own (listening socket, event loop,
# collectors, kernel log, state files) and the accepted connections asyncio holds before the limiter
# has made room for them. Under a flood that is several turns' worth: a turn accepts up to BACKLOG,
# the next makes their transports, the one after admits them (evicting others), and the evicted
# connections' files close a turn later still, while every turn accepts BACKLOG more.
RESERVED_FDS = 64 + 4 * BACKLOG

XidEvents = Literal["thread", "poll", "off"]
# The collector (as the config's ``collectors:`` names it) that reads each chip kind.
_COLLECTOR_OF_KIND = {"gpu": "nvml", "tpu": "tpu"}


class ChipSource(Protocol):
    """Chips that are not this host's own: one simulated host, with one chip kind."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...  # "gpu" | "tpu"

    @property
    def group(self) -> str | None: ...

    @property
    def chips_expected(self) -> int | None: ...

    def collector(self, *, xid_events: XidEvents = ...) -> ChipCollector:
        """The real collector for this chip kind, reading through the source's stand-ins."""
        ...

    def release_hangs(self) -> None:
        """Let calls the source holds hung return, so that worker threads can exit."""
        ...


@dataclass
class AgentRuntime:
    """One agent: its sampler, what it serves, and (once listening) its port."""

    name: str
    sampler: Sampler
    state: AgentState
    http: AgentHttp
    lazy_metrics: bool = False
    group: str | None = None
    kind: str | None = None
    port: int = 0
    server: asyncio.Server | None = None
    renderer: MetricsRenderer | None = None
    chips: ChipSource | None = None
    last_report: NodeReport | None = field(default=None, repr=False)

    def sample_and_render(self) -> tuple[NodeReport, bytes, Lazy, Lazy]:
        """Runs in a worker thread: one sample, rendered to the bytes the server answers with (the
        whole report, the metrics, the summary view); under sim-fleet (``lazy_metrics``: most of its
        hosts are never asked) the last two on first use instead."""
        report = self.sampler.sample_once()
        body = render_json(report)
        if self.renderer is None:
            self.renderer = MetricsRenderer()
        renderer = self.renderer
        if self.lazy_metrics:
            return report, body, lambda: renderer.render(report), lambda: render_summary_json(report)
        return report, body, renderer.render(report), render_summary_json(report)

    async def sample(self, pool: cf.Executor) -> None:
        """One sample on ``pool``, published to the server; a failure is logged, never raised."""
        loop = asyncio.get_running_loop()
        try:
            report, body, metrics, summary = await loop.run_in_executor(pool, self.sample_and_render)
        except Exception as exc:  # noqa: BLE001 - a bug in one sample must not stop the loop
            print(f"fleet-agent: {self.name}: sample failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            self.last_report = report
            self.state.publish(body, metrics, summary)


# --- building an agent ---------------------------------------------------------------------------


def health_assessor(cfg: AgentConfig) -> AssessFn:
    """``assess`` bound to the config's thresholds; a bad ``health:`` section is a ConfigError."""
    doc = dict(cfg.health)
    # One XID window: the one the collector counts over (xid.window_s) is the one rules describe.
    doc.setdefault("xid_window_s", cfg.xid.window_s)
    try:
        health = health_config_from_dict(doc, known_checks=CHECK_NAMES)
    except ValueError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None

    def run(report: NodeReport, now: float) -> NodeReport:
        return assess(report, health, now)

    return run


def chip_collectors(cfg: AgentConfig, chips: ChipSource | None = None, *,
                    xid_events: XidEvents = "thread", one_shot: bool = False) -> list[ChipCollector]:
    """The chip collectors the config asks for: this host's, or ``chips``' when given.
    ``one_shot``: a command beside the service (`once`, `check`) that must leave its state alone."""
    if chips is None:
        return real_collectors(cfg, one_shot=one_shot)
    if cfg.collectors is not None and _COLLECTOR_OF_KIND.get(chips.kind) not in cfg.collectors:
        return []
    return [chips.collector(xid_events=xid_events)]


def build_agent(
    cfg: AgentConfig,
    *,
    executor: cf.Executor,
    chips: ChipSource | None = None,
    host_source: HostSource | None = None,
    limiter: ConnectionLimiter | None = None,
    lazy_metrics: bool = False,
    interval_s: float | None = None,
    xid_events: XidEvents = "thread",
    one_shot: bool = False,
) -> AgentRuntime:
    """One agent over this host's chips (or ``chips``), its collector calls run on ``executor``."""
    interval = interval_s or cfg.interval_s
    name = chips.name if chips is not None else (cfg.hostname or socket.gethostname())
    expected = cfg.expected_chips
    if expected is None and chips is not None:
        expected = chips.chips_expected
    wanted_host = cfg.collectors is None or "host" in cfg.collectors
    sampler = Sampler(
        hostname=name,
        collectors=chip_collectors(cfg, chips, xid_events=xid_events, one_shot=one_shot),
        host=(host_source or real_host_source()) if wanted_host else None,
        assess=health_assessor(cfg),
        executor=executor,
        timeout_s=cfg.collector_timeout_s,
        interval_s=interval,
        expected_chips=expected,
        drained_file=cfg.drained_file,
    )
    state = AgentState(interval)
    http = AgentHttp(state, token=cfg.token, request_timeout_s=cfg.request_timeout_s,
                     limiter=limiter or ConnectionLimiter(cfg.max_connections))
    return AgentRuntime(name=name, sampler=sampler, state=state, http=http, lazy_metrics=lazy_metrics,
                        group=chips.group if chips is not None else None,
                        kind=chips.kind if chips is not None else None, chips=chips)


# --- running agents ------------------------------------------------------------------------------


async def listen(rt: AgentRuntime, address: str, port: int) -> None:
    """Start ``rt``'s server on ``address:port``; a port that cannot be had is a ConfigError."""
    try:
        rt.server = await start_server(rt.http, address, port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {address}:{port}: {reason}") from None
    rt.port = bound_port(rt.server)


async def sample_forever(rt: AgentRuntime, interval_s: float, pool: cf.Executor,
                         first_round: asyncio.Event) -> None:
    """Sample ``rt`` every ``interval_s`` (start to start; at once when a sample overran)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await rt.sample(pool)
        first_round.set()
        await asyncio.sleep(max(0.0, started + interval_s - loop.time()))


async def serve_until_stopped(runtimes: Sequence[AgentRuntime], address: str, ports: Sequence[int],
                              sampling: Callable[[], Coroutine[Any, Any, None]], first_round: asyncio.Event,
                              on_ready: Callable[[], None]) -> None:
    """Listen (``runtimes[i]`` on ``ports[i]``), run ``sampling`` until SIGTERM or SIGINT, calling
    ``on_ready`` once ``first_round`` is set (every agent has something to serve); then close."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for rt, port in zip(runtimes, ports, strict=True):
            await listen(rt, address, port)
        sampler_task = asyncio.create_task(sampling())
        first = asyncio.create_task(first_round.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            on_ready()
            await stopped
        first.cancel()
        sampler_task.cancel()
    finally:
        for rt in runtimes:
            if rt.server is not None:
                rt.server.close()
            if rt.chips is not None:
                rt.chips.release_hangs()  # let hung calls return: their threads can exit
        # Open keep-alive connections would outlive the loop (unclosed at exit): end them, and let
        # the loop turn once so that each is closed.
        for limiter in {id(rt.http.limiter): rt.http.limiter for rt in runtimes}.values():
            limiter.abort_all()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        close_within(runtimes, CLOSE_TIMEOUT_S)


def fit_connection_cap(requested: int, *, reserved: int = RESERVED_FDS) -> tuple[int, str | None]:
    """The connection cap the open-file limit allows for ``requested`` connections, raising the
    soft limit towards the hard one as far as needed; and a line to print when it is less."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = requested + reserved
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= need:
        return requested, None
    cap = max(1, soft - reserved)
    return cap, (f"fleet-agent: max_connections {requested} does not fit the open-file limit ({soft}, "
                 f"{reserved} kept for the agent's own files): serving at most {cap} connections "
                 f"(raise LimitNOFILE for more)")


def close_within(runtimes: Sequence[AgentRuntime], timeout_s: float) -> None:
    """Close every sampler's collectors, but give up after ``timeout_s``: nvmlShutdown can block
    behind a call hung in the driver, and a stopping agent must still stop."""

    def close_all() -> None:
        for rt in runtimes:
            rt.sampler.close()

    closer = threading.Thread(target=close_all, name="close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
        print("fleet-agent: collectors did not close in time (a call hung in the driver?); exiting anyway",
              file=sys.stderr)


def shutdown_pools(*pools: cf.Executor) -> None:
    for pool in pools:
        # Hung collector calls may never return: do not wait for them on the way out.
        pool.shutdown(wait=False, cancel_futures=True)


def run_agent(cfg: AgentConfig, chips: ChipSource | None = None) -> int:
    """``fleet-agent run``: one agent on this host (or over ``chips``) until stopped."""
    cap, cap_notice = fit_connection_cap(cfg.max_connections)
    if cap_notice:
        print(cap_notice, file=sys.stderr, flush=True)
    call_pool = DaemonThreadPool(32, "collector")
    sample_pool = DaemonThreadPool(1, "sampler")
    rt = build_agent(cfg, executor=call_pool, chips=chips, limiter=ConnectionLimiter(cap))
    if cfg.hostname and chips is not None:
        rt.name = rt.sampler.hostname = cfg.hostname
    first_round = asyncio.Event()

    def ready() -> None:
        print(f"fleet-agent: serving {rt.name} on http://{cfg.listen_address}:{rt.port} "
              f"(interval {cfg.interval_s:g}s)", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve_until_stopped(
            [rt], cfg.listen_address, [cfg.port],
            lambda: sample_forever(rt, cfg.interval_s, sample_pool, first_round), first_round, ready))
    finally:
        shutdown_pools(call_pool, sample_pool)
    return 0
