"""The HTTP of one request: the request bytes, and a strict, minimal HTTP/1.1 response parser.

Agents answer one short request per connection (``Connection: close``); anything that is not such
an answer is classified (:class:`~fleetctl.fanout.classify.Failed`), never trusted.
"""

from __future__ import annotations

import asyncio
import re

from fleetctl import __version__
from fleetctl.fanout.classify import Failed, FetchKind
from fleetctl.inventory import Host

MAX_BODY_BYTES = 8 * 1024 * 1024  # a node report of a few chips is kilobytes; anything near this is wrong


# Request bytes are built by hand (h11's header validation costs more per host than the whole
# response parse); only strings that cannot break the request line or a header go this way.
# (fullmatch, never `$`: `$` also matches before a final newline.)
_SAFE_ENDPOINT = re.compile(r"[A-Za-z0-9._:\[\]-]+")
_SAFE_TOKEN = re.compile(r"[!-~]+")  # visible ASCII: no spaces, CR or LF
_SAFE_PATH = re.compile(r"/[!-~]*")
_USER_AGENT = f"fleetctl/{__version__}"


def request_bytes(host: Host, token: str | None, path: str) -> bytes:
    endpoint = host.agent_endpoint
    if not (_SAFE_ENDPOINT.fullmatch(endpoint) and _SAFE_PATH.fullmatch(path)
            and (not token or _SAFE_TOKEN.fullmatch(token))):
        raise Failed(FetchKind.CONNECT_ERROR, "cannot build the request: the address or "
                                               "fleet_agent_token holds characters HTTP does not allow")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nUser-Agent: {_USER_AGENT}\r\n"
            f"Accept: application/json\r\n{auth}Connection: close\r\n\r\n").encode("ascii")


_MAX_HEAD_BYTES = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: ([\t !-~\x80-\xff]*))?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~\x80-\xff]*?)[ \t]*")
_HTTP_PREFIX = b"HTTP/"


class ResponseReader(asyncio.Protocol):
    """One connection: send the request, then read one HTTP/1.1 response with a strict, minimal
    parser (status line, headers, a Content-Length body, or a body up to EOF when there is none).
    The body, or a :class:`Failed` saying what was wrong, lands in ``done``."""

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

    def _finish(self, body: bytes | None = None, failure: Failed | None = None) -> None:
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
                raise Failed(FetchKind.TOO_LARGE, f"response larger than {MAX_BODY_BYTES} bytes")
        except Failed as exc:
            self._finish(failure=exc)
        except Exception as exc:  # noqa: BLE001 - a parser bug: this host's error, not a logged traceback
            self._finish(failure=Failed(FetchKind.GARBAGE, f"cannot parse the response: "
                                                            f"{type(exc).__name__}: {exc}"))

    def _parse_head(self) -> None:
        buf = self.buf
        while not self.status:
            if not buf[:5] == _HTTP_PREFIX[:len(buf)]:
                raise Failed(FetchKind.GARBAGE, "not an HTTP response: no HTTP status line")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD_BYTES:
                    raise Failed(FetchKind.GARBAGE, "not an HTTP response: header block too large")
                first = buf.find(b"\r\n")
                if first >= 0 and not _STATUS_LINE.fullmatch(buf, 0, first):
                    raise Failed(FetchKind.GARBAGE, "not an HTTP response: malformed status line")
                return
            if end > _MAX_HEAD_BYTES:  # the same verdict however TCP split the bytes
                raise Failed(FetchKind.GARBAGE, "not an HTTP response: header block too large")
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[:end + 4]
            status_line = _STATUS_LINE.fullmatch(lines[0])
            if status_line is None:
                raise Failed(FetchKind.GARBAGE, "not an HTTP response: malformed status line")
            status = int(status_line.group(1))
            length: int | None = None
            encoded = False
            for line in lines[1:]:
                header = _HEADER_LINE.fullmatch(line)
                if header is None:
                    raise Failed(FetchKind.GARBAGE, "not an HTTP response: malformed header line")
                name = header.group(1).lower()
                if name == b"content-length":
                    value = header.group(2)
                    # (at most 18 digits: int() of a huge one raises, and no answer is that long)
                    if (not value.isdigit() or len(value) > 18
                            or (length is not None and length != int(value))):
                        raise Failed(FetchKind.GARBAGE, "not an HTTP response: bad Content-Length")
                    length = int(value)
                elif name == b"transfer-encoding":
                    encoded = True
            if status < 200:
                continue  # an informational response (100 Continue): the real one follows
            reason = (status_line.group(2) or b"").decode("latin-1")
            if status in (401, 403):
                raise Failed(FetchKind.UNAUTHORIZED, f"HTTP {status} {reason}: "
                              + ("token rejected" if self.sent_token else "a bearer token is required "
                                 "(inventory var fleet_agent_token)"))
            if status != 200:
                raise Failed(FetchKind.HTTP_ERROR, f"HTTP {status} {reason}".strip())
            if encoded:  # agents frame with Content-Length; a body under any Transfer-Encoding is not theirs
                raise Failed(FetchKind.GARBAGE, "not an HTTP response from an agent: Transfer-Encoding body")
            if length is not None and length > MAX_BODY_BYTES:
                raise Failed(FetchKind.TOO_LARGE, f"response larger than {MAX_BODY_BYTES} bytes")
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
            self._finish(failure=Failed(FetchKind.CONNECT_ERROR, f"connection lost before any answer: "
                                                                  f"{getattr(exc, 'strerror', None) or exc}"))
        elif exc is not None:
            self._finish(failure=Failed(FetchKind.GARBAGE, f"connection failed mid-response: "
                                                            f"{getattr(exc, 'strerror', None) or exc}"))
        elif self.received and not self.status:
            self._finish(failure=Failed(FetchKind.GARBAGE, "not an HTTP response: the connection "
                                                            "closed inside the header block"))
        else:
            self._finish(failure=Failed(FetchKind.GARBAGE, "connection closed before a complete response"
                                         + ("" if self.received else " (nothing received)")))
