"""Send DNS queries and compare answers from different servers.

:func:`query` asks one question over UDP or TCP; :func:`normalize` turns a
response into a JSON-able summary that is equal for equivalent answers
(section order, name case and the OPT record's place do not matter);
:func:`diff` lists how two summaries differ.  The ``raw_*``/``wire_*``
helpers craft and send malformed or unusual packets that dnspython would not
build.

Knot DNS 3.2 and NSD 4.6 (default settings, zones in ``tests/data``,
``tests/test_reference_agree.py``) agree on nearly every answer.  What
differs, and the ``normalize`` switch that hides it where one exists:

``authority_ns=False``
    NSD puts the zone's own apex NS RRset into the authority section of
    every positive authoritative answer, plus those NS names' addresses in
    the additional section (``minimal-responses: no`` is its default); Knot
    leaves both out.  Both are allowed (RFC 1034 4.3.2, RFC 2181 9).  The
    switch drops an authority NS RRset when an answer RRset lies at or below
    its owner (so it cannot be a referral) and the additional records that
    were only there for it.  With this switch the servers agree on all
    ordinary queries over UDP/TCP, with and without EDNS.
``additional=False``
    Both servers do additional section processing for MX, SRV and NS
    targets in their zones (addresses of mail.example.test for an MX query).
    For comparing with a server that does not, the switch keeps only
    referral glue: A/AAAA for the targets of referral NS RRsets in the
    authority section (in-bailiwick glue and in-zone "sibling" addresses,
    both of which Knot and NSD send).
``edns_payload=False``
    Both advertise 1232 (their default, whatever the query asked for), but
    that is configuration, not behaviour.
``ttl=False``
    Blanks TTLs (for servers whose zones were loaded differently).

Differences no switch hides (listed in the test's ``KNOWN_DIFFERENCES``):
NSD follows a CNAME into another zone it serves, Knot stops at the zone
boundary; for ANY (one RRset, RFC 8482) at the apex Knot picks A, NSD SOA;
and malformed or unusual packets (question echoed in errors or not, dropped
or FORMERR, NOTIFY/UPDATE/AXFR rcodes, NSID by default).
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = [
    "TIMEOUT",
    "NoReply",
    "diff",
    "encode_name",
    "normalize",
    "parse",
    "query",
    "query_wire",
    "raw_exchange",
    "wire_header",
    "wire_opt",
    "wire_question",
]

TIMEOUT = 2.0


class NoReply(TimeoutError):
    """The server sent nothing back in time (or closed the TCP connection)."""


FLAG_NAMES = ("AA", "TC", "RD", "RA", "AD", "CD")
SECTIONS = ("answer", "authority", "additional")


# -- sending ---------------------------------------------------------------------------


def raw_exchange(
    host: str,
    port: int,
    wire: bytes,
    *,
    tcp: bool = False,
    timeout: float = TIMEOUT,
    expect_id: int | None = None,
) -> bytes | None:
    """Send ``wire`` as it is and return the raw reply, or None if none came.

    Over UDP, datagrams whose ID differs from ``expect_id`` (default: the
    ID in ``wire``) are skipped.  Over TCP, the 2-byte length is added here;
    None also covers a connection closed without a reply.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if expect_id is None and len(wire) >= 2:
        expect_id = struct.unpack("!H", wire[:2])[0]
    deadline = time.monotonic() + timeout
    if tcp:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                length = _recv_exact(sock, 2, deadline)
                if length is None:
                    return None
                return _recv_exact(sock, struct.unpack("!H", length)[0], deadline)
            except (TimeoutError, ConnectionError):
                return None
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.send(wire)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                reply = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            if expect_id is None or reply[:2] == struct.pack("!H", expect_id):
                return reply


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def parse(wire: bytes) -> dns.message.Message:
    """dnspython Message from a reply, as leniently as dnspython allows."""
    return dns.message.from_wire(wire, ignore_trailing=True, one_rr_per_rrset=False)


def query(
    host: str,
    port: int,
    qname: str | dns.name.Name,
    qtype: str | int,
    *,
    tcp: bool = False,
    edns: int | None = 0,
    payload: int = 1232,
    dnssec_ok: bool = False,
    rd: bool = False,
    cd: bool = False,
    qid: int | None = None,
    qclass: str | int = "IN",
    options: Iterable[dns.edns.Option] = (),
    timeout: float = TIMEOUT,
) -> dns.message.Message:
    """Ask one question and return the parsed reply.

    ``edns`` is the EDNS version to send, None for no OPT record.  The case
    of ``qname`` is sent as given (for case-randomisation tests).  Raises
    :class:`NoReply` (a :class:`TimeoutError`) if no reply arrives in
    ``timeout`` seconds.
    """
    options = list(options)
    if edns is None and (dnssec_ok or options):
        raise ValueError("dnssec_ok and EDNS options need edns to be set")
    msg = dns.message.make_query(
        qname, dns.rdatatype.RdataType.make(qtype), rdclass=dns.rdataclass.RdataClass.make(qclass)
    )
    msg.id = random.randrange(65536) if qid is None else qid
    msg.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    if edns is None:
        msg.use_edns(False)
    else:
        msg.use_edns(
            edns,
            ednsflags=dns.flags.DO if dnssec_ok else 0,
            payload=payload,
            options=options,
        )
    reply = raw_exchange(host, port, msg.to_wire(), tcp=tcp, timeout=timeout)
    if reply is None:
        proto = "TCP" if tcp else "UDP"
        raise NoReply(f"no reply from {host}@{port} over {proto} for {qname} {qtype}")
    return parse(reply)


