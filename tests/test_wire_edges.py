"""Malformed, hostile and unusual packets: the answers the issue and the
reference servers call for, checked without sockets."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rcode
import dnscompare as dc
import pytest

from tests.conftest import ask

H, Q, OPT = dc.wire_header, dc.wire_question, dc.wire_opt
WWW = "www.test.example"


def rcode_of(resp: bytes) -> int:
    """Header rcode plus the OPT's extended bits (parsed by hand: dnspython
    refuses some of the shapes we must answer)."""
    return resp[3] & 0xF


@pytest.mark.parametrize("packet", [b"", b"\x12", b"\x12\x34" + b"\x00" * 9])
def test_shorter_than_a_header_is_dropped(responder, packet: bytes) -> None:
    assert responder.respond(packet) is None
    assert responder.respond(packet, False) is None


def test_qr_set_is_dropped(responder) -> None:
    assert responder.respond(dc.query_wire(WWW, "A", qr=True)) is None


CASES = {
    # name: (packet, rcode, question echoed, OPT in answer)
    "qdcount-0": (H(qdcount=0), "FORMERR", False, False),
    "qdcount-0-edns": (H(qdcount=0, arcount=1) + OPT(), "FORMERR", False, True),
    "qdcount-2": (H(qdcount=2) + Q(WWW, "A") + Q("ns1.test.example", "A"), "FORMERR", False,
                  False),
    "question-truncated": (H() + Q(WWW, "A")[:-2], "FORMERR", False, False),
    "name-runs-off-the-end": (H() + b"\x03www\x04test", "FORMERR", False, False),
    "label-type-0x40": (H() + b"\x43www" + struct.pack("!HH", 1, 1), "FORMERR", False, False),
    "pointer-in-question": (H() + b"\x04test\xc0\x0c" + struct.pack("!HH", 1, 1), "FORMERR",
                            False, False),
    "two-opt": (H(arcount=2) + Q(WWW, "A") + OPT() + OPT(), "FORMERR", True, False),
    "opt-owner-not-root": (H(arcount=1) + Q(WWW, "A") + dc.encode_name("x")
                           + struct.pack("!HHIH", 41, 1232, 0, 0), "FORMERR", True, False),
    "option-length-overruns": (H(arcount=1) + Q(WWW, "A")
                               + struct.pack("!BHHIH", 0, 41, 1232, 0, 4)
                               + struct.pack("!HH", 10, 8), "FORMERR", True, False),
    "ancount-without-record": (H(ancount=1) + Q(WWW, "A"), "FORMERR", True, False),
    "edns-version-1": (dc.query_wire(WWW, "A", edns=1), "BADVERS", True, True),
    "opcode-notify": (H(opcode=4) + Q("test.example", "SOA"), "NOTIMP", True, False),
    "opcode-update": (H(opcode=5) + Q("test.example", "SOA"), "NOTIMP", True, False),
    "opcode-status-no-question": (H(opcode=2, qdcount=0), "NOTIMP", False, False),
    "class-chaos-unknown-name": (H() + Q("secret.bind", "TXT", "CH"), "REFUSED", True, False),
    "class-hesiod": (H() + Q(WWW, "A", "HS"), "REFUSED", True, False),
    "ixfr-not-ours": (dc.query_wire("other.example", "IXFR"), "NOTAUTH", True, False),
    "ixfr-ours": (dc.query_wire("test.example", "IXFR"), "REFUSED", True, False),
}


@pytest.mark.parametrize("name", CASES)
def test_unusual_packets(responder, name: str) -> None:
    packet, rcode, echoed, has_opt = CASES[name]
    for udp in (True, False):
        resp = responder.respond(packet, udp)
        assert resp is not None
        assert resp[:2] == packet[:2] and resp[2] & 0x80
        qd, an, ns, ar = struct.unpack("!HHHH", resp[4:12])
        assert (qd == 1) == echoed and an == ns == 0
        assert ar == (1 if has_opt else 0)
        if echoed:
            assert resp[12 : 12 + len(resp) - 12 - (11 if has_opt else 0)] in packet
        code = rcode_of(resp)
        if has_opt:
            code |= resp[-11 + 5] << 4  # extended rcode bits in the OPT TTL
            assert resp[-11:-8] == b"\x00\x00\x29"
            assert resp[-5] == 0  # our EDNS version is 0
        assert dns.rcode.to_text(code) == rcode
        assert resp[2] & 0x78 == packet[2] & 0x78  # opcode kept


def test_unknown_edns_options_are_ignored(responder) -> None:
    wire = dc.query_wire(WWW, "A", opt=OPT(options=[(65001, b"hello"), (10, b"12345678")]))
    msg = dns.message.from_wire(responder.respond(wire))
    assert msg.rcode() == 0 and len(msg.answer[0]) == 2 and not msg.options


def test_records_in_other_sections_are_ignored(responder) -> None:
    rr = dc.encode_name(WWW) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 9])
    msg = dns.message.from_wire(responder.respond(H(ancount=1) + Q(WWW, "A") + rr))
    assert msg.rcode() == 0 and len(msg.answer[0]) == 2


def test_trailing_bytes_are_ignored(responder) -> None:
    msg = dns.message.from_wire(responder.respond(dc.query_wire(WWW, "A") + b"junk"))
    assert msg.rcode() == 0 and len(msg.answer[0]) == 2


@pytest.mark.parametrize("qname,text", [("id.server", "node-7"), ("HOSTNAME.bind", "node-7"),
                                         ("version.bind", "geodns test")])
def test_chaos_identity_and_version(qname: str, text: str) -> None:
    from geodns.compile import compile_zones
    from geodns.wire import Responder
    from tests.conftest import load_test_zone

    r = Responder(compile_zones([load_test_zone()], chaos={
        "id.server.": "node-7", "hostname.bind.": "node-7", "version.bind.": "geodns test"}))
    msg = dns.message.from_wire(r.respond(H() + Q(qname, "TXT", "CH")))
    assert msg.rcode() == 0 and not msg.flags & dns.flags.AA
    assert [rd.to_text() for rd in msg.answer[0]] == [f'"{text}"']
    assert msg.answer[0].ttl == 0 and msg.answer[0].name.to_text() == qname + "."


# -- truncation -----------------------------------------------------------------------

def test_answer_too_big_without_edns_sets_tc_and_keeps_question(responder) -> None:
    # long.test.example TXT fits; a big answer is needed: 300 bytes + headers is fine,
    # so ask with a tiny zone of our own.
    from geodns.compile import compile_zones
    from geodns.wire import Responder
    from geodns.yamlsrc import Problems
    from geodns.zones.loader import load_zone_text

    big = [f"192.0.2.{i}" for i in range(1, 60)]
    text = ("origin: big.example.\nsoa: {mname: ns1, rname: h}\nrecords:\n"
            "  '@': {NS: [ns1], MX: ['10 mx']}\n  ns1: {A: 192.0.2.1}\n"
            f"  mx: {{A: [{', '.join(big)}]}}\n  many: {{A: [{', '.join(big)}]}}\n")
    zone = load_zone_text(text, "big", "big.example.", Problems())
    assert zone is not None
    r = Responder(compile_zones([zone]))
    # 59 A records: 12 + 16 + 59*16 = 972 bytes: TC without EDNS, fits in 1232.
    plain = dns.message.from_wire(r.respond(dc.query_wire("many.big.example", "A")))
    assert plain.flags & dns.flags.TC and plain.flags & dns.flags.AA
    assert plain.question[0].name.to_text() == "many.big.example."
    assert plain.answer == plain.authority == plain.additional == []
    edns = dns.message.from_wire(r.respond(dc.query_wire("many.big.example", "A", opt=OPT())))
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 59
    small = dns.message.from_wire(r.respond(dc.query_wire("many.big.example", "A",
                                                          opt=OPT(payload=512, do=True))))
    assert small.flags & dns.flags.TC and small.edns == 0 and small.ednsflags & dns.flags.DO
    # Over TCP nothing is truncated.
    tcp = dns.message.from_wire(r.respond(dc.query_wire("many.big.example", "A"), False))
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 59
    # MX: the additional section (59 addresses) is dropped before TC is needed.
    mx = dns.message.from_wire(r.respond(dc.query_wire("big.example", "MX")))
    assert not mx.flags & dns.flags.TC and len(mx.answer[0]) == 1 and mx.additional == []
    # ... and a query with Client Subnet still gets the option back (scope 0).
    q = dns.message.make_query("big.example.", "MX", use_edns=0, payload=512,
                               options=[dns.edns.ECSOption("198.51.100.0", 24, 0)])
    mx = dns.message.from_wire(r.respond(q.to_wire()))
    assert not mx.flags & dns.flags.TC and len(mx.answer[0]) == 1 and mx.additional == []
    assert [(o.address, o.srclen, o.scopelen) for o in mx.options] == [("198.51.100.0", 24, 0)]


def test_edns_payload_below_512_counts_as_512(responder) -> None:
    resp = ask(responder, "long.test.example.", "TXT", edns=0, payload=100)
    assert not resp.flags & dns.flags.TC and len(resp.answer) == 1


class _Broken(dict):
    def get(self, key, default=None):
        raise RuntimeError("a bug of ours")


@pytest.mark.parametrize("packet", [dc.query_wire(WWW, "A"), dc.query_wire(WWW, "A", opt=OPT()),
                                    H() + b"\x03www\x04test"])
def test_our_own_failure_answers_servfail_and_is_logged(packet: bytes, caplog) -> None:
    from geodns.compile import compile_zones
    from geodns.wire import Responder
    from tests.conftest import load_test_zone

    class BrokenResponder(Responder):
        __slots__ = ()

        def staged(self, data: bytes, udp: bool, peer=None) -> bytes | None:
            raise RuntimeError("also broken")

    r = BrokenResponder(compile_zones([load_test_zone()]))
    r.exact = _Broken()
    resp = r.respond(packet)
    assert resp is not None and resp[:2] == packet[:2]
    assert rcode_of(resp) == dns.rcode.SERVFAIL
    assert "internal error answering a query" in caplog.text
    assert "RuntimeError" in caplog.text
