"""Signed answers checked by validators we did not write (issue 14).

A real ``geodns serve`` (tests/serveproc.py) serves two signed zones made
from one template: ``ed.test.`` with one Ed25519 combined signing key and
``ec.test.`` with an ECDSA P-256 key-signing and zone-signing key (and a
second zone-signing key published without signing, as before a rollover).
Each zone has a secure delegation (``secure``, its DS in the parent) and an
insecure one (``insecure``), whose child zones a second node serves, a
secure delegation to a child the same node serves (``nested``), and steered
names: PoPs fra, iad, sin and gru, with a made-up GeoIP database that places
one ECS network in each PoP's city.  Every answer shape of ``CASES``, the
steered answers of every PoP and those after drains are then checked by
three validators (tests/validators.py says how each is run):

* delv (BIND 9.18) with a static-ds trust anchor for the zone: "fully
  validated", or a validated NXDOMAIN or NODATA;
* unbound, a validating resolver on loopback with stub zones pointing at the
  two nodes, asking them over UDP and, in a second instance, over TCP: AD
  set (clear below the insecure delegation), never SERVFAIL;
* dnspython, over UDP and TCP, with and without ECS: every RRSIG of every
  RRset against the served DNSKEY set, and the NSEC proofs of denials checked
  against what the zone file says exists.

The trust anchors and the children's DS are made from the key files with
dnspython here.  Each validator is shown to reject a bogus answer: a wrong
anchor, and a proxy that changes one address and drops the NSEC records of
denials (and to accept what the proxy leaves alone).  Every answer without DO
has no DNSSEC record and is the DO answer less its DNSSEC records.

Knot 3.2 signs the same zones with its own keys: the three validators take
its answers to every case too (so the table asks for what a mature signer
does), and geodns and Knot agree on every answer's records, NSEC proofs
included.  On a node of its own, an edit and a ZSK rollover are validated
after each reload.

A bug of geodns found here is marked ``xfail(strict=True)`` until it is
fixed (``Case.bug``); the three found first (type NSEC and RRSIG queries, an
all_down NODATA, DS for a child zone on the same node) are fixed and their
comments say what the validators reported.
"""

from __future__ import annotations

import contextlib
import enum
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import yaml

from tests.geoip.make_mmdb import write as write_mmdb
from tests.refservers import knot_server, require_binary
from tests.serveproc import Served
from tests.validators import (
    ECDSAP256SHA256,
    ED25519,
    Checker,
    DelvResult,
    Stub,
    Unbound,
    ZoneFacts,
    ad,
    delv,
    delv_anchor,
    dnskey_of,
    dnssec_records,
    ds_of,
    new_key,
    rcode_text,
    section_texts,
)

TOKEN = "dnssec-validate-token"
ZONE = """\
origin: ORIGIN
soa: {mname: ns1, rname: hostmaster, serial: 1}
dnssec:
  KEYS
records:
  "@": {NS: [ns1, ns2], MX: {value: 10 mail}, TXT: "apex"}
  ns1: {A: 127.0.0.1}
  ns2: {A: 127.0.0.2}
  www: {A: [192.0.2.80, 192.0.2.81, 192.0.2.82], AAAA: "2001:db8::80"}
  mail: {A: 192.0.2.25}
  alias: {CNAME: alias2}
  alias2: {CNAME: www}
  dangling: {CNAME: nothere}
  "*.wild": {TXT: "wild text"}
  "*.cn": {CNAME: www}
  big: {TXT: [TXTLIST]}
  mxbig: {MX: [MXLIST]}
MXHOSTS
  a.b.c: {A: 192.0.2.9}
  secure: {NS: [ns.secure], DS: "SECURE_DS"}
  ns.secure: {A: 127.0.0.1}
  insecure: {NS: [ns.insecure]}
  ns.insecure: {A: 127.0.0.1}
  nested: {NS: [ns.nested], DS: "NESTED_DS"}
  ns.nested: {A: 127.0.0.1}
  geo:
    A: {steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2, sin: 192.0.2.3, gru: 192.0.2.4}}}
    AAAA:
      steer: {pops: {fra: "2001:db8::1", iad: "2001:db8::2", sin: "2001:db8::3", gru: "2001:db8::4"}}
  "*.pool":
    A: {steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2, sin: 192.0.2.3, gru: 192.0.2.4}}}
  cdn: {CNAME: geo}
  scname:
    CNAME: {steer: {pops: {fra: www, iad: mail, sin: a.b.c, gru: alias}}}
  two:
    A:
      steer:
        pops: {fra: 192.0.2.1, iad: 192.0.2.2, sin: 192.0.2.3, gru: 192.0.2.4}
        answers: 2
  empty:
    A: {steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}, all_down: nodata}}
  fallback:
    A: {steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}, all_down: {answer: [192.0.2.250]}}}
"""
# Child zones: ``secure`` and ``insecure`` on the second node; ``nested``
# (secure too) on the same node as its parent.
CHILD = """\
origin: ORIGIN
soa: {mname: ns, rname: hostmaster, serial: 1}
KEYS
records:
  "@": {NS: [ns]}
  ns: {A: 127.0.0.1}
  www: {A: ADDRESS}
"""
ORIGINS = ("ed.test.", "ec.test.")
CHILD_ADDRESS = {"secure": "192.0.2.70", "insecure": "192.0.2.71", "nested": "192.0.2.72"}
POPS = {  # name: (location, the ECS network the test database places near it, A, AAAA)
    "fra": ((50.11, 8.68), "198.18.0.0/24", "192.0.2.1", "2001:db8::1"),
    "iad": ((38.95, -77.45), "198.18.1.0/24", "192.0.2.2", "2001:db8::2"),
    "sin": ((1.35, 103.99), "198.18.2.0/24", "192.0.2.3", "2001:db8::3"),
    "gru": ((-23.43, -46.47), "198.18.3.0/24", "192.0.2.4", "2001:db8::4"),
}
PLACES = {"fra": "frankfurt", "iad": "ashburn", "sin": "singapore", "gru": "saopaulo"}


# -- the answer shapes ---------------------------------------------------------------------


class Shape(enum.Enum):
    POSITIVE = "positive"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    CNAME_NXDOMAIN = "cname to a missing name"
    WILDCARD = "wildcard"
    WILDCARD_NODATA = "wildcard nodata"
    NO_DS = "no DS at a cut"
    REFERRAL_DS = "referral with DS"
    REFERRAL_NO_DS = "referral without DS"

    @property
    def rcode(self) -> str:
        return "NXDOMAIN" if self in (Shape.NXDOMAIN, Shape.CNAME_NXDOMAIN) else "NOERROR"

    @property
    def delv_status(self) -> str:
        if self in (Shape.NXDOMAIN, Shape.CNAME_NXDOMAIN):
            return "ncache nxdomain"
        if self in (Shape.NODATA, Shape.WILDCARD_NODATA, Shape.NO_DS):
            return "ncache nxrrset"
        return "success"


