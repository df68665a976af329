"""The agent's HTTP/1.1 server: an asyncio protocol feeding h11, answering from pre-rendered bytes.

Requests never touch a collector: ``/v1/node`` and ``/metrics`` return the bytes rendered after the
latest sample. The server is written to survive hostile or broken clients: a header block over
8 KiB gets 431, a malformed request 400, and a request that does not arrive whole within
``request_timeout_s`` (or an idle keep-alive connection) is closed.

Idle clients cannot silence the agent. Connections are capped (:class:`ConnectionLimiter`; the
daemon fits the cap to the open-file limit), but a full table does not turn newcomers away: a new
connection takes the slot of the admitted connection that has waited longest without completing a
request (since it connected, or since its last answer), and only connections that presented the
token, or whose answer is still being written, are kept until nothing else is left. A few hundred
stalled partial requests therefore evict one another, while a scraper's new connection, or its
authenticated keep-alive one, is served. A newcomer is refused only when every slot holds an
answer in flight. Eviction is chosen over a shorter first-request deadline because it costs nothing
until the table is full, and a deadline short enough to matter would cut off slow honest clients.
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
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import h11

from fleet_agent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fleet_agent.schema import NodeReport, with_sample_age

MAX_HEADER_BYTES = 8192
# Pending connections the kernel queues per listening socket; asyncio accepts up to as many in one
# turn, before it can evict anyone: the open-file budget keeps room for a few turns of them
# (daemon.RESERVED_FDS). An agent has few clients (Prometheus, fleetctl): 64 is plenty.
BACKLOG = 64
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
# Liveness: the sampling loop must have completed a sample within this many intervals.
ALIVE_INTERVALS = 3


# A body rendered now, or a callable that renders it on first use.
Lazy = bytes | Callable[[], bytes]


class _Once:
    """A body given as bytes, or rendered on its first use and kept (once per sample)."""

    __slots__ = ("_body", "_render")

    def __init__(self, body: Lazy | None = None) -> None:
        self._body: bytes | None = body if isinstance(body, bytes) else None
        self._render: Callable[[], bytes] | None = None if isinstance(body, bytes) else body

    def get(self) -> bytes | None:
        if self._body is None and self._render is not None:
            self._body, self._render = self._render(), None
        return self._body


class AgentState:
    """What one agent serves: the latest rendered report, and when it was sampled."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self.last_sample: float | None = None
        self.json_body: bytes | None = None
        self._metrics = _Once()
        self._summary = _Once()

    def publish(self, json_body: bytes, metrics: Lazy, summary: Lazy | None = None) -> None:
        """Install a new sample's bodies; ``metrics`` and ``summary`` (the report without the chips'
        vendor detail; None: the whole report) may be callables rendered on first use."""
        self.json_body = json_body
        self._metrics, self._summary = _Once(metrics), _Once(summary)
        self.last_sample = self.clock()

    def summary_body(self) -> bytes | None:
        """The ``?view=summary`` body; the whole report where the sample came without one."""
        summary = self._summary.get()
        return self.json_body if summary is None else summary

    def metrics_body(self) -> bytes | None:
        # Lazy rendering (sim-fleet: most hosts are never scraped); still once per sample.
        return self._metrics.get()

    def alive(self) -> tuple[bool, float]:
        """(alive, seconds since the last completed sample or since start)."""
        since = self.clock() - (self.last_sample if self.last_sample is not None else self.started)
        return since <= ALIVE_INTERVALS * self.interval_s, since


class Admitted(Protocol):
    """What the limiter needs of a connection: where it is filed, since when, and how to end it."""

    slot_group: OrderedDict[Admitted, None] | None
    since: float

    def evict(self) -> None: ...


