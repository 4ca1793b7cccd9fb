"""DNSSEC validators we did not write, for the tests of signed answers.

Three of them, each with a way to ask it about one question:

* :func:`delv` runs BIND's ``delv`` (bind9-dnsutils) against one server with
  a ``static-ds`` trust anchor for the zone and reads its YAML output
  (:class:`DelvResult`: validated or not, and the records it saw).  delv
  resolves as a validating forwarder would: it cannot follow a referral
  (it calls one "non-improving" and fails), so referrals are checked
  through their DS set and through unbound.
* :class:`Unbound` runs ``unbound -d`` on loopback as a validating resolver
  whose stub zones point at the servers under test, with a trust anchor per
  zone; an answer it validated has AD set, a bogus one is SERVFAIL.  Every
  other name goes to a stub for the root that points at a server under test
  too, which refuses it: nothing leaves 127.0.0.0/8.
* :class:`Checker` uses dnspython: every RRSIG of every RRset in every
  section against the zone's DNSKEY set (itself checked against the DS made
  here from the key file), and the NSEC proofs of denials checked against
  what the zone file says exists, with ``dns.name``'s canonical order
  (RFC 4034 6.1) and not with any code of geodns.

Keys are made here with ``cryptography``, and the DNSKEY and DS records
that anchor them with dnspython (:func:`new_key`, :func:`dnskey_of`,
:func:`ds_of`), so that a mistake in geodns's key encoding shows as a
validation failure rather than as an anchor that agrees with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.refservers import free_port, require_binary

Name = dns.name.Name
ECDSAP256SHA256 = 13
ED25519 = 15
RRSIG = dns.rdatatype.RRSIG
NSEC = dns.rdatatype.NSEC
DNSSEC_TYPES = frozenset({dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3})


# -- keys and anchors -------------------------------------------------------------------


def new_key(algorithm: int) -> bytes:
    """A new private key as a PKCS #8 PEM file (what geodns reads)."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def dnskey_of(pem: bytes, sep: bool) -> dns.rdata.Rdata:
    """The DNSKEY of a key file (flags 257 with ``sep``, else 256)."""
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    algorithm = ED25519 if isinstance(private, ed25519.Ed25519PrivateKey) else ECDSAP256SHA256
    flags = dns.dnssec.Flag.ZONE | (dns.dnssec.Flag.SEP if sep else 0)
    return dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=flags)


def ds_of(origin: str, dnskey: dns.rdata.Rdata) -> dns.rdata.Rdata:
    return dns.dnssec.make_ds(dns.name.from_text(origin), dnskey, "SHA256")


# -- what a zone file says exists -------------------------------------------------------


@dataclass(frozen=True)
class ZoneFacts:
    """A zone as its (geodns YAML) file describes it: the names that exist,
    empty non-terminals included, and the delegation points."""

    origin: Name
    owners: frozenset[Name]  # names with records
    exists: frozenset[Name]  # owners and the empty non-terminals above them
    cuts: frozenset[Name]

    @classmethod
    def from_yaml(cls, text: str) -> ZoneFacts:
        doc = yaml.safe_load(text)
        origin = dns.name.from_text(doc["origin"])
        owners, cuts = set(), set()
        for key, value in doc["records"].items():
            name = origin if key == "@" else dns.name.from_text(key, origin)
            owners.add(name)
            if name != origin and isinstance(value, dict) and "NS" in value:
                cuts.add(name)
        exists = set()
        for name in owners:
            while name != origin:
                exists.add(name)
                name = name.parent()
        exists.add(origin)
        return cls(origin, frozenset(owners), frozenset(exists), frozenset(cuts))

    def cut_at_or_above(self, name: Name) -> Name | None:
        for cut in self.cuts:
            if name.is_subdomain(cut):
                return cut
        return None

    def delegated(self, name: Name, rtype: int) -> bool:
        """Data that is not the zone's to sign: at or below a cut, except
        the DS set and the NSEC at the cut (RFC 4035 2.2)."""
        cut = self.cut_at_or_above(name)
        return cut is not None and not (name == cut and rtype in (dns.rdatatype.DS, NSEC))

    def closest_encloser(self, name: Name) -> Name:
        """The longest existing proper ancestor of a name that does not exist."""
        while name != self.origin:
            name = name.parent()
            if name in self.exists:
                return name
        return name


