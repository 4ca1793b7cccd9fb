"""DNSSEC in the data plane, in process: a zone signed when compiled.

Every answer with DO carries RRSIGs that dnspython validates against the
DNSKEY set served at the apex; every answer without DO is byte for byte the
answer of the same zone without ``dnssec:``; signatures are reused across
builds until they are due, then made again; a pre-published key is in the
DNSKEY set and signs nothing; ``dnssec:`` mistakes are reported at their
line.  (Validation by delv and a validating resolver in front of a real
node: tests/test_dnssec_validate.py.)
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geodns.compile import Tables, compile_zones
from geodns.dnssec import policy
from geodns.dnssec.keys import ECDSAP256SHA256, ED25519, generate
from geodns.dnssec.zonesign import with_keys
from geodns.geo import StaticLocator
from geodns.health.view import HealthView
from geodns.problems import Problems
from geodns.steering import DOWN, Steering
from geodns.wire import Responder
from geodns.zones.loader import load_zone_text
from geodns.zones.model import Zone

ORIGIN = dns.name.from_text("s.example.")
RECORDS = """\
records:
  "@": {NS: [ns1, ns2], MX: {value: 10 mail}, TXT: "apex text"}
  ns1: {A: 192.0.2.53}
  ns2: {A: 192.0.2.54}
  www: {A: [192.0.2.80, 192.0.2.81], AAAA: "2001:db8::80"}
  mail: {A: 192.0.2.25}
  alias: {CNAME: www}
  dangling: {CNAME: nothere}
  outside: {CNAME: www.elsewhere.example.}
  "*.wild": {TXT: "wild text"}
  a.b.c: {A: 192.0.2.9}
  sub: {NS: [ns.sub], DS: "12345 13 2 00000000000000000000000000000000000000000000000000000000\
00000000"}
  ns.sub: {A: 192.0.2.99}
  insecure: {NS: [ns.elsewhere.example.]}
"""
HEAD = "origin: s.example.\nsoa: {mname: ns1, rname: h, serial: 1}\n"
KEYS = {"ksk.pem": generate(ECDSAP256SHA256), "zsk.pem": generate(ECDSAP256SHA256),
        "csk.pem": generate(ED25519), "next.pem": generate(ECDSAP256SHA256)}
KSK_ZSK = """\
dnssec:
  keys:
    - {file: ksk.pem, role: ksk}
    - {file: zsk.pem, role: zsk}
