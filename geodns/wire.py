"""The hot path: query bytes in, response bytes out.  No I/O, no clock.

Theory of operation: almost every query on the wire has the same shape:
one question, no answer or authority records, and either no additional
record or a single OPT.  For that shape :meth:`Responder.respond` walks the
question name's labels, lower-cases the name with one ``bytes.lower()``,
and looks ``name + type + class`` up in the compiled table of exact
answers; the response is the query's ID, ten pre-built header bytes, the
question copied from the query and a pre-built tail.  Names that do not
exist cost a few more dict look-ups up the name's ancestors (see
:mod:`geodns.compile`).

Anything else (other opcodes, odd counts, compression in the question,
extra records, EDNS options, malformed input) goes to :meth:`_careful`,
which parses the whole message and answers the way Knot and NSD do:

* shorter than a header, or QR set: no answer at all;
* opcode other than QUERY: NOTIMP;
* QDCOUNT other than 1, a question or record that cannot be parsed, two OPT
  records: FORMERR;
* EDNS version above 0: BADVERS with an OPT of version 0;
* a bug of ours: SERVFAIL, logged, and the server goes on.

The contract: :meth:`Responder.respond` returns the bytes to send, or
``None`` when the packet must be dropped.  It never raises.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from geodns import counters
from geodns.compile import Answer, Steered, Tables, opt_record
from geodns.counters import COUNTED_QTYPES, LABELS, OTHER
from geodns.geo import IPAddress, Locator, Place
from geodns.rdata import AXFR, IXFR, OPT
from geodns.resolve import BADVERS, FORMERR, NOTIMP, REFUSED, SERVFAIL
from geodns.steering import Decision, HealthView, Steering

log = logging.getLogger("geodns.wire")

Peer = bytes | tuple[Any, ...] | None
MAX_DECISIONS = 500_000  # cached decisions (and places) before the cache starts over
# A cached decision: the answer, its tails (see _ecs_tails) and the number of
# its counter label (see geodns.counters).
Hit = tuple[Answer, tuple[bytes, bytes, bytes], int]
# Rare events, counted by (kind, reason): dropped packets, FORMERR answers by
# cause, truncated answers, steering cache misses.  Only slow paths count here.
DROPPED, MALFORMED, TRUNCATED, STEERING_MISS = "dropped", "malformed", "truncated", "steer-miss"
_AF_INET_LE = socket.AF_INET.to_bytes(2, "little")  # sockaddr_in as Linux lays it out
_AF_INET_BE = socket.AF_INET.to_bytes(2, "big")
_COUNTS_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_COUNTS_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_MIN_UDP = 512
TCP_LIMIT = 65535


class FormErr(Exception):
    """The query cannot be parsed; answer FORMERR.  ``reason`` is the bounded
    cause the malformed-query counter is labelled with."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Responder:
    """Answers queries from one compiled snapshot of the zones."""

    __slots__ = ("by_location", "counts", "decisions", "events", "exact", "health", "locator",
                 "nodes", "notauth", "notimp", "payload", "places", "refused", "steering",
                 "tables")

    def __init__(self, tables: Tables, steering: Steering | None = None,
                 locator: Locator | None = None, health: HealthView | None = None) -> None:
        self.tables = tables
        self.steering = steering
        self.locator = locator
        self.health = health
        # (steered index, client key) -> a finished answer.  Cleared when
        # health changes; a new snapshot starts empty.
        self.decisions: dict[tuple[int, bytes], Hit] = {}
        self.places: dict[bytes, Place] = {}
        self.by_location: dict[tuple[object, ...], tuple[Answer, int]] = {}
        # Queries answered, by an int packing label, query type and transport
        # (geodns.counters).  The label is the answer's (zone, rcode), or for
        # a steered answer (zone, rcode, PoP, reason), so one increment per
        # query feeds both the query and the steering counters.  ``events``
        # counts what happens off the fast path.  Both are handed from one
        # snapshot to the next by the server (:meth:`adopt_counters`) and
        # read by the metrics.
        self.counts: defaultdict[int, int] = defaultdict(int)
        self.events: dict[tuple[str, str], int] = {}
        self.exact = tables.exact
        self.nodes = tables.nodes
        self.refused = tables.refused
        self.notimp = tables.notimp
        self.notauth = tables.notauth
        self.payload = tables.payload

    # -- entry point ---------------------------------------------------------
    def respond(self, data: bytes, udp: bool = True, peer: Peer = None) -> bytes | None:
        """Answer one query.  ``peer`` is where it came from (raw sockaddr
        bytes or an address tuple); only steered answers look at it."""
        try:
            n = len(data)
            if n < 12:
                self._drop("short")
                return None
            b2 = data[2]
            counts = data[4:12]
            if b2 & 0xF8 or (counts != _COUNTS_EDNS and counts != _COUNTS_PLAIN):
                return self._careful(data, udp, peer)  # QR, another opcode, other counts
            # Walk the question name (an IndexError means it runs off the end).
            i = 12
            ln = data[12]
            while ln:
                if ln > 63:
                    return self._careful(data, udp, peer)
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
                    return self._careful(data, udp, peer)
                if n != p + 11:
                    if data[p + 11] or data[p + 12] != 8 or n - p - 15 != (
                            (data[p + 13] << 8) | data[p + 14]):
                        return self._careful(data, udp, peer)
                    ecs = data[p + 15 : n]
                tail_i = 2 if data[p + 7] & 0x80 else 1
            elif p != n:
                return self._careful(data, udp, peer)
            else:
                tail_i = 0
            if qend > 267:  # name over 255 bytes
                return self._careful(data, udp, peer)
            key = data[12:qend].lower() + data[qend:p]
            ans: Answer = self.exact.get(key) or self._lookup(key, udp)  # type: ignore[assignment]
            if ans.steered or ecs is not None:
                return self._tailored(data, p, ans, edns, tail_i, ecs, peer, udp)
            resp = b"".join((data[:2], ans.heads[(edns << 1) | (b2 & 1)], data[12:p],
                             ans.tails[tail_i]))
            qt = (data[qend] << 8) | data[qend + 1]
            k = ans.cid | ((qt if qt in COUNTED_QTYPES else OTHER) << 1) | udp
            self.counts[k] += 1
            if udp and len(resp) > _MIN_UDP:
                limit = _MIN_UDP
                if edns:
                    limit = min(max((data[p + 3] << 8) | data[p + 4], _MIN_UDP), self.payload)
                if len(resp) > limit:
                    return self._fit(data, data[12:p], ans, edns, tail_i, limit)
            return resp
        except IndexError:
            return self._guarded(lambda d, u: self._careful(d, u, peer), data, udp)
        except Exception:
            return self._guarded(None, data, udp)

    def _guarded(self, step: Callable[[bytes, bool], bytes | None] | None, data: bytes,
                 udp: bool) -> bytes | None:
        """Run a slower step; a failure of ours answers SERVFAIL and is logged."""
        if step is not None:
            try:
                return step(data, udp)
            except Exception:
                log.exception("internal error answering a query; answering SERVFAIL")
        else:
            log.exception("internal error answering a query; answering SERVFAIL")
        try:
            return self._servfail(data, udp)
        except Exception:  # pragma: no cover - belt and braces
            log.exception("could not even build SERVFAIL; dropping")
            return None

    # -- answers that depend on the client -------------------------------------
    def _tailored(self, data: bytes, p: int, entry: Answer | Steered, edns: int, tail_i: int,
                  ecs: bytes | None, peer: Peer, udp: bool, question: bytes | None = None,
                  limit: int | None = None) -> bytes | None:
        """A steered answer, or any answer to a query with Client Subnet.

        A cached decision holds the finished tails (the answer, then our OPT
        echoing the client's subnet with the decision's scope), so a repeat
        query costs one look-up; only a miss validates and decides."""
        cid: int
        if isinstance(entry, Steered):
            if ecs is not None and len(ecs) > 2 and ecs[2]:
                key = (entry.index, ecs)
                hit = self.decisions.get(key)
                if hit is None:
                    parsed = _valid_ecs(ecs)
                    if parsed is None:
                        return self._careful(data, udp)
                    hit = self._remember(key, self._decide(entry, *parsed, ecs))
                ans, tails, cid = hit
            else:
                if ecs is not None and _valid_ecs(ecs) is None:
                    return self._careful(data, udp)
                client, source = peer_address(peer)
                key = (entry.index, client)
                hit = self.decisions.get(key) or self._remember(
                    key, self._decide(entry, client, source, None))
                ans, tails, cid = hit
                if ecs is not None:  # source /0: steered by the resolver's address, scope 0
                    tails = self._ecs_tails(ans, ecs, 0)
        else:
            assert ecs is not None
            if _valid_ecs(ecs) is None:
                return self._careful(data, udp)
            ans = entry
            cid = ans.cid
            tails = self._ecs_tails(ans, ecs, 0)  # not steered: valid for everyone
        if question is None:
            question = data[12:p]
        qt = (question[-4] << 8) | question[-3]
        k = cid | ((qt if qt in COUNTED_QTYPES else OTHER) << 1) | udp
        self.counts[k] += 1
        resp = b"".join((data[:2], ans.heads[(edns << 1) | (data[2] & 1)], question,
                         tails[tail_i]))
        if udp and len(resp) > _MIN_UDP:
            if limit is None:
                limit = _MIN_UDP
                if edns:
                    limit = min(max((data[p + 3] << 8) | data[p + 4], _MIN_UDP), self.payload)
            if len(resp) > limit:
                return self._fit(data, question, ans, edns, tail_i, limit)
        return resp

    def _remember(self, key: tuple[int, bytes], hit: Hit) -> Hit:
        if len(self.decisions) >= MAX_DECISIONS:
            self.decisions.clear()
        self.decisions[key] = hit
        return hit

    def _ecs_tails(self, ans: Answer, ecs: bytes, scope: int) -> tuple[bytes, bytes, bytes]:
        """Tails for a query with Client Subnet: the option comes back with
        our scope (RFC 7871 section 7.2)."""
        echo = struct.pack("!HHHBB", 8, len(ecs), (ecs[0] << 8) | ecs[1], ecs[2],
                           scope) + ecs[4:]
        body = ans.tails[0]
        return (body, body + opt_record(self.payload, False, options=echo),
                body + opt_record(self.payload, True, options=echo))

    def _decide(self, st: Steered, client: bytes, source: int, ecs: bytes | None) -> Hit:
        """A decision for the query path.  Records without network rules (and
        a latency table without networks) depend only on where the client
        is, so their decisions are also cached by location: many database
        networks share one."""
        if st.by_location and self.steering is not None and not self.steering.has_networks:
            place = self._place(client, source)
            lkey = (st.index, place.latitude, place.longitude, place.continent,
                    place.country, place.subdivision, place.asn)
            found = self.by_location.get(lkey)
            if found is None:
                found = self._steer(st, client, source)[:2]
                if len(self.by_location) >= MAX_DECISIONS:
                    self.by_location.clear()
                self.by_location[lkey] = found
            ans, cid = found
            scope = min(place.prefixlen, source)
        else:
            ans, cid, scope = self._steer(st, client, source)
        if ecs is None:
            return ans, ans.tails, cid
        return ans, self._ecs_tails(ans, ecs, scope), cid

    def _steer(self, st: Steered, client: bytes, source: int) -> tuple[Answer, int, int]:
        """Run steering (a cache miss): the answer, its counter label's
        number, its scope."""
        self.count_event(STEERING_MISS, "")
        decision = self.decision(st, client, source)
        ans = st.answer(decision)
        cid = LABELS.cid((st.zone, ans.rcode, decision.pops[0] if decision.pops else "",
                          decision.reason))
        return ans, cid, decision.scope

    def count_event(self, kind: str, reason: str, n: int = 1) -> None:
        """Count something off the fast path (the transports count failed
        sends here too)."""
        k = (kind, reason)
        self.events[k] = self.events.get(k, 0) + n

    def _drop(self, reason: str) -> None:
        """A packet that gets no answer at all (counted, never logged)."""
        self.count_event(DROPPED, reason)

    def adopt_counters(self, old: Responder) -> None:
        """Counters outlive snapshots: carry on from the one being replaced."""
        self.counts = old.counts
        self.events = old.events

    def _place(self, client: bytes, source: int) -> Place:
        key = client + bytes((source,))
        place = self.places.get(key)
        if place is None:
            place = self._locate(ipaddress.ip_address(client), source)
            if len(self.places) >= MAX_DECISIONS:
                self.places.clear()
            self.places[key] = place
        return place

    def forget_decisions(self) -> None:
        """Health changed: every cached decision may be wrong now."""
        self.decisions.clear()
        self.by_location.clear()

    def use_health(self, health: HealthView) -> None:
        """Decide with a new health view from now on (cached decisions go)."""
        self.health = health
        self.forget_decisions()

    def cache_entries(self) -> int:
        return len(self.decisions) + len(self.by_location)

    def decision(self, st: Steered, client: bytes, source: int,
                 explain: bool = False) -> Decision:
        """The steering decision for a client network (``client`` packed, its
        first ``source`` bits significant).  Queries and ``explain`` both
        come here."""
        address = ipaddress.ip_address(client)
        place = self._place(client, source)
        if self.steering is None or self.health is None:
            raise RuntimeError("a steered record without steering configured")
        return self.steering.decide(st.spec, address, source, place, self.health, explain)

    def _locate(self, address: IPAddress, source: int) -> Place:
        bits = 32 if address.version == 4 else 128
        if self.locator is None:
            return Place(address, 0)
        try:
            place = self.locator.locate(address)
        except Exception:
            log.exception("GeoIP look-up failed for %s; treating it as unplaced", address)
            return Place(address, min(source, bits))
        return place

    # -- look-ups that miss the exact table ----------------------------------
    def _lookup(self, key: bytes, udp: bool) -> Answer | Steered:
        """``key`` is the lower-cased question name + type + class."""
        name = key[:-4]
        qclass = key[-2:]
        if qclass != b"\x00\x01":
            if qclass != b"\x00\xff":
                return self.refused  # only class IN is served
            key = name + key[-4:-2] + b"\x00\x01"  # class ANY: what IN holds
            ans = self.exact.get(key)
            if ans is not None:
                return ans
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
            return node.answer(qtype)
        i = 0
        ln = name[0]
        while ln:
            i += ln + 1
            node = nodes.get(name[i:])
            if node is not None:
                return node.below(qtype)
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

    def _fit(self, data: bytes, question: bytes, ans: Answer, edns: int, tail_i: int,
             limit: int) -> bytes:
        """A UDP answer over the limit: drop the additional section if that is
        enough (and not needed glue), else set TC and keep only the question."""
        idx = (edns << 1) | (data[2] & 1)
        smaller = ans.smaller
        if smaller is not None and ans.kind != "referral":
            resp = b"".join((data[:2], smaller.heads[idx], question, smaller.tails[tail_i]))
            if len(resp) <= limit:
                self.count_event(TRUNCATED, "additional")
                return resp
        self.count_event(TRUNCATED, "tc")
        flags = struct.unpack("!H", ans.heads[idx][:2])[0] | 0x0200
        head = struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], flags, 1, 0, 0, edns)
        opt = b"" if not edns else opt_record(self.payload, tail_i == 2)
        return head + question + opt

    # -- the careful path ----------------------------------------------------
    def _careful(self, data: bytes, udp: bool, peer: Peer = None) -> bytes | None:
        """Full parse of anything that is not a plain query."""
        n = len(data)
        if n < 12:
            self._drop("short")
            return None
        _qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
        if flags & 0x8000:
            self._drop("response")  # never answer a response
            return None
        opcode = (flags >> 11) & 0xF
        question: bytes | None = None
        opt: tuple[int, int, int] | None = None  # payload, version, DO
        ecs: bytes | None = None
        try:
            p = 12
            if qd == 1:
                qend = _skip_name(data, 12, allow_pointer=False)
                if qend + 4 > n:
                    raise FormErr("question truncated", "question")
                question = data[12 : qend + 4]
                p = qend + 4
            if opcode != 0:
                return self._error(data, NOTIMP, question, None, udp=udp)
            if qd > 1:
                raise FormErr(f"QDCOUNT is {qd}", "qdcount")
            for _ in range(an + ns):
                p = _skip_rr(data, p)
            for _ in range(ar):
                start = p
                p = _skip_name(data, p, allow_pointer=True)
                if p + 10 > n:
                    raise FormErr("additional record truncated", "record")
                rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", data[p : p + 10])
                end = p + 10 + rdlen
                if end > n:
                    raise FormErr("additional record data truncated", "record")
                if rtype == OPT:
                    if opt is not None:
                        opt = None
                        raise FormErr("more than one OPT record", "opt")
                    if data[start] != 0:
                        raise FormErr("OPT owner is not the root", "opt")
                    ecs = _find_ecs(data, p + 10, end)
                    opt = (rclass, (ttl >> 16) & 0xFF, (ttl >> 15) & 1)
                p = end
        except (FormErr, IndexError) as exc:
            log.debug("FORMERR: %r", exc)
            reason = exc.reason if isinstance(exc, FormErr) else "truncated"
            return self._error(data, FORMERR, question, None, reason, udp)
        # Bytes after the last counted record are ignored, as NSD does.
        if opt is not None and opt[1] > 0:
            return self._error(data, BADVERS, question, opt, udp=udp)
        if question is None:  # QDCOUNT 0
            return self._error(data, FORMERR, None, opt, "qdcount", udp)
        if ecs is not None:
            try:
                ecs_client(ecs)
            except FormErr as exc:
                log.debug("FORMERR: %r", exc)
                return self._error(data, FORMERR, question, opt, exc.reason, udp)
        assert question is not None
        edns = 1 if opt is not None else 0
        tail_i = 0 if opt is None else (2 if opt[2] else 1)
        if not udp:
            limit = TCP_LIMIT
        elif opt is None:
            limit = _MIN_UDP
        else:
            limit = min(max(opt[0], _MIN_UDP), self.payload)
        qname_end = len(question) - 4
        key = question[:qname_end].lower() + question[qname_end:]
        ans: Answer = self.exact.get(key) or self._lookup(key, udp)  # type: ignore[assignment]
        if ans.steered or ecs is not None:
            return self._tailored(data, 12 + len(question), ans, edns, tail_i, ecs, peer, udp,
                                  question, limit)
        idx = (edns << 1) | (data[2] & 1)
        qt = (question[-4] << 8) | question[-3]
        k = ans.cid | ((qt if qt in COUNTED_QTYPES else OTHER) << 1) | udp
        self.counts[k] += 1
        resp = b"".join((data[:2], ans.heads[idx], question, ans.tails[tail_i]))
        if len(resp) > limit:
            return self._fit(data, question, ans, edns, tail_i, limit)
        return resp

    def _error(self, data: bytes, rcode: int, question: bytes | None,
               opt: tuple[int, int, int] | None, reason: str = "", udp: bool = True) -> bytes:
        """A response with no records: the header (opcode and RD kept),
        the question when it could be read, and an OPT when the query had one.
        A FORMERR counts as a malformed query, for ``reason``."""
        if rcode == FORMERR:
            self.count_event(MALFORMED, reason or "other")
        qid, qflags = struct.unpack("!HH", data[:4])
        flags = 0x8000 | (qflags & 0x7900) | (rcode & 0xF)
        ar = 1 if opt is not None else 0
        k = counters.key(LABELS.cid(("", rcode)), (question[-4] << 8) | question[-3]
                         if question else OTHER, udp)
        self.counts[k] += 1
        head = struct.pack("!HHHHHH", qid, flags, 1 if question else 0, 0, 0, ar)
        tail = b""
        if opt is not None:
            tail = opt_record(self.payload, bool(opt[2]), ext_rcode=rcode >> 4)
        return head + (question or b"") + tail

    def _servfail(self, data: bytes, udp: bool) -> bytes | None:
        if len(data) < 12 or data[2] & 0x80:
            self._drop("short" if len(data) < 12 else "response")
            return None
        question = None
        try:
            qend = _skip_name(data, 12, allow_pointer=False)
            if qend + 4 <= len(data):
                question = data[12 : qend + 4]
        except (FormErr, IndexError):
            pass
        return self._error(data, SERVFAIL, question, None, udp=udp)