# -- crafting packets ------------------------------------------------------------------


def encode_name(name: str | dns.name.Name) -> bytes:
    """Uncompressed wire form of a domain name (case kept)."""
    if isinstance(name, str):
        name = dns.name.from_text(name)
    wire = name.to_wire()
    assert wire is not None
    return wire


def wire_header(
    qid: int = 0x1234,
    *,
    qr: bool = False,
    opcode: int = 0,
    aa: bool = False,
    tc: bool = False,
    rd: bool = False,
    ra: bool = False,
    ad: bool = False,
    cd: bool = False,
    rcode: int = 0,
    qdcount: int = 1,
    ancount: int = 0,
    nscount: int = 0,
    arcount: int = 0,
) -> bytes:
    """A 12-byte DNS header with arbitrary counts (they are not checked)."""
    flags = (
        (qr << 15)
        | ((opcode & 0xF) << 11)
        | (aa << 10)
        | (tc << 9)
        | (rd << 8)
        | (ra << 7)
        | (ad << 5)
        | (cd << 4)
        | (rcode & 0xF)
    )
    return struct.pack("!6H", qid, flags, qdcount, ancount, nscount, arcount)


def wire_question(
    name: str | dns.name.Name | bytes, qtype: str | int, qclass: str | int = "IN"
) -> bytes:
    """One question entry; ``name`` may be raw wire bytes (e.g. with a pointer)."""
    qname = name if isinstance(name, bytes) else encode_name(name)
    return qname + struct.pack(
        "!HH", dns.rdatatype.RdataType.make(qtype), dns.rdataclass.RdataClass.make(qclass)
    )


def wire_opt(
    *,
    payload: int = 1232,
    version: int = 0,
    do: bool = False,
    ext_rcode: int = 0,
    z: int = 0,
    options: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """An OPT pseudo-record (root owner) with raw ``(code, data)`` options."""
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0) | (z & 0x7FFF)
    return b"\x00" + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata


def query_wire(
    qname: str | dns.name.Name,
    qtype: str | int,
    *,
    qid: int = 0x1234,
    edns: int | None = None,
    opt: bytes | None = None,
    **header: Any,
) -> bytes:
    """A plain query in wire form; ``edns`` adds a default OPT, ``opt`` a given one."""
    if opt is None and edns is not None:
        opt = wire_opt(version=edns)
    header.setdefault("arcount", 1 if opt else 0)
    return wire_header(qid, **header) + wire_question(qname, qtype) + (opt or b"")


# -- comparing -------------------------------------------------------------------------


def _lower_names(rd: dns.rdata.Rdata) -> dns.rdata.Rdata:
    """The rdata with embedded domain names lowercased (RFC 4034 6.2 types)."""
    wire = rd.to_digestable()
    return dns.rdata.from_wire(rd.rdclass, rd.rdtype, wire, 0, len(wire))


def _rr_strings(rrsets: Iterable[dns.rrset.RRset], *, ttl: bool) -> list[str]:
    out = []
    for rrset in rrsets:
        owner = rrset.name.to_text().lower()
        cls = dns.rdataclass.to_text(rrset.rdclass)
        typ = dns.rdatatype.to_text(rrset.rdtype)
        for rd in rrset:
            try:
                text = _lower_names(rd).to_text()
            except dns.exception.DNSException:
                text = rd.to_text()
            fields = [owner, str(rrset.ttl)] if ttl else [owner]
            out.append(" ".join([*fields, cls, typ, text]))
    return sorted(out)


def _targets(rrsets: Iterable[dns.rrset.RRset]) -> set[dns.name.Name]:
    """Names that additional section processing looks up for these RRsets."""
    out: set[dns.name.Name] = set()
    for rrset in rrsets:
        for rd in rrset:
            for attr in ("target", "exchange"):  # NS, CNAME, SRV, PTR / MX
                name = getattr(rd, attr, None)
                if isinstance(name, dns.name.Name):
                    out.add(name)
    return out


