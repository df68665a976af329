"""Ask many agents for ``GET /v1/node`` at once, and say precisely why a host did not answer.

One short connection per host, each an asyncio Protocol with a strict minimal HTTP/1.1 response
parser (one object per connection, no stream reader/writer pair); a fixed pool of workers (bounded
concurrency), a per-host timeout (one timer) that covers connect, request and the whole response,
and one overall deadline after which whatever is still running is cancelled and reported as
``deadline``. Every host gets exactly one :class:`FetchResult`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import errno
import functools
import ipaddress
import os
import re
import resource
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fleet_agent.schema import NodeReport, SchemaError

from fleetctl import __version__
from fleetctl.heap import gc_paused
from fleetctl.inventory import Host
from fleetctl.node_decode import InvalidJson, decode_node_report
from fleetctl.report import FleetReport, host_row_failed, host_row_from_node

NODE_PATH = "/v1/node"
MAX_BODY_BYTES = 8 * 1024 * 1024  # a node report is ~10 KB per 8 chips; anything near this is wrong


class FetchKind(enum.StrEnum):
    """The outcome of one request; everything but ``ok`` carries a reason."""

    OK = "ok"
    REFUSED = "refused"  # nothing listens on the port
    CONNECT_ERROR = "connect_error"  # no route, DNS failure, reset before any answer
    TIMEOUT = "timeout"  # connected (or not) but no byte of a response within the timeout: hung
    SLOW = "slow"  # a response started but did not finish within the timeout (slow drip)
    DEADLINE = "deadline"  # still waiting (or never started) when the overall deadline passed
    UNAUTHORIZED = "unauthorized"  # HTTP 401/403: token missing or wrong
    HTTP_ERROR = "http_error"  # any other non-200 status
    GARBAGE = "garbage"  # not HTTP, or the connection closed mid-response
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    SCHEMA_VERSION = "schema_version"  # a report, but of another schema version
    BAD_SCHEMA = "bad_schema"  # JSON that is not a valid node report

    @property
    def reachable(self) -> bool:
        """False when nothing answered (the host is shown as unreachable, not as an error)."""
        return self not in _UNREACHABLE


_UNREACHABLE = frozenset({FetchKind.REFUSED, FetchKind.CONNECT_ERROR, FetchKind.TIMEOUT,
                          FetchKind.DEADLINE})
# Outcomes that say nothing about how long an agent takes to answer (see ParkClock).
_NO_ANSWER = _UNREACHABLE | {FetchKind.SLOW}


@dataclass(slots=True)
class FetchResult:
    host: Host
    kind: FetchKind
    report: NodeReport | None = None
    detail: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class FanoutOptions:
    timeout_s: float = 5.0  # per host: connect + request + whole response
    deadline_s: float = 30.0  # the whole fan-out
    concurrency: int = 512  # requests being answered at once (hung ones step aside: see fan_out)
    max_open: int = 8192  # sockets open at once, parked requests included
    path: str = NODE_PATH


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


class _Failed(Exception):
    def __init__(self, kind: FetchKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


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


# Request bytes are built by hand (h11's header validation costs more per host than the whole
# response parse); only strings that cannot break the request line or a header go this way.
# (fullmatch, never `$`: `$` also matches before a final newline.)
_SAFE_ENDPOINT = re.compile(r"[A-Za-z0-9._:\[\]-]+")
_SAFE_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: no spaces, CR or LF
_SAFE_PATH = re.compile(r"/[!-~]*")
_USER_AGENT = f"fleetctl/{__version__}"


def _request_bytes(host: Host, token: str | None, path: str) -> bytes:
    endpoint = host.agent_endpoint
    if not (_SAFE_ENDPOINT.fullmatch(endpoint) and _SAFE_PATH.fullmatch(path)
            and (not token or _SAFE_TOKEN.fullmatch(token))):
        raise _Failed(FetchKind.CONNECT_ERROR, "cannot build the request: the address or "
                                               "fleet_agent_token holds characters HTTP does not allow")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nUser-Agent: {_USER_AGENT}\r\n"
            f"Accept: application/json\r\n{auth}Connection: close\r\n\r\n").encode("ascii")


async def fetch_one(host: Host, token: str | None, timeout_s: float, path: str = NODE_PATH) -> FetchResult:
    """One host, classified. Never raises (except cancellation)."""
    got = await _fetch_body(host, token, timeout_s, path)
    return got if isinstance(got, FetchResult) else _decoded(host, got)


@dataclass(slots=True)
class _Answer:
    """A complete 200 response, not yet decoded (see :func:`fan_out` for why decoding waits)."""

    body: bytes
    elapsed_s: float


async def _fetch_body(host: Host, token: str | None, timeout_s: float, path: str) -> FetchResult | _Answer:
    """The network half of :func:`fetch_one`: the body of a 200 response, or why there is none."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proto: _ResponseReader | None = None
    raw: _RawSocket | None = None
    resolving = False
    try:
        request = _request_bytes(host, token, path)
        # One timer for connect + request + whole response (not one wait_for per step).
        async with asyncio.timeout(timeout_s):
            done: asyncio.Future[bytes] = loop.create_future()
            reader = proto = _ResponseReader(request, done, bool(token))
            family = _ip_family(host.address)
            if family is not None:  # the common case: a literal address, no resolver needed
                try:
                    raw = _RawSocket(loop, reader, host, family)
                except OSError as exc:  # out of file descriptors, say
                    raise _connect_failure(host, exc) from None
                raw.start()
            else:
                resolving = True
                addresses = await _resolve(loop, host)
                resolving = False
                await _connect_any(loop, reader, host, addresses)
            body = await done
        return _Answer(body, loop.time() - started)
    except _Failed as exc:
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


