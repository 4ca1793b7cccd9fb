"""Knot DNS and NSD agree on how to answer for the reference zones.

This proves the harness (tests/refservers.py, tests/dnscompare.py) and
records, case by case, the answers geodns has to give: every (name, type)
in ``CASES`` is asked of both servers over UDP and TCP, with and without
EDNS, and the normalized answers must be equal (and have the expected rcode,
flags and answer count).  ``PROBES`` does the same for crafted packets.

Where the two servers genuinely disagree the case is listed in
``KNOWN_DIFFERENCES`` with the reason; those tests check that the servers
still disagree, so the table cannot silently go stale.  A probe gets no reply
only where ``NO_REPLY`` says so: a timeout anywhere else fails, so a slow or
dead server cannot pass as one that disagrees.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import dns.message
import dns.rrset
import dnscompare as dc
import pytest

from tests.conftest import REF_ZONES

pytestmark = pytest.mark.reference

ZONES = REF_ZONES
# NSD adds the apex NS RRset (and its addresses) to positive answers, Knot
# does not; everything else must match exactly (see dnscompare's docstring).
NORMALIZE: dict[str, Any] = {"authority_ns": False}

# (qname as sent, qtype, expected "RCODE FLAGS an=N" over every transport)
CASES: list[tuple[str, str, str]] = [
    # apex, ordinary data
    ("example.test", "SOA", "NOERROR AA an=1"),
    ("example.test", "NS", "NOERROR AA an=2"),
    ("example.test", "MX", "NOERROR AA an=2"),
    ("example.test", "A", "NOERROR AA an=1"),
    ("example.test", "AAAA", "NOERROR AA an=1"),
    ("example.test", "TXT", "NOERROR AA an=1"),
    ("example.test", "CAA", "NOERROR AA an=2"),
    ("example.test", "ANY", "NOERROR AA an=1"),
    ("www.example.test", "A", "NOERROR AA an=2"),
    ("www.example.test", "AAAA", "NOERROR AA an=1"),
    ("www.example.test", "MX", "NOERROR AA an=0"),  # NODATA
    ("www.example.test", "ANY", "NOERROR AA an=2"),  # one RRset only (RFC 8482)
    ("ns2.example.test", "AAAA", "NOERROR AA an=0"),
    ("mail.example.test", "AAAA", "NOERROR AA an=1"),  # TTL 300 from the file
    # name case
    ("wWw.ExAmPlE.tEsT", "A", "NOERROR AA an=2"),
    ("MIXEDCASE.example.test", "A", "NOERROR AA an=1"),
    ("FOO.Wild.example.test", "TXT", "NOERROR AA an=1"),
    # CNAMEs
    ("alias.example.test", "A", "NOERROR AA an=3"),
    ("chain.example.test", "A", "NOERROR AA an=4"),
    ("chain.example.test", "AAAA", "NOERROR AA an=3"),
    ("chain.example.test", "CNAME", "NOERROR AA an=1"),
    ("dangling.example.test", "A", "NXDOMAIN AA an=1"),  # RFC 6604: rcode of the last name
    ("external.example.test", "A", "NOERROR AA an=1"),
    ("intodeleg.example.test", "A", "NOERROR AA an=1"),  # CNAME + referral in authority
    # TXT/SRV/PTR
    ("multi.example.test", "TXT", "NOERROR AA an=1"),
    ("quoted.example.test", "TXT", "NOERROR AA an=1"),
    ("sel._domainkey.example.test", "TXT", "NOERROR AA an=1"),  # > 512 bytes: TC without EDNS
    ("_sip._tcp.example.test", "SRV", "NOERROR AA an=1"),
    ("_sip._udp.example.test", "SRV", "NOERROR AA an=1"),
    ("b._dns-sd._udp.example.test", "PTR", "NOERROR AA an=1"),
    ("_udp.example.test", "PTR", "NOERROR AA an=0"),  # empty non-terminal
    # wildcards
    ("foo.wild.example.test", "A", "NOERROR AA an=1"),
    ("foo.wild.example.test", "AAAA", "NOERROR AA an=0"),
    ("a.b.foo.wild.example.test", "A", "NOERROR AA an=1"),
    ("*.wild.example.test", "A", "NOERROR AA an=1"),
    ("sub.wild.example.test", "A", "NOERROR AA an=1"),
    ("sub.wild.example.test", "TXT", "NOERROR AA an=0"),  # exists: no wildcard
    ("x.sub.wild.example.test", "A", "NXDOMAIN AA an=0"),
    ("wild.example.test", "A", "NOERROR AA an=0"),  # ENT above the wildcard
    # empty non-terminals, NXDOMAIN
    ("c.example.test", "A", "NOERROR AA an=0"),
    ("b.c.example.test", "TXT", "NOERROR AA an=0"),
    ("a.b.c.example.test", "A", "NOERROR AA an=1"),
    ("nonexist.example.test", "A", "NXDOMAIN AA an=0"),
    ("nonexist.example.test", "ANY", "NXDOMAIN AA an=0"),
    # delegations: referrals are not authoritative, DS is answered by the parent
    ("deleg.example.test", "NS", "NOERROR - an=0"),
    ("deleg.example.test", "A", "NOERROR - an=0"),
    ("deleg.example.test", "DS", "NOERROR AA an=0"),
    ("host.deleg.example.test", "A", "NOERROR - an=0"),
    ("ns.deleg.example.test", "A", "NOERROR - an=0"),  # glue is not answered
    ("outdeleg.example.test", "A", "NOERROR - an=0"),
    ("outdeleg.example.test", "DS", "NOERROR AA an=0"),
    ("x.outdeleg.example.test", "MX", "NOERROR - an=0"),
    # second.test: apex wildcard, CNAME wildcards, sibling NS address
    ("second.test", "SOA", "NOERROR AA an=1"),
    ("second.test", "NS", "NOERROR AA an=2"),
    ("second.test", "MX", "NOERROR AA an=2"),
    ("foo.second.test", "A", "NOERROR AA an=1"),
    ("foo.second.test", "MX", "NOERROR AA an=1"),
    ("foo.second.test", "TXT", "NOERROR AA an=0"),
    ("explicit.second.test", "A", "NOERROR AA an=0"),
    ("a.cn.second.test", "A", "NOERROR AA an=2"),
    ("b.ext.second.test", "A", "NOERROR AA an=1"),
    ("www.second.test", "A", "NOERROR AA an=1"),
    ("www.second.test", "MX", "NOERROR AA an=1"),
    ("y.second.test", "A", "NOERROR AA an=0"),
    ("x.y.second.test", "A", "NXDOMAIN AA an=0"),  # ENT y blocks the apex wildcard
    ("kids.second.test", "A", "NOERROR - an=0"),
    ("a.kids.second.test", "A", "NOERROR - an=0"),
    # not ours
    ("nothere.test", "A", "REFUSED - an=0"),
    ("test", "SOA", "REFUSED - an=0"),
    (".", "NS", "REFUSED - an=0"),
]

TRANSPORTS = {  # id: (tcp, edns)
    "udp-edns": (False, 0),
    "udp-plain": (False, None),
    "tcp-edns": (True, 0),
    "tcp-plain": (True, None),
}
TRUNCATED = {("sel._domainkey.example.test", "udp-plain"): "NOERROR AA+TC an=0"}


# -- crafted packets -------------------------------------------------------------------

_H, _Q, _O = dc.wire_header, dc.wire_question, dc.wire_opt
_SOA = dns.rrset.from_text(
    "example.test.", 0, "IN", "SOA", "ns1.example.test. hostmaster.example.test. 1 1 1 1 1"
)
_A_RR = (
    dc.encode_name("www.example.test") + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 9])
)


def _ixfr() -> bytes:
    msg = dns.message.make_query("example.test.", "IXFR")
    msg.id, msg.flags = 0x1234, 0
    msg.authority.append(_SOA)
    return msg.to_wire()


def _www(**kw: Any) -> bytes:
    return dc.query_wire("www.example.test", "A", **kw)


# id: (wire, tcp)
PROBES: dict[str, tuple[Callable[[], bytes], bool]] = {
    "edns-version-1": (lambda: _www(edns=1), False),  # BADVERS, question echoed, OPT v0
    "edns-version-1-do": (lambda: _www(opt=_O(version=1, do=True)), False),
    "edns-do-copied": (lambda: _www(opt=_O(do=True)), False),
    "edns-unknown-option": (lambda: _www(opt=_O(options=[(65001, b"hello")])), False),
    "edns-payload-4096": (lambda: _www(opt=_O(payload=4096)), False),
    "edns-payload-0": (lambda: _www(opt=_O(payload=0)), False),
    "edns-two-opt": (lambda: _H(arcount=2) + _Q("www.example.test", "A") + _O() + _O(), False),
    "edns-nsid": (lambda: _www(opt=_O(options=[(3, b"")])), False),
    "edns-opt-owner-not-root": (
        lambda: (
            _H(arcount=1)
            + _Q("www.example.test", "A")
            + dc.encode_name("example.test")
            + struct.pack("!HHIH", 41, 1232, 0, 0)
        ),
        False,
    ),
    "flags-rd-cd": (lambda: _www(rd=True, cd=True), False),  # RD copied, CD cleared
    "flags-aa-tc-ra-ad-in-query": (lambda: _www(aa=True, tc=True, ra=True, ad=True), False),
    "flags-rcode-in-query": (lambda: _www(rcode=5), False),
    "qr-set-udp": (lambda: _www(qr=True), False),  # dropped
    "qr-set-tcp": (lambda: _www(qr=True), True),
    "qdcount-0": (lambda: _H(qdcount=0), False),
    "qdcount-0-edns": (lambda: _H(qdcount=0, arcount=1) + _O(), False),
    "qdcount-2": (
        lambda: _H(qdcount=2) + _Q("www.example.test", "A") + _Q("ns1.example.test", "A"),
        False,
    ),
    "ancount-1": (lambda: _H(ancount=1) + _Q("www.example.test", "A") + _A_RR, False),
    "ancount-1-missing": (lambda: _H(ancount=1) + _Q("www.example.test", "A"), False),
    "trailing-garbage": (lambda: _www() + b"\x00\x01junk", False),
    "qname-pointer": (
        lambda: _H() + b"\x07example\x04test\xc0\x04" + struct.pack("!HH", 6, 1),
        False,
    ),
    "qname-pointer-loop": (lambda: _H() + b"\xc0\x0c" + struct.pack("!HH", 1, 1), False),
    "opcode-notify": (lambda: _H(opcode=4, aa=True) + _Q("example.test", "SOA"), False),
    "opcode-update": (lambda: _H(opcode=5) + _Q("example.test", "SOA"), False),
    "opcode-status": (lambda: _H(opcode=2) + _Q("example.test", "SOA"), False),
    "chaos-id.server": (lambda: _H() + _Q("id.server", "TXT", "CH"), False),
    "chaos-a-version.bind": (lambda: _H() + _Q("version.bind", "A", "CH"), False),
    "in-version.bind": (lambda: _H() + _Q("version.bind", "TXT"), False),
    "hesiod-version.bind": (lambda: _H() + _Q("version.bind", "TXT", "HS"), False),
    "qclass-any": (lambda: _H() + _Q("www.example.test", "A", 255), False),
    "qtype-0": (lambda: dc.query_wire("www.example.test", 0), False),
    "qtype-maila": (lambda: dc.query_wire("www.example.test", 254), False),
    "axfr-udp": (lambda: dc.query_wire("example.test", "AXFR"), False),
    "axfr-tcp": (lambda: dc.query_wire("example.test", "AXFR"), True),
    "axfr-tcp-not-ours": (lambda: dc.query_wire("nothere.test", "AXFR"), True),
    "ixfr-udp": (_ixfr, False),
    "ixfr-tcp": (_ixfr, True),
    "truncated-plain": (lambda: dc.query_wire("sel._domainkey.example.test", "TXT"), False),
    "truncated-edns-512": (
        lambda: dc.query_wire("sel._domainkey.example.test", "TXT", opt=_O(payload=512, do=True)),
        False,
    ),
}

KNOWN_DIFFERENCES: dict[str, str] = {
    # CASES ("qname qtype", as in CASES)
    "example.test ANY": "both send one RRset for ANY (RFC 8482) over UDP and TCP, "
    "but pick different ones at the apex: Knot the A RRset, NSD the SOA",
    "b.ext.second.test A": "CNAME into another zone the server is authoritative for: "
    "NSD follows it (adds www.example.test A), Knot stops at the zone boundary",
    "www.second.test A": "same cross-zone CNAME chase as b.ext.second.test A",
    "www.second.test MX": "cross-zone CNAME to a name without MX: NSD adds the other "
    "zone's SOA (NODATA), Knot sends the CNAME alone",
    # PROBES ("probe:<id>")
    "probe:edns-version-1-do": "BADVERS answer: Knot copies DO into its OPT, NSD does not",
    "probe:edns-two-opt": "FORMERR either way; Knot echoes the question, NSD sends a bare header",
    "probe:edns-nsid": "Knot answers NSID with the host name by default, NSD only if nsid is set",
    "probe:edns-opt-owner-not-root": "Knot ignores a non-root OPT owner, NSD answers FORMERR",
    "probe:flags-rcode-in-query": "NSD answers FORMERR to a query with rcode != 0, Knot ignores it",
    "probe:qdcount-0-edns": "Knot FORMERR, NSD NOERROR (both with OPT, no question)",
    "probe:qdcount-2": "Knot drops it, NSD answers FORMERR (bare header)",
    "probe:ancount-1": "Knot ignores a record in the answer section, NSD answers FORMERR",
    "probe:ancount-1-missing": "FORMERR either way; Knot echoes the question, NSD does not",
    "probe:trailing-garbage": "Knot answers FORMERR, NSD ignores bytes after the counted sections",
    "probe:qname-pointer": "Knot drops a query with a compression pointer in QNAME, NSD FORMERR",
    "probe:qname-pointer-loop": "Knot drops it, NSD answers FORMERR",
    "probe:opcode-notify": "Knot NOTAUTH with the question, NSD REFUSED without it (and copies AA)",
    "probe:opcode-update": "Knot NOTAUTH with the question, NSD NOTIMP without it",
    "probe:opcode-status": "NOTIMP either way; Knot echoes the question, NSD does not",
    "probe:hesiod-version.bind": "REFUSED either way; Knot echoes the question, NSD does not",
    "probe:qclass-any": "both answer the IN data; Knot sets AA, NSD does not",
    "probe:qtype-0": "Knot answers NOTIMP, NSD NODATA",
    "probe:axfr-tcp": "transfer not allowed: Knot NOTAUTH, NSD REFUSED",
    "probe:ixfr-udp": "transfer not allowed: Knot NOTAUTH, NSD REFUSED",
    "probe:ixfr-tcp": "transfer not allowed: Knot NOTAUTH, NSD REFUSED",
}


# -- fixtures --------------------------------------------------------------------------


def _summary(norm: dict[str, Any]) -> str:
    return f"{norm['rcode']} {'+'.join(norm['flags']) or '-'} an={len(norm['answer'])}"


# Probes a server deliberately leaves unanswered.  Every other probe must get a
# reply: a server that is slow, stuck or gone must not pass as "disagreeing" (or
# as "agreeing on silence").
NO_REPLY: dict[str, frozenset[str]] = {
    "qr-set-udp": frozenset({"knot", "nsd"}),  # a response, not a query: dropped
    "qr-set-tcp": frozenset({"knot", "nsd"}),  # ... and the connection closed
    "qdcount-2": frozenset({"knot"}),
    "qname-pointer": frozenset({"knot"}),
    "qname-pointer-loop": frozenset({"knot"}),
}
PROBE_TIMEOUT = 0.5  # how long to wait for the nothing a dropped probe gets
REPLY_TIMEOUT = 5.0  # how long an answer may take on a busy machine


def expects_reply(probe: str, server: str) -> bool:
    """Whether ``server`` ("knot" or "nsd") answers crafted packet ``probe``."""
    return server not in NO_REPLY.get(probe, frozenset())


def probe_reply(address: tuple[str, int], wire: bytes, tcp: bool,
           reply_expected: bool = True) -> dict[str, Any] | None:
    timeout = REPLY_TIMEOUT if reply_expected else PROBE_TIMEOUT
    reply = dc.raw_exchange(*address, wire, tcp=tcp, timeout=timeout)
    return None if reply is None else dc.normalize(dc.parse(reply), **NORMALIZE)


def check_silence(replies: dict[str, Any], probe: str) -> None:
    """Knot and NSD answered ``probe`` exactly when NO_REPLY says they do."""
    for name in ("knot", "nsd"):
        if expects_reply(probe, name):
            assert replies[name] is not None, (
                f"no reply from {name} to probe {probe} within {REPLY_TIMEOUT} s")
        else:
            assert replies[name] is None, (
                f"{name} now answers probe {probe}; drop it from NO_REPLY: {replies[name]}")


def _report(a: Any, b: Any) -> str:
    if a is None or b is None:
        return f"knot={'no reply' if a is None else a} nsd={'no reply' if b is None else b}"
    return "\n".join(dc.diff(a, b, ("knot", "nsd")))


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("qname", "qtype", "expected"), CASES, ids=[f"{n} {t}" for n, t, _ in CASES]
)
def test_knot_and_nsd_agree(
    knot, nsd, qname: str, qtype: str, expected: str, transport: str
) -> None:
    tcp, edns = TRANSPORTS[transport]
    answers = {
        name: dc.normalize(dc.query(*address, qname, qtype, tcp=tcp, edns=edns), **NORMALIZE)
        for name, address in (("knot", knot), ("nsd", nsd))
    }
    differences = dc.diff(answers["knot"], answers["nsd"], ("knot", "nsd"))
    known = KNOWN_DIFFERENCES.get(f"{qname} {qtype}")
    if known:
        assert differences, (
            f"Knot and NSD now agree on {qname} {qtype}; drop it from KNOWN_DIFFERENCES"
        )
    else:
        assert not differences, "Knot and NSD disagree:\n" + "\n".join(differences)
    want = TRUNCATED.get((qname, transport), expected)
    for name in ("knot",) if known else ("knot", "nsd"):
        assert _summary(answers[name]) == want, name
        edns_reply = answers[name]["edns"]
        if edns is None:
            assert edns_reply is None, name
        else:  # options may differ by case: both add EDE 20 (Not Authoritative) to REFUSED
            got = (edns_reply["version"], edns_reply["do"], edns_reply["payload"])
            assert got == (0, False, 1232), name


@pytest.mark.parametrize("probe", PROBES)
def test_crafted_packets(knot, nsd, probe: str) -> None:
    build, tcp = PROBES[probe]
    wire = build()
    a = probe_reply(knot, wire, tcp, expects_reply(probe, "knot"))
    b = probe_reply(nsd, wire, tcp, expects_reply(probe, "nsd"))
    check_silence({"knot": a, "nsd": b}, probe)
    if f"probe:{probe}" in KNOWN_DIFFERENCES:
        assert a != b, f"Knot and NSD now agree on probe {probe}; drop it from KNOWN_DIFFERENCES"
    else:
        assert a == b, f"Knot and NSD disagree on probe {probe}:\n{_report(a, b)}"


def test_protocol_details_both_agree_on(knot, nsd) -> None:
    """Spot checks of agreed behaviour that the probe table only compares."""
    for address in (knot, nsd):
        reply = probe_reply(address, _www(edns=1), False)
        assert reply is not None
        assert reply["rcode"] == "BADVERS" and reply["question"] == ["www.example.test. IN A"]
        assert reply["edns"]["version"] == 0 and not reply["answer"]
        assert probe_reply(address, _www(qr=True), False, reply_expected=False) is None
        do = probe_reply(address, _www(opt=_O(do=True)), False)
        assert do is not None and do["edns"]["do"] is True
        flags = probe_reply(address, _www(rd=True, cd=True), False)
        assert flags is not None and flags["flags"] == ["AA", "RD"]
        for probe in ("truncated-plain", "truncated-edns-512"):
            build, tcp = PROBES[probe]
            tc = probe_reply(address, build(), tcp)
            assert tc is not None and "TC" in tc["flags"]
            assert tc["answer"] == tc["authority"] == tc["additional"] == []
            assert (tc["edns"] is not None) == (probe == "truncated-edns-512")


def test_case_of_question_is_kept(knot, nsd) -> None:
    """Both echo the question byte for byte and use its case for answer owners."""
    wire = dc.query_wire("wWw.ExAmPlE.tEsT", "A")
    for address in (knot, nsd):
        reply = dc.raw_exchange(*address, wire)
        assert reply is not None
        assert reply[12 : len(wire)] == wire[12:]
        msg = dc.parse(reply)
        assert [r.name.to_text() for r in msg.answer] == ["wWw.ExAmPlE.tEsT."]


def test_normalize_switches_explain_the_default_differences(knot, nsd) -> None:
    """Without ``authority_ns=False`` NSD's extra apex NS shows up; glue always stays."""
    k = dc.query(*knot, "www.example.test", "A")
    n = dc.query(*nsd, "www.example.test", "A")
    raw = dc.diff(dc.normalize(k), dc.normalize(n), ("knot", "nsd"))
    assert raw and all(line.split(":")[0] in ("authority", "additional") for line in raw)
    assert all(" only nsd: " in line for line in raw)
    assert dc.normalize(k, authority_ns=False) == dc.normalize(n, authority_ns=False)
    # additional=False alone is not enough: NSD's apex NS stays in authority
    assert dc.normalize(k, additional=False) != dc.normalize(n, additional=False)
    for address in (knot, nsd):
        referral = dc.normalize(
            dc.query(*address, "host.deleg.example.test", "A"), additional=False
        )
        assert referral["additional"] == [
            "ns.deleg.example.test. 86400 IN A 192.0.2.200",
            "ns.deleg.example.test. 86400 IN AAAA 2001:db8::200",
        ]
        mx = dc.normalize(
            dc.query(*address, "example.test", "MX"), additional=False, authority_ns=False
        )
        assert mx["additional"] == [] and mx["authority"] == []