"""
NOW = 1_800_000_000.0

# (name, type): every shape of answer the zone has.
QUESTIONS = [
    ("s.example.", "SOA"), ("s.example.", "NS"), ("s.example.", "MX"), ("s.example.", "TXT"),
    ("www.s.example.", "A"), ("WwW.S.example.", "AAAA"), ("www.s.example.", "TXT"),
    ("alias.s.example.", "A"), ("alias.s.example.", "MX"), ("dangling.s.example.", "A"),
    ("outside.s.example.", "A"), ("nope.s.example.", "A"), ("x.y.nope.s.example.", "AAAA"),
    ("foo.wild.s.example.", "TXT"), ("foo.wild.s.example.", "A"),
    ("bar.baz.wild.s.example.", "TXT"), ("wild.s.example.", "A"), ("c.s.example.", "A"),
    ("b.c.s.example.", "A"), ("a.b.c.s.example.", "A"), ("sub.s.example.", "DS"),
    ("x.sub.s.example.", "A"), ("sub.s.example.", "A"), ("insecure.s.example.", "DS"),
    ("x.insecure.s.example.", "A"), ("zzz.s.example.", "A"), ("0.s.example.", "A"),
    ("ns1.s.example.", "A"), ("ns1.s.example.", "CAA"), ("s.example.", "CAA"),
]


def signed_zone(dnssec: str = KSK_ZSK, records: str = RECORDS) -> Zone:
    problems = Problems()
    zone = load_zone_text(HEAD + dnssec + records, "s.yaml", "s.example.", problems)
    assert zone is not None and zone.dnssec is not None, [str(p) for p in problems]
    keys = policy.resolve(zone.dnssec, KEYS, problems)
    assert keys is not None, [str(p) for p in problems]
    return with_keys(zone, keys)


def plain_zone(records: str = RECORDS) -> Zone:
    problems = Problems()
    zone = load_zone_text(HEAD + records, "s.yaml", "s.example.", problems)
    assert zone is not None, [str(p) for p in problems]
    return zone


def ask(r: Responder, name: str, rtype: str, do: bool = True) -> dns.message.Message:
    q = dns.message.make_query(name, rtype, want_dnssec=do, use_edns=0)
    wire = r.respond(q.to_wire(), udp=False)
    assert wire is not None
    return dns.message.from_wire(wire)


def dnskeys(r: Responder) -> dict[dns.name.Name, dns.rrset.RRset]:
    m = ask(r, "s.example.", "DNSKEY")
    return {ORIGIN: m.find_rrset(m.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)}


def check_signed(m: dns.message.Message, keys: dict[dns.name.Name, dns.rrset.RRset],
                 when: float) -> int:
    """Every RRset validated by its RRSIG (delegation NS and glue excepted);
    the number validated."""
    n = 0
    for section in (m.answer, m.authority, m.additional):
        sigs = [s for s in section if s.rdtype == dns.rdatatype.RRSIG]
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            mine = [s for s in sigs if s.name == rrset.name and
                    s[0].type_covered == rrset.rdtype]
            if not mine:
                # A delegation's NS set and glue are the child's: never signed.
                delegation = rrset.rdtype == dns.rdatatype.NS and rrset.name not in (
                    ORIGIN, dns.name.from_text("chain.example."))
                glue = not m.flags & dns.flags.AA and rrset.rdtype == dns.rdatatype.A
                assert delegation or glue, f"unsigned {rrset}"
                continue
            dns.dnssec.validate(rrset, mine[0], keys, now=when)
            n += 1
    return n


@pytest.fixture(scope="module")
def signed() -> Responder:
    return Responder(compile_zones([signed_zone()], now=NOW))


@pytest.mark.parametrize(("name", "rtype"), QUESTIONS)
def test_every_answer_with_do_validates(signed: Responder, name: str, rtype: str) -> None:
    m = ask(signed, name, rtype)
    assert check_signed(m, dnskeys(signed), NOW) >= 1
    assert m.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)


@pytest.mark.parametrize(("name", "rtype"), QUESTIONS)
def test_without_do_the_answer_is_the_unsigned_zones(signed: Responder, name: str,
                                                      rtype: str) -> None:
    plain = Responder(compile_zones([plain_zone()]))
    for edns in (None, 0):
        q = dns.message.make_query(name, rtype, use_edns=edns)
        q.id = 4242
        wire = q.to_wire()
        assert signed.respond(wire, udp=True) == plain.respond(wire, udp=True)


def test_denials_carry_the_nsec_that_proves_them(signed: Responder) -> None:
    nx = ask(signed, "nope.s.example.", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    nsecs = [r for r in nx.authority if r.rdtype == dns.rdatatype.NSEC]
    qname = dns.name.from_text("nope.s.example.")
    wildcard = dns.name.from_text("*.s.example.")
    covers = [r for r in nsecs if r.name < qname < r[0].next]
    assert covers, nsecs
    assert any(r.name < wildcard < r[0].next for r in nsecs), nsecs
    nodata = ask(signed, "www.s.example.", "TXT")
    nsec = [r for r in nodata.authority if r.rdtype == dns.rdatatype.NSEC]
    assert len(nsec) == 1 and nsec[0].name == dns.name.from_text("www.s.example.")
    types = {t for window, bits in nsec[0][0].windows for t in _types(window, bits)}
    assert dns.rdatatype.TXT not in types and dns.rdatatype.A in types
    wild = ask(signed, "foo.wild.s.example.", "TXT")
    sig = next(r for r in wild.answer if r.rdtype == dns.rdatatype.RRSIG)
    assert sig[0].labels == 3  # *.wild.s.example.: the wildcard label not counted
    qname = dns.name.from_text("foo.wild.s.example.")
    assert any(r.name < qname < r[0].next for r in wild.authority
               if r.rdtype == dns.rdatatype.NSEC)


def _types(window: int, bits: bytes) -> list[int]:
    return [window * 256 + i * 8 + j for i, b in enumerate(bits) for j in range(8)
            if b & (0x80 >> j)]


def test_the_dnskey_set_is_signed_by_the_ksk_only(signed: Responder) -> None:
    m = ask(signed, "s.example.", "DNSKEY")
    keys = m.find_rrset(m.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    ksk = [k for k in keys if k.flags == 257]
    sigs = m.find_rrset(m.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                        dns.rdatatype.DNSKEY)
    assert len(ksk) == 1 and len(keys) == 2
    assert {s.key_tag for s in sigs} == {dns.dnssec.key_id(ksk[0])}
    www = ask(signed, "www.s.example.", "A")
    zsk = next(k for k in keys if k.flags == 256)
    assert {s.key_tag for s in www.answer if s.rdtype == dns.rdatatype.RRSIG
            for s in s} == {dns.dnssec.key_id(zsk)}


def test_a_prepublished_key_is_published_and_signs_nothing() -> None:
    zone = signed_zone(KSK_ZSK + "    - {file: next.pem, role: zsk, sign: false}\n")
    r = Responder(compile_zones([zone], now=NOW))
    keys = dnskeys(r)
    assert len(keys[ORIGIN]) == 3
    m = ask(r, "www.s.example.", "A")
    tags = {s.key_tag for rr in m.answer if rr.rdtype == dns.rdatatype.RRSIG for s in rr}
    assert len(tags) == 1 and check_signed(m, keys, NOW) == 1


def test_a_combined_key_with_cds_signs_everything() -> None:
    zone = signed_zone("dnssec:\n  keys: [{file: csk.pem, role: csk, cds: true}]\n")
    r = Responder(compile_zones([zone], now=NOW))
    keys = dnskeys(r)
    for name, rtype in [("www.s.example.", "A"), ("s.example.", "CDS"),
                        ("s.example.", "CDNSKEY"), ("nope.s.example.", "A")]:
        assert check_signed(ask(r, name, rtype), keys, NOW) >= 1
    cds = ask(r, "s.example.", "CDS").answer[0]
    key = keys[ORIGIN][0]
    assert cds[0].to_text() == dns.dnssec.make_ds(ORIGIN, key, "SHA256").to_text()


def test_signatures_are_reused_until_due_then_made_again() -> None:
    zone = signed_zone("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 10d\n"
                       "  refresh: 3d\n  jitter: 1d\n")
    first = compile_zones([zone], now=NOW)
    signer = first.parts[zone.origin].signer
    assert signer is not None and signer.made == len(signer.memo)
    due = first.due
    assert NOW + 6 * 86400 <= due <= NOW + 7 * 86400  # 10 days, less a day of jitter, less 3
    same = compile_zones([zone], previous=first, now=due - 1)
    assert same.parts[zone.origin] is first.parts[zone.origin]
    again = compile_zones([zone], previous=first, now=due + 1)
    part = again.parts[zone.origin]
    assert part is not first.parts[zone.origin] and part.signer is not None
    # Only what was due is signed again; every signature served holds at least ``refresh``.
    assert 0 < part.signer.made < len(part.signer.memo)
    assert again.due > due + 1
    r = Responder(again)
    keys = dnskeys(r)
    for name, rtype in QUESTIONS:
        m = ask(r, name, rtype)
        check_signed(m, keys, due + 1)
        for rr in m.answer + m.authority:
            if rr.rdtype == dns.rdatatype.RRSIG:
                assert all(s.expiration >= due + 1 + 3 * 86400 for s in rr)


def test_an_edit_signs_only_what_changed() -> None:
    zone = signed_zone()
    first = compile_zones([zone], now=NOW)
    edited = signed_zone(records=RECORDS.replace("192.0.2.25", "192.0.2.26"))
    second = compile_zones([edited], previous=first, now=NOW + 60)
    signer = second.parts[edited.origin].signer
    assert signer is not None
    # mail's A set, and the SOA? (unchanged serial: no)  -- one set of records changed.
    assert signer.made == 1, signer.made


def _tables_with(dnssec: str) -> tuple[Tables | None, list[str]]:
    problems = Problems()
    zone = load_zone_text(HEAD + dnssec + RECORDS, "s.yaml", "s.example.", problems)
    if zone is not None and zone.dnssec is not None:
        policy.resolve(zone.dnssec, {**KEYS, "bad.pem": b"not a key"}, problems)
    return None, [str(p) for p in problems]


@pytest.mark.parametrize(("dnssec", "expected"), [
    ("dnssec:\n  keys: [{file: zsk.pem, role: zsk}]\n",
     "s.yaml:4:3: dnssec: no key signs the DNSKEY set"),
    ("dnssec:\n  keys: [{file: ksk.pem, role: ksk}]\n",
     "s.yaml:4:3: dnssec: no key signs the zone"),
    ("dnssec:\n  keys: [{file: csk.pem, role: kzk}]\n", "s.yaml:4:32: unknown key role 'kzk'"),
    ("dnssec:\n  keys: [{file: ../csk.pem, role: csk}]\n",
     "s.yaml:4:17: key file '../csk.pem': a file name in the keys directory"),
    ("dnssec:\n  keys: [{file: gone.pem, role: csk}]\n",
     "s.yaml:4:17: key file gone.pem is not in the keys directory"),
    ("dnssec:\n  keys: [{file: bad.pem, role: csk}]\n",
     "s.yaml:4:17: key file bad.pem: not a PEM private key"),
    ("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  algorithm: ecdsap256sha256\n",
     "s.yaml:4:17: key file csk.pem is algorithm 15, not 13"),
    ("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 2d\n  refresh: 1d\n",
     "s.yaml:4:3: dnssec: refresh (86400 s) and jitter (86400 s) must add up to less than"),
    ("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 14x\n",
     "s.yaml:5:13: dnssec validity must be a duration"),
    ("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  nsec3: yes\n",
     "s.yaml:5:3: unknown key 'nsec3' in dnssec"),
    ("dnssec:\n  keys: [{file: zsk.pem, role: zsk, cds: true}, {file: csk.pem, role: csk}]\n",
     "s.yaml:4:17: cds: true is for a key-signing key"),
    ("dnssec:\n  keys: [{file: csk.pem, role: csk}, {file: csk.pem, role: csk}]\n",
     "s.yaml:4:45: key csk.pem is listed twice"),
    ("dnssec: yes\n", "s.yaml:3:9: dnssec must be a mapping"),
])
def test_dnssec_mistakes_are_reported_at_their_line(dnssec: str, expected: str) -> None:
    _, problems = _tables_with(dnssec)
    assert any(p.startswith(expected) for p in problems), problems


def test_dnskey_written_in_a_signed_zone_is_refused() -> None:
    records = RECORDS.replace('TXT: "apex text"}', 'TXT: "apex text", DNSKEY: "257 3 13 '
                              'AQAB"}')
    problems = Problems()
    load_zone_text(HEAD + "dnssec:\n  keys: [{file: csk.pem, role: csk}]\n" + records,
                   "s.yaml", "s.example.", problems)
    assert any("DNSKEY records of a zone with dnssec come from its keys" in str(p)
               for p in problems), [str(p) for p in problems]


def test_the_keys_directory_is_read_with_the_zones(tmp_path: Path) -> None:
    from geodns.snapshot import FileSource

    (tmp_path / "zones").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "csk.pem").write_bytes(KEYS["csk.pem"])
    (tmp_path / "keys" / "notes.txt").write_text("not a key")
    source = FileSource(None, tmp_path / "zones", tmp_path / "keys")
    docs = source.poll(True)
    assert docs is not None and set(docs.keys) == {"csk.pem"}
    assert source.poll() is None
    time.sleep(0.01)
    (tmp_path / "keys" / "csk.pem").write_bytes(KEYS["zsk.pem"])
    later = time.time() + 1
    while (docs2 := source.poll()) is None and time.time() < later + 2:
        time.sleep(0.1)
    assert docs2 is not None and docs2.keys["csk.pem"].text == KEYS["zsk.pem"]
    assert FileSource(None, tmp_path / "zones", tmp_path / "nothere").poll(True) is not None


def test_rrsig_header_fields() -> None:
    zone = signed_zone("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 10d\n"
                       "  refresh: 3d\n  jitter: 0\n")
    r = Responder(compile_zones([zone], now=NOW))
    m = ask(r, "www.s.example.", "A")
    sig = next(rr for rr in m.answer if rr.rdtype == dns.rdatatype.RRSIG)[0]
    assert sig.inception == int(NOW) - 3600
    assert sig.expiration == int(NOW) + 10 * 86400
    assert sig.signer == ORIGIN and sig.labels == 3 and sig.original_ttl == 3600
    assert 0 <= sig.key_tag < 65536


@pytest.mark.parametrize(("name", "rtype", "types"), [
    ("www.s.example.", "NSEC", {"NSEC", "RRSIG"}),
    ("sub.s.example.", "NSEC", {"NSEC", "RRSIG"}),
    ("www.s.example.", "RRSIG", {"RRSIG"}),
    ("s.example.", "RRSIG", {"RRSIG"}),
])
def test_nsec_and_rrsig_asked_for_are_answered(signed: Responder, name: str, rtype: str,
                                                types: set[str]) -> None:
    """The NSEC bitmap says the name has NSEC and RRSIG: a NODATA for them
    would contradict it (Knot answers them too)."""
    m = ask(signed, name, rtype)
    assert m.rcode() == dns.rcode.NOERROR and m.answer
    assert {dns.rdatatype.to_text(rr.rdtype) for rr in m.answer} == types
    covered = {rr.covers for rr in m.answer if rr.rdtype == dns.rdatatype.RRSIG}
    if rtype == "RRSIG":
        assert dns.rdatatype.A in covered or dns.rdatatype.SOA in covered
    else:
        check_signed(m, dnskeys(signed), NOW)


# -- steered answers: every case of tests/test_steered_chains.py, signed ----------------
def steered_responder(health: HealthView | None = None, more: str = "") -> Responder:
    """The steered chains' zone signed (``more``: records added to it)."""
    from test_steered_chains import HERE as CHAINS
    from test_steering import LOCATIONS, POPS

    text = (CHAINS / "zones" / "chain.example.yaml").read_text() + more
    text = text.replace("records:\n", "dnssec:\n  keys: [{file: csk.pem, role: csk}]\n"
                        "records:\n", 1)
    problems = Problems()
    zone = load_zone_text(text, "chain.yaml", "chain.example.", problems, pops=POPS)
    assert zone is not None and zone.dnssec is not None, [str(p) for p in problems]
    keys = policy.resolve(zone.dnssec, KEYS, problems)
    assert keys is not None
    zone = with_keys(zone, keys)
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    return Responder(compile_zones([zone], now=NOW), Steering(POPS, ("iad", "fra"), (), specs),
                     StaticLocator(LOCATIONS), health or HealthView())


