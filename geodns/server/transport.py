"""UDP and TCP around the pure responder: thin, bounded, and never fatal.

Every transport hands its queries to a :class:`DatagramHandler`, the one
place where received bytes become answers: it asks the responder being
served *now* (a reload swaps it in one assignment) and leaves out the
packets that get no answer.  The loops around it differ only in how they
read and send:

* UDP, read in one of three ways (``GEODNS_UDP_MODE``, see docs/design.md):
  :class:`UDPBatchReader` (default when the C helper is built) reads up to
  64 datagrams with one ``recvmmsg`` and sends their answers with one
  ``sendmmsg``, up to 8 batches per readiness event; :class:`UDPReader`
  reads up to 64 with ``recvfrom`` and answers each with ``sendto``;
  :class:`UDPServer` is asyncio's ``DatagramProtocol``, one callback per
  datagram, kept for comparison.  A full send buffer drops that answer (the
  client retries), counted as a dropped packet: a UDP server must not queue
  without bound.
* TCP (RFC 7766): each connection may pipeline queries; every complete
  message in the buffer is answered as soon as it is read, in order.  A
  connection idle longer than ``idle_timeout`` is closed, and at
  ``max_connections`` the connection idle the longest is closed to make
  room, so a crowd of idle clients cannot lock real ones out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Protocol, TypeVar, cast

from geodns.counters import Dropped
from geodns.ecs import Peer
from geodns.wire import DROPPED, Responder

_udpbatch: ModuleType | None
try:
    import geodns._udpbatch as _udpbatch
except ImportError:  # pragma: no cover - the C helper is optional
    _udpbatch = None

HAVE_UDPBATCH = _udpbatch is not None

log = logging.getLogger("geodns.server")

MAX_TCP_BUFFER = 2 + 65535 + 65536  # one full message plus a read's worth
# Where an answer goes: raw sockaddr bytes (recvmmsg) or an address tuple.
Address = TypeVar("Address", bytes, tuple[Any, ...])


class ResponderSource(Protocol):
    responder: Responder


class DatagramHandler:
    """Queries in, answers out, for every transport: what each loop around
    the responder would otherwise repeat."""

    __slots__ = ("source",)

    def __init__(self, source: ResponderSource) -> None:
        self.source = source

    def answer(self, data: bytes, peer: Peer, udp: bool) -> bytes | None:
        """One query (a datagram, or a TCP message): its answer, or None when
        it gets none."""
        return self.source.responder.respond(data, udp, peer)

    def answer_all(self, packets: Iterable[tuple[bytes, Address]]
                   ) -> list[tuple[bytes, Address]]:
        """UDP queries read together: the answers, each with its address
        (packets that get no answer have none)."""
        respond = self.source.responder.respond
        out = []
        for data, addr in packets:
            resp = respond(data, True, addr)
            if resp is not None:
                out.append((resp, addr))
        return out

    def send_failed(self, n: int = 1) -> None:
        self.source.responder.count_event(DROPPED, Dropped.SEND_FAILED, n)


class UDPServer(asyncio.DatagramProtocol):
    def __init__(self, source: ResponderSource) -> None:
        self.handler = DatagramHandler(source)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        resp = self.handler.answer(data, addr, True)
        if resp is not None and self.transport is not None:
            self.transport.sendto(resp, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class UDPReader:
    """UDP without the transport layer: on each readiness event, read up to
    ``BATCH`` datagrams with plain ``recvfrom``, then answer them with
    ``sendto``.  Per datagram this saves the protocol callback and the
    transport's bookkeeping."""

    BATCH = 64

    def __init__(self, source: ResponderSource, sock: socket.socket) -> None:
        self.handler = DatagramHandler(source)
        self.sock = sock

    def on_readable(self) -> None:
        recv = self.sock.recvfrom
        packets: list[tuple[bytes, tuple[Any, ...]]] = []
        for _ in range(self.BATCH):
            try:
                packets.append(recv(65535))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("UDP receive error: %s", exc)
        if not packets:
            return
        send = self.sock.sendto
        for resp, addr in self.handler.answer_all(packets):
            try:
                send(resp, addr)
            except OSError:
                self.handler.send_failed()


class UDPBatchReader:
    """UDP through :mod:`geodns._udpbatch`: per readiness event, up to
    ``ROUNDS`` batches of 64 datagrams, each read with one recvmmsg and
    answered with one sendmmsg."""

    ROUNDS = 8

    def __init__(self, source: ResponderSource, sock: socket.socket) -> None:
        self.handler = DatagramHandler(source)
        self.sock = sock
        self.fd = sock.fileno()

    def on_readable(self) -> None:
        assert _udpbatch is not None
        recv_batch = _udpbatch.recv_batch
        send_batch = _udpbatch.send_batch
        answer_all = self.handler.answer_all
        fd = self.fd
        for _ in range(self.ROUNDS):
            try:
                packets = recv_batch(fd)
            except OSError as exc:
                log.debug("UDP receive error: %s", exc)
                return
            if not packets:
                return
            out = answer_all(packets)
            if out:
                sent = send_batch(fd, out)
                if sent != len(out):
                    self.handler.send_failed(len(out) - sent)
            if len(packets) < 64:
                return


