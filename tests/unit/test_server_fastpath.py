"""fleet_agent.server's fast path answers exactly what the h11 path answers, and only for requests
it fully understands (everything else goes to h11)."""

from __future__ import annotations

import asyncio
from typing import cast

import h11
import pytest
from fleet_agent.server import AgentHttp, AgentState, fast_request, response_bytes


def _state() -> AgentState:
    state = AgentState(5.0, clock=lambda: 1000.0)
    state.publish(b'{"schema":"fleet.node/v1"}\n', b"fleet_node_drained 0.0\n")
    return state


class _Writer:
    """The part of a StreamWriter that AgentHttp._send uses, keeping what was written."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None


def _via_h11(http: AgentHttp, request: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    writer = _Writer()
    response = http.route(event.method, event.target, list(event.headers))
    asyncio.run(http._send(conn, cast(asyncio.StreamWriter, writer), response, head=event.method == b"HEAD"))
    return writer.data


def _via_fast_path(http: AgentHttp, request: bytes) -> bytes:
    parsed = fast_request(request[:-4])
    assert parsed is not None, request
    method, target, headers = parsed
    out: bytes = response_bytes(http.route(method, target, headers), head=method == b"HEAD")
    return out


@pytest.mark.parametrize("token", [None, "s3cret"])
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/node HTTP/1.1\r\nHost: 127.0.0.1:9400\r\nUser-Agent: fleetctl/0.1\r\n"
        b"Accept: application/json\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nauthorization:   bearer wrong  \r\nConnection: close\r\n\r\n",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"HEAD /v1/node HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
)
def test_fast_path_answers_byte_for_byte_like_h11(request_bytes: bytes, token: str | None) -> None:
    http = AgentHttp(_state(), token=token)
    expected = _via_h11(http, request_bytes)
    assert _via_fast_path(http, request_bytes) == expected
    assert expected.startswith(b"HTTP/1.1 ")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/node HTTP/1.1\r\nHost: x",  # keep-alive: h11 handles the connection's cycles
        b"GET /v1/node HTTP/1.0\r\nHost: x\r\nConnection: close",
        b"POST /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close",
        b"GET /v1/node HTTP/1.1\r\nConnection: close",  # no Host: h11 answers 400
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\n folded: header\r\nConnection: close",
        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nConnection: close",
        b"GET v1/node HTTP/1.1\r\nHost: x\r\nConnection: close",
        b"\x16\x03\x01\x02\x00",
    ],
)
def test_anything_else_goes_to_h11(head: bytes) -> None:
    assert fast_request(head) is None
