"""One sample of a node: every collector call in a worker thread, each under a deadline.

A GPU in a bad state can make NVML block for minutes. The sampler never waits longer than
``timeout_s`` for one call: a call that misses its deadline leaves its chip ``unknown`` and
``stale`` with an error saying so, and is *not* issued again while it is still running (one call in
flight per chip, so hung calls cannot pile threads up). When it finally returns, its late answer is
dropped and the next sample asks afresh, so the chip recovers by itself.

Every time in a report is the wall clock read once, at the start of the sample, plus monotonic
seconds from then: a chip's reading is stamped when its answer came, and a stale chip with the time
of its last good reading as the monotonic clock counted it. A step of the wall clock (an NTP
correction, a resumed VM) between or during samples therefore changes no age the checks compute.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fleet_agent import __version__
from fleet_agent.collectors.base import ChipCollector, ChipIdentity, CollectorError
from fleet_agent.schema import ChipReport, CollectorState, HostMetrics, NodeReport, Status

log = logging.getLogger(__name__)

# How a collector's name reads in an error message shown to on-call.
_DISPLAY = {"nvml": "NVML", "tpu": "TPU runtime", "host": "host"}

AssessFn = Callable[[NodeReport, float], NodeReport]

# How a collector state says its call missed the deadline (see timed_out).
TIMED_OUT = "call timed out after"


def timed_out(state: CollectorState) -> bool:
    """Whether a collector's call hung past its deadline this sample (not: failed with an error)."""
    return not state.ok and state.error is not None and TIMED_OUT in state.error


class HostSource(Protocol):
    """Host basics (CPU, memory, load, uptime, hwmon); the host collector's interface."""

    def collect(self) -> HostMetrics:
        ...


def display_name(collector: str) -> str:
    return _DISPLAY.get(collector, collector)