# -- dnspython as the validator ---------------------------------------------------------


def nsec_types(rd: dns.rdata.Rdata) -> set[int]:
    """The types of an NSEC's bitmap (RFC 4034 4.1.2), decoded here."""
    types = set()
    for window, bitmap in rd.windows:  # type: ignore[attr-defined]
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    types.add(window * 256 + i * 8 + bit)
    return types


@dataclass(frozen=True)
class Nsec:
    owner: Name
    next: Name
    types: frozenset[int]

    def covers(self, name: Name) -> bool:
        """owner < name < next in canonical order; the last NSEC of the
        chain (its next is the apex, before every other name) covers every
        name after its owner."""
        if self.owner < self.next:
            return self.owner < name < self.next
        return name > self.owner or name < self.next

    def __str__(self) -> str:
        types = " ".join(sorted(dns.rdatatype.to_text(t) for t in self.types))
        return f"{self.owner} NSEC {self.next} {types}"


def nsecs(msg: dns.message.Message) -> list[Nsec]:
    return [Nsec(rrset.name, rd.next, frozenset(nsec_types(rd)))  # type: ignore[attr-defined]
            for rrset in msg.authority if rrset.rdtype == NSEC for rd in rrset]


@dataclass
class Checker:
    """dnspython's validation of one zone's answers (see the module text).
    ``dnskeys`` is the served DNSKEY set, checked against ``ds`` by
    :meth:`trust`."""

    zone: ZoneFacts
    ds: Sequence[dns.rdata.Rdata]
    dnskeys: dns.rrset.RRset | None = None
    now: float = field(default_factory=time.time)

    def trust(self, msg: dns.message.Message) -> list[str]:
        """Take the DNSKEY set from an answer to DNSKEY at the apex: it is
        trusted when a key whose DS is the anchor signs it."""
        rrset = msg.get_rrset(msg.answer, self.zone.origin, dns.rdataclass.IN,
                              dns.rdatatype.DNSKEY)
        sigs = msg.get_rrset(msg.answer, self.zone.origin, dns.rdataclass.IN, RRSIG,
                             dns.rdatatype.DNSKEY)
        if rrset is None or sigs is None:
            return [f"no signed DNSKEY set at {self.zone.origin}"]
        anchors = {ds.to_text() for ds in self.ds}
        trusted = [k for k in rrset if ds_of(self.zone.origin.to_text(), k).to_text() in anchors]
        if not trusted:
            return [f"no DNSKEY of {self.zone.origin} matches the anchor DS"]
        anchor_set = dns.rrset.from_rdata_list(self.zone.origin, rrset.ttl, trusted)
        good = []
        for sig in sigs:
            with contextlib.suppress(dns.dnssec.ValidationFailure):
                dns.dnssec.validate_rrsig(rrset, sig, {self.zone.origin: anchor_set},
                                          now=self.now)
                good.append(sig)
        if not good:
            return [f"the DNSKEY set of {self.zone.origin} is not signed by the anchored key"]
        self.dnskeys = rrset
        return []

    def signatures(self, msg: dns.message.Message) -> list[str]:
        """Every RRset the zone is authoritative for has RRSIGs, each of
        which validates; delegation NS and glue have none.  (The RRSIGs a
        query for type RRSIG asks for are data: nothing to check them by.)"""
        assert self.dnskeys is not None, "trust() first"
        keys = {self.zone.origin: self.dnskeys}
        problems = []
        asked = msg.question[0].rdtype if msg.question else None
        for label, section in (("answer", msg.answer), ("authority", msg.authority),
                               ("additional", msg.additional)):
            sigs = {(r.name, r.covers): r for r in section if r.rdtype == RRSIG}
            data = {(r.name, r.rdtype) for r in section if r.rdtype != RRSIG}
            for (owner, covers) in sigs:
                if (owner, covers) not in data and not (section is msg.answer and
                                                        asked == RRSIG):
                    problems.append(f"{label}: RRSIG {owner} {dns.rdatatype.to_text(covers)} "
                                    "without its RRset")
            for rrset in section:
                if rrset.rdtype == RRSIG:
                    continue
                what = f"{label} {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
                sig = sigs.get((rrset.name, rrset.rdtype))
                if self.zone.delegated(rrset.name, rrset.rdtype):
                    if sig is not None:
                        problems.append(f"{what}: signed, but it is the child's")
                    continue
                if sig is None:
                    problems.append(f"{what}: no RRSIG")
                    continue
                for rd in sig:
                    problems += self._one(what, rrset, sig.ttl, rd, keys)
        return problems

    def _one(self, what: str, rrset: dns.rrset.RRset, sig_ttl: int, rd: dns.rdata.Rdata,
             keys: dict[Name, dns.rrset.RRset]) -> list[str]:
        out = []
        tag = f"{what} RRSIG key {rd.key_tag}"  # type: ignore[attr-defined]
        if rd.signer != self.zone.origin:  # type: ignore[attr-defined]
            out.append(f"{tag}: signer {rd.signer}")  # type: ignore[attr-defined]
        # RFC 4034 3: the RRSIG's TTL is the RRset's; the RRset's may be less
        # than the original (a negative answer's SOA: RFC 2308 5, RFC 9077)
        if rrset.ttl > rd.original_ttl or sig_ttl != rrset.ttl:  # type: ignore[attr-defined]
            out.append(f"{tag}: TTL {rrset.ttl}, RRSIG's {sig_ttl}, original TTL "
                       f"{rd.original_ttl}")  # type: ignore[attr-defined]
        try:
            dns.dnssec.validate_rrsig(rrset, rd, keys, now=self.now)  # type: ignore[arg-type]
        except dns.dnssec.ValidationFailure as exc:
            out.append(f"{tag}: {exc}")
        return out

    # -- denial of existence ----------------------------------------------------------
    def no_name(self, msg: dns.message.Message, name: Name) -> list[str]:
        """An NSEC proves ``name`` does not exist: it covers the name, its
        next name is not below it (the name would be an empty non-terminal)
        and it is not the NSEC of a delegation above it."""
        for n in nsecs(msg):
            if not n.covers(name) or n.next.is_subdomain(name):
                continue
            if dns.rdatatype.NS in n.types and dns.rdatatype.SOA not in n.types and \
                    name.is_subdomain(n.owner):
                continue
            return []
        return [f"no NSEC proves {name} absent: " + "; ".join(map(str, nsecs(msg)))]

    def no_type(self, msg: dns.message.Message, name: Name, rtype: int) -> list[str]:
        """The name exists without the type (nor a CNAME): its own NSEC, or
        for an empty non-terminal an NSEC that covers it with a next name
        below it."""
        shown = "; ".join(map(str, nsecs(msg)))
        if name in self.zone.owners:
            for n in nsecs(msg):
                if n.owner == name:
                    if rtype in n.types or dns.rdatatype.CNAME in n.types:
                        return [f"the NSEC of {name} has the type asked: {n}"]
                    return []
            return [f"no NSEC at {name}: {shown}"]
        for n in nsecs(msg):
            if n.covers(name) and n.next.is_subdomain(name):
                return []
        return [f"no NSEC shows the empty non-terminal {name}: {shown}"]

    def nxdomain(self, msg: dns.message.Message, name: Name) -> list[str]:
        encloser = self.zone.closest_encloser(name)
        return self.no_name(msg, name) + self.no_name(msg, dns.name.from_text("*", encloser))

    def wildcard(self, msg: dns.message.Message, name: Name, rtype: int) -> list[str]:
        """A wildcard's synthesis: the RRSIG's labels are those of the
        wildcard's closest encloser, and an NSEC shows the name itself is
        not there."""
        out = []
        encloser = self.zone.closest_encloser(name)
        sig = msg.get_rrset(msg.answer, name, dns.rdataclass.IN, RRSIG, rtype)
        for rd in sig or ():
            if rd.labels != len(encloser) - 1:  # type: ignore[attr-defined]
                out.append(f"RRSIG labels {rd.labels}, the wildcard *.{encloser} has "  # type: ignore[attr-defined]
                           f"{len(encloser) - 1}")
        return out + self.no_name(msg, name)

    def wildcard_nodata(self, msg: dns.message.Message, name: Name, rtype: int) -> list[str]:
        wild = dns.name.from_text("*", self.zone.closest_encloser(name))
        out = self.no_name(msg, name)
        for n in nsecs(msg):
            if n.owner == wild:
                if rtype in n.types or dns.rdatatype.CNAME in n.types:
                    out.append(f"the wildcard's NSEC has the type asked: {n}")
                return out
        return [*out, f"no NSEC at {wild}"]

    def delegation_without_ds(self, msg: dns.message.Message, cut: Name) -> list[str]:
        for n in nsecs(msg):
            if n.owner == cut:
                if dns.rdatatype.NS not in n.types or dns.rdatatype.DS in n.types or \
                        dns.rdatatype.SOA in n.types:
                    return [f"the NSEC at the cut does not prove an insecure delegation: {n}"]
                return []
        return [f"no NSEC at the cut {cut}"]


