"""The query path: query bytes in, response bytes out.  No I/O, no clock.

Theory of operation: a query passes six named stages, each a function
with one job:

1. **parse** (:func:`geodns.parse.parse`): the whole packet, answered NOTIMP,
   FORMERR or BADVERS when it must be (as Knot and NSD answer), or dropped
   when it is not a query at all;
2. **cookie** (:meth:`Responder.cookie`, :mod:`geodns.cookies`), only when
   cookies are configured and the query has a COOKIE option: FORMERR for a
   malformed option, BADCOOKIE over UDP for a server cookie we cannot
   verify, else the COOKIE option our answer carries and whether the answer
   is :class:`Vouched`.  The time it needs is :attr:`Responder.now`, which
   the transports set (no clock here);
3. **look up** (:meth:`Responder.look_up`): ``name + type + class`` in the
   compiled tables (:mod:`geodns.compile`): a pre-built :class:`Answer`, or a
   :class:`Steered` entry whose answer depends on the client;
4. **steer** (:meth:`geodns.decisions.Decisions.answer`): for a steered
   entry, or any query with a Client Subnet option, the answer for this
   client and its tails with the ECS echo, cached per client network;
5. **sign** (:meth:`Responder.sign`): for a query with DO whose answer is
   in a signed zone, the answer's signed form, made when the snapshot was
   built (:mod:`geodns.dnssec`); where the proof of a denial depends on the
   name, found by the name in the zone's NSEC chain.  Nothing is signed per
   query.  Fused in the fast path: a query without DO, or for an unsigned
   zone, pays one comparison;
6. **assemble and fit** (:meth:`Responder.assemble`, :meth:`Responder.fit`):
   ``ID + head + question + body + OPT`` (:data:`geodns.compile.Tails`),
   counted, and cut to the UDP limit
   (additional section dropped, else TC with the question only).

:meth:`Responder.respond` is these stages *fused* for the common shape,
which is almost every query on the wire: one question, no answer or
authority records, and either no additional record or a single OPT with
at most a Client Subnet option.  It walks the question name's labels in
place, lower-cases the name with one ``bytes.lower()``, looks ``name +
type + class`` up in the exact table, and joins the query's ID, ten
pre-built header bytes, the question copied from the query and the
pre-built body and OPT, all in one function: a Python method call costs
about 750 instructions (callgrind, Python 3.11), some 4% of a static answer, so the
common shape pays for none it can avoid (one for a steered answer: the
steer stage).  Anything else goes to :meth:`Responder.staged`, a COOKIE
option included (its code is not Client Subnet), so the cookie stage costs
the common shape nothing.

Batched UDP meets the C data plane first (``Responder.plane``,
geodns/_plane.c): it answers the fused path's shape for names in the exact
table, names below a closest encloser (as :meth:`Responder._walk` finds
them, with the proof a signed zone keeps for the name's cover), and steered
answers the steer stage has taught it
(:meth:`geodns.decisions.Decisions._teach`), with the same bytes as
:meth:`Responder.respond` and the same counters, and hands every other
query of the batch here.

The contract: :meth:`Responder.respond` returns the bytes to send, or
``None`` when the packet must be dropped.  It never raises: a bug of ours
answers SERVFAIL and is logged.
"""

from __future__ import annotations

import logging
import struct
from collections import defaultdict

from geodns import counters
from geodns.compile import Answer, Node, Proof, Steered, Tables, Tails, opt_record
from geodns.cookies import Cookies, Verdict
from geodns.counters import COUNTED_QTYPES, LABELS, OTHER, Dropped, Event, Malformed, Truncated
from geodns.decisions import MAX_DECISIONS, Decisions, Hit
from geodns.ecs import Peer, peer_address
from geodns.geo import Locator
from geodns.parse import MIN_UDP, TCP_LIMIT, NoAnswer, Opt, Query, QueryError, parse, question_of
from geodns.rdata import AXFR, IXFR
from geodns.resolve import BADCOOKIE, FORMERR, REFUSED, SERVFAIL, AnswerKind, Rcode
from geodns.steering import Decision, HealthView, Steering

try:
    from geodns import _udpbatch
except ImportError:  # pragma: no cover - built at install time when a C compiler is there
    _udpbatch = None  # type: ignore[assignment]

log = logging.getLogger("geodns.wire")

# The event vocabulary under the names the metrics import.
DROPPED, MALFORMED, TRUNCATED, STEERING_MISS, COOKIE = (
    Event.DROPPED, Event.MALFORMED, Event.TRUNCATED, Event.STEERING_MISS, Event.COOKIE)
