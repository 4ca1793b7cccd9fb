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
encoded on first use and memoised per node, within bounds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from geodns import names, rdata
from geodns.counters import LABELS
from geodns.rdata import ANY, CNAME, DS, SERVED_TYPES, TXT, CompressibleName, RData
from geodns.resolve import (
    NOERROR,
    NOTAUTH,
    NOTIMP,
    QNAME,
    REFUSED,
    SERVFAIL,
    AnswerKind,
    Rcode,
    Record,
    Resolution,
    ZoneIndex,
)
from geodns.steering import ANSWER, USE, Decision, SteerSpec
from geodns.steering import NODATA as STEER_NODATA
from geodns.steering import SERVFAIL as STEER_SERVFAIL
from geodns.zones.model import Zone

CLASS_IN = 1
_QTC_IN = b"\x00\x01"
MEMO_PER_NODE = 64
DEFAULT_UDP_PAYLOAD = 1232


def opt_record(payload: int, do: bool, ext_rcode: int = 0, options: bytes = b"") -> bytes:
    """Our OPT pseudo-RR: root owner, version 0, the given options."""
    return struct.pack("!BHHBBHH", 0, 41, payload, ext_rcode, 0, 0x8000 if do else 0,
                       len(options)) + options


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
        if qname is not None:
            self.base = 12 + len(qname) + 4
            pos = 12
            for suffix in names.suffixes(qname)[:-1]:
                self.table[suffix] = pos
                pos += suffix[0] + 1

    def name(self, wire: bytes, compress: bool) -> None:
        if wire == QNAME:
            self.buf += b"\xc0\x0c"
            return
        if self.base is None or not compress:
            self.buf += wire
            return
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
    as neither Knot nor NSD copies it); ``tails[e]`` is everything after the
    question, for e = 0 (no EDNS), 1 (OPT) and 2 (OPT with DO).
    ``smaller`` is the same answer without the additional section, used
    when the full one does not fit in a UDP response.
    """

    __slots__ = ("aa", "cid", "heads", "kind", "rcode", "smaller", "tails", "zone")
    steered = False  # see Steered

    def __init__(self, rcode: Rcode, aa: bool, counts: tuple[int, int, int], body: bytes,
                 kind: AnswerKind, zone: str, payload: int, smaller: Answer | None = None,
                 options: bytes = b"") -> None:
        self.rcode = rcode
        self.aa = aa
        self.kind = kind
        self.zone = zone
        self.cid = LABELS.cid((zone, rcode))  # what the query counters are keyed on
        self.smaller = smaller
        an, ns, ar = counts
        heads = []
        for edns in (0, 1):
            for rd in (0, 1):
                flags = 0x8000 | (0x0400 if aa else 0) | (0x0100 if rd else 0) | (rcode & 0xF)
                heads.append(struct.pack("!HHHHH", flags, 1, an, ns, ar + edns))
        self.heads = tuple(heads)
        self.tails = (body, body + opt_record(payload, False, options=options),
                      body + opt_record(payload, True, options=options))


def encode(res: Resolution, qname: bytes | None, zone: str, payload: int) -> Answer:
    """Encode a resolution for a question name (or a template when None)."""
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
                         payload)
    return Answer(res.rcode, res.aa, counts, bytes(enc.buf), res.kind, zone, payload, smaller)


class Steered:
    """A steered (name, type): the answer depends on the client.

    The hot path sees ``steered`` and asks the responder's steering for a
    :class:`~geodns.steering.Decision`; :meth:`answer` turns a decision into
    pre-encoded bytes, built once per distinct outcome (which PoPs, in
    which order) and kept.  Owners are the question name, so the same
    answers serve a wildcard too.
    """

    steered = True
    __slots__ = ("by_location", "index", "nodata", "payload", "spec", "variants", "zone")

    def __init__(self, spec: SteerSpec, index: int, zone: str, nodata: Answer,
                 payload: int) -> None:
        self.spec = spec
        self.index = index
        self.zone = zone
        self.nodata = nodata
        self.payload = payload
        self.variants: dict[tuple[object, ...], Answer] = {}
        # Without network rules (here or in an all_down: use fallback), a
        # decision depends on the client's location only.
        self.by_location = not any(r.networks for r in spec.rules) and spec.all_down != USE

    def answer(self, decision: Decision) -> Answer:
        key = decision.key
        ans = self.variants.get(key)
        if ans is None:
            ans = self._build(decision)
            self.variants[key] = ans  # bounded: one per ordered choice of PoPs
        return ans

    def _build(self, decision: Decision) -> Answer:
        spec = decision.spec or self.spec  # all_down: use answers with the other record
        if decision.outcome == STEER_NODATA:
            return self.nodata
        if decision.outcome == STEER_SERVFAIL:
            return Answer(SERVFAIL, False, (0, 0, 0), b"", AnswerKind.STEERED, self.zone,
                          self.payload)
        if decision.outcome == ANSWER:
            rds: list[RData] = list(spec.fallback)
        else:
            rds = []
            for pop in decision.pops:
                for rd in spec.values[pop]:
                    if rd not in rds:
                        rds.append(rd)
        records = [Record(QNAME, spec.rtype, self.spec.ttl, rd) for rd in rds]
        return encode(Resolution(NOERROR, answer=records, kind=AnswerKind.STEERED), None, self.zone,
                      self.payload)


class Node:
    """Everything the hot path needs about one name that exists in a zone
    (a name with data, an empty non-terminal, or the zone apex)."""

    __slots__ = ("below_answer", "by_type", "index", "memo", "name", "nodata", "nodata_wild",
                 "payload", "referral", "wild")

    def __init__(self, index: ZoneIndex, name: bytes, payload: int) -> None:
        self.index = index
        self.name = name
        self.payload = payload
        self.by_type: dict[int, Answer] = {}
        self.memo: dict[int, Answer] = {}
        self.nodata: Answer | Steered | None = None
        self.referral: Answer | None = None  # set when the name is at or below a cut
        self.wild: dict[int, Answer | Steered] | None = None
        self.nodata_wild: Answer | Steered | None = None  # wildcard without CNAME: other types
        self.below_answer: Answer | None = None  # NXDOMAIN or referral for names below

    def answer(self, qtype: int) -> Answer | Steered:
        """Answer for a question naming this node exactly."""
        ans = self.by_type.get(qtype)
        if ans is not None:
            return ans
        if self.referral is not None:
            return self.referral
        if self.nodata is not None:
            return self.nodata
        ans = self.memo.get(qtype)
        if ans is None:
            ans = encode(self.index.resolve(self.name, qtype), self.name, self.index.zone.name,
                         self.payload)
            if len(self.memo) < MEMO_PER_NODE:
                self.memo[qtype] = ans
        return ans

    def below(self, qtype: int) -> Answer | Steered:
        """Answer for a name below this node that does not exist itself,
        this node being its closest encloser."""
        if self.wild is not None:
            ans = self.wild.get(qtype)
            if ans is None:
                if self.nodata_wild is not None:
                    return self.nodata_wild
                wildname = b"\x01*" + self.name
                ans = encode(self.index._from_node(self.index.zone.nodes[wildname], qtype,
                                                   QNAME, 0, set(), AnswerKind.WILDCARD),
                             None, self.index.zone.name, self.payload)
                if len(self.wild) < MEMO_PER_NODE + 16:
                    self.wild[qtype] = ans
            return ans
        assert self.below_answer is not None
        return self.below_answer


@dataclass
class Tables:
    """The compiled form of a set of zones: what a snapshot serves."""

    exact: dict[bytes, Answer | Steered]
    nodes: dict[bytes, Node]
    steered: list[Steered]
    refused: Answer
    notimp: Answer  # AXFR over UDP, as Knot and NSD answer it
    notauth: Answer  # transfers of zones we do not serve
    payload: int


# Types pre-built for every name; other types are built on first use.
_PREBUILT_EXTRA = (ANY,)


def compile_zones(zones: Iterable[Zone], payload: int = DEFAULT_UDP_PAYLOAD,
                  chaos: dict[str, str] | None = None) -> Tables:
    """Compile zones into look-up tables.  A zone nested inside another one
    that we also serve takes over its part of the name space.  ``chaos``
    maps CH-class TXT names (``id.server.``) to the text they answer."""
    ordered = sorted(zones, key=lambda z: len(z.origin))
    exact: dict[bytes, Answer | Steered] = {}
    nodes: dict[bytes, Node] = {}
    steered: list[Steered] = []
    for zone in ordered:
        # Names the parent holds at or below a child apex belong to the child.
        _drop_below(nodes, exact, zone.origin)
        nodata = _compile_zone(zone, nodes, exact, payload)
        for owner, types in zone.steered.items():
            for rtype, spec in sorted(types.items()):
                st = Steered(spec, len(steered), zone.name, nodata, payload)
                steered.append(st)
                _place_steered(st, owner, rtype, zone, nodes, exact)
    refused = Answer(REFUSED, False, (0, 0, 0), b"", AnswerKind.REFUSED, "", payload,
                     options=EDE_NOT_AUTHORITATIVE)
    notimp = Answer(NOTIMP, False, (0, 0, 0), b"", AnswerKind.NOTIMP, "", payload)
    notauth = Answer(NOTAUTH, False, (0, 0, 0), b"", AnswerKind.NOTAUTH, "", payload)
    for text, value in (chaos or {}).items():
        exact[names.from_text(text).lower() + _CHAOS_TXT] = _chaos_answer(value, payload)
    return Tables(exact, nodes, steered, refused, notimp, notauth, payload)


_CHAOS_TXT = struct.pack("!HH", TXT, 3)


def _chaos_answer(text: str, payload: int) -> Answer:
    """A CH TXT answer (TTL 0, not authoritative), as Knot and NSD give for
    ``id.server`` and ``version.bind``: it tells an operator which anycast
    node answered."""
    rd = rdata.txt([text.encode("utf-8")]).wire
    body = b"\xc0\x0c" + struct.pack("!HHIH", TXT, 3, 0, len(rd)) + rd
    return Answer(NOERROR, False, (1, 0, 0), body, AnswerKind.CHAOS, "", payload)


def _place_steered(st: Steered, owner: bytes, rtype: int, zone: Zone, nodes: dict[bytes, Node],
                   exact: dict[bytes, Answer | Steered]) -> None:
    """Make a steered record set reachable: by exact name and type, for every
    type when it is a CNAME, and through its closest encloser when the owner
    is a wildcard."""
    only_steered = not zone.nodes.get(owner)
    if owner.startswith(b"\x01*"):
        encloser = nodes.get(owner[2:])
        if encloser is None or encloser.wild is None:  # pragma: no cover - built above
            return
        encloser.wild[rtype] = st
        if rtype == CNAME:
            encloser.nodata_wild = st  # a CNAME answers every type
        elif only_steered and not isinstance(encloser.wild.get(ANY), Steered):
            encloser.wild[ANY] = st  # only steered data here: ANY gets the first type
        return
    types = [rtype]
    if rtype == CNAME:
        types = [*sorted(SERVED_TYPES - {CNAME}), CNAME, ANY]
        nodes[owner].nodata = st  # every other type too
    for t in types:
        exact[owner + struct.pack("!H", t) + _QTC_IN] = st
    any_key = owner + struct.pack("!H", ANY) + _QTC_IN
    if only_steered and not isinstance(exact.get(any_key), Steered):
        exact[any_key] = st  # only steered data here: ANY gets the first type


def _drop_below(nodes: dict[bytes, Node], exact: dict[bytes, Answer | Steered],
                apex: bytes) -> None:
    doomed = [k for k in nodes if names.is_subdomain(k, apex)]
    for k in doomed:
        del nodes[k]
    if doomed:
        for key in [k for k in exact if names.is_subdomain(k[:-4], apex)]:
            del exact[key]


def _compile_zone(zone: Zone, nodes: dict[bytes, Node], exact: dict[bytes, Answer | Steered],
                  payload: int) -> Answer:
    """Fill the tables for one zone; returns its NODATA template."""
    index = ZoneIndex(zone)
    zname = zone.name
    nxdomain = encode(index.nxdomain(), None, zname, payload)
    nodata_template = encode(index.nodata(), None, zname, payload)
    referrals = {cut: encode(index.referral(cut), None, zname, payload) for cut in index.cuts}

    for name in list(zone.nodes) + sorted(index.ents):
        node = Node(index, name, payload)
        nodes[name] = node
        cut = index.cut_above(name)
        if cut is not None:
            node.referral = node.below_answer = referrals[cut]
            if name == cut:
                node.by_type[DS] = nodata_template
            continue
        data = zone.nodes.get(name, {})
        if CNAME not in data:
            node.nodata = nodata_template  # any type not pre-built is NODATA
        types = set(data) | set(_PREBUILT_EXTRA)
        if CNAME in data:
            types |= SERVED_TYPES
        for qtype in types:
            ans = encode(index.resolve(name, qtype), name, zname, payload)
            node.by_type[qtype] = ans
            exact[name + struct.pack("!H", qtype) + _QTC_IN] = ans
        wild = zone.nodes.get(b"\x01*" + name)
        if wild is not None:
            node.wild = {}
            if CNAME not in wild:
                node.nodata_wild = nodata_template
            for qtype in set(wild) | set(_PREBUILT_EXTRA):
                node.wild[qtype] = encode(index._from_node(wild, qtype, QNAME, 0, set(),
                                                           AnswerKind.WILDCARD), None, zname,
                                                  payload)
        else:
            node.below_answer = nxdomain
    return nodata_template
