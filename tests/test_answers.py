"""Table-driven answers from the compiled test zone (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.flags
import dns.rcode
import pytest

from tests.conftest import ask, section

SOA = ("test.example. 300 SOA ns1.test.example. hostmaster.test.example. "
       "42 7200 3600 1209600 300")


@dataclass
class Case:
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: list[str] = field(default_factory=list)
    ns: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    aa: bool = True


W = "www.test.example."
CASES = [
    Case("www.test.example.", "A", answer=[f"{W} 300 A 192.0.2.10", f"{W} 300 A 192.0.2.11"]),
    Case("www.test.example.", "AAAA", answer=[f"{W} 3600 AAAA 2001:db8::10"]),
    Case("www.test.example.", "MX", ns=[SOA]),  # NODATA
    Case("www.test.example.", "TYPE65", ns=[SOA]),
    Case("nothere.test.example.", "A", "NXDOMAIN", ns=[SOA]),
    Case("deep.nothere.test.example.", "AAAA", "NXDOMAIN", ns=[SOA]),
    Case("test.example.", "NS",
         answer=["test.example. 3600 NS ns1.test.example.",
                 "test.example. 3600 NS ns2.elsewhere.example."],
         extra=["ns1.test.example. 3600 A 192.0.2.53",
                "ns1.test.example. 3600 AAAA 2001:db8::53"]),
    Case("test.example.", "MX",
         answer=["test.example. 3600 MX 10 mail.test.example.",
                 "test.example. 3600 MX 20 mail.elsewhere.example."],
         extra=["mail.test.example. 3600 A 192.0.2.25"]),
    Case("test.example.", "SOA", answer=[SOA.replace(" 300 SOA", " 600 SOA")]),
    # CNAME chains (RFC 1034 4.3.2, RFC 6604 for the final rcode)
    Case("alias.test.example.", "A",
         answer=["alias.test.example. 3600 CNAME www.test.example.",
                 f"{W} 300 A 192.0.2.10", f"{W} 300 A 192.0.2.11"]),
    Case("alias.test.example.", "CNAME",
         answer=["alias.test.example. 3600 CNAME www.test.example."]),
    Case("chain1.test.example.", "AAAA",
         answer=["chain1.test.example. 3600 CNAME chain2.test.example.",
                 "chain2.test.example. 3600 CNAME www.test.example.",
                 f"{W} 3600 AAAA 2001:db8::10"]),
    Case("alias.test.example.", "MX",
         answer=["alias.test.example. 3600 CNAME www.test.example."], ns=[SOA]),
    Case("dangling.test.example.", "A", "NXDOMAIN",
         answer=["dangling.test.example. 3600 CNAME missing.test.example."], ns=[SOA]),
    Case("outside.test.example.", "A",
         answer=["outside.test.example. 3600 CNAME www.elsewhere.example."]),
    Case("loop1.test.example.", "A",
         answer=["loop1.test.example. 3600 CNAME loop2.test.example.",
                 "loop2.test.example. 3600 CNAME loop1.test.example."]),
    Case("to-wild.test.example.", "A",
         answer=["to-wild.test.example. 3600 CNAME foo.wild.test.example.",
                 "foo.wild.test.example. 3600 A 192.0.2.99"]),
    Case("to-deleg.test.example.", "A",
         answer=["to-deleg.test.example. 3600 CNAME host.deleg.test.example."],
         ns=["deleg.test.example. 3600 NS ns1.deleg.test.example.",
             "deleg.test.example. 3600 NS ns.elsewhere.example."],
         extra=["ns1.deleg.test.example. 3600 A 192.0.2.201",
                "ns1.deleg.test.example. 3600 AAAA 2001:db8::201"]),
    # Wildcards (RFC 4592)
    Case("foo.wild.test.example.", "A", answer=["foo.wild.test.example. 3600 A 192.0.2.99"]),
    Case("a.b.wild.test.example.", "TXT", answer=['a.b.wild.test.example. 3600 TXT "wild"']),
    Case("foo.wild.test.example.", "MX", ns=[SOA]),
    Case("sub.wild.test.example.", "A", answer=["sub.wild.test.example. 3600 A 192.0.2.98"]),
    Case("sub.wild.test.example.", "TXT", ns=[SOA]),  # exists: no wildcard match
    Case("x.sub.wild.test.example.", "A", "NXDOMAIN", ns=[SOA]),  # closest encloser sub.wild
    Case("wild.test.example.", "A", ns=[SOA]),  # empty non-terminal above the wildcard
    Case("*.wild.test.example.", "A", answer=["*.wild.test.example. 3600 A 192.0.2.99"]),
    Case("x.cwild.test.example.", "A",
         answer=["x.cwild.test.example. 3600 CNAME www.test.example.",
                 f"{W} 300 A 192.0.2.10", f"{W} 300 A 192.0.2.11"]),
    # Empty non-terminals are NODATA, names below them NXDOMAIN
    Case("b.c.test.example.", "A", ns=[SOA]),
    Case("c.test.example.", "AAAA", ns=[SOA]),
    Case("x.c.test.example.", "A", "NXDOMAIN", ns=[SOA]),
    Case("a.b.c.test.example.", "A", answer=["a.b.c.test.example. 3600 A 192.0.2.77"]),
    # Delegations: referral, AA clear, glue
    Case("host.deleg.test.example.", "A", aa=False,
         ns=["deleg.test.example. 3600 NS ns1.deleg.test.example.",
             "deleg.test.example. 3600 NS ns.elsewhere.example."],
         extra=["ns1.deleg.test.example. 3600 A 192.0.2.201",
                "ns1.deleg.test.example. 3600 AAAA 2001:db8::201"]),
    Case("deleg.test.example.", "NS", aa=False,
         ns=["deleg.test.example. 3600 NS ns1.deleg.test.example.",
             "deleg.test.example. 3600 NS ns.elsewhere.example."],
         extra=["ns1.deleg.test.example. 3600 A 192.0.2.201",
                "ns1.deleg.test.example. 3600 AAAA 2001:db8::201"]),
    Case("ns1.deleg.test.example.", "A", aa=False,
         ns=["deleg.test.example. 3600 NS ns1.deleg.test.example.",
             "deleg.test.example. 3600 NS ns.elsewhere.example."],
         extra=["ns1.deleg.test.example. 3600 A 192.0.2.201",
                "ns1.deleg.test.example. 3600 AAAA 2001:db8::201"]),
    Case("deleg.test.example.", "DS", ns=[SOA]),  # the parent answers DS itself
    Case("a.extdeleg.test.example.", "A", aa=False,
         ns=["extdeleg.test.example. 3600 NS ns.elsewhere.example."]),
    # Other types
    Case("_sip._tcp.test.example.", "SRV",
         answer=["_sip._tcp.test.example. 3600 SRV 10 5 5060 sip.test.example."],
         extra=["sip.test.example. 3600 A 192.0.2.60"]),
    Case("caa.test.example.", "CAA", answer=['caa.test.example. 3600 CAA 0 issue "ca.example"']),
    Case("1.2.0.192.in-addr.test.example.", "PTR",
         answer=["1.2.0.192.in-addr.test.example. 3600 PTR www.test.example."]),
    Case("multi.test.example.", "TXT",
         answer=['multi.test.example. 3600 TXT "first" "second"',
                 'multi.test.example. 3600 TXT "single"']),
    Case("long.test.example.", "TXT",
         answer=[f'long.test.example. 3600 TXT "{"x" * 255}" "{"x" * 45}"']),
    Case("mixed.test.example.", "A", answer=["mixed.test.example. 3600 A 192.0.2.33"]),
    # ANY is answered with one RRset (RFC 8482)
    Case("www.test.example.", "ANY",
         answer=[f"{W} 300 A 192.0.2.10", f"{W} 300 A 192.0.2.11"]),
    Case("alias.test.example.", "ANY",
         answer=["alias.test.example. 3600 CNAME www.test.example."]),
    # ... built on first use for names without steered data (a wildcard's too)
    Case("mixed.test.example.", "ANY", answer=["mixed.test.example. 3600 A 192.0.2.33"]),
    Case("foo.wild.test.example.", "ANY", answer=["foo.wild.test.example. 3600 A 192.0.2.99"]),
    Case("sub.wild.test.example.", "ANY", answer=["sub.wild.test.example. 3600 A 192.0.2.98"]),
    # Outside our zones
    Case("example.", "A", "REFUSED", aa=False),
    Case("www.other.example.", "A", "REFUSED", aa=False),
    Case(".", "NS", "REFUSED", aa=False),
    # Transfers are refused
    Case("test.example.", "AXFR", "NOTIMP", aa=False),  # over UDP, as Knot and NSD
    Case("test.example.", "IXFR", "REFUSED", aa=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.qname}/{c.qtype}")
@pytest.mark.parametrize("edns", [None, 0], ids=["plain", "edns"])
def test_answer(responder, case: Case, edns) -> None:
    resp = ask(responder, case.qname, case.qtype, edns=edns)
    assert dns.rcode.to_text(resp.rcode()) == case.rcode
    assert bool(resp.flags & dns.flags.AA) == case.aa
    assert not resp.flags & dns.flags.RA
    assert not resp.flags & dns.flags.TC
    assert section(resp.answer) == sorted(case.answer)
    assert section(resp.authority) == sorted(case.ns)
    assert section(resp.additional) == sorted(case.extra)
    assert (resp.edns >= 0) == (edns is not None)


@pytest.mark.parametrize("qname", ["WWW.TEST.EXAMPLE.", "wWw.TeSt.ExAmPlE.",
                                   "FOO.Wild.test.example.", "NoThere.TEST.example."])
def test_question_case_is_kept(responder, qname: str) -> None:
    resp = ask(responder, qname, "A")
    assert resp.question[0].name.to_text() == qname
    for rrset in resp.answer:
        assert rrset.name.to_text() == qname  # owner points at the question
    assert resp.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)


@pytest.mark.parametrize("rd,cd", [(False, False), (True, False), (False, True), (True, True)])
def test_rd_copied_cd_not_ra_never_set(responder, rd: bool, cd: bool) -> None:
    # Knot and NSD both copy RD and neither copies CD; we do the same.
    for name in ("www.test.example.", "nothere.test.example.", "www.other.example."):
        resp = ask(responder, name, "A", rd=rd, cd=cd, edns=0)
        assert bool(resp.flags & dns.flags.RD) == rd
        assert not resp.flags & dns.flags.CD
        assert not resp.flags & dns.flags.RA


def test_do_bit_is_copied_into_our_opt(responder) -> None:
    assert ask(responder, "www.test.example.", edns=0, do=True).ednsflags & dns.flags.DO
    assert not ask(responder, "www.test.example.", edns=0).ednsflags & dns.flags.DO


def test_our_udp_payload_is_1232(responder) -> None:
    assert ask(responder, "www.test.example.", edns=0, payload=4096).payload == 1232


def test_negative_ttl_is_min_of_soa_ttl_and_minimum(responder) -> None:
    # SOA TTL 600, MINIMUM 300 -> 300 (RFC 2308 section 5)
    resp = ask(responder, "nothere.test.example.", "A")
    assert resp.authority[0].ttl == 300


def test_axfr_over_tcp_is_refused(responder) -> None:
    assert ask(responder, "test.example.", "AXFR", udp=False).rcode() == dns.rcode.REFUSED


def test_refused_carries_ede_not_authoritative(responder) -> None:
    resp = ask(responder, "www.other.example.", "A", edns=0)
    assert [(o.otype, o.code) for o in resp.options] == [(15, 20)]


def test_class_any_gets_class_in_data(responder) -> None:
    import dns.message
    import dns.rdataclass

    q = dns.message.make_query("www.test.example.", "A", rdclass=dns.rdataclass.ANY)
    resp = dns.message.from_wire(responder.respond(q.to_wire()))
    assert resp.rcode() == 0 and len(resp.answer[0]) == 2
