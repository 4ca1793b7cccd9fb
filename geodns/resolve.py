"""Authoritative resolution over the zone model: RFC 1034 4.3.2 with RFC 4592
wildcards, RFC 2308 negative answers, RFC 6604 CNAME chains and RFC 8482
minimal ANY.

Theory of operation: this module decides *what* an answer contains; it never
sees bytes.  It runs when zones are compiled (and for rare query shapes
that the compiler did not pre-build), never per query on the hot path.
Each :class:`Resolution` lists records whose owner is either a wire name
or :data:`QNAME`, meaning "the name in the question": answers for the
question's own name (and wildcard synthesis) always use the question's
bytes, so the client sees the case it asked with.

Steered record sets take part like any other data, but what they hold
depends on the client, so resolution stops where one is reached: the
:class:`Resolution` holds the static records so far and, in ``steer``, the
:class:`SteerPoint` that the rest depends on (the question's own steered
record set, or one that a CNAME chain leads to).  When a steered CNAME's
chosen target is in the zone, :meth:`ZoneIndex.after` resolves what
follows it, which may reach another steered record set: the answer then
rests on two decisions for the same client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final, NamedTuple

from geodns import names
from geodns.rdata import (
    AAAA,
    ANY,
    CNAME,
    DS,
    HTTPS,
    MX,
    NS,
    SOA,
    SRV,
    SVCB,
    A,
    RData,
)
from geodns.steering import SteerSpec
from geodns.zones.model import RRset, Types, Zone


class Rcode(IntEnum):
    """The response codes geodns answers with (RFC 1035, RFC 2136, RFC 6891)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    NOTAUTH = 9
    BADVERS = 16  # extended: the low four bits go in the header, the rest in the OPT
    BADCOOKIE = 23  # extended too (RFC 7873)


NOERROR, FORMERR, SERVFAIL, NXDOMAIN = Rcode.NOERROR, Rcode.FORMERR, Rcode.SERVFAIL, Rcode.NXDOMAIN
NOTIMP, REFUSED, NOTAUTH, BADVERS = Rcode.NOTIMP, Rcode.REFUSED, Rcode.NOTAUTH, Rcode.BADVERS
BADCOOKIE = Rcode.BADCOOKIE
# Names for the metrics and the query log (keys compare equal to plain ints).
RCODE_NAMES: dict[int, str] = {r: r.name for r in Rcode}


class AnswerKind(StrEnum):
    """What an answer is, for explain, logs and the truncation rule (a
    referral keeps its glue)."""

    ANSWER = "answer"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    REFERRAL = "referral"
    WILDCARD = "wildcard"
    CNAME = "cname"
    STEERED = "steered"
    REFUSED = "refused"
    NOTIMP = "notimp"
    NOTAUTH = "notauth"
    CHAOS = "chaos"


QNAME: Final = b""  # owner placeholder: "the question's name" (never a valid wire name)
MAX_CNAME_CHAIN = 12
# Stands for every query type no record set can have (the types geodns does
# not serve): they all resolve alike.  Type 0 is reserved (RFC 6895).
OTHER_TYPES: Final = 0
_MEMO_AFTER = 4096

# Types whose targets get their addresses added to the additional section.
_ADDITIONAL_FOR = frozenset({NS, MX, SRV, SVCB, HTTPS})
# RFC 8482: the one RRset we return for ANY, in this order of preference.
_ANY_PREFERENCE = (CNAME, A, AAAA, MX, NS, SOA)
_NO_STEERED: Mapping[int, SteerSpec] = {}  # (never changed)


class Record(NamedTuple):
    """One record of an answer.  (A named tuple: a zone's compile makes one
    per record, in a third of a frozen dataclass's time.)"""

    owner: bytes  # wire name, or QNAME
    rtype: int
    ttl: int
    rdata: RData


@dataclass(frozen=True, slots=True)
class SteerPoint:
    """Where an answer continues with a steered record set: its owner
    (:data:`QNAME` for the question's own name, else as the zone spells
    it), its spec, and the question's type."""

    owner: bytes
    spec: SteerSpec
    qtype: int

    @property
    def follows(self) -> bool:
        """A steered CNAME is followed to its chosen target, except for the
        types that answer with the CNAME itself."""
        return self.spec.rtype == CNAME and self.qtype not in (CNAME, ANY)


