"""fleet_agent.server: routing, auth, liveness, and HTTP abuse over a real loopback socket."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from http import HTTPStatus

import pytest
from fleet_agent.schema import ChipReport, GpuDetails, HostMetrics, NodeReport, Status, TpuDetails
from fleet_agent.server import (
    Admitted,
    AgentHttp,
    AgentState,
    ConnectionLimiter,
    bound_port,
    render_json,
    render_summary_json,
    start_server,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _state(clock: Clock | None = None) -> AgentState:
    state = AgentState(5.0, clock=clock or Clock())
    state.publish(b'{"schema":"fleet.node/v1"}\n', b"fleet_node_drained 0.0\n")
    return state


def test_routes() -> None:
    http = AgentHttp(_state())
    assert http.route(b"GET", b"/healthz", []).status == 200
    node = http.route(b"GET", b"/v1/node?pretty=1", [])
    assert node.status == 200 and node.content_type == "application/json"
    assert node.body.startswith(b'{"schema"')
    metrics = http.route(b"GET", b"/metrics", [])
    assert metrics.status == 200 and (metrics.content_type or "").startswith("text/plain; version=0.0.4")
    assert http.route(b"GET", b"/nope", []).status == 404
    post = http.route(b"POST", b"/v1/node", [])
    assert post.status == 405 and ("Allow", "GET, HEAD") in post.headers


def test_node_answer_carries_the_samples_age_on_the_agents_monotonic_clock() -> None:
    clock = Clock()
    state = AgentState(5.0, clock=clock)
    report = NodeReport(host="h", agent_version="0", sampled_at=1.0, interval_s=5.0, status=Status.HEALTHY,
                        chips_expected=None, chips=[], host_metrics=HostMetrics())
    state.publish(render_json(report), b"")
    http = AgentHttp(state)
    assert json.loads(http.route(b"GET", b"/v1/node", []).body)["sample_age_s"] == 0.0
    clock.t += 3.25
    assert json.loads(http.route(b"GET", b"/v1/node", []).body)["sample_age_s"] == 3.25


def test_before_first_sample() -> None:
    http = AgentHttp(AgentState(5.0, clock=Clock()))
    assert http.route(b"GET", b"/healthz", []).status == 200  # just started: alive
    assert http.route(b"GET", b"/v1/node", []).status == 503
    assert http.route(b"GET", b"/metrics", []).status == 503


def test_healthz_turns_503_after_three_missed_intervals() -> None:
    clock = Clock()
    state = _state(clock)
    http = AgentHttp(state)
    clock.t += 14.9
    assert http.route(b"GET", b"/healthz", []).status == 200
    clock.t += 0.2
    r = http.route(b"GET", b"/healthz", [])
    assert r.status == 503 and b"no sample for 15s" in r.body
    state.publish(b"{}", b"")
    assert http.route(b"GET", b"/healthz", []).status == 200


def test_lazy_metrics_render_once_per_sample() -> None:
    state = AgentState(5.0, clock=Clock())
    calls = []

    def render() -> bytes:
        calls.append(1)
        return b"x 1.0\n"

    state.publish(b"{}", render)
    http = AgentHttp(state)
    assert http.route(b"GET", b"/metrics", []).body == b"x 1.0\n"
    assert http.route(b"GET", b"/metrics", []).body == b"x 1.0\n"
    assert len(calls) == 1


@pytest.mark.parametrize("headers", [
    [],
    [(b"authorization", b"Bearer wrong")],
    [(b"authorization", b"Basic c2VjcmV0")],
    [(b"authorization", b"Bearer secre")],
])
def test_token_required_and_401_says_only_bearer(headers: list[tuple[bytes, bytes]]) -> None:
    http = AgentHttp(_state(), token="secret")
    for path in (b"/v1/node", b"/metrics", b"/unknown"):
        r = http.route(b"GET", path, headers)
        assert r.status == 401 and r.body == b"" and r.headers == [("WWW-Authenticate", "Bearer")]


def test_right_token_and_open_healthz() -> None:
    http = AgentHttp(_state(), token="secret")
    assert http.route(b"GET", b"/v1/node", [(b"authorization", b"Bearer secret")]).status == 200
    assert http.route(b"GET", b"/metrics", [(b"authorization", b"bearer secret")]).status == 200
    assert http.route(b"GET", b"/healthz", []).status == 200


def test_render_json_matches_to_dict() -> None:
    chip = ChipReport(index=0, kind="gpu", vendor="nvidia", model="m", uuid="u", pci_bus_id="p",
                      status=Status.DEGRADED, temperature_c=50.5,
                      gpu=GpuDetails(xid_counts={"79": 1}, throttle_reasons=["hw_thermal"]))
    report = NodeReport(host="h", agent_version="0", sampled_at=1.0, interval_s=5.0, status=Status.DEGRADED,
                        chips_expected=None, chips=[chip], host_metrics=HostMetrics(load1=0.5))
    assert json.loads(render_json(report)) == report.to_dict()
    chip.power_w = float("nan")  # not JSON: null, as to_dict makes it
    doc = json.loads(render_json(report))
    assert doc == report.to_dict() and doc["chips"][0]["power_w"] is None


def _mixed_report() -> NodeReport:
    gpu = ChipReport(index=0, kind="gpu", vendor="nvidia", model="m", uuid="u0", pci_bus_id="p0",
                     status=Status.DEGRADED, temperature_c=50.5, power_w=300.0,
                     gpu=GpuDetails(xid_counts={"79": 1}, ecc_volatile_uncorrected=2))
    tpu = ChipReport(index=1, kind="tpu", vendor="google", model="v5e", uuid="u1", pci_bus_id="p1",
                     status=Status.HEALTHY, tpu=TpuDetails())
    return NodeReport(host="h", agent_version="0", sampled_at=1.0, interval_s=5.0, status=Status.DEGRADED,
                      chips_expected=2, chips=[gpu, tpu], host_metrics=HostMetrics(load1=0.5))


def test_summary_json_is_the_report_without_the_chips_vendor_detail() -> None:
    report = _mixed_report()
    full, summary = json.loads(render_json(report)), json.loads(render_summary_json(report))
    assert full["chips"][0]["gpu"]["xid_counts"] == {"79": 1} and full["chips"][1]["tpu"] is not None
    for chip in full["chips"]:
        chip["gpu"] = chip["tpu"] = None
    assert summary == full
    # The report itself is left whole (the agent serves both views of one sample).
    assert report.chips[0].gpu is not None and report.chips[1].tpu is not None
    # sample_age_s stays the last field: each answer stamps it in.
    assert render_summary_json(report).endswith(b'"sample_age_s":null}\n')


def test_node_views_and_the_summary_rendered_once_per_sample() -> None:
    clock = Clock()
    state = AgentState(5.0, clock=clock)
    report = _mixed_report()
    calls = []

    def summary() -> bytes:
        calls.append(1)
        return render_summary_json(report)

    state.publish(render_json(report), b"", summary)
    http = AgentHttp(state)
    full = json.loads(http.route(b"GET", b"/v1/node", []).body)
    assert full["chips"][0]["gpu"] is not None
    assert json.loads(http.route(b"GET", b"/v1/node?view=full&pretty=1", []).body) == full
    clock.t += 2.5
    for target in (b"/v1/node?view=summary", b"/v1/node?x=1&view=summary"):
        doc = json.loads(http.route(b"GET", target, []).body)
        assert doc["chips"][0]["gpu"] is None and doc["chips"][1]["tpu"] is None
        assert doc["sample_age_s"] == 2.5 and doc["host"] == "h"
    assert calls == [1]
    state.publish(render_json(report), b"", summary)  # a new sample: rendered again on first use
    http.route(b"GET", b"/v1/node?view=summary", [])
    assert calls == [1, 1]
    # Without a summary renderer (a caller that publishes one body): the whole report.
    state.publish(render_json(report), b"")
    assert json.loads(http.route(b"GET", b"/v1/node?view=summary", []).body)["chips"][0]["gpu"] is not None


@pytest.mark.parametrize("target", [b"/v1/node?view=", b"/v1/node?view=Summary", b"/v1/node?view",
                                    b"/v1/node?view=full&view=x", b"/v1/node?view=summary&view=x"])
def test_an_unknown_view_is_a_400_naming_the_views(target: bytes) -> None:
    r = AgentHttp(_state()).route(b"GET", target, [])
    assert r.status == 400 and r.body == b"unknown view: /v1/node?view= takes full or summary\n"
    # Behind a token, a client without it learns nothing more than 401.
    assert AgentHttp(_state(), token="secret").route(b"GET", target, []).status == 401


@pytest.mark.parametrize(("target", "gpu"), [
    (b"/v1/node?view=%73ummary", None), (b"/v1/node?view=summary&view=summary", None),
    (b"/v1/node?VIEW=summary", "detail"), (b"/v1/node?", "detail"), (b"/v1/node?view=full", "detail"),
])
def test_views_as_any_http_client_may_spell_them(target: bytes, gpu: str | None) -> None:
    state = AgentState(5.0, clock=Clock())
    report = _mixed_report()
    state.publish(render_json(report), b"", lambda: render_summary_json(report))
    doc = json.loads(AgentHttp(state).route(b"GET", target, []).body)
    assert (doc["chips"][0]["gpu"] and "detail") == gpu


# --- the connection limiter ------------------------------------------------------------------------


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.slot_group: OrderedDict[Admitted, None] | None = None
        self.since = 0.0
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def _admitted(limiter: ConnectionLimiter, *names: str, at: float = 0.0) -> list[FakeConn]:
    conns = [FakeConn(n) for n in names]
    for i, c in enumerate(conns):
        assert limiter.acquire(c, at + i)
    return conns


def test_the_limiter_evicts_the_unproven_connection_that_waited_longest() -> None:
    limiter = ConnectionLimiter(3)
    a, b, c = _admitted(limiter, "a", "b", "c")
    limiter.served(a, 10.0, trusted=False)  # a was served at 10: b (since 1) has waited longest
    d = FakeConn("d")
    assert limiter.acquire(d, 11.0)
    assert (a.evicted, b.evicted, c.evicted) == (False, True, False)
    assert limiter.active == 3 and limiter.evicted == 1
    e = FakeConn("e")
    assert limiter.acquire(e, 12.0)  # c (since 2) before a (served at 10)
    assert c.evicted and not a.evicted
    assert limiter.active == 3 and limiter.evicted == 2


def test_trusted_connections_go_last_and_busy_ones_never() -> None:
    limiter = ConnectionLimiter(3)
    a, b, c = _admitted(limiter, "a", "b", "c")
    limiter.served(a, 1.0, trusted=True)
    limiter.hold(b)  # writing an answer
    limiter.served(c, 50.0, trusted=True)
    d = FakeConn("d")
    assert limiter.acquire(d, 60.0)  # no unproven connection: the least recently served trusted one
    assert a.evicted and not b.evicted and not c.evicted
    limiter.hold(c)
    limiter.hold(d)
    assert not limiter.acquire(FakeConn("e"), 70.0)  # every slot is busy: refused
    assert limiter.active == 3
    limiter.served(d, 80.0, trusted=False)
    f = FakeConn("f")
    assert limiter.acquire(f, 90.0) and d.evicted
    for conn in (b, c, f):
        limiter.release(conn)
    assert limiter.active == 0


def test_abort_all_ends_every_admitted_connection() -> None:
    limiter = ConnectionLimiter(8)
    conns = _admitted(limiter, "a", "b", "c", "d")
    limiter.served(conns[1], 5.0, trusted=True)
    limiter.hold(conns[2])
    limiter.abort_all()
    assert all(c.evicted for c in conns) and limiter.active == 0


# --- over a socket ---------------------------------------------------------------------------------


class Served:
    def __init__(self, http: AgentHttp) -> None:
        self.http = http
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            server = await start_server(self.http, "127.0.0.1", 0)
            self.port = bound_port(server)
            self.ready.set()
            self._stop = asyncio.Event()
            await self._stop.wait()
            server.close()

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(AgentHttp(_state(), request_timeout_s=0.5, limiter=ConnectionLimiter(4)))
    yield s
    s.stop()


def _read_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"closed early: {buf!r}"
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest


def test_keep_alive_serves_two_requests_on_one_connection(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = _read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok\n"
        s.sendall(b"HEAD /v1/node HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        assert buf.startswith(b"HTTP/1.1 200") and buf.endswith(b"\r\n\r\n")  # HEAD: no body


def test_bad_request_line_gets_400_and_close(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 400")


def test_huge_header_gets_431(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        try:
            reply = _read_all(s)
        except ConnectionResetError:
            reply = b""
    # 431, or a reset when the server closes with the rest of the header unread.
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(s)[0].startswith(b"HTTP/1.1 200 OK")


def test_partial_request_is_dropped_after_the_read_timeout(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert _read_all(s) == b""  # closed by the server, nothing sent


def test_request_with_body_is_answered_then_closed(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" in reply.lower()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) ``sock`` without sending anything more."""
    try:
        return _read_all(sock) == b""
    except ConnectionResetError:
        return True