def ask_ecs(r: Responder, name: str, rtype: str, ecs: str, do: bool) -> dns.message.Message:
    net = ipaddress.ip_network(ecs, strict=False)
    q = dns.message.make_query(name, rtype, use_edns=0, want_dnssec=do, options=[
        dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0)])
    wire = r.respond(q.to_wire(), True, ("192.0.2.200", 5353))
    assert wire is not None
    return dns.message.from_wire(wire)


def chain_cases() -> list[tuple[str, str, str]]:
    from test_steered_chains import CASES

    return [(c.qname, c.qtype, c.ecs) for c in CASES]


@pytest.mark.parametrize("down", [(), ("fra",), ("fra", "iad", "sin", "gru", "jnb")])
def test_steered_answers_with_do_validate_and_match(down: tuple[str, ...]) -> None:
    """Every steered chain, for its client, with each PoP state: the answer
    with DO validates, carries the same ECS scope, and holds the same
    records as the answer without DO (plus RRSIGs and NSECs)."""
    from test_steered_chains import n

    r = steered_responder(HealthView(dict.fromkeys(down, DOWN)))
    origin = dns.name.from_text("chain.example.")
    m = ask(r, "chain.example.", "DNSKEY")
    keys = {origin: m.find_rrset(m.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)}
    for qname, qtype, ecs in chain_cases():
        signed = ask_ecs(r, n(qname), qtype, ecs, True)
        plain = ask_ecs(r, n(qname), qtype, ecs, False)
        # Again, from the decision cached by the first: its DO tail made with it.
        again = ask_ecs(r, n(qname), qtype, ecs, True)
        assert again.sections == signed.sections and again.options == signed.options
        assert signed.rcode() == plain.rcode()
        if signed.rcode() == dns.rcode.SERVFAIL:
            continue
        check_signed(signed, keys, NOW)
        assert [o.to_text() for o in signed.options] == [o.to_text() for o in plain.options]

        def data(section: list[dns.rrset.RRset]) -> list[str]:
            return sorted(rr.to_text() for rr in section
                          if rr.rdtype not in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC))
        assert data(signed.answer) == data(plain.answer), (qname, qtype, ecs)
        assert data(signed.authority) == data(plain.authority), (qname, qtype, ecs)


