"""Fuzzing the hot path: random bytes and mutated real queries.

Whatever comes in, :meth:`Responder.respond` returns None (drop) or a
message dnspython can parse, whose ID is the query's and whose QR bit is
set; it never raises and never answers a packet with QR set.
"""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodns.wire import Responder

SEEDS = [
    dns.message.make_query(name, rtype, use_edns=edns).to_wire()
    for name in ("www.test.example.", "nothere.test.example.", "a.b.wild.test.example.",
                 "host.deleg.test.example.", "long.test.example.", "example.org.")
    for rtype in ("A", "TXT", "ANY", "NS")
    for edns in (False, 0)
]

FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(responder: Responder, packet: bytes) -> None:
    for udp in (True, False):
        resp = responder.respond(packet, udp)
        if resp is None:
            assert len(packet) < 12 or packet[2] & 0x80
            continue
        assert len(packet) >= 12 and not packet[2] & 0x80
        assert resp[:2] == packet[:2]
        assert resp[2] & 0x80
        if udp:
            assert len(resp) <= 1232
        if packet[2] & 0x78:  # not QUERY: dnspython parses UPDATE & co. differently
            assert resp[3] & 0xF in (dns.rcode.NOTIMP, dns.rcode.FORMERR)
            continue
        msg = dns.message.from_wire(resp, ignore_trailing=False)
        assert msg.rcode() != dns.rcode.SERVFAIL, "a malformed query is not our fault"


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(responder, packet: bytes) -> None:
    check(responder, packet)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)),
                                        max_size=6),
       st.integers(0, 600), st.binary(max_size=40))
def test_mutated_queries(responder, seed: bytes, flips, cut: int, extra: bytes) -> None:
    packet = bytearray(seed)
    for pos, value in flips:
        if pos < len(packet):
            packet[pos] = value
    packet = packet[: max(cut, 12)] + extra if cut < len(packet) else packet + extra
    check(responder, bytes(packet))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 0xFFFF), st.integers(0, 3), st.integers(0, 3),
       st.integers(0, 3), st.integers(0, 3))
def test_header_fields(responder, seed: bytes, flags: int, qd: int, an: int, ns: int,
                       ar: int) -> None:
    packet = seed[:2] + struct.pack("!HHHHH", flags, qd, an, ns, ar) + seed[12:]
    check(responder, packet)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=30)), max_size=5),
       st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_edns_options(responder, options, payload: int, version: int, flags: int) -> None:
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    q = dns.message.make_query("www.test.example.", "A").to_wire()
    q = q[:10] + b"\x00\x01" + q[12:]
    opt = struct.pack("!BHHBBHH", 0, 41, payload, 0, version, flags, len(rdata)) + rdata
    check(responder, q + opt)