def _wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_newcomer_at_the_cap_takes_the_slot_of_the_longest_idle_connection(served: Served) -> None:
    held = [served.connect() for _ in range(4)]
    try:
        for h in held:  # served, then idle on keep-alive; the first has waited longest
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_response(h)
        with served.connect() as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(extra)[0].startswith(b"HTTP/1.1 200")
        assert _closed_by_server(held[0])
        held[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the others keep theirs
        assert _read_response(held[1])[0].startswith(b"HTTP/1.1 200")
        assert served.http.limiter.evicted == 1
    finally:
        for h in held:
            h.close()
    assert _wait_for(lambda: served.http.limiter.active == 0)


STALLED = b"GET /v1/node HTTP/1.1\r\nHost: x\r\nUser-Agent: sl"  # never finished


def test_hundreds_of_stalled_partial_requests_do_not_silence_the_agent() -> None:
    # The connections never time out on their own in this test (30 s): only the limiter can help.
    s = Served(AgentHttp(_state(), token="secret", request_timeout_s=30, limiter=ConnectionLimiter(32)))
    scraper = s.connect()  # an authenticated keep-alive scraper, there before the flood
    stalled: list[socket.socket] = []
    try:
        scraper.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n")
        assert _read_response(scraper)[0].startswith(b"HTTP/1.1 200")
        for _ in range(300):
            c = s.connect()
            c.sendall(STALLED)
            stalled.append(c)
        assert _wait_for(lambda: s.http.limiter.active == 32)
        for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        b"GET /v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
                        b"Connection: close\r\n\r\n"):
            t0 = time.monotonic()
            with s.connect() as c:
                c.settimeout(2)
                c.sendall(request)
                reply = _read_all(c)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:60]
            assert time.monotonic() - t0 < 1.5
        # The authenticated keep-alive connection kept its slot through the flood.
        scraper.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\r\n")
        head, body = _read_response(scraper)
        assert head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"schema"')
        assert s.http.limiter.active <= 32
    finally:
        scraper.close()
        for c in stalled:
            c.close()
        s.stop()