@pytest.mark.parametrize("down", [(), ("fra", "iad")])
def test_a_steered_wildcards_nodata_when_all_are_down_validates(down: tuple[str, ...]) -> None:
    """A steered wildcard with ``all_down: nodata``, every PoP down: the
    NODATA proves the name absent (what covers it) and the wildcard without
    the type (its NSEC less A, as for a steered name of its own), for names
    on either side of the wildcard in canonical order; with PoPs up, the
    synthesis validates."""
    more = ('  "*.geo": {A: {steer: {pops: {fra: 192.0.2.61, iad: 192.0.2.62}, '
            'all_down: nodata}}, TXT: "geo"}\n  zz.geo: {A: 192.0.2.63}\n')
    r = steered_responder(HealthView(dict.fromkeys(down, DOWN)), more)
    origin = dns.name.from_text("chain.example.")
    m = ask(r, "chain.example.", "DNSKEY")
    keys = {origin: m.find_rrset(m.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)}
    wildcard = dns.name.from_text("*.geo.chain.example.")
    for label in ("!", "a", "-", "zzz", "z"):  # "!" sorts before the wildcard
        qname = dns.name.from_text(f"{label}.geo.chain.example.")
        for _ in range(2):  # made, then kept
            msg = ask_ecs(r, qname.to_text(), "A", "198.18.0.0/24", True)
            assert msg.rcode() == dns.rcode.NOERROR
            assert check_signed(msg, keys, NOW) >= 2
            nsecs = [rr for rr in msg.authority if rr.rdtype == dns.rdatatype.NSEC]
            assert any(rr.name < qname < rr[0].next or rr[0].next < rr.name < qname
                       for rr in nsecs), msg  # no exact match
            if down:
                assert not msg.answer, msg
                at = [rr for rr in nsecs if rr.name == wildcard]
                assert len(at) == 1, msg  # one NSEC at the wildcard, without A
                types = {t for w, bits in at[0][0].windows for t in _types(w, bits)}
                assert dns.rdatatype.A not in types and dns.rdatatype.TXT in types, msg
            else:
                assert [rr.rdtype for rr in msg.answer] == [dns.rdatatype.A,
                                                            dns.rdatatype.RRSIG], msg