class ConnectionLimiter:
    """A cap on concurrent connections that idle clients cannot fill; sim-fleet shares one across
    all its servers.

    Each admitted connection is filed in one group: *unproven* (no complete request yet, or served
    without the token), in the order in which they last made progress; *trusted* (presented the
    token), least recently served first; *busy* (an answer waits to be written). At the cap, a new
    connection evicts the unproven connection that has waited longest, else the least recently
    served trusted one; when every slot is busy it is refused.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.evicted = 0  # how many connections lost their slot to a newcomer
        self._fresh: OrderedDict[Admitted, None] = OrderedDict()  # no complete request yet
        self._idle: OrderedDict[Admitted, None] = OrderedDict()  # served, never with the token
        self._trusted: OrderedDict[Admitted, None] = OrderedDict()
        self._busy: OrderedDict[Admitted, None] = OrderedDict()

    def acquire(self, conn: Admitted, now: float) -> bool:
        """Admit ``conn`` (evicting another when at the cap); False: refuse it."""
        if self.active >= self.limit and not self._evict_one():
            return False
        self.active += 1
        conn.since = now
        self._file(conn, self._fresh)
        return True

    def served(self, conn: Admitted, now: float, *, trusted: bool) -> None:
        """``conn`` completed a request (or finished writing an answer) at ``now``."""
        conn.since = now
        self._file(conn, self._trusted if trusted else self._idle)

    def hold(self, conn: Admitted) -> None:
        """``conn`` has an answer to write: not evicted while it does."""
        self._file(conn, self._busy)

    def release(self, conn: Admitted) -> None:
        """``conn`` is gone: its slot is free."""
        if conn.slot_group is not None:
            del conn.slot_group[conn]
            conn.slot_group = None
        self.active -= 1

    def abort_all(self) -> None:
        """End every admitted connection (the process is stopping)."""
        for group in (self._fresh, self._idle, self._trusted, self._busy):
            while group:
                self._take(group).evict()

    def _file(self, conn: Admitted, group: OrderedDict[Admitted, None]) -> None:
        if conn.slot_group is not None:
            del conn.slot_group[conn]
        group[conn] = None
        conn.slot_group = group

    def _take(self, group: OrderedDict[Admitted, None]) -> Admitted:
        conn, _ = group.popitem(last=False)
        conn.slot_group = None
        self.active -= 1
        return conn

    def _evict_one(self) -> bool:
        fresh = next(iter(self._fresh), None)
        idle = next(iter(self._idle), None)
        if fresh is not None and (idle is None or fresh.since <= idle.since):
            victim = self._take(self._fresh)
        elif idle is not None:
            victim = self._take(self._idle)
        elif self._trusted:
            victim = self._take(self._trusted)
        else:
            return False
        self.evicted += 1
        victim.evict()
        return True


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


_UNAUTHORIZED = Response(401, headers=[("WWW-Authenticate", "Bearer")])
# /v1/node's views: the whole report, or without each chip's vendor detail (`gpu`, `tpu`: ECC, NVLink,
# XID counts...), which a fleet report neither shows nor judges: an 8-GPU host's answer is 4.8 KB
# instead of 11.3 KB. Other query parameters are ignored, as they always were. An unknown view is a
# 400, not the whole report: a client that asks for a view this agent lacks must learn it (and fall
# back to `full` itself) rather than decode something else than it asked for.
NODE_VIEWS = ("full", "summary")
_BAD_VIEW = b"unknown view: /v1/node?view= takes full or summary\n"


def node_view(query: bytes) -> str | None:
    """The view a ``/v1/node`` query string asks for (``full`` without one; percent-encoding decoded);
    None for an unknown one, or for two different ones."""
    if not query:
        return "full"
    views = {value for key, value in urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
             if key == "view"}
    if not views:
        return "full"
    view = views.pop()
    return view if not views and view in NODE_VIEWS else None


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
        path, _, query = target.partition(b"?")
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
            view = node_view(query)
            if view is None:
                return Response(400, _BAD_VIEW, _TEXT)
            body = self.state.json_body if view == "full" else self.state.summary_body()
            if body is None:
                return Response(503, b'{"error": "no sample yet"}\n', _JSON)
            published = self.state.last_sample
            if published is None:
                return Response(200, body, _JSON)
            # The sample's age on this agent's monotonic clock: fleetctl judges staleness by it and
            # reads a wall-clock difference beyond it as clock skew, never as a stale sample.
            return Response(200, with_sample_age(body, self.state.clock() - published), _JSON)
        if path == b"/metrics":
            metrics = self.state.metrics_body()
            if metrics is None:
                return Response(503, b"no sample yet\n", _TEXT)
            return Response(200, metrics, METRICS_CONTENT_TYPE)
        return Response(404, b"not found\n", _TEXT)

    def proves_client(self, request: h11.Request) -> bool:
        """Whether ``request`` presented the token (never, when no token is configured: then no
        client has anything to prove itself with)."""
        return self._token is not None and self._authorized(list(request.headers))

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
    the connection is gone, or handed to a newcomer when the limiter evicts this one.
    """

    def __init__(self, http: AgentHttp, loop: asyncio.AbstractEventLoop) -> None:
        self.http = http
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.request: h11.Request | None = None
        self.limited = False  # holds a limiter slot
        self.trusted = False  # presented the token
        self.slot_group: OrderedDict[Admitted, None] | None = None
        self.since = 0.0
        self.closing = False
        self.write_paused = False
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.http.limiter.acquire(self, self.loop.time()):
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
        if self.limited:
            self.http.limiter.hold(self)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.limited and not self.closing:
            self.http.limiter.served(self, self.loop.time(), trusted=self.trusted)
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
            self.http.limiter.release(self)

    def evict(self) -> None:
        """The limiter gave this connection's slot to a newcomer (or the agent is stopping)."""
        self.limited = False
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()

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
        data = self.http.answer(self.conn, request)
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is not h11.DONE:
            self.transport.write(data)
            self._close()
            return
        # Filed as served before the write: a write that fills the buffer files it as busy.
        self.trusted = self.trusted or self.http.proves_client(request)
        if self.limited:
            self.http.limiter.served(self, self.loop.time(), trusted=self.trusted)
        self.transport.write(data)
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
            if self.limited:
                self.http.limiter.hold(self)  # its last answer is still going out
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


def render_summary_json(report: NodeReport) -> bytes:
    """The body of ``/v1/node?view=summary``: the report with every chip's ``gpu`` and ``tpu`` null."""
    chips = [dataclasses.replace(c, gpu=None, tpu=None) if c.gpu is not None or c.tpu is not None else c
             for c in report.chips]
    return render_json(dataclasses.replace(report, chips=chips))


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
    return await loop.create_server(lambda: _Connection(http, loop), host=host, port=port,
                                    backlog=BACKLOG, reuse_address=True)


def bound_port(server: asyncio.Server) -> int:
    with contextlib.suppress(IndexError):
        return int(server.sockets[0].getsockname()[1])
    return 0
