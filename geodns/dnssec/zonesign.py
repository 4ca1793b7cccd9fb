"""A signed zone's DNSSEC records: the DNSKEY set, signatures of every
record set an answer carries, and an NSEC chain for denial of existence.

Theory of operation.  :func:`with_keys` adds the DNSKEY set (and CDS and
CDNSKEY for keys that ask) to a zone's apex when it is loaded, so they are
served and resolved as any other record.  At compile time a
:class:`ZoneSigning` holds the zone's :class:`~geodns.dnssec.signer.Signer`
and its NSEC chain: every name that owns data in the zone (delegation
points included; glue and empty non-terminals not), in DNSSEC's canonical
order, each with an NSEC record naming the next and the types it owns, all
signed then (docs/dnssec.md says why NSEC and not NSEC3 or compact denial).

:meth:`ZoneSigning.signed` turns an answer's records into the same records
with their RRSIGs after each record set (what a query with DO gets), and
the ``*_proof`` methods give the NSEC records (signed) that prove a name or
a type absent.  Answers whose proof depends on the question name (a name
that does not exist, a wildcard's synthesis) get a
:class:`geodns.compile.Proof`: the data plane gives it the name, it finds
the covering NSEC (:meth:`ZoneSigning.covering`, a binary search over the
chain's keys) and returns an answer built once per pair of chain intervals
and kept.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from typing import Any

from geodns import names
from geodns.dnssec.settings import ZoneKey
from geodns.dnssec.signer import Signer
from geodns.rdata import CDNSKEY, CDS, CNAME, DNSKEY, DS, NS, NSEC, RRSIG, Name, Parts, RData, Wire
from geodns.resolve import QNAME, Record, ZoneIndex
from geodns.zones.model import RRset, Zone


def with_keys(zone: Zone, keys: Sequence[ZoneKey]) -> Zone:
    """The zone with its DNSKEY set at the apex (and CDS and CDNSKEY for
    the keys with ``cds: true``), TTL the SOA's (as Knot's default)."""
    ttl = zone.soa.ttl
    origin = zone.soa.owner
    dnskeys = tuple(Wire(k.key.dnskey) for k in keys)
    apex = dict(zone.nodes[zone.origin])
    apex[DNSKEY] = RRset(origin, DNSKEY, ttl, dnskeys)
    published = [k for k in keys if k.cds]
    if published:
        apex[CDS] = RRset(origin, CDS, ttl, tuple(
            ds_rdata(zone.origin, k.key.dnskey) for k in published))
        apex[CDNSKEY] = RRset(origin, CDNSKEY, ttl, tuple(
            Wire(k.key.dnskey) for k in published))
    nodes = dict(zone.nodes)
    nodes[zone.origin] = apex
    return Zone(zone.origin, zone.file, zone.default_ttl, nodes, zone.steered, zone.dnssec,
                tuple(keys))


def dnskey_text(dnskey: bytes) -> str:
    flags, protocol, algorithm = struct.unpack("!HBB", dnskey[:4])
    return f"{flags} {protocol} {algorithm} {base64.b64encode(dnskey[4:]).decode()}"


# DS digest types (RFC 4509, RFC 6605) by number: the two a parent is asked for.
DS_DIGESTS = {2: hashlib.sha256, 4: hashlib.sha384}


def ds_rdata(owner: bytes, dnskey: bytes, digest_type: int = 2) -> RData:
    """The DS of a DNSKEY, for the parent: SHA-256 (digest type 2) unless
    ``digest_type`` is 4 (SHA-384)."""
    from geodns.dnssec.keys import key_tag

    digest = DS_DIGESTS[digest_type](owner.lower() + dnskey).digest()
    tag, algorithm = key_tag(dnskey), dnskey[3]
    return Wire(struct.pack("!HBB", tag, algorithm, digest_type) + digest)


def ds_text(ds: RData) -> str:
    """A DS record's RDATA in presentation form (RFC 4034 section 5.3)."""
    wire = ds.wire
    tag, algorithm, digest_type = struct.unpack("!HBB", wire[:4])
    return f"{tag} {algorithm} {digest_type} {wire[4:].hex().upper()}"


def type_bitmap(types: set[int]) -> bytes:
    """RFC 4034 4.1.2: the types, as windows of bits."""
    out = bytearray()
    for window in sorted({t >> 8 for t in types}):
        bits = bytearray(32)
        for t in types:
            if t >> 8 == window:
                bits[(t & 0xFF) >> 3] |= 0x80 >> (t & 7)
        used = max(i for i, b in enumerate(bits) if b) + 1
        out += bytes((window, used)) + bits[:used]
    return bytes(out)