def test_the_first_expiration_and_the_refresh_are_known() -> None:
    """What geodns_dnssec_signatures_expire_timestamp_seconds and
    geodns_dnssec_refresh_timestamp_seconds show."""
    zone = signed_zone("dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 10d\n"
                       "  refresh: 3d\n  jitter: 1d\n")
    tables = compile_zones([zone], now=NOW)
    signer = tables.parts[zone.origin].signer
    assert signer is not None and signer.earliest_expiration is not None
    assert NOW + 9 * 86400 <= signer.earliest_expiration <= NOW + 10 * 86400
    assert tables.due == signer.earliest_expiration - 3 * 86400


def test_a_zsk_rollover_by_configuration() -> None:
    """Pre-publish, swap, retire: each step validates with the DNSKEY set
    it serves, and after the swap every set is signed by the new key."""
    old, new = ("    - {file: zsk.pem, role: zsk}\n", "    - {file: next.pem, role: zsk}\n")
    steps = [
        KSK_ZSK,
        KSK_ZSK + new.replace("}", ", sign: false}"),
        KSK_ZSK.replace(old, old.replace("}", ", sign: false}")) + new,
        KSK_ZSK.replace(old, new),
    ]
    previous = None
    tags_by_step = []
    for i, dnssec in enumerate(steps):
        zone = signed_zone(dnssec)
        tables = compile_zones([zone], previous=previous, now=NOW + i * 86400)
        r = Responder(tables)
        keys = dnskeys(r)
        tags = set()
        for name, rtype in QUESTIONS:
            m = ask(r, name, rtype)
            check_signed(m, keys, NOW + i * 86400)
            tags |= {s.key_tag for rr in m.answer + m.authority
                     if rr.rdtype == dns.rdatatype.RRSIG and rr.covers != dns.rdatatype.DNSKEY
                     for s in rr}
        tags_by_step.append((len(keys[ORIGIN]), tags))
        previous = tables
    (n0, t0), (n1, t1), (n2, t2), (n3, t3) = tags_by_step
    assert (n0, n1, n2, n3) == (2, 3, 3, 2)
    assert t0 == t1 and len(t0) == 1  # pre-published: signs nothing
    assert t2 == t3 and t2.isdisjoint(t0)  # swapped: only the new key signs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=1, max_size=4), min_size=0, max_size=4),
                min_size=2, max_size=12))
