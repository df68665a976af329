"""The agent's HTTP/1.1 server: asyncio streams + h11, answering from pre-rendered bytes.

Requests never touch a collector: ``/v1/node`` and ``/metrics`` return the bytes rendered after the
latest sample. The server is written to survive hostile or broken clients: a header block over
8 KiB gets 431, a malformed request 400, a request that does not arrive whole within
``request_timeout_s`` (or an idle keep-alive connection) is closed, and connections beyond a cap are
closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

from fleet_agent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fleet_agent.schema import NodeReport

MAX_HEADER_BYTES = 8192
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
# Liveness: the sampling loop must have completed a sample within this many intervals.
ALIVE_INTERVALS = 3


class AgentState:
    """What one agent serves: the latest rendered report, and when it was sampled."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self.last_sample: float | None = None
        self.json_body: bytes | None = None
        self._metrics_body: bytes | None = None
        self._metrics_render: Callable[[], bytes] | None = None

    def publish(self, json_body: bytes, metrics: bytes | Callable[[], bytes]) -> None:
        """Install a new sample's bodies; ``metrics`` may be a callable rendered on first use."""
        self.json_body = json_body
        if isinstance(metrics, bytes):
            self._metrics_body, self._metrics_render = metrics, None
        else:
            self._metrics_body, self._metrics_render = None, metrics
        self.last_sample = self.clock()

    def metrics_body(self) -> bytes | None:
        if self._metrics_body is None and self._metrics_render is not None:
            # Lazy rendering (sim-fleet: most hosts are never scraped); still once per sample.
            self._metrics_body, self._metrics_render = self._metrics_render(), None
        return self._metrics_body

    def alive(self) -> tuple[bool, float]:
        """(alive, seconds since the last completed sample or since start)."""
        since = self.clock() - (self.last_sample if self.last_sample is not None else self.started)
        return since <= ALIVE_INTERVALS * self.interval_s, since


