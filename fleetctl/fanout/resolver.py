"""Name resolution for the fan-out, arranged so that names whose lookups hang cannot starve the rest.

``getaddrinfo`` blocks and cannot be interrupted, so lookups run in daemon threads (a hung one must
not hold the command past its deadline). A plain thread pool lets a few hung lookups take every
thread, and then every other named host waits in the queue and times out: healthy hosts reported
unreachable because of someone else's name. Here:

- a lookup that nobody waits for any more (each host that asked gave up) stops counting towards the
  thread limit, and a fresh thread takes the next lookup; the hung one ends in its own time (the
  system resolver has its own timeouts) and its thread exits;
- hosts that ask for a name whose lookup is still running share it, so a hung name costs one thread
  however many hosts, fan-outs or ``--watch`` rounds ask for it;
- :attr:`Lookup.begun` says when a thread took the lookup: a host's resolution timer starts there,
  never while the lookup waits for a thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import functools
import socket
import threading
from typing import Any

Addresses = list[tuple[int, tuple[Any, ...]]]  # (family, socket address without the port)


class Lookup:
    """One name being resolved, shared by every host that names it while it runs."""

    __slots__ = ("abandoned", "begun", "name", "result", "running", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.begun: cf.Future[None] = cf.Future()  # set when a thread takes it
        self.result: cf.Future[Addresses] = cf.Future()
        self.waiters = 0
        self.running = False
        self.abandoned = False  # running, nobody waits: its thread no longer counts


def _getaddrinfo(name: str) -> Addresses:
    # socket.getaddrinfo looked up at call time, so tests can stand in for the system resolver
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]


class Resolver:
    """Lookups in daemon threads: at most ``threads`` of them for lookups someone waits for, and at
    most ``max_threads`` in all, those left to hung lookups included (beyond that, lookups wait for
    a thread; the fan-out's overall deadline still ends the wait)."""

    def __init__(self, threads: int = 32, max_threads: int = 512) -> None:
        self.threads = max(1, threads)
        self.max_threads = max(self.threads, max_threads)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: collections.deque[Lookup] = collections.deque()
        self._running: dict[str, Lookup] = {}  # queued or running, by name
        self._counted = 0  # threads not left to a hung lookup
        self._total = 0
        self._idle = 0

    def ask(self, name: str) -> Lookup:
        """The lookup of ``name``: one already under way, or a new one in the queue. The caller
        must :meth:`leave` it once it has the result or gives up."""
        with self._lock:
            lookup = self._running.get(name)
            if lookup is None:
                lookup = self._running[name] = Lookup(name)
                self._queue.append(lookup)
                self._start_threads()
                self._work.notify()
            lookup.waiters += 1
            return lookup

    def leave(self, lookup: Lookup) -> None:
        """One host no longer waits for ``lookup`` (answered, timed out or cancelled)."""
        with self._lock:
            lookup.waiters -= 1
            if lookup.waiters > 0 or lookup.result.done():
                return
            if not lookup.running:  # still queued: nobody wants it any more
                self._queue.remove(lookup)
                del self._running[lookup.name]
            elif not lookup.abandoned:
                lookup.abandoned = True
                self._counted -= 1
                self._start_threads()

    def hung(self) -> int:
        """Threads left to lookups nobody waits for (hung, most likely)."""
        with self._lock:
            return self._total - self._counted

    def _start_threads(self) -> None:  # with the lock held
        while (len(self._queue) > self._idle and self._counted < self.threads
               and self._total < self.max_threads):
            self._counted += 1
            self._total += 1
            self._idle += 1  # until it has taken a lookup: the queue is its to serve
            threading.Thread(target=self._serve, name=f"resolver-{self._total}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._work.wait()
                lookup = self._queue.popleft()
                lookup.running = True
                self._idle -= 1
            lookup.begun.set_result(None)
            try:
                lookup.result.set_result(_getaddrinfo(lookup.name))
            except BaseException as exc:  # noqa: BLE001 - the waiters' error, not this thread's
                lookup.result.set_exception(exc)
            with self._lock:
                if self._running.get(lookup.name) is lookup:
                    del self._running[lookup.name]
                if lookup.abandoned:  # a replacement took its place; back in service if there is room
                    if self._counted >= self.threads:
                        self._total -= 1
                        return
                    self._counted += 1
                self._idle += 1


@functools.cache
def resolver() -> Resolver:
    """The process's resolver (shared by every fan-out, so hung lookups are shared too)."""
    return Resolver()


def on_loop(loop: asyncio.AbstractEventLoop, source: cf.Future[Any]) -> asyncio.Future[Any]:
    """``source``'s outcome on ``loop``. Unlike :func:`asyncio.wrap_future`, cancelling the result
    leaves ``source`` alone: other hosts may be waiting for the same lookup."""
    target: asyncio.Future[Any] = loop.create_future()

    def copy() -> None:
        if target.done():
            return
        exc = source.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(source.result())

    def done(_: cf.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(copy)
        except RuntimeError:  # that fan-out's loop has closed: nobody waits there any more
            pass

    source.add_done_callback(done)
    return target
