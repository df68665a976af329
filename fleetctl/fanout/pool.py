"""The fan-out over many hosts: bounded concurrency, hung hosts stepping aside, one overall
deadline, decoding after every request is out."""

from __future__ import annotations

import asyncio
import collections
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleetctl.fanout.classify import NO_ANSWER, Answer, FetchKind, FetchResult, classify_answer
from fleetctl.fanout.client import SUMMARY_PATH, Progress, fetch_body
from fleetctl.inventory import Host


@dataclass(frozen=True)
class FanoutOptions:
    timeout_s: float = 5.0  # per host: connect + request + whole response
    deadline_s: float = 30.0  # the whole fan-out
    concurrency: int = 512  # requests being answered at once (hung ones step aside: see fan_out)
    max_open: int = 8192  # sockets open at once, parked requests included
    path: str = SUMMARY_PATH  # NODE_PATH for a chip's vendor detail (`fleetctl hosts show`)
    # per host, for a name: its lookup, counted from when a resolver thread takes it (None: timeout_s)
    resolve_timeout_s: float | None = None


def park_after(timeout_s: float) -> float:
    """How long a request may hold a concurrency slot before it waits aside: far longer than an
    agent takes to answer (milliseconds), far shorter than any sensible timeout. Short, because
    every hung host holds a slot this long (1,000 hung hosts x 0.1 s = 100 slot-seconds); where
    answers are slower than this, :class:`ParkClock` waits longer."""
    return min(0.1, timeout_s / 4)


class ParkClock:
    """How long a request holds its concurrency slot before it waits aside.

    Normally :func:`park_after`. But when answers themselves slow down (the agents, or a shared
    server simulating them, are overloaded), stepping aside would only pile more requests onto
    them until every one times out; so the wait grows with the typical answer time (4x its moving
    average), up to half the timeout. Only answers count: hung hosts never lower the bar.
    """

    ALPHA = 0.1  # weight of the newest answer in the moving average

    def __init__(self, timeout_s: float) -> None:
        self.floor = park_after(timeout_s)
        self.cap = max(self.floor, timeout_s / 2)
        self.typical: float | None = None

    def answered(self, elapsed_s: float) -> None:
        # A sample counts at most as the current wait: one slow host among fast ones must not make
        # every hung host hold its slot for long; a sustained slowdown still raises the wait
        # (by at most 1.3x per answer).
        sample = min(elapsed_s, self.wait_s())
        if self.typical is None:
            self.typical = sample
        else:
            self.typical += self.ALPHA * (sample - self.typical)

    def wait_s(self) -> float:
        return min(self.cap, max(self.floor, 4 * (self.typical or 0.0)))


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-file limit towards ``wanted`` (+ headroom); returns the usable concurrency."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 64))


# How long the decoder holds the event loop at a time once every request is out: responses still
# in flight wait at most this long to be read (far below any per-host timeout).
_DECODE_SLICE_S = 0.002


