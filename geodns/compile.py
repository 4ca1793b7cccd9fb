"""Zones -> wire-format answer tables, built once per load.

Theory of operation: a DNS response is ``ID | flags | counts | question |
sections``.  Everything after the question depends only on (name, type)
and on whether the query had EDNS, so we encode it here, once, and the hot
path (:mod:`geodns.wire`) glues the query's ID and question to the
pre-built bytes.  The question sits at offset 12 in every response, so a
body encoded for a given question name can point (compress) into it: owner
names of the question's own records become the two bytes ``C0 0C``, which
also gives the client back the case it used.

Two kinds of pre-built answer exist:

* *exact* answers, for names that exist in a zone: encoded for that name,
  fully compressed, and looked up with one dict access on the hot path;
* *templates*, for answers whose question name is not known in advance
  (NXDOMAIN, wildcard synthesis, referrals below a cut): they never point
  into the question except with ``C0 0C``, so they fit any question.

Rare shapes (a qtype nobody pre-built behind a CNAME) are resolved and
encoded on first use and memoised per node, within bounds.  The usual
names of a zone (their own records, nothing below them) share one node per
set of types: the node holds nothing of the name's own.

An answer that depends on the client is a :class:`Steered` entry instead:
the static records that lead to a steered record set (a CNAME chain, or
nothing), that record set, and what follows a steered CNAME's chosen target
in the zone.  Its bytes are built per combination of decisions, on first
use, and kept.
"""

from __future__ import annotations

import functools
import itertools
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from geodns import names, rdata
from geodns.counters import LABELS
from geodns.dnssec.signer import Signer
from geodns.dnssec.zonesign import ZoneSigning
from geodns.rdata import (
    AAAA,
    ANY,
    CAA,
    CNAME,
    DS,
    HTTPS,
    MX,
    NS,
    NSEC,
    PTR,
    RRSIG,
    SOA,
    SRV,
    SVCB,
    TXT,
    A,
    CompressibleName,
    RData,
    Wire,
)
from geodns.resolve import (
    _ADDITIONAL_FOR,
    NOERROR,
    NOTAUTH,
    NOTIMP,
    NXDOMAIN,
    OTHER_TYPES,
    QNAME,
    REFUSED,
    SERVFAIL,
    AnswerKind,
    Rcode,
    Record,
    Resolution,
    SteerPoint,
    ZoneIndex,
)
from geodns.steering import USE, Decision, Outcome, SteerSpec
from geodns.zones.model import One, Packed, RRset, Types, Zone, packable

CLASS_IN = 1
_QTC_IN = b"\x00\x01"
MEMO_PER_NODE = 64
MEMO_SHARED = 4096  # the same, for a node the usual names of a zone share
MAX_PROOFS = 65536  # answers kept per Proof (one per pair of NSEC chain intervals)
MAX_VARIANTS = 4096  # answers kept per Steered entry (one per combination of outcomes)
DEFAULT_UDP_PAYLOAD = 1232


