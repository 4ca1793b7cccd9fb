"""Listening sockets a node is given instead of binding them: by the process
it replaces (:mod:`geodns.server.handover`) or by a service manager
(systemd socket activation, ``LISTEN_FDS``).

A given socket is matched to a configured address by what it is bound to
(``getsockname``) and its type, so the order in which they come does not
matter; an address nobody gave a socket for is bound as usual.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable

from geodns.address import Address

log = logging.getLogger("geodns.server")

SD_LISTEN_FDS_START = 3

# Linux's values, which Python's socket module does not name.
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
PMTUDISC_OMIT = 5  # IP_PMTUDISC_OMIT, IPV6_PMTUDISC_OMIT (Linux 3.15)


def omit_path_mtu(udp: socket.socket) -> None:
    """A UDP socket that answers queries ignores path MTU information
    (``IP_PMTUDISC_OMIT``), as gdnsd's and Knot's do: answers never carry
    Don't Fragment, and a forged ICMP "fragmentation needed" cannot make
    the kernel fragment them below the interface's MTU (the fragment attacks
    on DNS).  It also spares the kernel a route MTU look-up per datagram sent.
    Left as it is where the system refuses it (not Linux, a kernel before
    3.15)."""
    level, name = ((socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER) if udp.family == socket.AF_INET6
                   else (socket.IPPROTO_IP, IP_MTU_DISCOVER))
    try:
        udp.setsockopt(level, name, PMTUDISC_OMIT)
    except OSError as exc:
        log.debug("UDP socket %s keeps path MTU discovery: %s", udp.getsockname(), exc)


def _key(host: str, port: int, kind: int) -> tuple[str, int, int]:
    with contextlib.suppress(ValueError):  # a name, not an address: as written
        host = str(ipaddress.ip_address(host.split("%", 1)[0]))
    return host, port, kind


class GivenSockets:
    """Sockets to use instead of binding, by (address, port, type).  There
    may be several for one address: a node that had more workers than this
    one has hands over more sockets than there are workers, and each is read
    (none is closed while it holds queries)."""

    def __init__(self, sockets: Iterable[socket.socket] = (), origin: str = "") -> None:
        self.origin = origin  # for the log: "the process it replaces", "systemd"
        self._by_key: dict[tuple[str, int, int], list[socket.socket]] = {}
        for sock in sockets:
            try:
                host, port = sock.getsockname()[:2]
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            if sock.type == socket.SOCK_DGRAM:
                omit_path_mtu(sock)
            self._by_key.setdefault(_key(host, port, sock.type), []).append(sock)

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def _pop(self, key: tuple[str, int, int]) -> socket.socket | None:
        socks = self._by_key.get(key)
        if not socks:
            return None
        sock = socks.pop(0)
        if not socks:
            del self._by_key[key]
        return sock

    def take(self, host: str, port: int, kind: socket.SocketKind) -> socket.socket | None:
        """A socket given for this address and type (removed from the set);
        with port 0, any given socket on that host (the port it was bound to
        before)."""
        if port == 0:
            for key in list(self._by_key):
                if key[0] == _key(host, 0, kind)[0] and key[2] == kind:
                    return self._pop(key)
            return None
        return self._pop(_key(host, port, kind))

    def take_pair(self, addr: Address) -> tuple[socket.socket, socket.socket] | None:
        """The UDP and TCP sockets given for a listen address, or None (and
        nothing taken) unless both were given."""
        udp = self.take(addr.host, addr.port, socket.SOCK_DGRAM)
        if udp is None:
            return None
        tcp = self.take(addr.host, udp.getsockname()[1], socket.SOCK_STREAM)
        if tcp is None:
            host, port = udp.getsockname()[:2]
            self._by_key.setdefault(_key(host, port, socket.SOCK_DGRAM), []).insert(0, udp)
            return None
        return udp, tcp

    def take_pairs(self, addr: Address) -> list[tuple[socket.socket, socket.socket]]:
        """Every UDP and TCP pair given for a listen address."""
        pairs: list[tuple[socket.socket, socket.socket]] = []
        while (pair := self.take_pair(addr)) is not None:
            pairs.append(pair)
            addr = Address(addr.host, pair[0].getsockname()[1])  # port 0: the same port
        return pairs

    def close_unused(self) -> None:
        for (host, port, kind), socks in self._by_key.items():
            what = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
            log.warning("a %s socket on %s port %d was given (%s) but is not configured: "
                        "closed", what, host, port, self.origin)
            for sock in socks:
                sock.close()
        self._by_key.clear()


def from_systemd(environ: dict[str, str] | None = None) -> GivenSockets:
    """The sockets systemd passed (``LISTEN_FDS`` for this process), if any.
    The variables are removed, as sd_listen_fds does, so that a process
    started from this one does not take them for its own."""
    env = os.environ if environ is None else environ
    try:
        pid = int(env.get("LISTEN_PID", "0"))
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return GivenSockets()
    if pid != os.getpid() or count <= 0:
        return GivenSockets()
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
            sockets.append(socket.socket(fileno=fd))
    return GivenSockets(sockets, "systemd socket activation")


__all__ = ["GivenSockets", "from_systemd"]
