"""The DNS listeners: a UDP and a TCP socket per listen address, and the
readers that feed them to the responder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from geodns.address import Address
from geodns.errors import StartupError
from geodns.server.sockets import GivenSockets
from geodns.server.transport import (
    ResponderSource,
    TCPConnection,
    TCPConnections,
    UDPPlaneThread,
    UDPReader,
    UDPServer,
    bind_pair,
)

log = logging.getLogger("geodns.server")


class Listeners:
    def __init__(self, source: ResponderSource, tcp: TCPConnections, udp_mode: str,
                 reuse_port: bool) -> None:
        self.source = source
        self.tcp = tcp
        self.udp_mode = udp_mode
        self.reuse_port = reuse_port
        self.bound: list[Address] = []
        self._udp_transports: list[asyncio.BaseTransport] = []
        self._udp_readers: list[socket.socket] = []
        self._udp_threads: list[tuple[UDPPlaneThread, socket.socket]] = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        # Every listening socket, UDP and TCP, in the order of the addresses:
        # what a process that replaces this one is given.
        self.sockets: list[socket.socket] = []

    async def open(self, addresses: list[Address], given: GivenSockets | None = None) -> None:
        """Bind every address (UDP and TCP), or take the sockets ``given``
        for it, then start reading: a failure names the address, and closes
        what was bound before any query was read from it."""
        loop = asyncio.get_running_loop()
        pairs: list[tuple[Address, socket.socket, socket.socket]] = []
        for addr in addresses:
            taken = given.take_pairs(addr) if given else []
            if taken:
                pairs += [(addr, udp, tcp) for udp, tcp in taken]
                continue
            try:
                udp_sock, tcp_sock = bind_pair(addr.host, addr.port, self.reuse_port)
            except OSError as exc:
                for _, udp, tcp in pairs:
                    udp.close()
                    tcp.close()
                raise StartupError(f"cannot listen on {addr} (UDP and TCP): "
                                   f"{exc.strerror or exc}") from None
            pairs.append((addr, udp_sock, tcp_sock))
        if given:
            given.close_unused()
        for addr, udp_sock, tcp_sock in pairs:
            self.sockets += [udp_sock, tcp_sock]
            if self.udp_mode == "batch":
                thread = UDPPlaneThread(self.source, udp_sock, loop)
                thread.start()
                self._udp_threads.append((thread, udp_sock))
            elif self.udp_mode == "reader":
                loop.add_reader(udp_sock.fileno(), UDPReader(self.source, udp_sock).on_readable)
                self._udp_readers.append(udp_sock)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: UDPServer(self.source), sock=udp_sock)
                self._udp_transports.append(transport)
            server = await loop.create_server(
                lambda: TCPConnection(self.source, self.tcp), sock=tcp_sock)
            self._tcp_servers.append(server)
            bound = Address(addr.host, udp_sock.getsockname()[1])
            if bound in self.bound:
                continue  # one more socket handed over for it, read as well
            self.bound.append(bound)
            log.info("listening on %s (UDP and TCP)", bound,
                     extra={"event": "listening", "address": str(bound)})

    def close_sockets(self) -> None:
        """Stop taking new queries and connections (open connections stay).
        A socket another process was given too (a restart) stays open there:
        this closes only this process's hold on it."""
        for server in self._tcp_servers:
            server.close()
        for transport in self._udp_transports:
            transport.close()
        loop = asyncio.get_running_loop()
        for thread, _ in self._udp_threads:
            thread.stop()  # all at once, then each waited for
        for thread, sock in self._udp_threads:
            thread.join()
            loop.remove_reader(sock.fileno())  # (read by the loop if its thread failed)
            sock.close()
        self._udp_threads.clear()
        for sock in self._udp_readers:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._udp_readers.clear()
        self._udp_transports.clear()

    async def wait_closed(self) -> None:
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._tcp_servers.clear()


__all__ = ["Listeners"]