def _is_apex_ns(rrset: dns.rrset.RRset, answer: list[dns.rrset.RRset]) -> bool:
    """An authority NS RRset that is the answering zone's own NS, not a referral.

    A server has no authoritative data below a zone cut, so when an answer
    RRset is owned at or below the NS owner, that NS RRset is the NS of the
    zone the answer came from (NSD adds it to every positive answer).
    """
    return rrset.rdtype == dns.rdatatype.NS and any(a.name.is_subdomain(rrset.name) for a in answer)


def normalize(
    msg: dns.message.Message,
    *,
    additional: bool = True,
    authority_ns: bool = True,
    edns_payload: bool = True,
    ttl: bool = True,
) -> dict[str, Any]:
    """A JSON-able summary of ``msg`` that is equal for equivalent answers.

    Keys: ``rcode`` (text, extended rcode included), ``opcode``, ``flags``
    (sorted subset of AA TC RD RA AD CD), ``question`` (``"name CLASS
    TYPE"``), ``answer``/``authority``/``additional`` (sorted ``"owner ttl
    CLASS TYPE rdata"`` strings, owner and RDATA names lowercased, OPT left
    out), and ``edns`` (None without OPT, else version, DO flag, payload and
    options as ``"code:hex"``).

    ``authority_ns=False`` drops the zone's own NS RRset from the authority
    section of positive answers (see :func:`_is_apex_ns`) together with the
    additional addresses that were only there for it; referral NS RRsets
    stay.  ``additional=False`` keeps only referral glue: addresses of the
    targets of referral NS RRsets in the authority section (in-bailiwick
    glue and in-zone "sibling" addresses alike, both servers send both).
    ``edns_payload=False`` and ``ttl=False`` blank those values.  See the
    module docstring for why Knot and NSD differ.
    """
    answer = list(msg.answer)
    authority = list(msg.authority)
    extra = [r for r in msg.additional if r.rdtype != dns.rdatatype.OPT]
    referral_ns = [
        r for r in authority if r.rdtype == dns.rdatatype.NS and not _is_apex_ns(r, answer)
    ]
    if not authority_ns:
        dropped = [r for r in authority if _is_apex_ns(r, answer)]
        authority = [r for r in authority if not _is_apex_ns(r, answer)]
        only_for_dropped = _targets(dropped) - _targets(answer) - _targets(authority)
        extra = [r for r in extra if r.name not in only_for_dropped]
    if not additional:
        glue = _targets(referral_ns)
        extra = [
            r for r in extra if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and r.name in glue
        ]
    edns: dict[str, Any] | None = None
    if msg.edns >= 0:
        edns = {
            "version": msg.edns,
            "do": bool(msg.ednsflags & dns.flags.DO),
            "payload": msg.payload if edns_payload else None,
            "options": sorted(f"{int(o.otype)}:{o.to_wire().hex()}" for o in msg.options),
        }
    return {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "opcode": dns.opcode.to_text(msg.opcode()),
        "flags": [f for f in FLAG_NAMES if msg.flags & getattr(dns.flags, f)],
        "question": sorted(
            f"{q.name.to_text().lower()} {dns.rdataclass.to_text(q.rdclass)} {dns.rdatatype.to_text(q.rdtype)}"
            for q in msg.question
        ),
        "answer": _rr_strings(answer, ttl=ttl),
        "authority": _rr_strings(authority, ttl=ttl),
        "additional": _rr_strings(extra, ttl=ttl),
        "edns": edns,
    }


def diff(
    a: dict[str, Any] | dns.message.Message,
    b: dict[str, Any] | dns.message.Message,
    names: tuple[str, str] = ("a", "b"),
) -> list[str]:
    """Human-readable differences between two normalized answers (empty if equal).

    Messages are normalized with the default switches first.
    """
    if isinstance(a, dns.message.Message):
        a = normalize(a)
    if isinstance(b, dns.message.Message):
        b = normalize(b)
    na, nb = names
    out: list[str] = []
    for key in sorted(set(a) | set(b), key=_key_order):
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if key in SECTIONS or key == "question" or key == "flags":
            only_a = [x for x in va or [] if x not in (vb or [])]
            only_b = [x for x in vb or [] if x not in (va or [])]
            for x in only_a:
                out.append(f"{key}: only {na}: {x}")
            for x in only_b:
                out.append(f"{key}: only {nb}: {x}")
            if not only_a and not only_b:  # same items, different multiplicity
                out.append(f"{key}: {na}={va} {nb}={vb}")
        elif key == "edns" and isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(set(va) | set(vb)):
                if va.get(sub) != vb.get(sub):
                    out.append(f"edns.{sub}: {na}={va.get(sub)!r} {nb}={vb.get(sub)!r}")
        else:
            out.append(f"{key}: {na}={va!r} {nb}={vb!r}")
    return out


def _key_order(key: str) -> tuple[int, str]:
    order = ("rcode", "opcode", "flags", "question", *SECTIONS, "edns")
    return (order.index(key) if key in order else len(order), key)