@dataclass(frozen=True)
class Case:
    """One question and what its answer must be.  ``qname`` is relative to
    the zone ("@": the apex) and keeps its case; ``data`` is the rdata of
    the records of the type asked in the final answer (ORIGIN: the zone's
    origin); ``resolved`` what a resolver finds after a referral, and
    ``secure`` whether it can validate that (the AD flag).  ``truncated``:
    the signed answer does not fit in 1232 bytes (TC over UDP, then TCP);
    ``resolvers``: False where a resolver would ask the parent, which no
    one serves here; ``bug``: a bug of geodns, what the validators say
    (the validators' tests of the case are expected to fail)."""

    id: str
    qname: str
    qtype: str
    shape: Shape
    data: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    secure: bool = True
    mixed: bool = False  # the whole name, origin too, in mixed case
    truncated: bool = False
    resolvers: bool = True
    bug: str = ""

    def name(self, origin: str) -> str:
        text = origin if self.qname == "@" else f"{self.qname}.{origin}"
        if self.mixed:
            text = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text))
        return text

    def expected(self, origin: str) -> set[str]:
        return {d.replace("ORIGIN", origin) for d in self.data}


WWW = ("192.0.2.80", "192.0.2.81", "192.0.2.82")
# 15 strings of 63 characters: 1182 bytes unsigned, over 1232 with the RRSIG
BIG = tuple(f"{'y' * 60} {i:02d}" for i in range(15))
# A query for type NSEC (or RRSIG) at a name that exists is answered with the records
# (RFC 4035 3.1.1), as Knot answers; for RRSIG, resolvers do not validate such answers
# (delv hangs), so that case is asked directly only.
P = Shape
CASES = [
    Case("apex-soa", "@", "SOA", P.POSITIVE),
    Case("apex-ns", "@", "NS", P.POSITIVE, ("ns1.ORIGIN", "ns2.ORIGIN")),
    Case("apex-mx", "@", "MX", P.POSITIVE, ("10 mail.ORIGIN",)),
    Case("apex-txt", "@", "TXT", P.POSITIVE, ('"apex"',)),
    Case("apex-dnskey", "@", "DNSKEY", P.POSITIVE),
    Case("apex-cds", "@", "CDS", P.POSITIVE),
    Case("apex-cdnskey", "@", "CDNSKEY", P.POSITIVE),
    Case("a-three", "www", "A", P.POSITIVE, WWW),
    Case("aaaa", "www", "AAAA", P.POSITIVE, ("2001:db8::80",)),
    Case("nodata", "www", "TXT", P.NODATA),
    Case("apex-nodata", "@", "AAAA", P.NODATA),
    Case("nxdomain", "nope", "A", P.NXDOMAIN),
    Case("nxdomain-deep", "x.y.nope", "A", P.NXDOMAIN),
    Case("nxdomain-below-a-name", "deep.a.b.c", "A", P.NXDOMAIN),
    Case("nxdomain-below-an-ent", "nope.b.c", "AAAA", P.NXDOMAIN),
    Case("wildcard", "x.wild", "TXT", P.WILDCARD, ('"wild text"',)),
    Case("wildcard-deep", "y.x.wild", "TXT", P.WILDCARD, ('"wild text"',)),
    Case("wildcard-nodata", "x.wild", "A", P.WILDCARD_NODATA),
    Case("wildcard-cname", "x.cn", "A", P.WILDCARD, WWW),
    Case("wildcard-cname-query", "x.cn", "CNAME", P.WILDCARD, ("www.ORIGIN",)),
    Case("rare-type-nodata", "www", "NAPTR", P.NODATA),
    Case("unknown-type-nodata", "www", "TYPE65400", P.NODATA),
    Case("cname-chain-rare-type", "alias", "CAA", P.NODATA),
    Case("nxdomain-rare-type", "nope", "SSHFP", P.NXDOMAIN),
    Case("apex-ds", "@", "DS", P.NODATA, resolvers=False),
    Case("nsec-type", "www", "NSEC", P.POSITIVE),
    Case("rrsig-type", "www", "RRSIG", P.POSITIVE, resolvers=False),
    Case("truncated-when-signed", "big", "TXT", P.POSITIVE, tuple(f'"{t}"' for t in BIG),
         truncated=True),
    Case("additional-left-out", "mxbig", "MX", P.POSITIVE,
         tuple(f"{10 + i} mx{i}.ORIGIN" for i in range(8))),
    Case("any", "www", "ANY", P.POSITIVE),
    Case("any-apex", "@", "ANY", P.POSITIVE),
    Case("any-steered", "geo", "ANY", P.POSITIVE),
    Case("ent-above-wildcard", "wild", "TXT", P.NODATA),
    Case("ent", "b.c", "A", P.NODATA),
    Case("ent-top", "c", "MX", P.NODATA),
    Case("name-below-ents", "a.b.c", "A", P.POSITIVE, ("192.0.2.9",)),
    Case("cname-chain", "alias", "A", P.POSITIVE, WWW),
    Case("cname-chain-nodata", "alias", "TXT", P.NODATA),
    Case("cname-query", "alias", "CNAME", P.POSITIVE, ("alias2.ORIGIN",)),
    Case("cname-missing", "dangling", "A", P.CNAME_NXDOMAIN),
    Case("ds-at-secure-cut", "secure", "DS", P.POSITIVE),
    Case("ds-at-insecure-cut", "insecure", "DS", P.NO_DS),
    Case("referral-ds", "www.secure", "A", P.REFERRAL_DS, resolved=("192.0.2.70",)),
    Case("referral-ds-at-cut", "secure", "NS", P.REFERRAL_DS, resolved=("ns.secure.ORIGIN",)),
    Case("referral-glue", "ns.secure", "A", P.REFERRAL_DS, resolved=("127.0.0.1",)),
    Case("referral-ds-query-below-cut", "www.secure", "DS", P.REFERRAL_DS, resolved=()),
    Case("referral-no-ds-at-cut", "insecure", "NS", P.REFERRAL_NO_DS,
         resolved=("ns.insecure.ORIGIN",), secure=False),
    Case("referral-no-ds", "www.insecure", "A", P.REFERRAL_NO_DS, resolved=("192.0.2.71",),
         secure=False),
    Case("steered", "geo", "A", P.POSITIVE, ("192.0.2.1",)),
    Case("steered-aaaa", "geo", "AAAA", P.POSITIVE, ("2001:db8::1",)),
    Case("steered-nodata", "geo", "MX", P.NODATA),
    Case("steered-wildcard", "any.pool", "A", P.WILDCARD, ("192.0.2.1",)),
    Case("cname-to-steered", "cdn", "A", P.POSITIVE, ("192.0.2.1",)),
    Case("steered-cname", "scname", "A", P.POSITIVE, WWW),
    Case("steered-two", "two", "A", P.POSITIVE, ("192.0.2.1", "192.0.2.2")),
    Case("mixed-a", "wWw", "A", P.POSITIVE, WWW, mixed=True),
    Case("mixed-nxdomain", "NoPe.B.c", "A", P.NXDOMAIN, mixed=True),
    Case("mixed-nodata", "WWW", "TXT", P.NODATA, mixed=True),
    Case("mixed-wildcard", "Some.WILD", "TXT", P.WILDCARD, ('"wild text"',), mixed=True),
    Case("mixed-cname-missing", "DANGLING", "A", P.CNAME_NXDOMAIN, mixed=True),
    Case("mixed-referral", "WWW.Insecure", "A", P.REFERRAL_NO_DS, resolved=("192.0.2.71",),
         secure=False, mixed=True),
]
REFERRALS = (Shape.REFERRAL_DS, Shape.REFERRAL_NO_DS)


def params(cases: list[Case], bugs: bool = True) -> list[object]:
    """The cases as pytest parameters, a case with a bug marked to fail
    (strict: fixed, the mark must go)."""
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(
        strict=True, raises=AssertionError, reason=c.bug)] if c.bug and bugs else [])
            for c in cases]


