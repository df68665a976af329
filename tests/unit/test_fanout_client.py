"""fleetctl.fanout.client, .sockets and .http: one host's request against real sockets, every fault
classified."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
from agent_peers import (
    FAST,
    Handler,
    auth_required,
    classify,
    closing,
    dripping,
    free_port,
    http,
    hung,
    node_json,
    read_request,
    replying,
    resetting,
    resetting_mid_answer,
)

from fleetctl.fanout import FanoutOptions, FetchKind, FetchResult, fan_out, fetch_all
from fleetctl.inventory import Host


def test_ok_report_is_parsed() -> None:
    r = classify(replying(http(node_json("n1"))))
    assert r.kind is FetchKind.OK
    assert r.report is not None and r.report.host == "n1" and len(r.report.chips) == 2


@pytest.mark.parametrize(
    ("handler", "kind", "detail"),
    [
        (None, FetchKind.REFUSED, "connection refused"),
        (hung, FetchKind.TIMEOUT, "connected, no answer within 0.5s"),
        (dripping, FetchKind.SLOW, "response incomplete after 0.5s"),
        (closing, FetchKind.GARBAGE, "closed"),
        (resetting, FetchKind.CONNECT_ERROR, "connection lost before any answer: Connection reset by peer"),
        (resetting_mid_answer, FetchKind.GARBAGE, "connection failed mid-response: Connection reset by peer"),
        (replying(b"SSH-2.0-OpenSSH_9.2\r\n"), FetchKind.GARBAGE, "not an HTTP response"),
        (replying(http(b"<html>oops</html>", ctype="text/html")), FetchKind.INVALID_JSON, "invalid JSON"),
        (replying(http(b"\xff\xfe\x00")), FetchKind.INVALID_JSON, "invalid JSON: invalid character"),
        (replying(http(b'{"host": "\xff"}')), FetchKind.INVALID_JSON, "invalid JSON: not UTF-8"),
        (replying(http(node_json(schema="fleet.node/v0"))), FetchKind.SCHEMA_VERSION, "fleet.node/v0"),
        (replying(http(b'{"schema": "fleet.node/v1", "host": "x"}')), FetchKind.BAD_SCHEMA, "missing"),
        (replying(http(b"[1, 2]")), FetchKind.BAD_SCHEMA, "expected a JSON object"),
        (replying(http(b"boom", "500 Internal Server Error")), FetchKind.HTTP_ERROR, "HTTP 500"),
        (replying(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
         FetchKind.GARBAGE, "Transfer-Encoding body"),
        (auth_required("s3cret"), FetchKind.UNAUTHORIZED, "a bearer token is required"),
    ],
)
def test_every_fault_is_classified(handler: Handler | None, kind: FetchKind, detail: str) -> None:
    r = classify(handler)
    assert r.kind is kind, r.detail
    assert detail in r.detail
    assert r.report is None


def test_token_is_sent_as_bearer_and_a_wrong_one_is_unauthorized() -> None:
    assert classify(auth_required("s3cret"), tokens={"n1": "s3cret"}).kind is FetchKind.OK
    wrong = classify(auth_required("s3cret"), tokens={"n1": "nope"})
    assert wrong.kind is FetchKind.UNAUTHORIZED and "token rejected" in wrong.detail
    assert "nope" not in wrong.detail


def test_a_token_that_would_break_the_request_is_refused_without_echoing_it() -> None:
    r = classify(replying(http(node_json())), tokens={"n1": "abc\r\nX-Injected: 1"})
    assert r.kind is FetchKind.CONNECT_ERROR
    assert "characters HTTP does not allow" in r.detail and "Injected" not in r.detail


def capturing(requests: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(http(node_json()))
        await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize("token", ["s3cret\n", "s3cret\r"])
def test_a_token_ending_in_a_line_break_is_not_sent(token: str) -> None:
    requests: list[bytes] = []
    r = classify(capturing(requests), tokens={"n1": token})
    assert r.kind is FetchKind.CONNECT_ERROR and "characters HTTP does not allow" in r.detail
    assert requests == []


def test_a_path_ending_in_a_line_break_is_not_sent() -> None:
    requests: list[bytes] = []
    options = FanoutOptions(timeout_s=0.5, deadline_s=5, concurrency=4, path="/v1/node\n")
    r = classify(capturing(requests), options)
    assert r.kind is FetchKind.CONNECT_ERROR and requests == []


def test_an_empty_token_is_no_token() -> None:
    requests: list[bytes] = []
    assert classify(capturing(requests), tokens={"n1": ""}).kind is FetchKind.OK
    assert b"authorization" not in requests[0].lower()


HUGE_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"


def named(name: str, address: str, port: int) -> Host:
    return Host(name=name, address=address, groups=(), vars={}, agent_port=port, agent_token=None,
                expected_chips=None)


async def fetch_named(address: str, handler: Handler | None, options: FanoutOptions = FAST) -> FetchResult:
    server = await asyncio.start_server(handler, "127.0.0.1", 0) if handler else None
    port = server.sockets[0].getsockname()[1] if server else free_port()
    try:
        return (await fan_out([named("n1", address, port)], lambda h: None, options))[0]
    finally:
        if server:
            server.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_a_content_length_too_long_for_int_is_garbage(address: str, caplog: pytest.LogCaptureFixture) -> None:
    # int() refuses over 4,300 digits: that ValueError once escaped into the event loop's log and
    # the host waited out its timeout. Both connect paths (address literal, resolved name).
    r = asyncio.run(fetch_named(address, replying(HUGE_LENGTH)))
    assert r.kind is FetchKind.GARBAGE and "bad Content-Length" in r.detail, r.detail
    assert not [rec for rec in caplog.records if rec.name == "asyncio"]


def test_a_header_block_over_the_limit_is_garbage_however_it_is_split() -> None:
    body = node_json()
    response = (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 16500
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    async def in_two(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response[:16400])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(response[16400:])
        await writer.drain()
        writer.close()

    for handler in (replying(response), in_two):
        r = classify(handler)
        assert r.kind is FetchKind.GARBAGE and "header block too large" in r.detail


def test_a_name_is_refused_only_when_every_address_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def dual_stack(name: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if name == "dual.test":  # IPv6 first, as resolvers order it; nothing listens on either
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(name, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dual_stack)
    r = asyncio.run(fetch_named("dual.test", None))
    assert r.kind is FetchKind.REFUSED, r.detail


def test_a_name_that_does_not_resolve_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(name: str, *args: Any, **kwargs: Any) -> Any:  # no DNS server needed (or reached)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    r = asyncio.run(fetch_named("no-such-host.invalid", None))
    assert r.kind is FetchKind.CONNECT_ERROR and "cannot resolve no-such-host.invalid" in r.detail


def test_a_hung_resolver_holds_neither_the_host_past_its_timeout_nor_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    release = threading.Event()

    def hung_lookup(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "hung.test":
            release.wait(10)  # a resolver that does not answer
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hung_lookup)
    try:
        started = time.monotonic()
        (r,) = fetch_all([named("n1", "hung.test", 9)], lambda h: None,
                         FanoutOptions(timeout_s=0.3, deadline_s=5.0, concurrency=4))
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert r.kind is FetchKind.TIMEOUT and "name resolution of hung.test timed out after 0.3s" in r.detail
    assert elapsed < 3.0  # asyncio's own resolver pool is joined when the loop closes: 10 s


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_a_connection_is_reset_once_its_answer_is_read_leaving_no_time_wait(address: str) -> None:
    # A FIN would leave each of thousands of sockets per round in TIME_WAIT for a minute. Both connect
    # paths (address literal, resolved name).
    seen: list[str] = []

    async def answers_then_listens(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = node_json("n1")
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        try:
            seen.append("fin" if await asyncio.wait_for(reader.read(), 5) == b"" else "data")
        except ConnectionResetError:
            seen.append("reset")
        writer.close()

    async def run() -> FetchResult:
        result = await fetch_named(address, answers_then_listens)
        for _ in range(200):  # the handler hears the close a moment later
            if seen:
                break
            await asyncio.sleep(0.01)
        return result

    r = asyncio.run(run())
    assert r.kind is FetchKind.OK and r.report is not None
    assert seen == ["reset"]
