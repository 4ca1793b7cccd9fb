"""EDNS Client Subnet (RFC 7871): which client a query speaks for, and the
scope an answer is valid for.  Pure.

Theory of operation: a resolver that sends the option tells us the network
its client is in (family, source prefix length, address bits); without one,
the resolver's own address stands for the client.  :func:`client_subnet`
checks the option as Knot and gdnsd do (a scope in a query, an unknown
family, a prefix too long, an address longer or shorter than its prefix, or
bits set beyond the prefix: FORMERR) and returns the address padded to its
full length with the source prefix.  A source prefix of 0 means "do not
tailor by subnet": the resolver's address is used instead, and the scope
is 0.

Every answer to a query with the option carries it back (section 7.2) with
our *scope*: the prefix length of the network the answer really depends on,
never longer than the source prefix, and 0 for an answer that does not
depend on the client at all (so resolvers cache it once for everyone).
:func:`tails` builds an answer's tails with that echo.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from geodns.compile import Tails, opt_record
from geodns.errors import GeodnsError

# Where a query came from: the kernel's raw sockaddr bytes (batched UDP), an
# address tuple (asyncio, TCP) or nothing (tests, explain).
Peer = bytes | tuple[Any, ...] | None
CODE = 8  # the option code
_AF_INET_LE = socket.AF_INET.to_bytes(2, "little")  # sockaddr_in as Linux lays it out
_AF_INET_BE = socket.AF_INET.to_bytes(2, "big")


class BadClientSubnet(GeodnsError, ValueError):
    """An option a query must not carry (the query gets FORMERR)."""


def client_subnet(option: bytes) -> tuple[bytes, int]:
    """Check a Client Subnet option's data (family, source, scope, address)
    and return (address padded to its full length, source prefix)."""
    if len(option) < 4:
        raise BadClientSubnet("Client Subnet option shorter than 4 bytes")
    family = (option[0] << 8) | option[1]
    source, scope = option[2], option[3]
    if family == 1:
        size = 4
    elif family == 2:
        size = 16
    else:
        raise BadClientSubnet(f"Client Subnet family {family}")
    if source > size * 8:
        raise BadClientSubnet(f"Client Subnet source prefix {source} too long")
    if scope:
        raise BadClientSubnet("Client Subnet scope must be 0 in a query")
    addr = option[4:]
    if len(addr) != (source + 7) // 8:
        raise BadClientSubnet("Client Subnet address length does not match its prefix")
    if source % 8 and addr[-1] & (0xFF >> (source % 8)):
        raise BadClientSubnet("Client Subnet address has bits set beyond its prefix")
    return addr + bytes(size - len(addr)), source


def checked(option: bytes) -> tuple[bytes, int] | None:
    """:func:`client_subnet`, or None for an option that means FORMERR."""
    try:
        return client_subnet(option)
    except BadClientSubnet:
        return None


def peer_address(peer: Peer) -> tuple[bytes, int]:
    """The packed source address of a query and its full prefix length."""
    if isinstance(peer, bytes):
        if peer[:2] == _AF_INET_LE or peer[:2] == _AF_INET_BE:
            return peer[4:8], 32
        return peer[8:24], 128
    if peer is None:
        return b"\x00\x00\x00\x00", 0
    host = peer[0]
    if ":" in host:  # inet_pton: a tenth of ipaddress's time (DNS cookies hash every peer)
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0]), 128
    return socket.inet_pton(socket.AF_INET, host), 32


def tails(body: bytes, option: bytes, scope: int, payload: int,
          do_body: bytes | None = None) -> Tails:
    """An answer's tails (:data:`geodns.compile.Tails`) for a query that
    sent ``option``: both OPTs carry the option back with our ``scope``.
    ``do_body`` replaces ``body`` with DO (a signed answer's signed form,
    which is what a query with DO gets).  No body is copied."""
    echo = struct.pack("!HHHBB", CODE, len(option), (option[0] << 8) | option[1], option[2],
                       scope) + option[4:]
    return (body, opt_record(payload, False, options=echo),
            body if do_body is None else do_body, opt_record(payload, True, options=echo))