class TCPConnections:
    """All open TCP connections, least recently active first."""

    def __init__(self, max_connections: int, idle_timeout: float) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.open: OrderedDict[TCPConnection, float] = OrderedDict()
        self.evicted = 0
        self.timed_out = 0

    def add(self, conn: TCPConnection) -> None:
        while len(self.open) >= self.max_connections:
            oldest, _ = self.open.popitem(last=False)
            self.evicted += 1
            oldest.drop()
        self.open[conn] = time.monotonic()

    def touch(self, conn: TCPConnection) -> None:
        if conn in self.open:
            self.open[conn] = time.monotonic()
            self.open.move_to_end(conn)

    def remove(self, conn: TCPConnection) -> None:
        self.open.pop(conn, None)

    def sweep(self) -> None:
        """Close connections idle too long (oldest first, so stop early)."""
        deadline = time.monotonic() - self.idle_timeout
        while self.open:
            conn, last = next(iter(self.open.items()))
            if last > deadline:
                break
            self.open.popitem(last=False)
            self.timed_out += 1
            conn.drop()


class TCPConnection(asyncio.Protocol):
    def __init__(self, source: ResponderSource, registry: TCPConnections) -> None:
        self.handler = DatagramHandler(source)
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.closing = False  # no more queries are answered
        self.finishing = False  # shutting down: input is read and thrown away
        self.eof_sent = False
        self.finished = False  # connection_lost has run: nothing more will be sent
        self.peer: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.registry.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            size = (buf[pos] << 8) | buf[pos + 1]
            if n - pos - 2 < size:
                break
            msg = buf[pos + 2 : pos + 2 + size]
            pos += 2 + size
            resp = self.handler.answer(msg, self.peer, False)
            if resp is None:
                # Not a query (too short, or a response): nothing sensible
                # can follow on this stream.  The queries before it in the
                # same read still get their answers.
                if out:
                    assert self.transport is not None
                    self.transport.write(b"".join(out))
                self.close()
                return
            out.append(len(resp).to_bytes(2, "big"))
            out.append(resp)
        self.buf = buf[pos:]
        if len(self.buf) > MAX_TCP_BUFFER:  # pragma: no cover - guarded by the length prefix
            self.close()
            return
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))
        self.registry.touch(self)

    def eof_received(self) -> bool | None:
        self.close()
        return None

    def pause_writing(self) -> None:
        # A client that does not read its answers stops getting its queries
        # read (unless the connection is being finished: see finish()).
        if self.transport is not None and not self.finishing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.finished = True
        self.registry.remove(self)

    def close(self) -> None:
        """Close after what has been written is flushed."""
        if not self.closing:
            self.closing = True
            self.registry.remove(self)
            if self.transport is not None:
                self.transport.close()

    def drop(self) -> None:
        """Let go of a connection (idle too long, or evicted).  Answers still
        waiting to be written mean the client is not reading them, and would
        hold the socket and the answers for ever: those connections are
        reset; the others are closed."""
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.closing = True
            self.registry.remove(self)
            self.transport.abort()
        else:
            self.close()

    def finish(self) -> None:
        """Shutting down: answer nothing more, but deliver every answer
        already written, then end the stream.  Meanwhile the client's input
        is read and thrown away: closing a socket with unread input makes the
        kernel send a reset, which discards answers not yet delivered."""
        if self.transport is None or self.finished:
            return
        self.closing = self.finishing = True
        self.registry.remove(self)
        self.transport.resume_reading()
        self.end_when_flushed()

    def end_when_flushed(self) -> None:
        """Once every answer has left our buffer, send FIN after them (the
        client closes when it has read them, or the shutdown grace ends)."""
        if self.transport is not None and not self.eof_sent and not self.finished and \
                not self.transport.get_write_buffer_size():
            self.eof_sent = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:  # pragma: no cover - every TCP transport can
                self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.finished:
            self.transport.abort()


def bind_pair(host: str, port: int, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same address and port.  With port 0,
    the port the kernel picks for UDP is used for TCP too (retrying if TCP
    finds it taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last_error: OSError | None = None
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if reuse_port:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            udp.bind((host, port))
            real_port = udp.getsockname()[1]
            tcp.bind((host, real_port))
            tcp.listen(1024)
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            last_error = exc
            if port != 0:
                raise
    assert last_error is not None
    raise last_error