def test_the_same_flood_served_without_a_token_still_answers() -> None:
    # No token: nothing can prove itself; the stalled connections still give way to newcomers.
    s = Served(AgentHttp(_state(), request_timeout_s=30, limiter=ConnectionLimiter(16)))
    stalled = [s.connect() for _ in range(200)]
    try:
        for c in stalled:
            c.sendall(STALLED)
        assert _wait_for(lambda: s.http.limiter.active == 16)
        with s.connect() as c:
            c.settimeout(2)
            c.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(c).startswith(b"HTTP/1.1 200")
    finally:
        for c in stalled:
            c.close()
        s.stop()


def test_401_to_a_request_with_a_body_leaves_later_401s_alone() -> None:
    s = Served(AgentHttp(_state(), token="secret", request_timeout_s=0.5))
    try:
        for _ in range(2):
            with s.connect() as c:
                c.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
                reply = _read_all(c)
            assert reply.startswith(b"HTTP/1.1 401") and reply.lower().count(b"connection: close") == 1
        assert s.http.route(b"GET", b"/v1/node", []).headers == [("WWW-Authenticate", "Bearer")]
    finally:
        s.stop()


@pytest.mark.parametrize("connection", [b"Connection: close\r\n", b""])  # one-shot / keep-alive
@pytest.mark.parametrize("size", [12_000, 40_000])
def test_a_header_block_over_the_limit_gets_431_however_it_arrives(served: Served, connection: bytes,
                                                                   size: int) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + connection + b"X-Big: " + b"a" * size + b"\r\n\r\n"
    with served.connect() as s:
        s.sendall(request)  # in one write: the whole block may arrive in one read
        s.shutdown(socket.SHUT_WR)
        try:
            reply = _read_all(s)
        except ConnectionResetError:
            reply = b"(reset)"
    assert reply.startswith(b"HTTP/1.1 431") or reply == b"(reset)", reply[:40]