def _skip_name(data: bytes, p: int, allow_pointer: bool) -> int:
    """Offset just past the name at ``p``; a pointer ends a name."""
    total = 0
    while True:
        ln = data[p]
        if ln == 0:
            return p + 1
        if ln & 0xC0 == 0xC0:
            if not allow_pointer:
                raise FormErr("compression pointer in the question", "question")
            data[p + 1]
            return p + 2
        if ln > 63:
            raise FormErr("bad label type", "label")
        total += ln + 1
        if total > 254:
            raise FormErr("name longer than 255 bytes", "label")
        p += ln + 1


def _skip_rr(data: bytes, p: int) -> int:
    p = _skip_name(data, p, allow_pointer=True)
    if p + 10 > len(data):
        raise FormErr("record truncated", "record")
    rdlen = (data[p + 8] << 8) | data[p + 9]
    end = p + 10 + rdlen
    if end > len(data):
        raise FormErr("record data truncated", "record")
    return end


def _find_ecs(data: bytes, p: int, end: int) -> bytes | None:
    """Check the EDNS options' framing; return the Client Subnet option's
    data (family, source, scope, address) if there is one."""
    ecs = None
    while p < end:
        if p + 4 > end:
            raise FormErr("EDNS option header truncated", "opt")
        code = (data[p] << 8) | data[p + 1]
        olen = (data[p + 2] << 8) | data[p + 3]
        if p + 4 + olen > end:
            raise FormErr("EDNS option data truncated", "opt")
        if code == 8:
            if ecs is not None:
                raise FormErr("two Client Subnet options", "ecs")
            ecs = data[p + 4 : p + 4 + olen]
        p += 4 + olen
    return ecs