def _decoded(host: Host, answer: _Answer) -> FetchResult:
    try:
        return FetchResult(host, FetchKind.OK, _decode(answer.body), "", answer.elapsed_s)
    except _Failed as exc:
        return FetchResult(host, exc.kind, None, exc.detail, answer.elapsed_s)


@functools.cache
def _resolver() -> concurrent.futures.Executor:
    # Lookups run in daemon threads: a hung resolver must not hold the command past its deadline
    # (asyncio's default pool is joined when the loop closes, and again at interpreter exit).
    from fleet_agent.sampler import DaemonThreadPool  # imported only when a host is named, not addressed

    pool: concurrent.futures.Executor = DaemonThreadPool(_RESOLVER_THREADS, "resolver")
    return pool


_RESOLVER_THREADS = 32


async def _resolve(loop: asyncio.AbstractEventLoop, host: Host) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, socket address) for each address ``host.address`` names, in the resolver's order."""
    lookup = functools.partial(socket.getaddrinfo, host.address, host.agent_port, type=socket.SOCK_STREAM)
    try:
        infos = await loop.run_in_executor(_resolver(), lookup)
    except (OSError, UnicodeError) as exc:  # gaierror; a name IDNA cannot encode
        raise _Failed(FetchKind.CONNECT_ERROR, f"cannot resolve {host.address}: "
                                               f"{getattr(exc, 'strerror', None) or exc}") from None
    return [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]


async def _connect_any(loop: asyncio.AbstractEventLoop, reader: _ResponseReader, host: Host,
                       addresses: Sequence[tuple[int, tuple[Any, ...]]]) -> None:
    """Connect ``reader`` to the first address that accepts; refused only when every one refuses."""
    errors: list[OSError] = []
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
            await loop.create_connection(lambda: reader, sock=sock)
            return
        except OSError as exc:
            sock.close()
            errors.append(exc)
        except BaseException:  # the timeout or the deadline struck
            sock.close()
            raise
    if not errors:
        raise _Failed(FetchKind.CONNECT_ERROR, f"cannot resolve {host.address}: no address")
    other = [e for e in errors if not isinstance(e, ConnectionRefusedError)]
    raise _connect_failure(host, other[0] if other else errors[0])


