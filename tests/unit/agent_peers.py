"""Fake agents for the fan-out tests: asyncio servers that answer well, badly, slowly or not at all,
and helpers that run the real fan-out against them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fleet_agent.schema import ChipReport, HostMetrics, NodeReport, Status

from fleetctl.fanout import FanoutOptions, FetchResult, fan_out
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


@contextlib.contextmanager
def threaded_agent(body: bytes) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 answering every GET with ``body`` (an agent's ``/v1/node``),
    in a thread, for code that asks agents synchronously (status, undrain's gate); yields its port."""

    class Agent(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


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