class ZoneSigning:
    """One zone's signer and NSEC chain, for one build (module text)."""

    def __init__(self, zone: Zone, index: ZoneIndex, signer: Signer) -> None:
        self.zone = zone
        self.index = index
        self.signer = signer
        self.nsec_ttl = zone.negative_ttl  # RFC 9077: as the SOA's negative TTL
        self.nodata_resolution = index.nodata()  # shared by every name's NODATA
        # The zone's unsigned NODATA and NXDOMAIN templates (set by the
        # compiler): a name's own signed forms replace them on first use.
        self.templates: tuple[Any, Any] = (None, None)
        chain = [n for n in zone.nodes if index.cut_above(n) in (None, n)]
        chain.sort(key=names.canonical_key)
        self.names = chain
        # The chain's names in canonical order, searched per query with DO.
        self.chain = names.CanonicalIndex([names.canonical_key(n) for n in chain])
        self.position = {n: i for i, n in enumerate(chain)}
        self._nsec: list[list[Record]] = []
        self._types: list[set[int]] = []
        self._without: dict[tuple[int, int], list[Record]] = {}
        for i, name in enumerate(chain):
            nxt = chain[(i + 1) % len(chain)]
            types = set(zone.nodes[name]) | set(zone.steered.get(name, {})) | {NSEC, RRSIG}
            if name != zone.origin and name in index.cuts:
                types &= {NS, DS, NSEC, RRSIG}
            self._types.append(types)
            rd = Parts((Name(nxt), type_bitmap(types)))
            rec = Record(name, NSEC, self.nsec_ttl, rd)
            self._nsec.append([rec, *self._sigs(name, NSEC, self.nsec_ttl, [rd])])

    def _sigs(self, owner: bytes, rtype: int, ttl: int, rdatas: Sequence[RData],
              shown: bytes | None = None) -> list[Record]:
        return [Record(shown if shown is not None else owner, RRSIG, ttl, sig)
                for sig in self.signer.rrsigs(owner, rtype, ttl, rdatas)]

    # -- signatures -------------------------------------------------------------
    def authoritative(self, owner: bytes, rtype: int) -> bool:
        """Whether a record set is signed here: not at or below a cut
        (delegation NS and glue are the child's), except the DS set."""
        cut = self.index.cut_above(owner)
        return cut is None or (owner == cut and rtype == DS)

    def signed(self, records: Sequence[Record], qname: bytes | None,
               wild: bytes | None = None) -> list[Record]:
        """``records`` with the RRSIGs of each record set after it.  Owners
        written :data:`QNAME` are the question name (``qname``), or in a
        wildcard's synthesis the wildcard (``wild``), which is what is
        signed."""
        out: list[Record] = []
        i = 0
        while i < len(records):
            rec = records[i]
            j = i + 1
            while j < len(records) and records[j].owner == rec.owner and \
                    records[j].rtype == rec.rtype:
                j += 1
            out += records[i:j]
            owner = rec.owner if rec.owner != QNAME else (wild if wild is not None else qname)
            if owner is not None and rec.rtype != RRSIG and \
                    self.authoritative(owner.lower(), rec.rtype):
                out += self._sigs(owner.lower(), rec.rtype, rec.ttl,
                                  [r.rdata for r in records[i:j]], shown=rec.owner)
            i = j
        return out

    # -- denial of existence ------------------------------------------------------
    def covering(self, name: bytes) -> int:
        """The chain entry whose NSEC covers (or matches) ``name``."""
        return self.chain.cover(name)

    def nsec(self, i: int) -> list[Record]:
        return self._nsec[i]

    def nodata_proof(self, name: bytes, steered: int | None = None) -> list[Record]:
        """The name exists without the type: its NSEC (an empty
        non-terminal: the NSEC that covers it).  ``steered``: a steered
        type the name has, answered NODATA this time (an ``all_down``
        policy): an NSEC without that type, signed once and kept."""
        i = self.position.get(name)
        if i is None:
            return self._nsec[self.covering(name)]
        if steered is None:
            return self._nsec[i]
        got = self._without.get((i, steered))
        if got is None:
            nsec = self._nsec[i][0]
            nxt = nsec.rdata.parts[0]
            types = self._types[i] - {steered}
            rd = Parts((nxt, type_bitmap(types)))
            got = [Record(name, NSEC, self.nsec_ttl, rd),
                   *self._sigs(name, NSEC, self.nsec_ttl, [rd])]
            self._without[(i, steered)] = got
        return got

    def nxdomain_proof(self, name: bytes, encloser: bytes) -> list[Record]:
        """No such name, and no wildcard at its closest encloser."""
        return self._pair(self.covering(name), self.covering(b"\x01*" + encloser))

    def _pair(self, i: int, j: int) -> list[Record]:
        return self._nsec[i] if i == j else self._nsec[i] + self._nsec[j]

    def final_name(self, answer: Sequence[Record], qname: bytes) -> bytes:
        """Where an answer's CNAME chain ends (the question name if none)."""
        for rec in reversed(answer):
            if rec.rtype == CNAME and rec.rdata.target is not None:
                return rec.rdata.target
        return qname


__all__ = ["DS_DIGESTS", "ZoneSigning", "dnskey_text", "ds_rdata", "ds_text", "type_bitmap", "with_keys"]
