"""Steering decisions for one snapshot, and their caches: the *steer* stage.

Theory of operation: an answer that depends on the client (a steered record
set) costs a GeoIP look-up and a steering decision, far more than the rest
of a query, so finished answers are cached per (entry, client key), where
the key is the Client Subnet option's bytes or the resolver's address.  A
hit is the answer, its tails with the ECS echo already in them and its
counter label: one dict look-up, then the responder glues bytes.  A miss
checks the option, places the client (cached too), decides, and stores the
result.  Entries without network rules (and a latency table without
networks) depend only on where the client is, so their answers are also
cached by location, which many database networks share.

An answer to a query with a Client Subnet option carries the option back
with the scope the answer depends on (see :mod:`geodns.ecs`); an answer
that is not steered has scope 0.

Every cache is bounded (:data:`MAX_DECISIONS`), starts empty with the
snapshot, and is forgotten when health changes (:meth:`Decisions.use_health`,
:meth:`Decisions.forget`), so it never serves an answer made stale by a
change.  Cached values hold only numbers, strings and bytes (an answer by
its number in :attr:`Decisions.answers`, a place by its fields): Python's
cyclic collector stops following such tuples after their first pass, so
its full collections do not walk a full cache (over a million objects,
some 2 s each time, bench/memory_bound.py).  For the same reason the
caches are plain dicts, which the collector stops following once it has
found only such values in them (it follows every entry of an
``OrderedDict`` at every pass), with the order of arrival in a deque.  Nothing here does I/O; the GeoIP reader and the health view are
handed in.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from typing import TYPE_CHECKING, TypeVar

from geodns import ecs, steermap
from geodns.compile import Answer, Steered, Tails
from geodns.counters import LABELS, Event
from geodns.ecs import Peer
from geodns.geo import IPAddress, Locator, Place
from geodns.resolve import MAX_CNAME_CHAIN, QNAME, SteerPoint
from geodns.steering import Decision, HealthView, Reason, Steering, SteerSpec

if TYPE_CHECKING:
    from geodns._udpbatch import Plane

log = logging.getLogger("geodns.wire")

MAX_DECISIONS = 500_000  # cached answers (and places); beyond it the oldest go first
# Answers the caches refer to: far more than the steered entries' variants
# (geodns.compile.MAX_VARIANTS each), which are the same objects again and
# again; an answer built past that cap is answered but not cached.
MAX_ANSWERS = 65_536
# A cached answer: the answer, its tails (geodns.compile.Tails; with the ECS
# echo for a query that sent the option, see echoed) and the number of its
# counter label (geodns.counters).
Hit = tuple[Answer, Tails, int]
# The same as kept in the cache: the answer by its number in Decisions.answers.
Kept = tuple[int, Tails, int]
# A place as kept: Place's fields after the address (the client is the key).
KeptPlace = tuple[int, float | None, float | None, str | None, str | None, str | None,
                  str | None, int | None, int | None]
Events = dict[tuple[str, str], int]


class Decisions:
    """Decides steered answers for one snapshot and caches them."""

    __slots__ = ("answer_ids", "answers", "by_location", "cache", "events", "health", "locator",
                 "order", "payload", "penalised", "places", "plane", "steering")

    def __init__(self, steering: Steering | None, locator: Locator | None,
                 health: HealthView | None, payload: int, events: Events,
                 plane: Plane | None = None) -> None:
        self.steering = steering
        # The C data plane of the same snapshot (geodns/_plane.c), taught
        # the answers it may give by itself (:meth:`_teach`), or None.
        self.plane = plane
        self.locator = locator
        self.health = health
        self.payload = payload
        self.events = events  # the responder's: cache misses are counted there
        # (entry index, client key) -> a finished answer.
        # Bounded first in, first out: nothing is ever emptied all at once
        # for being full.
        self.cache: dict[tuple[int, bytes], Kept] = {}
        self.places: dict[bytes, KeptPlace] = {}
        self.by_location: dict[tuple[object, ...], tuple[int, int]] = {}
        # The keys of each, oldest first.
        self.order: tuple[deque[tuple[int, bytes]], deque[bytes], deque[tuple[object, ...]]] = \
            (deque(), deque(), deque())
        # Every answer a cache refers to, by number (a bounded set: the
        # steered entries' variants, geodns.compile.MAX_VARIANTS each).
        self.answers: list[Answer] = []
        self.answer_ids: dict[int, int] = {}  # id(answer) -> its number
        # Whether penalties can reorder a map's ranking (geodns.steermap).
        self.penalised = health is not None and any(health.penalties.values())
        if plane is not None and self.penalised:
            plane.forget(True)

    def answer(self, entry: Answer | Steered, option: bytes | None, peer: Peer) -> Hit | None:
        """The steer stage: the answer for this client, its tails and its
        counter label.  ``entry`` is steered, or ``option`` (a Client Subnet
        option's data) is given; None means the option is malformed (FORMERR).
        """
        if isinstance(entry, Steered):
            if option is not None and len(option) > 2 and option[2]:
                key = (entry.index, option)
                kept = self.cache.get(key)
                if kept is None:
                    parsed = ecs.checked(option)
                    if parsed is None:
                        return None
                    return self._remember(key, self._decide(entry, *parsed, option))
                return self.answers[kept[0]], kept[1], kept[2]
            if option is not None and ecs.checked(option) is None:
                return None
            client, source = ecs.peer_address(peer)
            key = (entry.index, client)
            kept = self.cache.get(key)
            if kept is None:
                hit = self._remember(key, self._decide(entry, client, source, None))
            else:
                hit = self.answers[kept[0]], kept[1], kept[2]
            if option is None:
                return hit
            # Source prefix 0: steered by the resolver's address, scope 0.
            ans, _, cid = hit
            return ans, echoed(ans, option, 0, self.payload), cid
        if option is None or ecs.checked(option) is None:
            return None
        # Not steered: valid for everyone.
        return entry, echoed(entry, option, 0, self.payload), entry.cid

    def decision(self, st: Steered, client: bytes, source: int,
                 explain: bool = False) -> Decision:
        """The steering decision for a client network (``client`` packed, its
        first ``source`` bits significant).  Queries and ``explain`` both
        come here."""
        if self.steering is None or self.health is None:
            raise RuntimeError("a steered record without steering configured")
        return self._one(st.spec, client, source, explain)

    def forget(self) -> None:
        """Health changed: every cached answer may be wrong now."""
        if self.plane is not None:
            self.plane.forget(self.penalised)
        self.cache.clear()
        self.by_location.clear()
        self.order[0].clear()
        self.order[2].clear()
        self.answers.clear()
        self.answer_ids.clear()

    def use_health(self, health: HealthView) -> None:
        """Decide with another health view from now on (and forget every
        answer decided with the previous one)."""
        self.health = health
        self.penalised = any(health.penalties.values())
        self.forget()

    def entries(self) -> int:
        """Cached answers, by client and by location."""
        return len(self.cache) + len(self.by_location)

    # -- misses ------------------------------------------------------------------
    def _remember(self, key: tuple[int, bytes], hit: Hit) -> Hit:
        n = self._number(hit[0])
        if n is not None:
            _put(self.cache, self.order[0], key, (n, hit[1], hit[2]))
        return hit

    def _number(self, answer: Answer) -> int | None:
        """The number of an answer in :attr:`answers` (given one if new;
        None when :data:`MAX_ANSWERS` are numbered already)."""
        n = self.answer_ids.get(id(answer))
        if n is None:
            if len(self.answers) >= MAX_ANSWERS:
                return None
            n = self.answer_ids[id(answer)] = len(self.answers)
            self.answers.append(answer)  # kept alive here: its id stays its own
        return n

    def _decide(self, st: Steered, client: bytes, source: int, option: bytes | None) -> Hit:
        """A cache miss.  Entries without network rules (and a latency table
        without networks) depend only on where the client is, so their
        answers are also cached by location."""
        if st.by_location and self.steering is not None and not self.steering.has_networks \
                and self.steering.maps is None:
            place = self._place(client, source)
            lkey = (st.index, place.latitude, place.longitude, place.continent,
                    place.country, place.subdivision, place.asn)
            found = self.by_location.get(lkey)
            if found is None:
                ans, cid = self._steer(st, client, source)[:2]
                n = self._number(ans)
                if n is not None:
                    _put(self.by_location, self.order[2], lkey, (n, cid))
            else:
                ans, cid = self.answers[found[0]], found[1]
            scope = min(place.prefixlen, source)
        else:
            ans, cid, scope = self._steer(st, client, source)
        if option is None:
            return ans, ans.tails, cid
        return ans, echoed(ans, option, scope, self.payload), cid

    def _steer(self, st: Steered, client: bytes, source: int) -> tuple[Answer, int, int]:
        """Run steering: the answer, its counter label's number, its scope.
        An answer built from several decisions is valid only where all of
        them are: its scope is the longest of theirs (each is capped at the
        source prefix already); static records never narrow it.  It is
        counted under the last decision, the one whose PoP the client ends
        up at."""
        key = (Event.STEERING_MISS, "")
        self.events[key] = self.events.get(key, 0) + 1
        decisions = [d for _, d in self.chain(st, client, source)]
        ans = st.answer(decisions)
        last = decisions[-1]
        cid = LABELS.cid((st.zone, ans.rcode, last.pops[0] if last.pops else "", last.reason))
        if self.plane is not None and len(decisions) == 1:
            self._teach(st, client, last, ans, cid)
        return ans, cid, max(d.scope for d in decisions)

    def _teach(self, st: Steered, client: bytes, d: Decision, ans: Answer, cid: int) -> None:
        """Tell the C data plane that every client with this client's order
        of PoPs in the record set's map gets this answer: true of a decision
        made from the map (:func:`geodns.steermap.decide`) alone, with no
        fallback to another record set's map.  With penalties in the health
        view (they reorder by base score, which differs within an order),
        every client with this client's *ranking* (its database place, or
        piece of a network) instead.  Its scope the plane finds as
        :meth:`SteerMap.scope_at` does."""
        maps = self.steering.maps if self.steering is not None else None
        if d.reason == Reason.FALLBACK or not isinstance(maps, steermap.Maps):
            return
        m = maps.get(st.spec)
        if m is not None and m.c is not None and self.plane is not None:
            key = m.ranking_number(client) if self.penalised else m.order_at(client)
            self.plane.learn(st.index, m.c, key, ans, cid)

    def chain(self, st: Steered, client: bytes, source: int,
              explain: bool = False) -> list[tuple[SteerPoint, Decision]]:
        """Every decision an answer needs for one client network, with the
        steered record set it was made for: the first, then one for each
        record set that a chosen CNAME target leads to (never the same name
        twice, at most :data:`MAX_CNAME_CHAIN`)."""
        if self.steering is None or self.health is None:
            raise RuntimeError("a steered record without steering configured")
        point: SteerPoint | None = st.point
        seen = {st.qname or QNAME}
        out: list[tuple[SteerPoint, Decision]] = []
        while point is not None:
            decision = self._one(point.spec, client, source, explain)
            out.append((point, decision))
            seen.add(point.owner.lower())
            point = st.follow(point, decision)
            if point is not None and (point.owner.lower() in seen
                                      or len(out) >= MAX_CNAME_CHAIN):
                break
        return out

    def _one(self, spec: SteerSpec, client: bytes, source: int, explain: bool) -> Decision:
        """One decision: from the compiled map when there is one for this
        record set (geodns.steermap), else by :meth:`Steering.decide`."""
        assert self.steering is not None and self.health is not None
        maps = self.steering.maps
        if isinstance(maps, steermap.Maps):
            d = steermap.decide(maps, self.steering, spec, client, source, self.health,
                                self.penalised)
            if d is not None:
                if explain:  # the figures behind the ranking, and the map's range
                    shown = self.steering.decide(spec, ipaddress.ip_address(client), source,
                                                 self._place(client, source), self.health, True)
                    d.place, d.candidates = shown.place, shown.candidates
                    m = maps.get(d.spec or spec)
                    d.map = steermap.describe(m, client) if m is not None else None
                return d
        return self.steering.decide(spec, ipaddress.ip_address(client), source,
                                    self._place(client, source), self.health, explain)

    def _place(self, client: bytes, source: int) -> Place:
        key = client + bytes((source,))
        kept = self.places.get(key)
        if kept is not None:
            return Place(ipaddress.ip_address(client), *kept)
        place = self._locate(ipaddress.ip_address(client), source)
        _put(self.places, self.order[1], key, (
            place.prefixlen, place.latitude, place.longitude, place.continent, place.country,
            place.subdivision, place.city, place.accuracy_km, place.asn))
        return place

    def _locate(self, address: IPAddress, source: int) -> Place:
        if self.locator is None:
            return Place(address, 0)
        try:
            return self.locator.locate(address)
        except Exception:
            log.exception("GeoIP look-up failed for %s; treating it as unplaced", address)
            return Place(address, min(source, 32 if address.version == 4 else 128))


K = TypeVar("K")
V = TypeVar("V")


def echoed(ans: Answer, option: bytes, scope: int, payload: int) -> Tails:
    """``ans``'s tails with the ECS echo (:func:`geodns.ecs.tails`).  For
    a signed answer whose signed form does not depend on the name, the body
    with DO is the signed form's: a query with DO gets that form (the sign
    stage), chosen here once with the decision rather than per query."""
    signed = ans.signed
    return ecs.tails(ans.tails[0], option, scope, payload,
                     signed.tails[0] if isinstance(signed, Answer) else None)


def _put(cache: dict[K, V], order: deque[K], key: K, value: V) -> None:
    """Add a new entry; when the cache is full the oldest goes first."""
    if len(cache) >= MAX_DECISIONS:
        del cache[order.popleft()]
    cache[key] = value
    order.append(key)