def describe_error(collector: str, exc: BaseException) -> str:
    """One line for a failed call; a collector's own message already names its source."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, CollectorError):
        return text
    return f"{display_name(collector)}: {type(exc).__name__}: {text}"


class _TimedOut(Exception):
    """The call missed its deadline (it may still be running in its thread)."""


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class CallGuard:
    """Runs calls on ``executor`` under a deadline, at most one call in flight per key."""

    def __init__(self, executor: cf.Executor, timeout_s: float) -> None:
        self.executor = executor
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._in_flight: dict[Hashable, cf.Future[Any]] = {}

    def start(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> cf.Future[Any] | None:
        """Submit ``fn(*args)``; ``None`` when the previous call for ``key`` is still running."""
        with self._lock:
            if key in self._in_flight:
                return None
            future = self.executor.submit(fn, *args)
            self._in_flight[key] = future
        future.add_done_callback(functools.partial(self._finished, key))
        return future

    def _finished(self, key: Hashable, future: cf.Future[Any]) -> None:
        with self._lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    def in_flight(self) -> set[Hashable]:
        """Keys whose call is still running (a hung call stays here until it returns)."""
        with self._lock:
            return set(self._in_flight)

    def wait(self, future: cf.Future[Any] | None, deadline: float) -> _Outcome:
        """The outcome of a started call, waiting at most until ``deadline`` (monotonic)."""
        if future is None:
            return _Outcome(error=_TimedOut())
        try:
            return _Outcome(value=future.result(timeout=max(0.0, deadline - time.monotonic())))
        except cf.TimeoutError:
            # Not started yet (executor busy)? Then drop it rather than leave a backlog.
            future.cancel()
            return _Outcome(error=_TimedOut())
        except cf.CancelledError:
            return _Outcome(error=_TimedOut())
        except Exception as exc:  # noqa: BLE001 - any failure of a collector call is reported per chip
            return _Outcome(error=exc)


class DaemonThreadPool(cf.Executor):
    """A thread pool whose threads are daemons, started on demand up to ``max_workers``.

    concurrent.futures' own pool joins its threads at interpreter exit, so one NVML call hung in
    the driver would keep a stopping agent alive until systemd kills it; a daemon thread does not.
    """

    def __init__(self, max_workers: int, name: str = "collector") -> None:
        self.max_workers = max_workers
        self.name = name
        self._queue: queue.SimpleQueue[tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Released by a worker each time it waits for work: a submit that acquires it has a thread.
        self._idle = threading.Semaphore(0)
        self._threads = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        call = functools.partial(fn, **kwargs) if kwargs else fn
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.put((future, call, args))
            if not self._idle.acquire(timeout=0) and self._threads < self.max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter, not lost
                    future.set_exception(exc)
            del item, future, fn, args
            self._idle.release()

    def threads(self) -> int:
        return self._threads

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            n = self._threads
        for _ in range(n):
            self._queue.put(None)


class Sampler:
    """Builds one :class:`NodeReport` per :meth:`sample_once` call from the collectors."""

    def __init__(
        self,
        *,
        hostname: str,
        collectors: Sequence[ChipCollector],
        host: HostSource | None,
        assess: AssessFn,
        executor: cf.Executor,
        timeout_s: float = 2.0,
        interval_s: float = 5.0,
        expected_chips: int | None = None,
        drained_file: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hostname = hostname
        self.collectors = list(collectors)
        self.host = host
        self.assess = assess
        self.guard = CallGuard(executor, timeout_s)
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.expected_chips = expected_chips
        self.drained_file = drained_file
        self.clock = clock
        # Chips seen by the last successful discover, per collector: listed (stale) when a later
        # discover hangs, so a hang does not make chips silently disappear.
        self._known: dict[str, list[ChipIdentity]] = {}
        # When (monotonic) each chip last gave a good reading: a stale chip's sampled_at.
        self._last_ok: dict[tuple[str, str], float] = {}
        # This sample's wall clock and monotonic start: _stamp turns a monotonic time into a
        # sampled_at consistent with the sample's own.
        self._wall0 = 0.0
        self._mono0 = 0.0
        self._driver: str | None = None
        self._cuda: str | None = None

    def _timeout_message(self, collector: str) -> str:
        return f"{display_name(collector)} {TIMED_OUT} {self.timeout_s:.1f}s"

    def sample_once(self) -> NodeReport:
        """Sample every collector (blocking for at most about two deadlines) and judge health."""
        t0 = time.monotonic()
        now = self.clock()
        self._wall0, self._mono0 = now, t0
        host_future = self.guard.start(("host",), self.host.collect) if self.host is not None else None
        discover = {c.name: self.guard.start((c.name, "discover"), c.discover) for c in self.collectors}
        deadline = time.monotonic() + self.timeout_s
        states: list[CollectorState] = []
        # (collector, identity, future-or-None, error-if-known-stale)
        pending: list[tuple[ChipCollector, ChipIdentity, cf.Future[Any] | None]] = []
        stale: list[tuple[ChipCollector, ChipIdentity, str]] = []
        done_at: dict[str, float] = {}  # when each collector's last answer (or deadline) came
        for c in self.collectors:
            outcome = self.guard.wait(discover[c.name], deadline)
            done_at[c.name] = time.monotonic()
            if isinstance(outcome.error, _TimedOut):
                msg = self._timeout_message(c.name)
                states.append(CollectorState(name=c.name, ok=False, error=msg))
                stale.extend((c, ident, msg) for ident in self._known.get(c.name, []))
            elif outcome.error is not None:
                states.append(CollectorState(name=c.name, ok=False,
                                             error=describe_error(c.name, outcome.error)))
                self._known[c.name] = []
            else:
                idents: list[ChipIdentity] = list(outcome.value)
                self._known[c.name] = idents
                warning = getattr(c, "warning", None)  # optional: a part of the collector is off
                states.append(CollectorState(name=c.name, ok=True,
                                             error=warning() if callable(warning) else None))
                for ident in idents:
                    pending.append((c, ident, self.guard.start((c.name, ident.uuid, ident.index),
                                                               c.sample_chip, ident)))
        chip_deadline = time.monotonic() + self.timeout_s
        chips: list[ChipReport] = []
        failed_chip_calls: dict[str, str] = {}
        for c, ident, future in pending:
            outcome = self.guard.wait(future, chip_deadline)
            done_at[c.name] = time.monotonic()
            if isinstance(outcome.error, _TimedOut):
                chips.append(self._stale_chip(c.name, ident, self._timeout_message(c.name)))
                failed_chip_calls.setdefault(c.name, self._timeout_message(c.name))
            elif outcome.error is not None:
                chips.append(_error_chip(ident, describe_error(c.name, outcome.error)))
            else:
                chips.append(self._good_chip(c.name, ident, outcome.value, done_at[c.name]))
        chips.extend(self._stale_chip(c.name, ident, msg) for c, ident, msg in stale)
        chips.sort(key=lambda ch: (ch.kind, ch.index))
        for st in states:
            st.duration_s = round(done_at[st.name] - t0, 6)
            if st.ok and st.name in failed_chip_calls:
                st.error = failed_chip_calls[st.name]
        host_metrics = HostMetrics()
        if host_future is not None:
            h = self.guard.wait(host_future, deadline)
            states.append(CollectorState(name="host", ok=h.ok, duration_s=round(time.monotonic() - t0, 6),
                                         error=(None if h.ok else self._timeout_message("host")
                                                if isinstance(h.error, _TimedOut)
                                                else describe_error("host", h.error or RuntimeError()))))
            if h.ok:
                host_metrics = h.value
        self._update_driver()
        drained, reason = self._drained()
        report = NodeReport(
            host=self.hostname,
            agent_version=__version__,
            sampled_at=now,
            interval_s=self.interval_s,
            status=Status.UNKNOWN,
            chips_expected=self.expected_chips,
            chips=chips,
            host_metrics=host_metrics,
            collectors=states,
            driver_version=self._driver,
            cuda_driver_version=self._cuda,
            drained=drained,
            drained_reason=reason,
        )
        report = self.assess(report, now)  # statuses: fleet_agent.verdict, via assess
        report.sample_duration_s = round(time.monotonic() - t0, 6)
        return report

    def _stamp(self, mono: float) -> float:
        return self._wall0 + (mono - self._mono0)

    def _good_chip(self, collector: str, ident: ChipIdentity, chip: ChipReport,
                   answered: float) -> ChipReport:
        # The collector's own stamp is its wall clock, which may have stepped since this sample began.
        chip.sampled_at = self._stamp(answered)
        chip.stale = False
        self._last_ok[(collector, ident.uuid)] = answered
        return chip

    def _stale_chip(self, collector: str, ident: ChipIdentity, message: str) -> ChipReport:
        chip = _error_chip(ident, message)
        chip.stale = True
        last = self._last_ok.get((collector, ident.uuid))
        chip.sampled_at = None if last is None else self._stamp(last)
        return chip

    def _update_driver(self) -> None:
        """The driver's version and the CUDA version it supports, each kept once a collector gave it."""
        if self._driver is not None and self._cuda is not None:
            return
        for c in self.collectors:
            # driver_version() is a collector call like any other: only trust a quick answer,
            # and only ask once it has answered a discover (the library is initialised). Both
            # questions share one deadline: the probe costs no more than the driver's alone did.
            if not self._known.get(c.name):
                continue
            ask = getattr(c, "cuda_driver_version", None)  # optional: a collector written before it
            driver = None if self._driver else self.guard.start((c.name, "driver"), c.driver_version)
            cuda = None if self._cuda or not callable(ask) else self.guard.start((c.name, "cuda"), ask)
            deadline = time.monotonic() + min(0.5, self.timeout_s)
            self._driver = self._driver or self._answer(driver, deadline)
            self._cuda = self._cuda or self._answer(cuda, deadline)
            if self._driver is not None:
                return

    def _answer(self, future: cf.Future[Any] | None, deadline: float) -> str | None:
        outcome = self.guard.wait(future, deadline)  # no future (not asked, or still in flight): None
        return str(outcome.value) if outcome.ok and outcome.value else None

    def _drained(self) -> tuple[bool, str | None]:
        if not self.drained_file:
            return False, None
        try:
            text = Path(self.drained_file).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False, None
        except OSError:
            return True, None
        return True, (text.strip()[:500] or None)

    def close(self) -> None:
        for c in self.collectors:
            try:
                c.close()
            except Exception:
                log.warning("closing collector %s failed", c.name, exc_info=True)


def _error_chip(ident: ChipIdentity, message: str) -> ChipReport:
    return ChipReport(
        index=ident.index, kind=ident.kind, vendor=ident.vendor, model=ident.model,
        uuid=ident.uuid, pci_bus_id=ident.pci_bus_id, status=Status.UNKNOWN, error=message,
    )


def chip_from_identity(ident: ChipIdentity, **fields: Any) -> ChipReport:
    """A ChipReport for ``ident`` with ``fields`` set (used by fakes and collectors alike)."""
    chip = _error_chip(ident, "")
    return replace(chip, error=None, **fields)