def test_canonical_order_is_dnspythons(label_lists: list[list[bytes]]) -> None:
    """names.canonical_key sorts as RFC 4034 6.1 (dnspython's comparison),
    zero bytes inside labels included: the NSEC chain and its look-ups rest
    on it."""
    from geodns import names

    wires = sorted({b"".join(bytes([len(x)]) + x.lower() for x in labels) + b"\x00"
                    for labels in label_lists})
    ours = sorted(wires, key=names.canonical_key)
    theirs = sorted(wires, key=lambda w: dns.name.from_wire(w, 0)[0])
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=1, max_size=3), min_size=0, max_size=3),
                min_size=1, max_size=10),
       st.lists(st.lists(st.binary(min_size=1, max_size=3), min_size=0, max_size=4),
                min_size=1, max_size=10))
def test_the_cover_of_a_name_is_the_last_chain_name_at_or_before_it(
        chain: list[list[bytes]], probes: list[list[bytes]]) -> None:
    """names.CanonicalIndex.cover (in C when built, per query with DO)
    finds, for any name (followed by a look-up key's type and class, which
    are ignored), the last chain name at or before it in dnspython's
    canonical order; the Python fallback agrees."""
    from geodns import names

    def wire(labels: list[bytes]) -> bytes:
        return b"".join(bytes([len(x)]) + x.lower() for x in labels) + b"\x00"

    def ordered(w: bytes) -> dns.name.Name:
        return dns.name.from_wire(w, 0)[0]

    names_ = sorted({wire(x) for x in chain}, key=ordered)
    keys = [names.canonical_key(w) for w in names_]
    index = names.CanonicalIndex(keys)
    fallback = names._CanonicalIndex(keys)
    assert len(index) == len(names_)
    kept = {i: f"entry {i}" for i in range(-1, len(names_), 2)}  # what a Proof keeps
    finders = (index.finder(kept), fallback.finder(kept))
    for probe in map(wire, probes):
        want = max((i for i, w in enumerate(names_) if ordered(w) <= ordered(probe)),
                   default=-1)
        for key in (probe, probe + b"\x00\x01\x00\x01"):
            assert index.cover(key) == fallback.cover(key) == want, (probe, names_)
            assert [f.get(key) for f in finders] == [kept.get(want)] * 2


