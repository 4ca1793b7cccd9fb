"""Choosing the PoPs that answer a steered name for one client.  Pure.

Theory of operation, in the order :func:`decide` applies it:

1. *Candidates* are the PoPs the record lists.
2. *Rules* are tried in the order written; the first whose client networks
   (CIDR) or places (``EU``, ``NA-US``, ``NA-US-CA``) match the client
   restricts the candidates to its PoPs, in the order the rule gives.
3. Each candidate gets an *estimated latency*: a measured figure from the
   operator's latency table when one covers this client, else the
   great-circle distance at fibre speed (RTT ms = km / 100).  A client with
   a country but no coordinates (a Country database) prefers PoPs in its
   country, then its continent, then the default order.  The *score* is
   that latency scaled by the PoP's *bias* (Route 53 style: +50 makes the PoP
   look half as far, -50 half again as far) plus the health view's penalty
   for a slow PoP.  Lowest score wins; ties go to the PoP listed first in the
   server configuration, so the choice is deterministic.  A client the
   database cannot place gets the configured default order instead.
4. *Health*: down and draining PoPs are never chosen while an up (or not yet
   probed) candidate exists.  When none is left, the record's ``all_down``
   policy decides: fail open (choose as if all were healthy), fail closed
   (SERVFAIL or NODATA), a static fallback answer, or another steered record.
5. The answer's *ECS scope* is the prefix length of the network the decision
   really depends on: the database network, narrowed by any rule or latency
   network that matched or that lies inside it, never longer than the query's
   source prefix.

The same :func:`decide` serves queries (through the caches of
:mod:`geodns.decisions`, keyed by question and client network) and ``geodns
explain``; it records every candidate's figures so that an explanation is
the decision itself, not a re-enactment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from geodns import names
from geodns.geo import IPAddress, IPNetwork, Place
from geodns.health.spec import CheckSpec
from geodns.health.states import DOWN, DRAINING, STATES, UNKNOWN, UP, State
from geodns.health.view import HealthView
from geodns.problems import Where
from geodns.rdata import RData

__all__ = ["DOWN", "DRAINING", "STATES", "UNKNOWN", "UP", "AllDown", "CheckSpec", "Decision",
           "HealthView", "LatencyEntry", "Outcome", "Pop", "Reason", "Rule", "State",
           "SteerSpec", "Steering"]


class AllDown(StrEnum):
    """What a steered record answers when every candidate PoP is down."""

    FAIL_OPEN = "fail-open"  # choose as if all were healthy
    SERVFAIL = "servfail"
    NODATA = "nodata"
    ANSWER = "answer"  # a static fallback answer
    USE = "use"  # another steered record


class Outcome(StrEnum):
    """What a decision answers with."""

    POPS = "pops"  # the chosen PoPs' values
    SERVFAIL = "servfail"
    NODATA = "nodata"
    ANSWER = "answer"  # the record's fallback answer


class Reason(StrEnum):
    """Why a decision came out as it did (a metrics label value)."""

    PROXIMITY = "proximity"
    RULE = "rule"
    COUNTRY = "country"
    DEFAULT_ORDER = "default-order"
    FALLBACK = "fallback"
    FAIL_OPEN = "fail-open"
    FAIL_CLOSED = "fail-closed"


FAIL_OPEN, SERVFAIL, NODATA, ANSWER, USE = (AllDown.FAIL_OPEN, AllDown.SERVFAIL, AllDown.NODATA,
                                            AllDown.ANSWER, AllDown.USE)
EARTH_RADIUS_KM = 6371.0
KM_PER_MS_RTT = 100.0  # light in fibre: ~200 km per ms one way


@dataclass(frozen=True, slots=True)
class Pop:
    id: str
    latitude: float
    longitude: float
    city: str | None = None
    country: str | None = None
    continent: str | None = None
    bias: float = 0.0  # -99..99
    order: int = 0  # position in the configuration: the tie-breaker


@dataclass(frozen=True, slots=True)
class Rule:
    pops: tuple[str, ...]
    networks: tuple[IPNetwork, ...] = ()
    places: frozenset[str] = frozenset()
    where: Where | None = None

    def describe(self) -> str:
        parts = [str(n) for n in self.networks] + sorted(self.places)
        return f"{' '.join(parts)} -> {', '.join(self.pops)}"


@dataclass(frozen=True, slots=True)
class LatencyEntry:
    """Measured round-trip times (ms) from clients in a network, an ASN or a
    country (in that order of precedence)."""

    latencies: Mapping[str, float]
    network: IPNetwork | None = None
    country: str | None = None
    asn: int | None = None


@dataclass(frozen=True, slots=True)
class SteerSpec:
    """A steered record set, as validated from a zone file."""

    owner: bytes  # wire name (case as written)
    rtype: int
    ttl: int
    values: Mapping[str, tuple[RData, ...]]  # pop id -> its answer records
    answers: int = 1
    rules: tuple[Rule, ...] = ()
    all_down: AllDown = AllDown.FAIL_OPEN
    fallback: tuple[RData, ...] = ()  # all_down == ANSWER
    use: bytes | None = None  # all_down == USE: another steered name (lower-case wire)
    where: Where | None = None
    # The record's own checks per PoP (on top of the PoP's): CheckSpec tuples.
    checks: Mapping[str, tuple[CheckSpec, ...]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[bytes, int]:
        return (self.owner.lower(), self.rtype)


@dataclass(frozen=True, slots=True)
class Candidate:
    pop: str
    distance_km: float | None
    latency_ms: float | None
    latency_source: str  # "distance", "table" or "default order"
    bias: float
    health: State
    penalty_ms: float
    score: float
    eligible: bool


@dataclass
class Decision:
    outcome: Outcome
    pops: tuple[str, ...]
    reason: Reason
    scope: int
    place: Place | None = None
    rule: Rule | None = None
    candidates: list[Candidate] = field(default_factory=list)
    via: list[str] = field(default_factory=list)  # names followed by all_down: use
    spec: SteerSpec | None = None  # the record whose answers are given
    map: dict[str, Any] | None = None  # the compiled map's range and ranking (explain)

    @property
    def key(self) -> tuple[object, ...]:
        """What the answer bytes depend on."""
        return (self.outcome, self.spec.owner if self.spec else b"", *self.pops)


def effective_state(health: HealthView, spec: SteerSpec, pop: str) -> State:
    """A PoP's state for one record: down where the record's own check
    fails at that PoP, else the PoP's."""
    state = health.state(pop)
    if spec.checks and state not in (DOWN, DRAINING) and \
            health.record_state(spec.key, pop) == DOWN:
        return DOWN
    return state


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of the Earth's mean radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _common_prefix(a: IPAddress, b: IPAddress) -> int:
    bits = 32 if a.version == 4 else 128
    diff = int(a) ^ int(b)
    return bits - diff.bit_length()


