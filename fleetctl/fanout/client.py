"""One host's ``GET /v1/node``; never raises (except cancellation). :func:`fetch_body` stops at the
body, so a caller can decode later (see :func:`fleetctl.fanout.pool.fan_out`).

Each step is bounded on its own and named when it runs out: name resolution by ``resolve_timeout_s``,
counted from when a resolver thread takes the lookup (never while it waits for one: a thread busy
with someone else's hung name is not this host's fault); then connect, request and the whole
response together by ``timeout_s``. The overall deadline (the pool's) bounds every wait.
"""

from __future__ import annotations

import asyncio

from fleetctl.fanout.classify import Answer, Failed, FetchKind, FetchResult, classify_answer
from fleetctl.fanout.http import ResponseReader, request_bytes
from fleetctl.fanout.resolver import Addresses, Lookup, on_loop, resolver
from fleetctl.fanout.sockets import RawSocket, connect_any, connect_failure, ip_family
from fleetctl.inventory import Host

NODE_PATH = "/v1/node"
# The report without each chip's vendor detail (ECC, NVLink, XID counts: neither shown nor judged by a
# fleet report): under half the bytes to read and decode. An agent from before the view ignores the
# query and sends the whole report, which decodes the same.
SUMMARY_PATH = NODE_PATH + "?view=summary"

# Where a request stands, for the reason when time runs out (or the overall deadline).
QUEUED = "queued"  # waiting for a resolver thread
RESOLVING = "resolving"
CONNECTING = "connecting"
ASKED = "asked"  # connected (or connecting, for a raw socket: see _stage)


class Progress:
    """Where an unfinished request stood when it was cancelled (the pool's overall deadline)."""

    __slots__ = ("why",)

    def __init__(self) -> None:
        self.why = ""


async def fetch_one(host: Host, token: str | None, timeout_s: float, path: str = SUMMARY_PATH
                    ) -> FetchResult:
    """One host, classified. Never raises (except cancellation)."""
    got = await fetch_body(host, token, timeout_s, path)
    return got if isinstance(got, FetchResult) else classify_answer(host, got)


async def fetch_body(host: Host, token: str | None, timeout_s: float, path: str, *,
                     resolve_timeout_s: float | None = None,
                     progress: Progress | None = None) -> FetchResult | Answer:
    """The network half of :func:`fetch_one`: the body of a 200 response, or why there is none."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proto: ResponseReader | None = None
    raw: RawSocket | None = None
    stage = ASKED
    lookup_timeout = timeout_s if resolve_timeout_s is None else resolve_timeout_s
    try:
        request = request_bytes(host, token, path)
        async with asyncio.timeout(None) as timer:
            done: asyncio.Future[bytes] = loop.create_future()
            reader = proto = ResponseReader(request, done, bool(token))
            family = ip_family(host.address)
            if family is not None:  # the common case: a literal address, no resolver needed
                timer.reschedule(started + timeout_s)
                try:
                    raw = RawSocket(loop, reader, host, family)
                except OSError as exc:  # out of file descriptors, say
                    raise connect_failure(host, exc) from None
                raw.start()
            else:
                lookup = resolver().ask(host.address)
                try:
                    stage = QUEUED
                    await on_loop(loop, lookup.begun)  # no timer of this host's runs while it waits
                    stage = RESOLVING
                    timer.reschedule(loop.time() + lookup_timeout)
                    addresses = await _addresses(loop, host, lookup)
                finally:
                    resolver().leave(lookup)
                started = loop.time()  # the host's own clock: the time before was the resolver's
                stage = CONNECTING
                timer.reschedule(started + timeout_s)
                await connect_any(loop, reader, host, addresses)
                stage = ASKED
            body = await done
        return Answer(body, loop.time() - started)
    except Failed as exc:
        return FetchResult(host, exc.kind, None, exc.detail, loop.time() - started)
    except TimeoutError:
        stage = _stage(stage, raw, proto)
        kind, detail = FetchKind.TIMEOUT, _timed_out(stage, host, proto, lookup_timeout, timeout_s)
        if stage == ASKED and proto is not None and proto.received:
            kind = FetchKind.SLOW
        return FetchResult(host, kind, None, detail, loop.time() - started)
    except asyncio.CancelledError:
        if progress is not None:
            progress.why = _unfinished(_stage(stage, raw, proto), proto)
        raise
    finally:
        if proto is not None:
            proto.close()
        if raw is not None:
            raw.abort()  # also when the timeout struck before the connection was made


async def _addresses(loop: asyncio.AbstractEventLoop, host: Host, lookup: Lookup) -> Addresses:
    try:
        addresses: Addresses = await on_loop(loop, lookup.result)
    except (OSError, UnicodeError) as exc:  # gaierror; a name IDNA cannot encode
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failed(FetchKind.CONNECT_ERROR, f"cannot resolve {host.address}: {why}") from None
    return addresses


def _stage(stage: str, raw: RawSocket | None, proto: ResponseReader | None) -> str:
    if stage == ASKED and raw is not None and raw.connecting:
        return CONNECTING  # the handshake never completed: the request is still unsent
    return stage


def _timed_out(stage: str, host: Host, proto: ResponseReader | None, lookup_s: float,
               timeout_s: float) -> str:
    if stage == RESOLVING:
        return f"name resolution of {host.address} timed out after {lookup_s:g}s"
    if stage == CONNECTING:
        return f"connect to {host.agent_endpoint} timed out after {timeout_s:g}s"
    if proto is not None and proto.received:
        return f"response incomplete after {timeout_s:g}s ({proto.received} bytes)"
    return f"connected, no answer within {timeout_s:g}s"


def _unfinished(stage: str, proto: ResponseReader | None) -> str:
    if stage == QUEUED:
        hung = resolver().hung()
        return "waiting for a resolver thread" + (f"; lookups that hang hold {hung}" if hung else "")
    if stage == RESOLVING:
        return "name resolution unfinished"
    if stage == CONNECTING:
        return "connect unfinished"
    if proto is not None and proto.received:
        return f"response incomplete, {proto.received} bytes"
    return "connected, request sent"