@dataclass
class Resolution:
    rcode: Rcode = NOERROR
    aa: bool = True
    answer: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)
    kind: AnswerKind = AnswerKind.ANSWER
    # Set when the rest of the answer depends on the client: the answer so
    # far is ``answer``; authority and additional are empty.
    steer: SteerPoint | None = None


def rrset_records(rrset: RRset, owner: bytes | None = None, ttl: int | None = None) -> list[Record]:
    own = rrset.owner if owner is None else owner
    t = rrset.ttl if ttl is None else ttl
    return [Record(own, rrset.rtype, t, rd) for rd in rrset.rdatas]


class ZoneIndex:
    """Derived facts about one zone that resolution needs: empty
    non-terminals and delegation points."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.steered = zone.steered
        self.cuts = zone.delegations()
        self._after: dict[tuple[bytes, int], Resolution] = {}
        ents: set[bytes] = set()
        below = len(zone.origin) + 1
        for owner in zone.nodes:
            if len(owner) - owner[0] <= below:
                continue  # (a child of the apex, or the apex: no name between)
            anc = names.parent(owner)
            while anc != zone.origin and len(anc) > len(zone.origin):
                if anc not in zone.nodes:
                    ents.add(anc)
                anc = names.parent(anc)
        self.ents = ents

    def exists(self, name: bytes) -> bool:
        return name in self.zone.nodes or name in self.ents

    def cut_above(self, name: bytes) -> bytes | None:
        """The highest delegation point at or above ``name`` (below the apex)."""
        if not self.cuts:
            return None
        found = None
        anc = name
        origin = self.zone.origin
        while len(anc) > len(origin):
            if anc in self.cuts:
                found = anc
            anc = names.parent(anc)
        return found

    def closest_encloser(self, name: bytes) -> bytes:
        anc = name
        while not self.exists(anc) and anc != self.zone.origin:
            anc = names.parent(anc)
        return anc

    # ---------------------------------------------------------------------
    def soa_authority(self) -> list[Record]:
        zone = self.zone
        return rrset_records(zone.soa, owner=zone.soa.owner, ttl=zone.negative_ttl)

    def addresses_for(self, targets: list[bytes], same: RRset | None = None) -> list[Record]:
        """The in-zone addresses of ``targets``; for the targets of an SVCB or
        HTTPS set (``same``), also their own set of that type (RFC 9460 4.2,
        as Knot sends it)."""
        out: list[Record] = []
        seen = set()
        types: tuple[int, ...] = (A, AAAA) if same is None else (A, AAAA, same.rtype)
        for t in targets:
            if t in seen or not names.is_subdomain(t, self.zone.origin):
                continue
            seen.add(t)
            node = self.zone.nodes.get(t)
            if not node:
                continue
            for rtype in types:
                if rtype in node and node[rtype] is not same:
                    out.extend(rrset_records(node[rtype]))
        return out

    def referral(self, cut: bytes) -> Resolution:
        ns = self.zone.nodes[cut][NS]
        glue = self.addresses_for([rd.target for rd in ns.rdatas if rd.target])
        return Resolution(NOERROR, aa=False, authority=rrset_records(ns), additional=glue,
                          kind=AnswerKind.REFERRAL)

    def nxdomain(self) -> Resolution:
        return Resolution(NXDOMAIN, authority=self.soa_authority(), kind=AnswerKind.NXDOMAIN)

    def nodata(self) -> Resolution:
        return Resolution(NOERROR, authority=self.soa_authority(), kind=AnswerKind.NODATA)

    # ---------------------------------------------------------------------
    def resolve(self, qname: bytes, qtype: int) -> Resolution:
        """Answer ``qname`` (lower-cased wire, inside this zone) for ``qtype``."""
        return self._resolve(qname, qtype, owner=QNAME, depth=0, seen=set())

    def wildcard(self, encloser: bytes, qtype: int) -> Resolution:
        """Answer a name that the wildcard below ``encloser`` synthesises."""
        wild = b"\x01*" + encloser
        return self._from_node(self.zone.nodes[wild], qtype, QNAME, 0, set(),
                               AnswerKind.WILDCARD, self.steered.get(wild))

    def after(self, target: bytes, qtype: int) -> Resolution | None:
        """What follows a steered CNAME whose chosen target is ``target``
        (lower-cased wire): the target's records for ``qtype``, as a static
        CNAME's are followed; None when the target is outside the zone.
        Memoised: the targets are the steered records' own, a bounded set.
        The result is shared: read it, never change it."""
        if not names.is_subdomain(target, self.zone.origin):
            return None
        key = (target, qtype)
        res = self._after.get(key)
        if res is None:
            res = self._resolve(target, qtype, owner=self._owner_of(target), depth=1,
                                seen={target})
            if len(self._after) < _MEMO_AFTER:
                self._after[key] = res
        return res

    def _resolve(self, qname: bytes, qtype: int, owner: bytes, depth: int,
                 seen: set[bytes]) -> Resolution:
        cut = self.cut_above(qname)
        if cut is not None:
            if qname == cut and qtype == DS:
                # The parent side of a cut answers DS, authoritatively (RFC 4035 3.1.4.1).
                ds = self.zone.nodes[cut].get(DS)
                return self.nodata() if ds is None else self._positive(ds, owner,
                                                                        AnswerKind.ANSWER)
            return self.referral(cut)
        node = self.zone.nodes.get(qname)
        if node is not None or qname in self.ents:
            return self._from_node(node or {}, qtype, owner, depth, seen, AnswerKind.ANSWER,
                                   self.steered.get(qname))
        ce = self.closest_encloser(qname)
        wildname = b"\x01*" + ce
        wild = self.zone.nodes.get(wildname)
        if wild is not None:
            return self._from_node(wild, qtype, owner, depth, seen, AnswerKind.WILDCARD,
                                   self.steered.get(wildname))
        return self.nxdomain()

    def _from_node(self, node: Types, qtype: int, owner: bytes, depth: int,
                   seen: set[bytes], kind: AnswerKind,
                   steered: dict[int, SteerSpec] | None = None) -> Resolution:
        steer: Mapping[int, SteerSpec] = steered or _NO_STEERED
        if qtype == ANY:
            for t in _ANY_PREFERENCE:
                if t in node:
                    return self._positive(node[t], owner, kind)
            if node:
                return self._positive(node[min(node)], owner, kind)
            for t in _ANY_PREFERENCE:  # only steered data here: the first of it
                if t in steer:
                    return self._steered(owner, steer[t], qtype)
            return self.nodata()
        if qtype in node:
            return self._positive(node[qtype], owner, kind)
        if qtype in steer:
            return self._steered(owner, steer[qtype], qtype)
        if CNAME in steer:
            return self._steered(owner, steer[CNAME], qtype)
        if CNAME in node:
            cname = node[CNAME]
            first = rrset_records(cname, owner=owner)
            target = cname.rdatas[0].target
            assert target is not None
            if (depth >= MAX_CNAME_CHAIN or target in seen
                    or not names.is_subdomain(target, self.zone.origin)):
                return Resolution(NOERROR, answer=first, kind=AnswerKind.CNAME)
            seen.add(target)
            rest = self._resolve(target, qtype, owner=self._owner_of(target), depth=depth + 1,
                                 seen=seen)
            rest.answer[:0] = first
            rest.kind = AnswerKind.CNAME
            if not rest.aa:
                # A chain into a delegation: the CNAME itself is authoritative.
                rest.aa = True
            return rest
        return self.nodata()

    def _owner_of(self, name: bytes) -> bytes:
        """The owner name as the zone spells it, for records reached by a
        CNAME (only the question name takes the question's case)."""
        node = self.zone.nodes.get(name)
        if node:
            return next(iter(node.values())).owner
        steered = self.steered.get(name)
        if steered:
            return next(iter(steered.values())).owner
        return name

    @staticmethod
    def _steered(owner: bytes, spec: SteerSpec, qtype: int) -> Resolution:
        return Resolution(NOERROR, kind=AnswerKind.STEERED, steer=SteerPoint(owner, spec, qtype))

    def _positive(self, rrset: RRset, owner: bytes, kind: AnswerKind) -> Resolution:
        res = Resolution(NOERROR, answer=rrset_records(rrset, owner=owner), kind=kind)
        if rrset.rtype in _ADDITIONAL_FOR:
            res.additional = self.addresses_for(
                [rd.target for rd in rrset.rdatas if rd.target is not None],
                rrset if rrset.rtype in (SVCB, HTTPS) else None)
        return res
