"""UDP and TCP around the pure responder: thin, bounded, and never fatal.

Every transport hands its queries to a :class:`DatagramHandler`, the one
place where received bytes become answers: it asks the responder being
served *now* (a reload swaps it in one assignment) and leaves out the
packets that get no answer.  The loops around it differ only in how they
read and send:

* Rate limiting (``rate_limit``, :mod:`geodns.ratelimit`): the UDP answers
  of a batch go through the server's limiter, one C call, before they are
  sent; TCP answers never do.
* UDP, read in one of three ways (``GEODNS_UDP_MODE``, see docs/design.md):
  ``batch`` (default when the C helper is built) reads up to 64 datagrams
  with one ``recvmmsg`` and sends their answers with one ``sendmmsg``, up
  to 8 batches per readiness: :class:`UDPPlaneThread`, a thread per socket
  where the C data plane answers, Python's answers made on the event
  loop's thread (:class:`UDPBatchReader` is the same in the event loop, where
  that thread falls back to should it fail); :class:`UDPReader`
  reads up to 64 with ``recvfrom`` and answers each with ``sendto``;
  :class:`UDPServer` is asyncio's ``DatagramProtocol``, one callback per
  datagram, kept for comparison.  A full send buffer drops that answer (the
  client retries), counted as a dropped packet: a UDP server must not queue
  without bound.
* TCP (RFC 7766): each connection may pipeline queries; every complete
  message in the buffer is answered as soon as it is read, in order, up to
  caps on the answers held for a client that does not read them
  (:class:`TCPConnection`).  :class:`TCPConnections` holds the hard limits
  (docs/abuse.md): connections in all and per client network, an idle
  timeout, a first-query timeout, a whole-message timeout (a byte now and
  then does not keep a connection) and a timeout on answers left unread,
  all enforced by one sweep timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from geodns.config import TcpConfig
from geodns.counters import Dropped, TcpClosed
from geodns.ecs import Peer
from geodns.server.sockets import omit_path_mtu
from geodns.wire import DROPPED, Responder

if TYPE_CHECKING:
    from geodns._udpbatch import RateLimiter

_udpbatch: ModuleType | None
try:
    import geodns._udpbatch as _udpbatch
except ImportError:  # pragma: no cover - the C helper is optional
    _udpbatch = None

HAVE_UDPBATCH = _udpbatch is not None

log = logging.getLogger("geodns.server")

# Where an answer goes: raw sockaddr bytes (recvmmsg) or an address tuple.
Address = TypeVar("Address", bytes, tuple[Any, ...])


class ResponderSource(Protocol):
    responder: Responder
    limiter: RateLimiter | None  # UDP answers go through it (None: not limited)


class DatagramHandler:
    """Queries in, answers out, for every transport: what each loop around
    the responder would otherwise repeat."""

    __slots__ = ("source",)

    def __init__(self, source: ResponderSource) -> None:
        self.source = source

    def answer(self, data: bytes, peer: Peer, udp: bool) -> bytes | None:
        """One query (a datagram, or a TCP message): its answer, or None when
        it gets none."""
        responder = self.source.responder
        responder.now = int(time.time())  # the data plane has no clock (DNS cookies)
        return responder.respond(data, udp, peer)

    def answer_all(self, packets: Iterable[tuple[bytes, Address]]
                   ) -> list[tuple[bytes, Address]]:
        """UDP queries read together: the answers, each with its address
        (packets that get no answer have none, answers over the rate limit
        are left out or truncated).  They share one reading of the clock."""
        responder = self.source.responder
        responder.now = int(time.time())
        respond = responder.respond
        out = []
        for data, addr in packets:
            resp = respond(data, True, addr)
            if resp is not None:
                out.append((resp, addr))
        limiter = self.source.limiter
        if limiter is not None and out:
            return limiter.filter(out)
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
        if self.transport is not None:
            for resp, to in self.handler.answer_all(((data, addr),)):
                self.transport.sendto(resp, to)

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
        # (MSG_DONTWAIT: a successor given this socket on a hand-over may
        # have made it blocking for its reader thread: UDPPlaneThread.start)
        recv = self.sock.recvfrom
        dontwait = socket.MSG_DONTWAIT
        packets: list[tuple[bytes, tuple[Any, ...]]] = []
        for _ in range(self.BATCH):
            try:
                packets.append(recv(65535, dontwait))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("UDP receive error: %s", exc)
        if not packets:
            return
        send = self.sock.sendto
        for resp, addr in self.handler.answer_all(packets):
            try:
                send(resp, dontwait, addr)
            except OSError:
                self.handler.send_failed()


class UDPBatchReader:
    """UDP through :mod:`geodns._udpbatch`: per readiness event, up to
    ``ROUNDS`` batches of 64 datagrams, each read with one recvmmsg and
    answered with one sendmmsg.  The snapshot's C data plane
    (``Responder.plane``, geodns/_plane.c) answers what it can of each
    batch itself (through the rate limiter, if any) and hands the rest to
    :meth:`DatagramHandler.answer_all`."""

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
        source = self.handler.source
        for _ in range(self.ROUNDS):
            responder = source.responder
            plane = responder.plane
            if plane is not None:
                try:
                    got, unsent = plane.serve(fd, responder.counts, answer_all, source.limiter)
                except OSError as exc:
                    log.debug("UDP receive error: %s", exc)
                    return
                if unsent:
                    self.handler.send_failed(unsent)
                if got < 64:
                    return
                continue
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


class UDPPlaneThread:
    """UDP read by a thread of its own, outside the event loop, that has
    the C data plane answer each batch (:meth:`geodns._udpbatch.Plane.run`:
    recvmmsg, answers, sendmmsg, over and over, without Python's lock while
    it waits).

    Why: a socket in the event loop's epoll set carries the loop's wait
    entry for good, and the kernel calls that entry for every datagram sent
    from the socket once its buffer is freed (the "write space" wake-up,
    two locks taken and released with interrupts off, dear in a virtual
    machine): about 0.2 to 0.5 µs per answer here, a twentieth of a whole
    answer's cost.  This thread waits in recvmmsg itself (the socket is
    blocking, :meth:`start`), on the socket's wait queue only while it
    waits, as gdnsd's and Knot's threads are: a batch costs one recvmmsg
    and one sendmmsg, with no poll and no empty read between batches.  Once
    the socket has been empty for ``WAIT`` seconds the thread waits in
    ``poll`` for the socket or its wake pipe instead.

    Of Python, this thread only reads which snapshot is served and keeps
    what the plane leaves; what the plane leaves to Python (and, for a
    snapshot without a plane, every datagram) is answered on the event
    loop's thread, as every other query is (:meth:`_answer`), so the caches
    and counters Python's answers touch have one thread still.  The thread
    waits for those answers before it reads again: what is read and not yet
    answered stays one batch at most, and under a flood the kernel's buffer
    is the queue (its drops counted as ``UdpRcvbufErrors``), as before."""

    WAIT = 0.05  # seconds between looks at the stop flag: waiting for a datagram, or for Python
    LOOK = 64  # batches read in a row between looks at the wake pipe (Plane.run's rounds)

    def __init__(self, source: ResponderSource, sock: socket.socket,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.handler = DatagramHandler(source)
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        self._pipe: tuple[int, ...] = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_r, self._wake_w = self._pipe
        self._stopped = False
        self._answered = threading.Event()
        self._punted: list[tuple[bytes, bytes]] = []  # what the plane left, this batch
        self._ready = select.poll()  # the socket and the wake pipe
        self._keep_bound = self._keep
        self._thread = threading.Thread(target=self._run, name=f"geodns-udp-{self.fd}",
                                        daemon=True)

    def start(self) -> None:
        """Starts the thread.  Its reads wait in recvmmsg, as gdnsd's do,
        rather than in a poll before each: so the socket is made blocking,
        with a receive timeout of ``WAIT`` (after which the thread waits in
        poll for the socket or its wake pipe).  Every other read of the
        socket says not to wait (``MSG_DONTWAIT``), and a successor given
        the socket on a handover makes it non-blocking again: the thread's
        reads then find nothing and wait in poll.  Where the timeout cannot
        be set, the socket stays non-blocking."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("@ll", 0, int(self.WAIT * 1e6)))
            os.set_blocking(self.fd, True)
        except OSError as exc:
            log.debug("UDP socket %d stays non-blocking: %s", self.fd, exc)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (at once, or within ``WAIT`` seconds when the thread
        waits for a datagram or for the event loop's answers); :meth:`join`
        waits for it."""
        self._stopped = True
        if self._pipe:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def join(self) -> None:
        """Returns once the thread has let go of the socket, which the
        caller may then close."""
        self.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        pipe, self._pipe = self._pipe, ()
        for fd in pipe:  # (once: a number closed twice may be another file's by then)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        self._ready.register(self.fd, select.POLLIN)
        self._ready.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopped:
                if not self._read():
                    return
        except Exception:  # a bug: the event loop reads this socket from now on
            log.exception("UDP reader thread failed; the event loop reads the socket instead")
            with contextlib.suppress(RuntimeError):  # (the loop is closed: stopping anyway)
                self.loop.call_soon_threadsafe(self._loop_reads)

    def _loop_reads(self) -> None:
        if not self._stopped:
            os.set_blocking(self.fd, False)
            self.loop.add_reader(self.fd, UDPBatchReader(self.handler.source, self.sock)
                                 .on_readable)
            self._stopped = True  # (stop() still closes the pipe; close_sockets the reader)

    def _read(self) -> bool:
        """Waits for the socket in ``poll``, then serves it until it is
        empty again (for ``WAIT`` seconds, when it is blocking), until there
        is something for the event loop's thread (what the plane left to
        Python, a count of answers not sent), or until :meth:`stop`; False
        once the thread must end.  With a plane the reading is C's
        (:meth:`geodns._udpbatch.Plane.run`; a batch read after a reload
        goes to Python, which answers it from the new snapshot); without
        one, a batch is read here and answered on the event loop's thread.
        Nothing of a snapshot is held while the thread waits in ``poll``."""
        assert _udpbatch is not None
        try:
            if not self._wait():
                return False
            source = self.handler.source
            responder = source.responder
            plane = responder.plane
            if plane is not None:
                _, unsent = plane.run(self.fd, self._wake_r, responder.counts, self._keep_bound,
                                      source.limiter, source, responder, self.LOOK)
            else:
                unsent = 0
                self._punted += _udpbatch.recv_batch(self.fd)
            del responder, plane  # (not held while the event loop answers what was left)
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                log.error("UDP reader: descriptor %d closed under it; it stops", self.fd)
                return False
            log.debug("UDP receive error: %s", exc)
            return True
        if unsent:
            self.loop.call_soon_threadsafe(self.handler.send_failed, unsent)
        if self._punted:
            punted, self._punted = self._punted, []
            self._answered.clear()
            self.loop.call_soon_threadsafe(self._answer, punted)
            while not self._answered.wait(self.WAIT):
                if self._stopped:
                    return False
        return True

    def _wait(self) -> bool:
        """Waits until the socket is readable (True) or :meth:`stop` (False)."""
        for fd, ev in self._ready.poll():
            if ev & select.POLLNVAL:
                raise OSError(errno.EBADF, f"descriptor {fd} closed")
        return not self._stopped

    def _keep(self, packets: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The plane's fallback here: what it leaves to Python is kept for
        the event loop's thread, and nothing is sent for it yet."""
        self._punted.extend(packets)
        return []

    def _answer(self, packets: list[tuple[bytes, bytes]]) -> None:
        """What the plane left to Python, answered on the event loop's thread."""
        try:
            if self._stopped:
                return  # the socket may be closed by now
            assert _udpbatch is not None
            out = self.handler.answer_all(packets)
            if out:
                sent = _udpbatch.send_batch(self.fd, out)
                if sent != len(out):
                    self.handler.send_failed(len(out) - sent)
        finally:
            self._answered.set()