class ConnectionLimiter:
    """A cap on concurrent connections; sim-fleet shares one across all its servers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


_UNAUTHORIZED = Response(401, headers=[("WWW-Authenticate", "Bearer")])


class AgentHttp:
    """Routes requests for one agent; :meth:`serve` is the asyncio connection handler."""

    def __init__(
        self,
        state: AgentState,
        *,
        token: str | None = None,
        request_timeout_s: float = 10.0,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        self.state = state
        self._token = token.encode() if token else None
        self.request_timeout_s = request_timeout_s
        self.limiter = limiter or ConnectionLimiter(128)

    # --- routing -------------------------------------------------------------------------------

    def route(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> Response:
        path = target.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return Response(405, b"method not allowed\n", _TEXT, [("Allow", "GET, HEAD")])
        if path == b"/healthz":
            alive, since = self.state.alive()
            if alive:
                return Response(200, b"ok\n", _TEXT)
            return Response(503, f"sampling loop stalled: no sample for {since:.0f}s\n".encode(), _TEXT)
        if self._token is not None and not self._authorized(headers):
            return _UNAUTHORIZED
        if path == b"/v1/node":
            body = self.state.json_body
            if body is None:
                return Response(503, b'{"error": "no sample yet"}\n', _JSON)
            return Response(200, body, _JSON)
        if path == b"/metrics":
            metrics = self.state.metrics_body()
            if metrics is None:
                return Response(503, b"no sample yet\n", _TEXT)
            return Response(200, metrics, METRICS_CONTENT_TYPE)
        return Response(404, b"not found\n", _TEXT)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        assert self._token is not None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                # compare_digest: the time taken must not tell how much of the token matched.
                return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token)
        return False

    # --- connections ---------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    slot_held: bool = False, first_deadline: float | None = None) -> None:
        """One connection. ``slot_held``: the fast path admitted it and hands over its limiter slot;
        ``first_deadline`` (loop time): when the first request must have arrived by."""
        if not slot_held and not self.limiter.acquire():
            writer.transport.abort()
            return
        try:
            await self._serve(reader, writer, first_deadline)
        except TimeoutError:
            # A client that sends too slowly or does not read its answer: close() would wait for
            # the unread answer forever, holding the socket after its slot is given back.
            writer.transport.abort()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.limiter.release()
            if not writer.transport.is_closing():
                writer.transport.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     first_deadline: float | None = None) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        loop = asyncio.get_running_loop()
        deadline = first_deadline if first_deadline is not None else loop.time() + self.request_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    request = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
                    await self._send(conn, writer, Response(status, b"bad request\n", _TEXT,
                                                            [("Connection", "close")]), head=False)
                return
            if request is None:
                return
            response = self.route(request.method, request.target, list(request.headers))
            if _has_body(request):
                # We never read request bodies; say so and close rather than parse one.
                response = dataclasses.replace(response, headers=[*response.headers, ("Connection", "close")])
            await self._send(conn, writer, response, head=request.method == b"HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            deadline = loop.time() + self.request_timeout_s

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(16384)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
                # h11 bounds the header block only while it is incomplete: one read of a larger
                # block would pass. The same limit, however the bytes arrived.
                size = len(event.method) + len(event.target) + 12 + sum(
                    len(name) + len(value) + 4 for name, value in event.headers)
                if size > MAX_HEADER_BYTES:
                    raise h11.RemoteProtocolError("request header block too large", error_status_hint=431)
                if _has_body(request):
                    return request
                continue
            if isinstance(event, h11.EndOfMessage):
                return request
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response,
                    *, head: bool) -> None:
        headers = [("Content-Length", str(len(response.body))), *response.headers]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        headers.append(("Cache-Control", "no-store"))
        data = conn.send(h11.Response(status_code=response.status, headers=headers,
                                      reason=_REASONS.get(response.status, b"")))
        if not head and response.body:
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(data)
        # A client that does not read its answer must not hold the connection forever.
        async with asyncio.timeout(self.request_timeout_s):
            await writer.drain()


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def render_json(report: NodeReport) -> bytes:
    """The JSON body of ``/v1/node``: what ``report.to_dict()`` gives, about 7x faster (a
    simulated fleet renders thousands per interval)."""
    try:
        text = json.dumps(report, default=_fields, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere: to_dict turns those into null
        text = json.dumps(report.to_dict(), separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode()


def _fields(obj: object) -> object:
    # The schema's enums subclass str and serialise as their value without help; dataclasses
    # are the only other objects in a report.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.__dict__
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


async def start_server(http: AgentHttp, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (port 0: any free port) and serve ``http``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(http, loop), host=host, port=port, backlog=128,
                                    reuse_address=True)


# The one request shape `fleetctl` sends: a single GET/HEAD without a body that asks to close the
# connection. Answered straight from the protocol with pre-rendered bytes (sim-fleet serves
# thousands a second); anything else goes to the h11 stream handler, which has the final word.
_FAST_REQUEST_LINE = re.compile(rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1")
_FAST_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([!-~](?:[ \t!-~]*[!-~])?)?[ \t]*")


def fast_request(head: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """(method, target, headers as h11 gives them) when ``head`` (up to and without the blank line)
    is a request the fast path may answer; None for anything else."""
    lines = head.split(b"\r\n")
    first = _FAST_REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    close = False
    for line in lines[1:]:
        m = _FAST_HEADER.fullmatch(line)
        if m is None:
            return None
        name, value = m.group(1).lower(), m.group(2) or b""
        if name in (b"content-length", b"transfer-encoding"):
            return None
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            close = close or any(t.strip().lower() == b"close" for t in value.split(b","))
        headers.append((name, value))
    if hosts != 1 or not close:
        return None
    return first.group(1), first.group(2), headers


def response_bytes(response: Response, *, head: bool) -> bytes:
    """What :meth:`AgentHttp._send` makes h11 write for ``response`` on a closing connection."""
    lines = [b"HTTP/1.1 %d %s" % (response.status, _REASONS.get(response.status, b"")),
             b"Content-Length: %d" % len(response.body)]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in response.headers]
    if response.content_type:
        lines.append(b"Content-Type: " + response.content_type.encode("latin-1"))
    lines += [b"Cache-Control: no-store", b"Connection: close", b"", b""]
    data = b"\r\n".join(lines)
    return data if head else data + response.body


class _Connection(asyncio.Protocol):
    """One accepted connection: the fast path for fleetctl's request, else the stream handler."""

    def __init__(self, http: AgentHttp, loop: asyncio.AbstractEventLoop) -> None:
        self.http = http
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.limited = False
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.http.limiter.acquire():
            transport.abort()  # type: ignore[attr-defined]
            return
        self.limited = True
        self.deadline = self.loop.time() + self.http.request_timeout_s  # for the whole request
        self.timer = self.loop.call_at(self.deadline, self._expire)

    def _expire(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        # The whole request in one read (what a small request over loopback or a LAN is), or h11.
        end = data.find(b"\r\n\r\n")
        whole = end >= 0 and end + 4 == len(data) and end <= MAX_HEADER_BYTES
        request = fast_request(data[:end]) if whole else None
        if request is None:
            self._hand_over(data)
            return
        method, target, headers = request
        response = self.http.route(method, target, headers)
        self.transport.pause_reading()  # one request per connection on this path
        self.transport.write(response_bytes(response, head=method == b"HEAD"))
        self.transport.close()
        # A client that does not read its answer must not hold the connection forever.
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.http.request_timeout_s, self._expire)

    def _hand_over(self, buf: bytes) -> None:
        """Give the connection, and what it sent so far, to the h11 stream handler."""
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # serve() takes over this connection's slot (released and re-acquired, another connection
        # could take it in between) and its deadline (the request must arrive whole in time).
        slot_held, self.limited = self.limited, False
        deadline = self.deadline

        def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
            return self.http.serve(r, w, slot_held=slot_held, first_deadline=deadline)

        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES * 2, loop=self.loop)
        stream = asyncio.StreamReaderProtocol(reader, serve, loop=self.loop)
        self.transport.set_protocol(stream)
        stream.connection_made(self.transport)
        stream.data_received(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.limited:
            self.http.limiter.release()
            self.limited = False


def bound_port(server: asyncio.Server) -> int:
    with contextlib.suppress(IndexError):
        return int(server.sockets[0].getsockname()[1])
    return 0
