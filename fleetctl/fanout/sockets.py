"""Connections for the fan-out: a raw non-blocking socket per address literal, and for host names
the addresses the resolver found (:mod:`fleetctl.fanout.resolver`), tried one by one."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from fleetctl.fanout.classify import Failed, FetchKind
from fleetctl.fanout.http import ResponseReader
from fleetctl.inventory import Host

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_READ_CHUNK = 256 * 1024


def reset_on_close(sock: socket.socket) -> None:
    """Make ``close()`` send a reset, not a FIN: nothing is left to say either way (the answer is
    read, or it is given up), and a FIN would leave the socket in TIME_WAIT here for a minute.
    Thousands of hosts per round (``--watch``) would pile up hundreds of thousands of them: the
    kernel's table of them overflows and, towards one address (a lab, a sim fleet), connects stall
    on reused ports."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)


async def connect_any(loop: asyncio.AbstractEventLoop, reader: ResponseReader, host: Host,
                       addresses: Sequence[tuple[int, tuple[Any, ...]]]) -> None:
    """Connect ``reader`` to the first address that accepts (the agent's port on each); refused only
    when every one refuses."""
    errors: list[OSError] = []
    for family, address in addresses:
        sockaddr = (address[0], host.agent_port, *address[2:])
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            reset_on_close(sock)  # the transport closes it: with a reset, as RawSocket does
            await loop.sock_connect(sock, sockaddr)
            await loop.create_connection(lambda: reader, sock=sock)
            return
        except OSError as exc:
            sock.close()
            errors.append(exc)
        except BaseException:  # the timeout or the deadline struck
            sock.close()
            raise
    if not errors:
        raise Failed(FetchKind.CONNECT_ERROR, f"cannot resolve {host.address}: no address")
    other = [e for e in errors if not isinstance(e, ConnectionRefusedError)]
    raise connect_failure(host, other[0] if other else errors[0])


def connect_failure(host: Host, exc: OSError) -> Failed:
    if isinstance(exc, ConnectionRefusedError):
        return Failed(FetchKind.REFUSED, f"connection refused ({host.agent_endpoint})")
    return Failed(FetchKind.CONNECT_ERROR, f"cannot connect to {host.agent_endpoint}: {exc.strerror or exc}")


@functools.lru_cache(maxsize=4096)
def ip_family(address: str) -> socket.AddressFamily | None:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return None


class RawSocket:
    """A non-blocking socket driven by the loop's reader/writer callbacks, feeding a
    :class:`ResponseReader` as a transport would: for thousands of short requests this costs a
    fraction of ``loop.create_connection`` (no resolver step, no transport or waiter futures)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proto: ResponseReader, host: Host,
                 family: socket.AddressFamily) -> None:
        self.loop = loop
        self.proto = proto
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.pending = b""
        self.reading = self.writing = False
        self.closed = False
        self.connecting = False  # connect() said "in progress" and nothing has been sent yet

    def start(self) -> None:
        err = self.sock.connect_ex((self.host.address, self.host.agent_port))
        if err in (0, errno.EISCONN):
            self._connected()
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            # On loopback and fast LANs the handshake is often complete by now: send the request
            # straight away (a connection still being made says EAGAIN and the writer waits for it)
            # instead of one more event-loop round trip per host; a failed connect fails that send.
            self.connecting = True
            self._connected()
        else:
            self._connect_failed(err)

    def _connect_failed(self, err: int) -> None:
        exc = OSError(err, os.strerror(err))
        if err == errno.ECONNREFUSED:
            exc = ConnectionRefusedError(err, os.strerror(err))
        self.abort()
        if not self.proto.done.done():
            self.proto.done.set_exception(connect_failure(self.host, exc))

    def _watch_write(self, callback: Callable[[], None]) -> None:
        self.loop.add_writer(self.fd, callback)
        self.writing = True

    def _connected(self) -> None:
        self.proto.connection_made(self)  # type: ignore[arg-type]  # the transport methods it uses
        if not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)
            self.reading = True

    # --- what ResponseReader uses of a transport ---

    def write(self, data: bytes) -> None:
        self.pending += data
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._failed(exc)
            return
        if sent:
            self.connecting = False
        self.pending = self.pending[sent:]
        if self.pending and not self.writing:
            self._watch_write(self._flush)
        elif not self.pending and self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reading:
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        reset_on_close(self.sock)
        self.sock.close()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(exc)
            return
        if data:
            self.proto.data_received(data)
        else:
            self.proto.eof_received()
            self._lost(None)

    def _failed(self, exc: OSError) -> None:
        if self.connecting:  # the connection was never made
            self._connect_failed(exc.errno or errno.ECONNABORTED)
        else:
            self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.abort()
        self.proto.connection_lost(exc)
