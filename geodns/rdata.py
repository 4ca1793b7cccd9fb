"""Record types geodns serves, and their RDATA in wire form.

A record's RDATA (:data:`RData`) is its wire form itself when it holds no
domain name (:class:`Wire`: A, AAAA, TXT and most types, one object per
record), else a :class:`Parts`, which keeps it as a tuple of parts: plain
``bytes`` are copied as they are; :class:`Name` parts are domain names that
DNSSEC's canonical form lower-cases (RFC 4034 section 6.2), and of those the
:class:`CompressibleName` parts are the ones the encoder may compress (only
the RFC 1035 types allow that, RFC 3597 section 4).  Keeping the names apart
is what lets a signer canonicalise a record without parsing it again
(:meth:`Parts.canonical`); both kinds have ``parts``, ``target``, ``wire``
and ``canonical()``, and :func:`of` makes the right one.  Parsing functions take the operator's value
(already split out of YAML) and raise :class:`RDataError` with a reason; the
types whose presentation form is more than a few fields (DS, HTTPS, LOC,
...) are parsed in the control plane (:mod:`geodns.zones.values`), which
hands over the wire form.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from geodns import names
from geodns.errors import GeodnsError

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, DS, AXFR, IXFR, ANY, CAA = (
    1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 252, 251, 255, 257,
)
HINFO, RP, LOC, NAPTR, SSHFP, DNSKEY, TLSA, SMIMEA, CDS, CDNSKEY, OPENPGPKEY = (
    13, 17, 29, 35, 44, 48, 52, 53, 59, 60, 61,
)
SVCB, HTTPS, SPF, URI = 64, 65, 99, 256
# Records a signer makes: geodns will sign zones itself, so pre-signed ones
# are never served (half of a signature chain would make answers bogus).
RRSIG, NSEC, NSEC3, NSEC3PARAM, ZONEMD = 46, 47, 50, 51, 63
DNAME = 39

TYPE_BY_NAME = {
    "A": A, "NS": NS, "CNAME": CNAME, "SOA": SOA, "PTR": PTR, "MX": MX, "TXT": TXT,
    "AAAA": AAAA, "SRV": SRV, "CAA": CAA,
    "DS": DS, "DNSKEY": DNSKEY, "CDS": CDS, "CDNSKEY": CDNSKEY, "HTTPS": HTTPS, "SVCB": SVCB,
    "TLSA": TLSA, "SMIMEA": SMIMEA, "SSHFP": SSHFP, "NAPTR": NAPTR, "LOC": LOC, "URI": URI,
    "OPENPGPKEY": OPENPGPKEY, "HINFO": HINFO, "RP": RP, "SPF": SPF,
}
NAME_BY_TYPE = {v: k for k, v in TYPE_BY_NAME.items()} | {
    OPT: "OPT", AXFR: "AXFR", IXFR: "IXFR", ANY: "ANY", RRSIG: "RRSIG", NSEC: "NSEC",
    NSEC3: "NSEC3", NSEC3PARAM: "NSEC3PARAM", ZONEMD: "ZONEMD", DNAME: "DNAME",
}
SERVED_TYPES = frozenset(TYPE_BY_NAME.values())
MAX_TTL = 2**31 - 1  # RFC 2181 section 8
# Why a type can never be zone data here (any other type is served as it is
# written, in the RFC 3597 generic form when geodns has no name for it).
NOT_DATA = {
    0: "type 0 is reserved (RFC 6895)",
    OPT: "OPT is a pseudo-record of EDNS (RFC 6891), not zone data",
    249: "TKEY is a transaction record, not zone data",
    250: "TSIG is a transaction record, not zone data",
    DNAME: "DNAME is not supported: geodns does not synthesise CNAMEs from it",
    RRSIG: "RRSIG records are made by a signer; geodns does not serve pre-signed zones "
           "(it will sign zones itself)",
    NSEC: "NSEC records are made by a signer; geodns does not serve pre-signed zones",
    NSEC3: "NSEC3 records are made by a signer; geodns does not serve pre-signed zones",
    NSEC3PARAM: "NSEC3PARAM records are made by a signer; geodns does not serve pre-signed "
                "zones",
    ZONEMD: "ZONEMD is a digest of the zone as a signer wrote it; geodns does not serve it",
}


def not_data(rtype: int) -> str | None:
    """Why ``rtype`` cannot be zone data, or None when it can."""
    if 128 <= rtype <= 255:  # the query and meta types (RFC 6895 section 3.1)
        return f"{type_name(rtype)} is a query or meta type, not zone data"
    return NOT_DATA.get(rtype)


def type_name(rtype: int) -> str:
    return NAME_BY_TYPE.get(rtype, f"TYPE{rtype}")


def type_from_text(text: str) -> int | None:
    up = text.upper()
    if up in TYPE_BY_NAME:
        return TYPE_BY_NAME[up]
    for rtype, name in NAME_BY_TYPE.items():
        if name == up:
            return rtype
    if up.startswith("TYPE") and up[4:].isdigit() and int(up[4:]) < 65536:
        return int(up[4:])
    return None


class RDataError(GeodnsError, ValueError):
    pass


class Name(bytes):
    """A domain name inside RDATA that DNSSEC's canonical form lower-cases
    (RFC 4034 section 6.2: NS, CNAME, SOA, PTR, MX, RP, NAPTR, SRV, ...); it
    is never compressed unless it is a :class:`CompressibleName`."""


class CompressibleName(Name):
    """A domain name inside RDATA that the encoder may compress."""


class Wire(bytes):
    """The RDATA of a record with no domain name inside, as the bytes of its
    wire form: a :class:`Parts` of one part would be three objects (itself,
    its tuple and the bytes), and a large zone holds one per record."""

    __slots__ = ()
    target: ClassVar[None] = None  # (it points at no name)

    @property
    def parts(self) -> tuple[bytes, ...]:
        return (self,)

    @property
    def wire(self) -> bytes:
        return self

    def canonical(self) -> bytes:
        return self


@dataclass(frozen=True, slots=True)
class Parts:
    parts: tuple[bytes, ...]
    # The name this record points at (lower-cased wire form), for CNAME
    # chasing and additional-section processing.
    target: bytes | None = None

    @property
    def wire(self) -> bytes:
        return b"".join(self.parts)

    def canonical(self) -> bytes:
        """The RDATA in DNSSEC's canonical form (RFC 4034 section 6.2): names
        of the types listed there lower-cased, everything else as written.
        Two records of a set are the same record when these are equal."""
        parts = self.parts
        if len(parts) == 1 and type(parts[0]) is bytes:  # most records: no name inside
            return parts[0]
        return b"".join(p.lower() if isinstance(p, Name) else p for p in self.parts)


RData: TypeAlias = Wire | Parts


def of(parts: tuple[bytes, ...], target: bytes | None = None) -> RData:
    """The RDATA of these parts: a :class:`Wire` when it is one part with
    no name inside (and points nowhere), else a :class:`Parts`."""
    if len(parts) == 1 and target is None and not isinstance(parts[0], Name):
        return Wire(parts[0])
    return Parts(parts, target)


def _name(text: str, origin: bytes) -> bytes:
    try:
        return names.from_text(text, origin)
    except names.NameError_ as exc:
        raise RDataError(f"bad name {text!r}: {exc}") from None


def _canonical(family: socket.AddressFamily, text: str) -> bytes | None:
    """The packed address when ``text`` is already in the form the address
    is shown in (the usual case, checked in C); None: ask ipaddress."""
    try:
        packed = socket.inet_pton(family, text)
    except OSError:
        return None
    return packed if socket.inet_ntop(family, packed) == text else None


def a(text: str) -> RData:
    text = text.strip()
    packed = _canonical(socket.AF_INET, text)
    if packed is not None:
        return Wire(packed)
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise RDataError(f"{text!r} is not an IPv4 address") from None
    return Wire(addr.packed)


def aaaa(text: str) -> RData:
    text = text.strip()
    packed = _canonical(socket.AF_INET6, text)
    # inet_ntop and ipaddress show an address alike (RFC 5952) but for the
    # dotted forms inet_ntop gives ::ffff:0:0/96 and ::/96.
    if packed is not None and ("." not in text or str(ipaddress.IPv6Address(packed)) == text):
        return Wire(packed)
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        raise RDataError(f"{text!r} is not an IPv6 address") from None
    return Wire(addr.packed)


def name_rdata(text: str, origin: bytes) -> RData:
    """NS, CNAME and PTR: one compressible domain name."""
    wire = _name(text, origin)
    return Parts((CompressibleName(wire),), wire.lower())


def mx(preference: int, exchange: str, origin: bytes) -> RData:
    wire = _name(exchange, origin)
    return Parts(
        (struct.pack("!H", preference), CompressibleName(wire)),
        wire.lower(),
    )


def srv(priority: int, weight: int, port: int, target: str, origin: bytes) -> RData:
    wire = _name(target, origin)
    # RFC 2782: the target must not be compressed.
    return Parts(
        (struct.pack("!HHH", priority, weight, port), Name(wire)),
        wire.lower() if wire != names.ROOT else None,
    )


def txt(strings: list[bytes]) -> RData:
    """TXT from character-strings; each over 255 bytes is split (RFC 1035 3.3)."""
    chunks: list[bytes] = []
    for s in strings:
        if not s:
            chunks.append(b"")
        for i in range(0, len(s), 255):
            chunks.append(s[i : i + 255])
    if not chunks:
        chunks = [b""]
    wire = b"".join(bytes((len(c),)) + c for c in chunks)
    if len(wire) > 65535:
        raise RDataError(f"TXT record is {len(wire)} bytes, over the 65535-byte RDATA limit")
    return Wire(wire)


_CAA_TAG = re.compile(r"^[A-Za-z0-9]{1,255}$")


def caa(flags: int, tag: str, value: bytes) -> RData:
    if not _CAA_TAG.match(tag):
        raise RDataError(f"CAA tag {tag!r} must be letters and digits (RFC 8659)")
    raw = tag.encode("ascii")
    return Wire(bytes((flags, len(raw))) + raw + value)


def soa(mname: str, rname: str, serial: int, refresh: int, retry: int, expire: int,
        minimum: int, origin: bytes) -> RData:
    m = _name(mname, origin)
    r = _name(rname, origin)
    return Parts(
        (CompressibleName(m), CompressibleName(r),
         struct.pack("!IIIII", serial, refresh, retry, expire, minimum)),
    )


def split_fields(text: str, count: int) -> list[str]:
    """Split presentation text into ``count`` fields; the last keeps the rest
    of the line, with surrounding double quotes removed."""
    parts = text.strip().split(None, count - 1)
    if len(parts) != count:
        raise RDataError(f"expected {count} fields in {text!r}")
    last = parts[-1]
    if len(last) >= 2 and last[0] == '"' and last[-1] == '"':
        parts[-1] = last[1:-1]
    return parts


def parse_int(text: str, what: str, hi: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RDataError(f"{what} {text!r} is not a number") from None
    if not 0 <= value <= hi:
        raise RDataError(f"{what} {value} is out of range (0..{hi})")
    return value