# -- the nodes -------------------------------------------------------------------------------


@dataclass
class SignedZone:
    origin: str
    text: str
    facts: ZoneFacts
    ds: list[dns.rdata.Rdata]  # the trust anchor
    anchor: Path  # delv's trust-anchors file

    def checker(self, lab: Lab, tcp: bool = False) -> Checker:
        """A dnspython checker that trusts the DNSKEY set served now."""
        checker = Checker(self.facts, self.ds)
        problems = checker.trust(lab.ask(self.origin, "DNSKEY", tcp=tcp))
        assert not problems, problems
        return checker


@dataclass
class Lab:
    tmp: Path
    zones: dict[str, SignedZone] = field(default_factory=dict)
    child_ds: dict[str, str] = field(default_factory=dict)  # child origin: its DS in the parent
    nodes: list[Served] = field(default_factory=list)
    port: int = 0  # the parent node (signed zones, steering)
    child_port: int = 0  # the second node: secure.* and insecure.*
    admin: int = 0

    def ask(self, qname: str, qtype: str, *, do: bool = True, tcp: bool = False,
            ecs: str | None = None, port: int | None = None,
            truncated: bool = False, flags: int = 0) -> dns.message.Message:
        """An answer from the node (or ``port``) to a query with ``flags``
        (no RD unless given); over UDP, truncated only when expected
        (``truncated`` and DO)."""
        options: list[dns.edns.Option] = []
        if ecs is not None:
            address, prefix = ecs.split("/")
            options.append(dns.edns.ECSOption(address, int(prefix)))
        q = dns.message.make_query(qname, qtype, use_edns=0, want_dnssec=do, options=options)
        q.flags = dns.flags.Flag(flags)
        where = self.port if port is None else port
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=where, timeout=5)
        msg = dns.query.udp(q, "127.0.0.1", port=where, timeout=5)
        tc = bool(msg.flags & dns.flags.TC)
        assert tc == (truncated and do), f"{qname} {qtype}: TC {tc} over UDP"
        return msg

    def admin_post(self, path: str) -> dict[str, object]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            doc: dict[str, object] = json.loads(resp.read())
            return doc


def keys_yaml(keys: list[tuple[str, str, bool]]) -> str:
    return "keys:\n" + "".join(f"    - {{file: {f}, role: {role}{', sign: false' if not sign else ''}"
                                f"{', cds: true' if role != 'zsk' else ''}}}\n"
                                for f, role, sign in keys)


def child_zone(origin: str, key: str | None, address: str) -> str:
    keys = f"dnssec:\n  keys: [{{file: {key}, role: csk}}]" if key else ""
    return CHILD.replace("ORIGIN", origin).replace("KEYS", keys).replace("ADDRESS", address)


def start(lab: Lab, directory: Path, config: str) -> Served:
    (directory / "geodns.yaml").write_text(config)
    node = Served(["--config", str(directory / "geodns.yaml")])
    lab.nodes.append(node)
    node.wait_for(lambda x: str(x.get("message", "")).startswith("serving zones"), 20)
    return node


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("dnssec-validate")
    lab = Lab(tmp)
    parent, child = tmp / "parent", tmp / "child"
    for d in (parent, child):
        (d / "zones").mkdir(parents=True)
        (d / "keys").mkdir()

    def key(directory: Path, name: str, algorithm: int) -> bytes:
        pem = new_key(algorithm)
        (directory / "keys" / name).write_bytes(pem)
        return pem

    for origin in ORIGINS:
        algorithm = ED25519 if origin.startswith("ed") else ECDSAP256SHA256
        stem = origin.rstrip(".")
        if algorithm == ED25519:
            csk = key(parent, f"{stem}.csk.pem", ED25519)
            keys = [(f"{stem}.csk.pem", "csk", True)]
            anchor = [dnskey_of(csk, sep=True)]
        else:
            ksk = key(parent, f"{stem}.ksk.pem", ECDSAP256SHA256)
            key(parent, f"{stem}.zsk.pem", ECDSAP256SHA256)
            key(parent, f"{stem}.zsk-next.pem", ECDSAP256SHA256)
            keys = [(f"{stem}.ksk.pem", "ksk", True), (f"{stem}.zsk.pem", "zsk", True),
                    (f"{stem}.zsk-next.pem", "zsk", False)]
            anchor = [dnskey_of(ksk, sep=True)]
        texts = {}
        for sub, where in (("secure", child), ("nested", parent)):
            corigin = f"{sub}.{origin}"
            pem = key(where, f"{corigin}csk.pem", algorithm)
            texts[sub] = lab.child_ds[corigin] = ds_of(corigin, dnskey_of(pem, sep=True)).to_text()
            ctext = child_zone(corigin, f"{corigin}csk.pem", CHILD_ADDRESS[sub])
            (where / "zones" / f"{corigin}yaml").write_text(ctext)
        corigin = f"insecure.{origin}"
        ctext = child_zone(corigin, None, CHILD_ADDRESS["insecure"])
        (child / "zones" / f"{corigin}yaml").write_text(ctext)
        text = (ZONE.replace("ORIGIN", origin).replace("TXTLIST", ", ".join(f'"{t}"' for t in BIG))
                .replace("MXLIST", ", ".join(f'"{10 + i} mx{i}"' for i in range(8)))
                .replace("MXHOSTS\n", "".join(f'  mx{i}: {{A: 192.0.2.{100 + i}, AAAA: '
                                              f'"2001:db8::{100 + i}"}}\n' for i in range(8)))
                .replace("KEYS", keys_yaml(keys))
                .replace("SECURE_DS", texts["secure"]).replace("NESTED_DS", texts["nested"]))
        if algorithm == ECDSAP256SHA256:
            text = text.replace("dnssec:\n", "dnssec:\n  algorithm: ecdsap256sha256\n")
        (parent / "zones" / f"{origin}yaml").write_text(text)
        ds = [ds_of(origin, k) for k in anchor]
        lab.zones[origin] = SignedZone(origin, text, ZoneFacts.from_yaml(text), ds,
                                       delv_anchor(tmp / f"{stem}.anchor", origin, ds))

    write_mmdb(parent / "geo.mmdb", {net: PLACES[pop] for pop, (_, net, _, _) in POPS.items()})
    pops = "".join(f"  {pop}: {{location: [{lat}, {lon}]}}\n"
                   for pop, ((lat, lon), _, _, _) in POPS.items())
    try:
        node = start(lab, parent, f"""\
listen: [127.0.0.1:0]
zones: zones
keys: keys
admin: {{listen: 127.0.0.1:0, token: {TOKEN}}}
geoip: {{database: geo.mmdb}}
pops:
{pops}default_order: [{", ".join(POPS)}]
""")
        lab.port, lab.admin = node.dns_port(), node.admin_port()
        lab.child_port = start(lab, child, "listen: [127.0.0.1:0]\nzones: zones\nkeys: keys\n"
                               ).dns_port()
        yield lab
    finally:
        for n in lab.nodes:
            n.stop()


@pytest.fixture(scope="module")
def checkers(lab: Lab) -> dict[str, Checker]:
    return {origin: zone.checker(lab) for origin, zone in lab.zones.items()}


def case_id(case: Case) -> str:
    return case.id


def origin_id(origin: str) -> str:
    return origin.split(".")[0]


# -- dnspython ---------------------------------------------------------------------------------


