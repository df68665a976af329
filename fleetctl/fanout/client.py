"""One host's ``GET /v1/node``: connect, ask and read under one timer; never raises (except
cancellation). :func:`fetch_body` stops at the body, so a caller can decode later (see
:func:`fleetctl.fanout.pool.fan_out`)."""

from __future__ import annotations

import asyncio

from fleetctl.fanout.classify import Answer, Failed, FetchKind, FetchResult, classify_answer
from fleetctl.fanout.http import ResponseReader, request_bytes
from fleetctl.fanout.sockets import RawSocket, connect_any, connect_failure, ip_family, resolve
from fleetctl.inventory import Host

NODE_PATH = "/v1/node"


async def fetch_one(host: Host, token: str | None, timeout_s: float, path: str = NODE_PATH) -> FetchResult:
    """One host, classified. Never raises (except cancellation)."""
    got = await fetch_body(host, token, timeout_s, path)
    return got if isinstance(got, FetchResult) else classify_answer(host, got)


async def fetch_body(host: Host, token: str | None, timeout_s: float, path: str) -> FetchResult | Answer:
    """The network half of :func:`fetch_one`: the body of a 200 response, or why there is none."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proto: ResponseReader | None = None
    raw: RawSocket | None = None
    resolving = False
    try:
        request = request_bytes(host, token, path)
        # One timer for connect + request + whole response (not one wait_for per step).
        async with asyncio.timeout(timeout_s):
            done: asyncio.Future[bytes] = loop.create_future()
            reader = proto = ResponseReader(request, done, bool(token))
            family = ip_family(host.address)
            if family is not None:  # the common case: a literal address, no resolver needed
                try:
                    raw = RawSocket(loop, reader, host, family)
                except OSError as exc:  # out of file descriptors, say
                    raise connect_failure(host, exc) from None
                raw.start()
            else:
                resolving = True
                addresses = await resolve(loop, host)
                resolving = False
                await connect_any(loop, reader, host, addresses)
            body = await done
        return Answer(body, loop.time() - started)
    except Failed as exc:
        return FetchResult(host, exc.kind, None, exc.detail, loop.time() - started)
    except TimeoutError:
        received = proto.received if proto is not None else 0
        if resolving:
            kind, detail = FetchKind.TIMEOUT, f"name lookup of {host.address} unfinished after {timeout_s:g}s"
        elif received:
            kind, detail = FetchKind.SLOW, f"response incomplete after {timeout_s:g}s ({received} bytes)"
        else:
            kind, detail = FetchKind.TIMEOUT, f"no response within {timeout_s:g}s"
        return FetchResult(host, kind, None, detail, loop.time() - started)
    finally:
        if proto is not None:
            proto.close()
        if raw is not None:
            raw.abort()  # also when the timeout struck before the connection was made
