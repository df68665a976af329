"""``fleet-agent sim-fleet``: N agents over simulated hosts in one asyncio process, built from the
daemon's parts (``fleet_agent.daemon``), each listening on its own port.

Sampling is the cost, so :class:`SampleScheduler` samples hosts in worker threads, a bounded number
at a time, each host every ``interval_s``; after the first round (as fast as possible, so every host
has a report when ``ready`` is printed) hosts stay staggered by the order in which they finished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import heapq
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fleet_agent.collectors.factory import real_host_source
from fleet_agent.config import AgentConfig, ConfigError
from fleet_agent.daemon import AgentRuntime, build_agent, serve_until_stopped, shutdown_pools
from fleet_agent.sampler import DaemonThreadPool, HostSource
from fleet_agent.schema import HostMetrics
from fleet_agent.server import ConnectionLimiter
from fleet_agent.sim.inventory import write_inventory
from fleet_agent.sim.lookup import load_scenario_or_fail
from fleet_agent.sim.resets import RESETS_DIR, ResetLog, state_dir_for, write_start

# Collector calls of all agents in the process share one pool. A hung call holds its thread until
# it returns, and the sampler keeps at most one call in flight per chip, so this caps the threads
# a pathological fleet can pile up; threads are only created when needed.
CALL_POOL_MAX = 1024


class SharedHostMetrics:
    """The real host's basics, sampled at most once per ``max_age_s`` for every simulated agent
    (they all run on this one machine; one psutil reading per agent per round would be waste)."""

    def __init__(self, source: HostSource, max_age_s: float) -> None:
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


class SampleScheduler:
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
        started = loop.time()
        try:
            await self.runtimes[i].sample(self.host_pool)
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
    grows with the fleet, so that sampling the whole fleet stays within a fraction of one core."""
    if requested is not None:
        return requested
    return max(base, n_hosts / 200.0)


def run_sim_fleet(cfg: AgentConfig, *, scenario: str, hosts: int, base_port: int,
                  interval_s: float | None, inventory: str | None) -> int:
    """``fleet-agent sim-fleet``: ``hosts`` agents over ``scenario`` on consecutive ports."""
    if hosts < 1:
        raise ConfigError("--hosts: expected a positive integer")
    if not 1 <= base_port or base_port + hosts - 1 > 65535:
        raise ConfigError(f"--base-port: ports {base_port}..{base_port + hosts - 1} are out of range")
    _check_fd_budget(hosts)
    scen = load_scenario_or_fail(scenario, hosts)
    state_dir: str | None = None
    if inventory is not None:
        # Beside the inventory: the scenario's start and the GPU resets the stand-ins it names record
        # (a previous fleet's resets, on its own clock, are gone).
        state = state_dir_for(Path(inventory).absolute())
        shutil.rmtree(state / RESETS_DIR, ignore_errors=True)
        write_start(state, scen.start)
        scen = scen.sharing(ResetLog(state))
        state_dir = str(state)
    interval = fleet_interval(hosts, interval_s, cfg.interval_s)
    call_pool = DaemonThreadPool(CALL_POOL_MAX, "collector")
    concurrency = max(1, min(8, hosts))
    sample_pool = DaemonThreadPool(concurrency, "sampler")
    limiter = ConnectionLimiter(_connection_budget(hosts))  # shared: the budget is the process's
    shared_host = SharedHostMetrics(real_host_source(), max_age_s=min(interval, 5.0))
    runtimes = [
        build_agent(cfg, executor=call_pool, chips=scen.host(i), host_source=shared_host,
                    limiter=limiter, lazy_metrics=True, interval_s=interval, xid_events="poll")
        for i in range(hosts)
    ]
    scheduler = SampleScheduler(runtimes, interval, sample_pool, concurrency,
                                busy=lambda: limiter.active > 0)

    def ready() -> None:
        # Thousands of agents' state lives as long as the process: out of the cyclic collector's
        # sight, its full passes (a second of CPU at 10,000 agents, landing in a measurement now and
        # then) walk only what changed since.
        gc.freeze()
        if inventory is not None:
            write_inventory(inventory, runtimes, token=cfg.token, scenario=str(scen.path),
                            state_dir=state_dir)
        print(f"ready: {hosts} agents on {cfg.listen_address}:{base_port}-{base_port + hosts - 1}",
              flush=True)

    try:
        asyncio.run(serve_until_stopped(runtimes, cfg.listen_address, range(base_port, base_port + hosts),
                                        scheduler.run, scheduler.first_round, ready))
    finally:
        shutdown_pools(call_pool, sample_pool)
    return 0


def _fd_limit() -> int:
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
