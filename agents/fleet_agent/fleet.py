"""Agents in one asyncio process: ``fleet-agent run`` (one, on this host) and ``sim-fleet`` (N, over
simulated chips), sharing one scheduler.

Per agent: a :class:`~fleet_agent.sampler.Sampler`, the bytes it serves
(:class:`~fleet_agent.server.AgentState`) and a listening socket. Sampling is the cost, so the
scheduler samples hosts in worker threads, a bounded number at a time, each host every
``interval_s``; after the first round (as fast as possible, so every host has a report when
``ready`` is printed) hosts stay staggered by the order in which they finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import heapq
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_agent.config import AgentConfig, ConfigError
from fleet_agent.schema import HostMetrics, NodeReport
from fleet_agent.server import AgentHttp, AgentState, ConnectionLimiter, bound_port, render_json, start_server

# Collector calls of all agents in the process share one pool. A hung call holds its thread until
# it returns, and the sampler keeps at most one call in flight per chip, so this caps the threads
# a pathological fleet can pile up; threads are only created when needed.
CALL_POOL_MAX = 1024
CLOSE_TIMEOUT_S = 3.0


@dataclass
class AgentRuntime:
    """One agent: its sampler, what it serves, and (once listening) its port."""

    name: str
    sampler: Any  # fleet_agent.sampler.Sampler (imported lazily: `--help` stays fast)
    state: AgentState
    http: AgentHttp
    lazy_metrics: bool = False
    group: str | None = None
    kind: str | None = None
    port: int = 0
    server: asyncio.Server | None = None
    renderer: Any = None
    host_sim: Any = None
    last_report: NodeReport | None = field(default=None, repr=False)

    def sample_and_render(self) -> tuple[NodeReport, bytes, bytes | Callable[[], bytes]]:
        """Runs in a worker thread: one sample, rendered to the bytes the server answers with."""
        from fleet_agent.metrics import MetricsRenderer

        report = self.sampler.sample_once()
        body = render_json(report)
        if self.renderer is None:
            self.renderer = MetricsRenderer()
        renderer = self.renderer
        metrics: bytes | Callable[[], bytes]
        metrics = (lambda: renderer.render(report)) if self.lazy_metrics else renderer.render(report)
        return report, body, metrics


class SharedHostMetrics:
    """The real host's basics, sampled at most once per ``max_age_s`` for every simulated agent
    (they all run on this one machine; 10,000 psutil readings per round would be waste)."""

    def __init__(self, source: Any, max_age_s: float) -> None:
        self.source = source
        self.max_age_s = max_age_s
        self._value: HostMetrics | None = None
        self._at = 0.0

    def collect(self) -> HostMetrics:
        now = time.monotonic()
        if self._value is None or now - self._at > self.max_age_s:
            self._value = self.source.collect()
            self._at = now
        return self._value


# --- building agents ---------------------------------------------------------------------------


def health_assessor(cfg: AgentConfig) -> Callable[[NodeReport, float], NodeReport]:
    """``assess`` bound to the config's thresholds; a bad ``health:`` section is a ConfigError."""
    from fleet_agent.health import assess, health_config_from_dict

    doc = dict(cfg.health)
    # One XID window: the one the collector counts over (xid.window_s) is the one rules describe.
    doc.setdefault("xid_window_s", cfg.xid.window_s)
    try:
        health = health_config_from_dict(doc)
    except ValueError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None

    def run(report: NodeReport, now: float) -> NodeReport:
        return assess(report, health, now)

    return run


def build_collectors(cfg: AgentConfig, host_sim: Any = None, *, xid_events: str = "thread") -> list[Any]:
    """The chip collectors the config asks for, over the simulation when ``host_sim`` is given.

    A simulated host has one chip kind; its collector is the real one reading through the fakes.
    """
    if host_sim is not None:
        wanted = cfg.collectors
        if wanted is not None and host_sim.kind == "gpu" and "nvml" not in wanted:
            return []
        if wanted is not None and host_sim.kind == "tpu" and "tpu" not in wanted:
            return []
        return [host_sim.collector(xid_events=xid_events)]
    return real_collectors(cfg)


def real_collectors(cfg: AgentConfig) -> list[Any]:
    """This host's collectors: those the config lists, or (``auto``) those whose hardware or
    library is present. A listed collector that cannot even be built still appears, failing its
    discover with the reason, so the report says why there are no chips."""
    from fleet_agent.collectors.base import CollectorError

    wanted = cfg.collectors
    out: list[Any] = []
    if (wanted is None and _nvml_present()) or (wanted is not None and "nvml" in wanted):
        from fleet_agent.collectors.nvml import NvmlCollector

        try:
            out.append(NvmlCollector.real(kernel_log=cfg.xid.kmsg_path if cfg.xid.kernel_log else None,
                                          xid_window_s=cfg.xid.window_s))
        except CollectorError as exc:
            out.append(UnavailableCollector("nvml", str(exc)))
    if (wanted is None and _tpu_present()) or (wanted is not None and "tpu" in wanted):
        from fleet_agent.collectors.tpu import TpuCollector

        try:
            out.append(TpuCollector.real())
        except CollectorError as exc:
            out.append(UnavailableCollector("tpu", str(exc)))
    return out


