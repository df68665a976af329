"""fleetctl.fanout under slow shared things: names whose lookups hang, a resolver with few threads,
connections that never complete. A healthy host is never reported unreachable because of another
host's name, and every timeout names the step that ran out."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from agent_peers import Handler, http, hung, node_json, replying

from fleetctl.fanout import FanoutOptions, FetchKind, FetchResult, fan_out, fetch_all
from fleetctl.fanout import client as fanout_client
from fleetctl.inventory import Host

if TYPE_CHECKING:
    from fleetctl.fanout.resolver import Resolver


def named(name: str, port: int, address: str | None = None) -> Host:
    return Host(name=name, address=address or name, groups=(), vars={}, agent_port=port, agent_token=None,
                expected_chips=None)


class StubDns:
    """socket.getaddrinfo for the tests: ``*.hang.test`` never answers (until released), ``*.slow.test``
    answers after ``slow_s``, every other ``*.test`` name is 127.0.0.1; lookups are counted."""

    def __init__(self, slow_s: float = 0.0) -> None:
        self.release = threading.Event()
        self.slow_s = slow_s
        self.asked: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, name: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if not name.endswith(".test"):
            return self.real(name, port, *args, **kwargs)
        self.asked.append(name)
        if name.endswith(".hang.test"):
            self.release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name.endswith(".slow.test"):
            time.sleep(self.slow_s)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port or 0))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubDns]:
    stub = StubDns()
    monkeypatch.setattr(socket, "getaddrinfo", stub)
    try:
        yield stub
    finally:
        stub.release.set()  # the hung lookups end; their threads exit


def own_resolver(monkeypatch: pytest.MonkeyPatch, threads: int, max_threads: int) -> Resolver:
    from fleetctl.fanout.resolver import Resolver

    r = Resolver(threads=threads, max_threads=max_threads)
    monkeypatch.setattr(fanout_client, "resolver", lambda: r)
    return r


async def against_one_agent(hosts_at: list[tuple[str, str]], options: FanoutOptions,
                            handler: Handler | None = None) -> dict[str, FetchResult]:
    """(name, address) pairs, every one served by one real agent-like server on 127.0.0.1."""
    server = await asyncio.start_server(handler or replying(http(node_json())), "127.0.0.1", 0, backlog=512)
    port = server.sockets[0].getsockname()[1]
    try:
        results = await fan_out([named(n, port, a) for n, a in hosts_at], lambda h: None, options)
    finally:
        server.close()
    return {r.host.name: r for r in results}


def test_more_hung_names_than_resolver_threads_leave_the_healthy_hosts_answering(dns: StubDns) -> None:
    # 40 names that never resolve, ahead of and among 100 healthy named hosts: a plain pool of 32
    # resolver threads is all taken by the hung names, and every named host behind them "times out".
    hosts = [(f"hung{i}", f"h{i}.hang.test") for i in range(40)]
    hosts += [(f"ok{i}", f"n{i}.fleet.test") for i in range(100)]
    options = FanoutOptions(timeout_s=0.5, deadline_s=10, concurrency=64)
    started = time.monotonic()
    results = asyncio.run(against_one_agent(hosts, options))
    elapsed = time.monotonic() - started
    not_ok = {n: r.detail for n, r in results.items() if n.startswith("ok") and r.kind is not FetchKind.OK}
    assert not_ok == {}
    for i in range(40):
        r = results[f"hung{i}"]
        assert r.kind is FetchKind.TIMEOUT and not r.kind.reachable
        assert r.detail == f"name resolution of h{i}.hang.test timed out after 0.5s"
    assert elapsed < 4.0  # about two lookup timeouts (40 hung names, 32 threads), far below the deadline


def test_a_few_hung_names_do_not_use_up_the_resolver_over_many_rounds(dns: StubDns) -> None:
    # health --watch, or undrain's gate polling: every round asks for the same 3 hung names again.
    # Lookups left hanging from earlier rounds must neither pile up until no thread is left nor be
    # started again: a hung name costs one thread, however often it is asked for.
    # (names of their own: lookups that an earlier test's stub has just released may still be ending)
    hosts = [(f"hung{i}", f"r{i}.hang.test") for i in range(3)] + [(f"ok{i}", f"n{i}.test") for i in range(5)]
    options = FanoutOptions(timeout_s=0.15, deadline_s=5, concurrency=16)
    for _round in range(14):  # 14 x 3 > the old pool's 32 threads
        results = asyncio.run(against_one_agent(hosts, options))
        assert [results[f"ok{i}"].kind for i in range(5)] == [FetchKind.OK] * 5, results
        assert all(results[f"hung{i}"].kind is FetchKind.TIMEOUT for i in range(3))
    assert sorted(n for n in dns.asked if n.endswith(".hang.test")) == ["r0.hang.test", "r1.hang.test",
                                                                      "r2.hang.test"]


def test_waiting_for_a_resolver_thread_is_not_the_hosts_time(dns: StubDns,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # One resolver thread, lookups taking 0.15 s each: the sixth host waits 0.75 s for the thread,
    # longer than its 0.4 s resolution timeout, but its own lookup takes 0.15 s.
    dns.slow_s = 0.15
    own_resolver(monkeypatch, threads=1, max_threads=1)
    hosts = [(f"ok{i}", f"n{i}.slow.test") for i in range(6)]
    options = FanoutOptions(timeout_s=0.4, deadline_s=10, concurrency=16)
    results = asyncio.run(against_one_agent(hosts, options))
    assert {n: r.kind for n, r in results.items()} == {n: FetchKind.OK for n, _ in hosts}, results


def test_the_resolution_timeout_is_its_own(dns: StubDns, monkeypatch: pytest.MonkeyPatch) -> None:
    # Resolution has its own limit; connect, request and response then get the whole per-host timeout.
    dns.slow_s = 0.3
    own_resolver(monkeypatch, threads=4, max_threads=8)
    options = FanoutOptions(timeout_s=0.25, resolve_timeout_s=0.1, deadline_s=10)
    got = asyncio.run(against_one_agent([("slow", "a.slow.test")], options))["slow"]
    assert got.kind is FetchKind.TIMEOUT
    assert got.detail == "name resolution of a.slow.test timed out after 0.1s"
    options = FanoutOptions(timeout_s=0.25, resolve_timeout_s=1.0, deadline_s=10)
    assert asyncio.run(against_one_agent([("slow", "b.slow.test")], options))["slow"].kind is FetchKind.OK


def test_hosts_still_waiting_for_a_resolver_thread_meet_the_deadline_with_that_reason(
        dns: StubDns, monkeypatch: pytest.MonkeyPatch) -> None:
    # No thread to spare at all (max_threads=1, taken by a hung name): the overall deadline ends the
    # wait and says what the host was waiting for.
    r = own_resolver(monkeypatch, threads=1, max_threads=1)
    options = FanoutOptions(timeout_s=0.2, deadline_s=0.8, concurrency=16)
    started = time.monotonic()
    results = asyncio.run(against_one_agent([("hung", "x.hang.test"), ("ok", "y.test")], options))
    elapsed = time.monotonic() - started
    assert results["hung"].kind is FetchKind.TIMEOUT
    assert results["hung"].detail == "name resolution of x.hang.test timed out after 0.2s"
    assert results["ok"].kind is FetchKind.DEADLINE
    assert results["ok"].detail == ("no answer before the overall deadline of 0.8s "
                                   "(waiting for a resolver thread; lookups that hang hold 1)")
    assert elapsed < 2.0
    assert r.hung() == 1


def test_connect_timeout_and_no_answer_are_told_apart() -> None:
    # A listener whose accept queue is full drops new SYNs: the connection is never made. A hung
    # agent accepts and reads, and never answers.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # the one connection the queue holds

    async def scenario() -> dict[str, FetchResult]:
        server = await asyncio.start_server(hung, "127.0.0.1", 0)
        hung_port = server.sockets[0].getsockname()[1]
        try:
            hosts = [named("blackhole", port, "127.0.0.1"), named("hung", hung_port, "127.0.0.1")]
            results = await fan_out(hosts, lambda h: None, FanoutOptions(timeout_s=0.4, deadline_s=5))
        finally:
            server.close()
        return {r.host.name: r for r in results}

    try:
        results = asyncio.run(scenario())
    finally:
        filler.close()
        full.close()
    assert results["blackhole"].kind is FetchKind.TIMEOUT
    assert results["blackhole"].detail == f"connect to 127.0.0.1:{port} timed out after 0.4s"
    assert results["hung"].kind is FetchKind.TIMEOUT
    assert results["hung"].detail == "connected, no answer within 0.4s"


def test_a_connect_unfinished_at_the_deadline_says_so() -> None:
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        (r,) = fetch_all([named("blackhole", port, "127.0.0.1")], lambda h: None,
                         FanoutOptions(timeout_s=10, deadline_s=0.3))
    finally:
        filler.close()
        full.close()
    assert r.kind is FetchKind.DEADLINE
    assert r.detail == "no answer before the overall deadline of 0.3s (connect unfinished)"


def test_waiting_for_a_worker_or_a_socket_is_not_the_hosts_time() -> None:
    # One worker and two sockets for six hung hosts and one healthy host at the end: the healthy
    # host waits longer than its timeout for a worker and a socket, then answers in milliseconds.
    async def scenario(options: FanoutOptions) -> dict[str, FetchResult]:
        hung_server = await asyncio.start_server(hung, "127.0.0.1", 0)
        ok_server = await asyncio.start_server(replying(http(node_json())), "127.0.0.1", 0)
        hosts = [named(f"hung{i}", hung_server.sockets[0].getsockname()[1], "127.0.0.1") for i in range(6)]
        hosts.append(named("ok", ok_server.sockets[0].getsockname()[1], "127.0.0.1"))
        try:
            return {r.host.name: r for r in await fan_out(hosts, lambda h: None, options)}
        finally:
            hung_server.close()
            ok_server.close()

    results = asyncio.run(scenario(FanoutOptions(timeout_s=0.3, deadline_s=10, concurrency=1, max_open=2)))
    assert results["ok"].kind is FetchKind.OK, results["ok"].detail
    assert all(results[f"hung{i}"].kind is FetchKind.TIMEOUT for i in range(6))


def test_the_resolver_replaces_threads_left_to_hung_lookups_up_to_its_limit(dns: StubDns) -> None:
    from fleetctl.fanout.resolver import Resolver

    r = Resolver(threads=2, max_threads=3)
    stuck = [r.ask(f"s{i}.hang.test") for i in range(3)]
    for lookup in stuck:
        lookup.begun.result(timeout=1)  # a thread has taken it (the third once the first was left)
        r.leave(lookup)  # every host that asked gave up
    assert r.hung() == 3
    again = r.ask("s0.hang.test")  # still running: shared, not asked again
    assert again is stuck[0] and dns.asked.count("s0.hang.test") == 1
    r.leave(again)
    fresh = r.ask("ok.test")  # every thread is left to a hung lookup and the limit is reached
    assert not fresh.begun.done()
    dns.release.set()  # the hung lookups end: their threads go, one serves the queue
    assert fresh.result.result(timeout=2) == [(socket.AF_INET, ("127.0.0.1", 0))]
    r.leave(fresh)
    deadline = time.monotonic() + 2
    while r.hung() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.hung() == 0
