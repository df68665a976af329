"""A TCP relay for ssh's ProxyCommand that adds a one-way delay to each direction.

    ssh -o 'ProxyCommand=python benchmarks/latency_relay.py --delay-ms 10 %h %p' host

stdin goes to HOST:PORT and what comes back goes to stdout, each chunk held until DELAY ms after
it was read and then forwarded in order: a round trip costs twice the delay, while throughput is
not slowed per byte (a link with latency, not a slow one). At most --max-chunks chunks (plus the
one being written and the one just read) wait in each direction; past that the relay stops
reading, so memory stays bounded and the sender sees back-pressure. EOF is forwarded after the
same delay (a half-close on the socket, closing stdout), and the relay exits once both directions
have ended. No kernel netem: plain user space, so a benchmark can add latency to the SSH lab
without privileges. What the relay does not delay: TCP's own ACKs (each side's kernel answers the
relay at once), so congestion windows grow as on loopback.

--stats FILE appends one JSON line when the relay ends: bytes each way and round trips, counted
as the times the client sent again after the server last spoke. That count does not depend on
the machine's load, and each round trip costs up to twice the delay on the wall clock. It leans
high: server messages the client does not wait for (SSH window adjustments during an upload)
split one send into two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

CHUNK = 64 * 1024
MAX_CHUNKS = 256


class Traffic:
    """What crossed the relay: bytes each way and the client's turns to speak (round trips)."""

    def __init__(self) -> None:
        self.bytes_up = 0
        self.bytes_down = 0
        self.round_trips = 0
        self._last: str | None = None

    def saw(self, direction: str, size: int) -> None:
        if direction == "up":
            self.bytes_up += size
            if self._last != "up":
                self.round_trips += 1
        else:
            self.bytes_down += size
        self._last = direction


async def delayed_copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float,
                       max_chunks: int = MAX_CHUNKS, traffic: Traffic | None = None,
                       direction: str = "up") -> None:
    """Copy reader to writer, each chunk written ``delay_s`` after it was read, then EOF (after the
    same delay). Returns when EOF has been forwarded or either side failed. ``traffic`` counts each
    chunk as it is read, as going ``direction`` ("up": client to server, "down")."""
    loop = asyncio.get_running_loop()
    # drain() then waits until the kernel holds every byte: nothing is left in a buffer of ours
    # when the relay exits, and that buffer is bounded too.
    writer.transport.set_write_buffer_limits(high=0)
    # A bounded queue is the memory bound: when it is full the reading side waits, and the
    # kernel's socket or pipe buffers push back on the sender.
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(max_chunks)

    async def read_side() -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if traffic is not None and data:
                    traffic.saw(direction, len(data))
                await queue.put((loop.time() + delay_s, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay_s, b""))

    async def write_side() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.create_task(read_side())
    try:
        await write_side()
    except (ConnectionError, OSError):
        pass  # the far side went away: nothing more can be delivered in this direction
    finally:
        reading.cancel()
        try:
            await reading
        except asyncio.CancelledError:
            pass


async def _stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
    # StreamReaderProtocol brings the flow control that drain() needs on the write pipe.
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), os.fdopen(1, "wb", 0))
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def relay_stdio(host: str, port: int, delay_s: float, max_chunks: int = MAX_CHUNKS,
                      traffic: Traffic | None = None) -> None:
    """stdin -> HOST:PORT and HOST:PORT -> stdout, both delayed; returns when both have ended."""
    sock_reader, sock_writer = await asyncio.open_connection(host, port)
    sock = sock_writer.get_extra_info("socket")
    if sock is not None:
        # Small SSH packets must leave as soon as their delay is over, not wait for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    in_reader, out_writer = await _stdio()
    try:
        await asyncio.gather(delayed_copy(in_reader, sock_writer, delay_s, max_chunks, traffic, "up"),
                             delayed_copy(sock_reader, out_writer, delay_s, max_chunks, traffic, "down"))
    finally:
        sock_writer.close()
        out_writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="latency_relay.py", description=__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay of each direction (default 0)")
    p.add_argument("--max-chunks", type=int, default=MAX_CHUNKS,
                   help=f"chunks of up to {CHUNK // 1024} KiB held per direction (default {MAX_CHUNKS})")
    p.add_argument("--stats", type=Path, metavar="FILE", help="append a JSON line of what crossed when done")
    p.add_argument("host")
    p.add_argument("port", type=int)
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must be 0 or more")
    if args.max_chunks < 1:
        p.error("--max-chunks must be 1 or more")
    traffic = Traffic()

    def report() -> None:
        if args.stats is None:
            return
        line = json.dumps({"host": args.host, "port": args.port, "delay_ms": args.delay_ms,
                           "bytes_up": traffic.bytes_up, "bytes_down": traffic.bytes_down,
                           "round_trips": traffic.round_trips}) + "\n"
        # One write in append mode: relays of several hosts share the file without mixing lines.
        fd = os.open(args.stats, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def quiet() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def hung_up(signum: int, _frame: object) -> None:
        # ssh ends its ProxyCommand with SIGHUP when the connection closes (a control master told
        # to exit does so), often before the relay has read EOF: the count is complete by then.
        quiet()  # one report, even when the other signal follows
        try:
            report()
        except OSError as exc:
            print(f"latency_relay.py: {args.stats}: {exc}", file=sys.stderr)
            os._exit(1)
        os._exit(0)

    signal.signal(signal.SIGHUP, hung_up)
    signal.signal(signal.SIGTERM, hung_up)
    try:
        asyncio.run(relay_stdio(args.host, args.port, args.delay_ms / 1000, args.max_chunks, traffic))
    except OSError as exc:
        quiet()
        print(f"latency_relay.py: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    quiet()
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
