"""The agent's HTTP/1.1 server: an asyncio protocol feeding h11, answering from pre-rendered bytes.

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
import functools
import hmac
import json
import time
from collections.abc import Callable
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
    """Routes requests for one agent and renders the answers (:func:`start_server` serves it)."""

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

    # --- answers -------------------------------------------------------------------------------

    def answer(self, conn: h11.Connection, request: h11.Request) -> bytes:
        """The bytes of the answer to ``request`` on ``conn``."""
        response = self.route(request.method, request.target, list(request.headers))
        if _has_body(request):
            # We never read request bodies; say so and close rather than parse one.
            response = dataclasses.replace(response, headers=[*response.headers, ("Connection", "close")])
        return _serialize(conn, response, head=request.method == b"HEAD")


def _serialize(conn: h11.Connection, response: Response, *, head: bool) -> bytes:
    event = _head_event(response.status, len(response.body), response.content_type, tuple(response.headers))
    data = conn.send(event) or b""
    if not head and response.body:
        data += conn.send(h11.Data(data=response.body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


@functools.lru_cache(maxsize=1024)
def _head_event(status: int, length: int, content_type: str | None,
                extra: tuple[tuple[str, str], ...]) -> h11.Response:
    # Answers repeat (a few routes, bodies of similar sizes): building and validating the event once
    # per shape, not per request, is a large share of what an answer costs.
    headers = [("Content-Length", str(length)), *extra]
    if content_type:
        headers.append(("Content-Type", content_type))
    headers.append(("Cache-Control", "no-store"))
    return h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))


def _header_block_size(request: h11.Request) -> int:
    return len(request.method) + len(request.target) + 12 + sum(
        len(name) + len(value) + 4 for name, value in request.headers)


class _Connection(asyncio.Protocol):
    """One connection, parsed by h11 as its bytes arrive (no task, no stream per connection: a
    simulated fleet answers thousands of one-shot requests a second in one process).

    One timer enforces every time limit: a request must arrive whole within ``request_timeout_s``
    of the connection (or of the previous answer: an idle keep-alive connection ends the same
    way), and an answer the client does not read must leave the write buffer within as long.
    When it fires the connection is aborted. The limiter slot taken on accept is given back when
    the connection is gone.
    """

    def __init__(self, http: AgentHttp, loop: asyncio.AbstractEventLoop) -> None:
        self.http = http
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.request: h11.Request | None = None
        self.limited = False
        self.closing = False
        self.write_paused = False
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.http.limiter.acquire():
            self.closing = True
            transport.abort()
            return
        self.limited = True
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        if not self.closing:
            self.conn.receive_data(b"")
            self._process()
        # Keep the socket open while an answer waits for the client to read (closed after).
        return self.write_paused and not self.closing

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closing:
            self._arm()  # the answer went out: the next request has the full time again
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.limited:
            self.limited = False
            self.http.limiter.release()

    # --- HTTP ----------------------------------------------------------------------------------

    def _process(self) -> None:
        """Handle every complete event h11 has; stops while an answer waits to be read."""
        while not self.closing and not self.write_paused:
            try:
                event = self.conn.next_event()
                if isinstance(event, h11.Request) and _header_block_size(event) > MAX_HEADER_BYTES:
                    # h11 bounds the header block only while it is incomplete: one read of a larger
                    # block would pass. The same limit, however the bytes arrived.
                    raise h11.RemoteProtocolError("request header block too large", error_status_hint=431)
            except h11.RemoteProtocolError as exc:
                self._refuse(exc)
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self.request = event
                if _has_body(event):
                    self._answer(event)  # and close: the body is never read
                    return
            elif isinstance(event, h11.EndOfMessage):
                assert self.request is not None
                self._answer(self.request)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                self._close()
                return

    def _answer(self, request: h11.Request) -> None:
        assert self.transport is not None
        self.request = None
        self.transport.write(self.http.answer(self.conn, request))
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is not h11.DONE:
            self._close()
            return
        self.conn.start_next_cycle()
        self._arm()  # for the next request, or for the client to read this answer (write_paused)

    def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        assert self.transport is not None
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
            response = Response(status, b"bad request\n", _TEXT, [("Connection", "close")])
            self.transport.write(_serialize(self.conn, response, head=False))
        self._close()

    def _close(self) -> None:
        """Close once what was written is sent; the timer still aborts a client that never reads."""
        assert self.transport is not None
        self.closing = True
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._arm()
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # --- the one time limit --------------------------------------------------------------------

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.http.request_timeout_s, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            # A client that sends too slowly or does not read its answer: a graceful close would
            # wait for the unread answer forever, holding the socket.
            self.transport.abort()


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def render_json(report: NodeReport) -> bytes:
    """The JSON body of ``/v1/node``: what ``report.to_dict()`` gives, several times faster (a
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


def bound_port(server: asyncio.Server) -> int:
    with contextlib.suppress(IndexError):
        return int(server.sockets[0].getsockname()[1])
    return 0
