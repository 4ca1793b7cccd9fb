"""Every record type beyond the RFC 1035 ones: served as written (answers
parsed by dnspython and compared with the RRset dnspython makes of the same
text), rejected with file:line when malformed, DS answered by the parent
side of a cut, HTTPS/SVCB steered per PoP, and kept in a form a signer can
canonicalise."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from geodns import rdata
from geodns.compile import compile_zones
from geodns.geo import StaticLocator
from geodns.health.view import HealthView
from geodns.steering import Pop, Steering
from geodns.wire import Responder
from geodns.yamlsrc import Problems
from geodns.zones import rdtext
from geodns.zones.loader import load_zone_text
from geodns.zones.model import Zone

ORIGIN = "t.example."
HEAD = f"""\
origin: {ORIGIN}
ttl: 600
soa: {{mname: ns1, rname: hostmaster, serial: 7}}
records:
  "@": {{NS: [ns1]}}
  ns1: {{A: 192.0.2.53, AAAA: "2001:db8::53"}}
"""
DNSKEY_KSK = "257 3 15 Hr2qhWkg8fnEa7U0TtMcGt4O0YQFNdpAV0Dv1eEi6Y8="
DS_VALUE = "39661 15 2 8dadefc29328ae4001bb56c3f4ccc8c1a3b68c7ed42bacc721425c59a8d092c9"
TLSA_VALUE = "3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"


@dataclass(frozen=True)
class Case:
    """``yaml`` (under records:) served for ``qname qtype`` must answer with
    the records dnspython reads from ``expect`` (zone-file texts, relative
    to the origin)."""

    yaml: str
    qname: str
    qtype: str
    expect: tuple[str, ...]


CASES = {
    "DS at a delegation": Case(
        f'  sub: {{NS: [ns.other.example.], DS: "{DS_VALUE}"}}\n', "sub", "DS", (DS_VALUE,)),
    "DNSKEY at the apex": Case(
        f'  "@": {{NS: [ns1], DNSKEY: ["{DNSKEY_KSK}", "256 3 13 {"A" * 88}"]}}\n',
        "@", "DNSKEY", (DNSKEY_KSK, f"256 3 13 {'A' * 88}")),
    "CDS": Case(f'  "@": {{NS: [ns1], CDS: "{DS_VALUE}"}}\n', "@", "CDS", (DS_VALUE,)),
    "CDS delete": Case('  "@": {NS: [ns1], CDS: "0 0 0 00"}\n', "@", "CDS", ("0 0 0 00",)),
    "CDNSKEY": Case(f'  "@": {{NS: [ns1], CDNSKEY: "{DNSKEY_KSK}"}}\n', "@", "CDNSKEY",
                    (DNSKEY_KSK,)),
    "HTTPS with SvcParams": Case(
        """  www: {HTTPS: '1 . alpn="h2,h3" port=8443 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1'}\n""",
        "www", "HTTPS", ('1 . alpn="h2,h3" port=8443 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1',)),
    "HTTPS alias, relative target": Case(
        "  www: {HTTPS: '0 cdn'}\n", "www", "HTTPS", ("0 cdn",)),
    "SVCB with mandatory and a generic key": Case(
        '  _dns: {SVCB: "1 dns.example.net. mandatory=alpn alpn=dot key65333=x"}\n',
        "_dns", "SVCB", ('1 dns.example.net. mandatory=alpn alpn=dot key65333=x',)),
    "TLSA": Case(f'  _443._tcp.www: {{TLSA: "{TLSA_VALUE}"}}\n', "_443._tcp.www", "TLSA",
                 (TLSA_VALUE,)),
    "SMIMEA": Case(f'  x._smimecert: {{SMIMEA: "{TLSA_VALUE}"}}\n', "x._smimecert", "SMIMEA",
                   (TLSA_VALUE,)),
    "SSHFP": Case("  host: {SSHFP: ['1 1 " + "ab" * 20 + "', '4 2 " + "cd" * 32 + "']}\n",
                  "host", "SSHFP", ("1 1 " + "ab" * 20, "4 2 " + "cd" * 32)),
    "NAPTR": Case(
        """  "@": {NS: [ns1], NAPTR: ['100 10 "S" "SIP+D2U" "" _sip._udp', """
        """'100 20 "U" "E2U+sip" "!^.*$!sip:info@t.example!" .']}\n""",
        "@", "NAPTR", ('100 10 "S" "SIP+D2U" "" _sip._udp',
                       '100 20 "U" "E2U+sip" "!^.*$!sip:info@t.example!" .')),
    "LOC": Case('  "@": {NS: [ns1], LOC: "52 22 23.000 N 4 53 32.000 E -2.00m 1m 10000m 10m"}\n',
                "@", "LOC", ("52 22 23.000 N 4 53 32.000 E -2.00m 1m 10000m 10m",)),
    "URI": Case("""  _http._tcp: {URI: '10 1 "http://www.t.example/"'}\n""", "_http._tcp", "URI",
                ('10 1 "http://www.t.example/"',)),
    "OPENPGPKEY": Case("  x._openpgpkey: {OPENPGPKEY: mDMEXEr7LRYJKwYBBAHaRw8B}\n",
                       "x._openpgpkey", "OPENPGPKEY", ("mDMEXEr7LRYJKwYBBAHaRw8B",)),
    "HINFO": Case("""  host: {HINFO: '"PC-Intel" "Linux"'}\n""", "host", "HINFO",
                  ('"PC-Intel" "Linux"',)),
    "RP": Case('  "@": {NS: [ns1], RP: "Admin.t.example. info"}\n', "@", "RP",
               ("Admin.t.example. info",)),
    "SPF": Case('  "@": {NS: [ns1], SPF: "v=spf1 -all"}\n', "@", "SPF", ('"v=spf1 -all"',)),
    "generic type": Case("  g: {TYPE65400: '\\# 4 0a000001'}\n", "g", "TYPE65400",
                         ("\\# 4 0a000001",)),
    "generic type, empty": Case("  g: {TYPE65401: '\\# 0'}\n", "g", "TYPE65401", ("\\# 0",)),
    "CAA, not UTF-8": Case('  "@": {NS: [ns1], CAA: {flags: 0, tag: issue, value: !!binary '
                           '"Y2H/LmV4YW1wbGU="}}\n', "@", "CAA", ('0 issue "ca\\255.example"',)),
    "escaped owner": Case("  'a\\000b': {TXT: nul}\n", "a\\000b", "TXT", ('"nul"',)),
}


def zone_for(records: str, pops: dict[str, Pop] | None = None) -> Zone:
    problems = Problems()
    text = HEAD + records if '"@"' not in records else HEAD.replace(
        '  "@": {NS: [ns1]}\n', "") + records
    zone = load_zone_text(text, "z.yaml", ORIGIN, problems, pops=pops or {})
    assert zone is not None, [str(p) for p in problems]
    return zone


def ask(responder: Responder, qname: str, qtype: str, *, ecs: str | None = None,
        edns: bool = True) -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if ecs:
        net = ipaddress.ip_network(ecs, strict=False)
        options.append(dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0))
    q = dns.message.make_query(qname, qtype, use_edns=0 if edns else False, options=options)
    wire = responder.respond(q.to_wire(), True, ("192.0.2.200", 5353))
    assert wire is not None
    return dns.message.from_wire(wire)


def _name(relative: str) -> str:
    return ORIGIN if relative == "@" else f"{relative}.{ORIGIN}"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("edns", [True, False], ids=["edns", "plain"])
def test_type_is_served_as_written(case: Case, edns: bool) -> None:
    responder = Responder(compile_zones([zone_for(case.yaml)]))
    reply = ask(responder, _name(case.qname), case.qtype, edns=edns)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    origin = dns.name.from_text(ORIGIN)
    expected = dns.rrset.from_rdata_list(
        dns.name.from_text(case.qname, origin), 600,
        [dns.rdata.from_text("IN", case.qtype, text, origin=origin, relativize=False)
         for text in case.expect])
    assert len(reply.answer) == 1
    got = reply.answer[0]
    assert got.rdtype == expected.rdtype and got.ttl == 600
    assert got.name == expected.name
    assert set(got) == set(expected), (got.to_text(), expected.to_text())


def test_every_named_type_has_a_case() -> None:
    covered = {dns.rdatatype.RdataType.make(c.qtype) for c in CASES.values()}
    older = {rdata.A, rdata.AAAA, rdata.NS, rdata.CNAME, rdata.SOA, rdata.PTR, rdata.MX,
             rdata.TXT, rdata.SRV, rdata.CAA}
    assert rdata.SERVED_TYPES - older <= covered


# --- DS: the parent side of a cut (RFC 4035 3.1.4.1) ---------------------------------

DELEGATIONS = (f'  secure: {{NS: [ns.secure], DS: "{DS_VALUE}"}}\n'
               "  ns.secure: {A: 192.0.2.99}\n"
               "  insecure: {NS: [ns.other.example.]}\n")


@pytest.mark.parametrize(("qname", "qtype", "rcode", "aa", "answer", "authority"), [
    ("secure", "DS", "NOERROR", True, ["DS"], []),
    ("SeCuRe", "DS", "NOERROR", True, ["DS"], []),
    ("insecure", "DS", "NOERROR", True, [], ["SOA"]),  # no DS: NODATA
    ("secure", "A", "NOERROR", False, [], ["NS"]),  # everything else: a referral
    ("secure", "DNSKEY", "NOERROR", False, [], ["NS"]),
    ("host.secure", "DS", "NOERROR", False, [], ["NS"]),  # below the cut: the child's
])
def test_ds_is_answered_by_the_parent(qname: str, qtype: str, rcode: str, aa: bool,
                                      answer: list[str], authority: list[str]) -> None:
    responder = Responder(compile_zones([zone_for(DELEGATIONS)]))
    for edns in (True, False):
        reply = ask(responder, _name(qname), qtype, edns=edns)
        assert dns.rcode.to_text(reply.rcode()) == rcode
        assert bool(reply.flags & dns.flags.AA) == aa
        assert [dns.rdatatype.to_text(r.rdtype) for r in reply.answer] == answer
        assert [dns.rdatatype.to_text(r.rdtype) for r in reply.authority] == authority
        if answer:
            assert reply.answer[0].name.to_text() == _name(qname)  # the question's case


# --- bad values, each at its file:line:column ------------------------------------------

BAD = {
    "DS digest length": ("DS", '"39661 15 2 abcd"', "digest length"),
    "DS not hex": ("DS", '"39661 15 2 zz"', "DS"),
    "DNSKEY not base64": ("DNSKEY", '"257 3 15 !!!"', "DNSKEY"),
    "CDS fields": ("CDS", '"1 2"', "CDS"),
    "CDNSKEY protocol": ("CDNSKEY", '"257 x 15 AAAA"', "CDNSKEY"),
    "HTTPS unknown key": ("HTTPS", "'1 . alpn=h2 flavour=vanilla'", "HTTPS"),
    "HTTPS duplicate key": ("HTTPS", "'1 . alpn=h2 alpn=h3'", "duplicate key"),
    "SVCB mandatory missing": ("SVCB", "'1 . mandatory=port alpn=h2'", "mandatory"),
    "TLSA not hex": ("TLSA", '"3 1 1 xyz"', "TLSA"),
    "SMIMEA usage": ("SMIMEA", '"300 1 1 ab"', "SMIMEA"),
    "SSHFP length": ("SSHFP", '"1 1 abcd"', "fingerprint length"),
    "NAPTR fields": ("NAPTR", "'100 10 \"U\"'", "NAPTR"),
    "LOC latitude": ("LOC", '"95 0 0 N 0 0 0 E 0m"', "LOC"),
    "URI target": ("URI", "'10 1'", "URI"),
    "OPENPGPKEY base64": ("OPENPGPKEY", '"%%%"', "OPENPGPKEY"),
    "HINFO one string": ("HINFO", '"PC"', "HINFO"),
    "RP name": ("RP", '"a..b. c"', "RP"),
    "generic not generic": ("TYPE65400", '"10.0.0.1"', "generic form of RFC 3597"),
    "generic length": ("TYPE65400", "'\\# 4 0a00'", "TYPE65400"),
}


@pytest.mark.parametrize(("rtype", "value", "fragment"), BAD.values(), ids=BAD.keys())
def test_bad_value_is_rejected_at_its_place(rtype: str, value: str, fragment: str) -> None:
    problems = Problems()
    text = HEAD + f"  x: {{{rtype}: {value}}}\n"
    assert load_zone_text(text, "z.yaml", ORIGIN, problems) is None
    found = [str(p) for p in problems]
    column = 7 + len(rtype) + 2
    assert any(p.startswith(f"z.yaml:7:{column}: ") and fragment in p for p in found), found


@pytest.mark.parametrize(("body", "fragment"), [
    ("  x: {RRSIG: 'A 13 2 300 20300101000000 20200101000000 1 t.example. AAAA'}\n",
     "RRSIG records are made by a signer"),
    ("  x: {NSEC: 'y A'}\n", "pre-signed"),
    ("  x: {NSEC3PARAM: '1 0 0 -'}\n", "pre-signed"),
    ("  x: {DNAME: y}\n", "DNAME is not supported"),
    ("  x: {TYPE46: 'A 13'}\n", "RRSIG records"),
    ("  x: {TYPE41: '\\# 0'}\n", "OPT is a pseudo-record"),
    ("  x: {TYPE200: '\\# 0'}\n", "query or meta type"),
    ("  x: {TYPE43: '\\# 0'}\n", "write DS, not TYPE43"),
    ("  x: {https: '1 .'}\n", "write record types in capitals"),
    ("  x: {DS: '" + DS_VALUE + "'}\n", "a DS record belongs at a delegation"),
    ('  "@": {NS: [ns1], DS: "' + DS_VALUE + '"}\n', "a DS record belongs at a delegation"),
    ("  x: {TLSA: ['" + TLSA_VALUE + "', '" + TLSA_VALUE.upper() + "']}\n", "duplicate TLSA"),
    ("  x: {RP: ['a.t.example. b', 'A.T.EXAMPLE. b']}\n", "duplicate RP"),
])
def test_types_that_are_no_zone_data_are_rejected(body: str, fragment: str) -> None:
    problems = Problems()
    head = HEAD.replace('  "@": {NS: [ns1]}\n', "") if '"@"' in body else HEAD
    assert load_zone_text(head + body, "z.yaml", ORIGIN, problems) is None
    found = [str(p) for p in problems]
    assert any(p.startswith("z.yaml:") and fragment in p for p in found), found


# --- kept for a signer --------------------------------------------------------------

def test_names_inside_rdata_are_marked_for_canonical_form() -> None:
    """RFC 4034 6.2 lower-cases the names in RP and NAPTR (and the older
    types), not those of HTTPS/SVCB (RFC 9460): canonical() is what
    dnspython's canonical wire form is, and the wire form keeps the case."""
    origin = b"\x01t\x07example\x00"
    for rtype, text in ((rdata.RP, "Admin.T.Example. Info"),
                        (rdata.NAPTR, '1 2 "u" "E2U" "" Www.T.Example.'),
                        (rdata.HTTPS, "1 Svc.T.Example. alpn=h2"),
                        (rdata.DS, DS_VALUE)):
        ours = rdtext.from_text(rtype, text, origin)
        theirs = dns.rdata.from_text("IN", dns.rdatatype.RdataType.make(rtype), text,
                                     origin=dns.name.from_text(ORIGIN), relativize=False)
        assert ours.wire == theirs.to_wire()
        assert ours.canonical() == theirs.to_wire(canonicalize=True)
    srv = rdata.srv(1, 2, 3, "Sip.T.Example.", origin)
    assert srv.canonical() == srv.wire.lower() != srv.wire


