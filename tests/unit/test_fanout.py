"""The fan-out client against real loopback sockets whose peers misbehave in every way we classify."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fleet_agent.schema import ChipReport, HostMetrics, NodeReport, Status

from fleetctl import fanout
from fleetctl.fanout import (
    FanoutOptions,
    FetchKind,
    FetchResult,
    ParkClock,
    agents_report,
    fan_out,
    fetch_all,
    park_after,
)
from fleetctl.inventory import Host, Secret

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def node_json(host: str = "n1", *, schema: str | None = None) -> bytes:
    chips = [
        ChipReport(
            index=i,
            kind="gpu",
            vendor="nvidia",
            model="NVIDIA H100 80GB HBM3",
            uuid=f"GPU-{i}",
            pci_bus_id=f"0000:0{i}:00.0",
            status=Status.HEALTHY,
            temperature_c=40.0 + i,
            utilization_pct=50.0,
        )
        for i in range(2)
    ]
    doc = NodeReport(
        host=host,
        agent_version="0.1.0",
        sampled_at=time.time(),
        interval_s=5.0,
        status=Status.HEALTHY,
        chips_expected=2,
        chips=chips,
        host_metrics=HostMetrics(),
    ).to_dict()
    if schema is not None:
        doc["schema"] = schema
    return json.dumps(doc).encode()


def http(body: bytes, status: str = "200 OK", ctype: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def replying(payload: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(payload)
        await writer.drain()
        writer.close()

    return handle


async def hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(30)


async def dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    for byte in http(node_json()):
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.05)


async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # An agent shedding load: it reads the request, then aborts (linger 0: an RST, not a FIN).
    await read_request(reader)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def resetting_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(http(node_json())[:40])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def auth_required(token: str) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if f"authorization: bearer {token}".encode() in request.lower():
            writer.write(http(node_json()))
        else:
            writer.write(http(b'{"error": "unauthorized"}', "401 Unauthorized"))
        await writer.drain()
        writer.close()

    return handle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host(name: str, port: int, token: str | None = None) -> Host:
    return Host(
        name=name,
        address="127.0.0.1",
        groups=("gpu_nodes",),
        vars={},
        agent_port=port,
        agent_token=Secret(plain=token) if token else None,
        expected_chips=None,
    )


async def run_against(
    handlers: dict[str, Handler | None], options: FanoutOptions, tokens: dict[str, str] | None = None
) -> dict[str, FetchResult]:
    servers = []
    hosts = []
    for name, handler in handlers.items():
        if handler is None:  # nothing listens: refused
            hosts.append(host(name, free_port()))
            continue
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        hosts.append(host(name, server.sockets[0].getsockname()[1]))
    try:
        results = await fan_out(hosts, lambda h: (tokens or {}).get(h.name), options)
    finally:
        for server in servers:
            server.close()
    return {r.host.name: r for r in results}


FAST = FanoutOptions(timeout_s=0.5, deadline_s=5.0, concurrency=16)


def classify(
    handler: Handler | None, options: FanoutOptions = FAST, tokens: dict[str, str] | None = None
) -> FetchResult:
    return asyncio.run(run_against({"n1": handler}, options, tokens))["n1"]


def test_ok_report_is_parsed() -> None:
    r = classify(replying(http(node_json("n1"))))
    assert r.kind is FetchKind.OK
    assert r.report is not None and r.report.host == "n1" and len(r.report.chips) == 2


@pytest.mark.parametrize(
    ("handler", "kind", "detail"),
    [
        (None, FetchKind.REFUSED, "connection refused"),
        (hung, FetchKind.TIMEOUT, "no response within 0.5s"),
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


def test_reachability_of_kinds() -> None:
    assert not FetchKind.TIMEOUT.reachable and not FetchKind.REFUSED.reachable
    assert not FetchKind.DEADLINE.reachable
    assert FetchKind.GARBAGE.reachable and FetchKind.UNAUTHORIZED.reachable and FetchKind.SLOW.reachable


def test_hostile_hosts_do_not_delay_the_others_and_everyone_is_classified() -> None:
    handlers: dict[str, Handler | None] = {f"ok{i}": replying(http(node_json(f"ok{i}"))) for i in range(20)}
    handlers |= {f"hung{i}": hung for i in range(5)}
    handlers |= {"refused": None, "garbage": replying(b"\x00\x01\x02 not http\r\n\r\n")}
    started = time.monotonic()
    results = asyncio.run(run_against(handlers, FanoutOptions(timeout_s=0.5, deadline_s=5, concurrency=64)))
    elapsed = time.monotonic() - started
    assert set(results) == set(handlers)
    assert all(results[f"ok{i}"].kind is FetchKind.OK for i in range(20))
    assert all(results[f"hung{i}"].kind is FetchKind.TIMEOUT for i in range(5))
    assert results["refused"].kind is FetchKind.REFUSED
    assert results["garbage"].kind is FetchKind.GARBAGE
    assert elapsed < 3.0  # one timeout in parallel, not five in a row (generous for a loaded CI box)


def test_overall_deadline_cancels_what_is_left() -> None:
    # One worker, three hung hosts, each waiting aside after 0.1 s: the deadline passes while the
    # second holds the worker; the third never starts.
    handlers: dict[str, Handler | None] = {"a": hung, "b": hung, "c": hung}
    results = asyncio.run(run_against(handlers, FanoutOptions(timeout_s=10, deadline_s=0.15, concurrency=1)))
    assert [results[n].kind for n in "abc"] == [FetchKind.DEADLINE] * 3
    assert "no answer before the overall deadline" in results["a"].detail
    assert "not asked" in results["c"].detail


def test_agents_report_builds_rows_for_every_host() -> None:
    async def scenario() -> None:
        good = await asyncio.start_server(replying(http(node_json("good"))), "127.0.0.1", 0)
        bad = await asyncio.start_server(replying(b"garbage\r\n\r\n"), "127.0.0.1", 0)
        hosts = [
            host("good", good.sockets[0].getsockname()[1]),
            host("bad", bad.sockets[0].getsockname()[1]),
            host("gone", free_port()),
        ]
        loop = asyncio.get_running_loop()
        # agents_report runs its own event loop: call it from a worker thread.
        report = await loop.run_in_executor(None, lambda: agents_report(hosts, FAST, pattern="all"))
        good.close()
        bad.close()
        states = {h.name: (h.status.value, h.reason_kind) for h in report.hosts}
        assert states == {
            "good": ("healthy", None),
            "bad": ("error", "garbage"),
            "gone": ("unreachable", "refused"),
        }
        assert report.exit_code == 1

    asyncio.run(scenario())


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
    assert r.kind is FetchKind.TIMEOUT and "name lookup of hung.test unfinished after 0.3s" in r.detail
    assert elapsed < 3.0  # asyncio's own resolver pool is joined when the loop closes: 10 s


def test_park_clock_waits_longer_only_when_answers_slow_down() -> None:
    clock = ParkClock(timeout_s=2.0)
    assert clock.wait_s() == park_after(2.0) == 0.1  # nothing answered yet (or only hung hosts)
    for _ in range(50):
        clock.answered(0.003)  # agents answering in milliseconds: hung hosts step aside early
    assert clock.wait_s() == 0.1
    for _ in range(50):
        clock.answered(0.2)  # an overloaded peer: stepping aside would only pile more onto it
    assert 0.7 < clock.wait_s() <= 0.8
    for _ in range(50):
        clock.answered(5.0)
    assert clock.wait_s() == 1.0  # never more than half the timeout


def test_one_slow_answer_among_fast_ones_barely_moves_the_park_clock() -> None:
    clock = ParkClock(timeout_s=5.0)
    for _ in range(50):
        clock.answered(0.005)
    clock.answered(4.5)  # one slow agent: hung hosts must not hold their slots 18x longer for it
    assert clock.wait_s() <= 0.11


def test_an_overloaded_peer_is_not_flooded_into_timeouts() -> None:
    # One server answering one request at a time, 30 ms each: 20 requests in flight wait 0.6 s,
    # 120 hosts take 3.6 s in all. A client that parked every request not answered within 0.1 s
    # would soon have all 120 queued at once and the last ones would time out; answers slowing
    # down must hold the requests in their slots instead.
    lock = asyncio.Lock()
    payload = http(node_json("busy"))

    async def serial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        async with lock:
            await asyncio.sleep(0.03)
            writer.write(payload)
            await writer.drain()
        writer.close()

    async def scenario() -> list[FetchResult]:
        server = await asyncio.start_server(serial, "127.0.0.1", 0, backlog=128)
        port = server.sockets[0].getsockname()[1]
        try:
            return await fan_out([host(f"n{i}", port) for i in range(120)], lambda h: None,
                                 FanoutOptions(timeout_s=1.5, deadline_s=30, concurrency=20))
        finally:
            server.close()

    kinds = [r.kind for r in asyncio.run(scenario())]
    assert kinds == [FetchKind.OK] * 120, {k: kinds.count(k) for k in set(kinds)}


def test_every_request_is_out_before_reports_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Decoding costs more CPU than fetching: a hung host at the end of a large fleet must start its
    # timeout before the CPU work for all the hosts ahead of it, not after.
    events: list[str] = []
    real_decode, real_request = fanout._decode, fanout._request_bytes

    def decode(body: bytes) -> NodeReport:
        events.append("decode")
        return real_decode(body)

    def request(h: Host, token: str | None, path: str) -> bytes:
        events.append(f"ask {h.name}")
        return real_request(h, token, path)

    monkeypatch.setattr(fanout, "_decode", decode)
    monkeypatch.setattr(fanout, "_request_bytes", request)
    handlers: dict[str, Handler | None] = {f"ok{i}": replying(http(node_json(f"ok{i}"))) for i in range(40)}
    handlers["last"] = hung
    results = asyncio.run(run_against(handlers, FanoutOptions(timeout_s=0.5, deadline_s=5, concurrency=8)))
    assert all(results[f"ok{i}"].kind is FetchKind.OK for i in range(40))
    assert results["last"].kind is FetchKind.TIMEOUT
    assert events.index("ask last") < events.index("decode")
    assert events.count("decode") == 40


def test_answers_received_before_the_deadline_are_decoded_after_it() -> None:
    # The deadline passes while a hung host holds the only worker; the answers already in are
    # reports, not "deadline".
    handlers: dict[str, Handler | None] = {f"ok{i}": replying(http(node_json(f"ok{i}"))) for i in range(3)}
    handlers |= {"hung": hung, "never": hung}
    results = asyncio.run(run_against(handlers, FanoutOptions(timeout_s=10, deadline_s=0.6, concurrency=1)))
    assert [results[f"ok{i}"].kind for i in range(3)] == [FetchKind.OK] * 3
    assert results["hung"].kind is FetchKind.DEADLINE and results["never"].kind is FetchKind.DEADLINE


def test_a_decoder_failure_is_that_hosts_error_not_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetctl.fanout as fanout

    def broken(body: bytes) -> None:
        raise RecursionError("nested too deep")

    monkeypatch.setattr(fanout, "decode_node_report", broken)
    with pytest.raises(fanout._Failed) as err:
        fanout._decode(b"{}")
    assert err.value.kind is FetchKind.BAD_SCHEMA and "RecursionError: nested too deep" in err.value.detail