def test_a_canonical_index_refuses_what_it_cannot_search() -> None:
    from geodns import names

    for make in {names.CanonicalIndex, names._CanonicalIndex}:
        with pytest.raises(ValueError):
            make([b"b", b"a"])
        index = make([b"", b"a"])
        assert index.cover(b"\x00") == 0 and index.cover(b"\x01a\x00") == 1
        with pytest.raises((ValueError, IndexError)):
            index.cover(b"\x05ab")


def test_a_running_node_refreshes_signatures_when_due(tmp_path: Path) -> None:
    """validity 1h, refresh 3590 s, no jitter: the signatures are due ten
    seconds after they are made.  The node makes them again by itself (no
    reload asked, no file changed), logs it, and serves the new ones, which
    validate."""
    from tests.serveproc import Served, free_port

    (tmp_path / "zones").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "csk.pem").write_bytes(KEYS["csk.pem"])
    (tmp_path / "zones" / "s.example.yaml").write_text(
        HEAD + "dnssec:\n  keys: [{file: csk.pem, role: csk}]\n  validity: 1h\n"
        "  refresh: 3590\n  jitter: 0\n" + RECORDS)
    port = free_port()
    (tmp_path / "geodns.yaml").write_text(f"listen: [127.0.0.1:{port}]\nzones: zones\n"
                                          "keys: keys\nreload: {interval: 1}\n")
    node = Served(["--config", str(tmp_path / "geodns.yaml")], cwd=tmp_path)
    try:
        node.dns_port()
        first = node.wait_for(lambda x: x.get("event") == "signed", 15)
        assert "signed: s.example." in str(first["message"])

        def inception() -> int:
            q = dns.message.make_query("www.s.example.", "A", want_dnssec=True)
            m = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
            dnskey = dns.query.udp(dns.message.make_query("s.example.", "DNSKEY",
                                                          want_dnssec=True),
                                   "127.0.0.1", port=port, timeout=2)
            keys = {ORIGIN: dnskey.find_rrset(dnskey.answer, ORIGIN, dns.rdataclass.IN,
                                              dns.rdatatype.DNSKEY)}
            check_signed(m, keys, time.time())
            return next(s.inception for rr in m.answer if rr.rdtype == dns.rdatatype.RRSIG
                        for s in rr)

        before = inception()
        again = node.wait_for(lambda x: x.get("event") == "signed" and
                              "signatures refreshed" in str(x.get("message")), 25)
        assert int(again["made"]) > 0
        assert inception() > before
    finally:
        node.stop()