def dnssec_records(msg: dns.message.Message, asked: int | None = None) -> list[str]:
    """The RRSIG, NSEC and NSEC3 records of an answer, but those of the
    type asked for in the answer section (RFC 4035 3.2.1)."""
    return [f"{r.name} {dns.rdatatype.to_text(r.rdtype)}"
            for section in (msg.answer, msg.authority, msg.additional) for r in section
            if r.rdtype in DNSSEC_TYPES and not (section is msg.answer and r.rdtype == asked)]


def section_texts(rrsets: Iterable[dns.rrset.RRset], leave_out: Iterable[int] = ()) -> list[str]:
    skip = set(leave_out)
    return sorted(f"{r.name.to_text().lower()} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} "
                  f"{rd.to_text()}" for r in rrsets if r.rdtype not in skip for rd in r)


# -- delv ---------------------------------------------------------------------------------


VALIDATED = frozenset({"fully_validated", "negative_response_fully_validated"})
RESOLVED = frozenset({"success", "ncache nxdomain", "ncache nxrrset"})


@dataclass(frozen=True)
class DelvResult:
    """What delv printed (``+yaml``): its status, the names of the groups
    of records it printed (``fully_validated``, ``unsigned_answer``, ...)
    and the records."""

    status: str
    groups: tuple[str, ...]
    records: tuple[str, ...]
    output: str

    @property
    def validated(self) -> bool:
        """Resolved (an answer, or a negative one) and every record fully
        validated."""
        return self.status in RESOLVED and bool(self.groups) and set(self.groups) <= VALIDATED