def test_the_request_must_arrive_whole_within_the_timeout_of_the_connection() -> None:
    # Bytes arriving do not start a fresh timeout: a client trickling its header a byte at a time,
    # each byte far within the 1 s timeout of the one before, is cut off while it is still sending
    # (the trickle would last 20 s). Nothing here counts on a margin of the clock: the event waited
    # for is the server closing the connection.
    s = Served(AgentHttp(_state(), request_timeout_s=1.0, limiter=ConnectionLimiter(4)))
    trickle = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400
    closed_while_sending, reply = False, b""
    try:
        with s.connect() as c:
            for byte in trickle:
                try:
                    c.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_while_sending = True
                    break
                readable, _, _ = select.select([c], [], [], 0.05)  # the trickle's pace
                if readable:
                    try:
                        reply = c.recv(65536)
                    except ConnectionResetError:
                        reply = b""
                    closed_while_sending = True
                    break
    finally:
        s.stop()
    assert closed_while_sending and reply == b""


def test_an_evicted_connection_hands_its_slot_over_exactly_once() -> None:
    # Cap 1: the newcomer takes the slot of the connection waiting for its first request; the
    # evicted one going away later must not free the slot a second time.
    s = Served(AgentHttp(_state(), request_timeout_s=5, limiter=ConnectionLimiter(1)))
    try:
        first = s.connect()
        assert _wait_for(lambda: s.http.limiter.active == 1)
        second = s.connect()
        assert _wait_for(lambda: s.http.limiter.evicted == 1)
        assert _closed_by_server(first)
        first.close()
        third = s.connect()  # takes the second's slot in turn
        assert _wait_for(lambda: s.http.limiter.evicted == 2)
        assert s.http.limiter.active == 1
        third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = _read_response(third)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok\n"
        assert _closed_by_server(second)
        second.close()
        third.close()
        assert _wait_for(lambda: s.http.limiter.active == 0)
        threading.Event().wait(0.1)
        assert s.http.limiter.active == 0
    finally:
        s.stop()