def shape_problems(checker: Checker, case: Case, origin: str,
                   msg: dns.message.Message) -> list[str]:
    """What is wrong with an answer of ``case``'s shape, signatures apart."""
    qname = dns.name.from_text(case.name(origin))
    qtype = dns.rdatatype.from_text(case.qtype)
    shape = case.shape
    problems = []
    if rcode_text(msg) != shape.rcode:
        return [f"rcode {rcode_text(msg)}, expected {shape.rcode}"]
    aa = bool(msg.flags & dns.flags.AA)
    if aa == (shape in REFERRALS):
        problems.append(f"AA {'set' if aa else 'clear'}")
    final = [rd.to_text() for r in msg.answer if r.rdtype == qtype or (
        qtype == dns.rdatatype.ANY and r.rdtype != dns.rdatatype.RRSIG) for rd in r]
    if case.data and set(final) != case.expected(origin):
        problems.append(f"answer {sorted(final)}, expected {sorted(case.expected(origin))}")
    cut = checker.zone.cut_at_or_above(qname)
    if shape in (Shape.NODATA, Shape.NO_DS):
        if final:
            problems.append(f"NODATA with records {final}")
        if shape is Shape.NO_DS:
            assert cut is not None
            problems += checker.delegation_without_ds(msg, cut)
        else:
            chain = [r for r in msg.answer if r.rdtype == dns.rdatatype.CNAME]
            name = chain[-1][0].target if chain and qtype != dns.rdatatype.CNAME else qname
            problems += checker.no_type(msg, name, qtype)
    elif shape is Shape.NXDOMAIN:
        problems += checker.nxdomain(msg, qname)
    elif shape is Shape.CNAME_NXDOMAIN:
        chain = [r for r in msg.answer if r.rdtype == dns.rdatatype.CNAME]
        if not chain:
            return [*problems, "no CNAME in the answer"]
        problems += checker.nxdomain(msg, chain[-1][0].target)
    elif shape is Shape.WILDCARD:
        problems += checker.wildcard(msg, qname, qtype)
    elif shape is Shape.WILDCARD_NODATA:
        problems += checker.wildcard_nodata(msg, qname, qtype)
    elif shape in REFERRALS:
        assert cut is not None
        if msg.answer:
            problems.append("a referral with an answer")
        ns = msg.get_rrset(msg.authority, cut, dns.rdataclass.IN, dns.rdatatype.NS)
        ds = msg.get_rrset(msg.authority, cut, dns.rdataclass.IN, dns.rdatatype.DS)
        if ns is None:
            problems.append(f"no NS at {cut}")
        if shape is Shape.REFERRAL_DS and ds is None:
            problems.append(f"no DS at {cut}")
        if shape is Shape.REFERRAL_NO_DS:
            if ds is not None:
                problems.append(f"a DS at the insecure cut {cut}")
            problems += checker.delegation_without_ds(msg, cut)
    elif not final:
        problems.append(f"no {case.qtype} in the answer")
    if shape is not Shape.POSITIVE and shape not in REFERRALS and shape is not Shape.WILDCARD:
        soa = [r for r in msg.authority if r.rdtype == dns.rdatatype.SOA]
        if not soa:
            problems.append("a negative answer without the SOA")
    return problems


def dnspython_problems(checker: Checker, case: Case, origin: str,
                       msg: dns.message.Message) -> list[str]:
    return checker.signatures(msg) + shape_problems(checker, case, origin, msg)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", params(CASES))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_dnspython_validates(lab: Lab, checkers: dict[str, Checker], origin: str, case: Case,
                             tcp: bool) -> None:
    msg = lab.ask(case.name(origin), case.qtype, tcp=tcp, truncated=case.truncated)
    if msg.flags & dns.flags.TC:
        # only the question (and OPT): a resolver asks again over TCP
        assert not msg.answer and not msg.authority and not msg.additional, msg
        msg = lab.ask(case.name(origin), case.qtype, tcp=True)
    problems = dnspython_problems(checkers[origin], case, origin, msg)
    assert not problems, "\n".join(problems) + f"\n{msg}"


@pytest.mark.parametrize("case", params(CASES))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_dnspython_validates_with_ecs_rd_and_cd(lab: Lab, checkers: dict[str, Checker],
                                                origin: str, case: Case) -> None:
    """The same with a Client Subnet option (Frankfurt: the steered answers
    are those of the default order) and RD and CD set: the answer's other
    forms (its ECS echo, its header) carry the same signatures."""
    q = dns.message.make_query(case.name(origin), case.qtype, use_edns=0, want_dnssec=True,
                               options=[dns.edns.ECSOption("198.18.0.0", 24)])
    q.flags |= dns.flags.RD | dns.flags.CD
    msg = dns.query.tcp(q, "127.0.0.1", port=lab.port, timeout=5)
    assert msg.flags & dns.flags.RD, msg  # (CD is not copied, as Knot and NSD: docs/zones.md)
    ecs = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    assert len(ecs) == 1 and ecs[0].address == "198.18.0.0", msg
    problems = dnspython_problems(checkers[origin], case, origin, msg)
    assert not problems, "\n".join(problems) + f"\n{msg}"