def _narrow(scope: int, client: IPAddress, network: IPNetwork) -> int:
    """Narrow ``scope`` so that the client's scope network either lies inside
    ``network`` (which then matched) or does not overlap it."""
    if network.version != client.version:
        return scope
    if client in network:
        return max(scope, network.prefixlen)
    # Not inside: the scope network must stop short of the first differing bit.
    if network.prefixlen > scope and _common_prefix(client, network.network_address) >= scope:
        return max(scope, _common_prefix(client, network.network_address) + 1)
    return scope


@dataclass
class Steering:
    """The configuration steering decides with (PoPs, default order, latency
    table, named specs for ``all_down: use``)."""

    pops: Mapping[str, Pop]
    default_order: tuple[str, ...] = ()
    latency: tuple[LatencyEntry, ...] = ()
    specs: Mapping[tuple[bytes, int], SteerSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Per PoP, what the distance formula needs, computed once.
        self._trig = {p.id: (math.radians(p.latitude), math.radians(p.longitude),
                             math.cos(math.radians(p.latitude))) for p in self.pops.values()}
        # Whether any decision can depend on more than the client's location.
        self.has_networks = any(e.network is not None for e in self.latency)
        rank = {p: i for i, p in enumerate(self.default_order)}
        self._rank = {p: rank.get(p, len(rank) + pop.order) for p, pop in self.pops.items()}
        # The compiled maps (a geodns.steermap.Maps, which knows this module,
        # not the other way round), once built: set in one assignment by the
        # thread that builds them.
        self.maps: object | None = None
        self.map_build: object | None = None  # the geodns.steermap.Build making them

    def decide(self, spec: SteerSpec, client: IPAddress, source_prefix: int, place: Place,
               health: HealthView, explain: bool = False) -> Decision:
        """Choose the PoPs for a client.  With ``explain`` the decision also
        lists every candidate's figures; the choice is the same either way."""
        return self._decide(spec, client, source_prefix, place, health, [], explain)

    def _decide(self, spec: SteerSpec, client: IPAddress, source_prefix: int, place: Place,
                health: HealthView, via: list[str], explain: bool) -> Decision:
        pops = self.pops
        scope = place.prefixlen
        candidates: Iterable[str] = spec.values
        reason = Reason.PROXIMITY
        matched: Rule | None = None
        for rule in spec.rules:
            hit = True
            if rule.networks:
                for net in rule.networks:
                    scope = _narrow(scope, client, net)
                hit = any(net.version == client.version and client in net
                          for net in rule.networks)
            if hit and rule.places:
                hit = bool(place.codes() & rule.places)
            if hit:
                matched = rule
                candidates = rule.pops
                reason = Reason.RULE
                break

        table = None
        if self.latency:
            table = self._latency_for(client, place)
            for entry in self.latency:
                if entry.network is not None:
                    scope = _narrow(scope, client, entry.network)

        lat = place.latitude
        lon = place.longitude
        unplaced = (lat is None or lon is None) and table is None
        if lat is not None and lon is not None:
            p1, l1 = math.radians(lat), math.radians(lon)
            c1 = math.cos(p1)
        # rows: (score, tie-break, pop, state, eligible, distance, latency, source, penalty)
        rows = []
        for p in candidates:
            pop = pops.get(p)
            if pop is None:
                continue
            state = effective_state(health, spec, p)
            penalty = health.penalty_ms(p)
            distance = None
            if lat is not None and lon is not None:
                p2, l2, c2 = self._trig[p]
                a = math.sin((p2 - p1) / 2) ** 2 + c1 * c2 * math.sin((l2 - l1) / 2) ** 2
                distance = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
            if table is not None and p in table.latencies:
                latency, source = table.latencies[p], "table"
            elif distance is not None:
                latency, source = distance / KM_PER_MS_RTT, "distance"
            else:
                latency, source = None, "default order"
            if unplaced:
                # No coordinates (a Country database, or an unknown network):
                # same country first, then same continent, then default order.
                near = 0 if place.country and pop.country == place.country else (
                    1 if place.continent and pop.continent == place.continent else 2)
                score = near * 1000 + self._rank[p] + penalty / 1e6
            else:
                score = (latency or 0.0) * (1.0 - pop.bias / 100.0) + penalty
            rows.append((score, pop.order, p, state, state in (UP, UNKNOWN),
                         distance, latency, source, penalty))
        if unplaced and reason == Reason.PROXIMITY:
            reason = Reason.COUNTRY if place.country or place.continent \
                else Reason.DEFAULT_ORDER
        rows.sort()
        scope = min(scope, source_prefix)
        scored = [Candidate(r[2], r[5], r[6], r[7], pops[r[2]].bias, r[3], r[8], r[0], r[4])
                  for r in rows] if explain else []

        def use(other: SteerSpec, through: list[str]) -> Decision:
            inner = self._decide(other, client, source_prefix, place, health, through, explain)
            inner.scope = min(inner.scope, scope)
            inner.reason = Reason.FALLBACK
            inner.candidates = scored + inner.candidates
            return inner

        decision = self.pick(spec, [r[2] for r in rows], [r[2] for r in rows if r[4]], reason,
                             scope, place, matched, scored, via, use)
        assert decision is not None  # use() always decides
        return decision

    def pick(self, spec: SteerSpec, ranked: Sequence[str], healthy: Sequence[str],
             reason: Reason, scope: int, place: Place | None, rule: Rule | None,
             scored: list[Candidate], via: list[str],
             use: Callable[[SteerSpec, list[str]], Decision | None]) -> Decision | None:
        """The decision once the candidates are ranked (``ranked``, best
        first) and those fit to serve are known (``healthy``, in that
        order): the first healthy ones, or, when none is, the record's
        ``all_down`` policy; ``use`` decides for the record named by
        ``all_down: use`` (with the names followed so far)."""
        if healthy:
            return Decision(Outcome.POPS, tuple(healthy[: spec.answers]), reason, scope, place,
                            rule, scored, via, spec)
        # Every candidate is down or draining.
        if spec.all_down == FAIL_OPEN and ranked:
            return Decision(Outcome.POPS, tuple(ranked[: spec.answers]), Reason.FAIL_OPEN,
                            scope, place, rule, scored, via, spec)
        if spec.all_down == ANSWER:
            return Decision(Outcome.ANSWER, (), Reason.FALLBACK, scope, place, rule, scored,
                            via, spec)
        other = self.specs.get((spec.use or b"", spec.rtype))
        if spec.all_down == USE and other is not None and len(via) < 8:
            return use(other, [*via, names.to_text(other.owner)])
        outcome = Outcome.NODATA if spec.all_down == NODATA else Outcome.SERVFAIL
        return Decision(outcome, (), Reason.FAIL_CLOSED, scope, place, rule, scored, via, spec)

    def _latency_for(self, client: IPAddress, place: Place) -> LatencyEntry | None:
        best: LatencyEntry | None = None
        for entry in self.latency:
            if entry.network is not None and entry.network.version == client.version \
                    and client in entry.network \
                    and (best is None or best.network is None
                         or entry.network.prefixlen > best.network.prefixlen):
                best = entry
        if best is not None:
            return best
        if place.asn is not None:
            for entry in self.latency:
                if entry.asn is not None and entry.asn == place.asn:
                    return entry
        for entry in self.latency:
            if entry.country is not None and entry.country == place.country:
                return entry
        return None