Network = tuple[int, int]  # (address family 4 or 6, the address's network bits); (0, 0): unknown
_V4_MAPPED = bytes(10) + b"\xff\xff"


class TCPConnections:
    """All open TCP connections, and the limits they live under.

    Every limit is enforced from a few insertion-ordered dicts, each ordered
    by the time that its timeout counts from, so that the one sweep timer
    (:meth:`sweep`) stops at the first connection not yet due:

    * ``open``: every connection, by its last complete query (or its
      accept): the idle timeout, and which connection goes at the caps;
    * ``networks``: the same order within each client network;
    * ``waiting``: connections that have not sent a complete query yet, by
      accept time (``initial_timeout``);
    * ``partial``: connections in the middle of a message, by the time its
      first byte came (``query_timeout``: a byte now and then does not
      keep a connection);
    * ``stuck``: connections no longer read because their answers wait
      unread at the caps, since when (``send_timeout``).

    A complete query costs a connection one clock read and a few dict
    moves per read (not per message); nothing here runs for UDP."""

    def __init__(self, limits: TcpConfig) -> None:
        self.limits = limits
        self.open: OrderedDict[TCPConnection, float] = OrderedDict()
        self.networks: dict[Network, OrderedDict[TCPConnection, None]] = {}
        self.waiting: dict[TCPConnection, float] = {}
        self.partial: dict[TCPConnection, float] = {}
        self.stuck: dict[TCPConnection, float] = {}
        self.closed: dict[TcpClosed, int] = dict.fromkeys(TcpClosed, 0)

    def configure(self, limits: TcpConfig) -> None:
        """New limits (a reload): they apply to the connections already open."""
        regroup = (limits.ipv4_prefix_length, limits.ipv6_prefix_length) != \
            (self.limits.ipv4_prefix_length, self.limits.ipv6_prefix_length)
        self.limits = limits
        if regroup:
            self.networks = {}
            for conn in self.open:
                conn.network = self.network_of(conn.peer)
                self.networks.setdefault(conn.network, OrderedDict())[conn] = None

    def sweep_interval(self) -> float:
        """How often :meth:`sweep` should run: a connection is closed at most
        half its timeout late."""
        lim = self.limits
        return min(1.0, lim.idle_timeout, lim.initial_timeout, lim.query_timeout,
                   lim.send_timeout) / 2

    def network_of(self, peer: Any) -> Network:
        """The client network of an address (``tcp.ipv4_prefix_length`` or
        ``ipv6_prefix_length`` bits); IPv4-mapped IPv6 addresses count as IPv4."""
        try:
            host = peer[0]
            if ":" in host:
                packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
                if not packed.startswith(_V4_MAPPED):
                    bits = 128 - self.limits.ipv6_prefix_length
                    return 6, int.from_bytes(packed, "big") >> bits
                packed = packed[12:]
            else:
                packed = socket.inet_pton(socket.AF_INET, host)
            return 4, int.from_bytes(packed, "big") >> (32 - self.limits.ipv4_prefix_length)
        except (TypeError, IndexError, OSError, ValueError):
            return 0, 0

    def add(self, conn: TCPConnection, now: float) -> None:
        """A new connection.  At its network's cap, then at the total cap,
        the least recently active connection (of the network, then of all)
        is closed to make room: a new client always gets in, and a network
        that opens too many only pushes out its own."""
        conn.network = self.network_of(conn.peer)
        mates = self.networks.get(conn.network)
        if mates is None:
            mates = self.networks[conn.network] = OrderedDict()
        while len(mates) >= self.limits.max_connections_per_network:
            self.let_go(next(iter(mates)), TcpClosed.NETWORK)
        while len(self.open) >= self.limits.max_connections:
            self.let_go(next(iter(self.open)), TcpClosed.EVICTED)
        self.open[conn] = now
        self.networks.setdefault(conn.network, mates)[conn] = None
        self.waiting[conn] = now

    def touch(self, conn: TCPConnection, now: float) -> None:
        """A complete query was read."""
        if conn in self.open:
            self.open[conn] = now
            self.open.move_to_end(conn)
            self.networks[conn.network].move_to_end(conn)
            if self.waiting:
                self.waiting.pop(conn, None)

    def remove(self, conn: TCPConnection) -> None:
        if self.open.pop(conn, None) is None:
            return
        mates = self.networks.get(conn.network)
        if mates is not None:
            mates.pop(conn, None)
            if not mates:
                del self.networks[conn.network]
        self.waiting.pop(conn, None)
        self.partial.pop(conn, None)
        self.stuck.pop(conn, None)

    def let_go(self, conn: TCPConnection, reason: TcpClosed) -> None:
        self.closed[reason] += 1
        self.remove(conn)
        conn.drop()

    def sweep(self, now: float) -> None:
        """Close every connection past one of its timeouts."""
        lim = self.limits
        for due, timeout, reason in ((self.partial, lim.query_timeout, TcpClosed.SLOW_QUERY),
                                     (self.stuck, lim.send_timeout, TcpClosed.UNREAD),
                                     (self.waiting, lim.initial_timeout, TcpClosed.INITIAL),
                                     (self.open, lim.idle_timeout, TcpClosed.IDLE)):
            deadline = now - timeout
            while due:
                conn, since = next(iter(due.items()))
                if since > deadline:
                    break
                self.let_go(conn, reason)