def _connect_failure(host: Host, exc: OSError) -> _Failed:
    if isinstance(exc, ConnectionRefusedError):
        return _Failed(FetchKind.REFUSED, f"connection refused ({host.agent_endpoint})")
    return _Failed(FetchKind.CONNECT_ERROR, f"cannot connect to {host.agent_endpoint}: {exc.strerror or exc}")


@functools.lru_cache(maxsize=4096)
def _ip_family(address: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return None


class _RawSocket:
    """A non-blocking socket driven by the loop's reader/writer callbacks, feeding a
    :class:`_ResponseReader` as a transport would: for thousands of short requests this costs a
    fraction of ``loop.create_connection`` (no resolver step, no transport or waiter futures)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: _ResponseReader, host: Host,
                 family: socket.AddressFamily) -> None:
        self.loop = loop
        self.proto = proto
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.pending = b""
        self.reading = self.writing = False
        self.closed = False
        self.connecting = False  # connect() said "in progress" and nothing has been sent yet

    def start(self) -> None:
        err = self.sock.connect_ex((self.host.address, self.host.agent_port))
        if err in (0, errno.EISCONN):
            self._connected()
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            # On loopback and fast LANs the handshake is often complete by now: send the request
            # straight away (a connection still being made says EAGAIN and the writer waits for it)
            # instead of one more event-loop round trip per host; a failed connect fails that send.
            self.connecting = True
            self._connected()
        else:
            self._connect_failed(err)

    def _connect_failed(self, err: int) -> None:
        exc = OSError(err, os.strerror(err))
        if err == errno.ECONNREFUSED:
            exc = ConnectionRefusedError(err, os.strerror(err))
        self.abort()
        if not self.proto.done.done():
            self.proto.done.set_exception(_connect_failure(self.host, exc))

    def _watch_write(self, callback: Callable[[], None]) -> None:
        self.loop.add_writer(self.fd, callback)
        self.writing = True

    def _connected(self) -> None:
        self.proto.connection_made(self)  # type: ignore[arg-type]  # the transport methods it uses
        if not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)
            self.reading = True

    # --- what _ResponseReader uses of a transport ---

    def write(self, data: bytes) -> None:
        self.pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._failed(exc)
            return
        if sent:
            self.connecting = False
        self.pending = self.pending[sent:]
        if self.pending and not self.writing:
            self._watch_write(self._flush)
        elif not self.pending and self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reading:
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        self.sock.close()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(exc)
            return
        if data:
            self.proto.data_received(data)
        else:
            self.proto.eof_received()
            self._lost(None)

    def _failed(self, exc: OSError) -> None:
        if self.connecting:  # the connection was never made
            self._connect_failed(exc.errno or errno.ECONNABORTED)
        else:
            self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.abort()
        self.proto.connection_lost(exc)


_READ_CHUNK = 256 * 1024
_MAX_HEAD_BYTES = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t !-~\x80-\xff]*))?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~\x80-\xff]*?)[ \t]*")
_HTTP_PREFIX = b"HTTP/"


class _ResponseReader(asyncio.Protocol):
    """One connection: send the request, then read one HTTP/1.1 response with a strict, minimal
    parser (status line, headers, a Content-Length body, or a body up to EOF when there is none).
    The body, or a :class:`_Failed` saying what was wrong, lands in ``done``."""

    def __init__(self, request: bytes, done: asyncio.Future[bytes], sent_token: bool) -> None:
        self.request = request
        self.done = done
        self.sent_token = sent_token
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.buf = bytearray()
        self.status = 0  # once the head of the final (non-1xx) response is parsed
        self.length: int | None = None  # Content-Length; None: the body runs to EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def close(self) -> None:
        if not self.done.done():
            self.done.cancel()  # nobody waits any more: a late failure must not be logged as unretrieved
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()  # nothing more to say; no lingering close

    def _finish(self, body: bytes | None = None, failure: _Failed | None = None) -> None:
        if not self.done.done():
            if failure is not None:
                self.done.set_exception(failure)
            else:
                self.done.set_result(body or b"")
        self.close()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.received += len(data)
        self.buf += data
        try:
            if not self.status:
                self._parse_head()
            if self.status and self.length is not None and len(self.buf) >= self.length:
                self._finish(bytes(self.buf[:self.length]))
            elif len(self.buf) > MAX_BODY_BYTES:
                raise _Failed(FetchKind.TOO_LARGE, f"response larger than {MAX_BODY_BYTES} bytes")
        except _Failed as exc:
            self._finish(failure=exc)
        except Exception as exc:  # noqa: BLE001 - a parser bug: this host's error, not a logged traceback
            self._finish(failure=_Failed(FetchKind.GARBAGE, f"cannot parse the response: "
                                                            f"{type(exc).__name__}: {exc}"))

    def _parse_head(self) -> None:
        buf = self.buf
        while not self.status:
            if not buf[:5] == _HTTP_PREFIX[:len(buf)]:
                raise _Failed(FetchKind.GARBAGE, "not an HTTP response: no HTTP status line")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD_BYTES:
                    raise _Failed(FetchKind.GARBAGE, "not an HTTP response: header block too large")
                first = buf.find(b"\r\n")
                if first >= 0 and not _STATUS_LINE.fullmatch(buf, 0, first):
                    raise _Failed(FetchKind.GARBAGE, "not an HTTP response: malformed status line")
                return
            if end > _MAX_HEAD_BYTES:  # the same verdict however TCP split the bytes
                raise _Failed(FetchKind.GARBAGE, "not an HTTP response: header block too large")
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[:end + 4]
            status_line = _STATUS_LINE.fullmatch(lines[0])
            if status_line is None:
                raise _Failed(FetchKind.GARBAGE, "not an HTTP response: malformed status line")
            status = int(status_line.group(1))
            length: int | None = None
            encoded = False
            for line in lines[1:]:
                header = _HEADER_LINE.fullmatch(line)
                if header is None:
                    raise _Failed(FetchKind.GARBAGE, "not an HTTP response: malformed header line")
                name = header.group(1).lower()
                if name == b"content-length":
                    value = header.group(2)
                    # (at most 18 digits: int() of a huge one raises, and no answer is that long)
                    if (not value.isdigit() or len(value) > 18
                            or (length is not None and length != int(value))):
                        raise _Failed(FetchKind.GARBAGE, "not an HTTP response: bad Content-Length")
                    length = int(value)
                elif name == b"transfer-encoding":
                    encoded = True
            if status < 200:
                continue  # an informational response (100 Continue): the real one follows
            reason = (status_line.group(2) or b"").decode("latin-1")
            if status in (401, 403):
                raise _Failed(FetchKind.UNAUTHORIZED, f"HTTP {status} {reason}: "
                              + ("token rejected" if self.sent_token else "a bearer token is required "
                                 "(inventory var fleet_agent_token)"))
            if status != 200:
                raise _Failed(FetchKind.HTTP_ERROR, f"HTTP {status} {reason}".strip())
            if encoded:  # agents frame with Content-Length; a body under any Transfer-Encoding is not theirs
                raise _Failed(FetchKind.GARBAGE, "not an HTTP response from an agent: Transfer-Encoding body")
            if length is not None and length > MAX_BODY_BYTES:
                raise _Failed(FetchKind.TOO_LARGE, f"response larger than {MAX_BODY_BYTES} bytes")
            self.status, self.length = status, length

    def eof_received(self) -> bool | None:
        self._closed(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)

    def _closed(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.status and self.length is None and exc is None:
            self._finish(bytes(self.buf))  # no Content-Length: the body ended with the connection
        elif exc is not None and not self.received:
            # Reset before a byte of an answer: an agent shedding load, or one that died holding
            # the connection. Nothing garbled arrived; like a failed connect, no agent answered.
            self._finish(failure=_Failed(FetchKind.CONNECT_ERROR, f"connection lost before any answer: "
                                                                  f"{getattr(exc, 'strerror', None) or exc}"))
        elif exc is not None:
            self._finish(failure=_Failed(FetchKind.GARBAGE, f"connection failed mid-response: "
                                                            f"{getattr(exc, 'strerror', None) or exc}"))
        elif self.received and not self.status:
            self._finish(failure=_Failed(FetchKind.GARBAGE, "not an HTTP response: the connection "
                                                            "closed inside the header block"))
        else:
            self._finish(failure=_Failed(FetchKind.GARBAGE, "connection closed before a complete response"
                                         + ("" if self.received else " (nothing received)")))


def _decode(body: bytes) -> NodeReport:
    try:
        return decode_node_report(body)
    except InvalidJson as exc:
        raise _Failed(FetchKind.INVALID_JSON, f"invalid JSON: {exc}") from None
    except SchemaError as exc:
        kind = FetchKind.SCHEMA_VERSION if str(exc).startswith("schema:") else FetchKind.BAD_SCHEMA
        raise _Failed(kind, str(exc)) from None
    except (TypeError, ValueError) as exc:  # a type the schema parser did not expect
        raise _Failed(FetchKind.BAD_SCHEMA, f"invalid report: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - one peer's bytes must not end the whole fleet's view
        raise _Failed(FetchKind.BAD_SCHEMA,
                      f"cannot decode the report: {type(exc).__name__}: {exc}") from None


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
    work = iter(range(len(hosts)))
    park = ParkClock(options.timeout_s)
    open_slots = asyncio.Semaphore(max(1, options.max_open))
    fetches: set[asyncio.Task[None]] = set()
    answers: collections.deque[tuple[int, _Answer]] = collections.deque()
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
            results[i] = _decoded(hosts[i], answer)

    async def fetch(i: int, slot: asyncio.Future[None]) -> None:
        try:
            got = await _fetch_body(hosts[i], tokens(hosts[i]), options.timeout_s, options.path)
            if isinstance(got, _Answer):
                answers.append((i, got))
                park.answered(got.elapsed_s)
            else:
                results[i] = got
                if got.kind not in _NO_ANSWER:
                    park.answered(got.elapsed_s)
        finally:
            open_slots.release()
            free(slot)

    async def worker() -> None:
        for i in work:  # a shared iterator: each index goes to exactly one worker
            await open_slots.acquire()
            started[i] = time.monotonic()
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
            why = (f"no answer before the overall deadline of {options.deadline_s:g}s" if started[i]
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


def agents_report(hosts: Sequence[Host], options: FanoutOptions = FanoutOptions(), *,
                  inventory: str = "", pattern: str = "all") -> FleetReport:
    """Fan out to ``hosts`` and build the fleet report from their answers."""
    started = time.monotonic()
    tokens = agent_tokens(hosts)
    with gc_paused():  # the reports and rows all stay alive: collection passes would free nothing
        results = fetch_all(hosts, lambda h: tokens[h.name], options)
        now = time.time()
        rows = []
        for r in results:
            h = r.host
            if r.report is not None:
                rows.append(host_row_from_node(h.name, h.address, h.agent_port, h.groups, r.report, now,
                                               expected_chips=h.expected_chips, host_vars=h.vars))
            else:
                rows.append(host_row_failed(h.name, h.address, h.agent_port, h.groups,
                                            reachable=r.kind.reachable, kind=r.kind.value, reason=r.detail,
                                            expected_chips=h.expected_chips, host_vars=h.vars))
    return FleetReport(generated_at=now, source="agents", hosts=rows, inventory=inventory, pattern=pattern,
                       duration_s=time.monotonic() - started)