def _nvml_present() -> bool:
    """An NVIDIA driver or its NVML library is installed (loaded or not: "Driver Not Loaded" is
    worth reporting)."""
    import ctypes.util

    return os.path.exists("/dev/nvidiactl") or ctypes.util.find_library("nvidia-ml") is not None


def _tpu_present() -> bool:
    from fleet_agent.collectors.tpu import SysfsTpuPresence

    return bool(SysfsTpuPresence().scan())


class UnavailableCollector:
    """Stands in for a collector that could not be built; every discover says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def discover(self) -> list[Any]:
        from fleet_agent.collectors.base import CollectorError

        raise CollectorError(self.reason)

    def sample_chip(self, chip: Any) -> Any:
        from fleet_agent.collectors.base import CollectorError

        raise CollectorError(self.reason)

    def driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def real_host_source(cfg: AgentConfig) -> Any:
    from fleet_agent.collectors.host import HostCollector

    return HostCollector()


def build_runtime(
    cfg: AgentConfig,
    *,
    executor: cf.Executor,
    host_sim: Any = None,
    host_source: Any = None,
    limiter: ConnectionLimiter | None = None,
    lazy_metrics: bool = False,
    interval_s: float | None = None,
    xid_events: str = "thread",
) -> AgentRuntime:
    from fleet_agent.sampler import Sampler

    interval = interval_s or cfg.interval_s
    name = host_sim.name if host_sim is not None else (cfg.hostname or socket.gethostname())
    collectors = build_collectors(cfg, host_sim, xid_events=xid_events)
    expected = cfg.expected_chips
    if expected is None and host_sim is not None:
        expected = expected_chips_of(host_sim)
    wanted_host = cfg.collectors is None or "host" in cfg.collectors
    sampler = Sampler(
        hostname=name,
        collectors=collectors,
        host=(host_source or real_host_source(cfg)) if wanted_host else None,
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
                        group=getattr(host_sim, "group", None), kind=getattr(host_sim, "kind", None),
                        host_sim=host_sim)


def expected_chips_of(host_sim: Any) -> int | None:
    value = getattr(host_sim, "chips_expected", None)
    return value if isinstance(value, int) else None


# --- scheduling ----------------------------------------------------------------------------------


class Scheduler:
    """Samples every runtime every ``interval_s``, at most ``concurrency`` at a time."""

    def __init__(self, runtimes: Sequence[AgentRuntime], interval_s: float, host_pool: cf.Executor,
                 concurrency: int, busy: Callable[[], bool] | None = None) -> None:
        self.runtimes = list(runtimes)
        # While ``busy()`` (requests being served), a due sample waits, by at most half an interval:
        # samplers hold the GIL, and a fleet-wide fan-out should not queue behind them. Reports stay
        # well inside the staleness and liveness limits (3 intervals).
        self.busy = busy
        self.max_defer_s = interval_s / 2
        self.interval_s = interval_s
        self.host_pool = host_pool
        self.concurrency = concurrency
        self.first_round = asyncio.Event()
        self._busy: set[int] = set()
        self._pending_first = len(self.runtimes)

    async def _one(self, i: int, sem: asyncio.Semaphore, due: list[tuple[float, int]]) -> None:
        loop = asyncio.get_running_loop()
        rt = self.runtimes[i]
        started = loop.time()
        try:
            report, body, metrics = await loop.run_in_executor(self.host_pool, rt.sample_and_render)
        except Exception as exc:  # noqa: BLE001 - a bug in one sample must not stop the loop
            print(f"fleet-agent: {rt.name}: sample failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            rt.last_report = report
            rt.state.publish(body, metrics)
        finally:
            sem.release()
            self._busy.discard(i)
            # Keep the cadence (start to start), unless the sample overran its interval.
            heapq.heappush(due, (max(started + self.interval_s, loop.time()), i))
            if self._pending_first > 0:
                self._pending_first -= 1
                if self._pending_first == 0:
                    self.first_round.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.concurrency)
        # First round: everyone now, as fast as the pool allows.
        due: list[tuple[float, int]] = [(loop.time(), i) for i in range(len(self.runtimes))]
        heapq.heapify(due)
        tasks: set[asyncio.Task[None]] = set()
        if not self.runtimes:
            self.first_round.set()
        while True:
            if not due:
                await asyncio.sleep(min(1.0, self.interval_s))
                continue
            when, i = due[0]
            delay = when - loop.time()
            if delay > 0:
                await asyncio.sleep(min(delay, 1.0))
                continue
            if (self.busy is not None and self._pending_first <= 0 and -delay < self.max_defer_s
                    and self.busy()):
                await asyncio.sleep(0.05)
                continue
            heapq.heappop(due)
            if i in self._busy:
                continue
            await sem.acquire()
            self._busy.add(i)
            task = asyncio.create_task(self._one(i, sem, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def fleet_interval(n_hosts: int, requested: float | None, base: float) -> float:
    """The sampling interval for ``n_hosts`` simulated hosts: what was asked for, else one that
    grows with the fleet: a host sample costs about 1.5 ms of CPU, so 200 hosts a second keep
    the sampler within a third of one core."""
    if requested is not None:
        return requested
    return max(base, n_hosts / 200.0)


# --- the two entry points ------------------------------------------------------------------------


async def _serve_until_stopped(runtimes: list[AgentRuntime], cfg: AgentConfig, interval: float,
                               host_pool: cf.Executor, concurrency: int,
                               on_ready: Callable[[list[AgentRuntime]], None],
                               base_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[asyncio.Server] = []
    try:
        for i, rt in enumerate(runtimes):
            port = cfg.port if base_port is None else base_port + i
            try:
                rt.server = await start_server(rt.http, cfg.listen_address, port)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ConfigError(f"cannot listen on {cfg.listen_address}:{port}: {reason}") from None
            rt.port = bound_port(rt.server)
            servers.append(rt.server)
        limiter = runtimes[0].http.limiter if len(runtimes) > 1 else None  # sim-fleet shares one
        scheduler = Scheduler(runtimes, interval, host_pool, concurrency,
                              busy=(lambda: limiter.active > 0) if limiter is not None else None)
        sched_task = asyncio.create_task(scheduler.run())
        first = asyncio.create_task(scheduler.first_round.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({first, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if first.done():
            on_ready(runtimes)
            await stopped
        first.cancel()
        sched_task.cancel()
    finally:
        for s in servers:
            s.close()
        for rt in runtimes:
            if rt.host_sim is not None:
                rt.host_sim.release_hangs()  # let simulated hung calls return: threads can exit
        close_within(runtimes, CLOSE_TIMEOUT_S)


def close_within(runtimes: Sequence[AgentRuntime], timeout_s: float) -> None:
    """Close every sampler's collectors, but give up after ``timeout_s``: nvmlShutdown can block
    behind a call hung in the driver, and a stopping agent must still stop."""
    import threading

    def close_all() -> None:
        for rt in runtimes:
            rt.sampler.close()

    closer = threading.Thread(target=close_all, name="close", daemon=True)
    closer.start()
    closer.join(timeout_s)
    if closer.is_alive():
        print("fleet-agent: collectors did not close in time (a call hung in the driver?); exiting anyway",
              file=sys.stderr)


def run_agent(cfg: AgentConfig) -> int:
    """``fleet-agent run``: one agent on this host (or over the config's simulation)."""
    from fleet_agent.sampler import DaemonThreadPool

    call_pool = DaemonThreadPool(32, "collector")
    host_pool = DaemonThreadPool(1, "sampler")
    host_sim = None
    if cfg.simulation is not None:
        host_sim = load_host_sim(cfg.simulation.scenario, cfg.simulation.host_index, cfg.source)
    rt = build_runtime(cfg, executor=call_pool, host_sim=host_sim)
    if cfg.hostname and host_sim is not None:
        rt.name = rt.sampler.hostname = cfg.hostname

    def ready(runtimes: list[AgentRuntime]) -> None:
        print(f"fleet-agent: serving {rt.name} on http://{cfg.listen_address}:{rt.port} "
              f"(interval {cfg.interval_s:g}s)", file=sys.stderr, flush=True)

    try:
        asyncio.run(_serve_until_stopped([rt], cfg, cfg.interval_s, host_pool, 1, ready, None))
    finally:
        _shutdown_pools(call_pool, host_pool)
    return 0


def load_host_sim(scenario: str, index: int, source: str) -> Any:
    scen = load_scenario_or_fail(scenario)
    if not 0 <= index < len(scen):
        raise ConfigError(f"{source}: simulation.host_index: {index} is outside the scenario's "
                          f"{len(scen)} hosts")
    return scen.host(index)


def load_scenario_or_fail(path: str, hosts: int | None = None) -> Any:
    from fleet_agent.sim import load_scenario

    try:
        return load_scenario(path, hosts=hosts)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file's path: the file itself, or a shipped scenario of that name (``demo``)."""
    path = Path(name_or_path)
    if path.exists() or "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return path
    from fleet_agent.sim.scenario import ScenarioError, builtin_scenario

    try:
        return builtin_scenario(name_or_path)
    except ScenarioError:
        shipped = sorted(p.stem for p in builtin_scenario("demo").parent.glob("*.yaml"))
        raise ConfigError(f"--scenario: {name_or_path}: no such file, nor a shipped scenario "
                          f"({', '.join(shipped)})") from None


def _shutdown_pools(*pools: cf.Executor) -> None:
    for pool in pools:
        # Hung collector calls may never return: do not wait for them on the way out.
        pool.shutdown(wait=False, cancel_futures=True)


def run_sim_fleet(cfg: AgentConfig, *, scenario: str, hosts: int, base_port: int,
                  interval_s: float | None, inventory: str | None) -> int:
    """``fleet-agent sim-fleet``: ``hosts`` agents over ``scenario`` on consecutive ports."""
    if hosts < 1:
        raise ConfigError("--hosts: expected a positive integer")
    if not 1 <= base_port or base_port + hosts - 1 > 65535:
        raise ConfigError(f"--base-port: ports {base_port}..{base_port + hosts - 1} are out of range")
    _check_fd_budget(hosts)
    scen = load_scenario_or_fail(scenario, hosts)
    interval = fleet_interval(hosts, interval_s, cfg.interval_s)
    from fleet_agent.sampler import DaemonThreadPool

    call_pool = DaemonThreadPool(CALL_POOL_MAX, "collector")
    concurrency = max(1, min(8, hosts))
    host_pool = DaemonThreadPool(concurrency, "sampler")
    limiter = ConnectionLimiter(_connection_budget(hosts))
    shared_host = SharedHostMetrics(real_host_source(cfg), max_age_s=min(interval, 5.0))
    runtimes = [
        build_runtime(cfg, executor=call_pool, host_sim=scen.host(i), host_source=shared_host,
                      limiter=limiter, lazy_metrics=True, interval_s=interval, xid_events="poll")
        for i in range(hosts)
    ]

    def ready(rts: list[AgentRuntime]) -> None:
        if inventory is not None:
            write_inventory(inventory, rts, token=cfg.token)
        print(f"ready: {hosts} agents on {cfg.listen_address}:{base_port}-{base_port + hosts - 1}",
              flush=True)

    try:
        asyncio.run(_serve_until_stopped(runtimes, cfg, interval, host_pool, concurrency, ready, base_port))
    finally:
        _shutdown_pools(call_pool, host_pool)
    return 0


def _fd_limit() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        # Raise the soft limit to the hard one: listening sockets are what a big fleet needs.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def _check_fd_budget(hosts: int) -> None:
    limit = _fd_limit()
    if hosts + 256 > limit:
        raise ConfigError(f"--hosts: {hosts} listening sockets do not fit the open-file limit "
                          f"({limit}); at most {limit - 256}")


def _connection_budget(hosts: int) -> int:
    # Whatever the listening sockets and the process itself leave of the open-file limit.
    return max(16, min(4096, _fd_limit() - hosts - 128))


# --- inventory -----------------------------------------------------------------------------------


def inventory_doc(runtimes: Sequence[AgentRuntime], *, token: str | None = None) -> dict[str, Any]:
    """An Ansible YAML inventory of the simulated hosts (host vars once, under ``all.hosts``).

    With ``token`` the fleet's bearer token goes in ``all.vars.fleet_agent_token`` so that
    ``fleetctl health`` on this inventory authenticates (the file is then written 0600).
    """
    hosts: dict[str, Any] = {}
    groups: dict[str, dict[str, None]] = {}
    for rt in runtimes:
        hv: dict[str, Any] = {"ansible_host": "127.0.0.1", "fleet_agent_port": rt.port}
        if rt.sampler.expected_chips is not None:
            hv["fleet_agent_expected_chips"] = rt.sampler.expected_chips
        hosts[rt.name] = hv
        names = [rt.group] if rt.group else []
        if rt.kind in ("gpu", "tpu"):
            names.append(f"{rt.kind}_nodes")
        for g in names:
            groups.setdefault(_group_name(g), {})[rt.name] = None
    doc: dict[str, Any] = {"all": {"hosts": hosts}}
    if token:
        doc["all"]["vars"] = {"fleet_agent_token": token}
    if groups:
        doc["all"]["children"] = {g: {"hosts": members} for g, members in sorted(groups.items())}
    return doc


def _group_name(name: str) -> str:
    # Ansible group names: letters, digits and underscores.
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def write_inventory(path: str, runtimes: Sequence[AgentRuntime], *, token: str | None = None) -> None:
    import yaml

    doc = inventory_doc(runtimes, token=token)
    text = "# written by fleet-agent sim-fleet\n" + yaml.safe_dump(doc, sort_keys=False)
    atomic_write(path, text, mode=0o600 if token else 0o644)


def atomic_write(path: str, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half of it."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