class TCPConnection(asyncio.Protocol):
    """One TCP client (RFC 7766): its pipelined queries are answered in order
    as they are read.

    Answers wait in the transport's buffer while the kernel's is full.  So
    that a client that does not read cannot make geodns hold its answers
    without bound, at most ``tcp.max_pipelined`` answers and about
    ``tcp.max_write_buffer`` bytes are held for it: at either cap geodns stops
    answering and stops reading from it until its buffer has drained (the
    transport says so: its high-water mark is 0).  The count also bounds the
    answers given to one connection before others get their turn."""

    def __init__(self, source: ResponderSource, registry: TCPConnections) -> None:
        self.handler = DatagramHandler(source)
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.network: Network = (0, 0)
        self.closing = False  # no more queries are answered
        self.finishing = False  # shutting down: input is read and thrown away
        self.eof_sent = False
        self.finished = False  # connection_lost has run: nothing more will be sent
        self.peer: tuple[str, int] | None = None
        self.buffered = False  # answers wait in the transport's buffer
        self.held = 0  # answers written since that buffer was last empty
        self.held_back = False  # not read: at a cap
        self.eof = False  # the client has half-closed while held back

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        # Told as soon as an answer waits in our buffer, and when it is empty.
        self.transport.set_write_buffer_limits(high=0)
        self.registry.add(self, time.monotonic())

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buf = self.buf + data if self.buf else data
        self.answer_buffered()

    def answer_buffered(self) -> None:
        """Answer the complete queries read, up to the caps; stop reading at a
        cap, read again once below."""
        if self.closing:
            return
        transport = self.transport
        assert transport is not None
        limits = self.registry.limits
        budget = limits.max_pipelined - self.held
        room = limits.max_write_buffer - (transport.get_write_buffer_size() if self.buffered
                                          else 0)
        buf = self.buf
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        capped = False
        while n - pos >= 2:
            size = (buf[pos] << 8) | buf[pos + 1]
            if n - pos - 2 < size:
                break
            if budget <= 0 or room <= 0:
                capped = True
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
            budget -= 1
            room -= 2 + len(resp)
        if not pos and not capped and not self.held_back:
            # Only part of a message so far: its first byte starts the clock.
            if self not in self.registry.partial:
                self.registry.partial[self] = time.monotonic()
            return
        now = time.monotonic()
        registry = self.registry
        self.buf = rest = buf[pos:]
        if pos:
            registry.touch(self, now)
            transport.write(b"".join(out))  # may call pause_writing()
            self.held = self.held + len(out) // 2 if self.buffered else 0
        if capped or self.held >= limits.max_pipelined or (
                self.buffered and transport.get_write_buffer_size() >= limits.max_write_buffer):
            registry.partial.pop(self, None)  # what waits now is our doing
            if not self.held_back:
                self.held_back = True
                transport.pause_reading()
                registry.stuck[self] = now
            if capped and not self.buffered:
                # Only the count stopped us, and the kernel took every answer:
                # go on at the next turn of the loop.
                asyncio.get_running_loop().call_soon(self.answer_buffered)
            return
        if rest:
            if pos or self not in registry.partial:
                registry.partial.pop(self, None)
                registry.partial[self] = now
        elif registry.partial:
            registry.partial.pop(self, None)
        if self.held_back:
            self.held_back = False
            registry.stuck.pop(self, None)
            if self.eof:
                self.close()
            else:
                transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self.held_back and not self.closing:
            # Queries read but not answered yet: answer them, then close.
            self.eof = True
            return True
        self.close()
        return None

    def pause_writing(self) -> None:
        self.buffered = True

    def resume_writing(self) -> None:
        # The buffer is empty: the client has taken every answer (to its kernel).
        self.buffered = False
        self.held = 0
        if self.held_back and not self.closing:
            self.answer_buffered()

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
        """Let go of a connection (past a timeout, or to make room).  Answers
        still waiting to be written mean the client is not reading them, and
        would hold the socket and the answers for ever: those connections are
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
            omit_path_mtu(udp)
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
