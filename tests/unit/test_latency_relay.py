"""benchmarks/latency_relay.py: the delaying ProxyCommand relay the site re-run benchmark uses.

The relay runs as ssh would run it (a subprocess, stdin/stdout piped) in front of a TCP server in
this process. Delays are checked with a lower bound only: a busy machine can only add time.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

RELAY_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "latency_relay.py"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _relay_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("latency_relay", RELAY_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _spawn(port: int, delay_ms: float, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(RELAY_PY), "--delay-ms", str(delay_ms), *extra, "127.0.0.1", str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    return await asyncio.wait_for(proc.wait(), 10)


def test_bytes_arrive_intact_and_in_order_both_ways() -> None:
    async def scenario() -> None:
        server, port = await _server(_echo)
        # Few chunks held per direction: the back-pressure path runs too.
        proc = await _spawn(port, 5, "--max-chunks", "2")
        assert proc.stdin is not None and proc.stdout is not None
        payload = os.urandom(3 * 1024 * 1024)

        async def send() -> None:
            assert proc.stdin is not None
            sizes = [1, 7, 1000, 65536, 200_000]
            pos = 0
            while pos < len(payload):
                size = sizes[pos % len(sizes)]
                proc.stdin.write(payload[pos:pos + size])
                await proc.stdin.drain()
                pos += size
            proc.stdin.close()

        sending = asyncio.create_task(send())
        received = await asyncio.wait_for(proc.stdout.read(), 30)
        await sending
        assert len(received) == len(payload)
        assert received == payload
        assert await _exit_code(proc) == 0
        server.close()

    asyncio.run(scenario())


def test_each_direction_is_delayed_round_trip_through_two_relays() -> None:
    delay_ms = 60.0

    async def scenario() -> None:
        relay = _relay_module()
        echo, echo_port = await _server(_echo)
        arrived: list[float] = []

        async def listening_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The second relay, in this process: same delayed_copy, listening instead of stdio.
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", echo_port)
            await asyncio.gather(relay.delayed_copy(reader, up_writer, delay_ms / 1000),
                                 relay.delayed_copy(up_reader, writer, delay_ms / 1000))
            writer.close()

        async def timestamping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                arrived.append(time.monotonic())
                writer.write(data)
                await writer.drain()
            writer.close()

        middle, middle_port = await _server(listening_relay)
        proc = await _spawn(middle_port, delay_ms)
        assert proc.stdin is not None and proc.stdout is not None
        for i in range(3):
            ping = f"ping {i}\n".encode()
            start = time.monotonic()
            proc.stdin.write(ping)
            await proc.stdin.drain()
            assert await asyncio.wait_for(proc.stdout.readexactly(len(ping)), 10) == ping
            # Four one-way delays: each relay delays both directions. 10 % slack for timer granularity.
            assert time.monotonic() - start >= 4 * delay_ms / 1000 * 0.9

        # One way, one relay: a server that timestamps arrival sees the data a delay later.
        direct, direct_port = await _server(timestamping)
        one = await _spawn(direct_port, delay_ms)
        assert one.stdin is not None and one.stdout is not None
        await asyncio.sleep(0.5)  # the relay's start-up and connect are not part of the delay
        sent = time.monotonic()
        one.stdin.write(b"x")
        await one.stdin.drain()
        assert await asyncio.wait_for(one.stdout.readexactly(1), 10) == b"x"
        assert arrived and arrived[0] - sent >= delay_ms / 1000 * 0.9

        for p in (proc, one):
            assert p.stdin is not None
            p.stdin.close()
            assert await _exit_code(p) == 0
        for s in (echo, middle, direct):
            s.close()

    asyncio.run(scenario())


def test_eof_from_the_client_reaches_the_server_then_the_servers_eof_ends_the_relay() -> None:
    async def scenario() -> None:
        got: list[bytes] = []

        async def half_close_aware(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read())  # until EOF: only the client's half-close ends this
            writer.write(b"bye after " + got[0])
            await writer.drain()
            writer.close()

        server, port = await _server(half_close_aware)
        proc = await _spawn(port, 20)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"request")
        await proc.stdin.drain()
        proc.stdin.close()
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b"bye after request"
        assert got == [b"request"]
        assert await _exit_code(proc) == 0
        server.close()

    asyncio.run(scenario())


def test_eof_from_the_server_reaches_stdout_while_stdin_stays_open() -> None:
    async def scenario() -> None:
        async def closes_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"banner")
            await writer.drain()
            writer.write_eof()
            # Still reading: what the client sends after the server's EOF must arrive.
            tail.append(await reader.read())
            writer.close()

        tail: list[bytes] = []
        server, port = await _server(closes_first)
        proc = await _spawn(port, 20)
        assert proc.stdin is not None and proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b"banner"
        proc.stdin.write(b"late")
        await proc.stdin.drain()
        proc.stdin.close()
        assert await _exit_code(proc) == 0
        assert tail == [b"late"]
        server.close()

    asyncio.run(scenario())


def test_memory_is_bounded_while_the_far_side_waits() -> None:
    async def scenario() -> None:
        relay = _relay_module()
        source = asyncio.StreamReader(limit=2**30)
        total = 40 * relay.CHUNK
        source.feed_data(os.urandom(total))
        source.feed_eof()
        left, right = socket.socketpair()
        _, writer = await asyncio.open_connection(sock=left)
        # A long delay: nothing is written yet, so whatever the relay took from the source is held.
        copying = asyncio.create_task(relay.delayed_copy(source, writer, 30.0, max_chunks=4))
        await asyncio.sleep(0.3)
        remaining = await source.read()
        copying.cancel()
        writer.close()
        right.close()
        # The queue's chunks, the one the writer holds until its time and the one waiting to be queued.
        assert len(remaining) >= total - (4 + 2) * relay.CHUNK

    asyncio.run(scenario())


def test_unreachable_port_is_a_one_line_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connect is refused
        proc = subprocess.run([sys.executable, str(RELAY_PY), "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"latency_relay.py: 127.0.0.1:{port}: ")
    assert proc.stderr.count("\n") == 1


async def _ping_pong(proc: asyncio.subprocess.Process, *pings: bytes) -> None:
    """Each ping through the relay to the echo server and back, one turn to speak each."""
    assert proc.stdin is not None and proc.stdout is not None
    for ping in pings:
        proc.stdin.write(ping)
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readexactly(len(ping)), 10) == ping


def test_stats_count_bytes_and_the_clients_turns_to_speak(tmp_path: Path) -> None:
    stats = tmp_path / "stats.jsonl"

    async def scenario() -> None:
        server, port = await _server(_echo)
        proc = await _spawn(port, 1, "--stats", str(stats))
        await _ping_pong(proc, b"a" * 10, b"b" * 20, b"c" * 30)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b""
        assert await _exit_code(proc) == 0
        server.close()

    asyncio.run(scenario())
    lines = stats.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record == {"host": "127.0.0.1", "port": record["port"], "delay_ms": 1.0,
                      "bytes_up": 60, "bytes_down": 60, "round_trips": 3}


def test_stats_are_written_when_ssh_hangs_up_on_the_relay(tmp_path: Path) -> None:
    """ssh sends its ProxyCommand SIGHUP when a control master exits, before EOF reaches it."""
    stats = tmp_path / "stats.jsonl"

    async def scenario() -> None:
        server, port = await _server(_echo)
        proc = await _spawn(port, 0, "--stats", str(stats))
        await _ping_pong(proc, b"a" * 10, b"b" * 20)
        proc.send_signal(signal.SIGHUP)
        assert await _exit_code(proc) == 0
        server.close()

    asyncio.run(scenario())
    (line,) = stats.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["round_trips"] == 2 and json.loads(line)["bytes_up"] == 30


def test_bench_sends_every_lab_host_through_the_relay_with_known_hosts_kept(tmp_path: Path) -> None:
    bench_dir = RELAY_PY.parent
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("bench_site_rerun", bench_dir / "bench_site_rerun.py")
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        lab = bench.load_lab()
    finally:
        sys.path.remove(str(bench_dir))
    source = bench.latency_inventory(lab, 2.5, tmp_path / "latency.yml", tmp_path / "stats.jsonl")
    # What each host's ssh gets, rendered by Ansible itself (debug runs on the controller, no SSH);
    # base64 so the output format cannot wrap or quote it.
    exe = Path(sys.executable).with_name("ansible")
    rendered = "{{ {'dir': inventory_dir, 'args': ansible_ssh_common_args} | to_json | b64encode }}"
    proc = subprocess.run([str(exe), "lab", "-i", str(lab.INVENTORY), "-i", str(source), "-m", "debug",
                           "-a", f"msg=<<{rendered}>>"], cwd=lab.REPO, capture_output=True, text=True,
                          timeout=120, check=True, env=lab.playbook_env())
    found = re.findall(r"^(lab-node\d) \| SUCCESS.*?<<([A-Za-z0-9+/=]+)>>", proc.stdout,
                       re.MULTILINE | re.DOTALL)
    assert sorted(name for name, _ in found) == ["lab-node1", "lab-node2", "lab-node3"], proc.stdout
    for name, encoded in found:
        hvars = json.loads(base64.b64decode(encoded))
        # The lab's own source stays first: its group_vars' paths still resolve from there.
        assert Path(hvars["dir"]) == lab.INVENTORY, name
        args = shlex.split(hvars["args"])  # as Ansible's ssh plugin splits them
        assert f"UserKnownHostsFile={lab.INVENTORY}/../../.cache/lab/known_hosts" in args
        proxy = [a for a in args if a.startswith("ProxyCommand=")]
        assert len(proxy) == 1
        command = shlex.split(proxy[0].removeprefix("ProxyCommand="))
        assert command[2:] == ["-S", str(RELAY_PY), "--delay-ms", "2.5", "--stats",
                               str(tmp_path / "stats.jsonl"), "%h", "%p"]