@pytest.mark.parametrize("case", params(CASES, bugs=False))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_without_do_no_dnssec_records(lab: Lab, checkers: dict[str, Checker], origin: str,
                                      case: Case) -> None:
    """Without DO: no RRSIG or NSEC anywhere (but the type asked for), and
    the answer is the DO answer less its DNSSEC records (and a referral's
    DS); the DO answer may leave out additional records that do not fit."""
    plain = lab.ask(case.name(origin), case.qtype, do=False)
    signed = lab.ask(case.name(origin), case.qtype, do=True, tcp=case.truncated)
    assert dnssec_records(plain, dns.rdatatype.from_text(case.qtype)) == []
    dnssec = {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
    asked = dnssec - {dns.rdatatype.from_text(case.qtype)}  # an NSEC asked for is data
    referral_ds = {dns.rdatatype.DS} if case.shape in REFERRALS else set()
    assert plain.rcode() == signed.rcode()
    assert plain.flags == signed.flags
    assert section_texts(plain.answer) == section_texts(signed.answer, asked)
    assert section_texts(plain.authority) == section_texts(signed.authority, dnssec | referral_ds)
    assert set(section_texts(signed.additional, dnssec)) <= set(section_texts(plain.additional))
    cut = checkers[origin].zone.cut_at_or_above(dns.name.from_text(case.name(origin)))
    if case.shape in REFERRALS:
        assert cut is not None
        assert signed.get_rrset(signed.authority, cut, dns.rdataclass.IN, dns.rdatatype.DS) \
            or case.shape is Shape.REFERRAL_NO_DS
        assert not plain.get_rrset(plain.authority, cut, dns.rdataclass.IN, dns.rdatatype.DS)


# -- delv ---------------------------------------------------------------------------------------


# delv cannot follow a referral
DELV_CASES = [c for c in CASES if c.shape not in REFERRALS and c.resolvers]


# Over TCP too, for delv, the shapes of each kind (dnspython and unbound ask every case
# over TCP as well): delv takes some 100 ms a run, mostly its start-up.
DELV_TCP = {"a-three", "nodata", "nxdomain", "wildcard", "wildcard-nodata", "cname-chain",
            "cname-missing", "ent", "ds-at-insecure-cut", "truncated-when-signed"}


def delv_all(zones: dict[str, SignedZone], port: int,
             tcp: bool = True) -> dict[tuple[str, str, bool], DelvResult]:
    """Every delv run of DELV_CASES over UDP (and those of DELV_TCP over
    TCP), at once."""
    require_binary("delv")
    jobs = [(origin, case, False) for origin in ORIGINS for case in DELV_CASES]
    if tcp:
        jobs += [(origin, case, True) for origin in ORIGINS for case in DELV_CASES
                 if case.id in DELV_TCP]
    with ThreadPoolExecutor(8) as pool:
        results = pool.map(lambda j: delv(zones[j[0]].anchor, j[0], port, j[1].name(j[0]),
                                          j[1].qtype, tcp=j[2]), jobs)
        return {(o, c.id, t): r for (o, c, t), r in zip(jobs, results, strict=True)}


@pytest.fixture(scope="module")
def delv_results(lab: Lab) -> dict[tuple[str, str, bool], DelvResult]:
    return delv_all(lab.zones, lab.port)


def delv_records(result: DelvResult, qtype: str) -> set[str]:
    out = set()
    for line in result.records:
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[2] == "IN" and parts[3] == qtype:
            out.add(parts[4])
    return out


@pytest.mark.parametrize("case", params(DELV_CASES))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_delv_validates(delv_results: dict[tuple[str, str, bool], DelvResult], origin: str,
                        case: Case) -> None:
    check_delv(delv_results[(origin, case.id, False)], origin, case)


@pytest.mark.parametrize("case", params([c for c in DELV_CASES if c.id in DELV_TCP]))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_delv_validates_over_tcp(delv_results: dict[tuple[str, str, bool], DelvResult],
                                 origin: str, case: Case) -> None:
    check_delv(delv_results[(origin, case.id, True)], origin, case)


def check_delv(result: DelvResult, origin: str, case: Case) -> None:
    assert result.validated, result.output
    assert result.status == case.shape.delv_status, result.output
    if case.data:
        assert delv_records(result, case.qtype) == case.expected(origin), result.output


# -- unbound -------------------------------------------------------------------------------------


def stubs(lab: Lab, parent_port: int) -> list[Stub]:
    out = []
    for origin in ORIGINS:
        out += [Stub(origin, parent_port), Stub(f"secure.{origin}", lab.child_port),
                Stub(f"insecure.{origin}", lab.child_port)]
    return out


@pytest.fixture(scope="module", params=["udp", "tcp"])
def unbound(request: pytest.FixtureRequest, lab: Lab) -> Iterator[Unbound]:
    """unbound in front of the two nodes, asking them over UDP or TCP."""
    require_binary("unbound")
    transport = request.param
    anchors = [(origin, ds) for origin, zone in lab.zones.items() for ds in zone.ds]
    with Unbound(lab.tmp / f"unbound-{transport}", stubs(lab, lab.port), anchors, lab.port,
                 tcp_upstream=transport == "tcp") as resolver:
        yield resolver


@pytest.mark.parametrize("case", params([c for c in CASES if c.resolvers]))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_unbound_validates(unbound: Unbound, origin: str, case: Case) -> None:
    check_resolved(unbound, origin, case)


def check_resolved(unbound: Unbound, origin: str, case: Case) -> None:
    msg = unbound.ask(case.name(origin), case.qtype)
    assert rcode_text(msg) == case.shape.rcode, unbound.explain(msg)
    assert ad(msg) == case.secure, unbound.explain(msg)
    expected = {d.replace("ORIGIN", origin) for d in case.resolved} or case.expected(origin)
    if expected:
        qtype = dns.rdatatype.from_text(case.qtype)
        got = {rd.to_text() for r in msg.answer if r.rdtype == qtype for rd in r}
        assert got == expected, unbound.explain(msg)


def queries_by_transport(lab: Lab, origin: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {"udp": 0.0, "tcp": 0.0}
    for line in text.splitlines():
        if line.startswith("geodns_dns_queries_total{") and f'zone="{origin}"' in line:
            for transport in out:
                if f'transport="{transport}"' in line:
                    out[transport] += float(line.rsplit(" ", 1)[1])
    return out


def test_unbound_asks_over_its_transport(lab: Lab, unbound: Unbound) -> None:
    """The TCP instance really asks geodns over TCP (its answers above were
    TCP answers), the UDP one over UDP."""
    origin = ORIGINS[0]
    before = queries_by_transport(lab, origin)
    msg = unbound.ask(f"transport-{unbound.port}.pool.{origin}", "A")
    assert ad(msg) and rcode_text(msg) == "NOERROR", msg
    deadline = time.monotonic() + 5
    transport = "tcp" if unbound.tcp_upstream else "udp"
    other = "udp" if unbound.tcp_upstream else "tcp"
    while time.monotonic() < deadline:
        after = queries_by_transport(lab, origin)
        if after[transport] > before[transport]:
            break
        time.sleep(0.1)
    assert after[transport] > before[transport], (before, after)
    assert after[other] == before[other], (before, after)


# -- steered answers: every PoP, and after drains ------------------------------------------------


STEERED = [Case("geo-a", "geo", "A", P.POSITIVE), Case("geo-aaaa", "geo", "AAAA", P.POSITIVE),
           Case("pool", "x.pool", "A", P.WILDCARD), Case("cdn", "cdn", "A", P.POSITIVE)]


def steered_data(case: Case, pop: str) -> tuple[str, ...]:
    _, _, a, aaaa = POPS[pop]
    return (aaaa,) if case.qtype == "AAAA" else (a,)


def with_data(case: Case, data: tuple[str, ...], qname: str | None = None) -> Case:
    return Case(case.id, qname or case.qname, case.qtype, case.shape, data)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("pop", POPS)
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_dnspython_validates_every_pops_answer(lab: Lab, checkers: dict[str, Checker],
                                               origin: str, pop: str, tcp: bool) -> None:
    """An ECS client in each PoP's city gets that PoP's records, signed."""
    network = POPS[pop][1]
    for steered in STEERED:
        case = with_data(steered, steered_data(steered, pop))
        msg = lab.ask(case.name(origin), case.qtype, ecs=network, tcp=tcp)
        problems = dnspython_problems(checkers[origin], case, origin, msg)
        assert not problems, "\n".join(problems) + f"\n{msg}"


@pytest.mark.parametrize("pop", POPS)
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_unbound_validates_every_pops_answer(unbound: Unbound, origin: str, pop: str) -> None:
    """The same through unbound, which passes the client's ECS option on."""
    network = POPS[pop][1]
    address, prefix = network.split("/")
    for steered in STEERED:
        expected = set(steered_data(steered, pop))
        msg = unbound.ask(steered.name(origin), steered.qtype,
                          [dns.edns.ECSOption(address, int(prefix))])
        got = {rd.to_text() for r in msg.answer if r.rdtype == dns.rdatatype.from_text(
            steered.qtype) for rd in r}
        assert ad(msg) and got == expected, unbound.explain(msg)


class Drains:
    """PoPs drained over the admin API, all undrained at the end."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.drained: list[str] = []

    def __enter__(self) -> Drains:
        return self

    def drain(self, pop: str) -> None:
        self.drained.append(pop)
        assert self.lab.admin_post(f"/pops/{pop}/drain")["state"] == "draining"

    def __exit__(self, *exc: object) -> None:
        for pop in self.drained:
            self.lab.admin_post(f"/pops/{pop}/undrain")


def until_answer(lab: Lab, qname: str, ecs: str, expected: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        msg = lab.ask(qname, "A", ecs=ecs)
        got = [rd.to_text() for r in msg.answer if r.rdtype == dns.rdatatype.A for rd in r]
        if got == [expected] or time.monotonic() > deadline:
            assert got == [expected], msg
            return
        time.sleep(0.05)


def test_steered_answers_after_drains(lab: Lab, checkers: dict[str, Checker],
                                      unbound: Unbound) -> None:
    """fra drained: its clients get iad's records, signed, and so does a
    client nobody places (delv's, from 127.0.0.1: the default order); every
    PoP drained: the all-down answer of ``fallback``, signed too (and
    ``geo``, fail-open, the closest PoP anyway)."""
    fra_net, iad = POPS["fra"][1], POPS["iad"]
    address, prefix = fra_net.split("/")
    ecs = [dns.edns.ECSOption(address, int(prefix))]
    with Drains(lab) as drains:
        drains.drain("fra")
        until_answer(lab, f"geo.{ORIGINS[0]}", fra_net, iad[2])
        for origin in ORIGINS:
            for steered in STEERED:
                case = with_data(steered, (iad[3] if steered.qtype == "AAAA" else iad[2],))
                msg = lab.ask(case.name(origin), case.qtype, ecs=fra_net)
                problems = dnspython_problems(checkers[origin], case, origin, msg)
                assert not problems, "\n".join(problems) + f"\n{msg}"
            # unbound may have fra's answer to geo and x.pool cached: a new name
            msg = unbound.ask(f"drained-{unbound.port}.pool.{origin}", "A", ecs)
            assert ad(msg) and [rd.to_text() for rd in msg.answer[0]] == [iad[2]], msg
            result = delv(lab.zones[origin].anchor, origin, lab.port, f"geo.{origin}", "A")
            assert result.validated and delv_records(result, "A") == {iad[2]}, result.output
        for pop in ("iad", "sin", "gru"):
            drains.drain(pop)
        until_answer(lab, f"fallback.{ORIGINS[0]}", fra_net, "192.0.2.250")
        for origin in ORIGINS:
            for qname, expected in (("fallback", "192.0.2.250"), ("geo", POPS["fra"][2])):
                case = Case(qname, qname, "A", P.POSITIVE, (expected,))
                msg = lab.ask(case.name(origin), "A", ecs=fra_net)
                problems = dnspython_problems(checkers[origin], case, origin, msg)
                assert not problems, "\n".join(problems) + f"\n{msg}"
            msg = unbound.ask(f"fallback.{origin}", "A", ecs)
            assert ad(msg) and [rd.to_text() for rd in msg.answer[0]] == ["192.0.2.250"], msg
            result = delv(lab.zones[origin].anchor, origin, lab.port, f"fallback.{origin}", "A")
            assert result.validated and delv_records(result, "A") == {"192.0.2.250"}, \
                result.output


# -- the validators can fail ---------------------------------------------------------------------


def forge(wire: bytes) -> bytes:
    """An answer changed as an attacker on the path would: www's first
    address replaced, and the NSEC records of a denial (and their RRSIGs)
    left out."""
    msg = dns.message.from_wire(wire)
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.A:
            rdatas = [dns.rdata.from_text("IN", "A", "192.0.2.79")
                      if rd.to_text() == "192.0.2.80" else rd for rd in rrset]
            rrset.clear()
            for rd in rdatas:
                rrset.add(rd)
    msg.authority = [r for r in msg.authority if dns.rdatatype.NSEC not in (r.rdtype, r.covers)]
    return msg.to_wire()


class Forger:
    """A UDP proxy on 127.0.0.1 in front of the node that forges every
    answer (:func:`forge`)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Forger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            while not self._stop.is_set():
                try:
                    query, peer = self.sock.recvfrom(65535)
                    up.sendto(query, ("127.0.0.1", self.upstream))
                    answer = up.recv(65535)
                except OSError:  # a timeout: look at the stop flag again
                    continue
                with contextlib.suppress(Exception):  # what dnspython cannot read: as it came
                    answer = forge(answer)
                self.sock.sendto(answer, peer)


@pytest.fixture(scope="module")
def forger(lab: Lab) -> Iterator[Forger]:
    with Forger(lab.port) as f:
        yield f


@pytest.fixture(scope="module")
def skeptic(lab: Lab, forger: Forger) -> Iterator[Unbound]:
    """unbound that asks the forger for ed.test. and has a wrong trust
    anchor for ec.test. (the DS of a key nobody uses)."""
    require_binary("unbound")
    wrong = ds_of("ec.test.", dnskey_of(new_key(ECDSAP256SHA256), sep=True))
    anchors = [("ed.test.", ds) for ds in lab.zones["ed.test."].ds] + [("ec.test.", wrong)]
    routes = [Stub(s.zone, forger.port) if s.zone == "ed.test." else s
              for s in stubs(lab, lab.port)]
    with Unbound(lab.tmp / "unbound-skeptic", routes, anchors, lab.port) as resolver:
        yield resolver


FORGED = [Case("a-three", "www", "A", P.POSITIVE, WWW),  # an address changed
          Case("nxdomain", "nope", "A", P.NXDOMAIN),  # no proof
          Case("nodata", "www", "TXT", P.NODATA),
          Case("wildcard", "x.wild", "TXT", P.WILDCARD, ('"wild text"',))]
UNTOUCHED = Case("mail", "mail", "A", P.POSITIVE, ("192.0.2.25",))  # the forger changes nothing


@pytest.mark.parametrize("case", FORGED, ids=case_id)
def test_every_validator_rejects_a_forged_answer(lab: Lab, checkers: dict[str, Checker],
                                                 forger: Forger, skeptic: Unbound,
                                                 case: Case) -> None:
    origin = "ed.test."
    msg = lab.ask(case.name(origin), case.qtype, port=forger.port)
    assert dnspython_problems(checkers[origin], case, origin, msg), msg
    result = delv(lab.zones[origin].anchor, origin, forger.port, case.name(origin), case.qtype)
    assert not result.validated, result.output
    msg = skeptic.ask(case.name(origin), case.qtype)
    assert rcode_text(msg) == "SERVFAIL", skeptic.explain(msg)


def test_every_validator_takes_what_the_forger_left_alone(
        lab: Lab, checkers: dict[str, Checker], forger: Forger, skeptic: Unbound) -> None:
    """The control: through the same proxy, an answer it does not change
    validates (the rejections above are the forgery's)."""
    origin, case = "ed.test.", UNTOUCHED
    msg = lab.ask(case.name(origin), case.qtype, port=forger.port)
    assert not dnspython_problems(checkers[origin], case, origin, msg), msg
    result = delv(lab.zones[origin].anchor, origin, forger.port, case.name(origin), case.qtype)
    assert result.validated, result.output
    msg = skeptic.ask(case.name(origin), case.qtype)
    assert ad(msg) and rcode_text(msg) == "NOERROR", msg


def test_every_validator_rejects_a_wrong_anchor(lab: Lab, skeptic: Unbound) -> None:
    origin = "ec.test."
    wrong = ds_of(origin, dnskey_of(new_key(ECDSAP256SHA256), sep=True))
    checker = Checker(lab.zones[origin].facts, [wrong])
    assert checker.trust(lab.ask(origin, "DNSKEY"))
    anchor = delv_anchor(lab.tmp / "wrong.anchor", origin, [wrong])
    for name, qtype in ((f"www.{origin}", "A"), (f"nope.{origin}", "A")):
        result = delv(anchor, origin, lab.port, name, qtype)
        assert not result.validated and result.status == "broken trust chain", result.output
        msg = skeptic.ask(name, qtype)
        assert rcode_text(msg) == "SERVFAIL", skeptic.explain(msg)


# -- a child zone on the same node as its parent -------------------------------------------------

# With the parent and a signed child zone on the same node, a DS query at the cut
# (nested.ORIGIN DS) is answered by the parent side (RFC 4035 3.1.4.1), as Knot and NSD
# do serving both zones: the chain of trust reaches the child.  (It was once answered
# from the child's apex: delv "broken trust chain", unbound SERVFAIL for the child.)


@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_dnspython_ds_of_a_child_on_the_same_node(lab: Lab, checkers: dict[str, Checker],
                                                  origin: str) -> None:
    case = Case("nested-ds", "nested", "DS", P.POSITIVE, (lab.child_ds[f"nested.{origin}"],))
    msg = lab.ask(case.name(origin), "DS")
    problems = dnspython_problems(checkers[origin], case, origin, msg)
    assert not problems, "\n".join(problems) + f"\n{msg}"


@pytest.mark.parametrize("qname,qtype", [("nested", "DS"), ("www.nested", "A")])
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_delv_child_on_the_same_node(lab: Lab, origin: str, qname: str, qtype: str) -> None:
    require_binary("delv")
    result = delv(lab.zones[origin].anchor, origin, lab.port, f"{qname}.{origin}", qtype)
    assert result.validated, result.output


@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_unbound_child_on_the_same_node(unbound: Unbound, origin: str) -> None:
    msg = unbound.ask(f"www.nested.{origin}", "A")
    assert ad(msg) and [rd.to_text() for r in msg.answer if r.rdtype == dns.rdatatype.A
                        for rd in r] == ["192.0.2.72"], \
        unbound.explain(msg)


# With every PoP of ``empty`` down (all_down: nodata), its A query is answered NODATA
# with an NSEC of the name whose bitmap lacks A (signed with the zone); the name's usual
# NSEC lists A, which exists while a PoP is up.  (It was once the usual one: dnspython
# "the NSEC of empty.ORIGIN has the type asked", delv "insecurity proof failed", unbound
# "nodata proof failed".)


def test_all_down_nodata(lab: Lab, checkers: dict[str, Checker], unbound: Unbound) -> None:
    """``empty`` answers NODATA when its PoPs are down (all_down: nodata):
    each validator must take that NODATA."""
    with Drains(lab) as drains:
        for pop in ("fra", "iad"):
            drains.drain(pop)
        deadline = time.monotonic() + 5
        while lab.ask(f"empty.{ORIGINS[0]}", "A").answer and time.monotonic() < deadline:
            time.sleep(0.05)
        for origin in ORIGINS:
            case = Case("empty", "empty", "A", P.NODATA)
            msg = lab.ask(case.name(origin), "A")
            problems = dnspython_problems(checkers[origin], case, origin, msg)
            result = delv(lab.zones[origin].anchor, origin, lab.port, case.name(origin), "A")
            resolved = unbound.ask(case.name(origin), "A")
            verdicts = {"dnspython": not problems, "delv": result.validated,
                        "unbound": ad(resolved) and rcode_text(resolved) == "NOERROR"}
            assert all(verdicts.values()), (
                f"{verdicts}\n" + "\n".join(problems) + f"\n{msg}\n{result.output}\n"
                + unbound.explain(resolved))


# -- Knot signing the same zones -----------------------------------------------------------------

STEERED_TTL = 30  # geodns's default for a steered record set


def bind_zone(text: str) -> str:
    """The zone file of a (geodns YAML) zone as Knot reads it; a steered
    record set becomes what a client that nobody places gets (the default
    order: fra, then iad), which is what geodns answers without ECS."""
    doc = yaml.safe_load(text)
    soa = doc["soa"]
    lines = [f"$ORIGIN {doc['origin']}", "$TTL 3600",
             f"@ 3600 IN SOA {soa['mname']} {soa['rname']} {soa['serial']} 7200 3600 1209600 300"]
    for owner, types in doc["records"].items():
        for rtype, value in types.items():
            ttl, values = 3600, value if isinstance(value, list) else [value]
            if isinstance(value, dict) and "steer" in value:
                steer = value["steer"]
                ttl = STEERED_TTL
                values = list(steer["pops"].values())[:steer.get("answers", 1)]
            for v in values:
                if isinstance(v, dict):  # {value: ...}
                    v = v["value"]
                if rtype == "TXT":
                    v = '"' + str(v).replace('"', '\\"') + '"'
                lines.append(f"{owner} {ttl} IN {rtype} {v}")
    return "\n".join(lines) + "\n"


KNOT_POLICIES = """\
policy:
  - id: csk
    algorithm: ed25519
    single-type-signing: on
    ksk-lifetime: 0
    zsk-lifetime: 0
    cds-cdnskey-publish: always
  - id: split
    algorithm: ecdsap256sha256
    single-type-signing: off
    ksk-lifetime: 0
    zsk-lifetime: 0
    cds-cdnskey-publish: always
"""


@dataclass
class KnotLab:
    port: int
    zones: dict[str, SignedZone]
    checkers: dict[str, Checker]


@pytest.fixture(scope="module")
def knot(lab: Lab) -> Iterator[KnotLab]:
    """Knot 3.2 serving the same two zones, signing them itself (its own
    keys: Ed25519 CSK, ECDSA KSK and ZSK), anchored by the DS of its KSK."""
    require_binary("knotd")
    directory = lab.tmp / "knot"
    directory.mkdir()
    files, options = {}, {}
    for origin, zone in lab.zones.items():
        files[origin] = directory / f"{origin}zone"
        files[origin].write_text(bind_zone(zone.text))
        options[origin] = ["dnssec-signing: on",
                           f"dnssec-policy: {'csk' if origin.startswith('ed') else 'split'}"]
    with knot_server(files, modules=KNOT_POLICIES, zone_options=options) as (_, port):
        zones, checkers = {}, {}
        for origin, zone in lab.zones.items():
            q = dns.message.make_query(origin, "DNSKEY", want_dnssec=True)
            keys = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
            rrset = keys.get_rrset(keys.answer, dns.name.from_text(origin), dns.rdataclass.IN,
                                   dns.rdatatype.DNSKEY)
            assert rrset is not None, keys
            ds = [ds_of(origin, k) for k in rrset if k.flags & dns.dnssec.Flag.SEP]
            stem = origin.rstrip(".")
            zones[origin] = SignedZone(origin, zone.text, zone.facts, ds,
                                       delv_anchor(directory / f"{stem}.anchor", origin, ds))
            checkers[origin] = Checker(zone.facts, ds)
            assert not checkers[origin].trust(keys)
        yield KnotLab(port, zones, checkers)


def comparable(section: list[dns.rrset.RRset]) -> list[str]:
    """A section's records but signatures, key material and SOA serials
    (Knot signs with its own keys, two of them for ec.test. where geodns
    has three, and increments the serial)."""
    out = set()
    for text in section_texts(section, {dns.rdatatype.RRSIG}):
        owner, ttl, rtype, rdata = text.lower().split(" ", 3)  # Knot's rdata names: the
        if rtype in ("dnskey", "cds", "cdnskey"):              # question's case
            ttl, rdata = "(ttl)", "(key)"  # Knot: CDS and CDNSKEY with TTL 0
        elif rtype == "soa":
            fields = rdata.split()
            rdata = " ".join([*fields[:2], "(serial)", *fields[3:]])
        out.add(f"{owner} {ttl} {rtype} {rdata}")
    return sorted(out)


@pytest.mark.parametrize("case", params(CASES))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_geodns_and_knot_agree(lab: Lab, knot: KnotLab, origin: str, case: Case) -> None:
    """The same records in the answer and authority sections, NSEC records
    included (the same chain picks the same proofs), but signatures and
    keys; rcode and flags alike (the query has RD and CD: both copy RD, and
    neither CD).  (For ANY, each picks its one RRset.)"""
    flags = dns.flags.RD | dns.flags.CD
    ours = lab.ask(case.name(origin), case.qtype, tcp=True, flags=flags)
    theirs = lab.ask(case.name(origin), case.qtype, tcp=True, port=knot.port, flags=flags)
    shown = f"geodns:\n{ours}\nKnot:\n{theirs}"
    assert (rcode_text(ours), ours.flags) == (rcode_text(theirs), theirs.flags), shown
    if case.qtype != "ANY":
        for section in ("answer", "authority"):
            assert comparable(getattr(ours, section)) == comparable(getattr(theirs, section)), \
                shown


@pytest.mark.parametrize("case", params(CASES, bugs=False))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_dnspython_validates_knot(knot: KnotLab, lab: Lab, origin: str, case: Case) -> None:
    """The dnspython checks on Knot's answers: what the table expects is
    what a mature signer does (and the checks are not geodns's quirks)."""
    msg = lab.ask(case.name(origin), case.qtype, tcp=True, port=knot.port)
    problems = dnspython_problems(knot.checkers[origin], case, origin, msg)
    assert not problems, "\n".join(problems) + f"\n{msg}"


@pytest.fixture(scope="module")
def knot_delv_results(knot: KnotLab) -> dict[tuple[str, str, bool], DelvResult]:
    return delv_all(knot.zones, knot.port, tcp=False)


@pytest.mark.parametrize("case", params(DELV_CASES, bugs=False))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_delv_validates_knot(knot_delv_results: dict[tuple[str, str, bool], DelvResult],
                             origin: str, case: Case) -> None:
    check_delv(knot_delv_results[(origin, case.id, False)], origin, case)


@pytest.fixture(scope="module")
def knot_unbound(lab: Lab, knot: KnotLab) -> Iterator[Unbound]:
    """unbound in front of Knot (the children still on geodns's second node)."""
    require_binary("unbound")
    anchors = [(origin, ds) for origin, zone in knot.zones.items() for ds in zone.ds]
    with Unbound(lab.tmp / "unbound-knot", stubs(lab, knot.port), anchors, knot.port) as u:
        yield u


@pytest.mark.parametrize("case", params([c for c in CASES if c.resolvers], bugs=False))
@pytest.mark.parametrize("origin", ORIGINS, ids=origin_id)
def test_unbound_validates_knot(knot_unbound: Unbound, origin: str, case: Case) -> None:
    check_resolved(knot_unbound, origin, case)


# -- an edit and a ZSK rollover, on a node of their own ------------------------------------------

ROLL = """\
origin: roll.test.
soa: {mname: ns1, rname: hostmaster, serial: SERIAL}
dnssec:
  keys:
    - {file: ksk.pem, role: ksk}
KEYS
records:
  "@": {NS: [ns1]}
  ns1: {A: 127.0.0.1}
  www: {A: [192.0.2.80, 192.0.2.81, 192.0.2.82]}
  "*.wild": {TXT: "wild text"}
EXTRA"""
ROLL_CASES = [Case("a-three", "www", "A", P.POSITIVE, WWW), Case("nodata", "www", "TXT", P.NODATA),
              Case("nxdomain", "nope", "A", P.NXDOMAIN),
              Case("wildcard", "x.wild", "TXT", P.WILDCARD, ('"wild text"',)),
              Case("apex-dnskey", "@", "DNSKEY", P.POSITIVE)]


def test_an_edit_and_a_zsk_rollover_validate(tmp_path: Path) -> None:
    """A zone whose next ZSK is published before it signs: an edit that
    adds a name (its neighbours' NSEC records signed again, the rest kept)
    and the switch to the new ZSK, then the old one's removal, each served
    after a reload, each validated by dnspython and delv; after the switch
    every signature but the DNSKEY set's is the new key's."""
    origin = "roll.test."
    (tmp_path / "zones").mkdir()
    (tmp_path / "keys").mkdir()
    pems = {}
    for name in ("ksk", "zsk1", "zsk2"):
        pems[name] = new_key(ECDSAP256SHA256)
        (tmp_path / "keys" / f"{name}.pem").write_bytes(pems[name])
    tags = {name: dnskey_of(pem, sep=name == "ksk") for name, pem in pems.items()}
    ds = [ds_of(origin, tags["ksk"])]
    anchor = delv_anchor(tmp_path / "roll.anchor", origin, ds)

    def write(serial: int, keys: str, extra: str = "") -> str:
        text = ROLL.replace("SERIAL", str(serial)).replace("KEYS", keys).replace("EXTRA", extra)
        tmp = tmp_path / "zones" / "roll.yaml.tmp"
        tmp.write_text(text)
        tmp.replace(tmp_path / "zones" / f"{origin}yaml")
        return text

    lab = Lab(tmp_path)
    steps = [(1, "    - {file: zsk1.pem, role: zsk}\n    - {file: zsk2.pem, role: zsk, sign: false}",
              "", "zsk1", 3),
             (2, "    - {file: zsk1.pem, role: zsk, sign: false}\n    - {file: zsk2.pem, role: zsk}",
              "  added: {A: 192.0.2.99}\n", "zsk2", 3),
             (3, "    - {file: zsk2.pem, role: zsk}", "  added: {A: 192.0.2.99}\n", "zsk2", 2)]
    try:
        for serial, keys, extra, signer, published in steps:
            text = write(serial, keys, extra)
            if serial == 1:
                lab.port = start(lab, tmp_path, "listen: [127.0.0.1:0]\nzones: zones\nkeys: keys\n"
                                 "reload: {interval: 0.2}\n").dns_port()
            deadline = time.monotonic() + 10
            while lab.ask(origin, "SOA").answer[0][0].serial != serial:
                assert time.monotonic() < deadline, f"serial {serial} not served"
                time.sleep(0.05)
            zone = SignedZone(origin, text, ZoneFacts.from_yaml(text), ds, anchor)
            checker = zone.checker(lab)
            assert checker.dnskeys is not None and len(checker.dnskeys) == published
            cases = ROLL_CASES + ([Case("added", "added", "A", P.POSITIVE, ("192.0.2.99",)),
                                   Case("nx-by-added", "addeb", "A", P.NXDOMAIN)]
                                  if extra else [])
            for case in cases:
                msg = lab.ask(case.name(origin), case.qtype)
                problems = dnspython_problems(checker, case, origin, msg)
                assert not problems, f"serial {serial}: " + "\n".join(problems) + f"\n{msg}"
                want = {dns.dnssec.key_id(tags["ksk" if case.qtype == "DNSKEY" else signer])}
                used = {rd.key_tag for section in (msg.answer, msg.authority)
                        for r in section if r.rdtype == dns.rdatatype.RRSIG for rd in r}
                assert used == want, f"serial {serial}: signed by {used}, not {want}\n{msg}"
                result = delv(anchor, origin, lab.port, case.name(origin), case.qtype)
                assert result.validated, f"serial {serial}:\n{result.output}"
    finally:
        for node in lab.nodes:
            node.stop()
