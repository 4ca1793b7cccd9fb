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
change.  Nothing here does I/O; the GeoIP reader and the health view are
handed in.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict

from geodns import ecs, steermap
from geodns.compile import Answer, Steered
from geodns.counters import LABELS, Event
from geodns.ecs import Peer
from geodns.geo import IPAddress, Locator, Place
from geodns.resolve import MAX_CNAME_CHAIN, QNAME, SteerPoint
from geodns.steering import Decision, HealthView, Steering, SteerSpec

log = logging.getLogger("geodns.wire")

MAX_DECISIONS = 500_000  # cached answers (and places); beyond it the oldest go first
Tails = tuple[bytes, bytes, bytes]
# A cached answer: the answer, its tails (with the ECS echo for a query that
# sent the option) and the number of its counter label (geodns.counters).
Hit = tuple[Answer, Tails, int]
Events = dict[tuple[str, str], int]


class Decisions:
    """Decides steered answers for one snapshot and caches them."""

    __slots__ = ("by_location", "cache", "events", "health", "locator", "payload", "penalised",
                 "places", "steering")

    def __init__(self, steering: Steering | None, locator: Locator | None,
                 health: HealthView | None, payload: int, events: Events) -> None:
        self.steering = steering
        self.locator = locator
        self.health = health
        self.payload = payload
        self.events = events  # the responder's: cache misses are counted there
        # (entry index, client key) -> a finished answer.
        # Bounded first in, first out: nothing is ever emptied all at once
        # for being full.
        self.cache: OrderedDict[tuple[int, bytes], Hit] = OrderedDict()
        self.places: OrderedDict[bytes, Place] = OrderedDict()
        self.by_location: OrderedDict[tuple[object, ...], tuple[Answer, int]] = OrderedDict()
        # Whether penalties can reorder a map's ranking (geodns.steermap).
        self.penalised = health is not None and any(health.penalties.values())

    def answer(self, entry: Answer | Steered, option: bytes | None, peer: Peer) -> Hit | None:
        """The steer stage: the answer for this client, its tails and its
        counter label.  ``entry`` is steered, or ``option`` (a Client Subnet
        option's data) is given; None means the option is malformed (FORMERR).
        """
        if isinstance(entry, Steered):
            if option is not None and len(option) > 2 and option[2]:
                key = (entry.index, option)
                hit = self.cache.get(key)
                if hit is None:
                    parsed = ecs.checked(option)
                    if parsed is None:
                        return None
                    hit = self._remember(key, self._decide(entry, *parsed, option))
                return hit
            if option is not None and ecs.checked(option) is None:
                return None
            client, source = ecs.peer_address(peer)
            key = (entry.index, client)
            hit = self.cache.get(key) or self._remember(
                key, self._decide(entry, client, source, None))
            if option is None:
                return hit
            # Source prefix 0: steered by the resolver's address, scope 0.
            ans, _, cid = hit
            return ans, ecs.tails(ans.tails[0], option, 0, self.payload), cid
        if option is None or ecs.checked(option) is None:
            return None
        # Not steered: valid for everyone.
        return entry, ecs.tails(entry.tails[0], option, 0, self.payload), entry.cid

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
        self.cache.clear()
        self.by_location.clear()

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
        if len(self.cache) >= MAX_DECISIONS:
            self.cache.popitem(last=False)
        self.cache[key] = hit
        return hit

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
                found = self._steer(st, client, source)[:2]
                if len(self.by_location) >= MAX_DECISIONS:
                    self.by_location.popitem(last=False)
                self.by_location[lkey] = found
            ans, cid = found
            scope = min(place.prefixlen, source)
        else:
            ans, cid, scope = self._steer(st, client, source)
        if option is None:
            return ans, ans.tails, cid
        return ans, ecs.tails(ans.tails[0], option, scope, self.payload), cid

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
        return ans, cid, max(d.scope for d in decisions)

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
        place = self.places.get(key)
        if place is None:
            place = self._locate(ipaddress.ip_address(client), source)
            if len(self.places) >= MAX_DECISIONS:
                self.places.popitem(last=False)
            self.places[key] = place
        return place

    def _locate(self, address: IPAddress, source: int) -> Place:
        if self.locator is None:
            return Place(address, 0)
        try:
            return self.locator.locate(address)
        except Exception:
            log.exception("GeoIP look-up failed for %s; treating it as unplaced", address)
            return Place(address, min(source, 32 if address.version == 4 else 128))