def delv_anchor(path: Path, origin: str, ds: Iterable[dns.rdata.Rdata]) -> Path:
    lines = [f'    "{origin}" static-ds {d.key_tag} {d.algorithm} {d.digest_type} '  # type: ignore[attr-defined]
             f'"{d.digest.hex()}";' for d in ds]  # type: ignore[attr-defined]
    path.write_text("trust-anchors {\n" + "\n".join(lines) + "\n};\n")
    return path


def delv(anchor: Path, origin: str, port: int, qname: str, qtype: str,
         tcp: bool = False) -> DelvResult:
    binary = require_binary("delv")
    args = [binary, "+yaml", "-a", str(anchor), f"+root={origin}", "@127.0.0.1", "-p", str(port),
            *(["+tcp"] if tcp else []), qname, qtype]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    output = f"$ {' '.join(args)}\n{proc.stderr}{proc.stdout}"
    try:
        doc = yaml.safe_load(proc.stdout)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict):
        return DelvResult("unreadable output", (), (), output)
    groups, records = [], []
    for group in doc.get("records") or ():
        for key, lines in group.items():
            groups.append(str(key))
            records += [str(line) for line in lines or ()]
    return DelvResult(str(doc.get("status")), tuple(groups), tuple(records), output)


# -- unbound ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stub:
    zone: str
    port: int