def ecs_client(ecs: bytes) -> tuple[bytes, int]:
    """Validate a Client Subnet option (RFC 7871 section 6, checked as Knot
    and gdnsd do) and return (address padded to full length, source prefix)."""
    if len(ecs) < 4:
        raise FormErr("Client Subnet option shorter than 4 bytes", "ecs")
    family = (ecs[0] << 8) | ecs[1]
    source, scope = ecs[2], ecs[3]
    if family == 1:
        size = 4
    elif family == 2:
        size = 16
    else:
        raise FormErr(f"Client Subnet family {family}", "ecs")
    if source > size * 8:
        raise FormErr(f"Client Subnet source prefix {source} too long", "ecs")
    if scope:
        raise FormErr("Client Subnet scope must be 0 in a query", "ecs")
    addr = ecs[4:]
    if len(addr) != (source + 7) // 8:
        raise FormErr("Client Subnet address length does not match its prefix", "ecs")
    if source % 8 and addr[-1] & (0xFF >> (source % 8)):
        raise FormErr("Client Subnet address has bits set beyond its prefix", "ecs")
    return addr + bytes(size - len(addr)), source


def _valid_ecs(ecs: bytes) -> tuple[bytes, int] | None:
    """:func:`ecs_client`, or None (logged) for an option that means FORMERR."""
    try:
        return ecs_client(ecs)
    except FormErr as exc:
        log.debug("FORMERR: %r", exc)
        return None


def peer_address(peer: Peer) -> tuple[bytes, int]:
    """The packed source address of a query and its full prefix length."""
    if isinstance(peer, bytes):
        if peer[:2] == _AF_INET_LE or peer[:2] == _AF_INET_BE:
            return peer[4:8], 32
        return peer[8:24], 128
    if peer is None:
        return b"\x00\x00\x00\x00", 0
    packed = ipaddress.ip_address(peer[0]).packed
    return packed, len(packed) * 8


__all__ = ["REFUSED", "Responder"]