def test_the_c_canonical_key_is_the_pythons() -> None:
    """geodns._udpbatch.canonical_key (per query) agrees with the Python
    one on random names, and refuses what is not a name."""
    import random

    from geodns import names

    if names.canonical_key is names._canonical_key:
        pytest.skip("the C helper is not built (CI requires it)")
    rng = random.Random(7)
    for _ in range(20000):
        labels = [bytes(rng.choice(b"\x00\x01a-zZ") for _ in range(rng.randint(1, 5)))
                  for _ in range(rng.randint(0, 6))]
        wire = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
        assert names.canonical_key(wire) == names._canonical_key(wire), wire
    for bad in (b"", b"\x05ab", b"\x01a", b"\x3f" + b"a" * 63 * 5):
        with pytest.raises(ValueError):
            names.canonical_key(bad)


def test_memory_stays_bounded_under_random_names_with_do(signed: Responder) -> None:
    """Random names and types with DO: the answers kept per pair of NSEC
    intervals are bounded by the chain, and nothing else stays (an answer
    that referred to itself once kept every transient answer alive until
    the cyclic collector ran)."""
    import random
    import tracemalloc

    rnd = random.Random(3)

    def batch(n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            name = rnd.choice(["", "x.", "a.b.", "wild.", "y.wild.", "c."])
            q = dns.message.make_query(f"{rnd.getrandbits(32):08x}.{name}s.example.",
                                       rnd.randrange(1, 300), want_dnssec=True)
            out.append(q.to_wire())
        return out

    for q in batch(3000):
        signed.respond(q)
    queries = batch(6000)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for q in queries:
            signed.respond(q)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 60_000, after - before