@pytest.mark.parametrize("connection", [b"", b"Connection: close\r\n"])  # keep-alive / one-shot
def test_a_client_that_never_reads_is_cut_off_and_frees_its_socket(connection: bytes) -> None:
    big = b"x" * (8 << 20)  # more than socket buffers hold: the answer cannot all be written
    state = AgentState(5.0, clock=Clock())
    state.publish(big, b"")
    s = Served(AgentHttp(state, request_timeout_s=0.3, limiter=ConnectionLimiter(2)))
    try:
        clients = [s.connect() for _ in range(3)]
        for c in clients:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n" + connection + b"\r\n")  # then never read
        # Each is aborted once its drain times out: the server then holds none of them any more.
        assert _wait_for(lambda: s.http.limiter.active == 0 and not _server_side_open(s), timeout=30)
    finally:
        for c in clients:
            c.close()
        s.stop()


def _server_side_open(s: Served) -> bool:
    """Whether the agent still has an established connection on its port (from /proc/net/tcp)."""
    port = f"{s.port:04X}"
    with open("/proc/net/tcp") as fh:
        next(fh)
        return any(line.split()[1].endswith(":" + port) and line.split()[3] == "01" for line in fh)


# --- what a client sees (moved from the removed fast path's tests: one parser answers them all) ---


def _expected_one_shot_answer(http: AgentHttp, request: bytes) -> bytes:
    """The exact bytes a one-shot request (``Connection: close``) gets: status line, Content-Length,
    the route's own headers, Content-Type, Cache-Control, Connection: close, then the body (none
    for HEAD)."""
    line, *header_lines = request.split(b"\r\n\r\n")[0].split(b"\r\n")
    method, target, _ = line.split(b" ")
    headers = [(k.strip().lower(), v.strip()) for k, v in (h.split(b":", 1) for h in header_lines)]
    response = http.route(method, target, headers)
    lines = [b"HTTP/1.1 %d %s" % (response.status, HTTPStatus(response.status).phrase.encode()),
             b"Content-Length: %d" % len(response.body)]
    lines += [f"{k}: {v}".encode() for k, v in response.headers]
    if response.content_type:
        lines.append(b"Content-Type: " + response.content_type.encode())
    lines += [b"Cache-Control: no-store", b"Connection: close", b"", b""]
    return b"\r\n".join(lines) + (b"" if method == b"HEAD" else response.body)


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
def test_a_one_shot_request_gets_exactly_its_answer_and_a_close(request_bytes: bytes,
                                                                 token: str | None) -> None:
    s = Served(AgentHttp(_state(), token=token, request_timeout_s=2))
    try:
        with s.connect() as c:
            c.sendall(request_bytes)
            reply = _read_all(c)  # the server closes after the answer
        expected = _expected_one_shot_answer(s.http, request_bytes)
        assert reply == expected
        assert expected.startswith(b"HTTP/1.1 ")
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /v1/node HTTP/1.0\r\nHost: x\r\nConnection: close", 200),
        (b"POST /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close", 405),
        (b"GET /v1/node HTTP/1.1\r\nConnection: close", 400),  # no Host
        (b"GET /v1/node HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close", 400),
        (b"GET /v1/node HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\nConnection: close", 400),
        (b"GET v1/node HTTP/1.1\r\nHost: x\r\nConnection: close", 404),
        (b"\x16\x03\x01\x02\x00", 400),  # a TLS hello
    ],
)
def test_unusual_requests_get_an_answer_and_a_close(served: Served, head: bytes, status: int) -> None:
    with served.connect() as c:
        c.sendall(head + b"\r\n\r\n")
        reply = _read_all(c)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:60]