_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_MIN_UDP = MIN_UDP


class Vouched(bytes):
    """An answer to a query that proved its source address (a valid DNS
    server cookie, RFC 7873): the same bytes, marked so that response rate
    limiting lets it through.  Every other answer is a plain ``bytes``; the
    limiter tells them apart with one exact-type check."""

    __slots__ = ()


class Responder:
    """Answers queries from one compiled snapshot of the zones."""

    __slots__ = ("cookies", "counts", "decisions", "events", "exact", "nodes", "notauth",
                 "notimp", "now", "payload", "plane", "refused", "steer", "tables")
    # Whether batched UDP may answer without calling respond (a subclass
    # that must see every query says no).
    planed = True

    def __init__(self, tables: Tables, steering: Steering | None = None,
                 locator: Locator | None = None, health: HealthView | None = None,
                 cookies: Cookies | None = None) -> None:
        self.tables = tables
        # DNS cookies (None: a COOKIE option is ignored, as by a server that
        # does not do cookies), and the time they are made and checked at:
        # seconds since the epoch, set by the transports before they hand
        # queries over (once per UDP batch, per TCP message).
        self.cookies = cookies
        self.now = 0
        # Queries answered, by an int packing label, query type and transport
        # (geodns.counters).  The label is the answer's (zone, rcode), or for
        # a steered answer (zone, rcode, PoP, reason), so one increment per
        # query feeds both the query and the steering counters.  ``events``
        # counts what happens off the fast path (Event, by reason).  Both are
        # handed from one snapshot to the next by the server
        # (:meth:`adopt_counters`) and read by the metrics.
        self.counts: defaultdict[int, int] = defaultdict(int)
        self.events: dict[tuple[str, str], int] = {}
        # The C data plane (geodns/_plane.c): what of this snapshot batched
        # UDP answers without Python (the same bytes as respond), or None.
        self.plane = None if _udpbatch is None or not self.planed else _udpbatch.Plane(
            tables.exact, tables.nodes, Answer, Steered, Node, Proof, COUNTED_QTYPES,
            tables.payload)
        self.decisions = Decisions(steering, locator, health, tables.payload, self.events,
                                   self.plane)
        self.steer = self.decisions.answer  # the steer stage, bound once
        self.exact = tables.exact
        self.nodes = tables.nodes
        self.refused = tables.refused
        self.notimp = tables.notimp
        self.notauth = tables.notauth
        self.payload = tables.payload

    # -- what the control plane sees ---------------------------------------------
    @property
    def steering(self) -> Steering | None:
        return self.decisions.steering

    @property
    def locator(self) -> Locator | None:
        return self.decisions.locator

    @property
    def health(self) -> HealthView | None:
        return self.decisions.health

    def use_health(self, health: HealthView) -> None:
        """Steer with another health view from now on; every cached decision
        is forgotten in the same step."""
        self.decisions.use_health(health)

    def forget_decisions(self) -> None:
        """Health changed: every cached decision may be wrong now."""
        self.decisions.forget()

    def cache_entries(self) -> int:
        """How many steered answers are cached (by client and by location)."""
        return self.decisions.entries()

    def decision(self, steered: Steered, client_packed: bytes, source_prefix: int,
                 explain: bool = False) -> Decision:
        """The steering decision for a client network (see
        :meth:`geodns.decisions.Decisions.decision`)."""
        return self.decisions.decision(steered, client_packed, source_prefix, explain)

    def count_event(self, kind: str, reason: str, n: int = 1) -> None:
        """Count something off the fast path (the transports count failed
        sends here too)."""
        k = (kind, reason)
        self.events[k] = self.events.get(k, 0) + n

    def adopt_counters(self, old: Responder) -> None:
        """Counters outlive snapshots: carry on from the one being replaced."""
        self.counts = old.counts
        self.events = self.decisions.events = old.events

    def scratch(self) -> Responder:
        """A responder over the same snapshot (tables, steering, locator and
        health) with its own counters and caches: what ``explain`` answers
        with, so that an explanation is neither counted as a query nor
        leaves anything in the serving caches."""
        return Responder(self.tables, self.steering, self.locator, self.health)

    # -- the stages fused ---------------------------------------------------------
    def respond(self, data: bytes, udp: bool = True, peer: Peer = None) -> bytes | None:
        """Answer one query.  ``peer`` is where it came from (raw sockaddr
        bytes or an address tuple); only steered answers look at it."""
        try:
            n = len(data)
            if n < 12:
                self.count_event(DROPPED, Dropped.SHORT)
                return None
            b2 = data[2]
            counts = data[4:12]
            if b2 & 0xF8 or (counts != _COUNTS_EDNS and counts != _COUNTS_PLAIN):
                return self.staged(data, udp, peer)  # QR, another opcode, other counts
            # parse: walk the question name (an IndexError: it runs off the end).
            i = 12
            ln = data[12]
            while ln:
                if ln > 63:
                    return self.staged(data, udp, peer)
                i += ln + 1
                ln = data[i]
            qend = i + 1
            p = qend + 4
            edns = counts[7]
            ecs = None
            if edns:
                # Exactly one OPT, version 0, nothing after it, and either no
                # option or a single Client Subnet option.
                if (data[p] or data[p + 1] or data[p + 2] != 41 or data[p + 6]
                        or p + 11 + ((data[p + 9] << 8) | data[p + 10]) != n):
                    return self.staged(data, udp, peer)
                if n != p + 11:
                    if data[p + 11] or data[p + 12] != 8 or n - p - 15 != (
                            (data[p + 13] << 8) | data[p + 14]):
                        return self.staged(data, udp, peer)
                    ecs = data[p + 15 : n]
                do_i = 2 if data[p + 7] & 0x80 else 0  # where DO's pieces start (Tails)
            elif p != n:
                return self.staged(data, udp, peer)
            else:
                do_i = 0
            if qend > 267:  # name over 255 bytes
                return self.staged(data, udp, peer)
            # look up
            key = data[12:qend].lower() + data[qend:p]
            entry = self.exact.get(key) or self._walk(key, udp)
            if ecs is None and isinstance(entry, Answer):
                ans = entry
                tails = entry.tails
                cid = entry.cid
            else:  # steer
                hit = self.steer(entry, ecs, peer)
                if hit is None:
                    return self.staged(data, udp, peer)  # a bad option: FORMERR
                ans, tails, cid = hit
            if do_i and ans.signed is not None:  # sign: DO in a signed zone
                signed = ans.signed
                if isinstance(signed, Answer):
                    if tails is ans.tails:  # else an ECS echo's, whose DO body is
                        tails = signed.tails  # the signed form's (decisions.echoed)
                    ans = signed
                elif tails is ans.tails:  # a proof, found by the name (its cover)
                    ans = signed.find(key) or signed.answer(key)
                    tails = ans.tails
                else:
                    ans, tails = self.sign(ans, tails, key)
            # assemble, count and fit: the body and OPT for this EDNS form
            # (compile.Tails: 0 and 1, or with DO 2 and 3; without EDNS the body)
            head = ans.heads[(edns << 1) | (b2 & 1)]
            if edns:
                resp = b"".join((data[:2], head, data[12:p], tails[do_i], tails[do_i + 1]))
            else:
                resp = b"".join((data[:2], head, data[12:p], tails[0]))
            qt = (data[qend] << 8) | data[qend + 1]
            k = cid | ((qt if qt in COUNTED_QTYPES else OTHER) << 1) | udp
            self.counts[k] += 1
            size = len(resp)
            # Over 512 bytes it fits if within both the client's payload
            # size and ours (a signed answer: the usual case, two compares).
            if udp and size > _MIN_UDP and (not edns or size > self.payload or
                                             size > ((data[p + 3] << 8) | data[p + 4])):
                limit = _MIN_UDP
                if edns:
                    limit = min(max((data[p + 3] << 8) | data[p + 4], _MIN_UDP), self.payload)
                if size > limit:
                    return self.fit(data, data[12:p], ans, tails, edns, do_i or edns, limit)
            return resp
        except IndexError:
            try:
                return self.staged(data, udp, peer)
            except Exception:
                return self._servfail(data, udp)
        except Exception:
            return self._servfail(data, udp)

    # -- the stages one by one ------------------------------------------------------
    def staged(self, data: bytes, udp: bool, peer: Peer = None) -> bytes | None:
        """Every query the fused path does not take, one stage at a time."""
        try:
            query = parse(data)
        except NoAnswer as exc:
            self.count_event(DROPPED, exc.reason)
            return None
        except QueryError as exc:
            log.debug("%s: %s", exc.rcode.name, exc)
            option = b""
            if exc.cookie is not None and exc.opt is not None and self.cookies is not None:
                option = self.cookie(exc.cookie, peer)[1]
            return self._error(data, exc.rcode, exc.question, exc.opt, exc.reason, udp, option)
        option = b""
        vouched = False
        if query.cookie is not None and self.cookies is not None:
            verdict, option = self.cookie(query.cookie, peer)
            if verdict is Verdict.VALID:
                vouched = True
            elif verdict is Verdict.MALFORMED:
                return self._error(data, FORMERR, query.question, query.opt, Malformed.COOKIE,
                                   udp)
            elif verdict is not Verdict.CLIENT_ONLY and udp:
                # A server cookie we cannot vouch for: the client retries
                # with the fresh one (RFC 7873 5.2.4).  Over TCP the address
                # is proven anyway: the answer, with a fresh cookie.
                return self._error(data, BADCOOKIE, query.question, query.opt, "", udp, option)
        entry = self.look_up(query.key, udp)
        hit: Hit | None
        if query.ecs is None and isinstance(entry, Answer):
            hit = (entry, entry.tails, entry.cid)
        else:
            hit = self.steer(entry, query.ecs, peer)
            if hit is None:  # pragma: no cover - parse checked the option
                return self._error(data, FORMERR, query.question, query.opt, Malformed.ECS, udp)
        if query.tail == 2 and hit[0].signed is not None:
            hit = (*self.sign(hit[0], hit[1], query.key), hit[2])
        if vouched:
            return Vouched(self.assemble(data, query, hit, udp, option))
        return self.assemble(data, query, hit, udp, option)

    def cookie(self, option: bytes, peer: Peer) -> tuple[Verdict, bytes]:
        """The cookie stage: the verdict on a COOKIE option's data and the
        COOKIE option for the answer (see :meth:`geodns.cookies.Cookies.check`),
        counted by verdict."""
        assert self.cookies is not None
        verdict, answer = self.cookies.check(option, peer_address(peer)[0], self.now)
        self.count_event(COOKIE, verdict)
        return verdict, answer

    def sign(self, ans: Answer, tails: Tails, key: bytes) -> tuple[Answer, Tails]:
        """The sign stage, for a query with DO whose answer is in a signed
        zone: the answer with its signatures (made when the snapshot was
        built), found by the question name when its proof depends on it.
        ``tails`` may carry an ECS echo in our OPT: the signed answer gets
        the same OPT."""
        signed = ans.signed
        if signed is None:  # not signed: the same answer
            return ans, tails
        if isinstance(signed, Answer):
            # An ECS echo's body with DO is the signed form's already
            # (decisions.echoed).
            return signed, signed.tails if tails is ans.tails else tails
        proof = signed.answer(key)
        if tails is ans.tails:
            return proof, proof.tails
        # The name's signed body with our OPT and the ECS echo: only the DO
        # form is ever sent (a signed form answers DO queries only).
        body, opt = proof.tails[2], tails[3]
        return proof, (body, opt, body, opt)

    def look_up(self, key: bytes, udp: bool) -> Answer | Steered:
        """The look-up stage: ``key`` is the lower-cased question name, type
        and class."""
        return self.exact.get(key) or self._walk(key, udp)

    def assemble(self, data: bytes, query: Query, hit: Hit, udp: bool,
                 option: bytes = b"") -> bytes:
        """The assemble stage: the response, counted, fitted to the limit.
        ``option`` (a whole EDNS option) goes into our OPT."""
        ans, tails, cid = hit
        tail_i = query.tail
        if option and tail_i:
            tails = with_option(tails, tail_i, option)
        question = query.question
        qt = (question[-4] << 8) | question[-3]
        self.counts[counters.key(cid, qt, udp)] += 1
        resp = b"".join((data[:2], ans.heads[(query.edns << 1) | (data[2] & 1)], question,
                         tails[tail_i & 2], tails[tail_i | 1] if tail_i else b""))
        limit = query.limit(udp, self.payload)
        if len(resp) > limit:
            return self.fit(data, question, ans, tails, query.edns, query.tail, limit, option)
        return resp

    def fit(self, data: bytes, question: bytes, ans: Answer, tails: Tails, edns: int,
            tail_i: int, limit: int, option: bytes = b"") -> bytes:
        """An answer over the UDP limit: drop the additional section if that
        is enough (and not needed glue), else set TC and keep only the
        question (and our OPT, with ``option`` if given: the COOKIE option,
        already in ``tails``)."""
        idx = (edns << 1) | (data[2] & 1)
        smaller = ans.smaller
        if smaller is not None and ans.kind != AnswerKind.REFERRAL:
            # Our OPT as the full answer has it (with the ECS echo, if any).
            opt = tails[tail_i | 1] if tail_i else b""
            resp = b"".join((data[:2], smaller.heads[idx], question, smaller.tails[0], opt))
            if len(resp) <= limit:
                self.count_event(TRUNCATED, Truncated.ADDITIONAL)
                return resp
        self.count_event(TRUNCATED, Truncated.TC)
        flags = struct.unpack("!H", ans.heads[idx][:2])[0] | 0x0200
        head = struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], flags, 1, 0, 0, edns)
        opt = b"" if not edns else opt_record(self.payload, tail_i == 2, options=option)
        return head + question + opt

    # -- look-ups that miss the exact table ---------------------------------------------
    def _walk(self, key: bytes, udp: bool) -> Answer | Steered:
        """A name not in the exact table: the node table, or a walk up the
        name's ancestors to its closest encloser."""
        name = key[:-4]
        qclass = key[-2:]
        if qclass != b"\x00\x01":
            if qclass != b"\x00\xff":
                return self.refused  # only class IN is served
            key = name + key[-4:-2] + b"\x00\x01"  # class ANY: what IN holds
            found = self.exact.get(key)
            if found is not None:
                return found
        qtype = (key[-4] << 8) | key[-3]
        if qtype in (AXFR, IXFR):
            # Transfers are not offered (AXFR over UDP is not even a thing);
            # REFUSED for our zones, NOTAUTH for others, as NSD answers.
            if udp and qtype == AXFR:
                return self.notimp
            return self.refused if self._ours(name) else self.notauth
        nodes = self.nodes
        node = nodes.get(name)
        if node is not None:
            return node.answer(qtype, name)
        i = 0
        ln = name[0]
        while ln:
            i += ln + 1
            encloser = name[i:]
            node = nodes.get(encloser)
            if node is not None:
                return node.below(qtype, encloser)
            ln = name[i]
        return self.refused

    def _ours(self, name: bytes) -> bool:
        nodes = self.nodes
        i = 0
        while True:
            if name[i:] in nodes:
                return True
            if not name[i]:
                return False
            i += name[i] + 1

    # -- answers with no records ---------------------------------------------------
    def _error(self, data: bytes, rcode: Rcode, question: bytes | None, opt: Opt | None,
               reason: str = "", udp: bool = True, option: bytes = b"") -> bytes:
        """A response with no records: the header (opcode and RD kept),
        the question when it could be read, and an OPT when the query had one
        (with ``option`` in it, a whole EDNS option, if given).
        A FORMERR counts as a malformed query, for ``reason``."""
        if rcode == FORMERR:
            self.count_event(MALFORMED, reason or Malformed.OTHER)
        qid, qflags = struct.unpack("!HH", data[:4])
        flags = 0x8000 | (qflags & 0x7900) | (rcode & 0xF)
        qt = (question[-4] << 8) | question[-3] if question else OTHER
        self.counts[counters.key(LABELS.cid(("", rcode)), qt, udp)] += 1
        head = struct.pack("!HHHHHH", qid, flags, 1 if question else 0, 0, 0,
                           1 if opt is not None else 0)
        tail = b""
        if opt is not None:
            tail = opt_record(self.payload, opt.do, ext_rcode=rcode >> 4, options=option)
        return head + (question or b"") + tail

    def _servfail(self, data: bytes, udp: bool) -> bytes | None:
        """Our own fault: SERVFAIL, logged (the exception being handled)."""
        log.exception("internal error answering a query; answering SERVFAIL")
        try:
            if len(data) < 12 or data[2] & 0x80:
                self.count_event(DROPPED, Dropped.SHORT if len(data) < 12 else Dropped.RESPONSE)
                return None
            return self._error(data, SERVFAIL, question_of(data), None, udp=udp)
        except Exception:  # pragma: no cover - belt and braces
            log.exception("could not even build SERVFAIL; dropping")
            return None


def with_option(tails: Tails, tail_i: int, option: bytes) -> Tails:
    """``tails`` with one more EDNS option (whole: code, length, data) in the
    OPT sent for EDNS form ``tail_i`` (1: without DO, 2: with DO; form 0
    has none).  Its RDLENGTH grows by the option's length; no body is
    copied."""
    opt = tails[tail_i | 1]
    rdlen = ((opt[9] << 8) | opt[10]) + len(option)
    new = b"".join((opt[:9], rdlen.to_bytes(2, "big"), opt[11:], option))
    return (tails[0], new, tails[2], tails[3]) if tail_i == 1 else \
        (tails[0], tails[1], tails[2], new)


__all__ = ["MAX_DECISIONS", "REFUSED", "TCP_LIMIT", "Responder", "Vouched", "with_option"]
