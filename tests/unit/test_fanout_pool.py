"""fleetctl.fanout.pool: many hosts at once, hung ones aside, the overall deadline, decoding after sending."""

from __future__ import annotations

import asyncio
import time

import pytest
from agent_peers import (
    Handler,
    host,
    http,
    hung,
    node_json,
    read_request,
    replying,
    run_against,
)
from fleet_agent.schema import NodeReport

from fleetctl.fanout import FanoutOptions, FetchKind, FetchResult, fan_out
from fleetctl.fanout import classify as fanout_classify
from fleetctl.fanout import client as fanout_client
from fleetctl.fanout.pool import ParkClock, park_after
from fleetctl.inventory import Host


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
    real_decode, real_request = fanout_classify.decode, fanout_client.request_bytes

    def decode(body: bytes) -> NodeReport:
        events.append("decode")
        return real_decode(body)

    def request(h: Host, token: str | None, path: str) -> bytes:
        events.append(f"ask {h.name}")
        return real_request(h, token, path)

    monkeypatch.setattr(fanout_classify, "decode", decode)
    monkeypatch.setattr(fanout_client, "request_bytes", request)
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