def opt_record(payload: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT pseudo-RR: root owner, version 0, the given options."""
    return struct.pack("!BHHBBHH", 0, 41, payload, ext_rcode, 0, 0x8000 if do else 0,
                       len(options)) + options


@functools.lru_cache(maxsize=4096)
def _heads(rcode: int, aa: bool, an: int, ns: int, ar: int) -> tuple[bytes, ...]:
    """The four headers after the ID (without and with EDNS, RD clear and
    set): made once for each shape and shared by every answer of it."""
    heads = []
    for edns in (0, 1):
        for rd in (0, 1):
            flags = 0x8000 | (0x0400 if aa else 0) | (0x0100 if rd else 0) | (rcode & 0xF)
            heads.append(struct.pack("!HHHHH", flags, 1, an, ns, ar + edns))
    return tuple(heads)


@functools.lru_cache(maxsize=64)
def _opt(payload: int, do: bool, options: bytes) -> bytes:
    """Our OPT record, one object for each shape: every answer's tails
    share it (:data:`Tails`)."""
    return opt_record(payload, do, options=options)


# What follows the question in a response, as two pieces each way so that
# no answer keeps a copy of its body per EDNS form: ``(body, opt, do_body,
# do_opt)``.  The response after the question is ``body`` without EDNS,
# ``body + opt`` with EDNS and no DO, ``do_body + do_opt`` with DO.  For a
# pre-built answer ``do_body is body`` and the OPTs are :func:`_opt`'s
# shared objects, so the answer holds no bytes of its own but its body;
# an answer sent only with DO (a signed form) has the DO OPT in both
# places.  An ECS echo (:func:`geodns.ecs.tails`) puts the echo in both
# OPTs, and a signed form's body as ``do_body``: a query with DO gets that
# form.  The C data plane (geodns/_plane.c) reads the same four.
Tails = tuple[bytes, bytes, bytes, bytes]


# RFC 8914 Extended DNS Error 20, "Not Authoritative", as Knot and NSD send with REFUSED.
EDE_NOT_AUTHORITATIVE = struct.pack("!HHH", 15, 2, 20)


class _Encoder:
    """Writes resource records after a question, compressing names.

    With ``qname`` given, offsets are absolute and names may point anywhere
    earlier in the message.  Without it (templates) the question's length
    is unknown, so the only pointer used is ``C0 0C`` for :data:`QNAME`.
    """

    def __init__(self, qname: bytes | None) -> None:
        self.buf = bytearray()
        self.table: dict[bytes, int] = {}
        self.base: int | None = None
        # The question's names, put in the table when a name is first
        # compressed (most answers hold none but the question's own, C0 0C).
        self.qname = qname
        if qname is not None:
            self.base = 12 + len(qname) + 4

    def name(self, wire: bytes, compress: bool) -> None:
        if wire == QNAME:
            self.buf += b"\xc0\x0c"
            return
        if self.base is None or not compress:
            self.buf += wire
            return
        if self.qname is not None:
            pos = 12
            for suffix in names.suffixes(self.qname)[:-1]:
                self.table[suffix] = pos
                pos += suffix[0] + 1
            self.qname = None
        low = wire.lower()
        i = 0
        while wire[i]:
            ptr = self.table.get(low[i:])
            if ptr is not None:
                self._remember(low, i)
                self.buf += wire[:i]
                self.buf += struct.pack("!H", 0xC000 | ptr)
                return
            i += wire[i] + 1
        self._remember(low, i)
        self.buf += wire

    def _remember(self, low: bytes, upto: int) -> None:
        assert self.base is not None
        start = self.base + len(self.buf)
        i = 0
        while i < upto:
            if start + i < 0x4000:
                self.table.setdefault(low[i:], start + i)
            i += low[i] + 1

    def record(self, rec: Record) -> None:
        self.name(rec.owner, compress=True)
        self.buf += struct.pack("!HHI", rec.rtype, CLASS_IN, rec.ttl)
        at = len(self.buf)
        self.buf += b"\x00\x00"
        for part in rec.rdata.parts:
            if isinstance(part, CompressibleName):
                self.name(part, compress=True)
            else:
                self.buf += part
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


class Answer:
    """A pre-built response for one (question name or template, type).

    ``heads[i]`` is the 10 bytes after the ID (flags, QDCOUNT, AN/NS/AR
    counts) for ``i = edns*2 + rd`` (RD is copied from the query; CD is not,
    as neither Knot nor NSD copies it); ``tails`` is everything after the
    question, in two pieces for each EDNS form (:data:`Tails`).
    ``smaller`` is the same answer without the additional section, used
    when the full one does not fit in a UDP response.  ``signed`` is what
    a query with DO gets: None for this answer itself in a zone without DNSSEC, the
    same answer with its signatures and proofs in a signed one, or a
    :class:`~geodns.dnssec.zonesign.Proof` when the proof depends on the
    question name (the sign stage, :meth:`geodns.wire.Responder.sign`).
    """

    __slots__ = ("aa", "cid", "heads", "kind", "rcode", "signed", "smaller", "tails", "zone")
    steered = False  # see Steered

    def __init__(self, rcode: Rcode, aa: bool, counts: tuple[int, int, int], body: bytes,
                 kind: AnswerKind, zone: str, payload: int, smaller: Answer | None = None,
                 options: bytes = b"", do_only: bool = False) -> None:
        self.rcode = rcode
        self.aa = aa
        self.kind = kind
        self.zone = zone
        self.cid = LABELS.cid((zone, rcode))  # what the query counters are keyed on
        self.smaller = smaller
        an, ns, ar = counts
        self.heads = _heads(rcode, aa, an, ns, ar)
        do = _opt(payload, True, options)
        # A signed form is only sent with DO: its OPT without DO is never sent.
        self.tails: Tails = (body, do if do_only else _opt(payload, False, options), body, do)
        # None: the same bytes with DO (never ``self``: an answer would be a
        # reference cycle, freed only by the cyclic collector).
        self.signed: Answer | Proof | None = None

    def sharing(self, signed: Answer | Proof | None) -> Answer:
        """This answer's bytes in another object, whose signed form is
        ``signed`` (a name's own NODATA, where unsigned zones share one)."""
        twin = object.__new__(Answer)
        for slot in Answer.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin.signed = signed
        return twin


class Proof:
    """The signed answer for a question whose proof depends on its name:
    ``build(i, j)`` makes it for the chain entries ``i`` (what covers the
    name) and ``j`` (what a second NSEC needs: the wildcard's cover, or
    the wildcard's own NSEC; the same for every name of this proof), and
    :meth:`answer` finds them for a name.  The data plane first asks
    :attr:`find` (one C call: what is kept for the name's cover, or None)
    and only then :meth:`answer`."""

    __slots__ = ("build", "find", "kept", "sec", "second")

    def __init__(self, sec: ZoneSigning, second: bytes | int,
                 build: Callable[[int, int], Answer]) -> None:
        self.sec = sec
        self.second = second
        self.build = build
        self.kept: dict[int, Answer] = {}  # by i (j is this proof's)
        self.find = sec.chain.finder(self.kept).get

    def answer(self, name: bytes) -> Answer:
        i = self.sec.covering(name)  # a name (or a look-up key): its cover
        return self.kept.get(i) or self.make(i)

    def make(self, i: int) -> Answer:
        """The answer for chain entry ``i``, made and kept (within a bound)."""
        j = self.second
        if not isinstance(j, int):  # a name: its cover, found once
            j = self.second = self.sec.covering(j)
        ans = self.build(i, j)
        if len(self.kept) < MAX_PROOFS:
            self.kept[i] = ans
        return ans


def encode(res: Resolution, qname: bytes | None, zone: str, payload: int,
           sec: ZoneSigning | None = None, wild: bytes | None = None,
           proof: Sequence[Record] = ()) -> Answer:
    """Encode a resolution for a question name (or a template when None).
    In a signed zone (``sec``) the answer's ``signed`` form is made too:
    every authoritative record set with its RRSIGs (``wild``: the wildcard
    that synthesised the question's own records), and the NSEC records that
    prove a denial when the name is known (``proof``: given by the caller
    for a template)."""
    ans = _encode(res, qname, zone, payload)
    if sec is not None:
        ans.signed = _encode(signed_resolution(res, qname, sec, wild, proof), qname, zone,
                             payload, signed=True)
    return ans


def signed_resolution(res: Resolution, qname: bytes | None, sec: ZoneSigning,
                      wild: bytes | None = None, proof: Sequence[Record] = ()) -> Resolution:
    """A resolution with its signatures and (for a known name) its proof."""
    proof = list(proof)
    if qname is not None and not proof:
        proof = _static_proof(res, qname, sec)
    authority = sec.signed(res.authority, qname, wild)
    # A delegation (a referral, or where a CNAME chain enters a child zone):
    # its DS set signed, or the proof that there is none.
    cuts = {r.owner.lower() for r in res.authority if r.rtype == NS and r.owner != QNAME}
    for cut in sorted(cuts & sec.index.cuts):
        ds = sec.zone.nodes[cut].get(DS)
        if ds is not None:
            authority += sec.signed([Record(ds.owner, DS, ds.ttl, rd) for rd in ds.rdatas],
                                    None)
        else:
            authority += sec.nodata_proof(cut)  # an insecure delegation
    return Resolution(res.rcode, res.aa, sec.signed(res.answer, qname, wild),
                      authority + proof, sec.signed(res.additional, qname, wild), res.kind)


def _static_proof(res: Resolution, qname: bytes, sec: ZoneSigning) -> list[Record]:
    """The NSEC records a negative answer for a known name needs (none for
    a name outside the zone, where a CNAME chain may end)."""
    final = sec.final_name(res.answer, qname)
    if not names.is_subdomain(final, sec.zone.origin):
        return []
    if res.rcode == NXDOMAIN:
        return sec.nxdomain_proof(final, sec.index.closest_encloser(final))
    if res.rcode == NOERROR and res.kind != AnswerKind.REFERRAL and \
            any(r.rtype == SOA for r in res.authority):
        return sec.nodata_proof(final)
    return []


def _encode(res: Resolution, qname: bytes | None, zone: str, payload: int,
            signed: bool = False) -> Answer:
    """The answer's bytes (``signed``: a signed form, only ever sent with
    DO: its OPT without DO is not kept)."""
    if res.steer is not None:
        raise ValueError("an answer that depends on the client is a Steered entry")
    enc = _Encoder(qname)
    for rec in res.answer:
        enc.record(rec)
    for rec in res.authority:
        enc.record(rec)
    core = bytes(enc.buf)
    for rec in res.additional:
        enc.record(rec)
    counts = (len(res.answer), len(res.authority), len(res.additional))
    smaller = None
    if res.additional:
        smaller = Answer(res.rcode, res.aa, (counts[0], counts[1], 0), core, res.kind, zone,
                         payload, do_only=signed)
    return Answer(res.rcode, res.aa, counts, bytes(enc.buf), res.kind, zone, payload, smaller,
                  do_only=signed)


class Steered:
    """A question whose answer depends on the client.

    ``lead`` holds the static records before the first steered record set
    (a CNAME chain that leads to it; empty when the question names it), and
    ``point`` is that record set.  The hot path sees ``steered`` and asks the
    steer stage (:mod:`geodns.decisions`) for the answer: it makes one
    :class:`~geodns.steering.Decision` per steered record set along the
    chain, asking :meth:`follow` where each leads (a steered CNAME's chosen
    target in the zone may hold another steered record set), and
    :meth:`answer` turns those decisions into pre-encoded bytes, built once
    per distinct combination of outcomes and kept.  The question's own
    records are owned by the question name, so the same answers serve a
    wildcard too.
    """

    steered = True
    __slots__ = ("by_location", "index", "lead", "payload", "point", "qname", "sec",
                 "variants", "wild", "zindex", "zone")

    def __init__(self, lead: Sequence[Record], point: SteerPoint, index: int, zone: str,
                 zindex: ZoneIndex, payload: int, qname: bytes | None = None,
                 sec: ZoneSigning | None = None, wild: bytes | None = None) -> None:
        self.lead = tuple(lead)
        self.point = point
        self.index = index  # this entry's slot in the decision caches
        self.zone = zone
        self.zindex = zindex
        self.payload = payload
        self.qname = qname  # the question name when it is known (not a wildcard)
        self.sec = sec  # the zone is signed: so is every variant
        self.wild = wild  # a wildcard's entry: the wildcard's name
        if sec is not None:
            # Every PoP's record set (and the fallback) signed now, with the
            # snapshot: a variant made on first use finds its signatures.
            for spec in self._reachable():
                owner = spec.owner.lower()
                for rds in (*spec.values.values(), spec.fallback):
                    if rds and sec.authoritative(owner, spec.rtype):
                        sec.signer.rrsigs(owner, spec.rtype, spec.ttl, rds)
                if owner in sec.position:  # for a NODATA the policy may give
                    sec.nodata_proof(owner, spec.rtype)
        self.variants: dict[tuple[object, ...], Answer] = {}
        # Without network rules (in any steered record set the answer can
        # reach, or in an all_down: use fallback), a decision depends on the
        # client's location only.
        self.by_location = all(not any(r.networks for r in spec.rules) and spec.all_down != USE
                               for spec in self._reachable())

    @property
    def spec(self) -> SteerSpec:
        """The first steered record set the answer depends on."""
        return self.point.spec

    def follow(self, point: SteerPoint, decision: Decision) -> SteerPoint | None:
        """The steered record set that the decision at ``point`` leads to (a
        steered CNAME's chosen target in the zone that holds one), if any."""
        after = self._after(point, decision)
        return None if after is None else after.steer

    def answer(self, decisions: Sequence[Decision]) -> Answer:
        """The answer for the decisions made along the chain, in order (one
        for each point :meth:`follow` led to)."""
        key = tuple(d.key for d in decisions)
        ans = self.variants.get(key)
        if ans is None:
            ans = self._build(decisions)
            if len(self.variants) < MAX_VARIANTS:
                self.variants[key] = ans
        return ans

    def _after(self, point: SteerPoint, decision: Decision) -> Resolution | None:
        if not point.follows or decision.outcome not in (Outcome.POPS, Outcome.ANSWER):
            return None
        spec = decision.spec or point.spec  # all_down: use answers with the other record
        rds = spec.fallback if decision.outcome == Outcome.ANSWER \
            else spec.values.get(decision.pops[0])
        if not rds or rds[0].target is None:
            return None
        return self.zindex.after(rds[0].target, point.qtype)

    def _build(self, decisions: Sequence[Decision]) -> Answer:
        records = list(self.lead)
        point = self.point
        final = Resolution(NOERROR, kind=AnswerKind.STEERED)
        for i, decision in enumerate(decisions):
            spec = decision.spec or point.spec
            if decision.outcome == Outcome.SERVFAIL:
                return Answer(SERVFAIL, False, (0, 0, 0), b"", AnswerKind.STEERED, self.zone,
                              self.payload)
            if decision.outcome == Outcome.NODATA:
                final = Resolution(NOERROR, answer=records,
                                   authority=self.zindex.soa_authority(),
                                   kind=AnswerKind.NODATA)
                if self.sec is not None:
                    # The name's NSEC lists the steered type: this NODATA
                    # needs one that does not (signed with the zone).
                    owner = self.qname if point.owner == QNAME else point.owner.lower()
                    if owner is not None:
                        return encode(final, self.qname, self.zone, self.payload, self.sec,
                                      self.wild, self.sec.nodata_proof(owner, spec.rtype))
                    # A wildcard's (RFC 4035 3.1.3.4): that NSEC at the
                    # wildcard, and what covers the name, found per name.
                    assert self.wild is not None
                    ans = encode(final, None, self.zone, self.payload)
                    ans.signed = _wild_proof(final, self.sec, self.wild, self.zone, self.payload,
                                             self.sec.nodata_proof(self.wild, spec.rtype))
                    return ans
                break
            if decision.outcome == Outcome.ANSWER:
                rds: list[RData] = list(spec.fallback)
            else:
                rds = []
                for pop in decision.pops:
                    for rd in spec.values[pop]:
                        if rd not in rds:
                            rds.append(rd)
            records += [Record(point.owner, spec.rtype, point.spec.ttl, rd) for rd in rds]
            after = self._after(point, decision)
            if after is None:
                kind = AnswerKind.STEERED if len(records) == len(rds) else AnswerKind.CNAME
                final = Resolution(NOERROR, answer=records, kind=kind)
                break
            records += after.answer
            if after.steer is not None and i + 1 < len(decisions):
                point = after.steer
                continue
            # The end of the chain (RFC 6604: the rcode of the last name).  A
            # steered record set not followed (a loop) ends it too.
            final = Resolution(after.rcode, True, records, list(after.authority),
                               list(after.additional), AnswerKind.CNAME)
            break
        if self.sec is not None and self.qname is None:
            # A wildcard's: the proof that the name itself does not exist
            # depends on the name.
            ans = encode(final, None, self.zone, self.payload)
            ans.signed = _wild_proof(final, self.sec, self.wild, self.zone, self.payload)
            return ans
        return encode(final, self.qname, self.zone, self.payload, self.sec, self.wild)

    def _reachable(self) -> list[SteerSpec]:
        """Every steered record set this answer can depend on."""
        found: list[SteerSpec] = []
        todo = [self.point]
        seen: set[tuple[bytes, int]] = set()
        while todo:
            point = todo.pop()
            if point.spec.key in seen:
                continue
            seen.add(point.spec.key)
            found.append(point.spec)
            if not point.follows:
                continue
            for rds in (*point.spec.values.values(), point.spec.fallback):
                if rds and rds[0].target is not None:
                    after = self.zindex.after(rds[0].target, point.qtype)
                    if after is not None and after.steer is not None:
                        todo.append(after.steer)
        return found


class Node:
    """Everything the hot path needs about one name that exists in a zone
    (a name with data, an empty non-terminal, or the zone apex).  ``name``
    is None for the node the usual names of a zone with the same types
    share (:func:`_compile_zone`): it is given with the question."""

    __slots__ = ("below_answer", "index", "memo", "name", "nodata", "nodata_wild",
                 "payload", "referral", "sec", "types", "wild")

    def __init__(self, index: ZoneIndex, name: bytes | None, payload: int,
                 sec: ZoneSigning | None = None) -> None:
        self.index = index
        self.name = name
        self.payload = payload
        self.sec = sec
        # The types pre-built for this name, whose answers are in its zone's
        # ``exact`` table (a tuple shared by the names with the same types,
        # where a dict per name was a tenth of a large zone's memory).
        self.types: tuple[int, ...] = ()
        # By exact key (name, type, class): made on first use, as most names never need it.
        self.memo: dict[bytes, Answer] | None = None
        # Any type not pre-built: NODATA, or for a CNAME whose chain reaches
        # a steered CNAME, that Steered entry (None: resolve on first use).
        self.nodata: Answer | Steered | None = None
        self.referral: Answer | None = None  # set when the name is at or below a cut
        self.wild: dict[int, Answer | Steered] | None = None
        self.nodata_wild: Answer | Steered | None = None  # the same, for the wildcard
        self.below_answer: Answer | None = None  # NXDOMAIN or referral for names below

    def by_type(self, name: bytes, exact: Mapping[bytes, Answer | Steered]
                ) -> dict[int, Answer | Steered]:
        """The pre-built answers of ``name`` (this node's) in ``exact``, by type."""
        return {t: exact[name + _type_key(t)] for t in self.types}

    def answer(self, qtype: int, name: bytes) -> Answer | Steered:
        """Answer for a question naming this node (``name``, lower-cased)
        exactly, of a type that is not pre-built: the exact table holds those."""
        if self.sec is not None and qtype in (NSEC, RRSIG) and \
                self.name in self.sec.position:
            return self._dnssec_records(qtype)
        if self.referral is not None:
            return self.referral
        if self.nodata is not None and qtype != ANY:
            if self.sec is not None and self.nodata is self.sec.templates[0]:
                # A signed zone's NODATA carries the name's own NSEC: made
                # on first use (most names never need it).
                self.nodata = _nodata(self.nodata, self.index, name, self.sec)
            return self.nodata
        key = name + _type_key(qtype)
        memo = self.memo.get(key) if self.memo is not None else None
        if memo is None:
            memo = encode(self.index.resolve(name, qtype), name,
                          self.index.zone.name, self.payload, self.sec)
            if self.memo is None:
                self.memo = {}
            if len(self.memo) < (MEMO_PER_NODE if self.name is not None else MEMO_SHARED):
                self.memo[key] = memo
        return memo

    def _dnssec_records(self, qtype: int) -> Answer:
        """A signed zone's own records asked for: the name's NSEC (with its
        RRSIG for DO), or every RRSIG at the name (of its static record
        sets: a steered set's depends on the client), as Knot answers."""
        sec = self.sec
        assert sec is not None and self.name is not None
        key = self.name + _type_key(qtype)
        memo = self.memo.get(key) if self.memo is not None else None
        if memo is not None:
            return memo
        nsec = sec.nodata_proof(self.name)
        if qtype == NSEC:
            records, signed = nsec[:1], nsec
        else:
            records = [r for rtype, rrset in sorted(self.index.zone.nodes[self.name].items())
                       if sec.authoritative(self.name, rtype)
                       for r in sec.signed([Record(rrset.owner, rtype, rrset.ttl, rd)
                                            for rd in rrset.rdatas], None)
                       if r.rtype == RRSIG] + nsec[1:]
            signed = records
        zone = self.index.zone.name
        memo = _encode(Resolution(NOERROR, answer=records), self.name, zone, self.payload)
        memo.signed = _encode(Resolution(NOERROR, answer=signed), self.name, zone, self.payload,
                              signed=True)
        if self.memo is None:
            self.memo = {}
        self.memo[key] = memo
        return memo

    def below(self, qtype: int, name: bytes) -> Answer | Steered:
        """Answer for a name below this node (``name``) that does not exist
        itself, this node being its closest encloser."""
        if self.wild is not None:
            ans = self.wild.get(qtype)
            if ans is None:
                if self.nodata_wild is not None and qtype != ANY:
                    return self.nodata_wild
                res = self.index.wildcard(name, qtype)
                ans = encode(res, None, self.index.zone.name, self.payload)
                if self.sec is not None:
                    ans.signed = _wild_proof(res, self.sec, b"\x01*" + name,
                                             self.index.zone.name, self.payload)
                if len(self.wild) < MEMO_PER_NODE + 16:
                    self.wild[qtype] = ans
            return ans
        below = self.below_answer
        assert below is not None
        if self.sec is not None and below is self.sec.templates[1]:
            # What covers the name, and what covers the wildcard here: found
            # per name; this node's own object made on first use.
            below = self.below_answer = below.sharing(Proof(
                self.sec, b"\x01*" + name,
                _denial(self.sec.index.nxdomain(), self.sec, self.index.zone.name,
                        self.payload)))
        return below


@dataclass
class Tables:
    """The compiled form of a set of zones: what a snapshot serves.
    ``steered`` lists each steered record set once (the entry that answers
    its own name and type)."""

    exact: dict[bytes, Answer | Steered]
    nodes: dict[bytes, Node]
    steered: list[Steered]
    refused: Answer
    notimp: Answer  # AXFR over UDP, as Knot and NSD answer it
    notauth: Answer  # transfers of zones we do not serve
    payload: int
    # Each zone compiled on its own, by origin: the next build reuses the
    # part of every zone that has not changed.
    parts: Mapping[bytes, ZoneTables] = field(default_factory=dict)

    @property
    def due(self) -> float:
        """When the first signed zone must be signed again (a build then)."""
        return min((p.due for p in self.parts.values()), default=float("inf"))


@dataclass(frozen=True)
class ZoneTables:
    """One zone compiled (for one UDP payload size): reused as it is while
    the zone is the same object.  Its entries are kept in the order made as
    tuples of keys and of what they map to, which :func:`compile_zones`
    merges into the snapshot's dicts: a dict of them per zone as well was
    a tenth of a large zone's memory.  :meth:`exact` and :meth:`nodes` make
    those dicts when asked (an edit compares a zone with its version before)."""

    zone: Zone
    payload: int
    keys: tuple[bytes, ...]  # the exact table's: name, type and class IN
    answers: tuple[Answer | Steered, ...]
    names: tuple[bytes, ...]  # the node table's
    name_nodes: tuple[Node, ...]
    steered: list[Steered]
    signer: Signer | None = None  # a signed zone's: the next build reuses its signatures

    @classmethod
    def of(cls, zone: Zone, payload: int, exact: dict[bytes, Answer | Steered],
           nodes: dict[bytes, Node], steered: list[Steered],
           signer: Signer | None = None) -> ZoneTables:
        return cls(zone, payload, tuple(exact), tuple(exact.values()), tuple(nodes),
                   tuple(nodes.values()), steered, signer)

    def exact(self) -> dict[bytes, Answer | Steered]:
        return dict(zip(self.keys, self.answers, strict=True))

    def nodes(self) -> dict[bytes, Node]:
        return dict(zip(self.names, self.name_nodes, strict=True))

    @property
    def due(self) -> float:
        return self.signer.due if self.signer is not None else float("inf")


# For a name with a CNAME, also the types it is most often followed for (the
# others are resolved on first use and memoised: every served type for every
# CNAME would triple a CNAME's tables).
_FOLLOWED = frozenset({A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, CAA, DS, HTTPS})


# Steered entries' slots in the decision caches: unique in the process, so
# that zones compiled apart (and reused by later builds) never share one.
_slots = itertools.count()


@dataclass
class _Build:
    """What compiling one zone collects: its settings and its Steered
    entries."""

    payload: int
    record_sets: list[Steered] = field(default_factory=list)
    sec: ZoneSigning | None = None
    # Nodes of the zone's previous version whose pre-built answers still
    # hold, by name (:func:`_reusable`), and that version's answers by key.
    reuse: Mapping[bytes, Node] = field(default_factory=dict)
    reused: Mapping[bytes, Answer | Steered] = field(default_factory=dict)

    def entry(self, res: Resolution, qname: bytes | None, index: ZoneIndex,
              wild: bytes | None = None) -> Answer | Steered:
        """The pre-built answer for a resolution, or a Steered entry when it
        depends on the client.  ``wild``: a wildcard's synthesis (``qname``
        is None then)."""
        if res.steer is None:
            if self.sec is not None and wild is not None:
                ans = encode(res, None, index.zone.name, self.payload)
                ans.signed = _wild_proof(res, self.sec, wild, index.zone.name, self.payload)
                return ans
            return encode(res, qname, index.zone.name, self.payload, self.sec)
        return Steered(res.answer, res.steer, next(_slots), index.zone.name, index,
                       self.payload, qname, self.sec, wild)


def compile_zone(zone: Zone, payload: int = DEFAULT_UDP_PAYLOAD, now: float | None = None,
                 previous: ZoneTables | None = None) -> ZoneTables:
    """One zone's look-up tables, on their own.  A signed zone is signed
    as of ``now`` (the clock when not given), with the signatures of
    ``previous`` (the zone's last tables) that are not due."""
    exact: dict[bytes, Answer | Steered] = {}
    nodes: dict[bytes, Node] = {}
    build = _Build(payload)
    signer = None
    if zone.dnssec is not None and zone.keys:
        signer = Signer(zone.origin, [k.key for k in zone.keys if k.sign], zone.dnssec.validity,
                        time.time() if now is None else now,
                        previous.signer if previous is not None else None)
        build.sec = ZoneSigning(zone, ZoneIndex(zone), signer)
    elif previous is not None and previous.payload == payload:
        build.reuse = _reusable(previous, zone)
        if build.reuse:
            build.reused = previous.exact()
    _compile_zone(zone, nodes, exact, build)
    return ZoneTables.of(zone, payload, exact, nodes, build.record_sets, signer)


def _same_data(a: Types, b: Types) -> bool:
    """Whether two names hold the same records (where they were written
    aside: an edit above them moves their lines, not their answers)."""
    if a is b:
        return True
    if isinstance(a, Packed) and isinstance(b, Packed):
        return a.owner == b.owner and a.body == b.body  # (the records, in wire form)
    if isinstance(a, One) and isinstance(b, One):
        return a.rrset == b.rrset  # (RRset equality leaves out where it was written)
    if len(a) != len(b) or any(t not in b for t in a):
        return False
    return all(x == b[rtype] for rtype, x in a.items())


@functools.lru_cache(maxsize=1024)
def _type_key(qtype: int) -> bytes:
    """What follows a name in an ``exact`` key: the type and class IN."""
    return struct.pack("!H", qtype) + _QTC_IN


def _reusable(previous: ZoneTables, zone: Zone) -> dict[bytes, Node]:
    """The compiled nodes of the zone's previous version whose answers are
    the same in this one, by name (see :func:`_compile_zone`).

    Only an unsigned zone without steered records is reused, one name at a
    time (in a signed zone every answer carries the NSEC chain, and a
    steered record's answers hang together through its decisions).  A name
    pre-builds its positive answers only (its NODATA and NXDOMAIN are the
    zone's templates, made again for the new SOA), and those depend on its
    own records and on the addresses (and SVCB/HTTPS sets) of the names its
    records point at.  So a name is reused when it holds the same records,
    and no name its records point at changed; never the apex, a name with a
    CNAME (whose chain may go anywhere), a name with a wildcard child (whose
    synthesis it holds), or a name at or below a delegation (the referral
    carries the glue: :func:`_compile_zone` takes a kept node only where
    there is no cut); and nothing at all when the delegations changed."""
    old = previous.zone
    if old.steered or zone.steered or old.dnssec is not None or \
            old.delegations() != zone.delegations():
        return {}
    before, after = old.nodes, zone.nodes
    changed = before.keys() - after.keys()
    source = zone.source
    # The loader says which owners it read anew from the text (the others
    # hold what they held in ``old``), else every name is compared.
    maybe = after.keys() if source is None or source.base is None or \
        source.base() is not old else source.fresh | {zone.origin}
    for name in maybe:
        data = after.get(name)
        was = before.get(name)
        if data is not None and (was is None or not _same_data(was, data)):
            changed.add(name)
    wild_parents = {n[2:] for n in (*before, *after) if n[:2] == b"\x01*"}
    nodes = previous.nodes()
    reuse: dict[bytes, Node] = {}
    for name, data in after.items():
        if name in changed or CNAME in data or name == zone.origin or name in wild_parents:
            continue
        node = nodes.get(name)
        if node is None:  # (a name at or below a cut: _compile_zone does not ask)
            continue
        if not _POINTING.isdisjoint(data) and any(
                rd.target in changed for rtype in _POINTING if rtype in data
                for rd in data[rtype].rdatas if rd.target is not None):
            continue
        reuse[name] = node
    return reuse


# The types whose answers hold the records of the names they point at (in
# the additional section); a CNAME's are never reused.
_POINTING = frozenset({NS, MX, SRV, SVCB, HTTPS})


def compile_zones(zones: Iterable[Zone], payload: int = DEFAULT_UDP_PAYLOAD,
                  chaos: dict[str, str] | None = None,
                  previous: Tables | None = None, now: float | None = None) -> Tables:
    """Compile zones into look-up tables, reusing from ``previous`` every
    zone that has not changed (the same :class:`Zone` object), so that the
    cost follows what changed.  A zone nested inside another one that we
    also serve takes over its part of the name space.  ``chaos`` maps
    CH-class TXT names (``id.server.``) to the text they answer.  A signed
    zone whose signatures are due at ``now`` is compiled again (signing only
    what is due)."""
    ordered = sorted(zones, key=lambda z: len(z.origin))
    before = previous.parts if previous is not None else {}
    exact: dict[bytes, Answer | Steered] = {}
    nodes: dict[bytes, Node] = {}
    steered: list[Steered] = []
    parts: dict[bytes, ZoneTables] = {}
    for zone in ordered:
        part = before.get(zone.origin)
        if part is None or part.zone is not zone or part.payload != payload or \
                part.due <= (time.time() if now is None else now):
            part = compile_zone(zone, payload, now, part)
        parts[zone.origin] = part
        parent_ds = None
        if _inside(zone.origin, parts):
            # Names the parent holds at or below a child apex belong to the
            # child, but for DS, answered by the parent side of the cut
            # (RFC 4035 3.1.4.1), as Knot and NSD do serving both zones.
            parent_ds = exact.get(zone.origin + _DS_IN)
            _drop_below(nodes, exact, zone.origin)
        exact.update(zip(part.keys, part.answers, strict=True))
        if parent_ds is not None:
            exact[zone.origin + _DS_IN] = parent_ds
        nodes.update(zip(part.names, part.name_nodes, strict=True))
        steered += part.steered
    refused = Answer(REFUSED, False, (0, 0, 0), b"", AnswerKind.REFUSED, "", payload,
                     options=EDE_NOT_AUTHORITATIVE)
    notimp = Answer(NOTIMP, False, (0, 0, 0), b"", AnswerKind.NOTIMP, "", payload)
    notauth = Answer(NOTAUTH, False, (0, 0, 0), b"", AnswerKind.NOTAUTH, "", payload)
    for text, value in (chaos or {}).items():
        exact[names.from_text(text).lower() + _CHAOS_TXT] = _chaos_answer(value, payload)
    return Tables(exact, nodes, steered, refused, notimp, notauth, payload, parts)


def _inside(origin: bytes, served: Mapping[bytes, ZoneTables]) -> bool:
    """Whether a zone served (other than this one) is an ancestor of ``origin``."""
    name = origin
    while name != b"\0":
        name = name[name[0] + 1:]
        if name in served:
            return True
    return False


_CHAOS_TXT = struct.pack("!HH", TXT, 3)
_DS_IN = struct.pack("!HH", DS, 1)


def _chaos_answer(text: str, payload: int) -> Answer:
    """A CH TXT answer (TTL 0, not authoritative), as Knot and NSD give for
    ``id.server`` and ``version.bind``: it tells an operator which anycast
    node answered."""
    rd = rdata.txt([text.encode("utf-8")]).wire
    body = b"\xc0\x0c" + struct.pack("!HHIH", TXT, 3, 0, len(rd)) + rd
    return Answer(NOERROR, False, (1, 0, 0), body, AnswerKind.CHAOS, "", payload)


def _drop_below(nodes: dict[bytes, Node], exact: dict[bytes, Answer | Steered],
                apex: bytes) -> None:
    doomed = [k for k in nodes if names.is_subdomain(k, apex)]
    for k in doomed:
        del nodes[k]
    if doomed:
        for key in [k for k in exact if names.is_subdomain(k[:-4], apex)]:
            del exact[key]


def _nodata(template: Answer, index: ZoneIndex, name: bytes,
            sec: ZoneSigning | None) -> Answer:
    """NODATA at an existing name: the template, or in a signed zone the
    template's bytes with the name's own proof (its NSEC, signed already;
    the answer put together on first use: most names never need it)."""
    if sec is None:
        return template
    return template.sharing(_encode(signed_resolution(
        sec.nodata_resolution, None, sec, proof=sec.nodata_proof(name)), None, index.zone.name,
        template_payload(template), signed=True))


def template_payload(ans: Answer) -> int:
    """The UDP payload size an answer's OPT advertises."""
    opt = ans.tails[1]
    return (opt[3] << 8) | opt[4]


def _denial(res: Resolution, sec: ZoneSigning, zone: str,
            payload: int) -> Callable[[int, int], Answer]:
    """What a :class:`Proof` builds for a negative answer: ``res`` signed,
    with the NSEC records of chain entries ``i`` and ``j``."""
    def build(i: int, j: int) -> Answer:
        proof = sec.nsec(i) if i == j else sec.nsec(i) + sec.nsec(j)
        return _encode(signed_resolution(res, None, sec, proof=proof), None, zone, payload,
                       signed=True)
    return build


def _wild_proof(res: Resolution, sec: ZoneSigning, wild: bytes | None, zone: str,
                payload: int, at_wild: Sequence[Record] = ()) -> Proof:
    """A wildcard's synthesis signed (as the wildcard), with the NSEC that
    covers the question name, found per name.  ``at_wild``: the NSEC at the
    wildcard a NODATA needs, which is also the cover when the name sorts
    right after the wildcard (the NSEC with the type is then left out)."""
    wild_at = sec.position.get(wild) if at_wild and wild is not None else None

    def build(i: int, _j: int) -> Answer:
        proof = list(at_wild) if i == wild_at else sec.nsec(i) + list(at_wild)
        return _encode(signed_resolution(res, None, sec, wild, proof=proof), None, zone,
                       payload, signed=True)
    return Proof(sec, -1, build)


def _prebuilt(zone: Zone, name: bytes) -> tuple[set[int], bool]:
    """The types pre-built for a name (or a wildcard), and whether it is a
    CNAME (static or steered: then the types it is followed for too)."""
    data = zone.nodes.get(name, {})
    steered = zone.steered.get(name, {})
    types = set(data) | set(steered)
    if CNAME in data or CNAME in steered:
        return types | _FOLLOWED | {ANY}, True
    if steered:
        types.add(ANY)  # the answer may depend on the client: a Steered entry, made now
    # ANY otherwise on first use (rare, and half the tables if built for every name).
    return types, False


_CLASS_TTL = struct.Struct("!HHIH")

try:  # a usual name's node and own answers made in C (optional: else below, in Python)
    from geodns import _zonetext
except ImportError:  # pragma: no cover - a tree without the C helper built
    _zonetext = None  # type: ignore[assignment]

# Whether the usual names' answers are encoded without resolving
# (:func:`_own_answer`; off only for tests/test_compile_own.py's comparison).
_OWN_ANSWERS = True


def _own_answer(rrset: RRset, name: bytes, origin: bytes, made: _Made) -> Answer | None:
    """The answer of a name's own record set, as :func:`encode` makes it
    from ``index.resolve`` when that is the set alone (owner ``C0 0C``);
    None when the answer may carry more (the in-zone addresses of a
    target, for the types that add them)."""
    rtype = rrset.rtype
    rdatas = rrset.rdatas
    if rtype in _ADDITIONAL_FOR:
        for rd in rdatas:
            if rd.target is not None and names.is_subdomain(rd.target, origin):
                return None
    out: list[bytes] | None = []
    for rd in rdatas:
        parts = rd.parts
        wire: bytes
        if isinstance(rd, Wire):
            wire = rd
        elif any(isinstance(p, CompressibleName) for p in parts):
            out = None
            break
        else:
            wire = b"".join(parts)
        assert out is not None
        out.append(b"\xc0\x0c" + _CLASS_TTL.pack(rtype, CLASS_IN, rrset.ttl, len(wire)) + wire)
    if out is None and len(rdatas) == 1:  # one name inside, that may point into the question
        parts = rdatas[0].parts
        if isinstance(parts[-1], CompressibleName) and \
                not any(isinstance(p, CompressibleName) for p in parts[:-1]):
            rd_wire = b"".join(parts[:-1]) + _pointing(parts[-1], name)
            return made.answer(1, b"\xc0\x0c" + _CLASS_TTL.pack(rtype, CLASS_IN, rrset.ttl,
                                                                  len(rd_wire)) + rd_wire)
    if out is None:  # names inside that the encoder may compress
        enc = _Encoder(name)
        for rd in rdatas:
            enc.record(Record(QNAME, rtype, rrset.ttl, rd))
        body = bytes(enc.buf)
    else:
        body = out[0] if len(out) == 1 else b"".join(out)
    return made.answer(len(rdatas), body)


def _pointing(wire: bytes, qname: bytes) -> bytes:
    """A name in the first record after the question ``qname``, as the
    encoder writes it (:meth:`_Encoder.name`): up to its longest ancestor
    that is one of the question's (the root aside), then a pointer to
    that one in the question."""
    low = wire.lower()
    i = 0
    while wire[i]:
        tail = low[i:]
        if qname.endswith(tail):
            at = len(qname) - len(tail)
            j = 0
            while j < at:  # (where the question's labels start)
                j += qname[j] + 1
            if j == at:
                return wire[:i] + struct.pack("!H", 0xC000 | (12 + at))
        i += wire[i] + 1
    return wire


class _Made:
    """What every positive answer of one zone shares, for making many
    (:func:`_own_answer`): the same object :class:`Answer` would make."""

    def __init__(self, zname: str, payload: int) -> None:
        self.zone = zname
        self.cid = LABELS.cid((zname, NOERROR))
        self.opt = _opt(payload, False, b"")
        self.opt_do = _opt(payload, True, b"")
        self.new = object.__new__

    def answer(self, an: int, body: bytes) -> Answer:
        """What ``Answer(NOERROR, True, (an, 0, 0), body, AnswerKind.ANSWER,
        zone, payload)`` makes, without its calls."""
        ans: Answer = self.new(Answer)
        ans.rcode = NOERROR
        ans.aa = True
        ans.kind = AnswerKind.ANSWER
        ans.zone = self.zone
        ans.cid = self.cid
        ans.smaller = None
        ans.heads = _heads(NOERROR, True, an, 0, 0)
        ans.tails = (body, self.opt, body, self.opt_do)
        ans.signed = None
        return ans


def _compile_zone(zone: Zone, nodes: dict[bytes, Node], exact: dict[bytes, Answer | Steered],
                  build: _Build) -> None:
    """Fill the tables for one zone."""
    sec = build.sec
    index = sec.index if sec is not None else ZoneIndex(zone)
    zname = zone.name
    payload = build.payload
    nxdomain = encode(index.nxdomain(), None, zname, payload)
    nodata_template = encode(index.nodata(), None, zname, payload)
    if sec is not None:
        sec.templates = (nodata_template, nxdomain)
    referrals = {cut: encode(index.referral(cut), None, zname, payload, sec)
                 for cut in index.cuts}

    reuse = build.reuse
    # The node the usual names with the same types share (unsigned: a
    # signed name's NODATA and NXDOMAIN carry its own proofs).
    usual: dict[tuple[int, ...], Node] = {}
    shared: dict[tuple[int, ...], tuple[int, ...]] = {}  # the other names' types, shared

    def usual_node(types: tuple[int, ...]) -> Node:
        node = usual.get(types)
        if node is None:
            node = usual[types] = Node(index, None, payload)
            node.types = types
            node.nodata = nodata_template
            node.below_answer = nxdomain
        return node

    zone_nodes = zone.nodes
    origin = zone.origin
    plain = _OWN_ANSWERS and sec is None and not zone.steered and not index.cuts
    made = _Made(zname, payload)
    context: tuple[object, ...] | None = None
    if plain and _zonetext is not None:
        def slow(name: bytes, rtype: int) -> Answer | Steered:
            ans = _own_answer(zone_nodes[name][rtype], name, origin, made)
            return ans if ans is not None else \
                build.entry(index.resolve(name, rtype), name, index)

        # What geodns/_zonetext.c's own() needs to do what the own path below does.
        context = (zone_nodes, nodes, exact, usual, usual_node, origin, zname, made.cid, NOERROR,
                   AnswerKind.ANSWER, made.opt, made.opt_do,
                   {an: _heads(NOERROR, True, an, 0, 0) for an in range(1, 5)},
                   lambda an: _heads(NOERROR, True, an, 0, 0), slow)
    for name in list(zone.nodes) + sorted(index.ents):
        if context is not None and name not in reuse and _zonetext.own(context, name):
            continue  # a usual name, made in C as below
        cut = index.cut_above(name)
        kept = reuse.get(name) if cut is None else None
        if kept is not None:
            # The same positive answers; the rest (this zone's index and
            # templates, memos made on first use) is this version's: the
            # node of the usual names with its types (:func:`_reusable`
            # keeps no other kind of name).  Shared: a node's pre-built
            # answers never change once compiled.
            nodes[name] = usual_node(kept.types)
            for qtype in kept.types:
                key = name + _type_key(qtype)
                exact[key] = build.reused[key]
            continue
        data = zone_nodes.get(name)
        if plain and data is not None and CNAME not in data and name != origin and \
                b"\x01*" + name not in zone_nodes:
            # The usual name (no CNAME, no wildcard below it, in an unsigned
            # zone without steering or delegations): each type's answer is
            # its own records, with the in-zone addresses of their targets
            # (none: encoded here, without resolving).
            built = tuple(data) if len(data) == 1 else tuple(set(data))  # (in _prebuilt's order)
            nodes[name] = usual_node(built)
            for rtype in built:
                ans = _own_answer(data[rtype], name, origin, made)
                exact[name + _type_key(rtype)] = ans if ans is not None else \
                    build.entry(index.resolve(name, rtype), name, index)
            if ans is not None and isinstance(data, One) and \
                    packable(data.rrset, name, ans.tails[0]):
                zone_nodes[name] = Packed(name, ans.tails[0])  # (its records, kept once)
            continue
        node = Node(index, name, payload, sec)
        nodes[name] = node
        if cut is not None:
            node.referral = node.below_answer = referrals[cut]
            if name == cut:
                # DS is answered by the parent side of the cut (RFC 4035 3.1.4.1).
                ds = zone.nodes[name].get(DS)
                ds_answer = _nodata(nodata_template, index, name, sec) if ds is None \
                    else encode(index.resolve(name, DS), name, zname, payload, sec)
                node.types = (DS,)
                exact[name + _type_key(DS)] = ds_answer
            continue
        types, is_cname = _prebuilt(zone, name)
        if is_cname:
            # Other types: resolved on first use, unless the chain reaches a
            # steered CNAME (then they all share one Steered entry).
            other = index.resolve(name, OTHER_TYPES)
            if other.steer is not None:
                node.nodata = build.entry(other, name, index)
        else:  # any type not pre-built is NODATA (signed: the node's own, on first use)
            node.nodata = nodata_template
        for qtype in types:
            exact[name + _type_key(qtype)] = build.entry(index.resolve(name, qtype), name, index)
        built = tuple(types)
        node.types = shared.setdefault(built, built)
        wildname = b"\x01*" + name
        wild = zone.nodes.get(wildname)
        if wild is not None:
            node.wild = {}
            types, is_cname = _prebuilt(zone, wildname)
            if is_cname:
                other = index.wildcard(name, OTHER_TYPES)
                if other.steer is not None:
                    node.nodata_wild = build.entry(other, None, index, wildname)
            elif sec is None:
                node.nodata_wild = nodata_template
            else:  # the wildcard's NSEC, and what covers the name
                node.nodata_wild = nodata_template.sharing(
                    Proof(sec, sec.position[wildname],
                          _denial(index.nodata(), sec, zname, payload)))
            for qtype in types:
                node.wild[qtype] = build.entry(index.wildcard(name, qtype), None, index,
                                               wildname)
        else:  # signed: the node's own, on first use (Node.below)
            node.below_answer = nxdomain
    # Each steered record set once, by the entry for its own name and type.
    for owner, rtypes in zone.steered.items():
        for rtype in sorted(rtypes):
            if owner.startswith(b"\x01*"):
                wild_types = nodes[owner[2:]].wild
                entry = wild_types.get(rtype) if wild_types is not None else None
            else:
                entry = exact.get(owner + _type_key(rtype))
            if isinstance(entry, Steered):
                build.record_sets.append(entry)


if _zonetext is not None:  # (the zone model's classes: geodns.zones.model)
    _zonetext.setup_compile(Answer)
