"""RDATA in presentation form, through dnspython: the types whose text is more
than a few fields (DS, DNSKEY, HTTPS with its SvcParams, LOC, NAPTR, ...)
and any type in the RFC 3597 generic form (``\\# 4 0a000001``).

dnspython's parsers check each type's fields (digest lengths, SvcParam keys,
LOC ranges, base64 and hex) in the control plane; what the data plane gets
is an :class:`~geodns.rdata.RData` whose names are marked where DNSSEC's
canonical form lower-cases them (RP, NAPTR: RFC 4034 section 6.2) and never
compressed (RFC 3597 section 4).  The data plane never imports dnspython
(tests/test_structure.py).
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.RP
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.svcbbase

from geodns import names, rdata
from geodns.rdata import NAPTR, RP, Name, RData, RDataError

# The types this module parses by name (the others geodns names have their
# own small parsers in geodns.rdata).
BY_PRESENTATION = frozenset({
    rdata.DS, rdata.DNSKEY, rdata.CDS, rdata.CDNSKEY, rdata.HTTPS, rdata.SVCB, rdata.TLSA,
    rdata.SMIMEA, rdata.SSHFP, NAPTR, rdata.LOC, rdata.URI, rdata.OPENPGPKEY, rdata.HINFO,
    RP,
})


def dns_origin(origin: bytes) -> dns.name.Name:
    """A geodns wire name as a dnspython name."""
    return dns.name.Name([*names.labels(origin), b""])


def from_text(rtype: int, text: str, origin: bytes) -> RData:
    """One value of ``rtype`` in its zone-file form; relative names are
    relative to ``origin``.  A type geodns has no name for takes only the
    generic form (RFC 3597 section 5)."""
    generic = text.lstrip().startswith("\\#")
    if rtype not in BY_PRESENTATION and not generic:
        raise RDataError(f"write a {rdata.type_name(rtype)} value in the generic form "
                         "of RFC 3597: '\\# LENGTH HEX', such as '\\# 4 0a000001'")
    try:
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rtype), text, origin=dns_origin(origin),
                                 relativize=False)
    except dns.exception.DNSException as exc:
        raise RDataError(_reason(exc, text)) from None
    except Exception as exc:  # dnspython's parsers raise more than DNSException
        raise RDataError(f"{text!r}: {exc}") from None
    return from_dnspython(rd, generic=rtype not in BY_PRESENTATION)


def _reason(exc: dns.exception.DNSException, text: str) -> str:
    msg = str(exc)
    if msg in ("", "Text input is malformed."):
        return f"{text!r} is malformed"
    return f"{text!r}: {msg}"


def from_dnspython(rd: Any, generic: bool = False) -> RData:
    """A dnspython rdata as ours: the names that canonical form lower-cases
    kept apart; ``generic`` shows it in the RFC 3597 form."""
    if isinstance(rd, dns.rdtypes.IN.NAPTR.NAPTR):
        repl = rd.replacement.to_wire()
        assert repl is not None
        whole = rd.to_wire()
        assert whole is not None
        head = whole[: -len(repl)]
        parts: tuple[bytes, ...] = (head, Name(repl))
    elif isinstance(rd, dns.rdtypes.ANY.RP.RP):
        parts = (Name(rd.mbox.to_wire()), Name(rd.txt.to_wire()))
    else:
        parts = (rd.to_wire(),)
    wire = b"".join(parts)
    if len(wire) > 65535:
        raise RDataError(f"the record is {len(wire)} bytes, over the 65535-byte RDATA limit")
    if generic:
        return rdata.of(parts)
    target = None
    if isinstance(rd, dns.rdtypes.svcbbase.SVCBBase) and rd.target != dns.name.root:
        # Its addresses go in the additional section, as Knot and NSD send them.
        target = rd.target.to_wire()
        assert target is not None
        target = target.lower()
    return rdata.of(parts, target)