def test_names_inside_new_types_are_never_compressed() -> None:
    """RFC 3597 section 4: the RP names and the NAPTR replacement are written
    in full even where the answer could point at the question name."""
    zone = zone_for('  "@": {NS: [ns1], RP: "t.example. t.example.", '
                    'NAPTR: \'1 2 "u" "E2U" "" t.example.\'}\n')
    responder = Responder(compile_zones([zone]))
    full = b"\x01t\x07example\x00"
    for qtype in ("RP", "NAPTR"):
        q = dns.message.make_query(ORIGIN, qtype)
        wire = responder.respond(q.to_wire(), True, ("192.0.2.200", 5353))
        assert wire is not None
        answer = wire[12 + len(full) + 4:]
        assert full in answer  # the name written out, not a pointer
        assert answer.count(full) == (2 if qtype == "RP" else 1)


# --- HTTPS/SVCB steered per PoP ------------------------------------------------------

POPS = {"fra": Pop("fra", 50.11, 8.68, "Frankfurt", "DE", "EU", order=0),
        "iad": Pop("iad", 38.95, -77.45, "Ashburn", "US", "NA", order=1),
        "sin": Pop("sin", 1.35, 103.99, "Singapore", "SG", "AS", order=2)}
CLIENTS = {  # a client network near each PoP
    "fra": ("10.1.0.0/24", {"latitude": 48.85, "longitude": 2.35, "continent": "EU",
                            "country": "FR"}),
    "iad": ("10.2.0.0/24", {"latitude": 40.71, "longitude": -74.0, "continent": "NA",
                            "country": "US"}),
    "sin": ("10.4.0.0/24", {"latitude": 13.75, "longitude": 100.5, "continent": "AS",
                            "country": "TH"}),
}
STEERED_HTTPS = {
    "fra": '1 . alpn="h2,h3" ipv4hint=192.0.2.11 ipv6hint=2001:db8:1::11',
    "iad": '1 . alpn="h2,h3" ipv4hint=198.51.100.11 ipv6hint=2001:db8:2::11',
    "sin": "1 sin.cdn.example.net. alpn=h2",
}