async def fan_out(hosts: Sequence[Host], tokens: Callable[[Host], str | None],
                  options: FanoutOptions = FanoutOptions()) -> list[FetchResult]:
    """Fetch every host's report; results in the order of ``hosts``, each host exactly once.

    ``concurrency`` bounds the requests being answered; a request with no answer after
    :class:`ParkClock`'s wait (a hung host, most likely) gives its slot to the next host and goes on
    waiting for its own timeout, so hung hosts wait out their timeouts together instead of in
    rounds, while answering hosts never queue behind more than ``concurrency`` others (a queue
    inside fleetctl would eat into their timeouts). ``max_open`` bounds the sockets open at once.

    Decoding a report (JSON and schema) costs more CPU than fetching it, so bodies wait until every
    request is out: a hung host late in the list then starts its timeout early instead of after the
    CPU work for all hosts before it, and the fan-out ends at about max(timeout, CPU work) rather
    than their sum. Bodies received before the deadline are decoded even when it has passed.
    """
    loop = asyncio.get_running_loop()
    results: list[FetchResult | None] = [None] * len(hosts)
    started: list[float] = [0.0] * len(hosts)
    progress: list[Progress | None] = [None] * len(hosts)
    work = iter(range(len(hosts)))
    park = ParkClock(options.timeout_s)
    open_slots = asyncio.Semaphore(max(1, options.max_open))
    fetches: set[asyncio.Task[None]] = set()
    answers: collections.deque[tuple[int, Answer]] = collections.deque()
    all_sent: asyncio.Future[None] = loop.create_future()

    def free(slot: asyncio.Future[None]) -> None:
        if not slot.done():
            slot.set_result(None)

    def park_unless_answers_slowed(slot: asyncio.Future[None], since: float,
                                   timer: list[asyncio.TimerHandle]) -> None:
        # The wait is read again when it ends: answers seen meanwhile may have lengthened it.
        left = since + park.wait_s() - loop.time()
        if left > 0.001 and not slot.done():
            timer[0] = loop.call_later(left, park_unless_answers_slowed, slot, since, timer)
        else:
            free(slot)

    def decode(until: float) -> None:
        while answers and loop.time() < until:
            i, answer = answers.popleft()
            results[i] = classify_answer(hosts[i], answer)

    async def fetch(i: int, slot: asyncio.Future[None]) -> None:
        try:
            got = await fetch_body(hosts[i], tokens(hosts[i]), options.timeout_s, options.path,
                                   resolve_timeout_s=options.resolve_timeout_s, progress=progress[i])
            if isinstance(got, Answer):
                answers.append((i, got))
                park.answered(got.elapsed_s)
            else:
                results[i] = got
                if got.kind not in NO_ANSWER:
                    park.answered(got.elapsed_s)
        finally:
            open_slots.release()
            free(slot)

    async def worker() -> None:
        for i in work:  # a shared iterator: each index goes to exactly one worker
            await open_slots.acquire()
            started[i] = time.monotonic()
            progress[i] = Progress()
            slot: asyncio.Future[None] = loop.create_future()
            task = loop.create_task(fetch(i, slot))
            fetches.add(task)
            since = loop.time()
            timer: list[asyncio.TimerHandle] = []
            timer.append(loop.call_later(park.wait_s(), park_unless_answers_slowed, slot, since, timer))
            try:
                await slot
            finally:
                timer[0].cancel()
        free(all_sent)

    async def decoder() -> None:
        await all_sent
        while True:  # in short slices: responses still in flight are read between them
            decode(loop.time() + _DECODE_SLICE_S)
            await asyncio.sleep(0 if answers else _DECODE_SLICE_S)

    workers = [asyncio.ensure_future(worker())
               for _ in range(max(1, min(options.concurrency, len(hosts))))]
    decoding = asyncio.ensure_future(decoder())
    try:
        if workers:
            await _network(loop, workers, fetches, options.deadline_s)
    finally:
        decoding.cancel()
        await asyncio.wait([decoding])
    decode(float("inf"))
    for task in [*workers, *fetches, decoding]:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # a bug, not a host failure
    out: list[FetchResult] = []
    for i, host in enumerate(hosts):
        result = results[i]
        if result is None:
            waited = time.monotonic() - started[i] if started[i] else 0.0
            stood = progress[i]
            why = (f"no answer before the overall deadline of {options.deadline_s:g}s"
                   + (f" ({stood.why})" if stood is not None and stood.why else "") if started[i]
                   else f"not asked: the overall deadline of {options.deadline_s:g}s passed first")
            result = FetchResult(host, FetchKind.DEADLINE, None, why, waited)
        out.append(result)
    return out


async def _network(loop: asyncio.AbstractEventLoop, workers: Sequence[asyncio.Future[None]],
                   fetches: set[asyncio.Task[None]], deadline_s: float) -> None:
    """Wait for the workers, then for the requests parked aside, all within the overall deadline."""
    deadline = loop.time() + max(0.0, deadline_s)
    _done, pending = await asyncio.wait(workers, timeout=max(0.0, deadline_s))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    left = [t for t in fetches if not t.done()]
    if left:  # parked requests still waiting for their timeouts
        _answered, late = await asyncio.wait(left, timeout=max(0.0, deadline - loop.time()))
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def fetch_all(hosts: Sequence[Host], tokens: Callable[[Host], str | None],
              options: FanoutOptions = FanoutOptions()) -> list[FetchResult]:
    """:func:`fan_out` from synchronous code (its own event loop)."""
    return asyncio.run(fan_out(hosts, tokens, options))


def agent_tokens(hosts: Sequence[Host]) -> dict[str, str | None]:
    """Every host's bearer token, revealed once up front (vault decryption happens here, not in the
    event loop; a token that cannot be decrypted is an InventoryError before any request)."""
    return {h.name: (h.agent_token.reveal() if h.agent_token is not None else None) for h in hosts}