def unbound_config(directory: Path, port: int, stubs: Sequence[Stub],
                   anchors: Iterable[tuple[str, dns.rdata.Rdata]], root_port: int,
                   tcp_upstream: bool = False) -> str:
    """unbound.conf(5) for a validating resolver on 127.0.0.1:``port``
    that asks the stubs and nobody else (the root's stub is a server under
    test, which refuses what it does not serve), over TCP with
    ``tcp_upstream``."""
    lines = [
        "server:",
        f'    directory: "{directory}"',
        '    chroot: ""',
        '    username: ""',
        f'    pidfile: "{directory / "unbound.pid"}"',
        '    logfile: ""',
        "    use-syslog: no",
        "    do-daemonize: no",
        "    verbosity: 1",
        "    val-log-level: 2",
        "    num-threads: 1",
        "    interface: 127.0.0.1",
        f"    port: {port}",
        "    outgoing-interface: 127.0.0.1",
        "    do-ip6: no",
        "    access-control: 127.0.0.0/8 allow",
        "    do-not-query-localhost: no",
        # every answer comes from the server, not from what an earlier one proved
        "    aggressive-nsec: no",
        "    prefetch: no",
        # a client's ECS option goes on to the servers under test (steered answers)
        '    module-config: "subnetcache validator iterator"',
        "    send-client-subnet: 127.0.0.1",
        "    client-subnet-always-forward: yes",
        "    max-client-subnet-ipv4: 24",
        f"    tcp-upstream: {'yes' if tcp_upstream else 'no'}",
        *(f'    trust-anchor: "{zone} DS {ds.to_text()}"' for zone, ds in anchors),
        # test. is one of unbound's own empty zones (RFC 6761): not here
        '    local-zone: "test." nodefault',
        "remote-control:",
        "    control-enable: no",
    ]
    for stub in [*stubs, Stub(".", root_port)]:
        lines += ["stub-zone:", f'    name: "{stub.zone}"', f"    stub-addr: 127.0.0.1@{stub.port}"]
    return "\n".join(lines) + "\n"


class Unbound:
    """``unbound -d`` with :func:`unbound_config`, on a free port of
    127.0.0.1, stopped with its process group."""

    def __init__(self, directory: Path, stubs: Sequence[Stub],
                 anchors: Iterable[tuple[str, dns.rdata.Rdata]], root_port: int,
                 tcp_upstream: bool = False) -> None:
        self.directory = directory
        self.tcp_upstream = tcp_upstream
        self.stubs = list(stubs)
        self.anchors = list(anchors)
        self.root_port = root_port
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "unbound.log"

    def __enter__(self) -> Unbound:
        binary = require_binary("unbound")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # the free port may be taken before unbound binds it
            self.port = free_port()
            conf = self.directory / "unbound.conf"
            conf.write_text(unbound_config(self.directory, self.port, self.stubs, self.anchors,
                                           self.root_port, self.tcp_upstream))
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen([binary, "-d", "-c", str(conf)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True)
            if self._ready():
                return self
            self._stop()
        raise AssertionError("unbound did not start:\n" + self.text())

    def _ready(self, timeout: float = 10.0) -> bool:
        q = dns.message.make_query(".", "NS")  # the root's stub refuses: still an answer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.2)
                return True
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        return False

    def _stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError as e:
            return f"(no log: {e})"

    def explain(self, msg: dns.message.Message) -> str:
        """An answer and unbound's log (why it failed to validate), for an
        assertion's message."""
        time.sleep(0.2)  # the log line may still be on its way
        return f"{msg}\n--- unbound log ---\n{self.text()}"

    def ask(self, qname: str, qtype: str, options: Sequence[dns.edns.Option] = (),
            tries: int = 3) -> dns.message.Message:
        q = dns.message.make_query(qname, qtype, want_dnssec=True, options=list(options))
        for attempt in range(tries):
            try:
                msg, _ = dns.query.udp_with_fallback(q, "127.0.0.1", port=self.port,
                                                     timeout=3.0)
                return msg
            except dns.exception.Timeout:
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")


def rcode_text(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


def ad(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AD)


__all__ = ["DNSSEC_TYPES", "ECDSAP256SHA256", "ED25519", "Checker", "DelvResult", "Nsec",
           "Stub", "Unbound", "ZoneFacts", "ad", "delv", "delv_anchor", "dnskey_of",
           "dnssec_records", "ds_of", "new_key", "nsec_types", "nsecs", "rcode_text",
           "section_texts", "unbound_config"]