@pytest.mark.parametrize("rtype", ["HTTPS", "SVCB"])
def test_steered_https_gives_each_client_its_pops_record(rtype: str) -> None:
    pops_yaml = "".join(f"          {pop}: '{value}'\n" for pop, value in STEERED_HTTPS.items())
    records = f"  www:\n    {rtype}:\n      steer:\n        pops:\n{pops_yaml}" \
              "    A: 192.0.2.80\n"
    zone = zone_for(records, POPS)
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    locator = StaticLocator({net: fields for net, fields in CLIENTS.values()})
    responder = Responder(compile_zones([zone]), Steering(POPS, ("fra", "iad", "sin"), (), specs),
                          locator, HealthView())
    origin = dns.name.from_text(ORIGIN)
    for pop, (net, _) in CLIENTS.items():
        reply = ask(responder, f"www.{ORIGIN}", rtype, ecs=net)
        assert reply.rcode() == dns.rcode.NOERROR
        assert len(reply.answer) == 1 and reply.answer[0].ttl == 30
        want = dns.rdata.from_text("IN", rtype, STEERED_HTTPS[pop], origin=origin, relativize=False)
        assert list(reply.answer[0]) == [want], (pop, reply.answer[0].to_text())
    # The static A beside it is not steered.
    reply = ask(responder, f"www.{ORIGIN}", "A", ecs=CLIENTS["sin"][0])
    assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.80"]


def test_steered_https_value_is_checked() -> None:
    problems = Problems()
    text = HEAD + "  www:\n    HTTPS:\n      steer:\n        pops:\n" \
                  "          fra: '1 . alpn=h2 alpn=h3'\n"
    assert load_zone_text(text, "z.yaml", ORIGIN, problems, pops=POPS) is None
    assert any(str(p).startswith("z.yaml:11:16: ") and "duplicate key" in str(p)
               for p in problems), [str(p) for p in problems]
