"""Compiled steering maps: address ranges to ranked PoPs, built once per
database and steering set-up.  Pure (the database file is read, nothing else).

Theory of operation.  Without a map, a client network never seen before
costs a GeoIP look-up and a full :meth:`Steering.decide` (great-circle
distances, rules, sorting).  But a decision depends on the client only
through (a) the database record its address falls in, (b) which rule and
latency-table networks contain it.  So, at snapshot build time (in the
build's worker thread):

1. :func:`database_ranges` walks the MaxMind search tree once per database
   (kept on the locator, shared by every snapshot that uses it) and cuts
   the IPv4 and IPv6 address spaces into ranges with one data record each
   (neighbours with the same record merged; the IPv4 subtree's aliases in
   the IPv6 tree are copied, not walked again).  Each record is turned into
   a :class:`Place` by the locator's own code, once.
2. :func:`compile_map` builds, per distinct *set-up* (a record's PoPs and
   rules; the server's PoPs, default order and latency table), a
   :class:`SteerMap`: the ranges are cut again at every rule and latency
   network boundary, each piece is decided once per distinct (place,
   networks containing it) by :meth:`Steering.decide` itself, with a health
   view where every PoP is unknown and unpenalised, and what is kept is the
   *ranking*: the candidates in order with their base scores.  Neighbouring
   pieces with the same ranking are merged.  Two arrays of range starts
   are kept: one where the ranking *or a base score* changes, one where the
   order of the PoPs (or the rule, or the reason) changes.
3. A query bisects its (padded) client address, then applies health exactly
   as :meth:`Steering._decide` does: down and draining PoPs are skipped, the
   health view's penalty is added to the base score (which can reorder),
   then ``answers`` and the ``all_down`` policy.  Health changes and drains
   never touch the map.

ECS scope: with no penalty in the health view the answer within a run of
ranges with the same order of PoPs cannot change, so the scope is the
widest prefix around the client inside that run; with penalties, base
scores matter too, so the narrower run of equal scores bounds it.  Either
way it is never longer than the query's source prefix.

What a map does not cover yet (an ASN database, a locator that is not a
MaxMind reader) has no map; :mod:`geodns.decisions` then decides as before.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from geodns.geo import IPAddress, IPNetwork, Locator, MaxMindLocator, Place
from geodns.steering import (
    UNKNOWN,
    UP,
    Decision,
    HealthView,
    Outcome,
    Reason,
    Rule,
    Steering,
    SteerSpec,
    effective_state,
)

log = logging.getLogger("geodns.steermap")

NEUTRAL = HealthView()  # every PoP unknown, no penalty: the base ranking
_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1


@dataclass(frozen=True, slots=True)
class Ranked:
    """One ranking: what the decision is before health is applied."""

    pops: tuple[str, ...]  # best first (base score, then configuration order)
    scores: tuple[float, ...]  # base score of each
    orders: tuple[int, ...]  # Pop.order of each (the tie-breaker)
    unplaced: bool  # scores rank by country/continent/default order (penalty / 1e6)
    reason: Reason
    rule: Rule | None


class Family:
    """One address family's ranges: ``starts`` sorted, ``ranked[i]`` holds
    from ``starts[i]`` to ``starts[i + 1] - 1``; ``runs`` are the starts
    where the order of PoPs changes (a subset of ``starts``)."""

    __slots__ = ("bits", "ranked", "runs", "starts")

    def __init__(self, bits: int, starts: Sequence[int], ranked: array[int],
                 runs: Sequence[int]) -> None:
        self.bits = bits
        self.starts = starts
        self.ranked = ranked
        self.runs = runs

    def __len__(self) -> int:
        return len(self.starts)

    def span(self, address: int, runs: bool) -> tuple[int, int]:
        """First and last address of the range (or run) holding ``address``."""
        starts = self.runs if runs else self.starts
        i = bisect_right(starts, address) - 1
        last = starts[i + 1] - 1 if i + 1 < len(starts) else (1 << self.bits) - 1
        return starts[i], last


def widest_prefix(address: int, first: int, last: int, bits: int) -> int:
    """The shortest prefix length whose network around ``address`` lies
    within ``first``..``last``."""
    p = 0
    if first > 0:
        p = bits - (address ^ (first - 1)).bit_length() + 1
    if last < (1 << bits) - 1:
        p = max(p, bits - (address ^ (last + 1)).bit_length() + 1)
    return p


class SteerMap:
    """The compiled map of one set-up: ranges to rankings, per family."""

    __slots__ = ("build_seconds", "rankings", "spec", "v4", "v6")

    def __init__(self, spec: SteerSpec, rankings: list[Ranked], v4: Family, v6: Family,
                 build_seconds: float) -> None:
        self.spec = spec
        self.rankings = rankings
        self.v4 = v4
        self.v6 = v6
        self.build_seconds = build_seconds

    def locate(self, client: bytes) -> tuple[Family, int, int]:
        """The family, address and offset (prefix bits above it) that hold
        the client: an IPv6 address in an alias of the IPv4 subtree
        (``::ffff:0:0/96``, ``2002::/16``) is looked up in the IPv4 ranges."""
        if len(client) == 4:
            return self.v4, int.from_bytes(client), 0
        fam = self.v6
        a = int.from_bytes(client)
        ri = fam.ranked[bisect_right(fam.starts, a) - 1]
        if ri >= 0:
            return fam, a, 0
        shift = -1 - ri
        return self.v4, (a >> shift) & _V4_MAX, 96 - shift

    def look_up(self, client: bytes) -> Ranked:
        if len(client) == 4:
            fam = self.v4
            return self.rankings[fam.ranked[bisect_right(fam.starts, int.from_bytes(client)) - 1]]
        fam, a, _ = self.locate(client)
        return self.rankings[fam.ranked[bisect_right(fam.starts, a) - 1]]

    def scope(self, client: bytes, source: int, penalised: bool) -> int:
        """The ECS scope of an answer decided from this map (see the module
        docstring), at most ``source``."""
        fam, a, above = self.locate(client)
        first, last = fam.span(a, not penalised)
        return min(above + widest_prefix(a, first, last, fam.bits), source)

    def size_bytes(self) -> int:
        """Roughly what the arrays hold (Python ints of the IPv6 starts
        counted at 36 bytes each, list slots at 8)."""
        total = 0
        for fam in (self.v4, self.v6):
            for seq in (fam.starts, fam.runs):
                total += seq.itemsize * len(seq) if isinstance(seq, array) else 44 * len(seq)
            total += fam.ranked.itemsize * len(fam.ranked)
        return total


class Maps:
    """Every compiled map of a snapshot, by the record set it serves."""

    def __init__(self, by_key: dict[tuple[bytes, int], SteerMap],
                 by_setup: dict[tuple[object, ...], SteerMap], database: object) -> None:
        self.by_key = by_key
        self.by_setup = by_setup  # reused by the next build when nothing it depends on changed
        self.database = database

    def get(self, spec: SteerSpec) -> SteerMap | None:
        m = self.by_key.get(spec.key)
        if m is None:
            return None
        return m if m.spec is spec or _setup(m.spec) == _setup(spec) else None


# -- query time -------------------------------------------------------------------
def decide(maps: Maps, steering: Steering, spec: SteerSpec, client: bytes, source: int,
           health: HealthView, penalised: bool, via: list[str] | None = None
           ) -> Decision | None:
    """The decision :meth:`Steering.decide` makes for this client, from the
    map; None when the map cannot give it (no map for a record it needs)."""
    m = maps.get(spec)
    if m is None:
        return None
    r = m.look_up(client)
    scope = m.scope(client, source, penalised)
    pops = r.pops
    if penalised:  # penalties can reorder: as Steering.decide scores them
        scale = 1e-6 if r.unplaced else 1.0
        rows = sorted(zip([s + health.penalty_ms(p) * scale
                           for s, p in zip(r.scores, pops, strict=True)],
                          r.orders, pops, strict=True))
        pops = tuple(row[2] for row in rows)
    healthy = [p for p in pops if effective_state(health, spec, p) in (UP, UNKNOWN)]

    def use(other: SteerSpec, through: list[str]) -> Decision | None:
        inner = decide(maps, steering, other, client, source, health, penalised, through)
        if inner is None:
            return None
        # Valid only where both rankings hold: the longer prefix.
        inner.scope = max(inner.scope, scope)
        inner.reason = Reason.FALLBACK
        return inner

    return steering.pick(spec, pops, healthy, r.reason, scope, None, r.rule, [],
                         via if via is not None else [], use)


# -- the database, cut into ranges ------------------------------------------------
@dataclass(frozen=True, slots=True)
class DatabaseRanges:
    """The database's address space in ranges with one record each: range
    ``i`` of a family starts at ``starts[i]`` and is at ``places[keys[i]]``
    (``places[0]``: no record)."""

    v4_starts: array[int]
    v4_keys: array[int]
    v6_starts: list[int]
    v6_keys: array[int]
    places: list[Place]
    build_seconds: float


_ranges_lock = threading.Lock()


def database_ranges(locator: Locator | None) -> DatabaseRanges | None:
    """The locator's database in ranges (computed once per locator and kept
    on it), or None for a locator a map cannot be built from."""
    if not isinstance(locator, MaxMindLocator) or locator.asn_reader is not None:
        return None
    with _ranges_lock:
        found: DatabaseRanges | None = getattr(locator, "_steermap_ranges", None)
        if found is None:
            found = _walk(locator)
            locator._steermap_ranges = found  # type: ignore[attr-defined]
        return found


def _walk(locator: MaxMindLocator) -> DatabaseRanges:
    t0 = time.perf_counter()
    meta = locator.reader.metadata()
    with open(locator.path, "rb") as f:  # the search tree is at the start of the file
        tree = f.read(meta.node_count * meta.record_size * 2 // 8)
    node_count: int = meta.node_count
    size = meta.record_size
    step = size * 2 // 8

    def children(node: int) -> tuple[int, int]:
        o = node * step
        if size == 24:
            return int.from_bytes(tree[o:o + 3]), int.from_bytes(tree[o + 3:o + 6])
        if size == 28:
            x = int.from_bytes(tree[o:o + 7])
            return ((x >> 4) & 0xF000000) | (x >> 32), x & 0xFFFFFFF
        return int.from_bytes(tree[o:o + 4]), int.from_bytes(tree[o + 4:o + 8])

    # What a decision reads of a place; records that agree on it share a key.
    places: list[Place] = [Place(ipaddress.IPv4Address(0), 0)]
    by_fields: dict[tuple[object, ...], int] = {}
    index: dict[int, int] = {node_count: 0}  # record pointer -> places index

    def key_of(record: int, start: int, bits: int) -> int:
        address: IPAddress = ipaddress.IPv4Address(start) if bits == 32 \
            else ipaddress.IPv6Address(start)
        place = locator.locate(address)
        fields = (place.latitude, place.longitude, place.continent, place.country,
                  place.subdivision, place.asn)
        k = by_fields.get(fields)
        if k is None:
            k = by_fields[fields] = len(places)
            places.append(replace(place, address=ipaddress.IPv4Address(0), prefixlen=0))
        index[record] = k
        return k

    def collect(root: int, bits: int, ipv4_root: int,
                starts: list[int] | array[int], keys: array[int]) -> None:
        """Every leaf below ``root`` in address order, neighbours with the
        same key merged.  An alias of the IPv4 subtree (reached again in
        the IPv6 tree) becomes a marker saying where its IPv4 address sits:
        the look-up goes on in the IPv4 ranges."""
        stack = [(root, 0, 0)]
        pop, push = stack.pop, stack.append
        last = -2 ** 40
        get = index.get
        while stack:
            node, depth, value = pop()
            if node >= node_count or (node == ipv4_root and depth > 0):
                if node == ipv4_root:
                    k = -1 - (bits - depth - 32)
                else:
                    k = get(node, -1)
                    if k < 0:
                        k = key_of(node, value << (bits - depth), bits)
                if k != last:
                    starts.append(value << (bits - depth))
                    keys.append(k)
                    last = k
                continue
            left, right = children(node)
            depth += 1
            value <<= 1
            push((right, depth, value | 1))
            push((left, depth, value))

    v4_starts, v4_keys = array("L"), array("l")
    v6_starts: list[int] = []
    v6_keys = array("l")
    if meta.ip_version == 4:
        collect(0, 32, -1, v4_starts, v4_keys)
        v6_starts.append(0)
        v6_keys.append(0)
    else:
        ipv4_root = 0
        for _ in range(96):
            if ipv4_root >= node_count:
                break
            ipv4_root = children(ipv4_root)[0]
        if ipv4_root < node_count:
            collect(ipv4_root, 32, -1, v4_starts, v4_keys)
            collect(0, 128, ipv4_root, v6_starts, v6_keys)
        else:  # no IPv4 subtree: IPv4 addresses all share one record (or none)
            v4_starts.append(0)
            v4_keys.append(0 if ipv4_root == node_count else key_of(ipv4_root, 0, 32))
            collect(0, 128, -1, v6_starts, v6_keys)
    return DatabaseRanges(v4_starts, v4_keys, v6_starts, v6_keys, places,
                          time.perf_counter() - t0)


# -- one set-up's map -------------------------------------------------------------
def _setup(spec: SteerSpec) -> tuple[object, ...]:
    """What a record's map depends on besides the server's steering."""
    return (tuple(spec.values), tuple((r.pops, r.networks, r.places) for r in spec.rules))


def _steering_setup(steering: Steering) -> tuple[object, ...]:
    return (tuple(steering.pops.values()), steering.default_order,
            tuple((tuple(sorted(e.latencies.items())), e.network, e.country, e.asn)
                  for e in steering.latency))


def compile_maps(steering: Steering, locator: Locator | None, previous: Maps | None = None
                 ) -> Maps | None:
    """A map for every steered record set of ``steering`` (one per distinct
    set-up), reusing ``previous`` maps made from the same database and
    steering.  None when the locator cannot be mapped."""
    ranges = database_ranges(locator)
    if ranges is None or not steering.specs:
        return None
    base = _steering_setup(steering)
    reuse = previous.by_setup if previous is not None and previous.database is ranges else {}
    by_setup: dict[tuple[object, ...], SteerMap] = {}
    by_key: dict[tuple[bytes, int], SteerMap] = {}
    for key, spec in steering.specs.items():
        setup = (base, _setup(spec))
        m = by_setup.get(setup) or reuse.get(setup)
        if m is None:
            m = compile_map(steering, spec, ranges)
            if m is None:
                continue  # decided without a map
        by_setup[setup] = m
        by_key[key] = m
    return Maps(by_key, by_setup, ranges)


def _boundaries(networks: Sequence[IPNetwork], version: int) -> list[int]:
    points = set()
    for net in networks:
        if net.version == version:
            points.add(int(net.network_address))
            points.add(int(net.broadcast_address) + 1)
    return sorted(points)


def compile_map(steering: Steering, spec: SteerSpec, ranges: DatabaseRanges
                ) -> SteerMap | None:
    """The map of one record set's set-up (see the module docstring), or
    None when an IPv6 network of its rules or latency table overlaps an
    alias of the IPv4 subtree (not mapped yet)."""
    t0 = time.perf_counter()
    networks = [n for r in spec.rules for n in r.networks] + \
        [e.network for e in steering.latency if e.network is not None]
    rankings: list[Ranked] = []
    ranking_ids: dict[Ranked, int] = {}
    # (place index, networks containing the piece) -> ranking id
    decided: dict[tuple[int, tuple[bool, ...]], int] = {}

    def rank(k: int, start: int, bits: int, inside: tuple[bool, ...]) -> int:
        found = decided.get((k, inside))
        if found is not None:
            return found
        address: IPAddress = ipaddress.IPv4Address(start) if bits == 32 \
            else ipaddress.IPv6Address(start)
        place = replace(ranges.places[k], address=address)
        d = steering.decide(spec, address, bits, place, NEUTRAL, explain=True)
        if d.outcome != Outcome.POPS or d.spec is not spec:
            r = Ranked((), (), (), False, Reason.PROXIMITY, d.rule)  # no candidate at all
        else:
            table = steering._latency_for(address, place) if steering.latency else None
            r = Ranked(tuple(c.pop for c in d.candidates),
                       tuple(c.score for c in d.candidates),
                       tuple(steering.pops[c.pop].order for c in d.candidates),
                       not place.placed and table is None, d.reason, d.rule)
        i = ranking_ids.get(r)
        if i is None:
            i = ranking_ids[r] = len(rankings)
            rankings.append(r)
        decided[(k, inside)] = i
        return i

    def family(starts: Sequence[int], keys: array[int], bits: int) -> Family | None:
        mine = [(int(n.network_address), int(n.broadcast_address))
                for n in networks if n.version == (4 if bits == 32 else 6)]
        cuts = sorted({x for lo, hi in mine for x in (lo, hi + 1)})
        # The networks holding every address from cuts[c - 1] to cuts[c] - 1.
        sigs = [tuple(lo <= x <= hi for lo, hi in mine) for x in [0, *cuts]]
        out_starts: list[int] | array[int] = array("L") if bits == 32 else []
        out_ranked = array("l")
        runs: list[int] | array[int] = array("L") if bits == 32 else []
        last_rank: int | None = None
        last_order: object = None
        n = len(starts)
        c = 0  # cuts at or below the piece's start
        ncuts = len(cuts)
        top = 1 << bits

        def emit(start: int, ri: int) -> None:
            """A piece ranked ``ri`` from ``start``: a new range when the
            ranking changes, and a new run when the order of PoPs does."""
            nonlocal last_rank, last_order
            if ri == last_rank:
                return
            out_starts.append(start)
            out_ranked.append(ri)
            r = rankings[ri]
            order = (r.pops, r.reason, r.rule)
            if order != last_order:
                runs.append(start)
                last_order = order
            last_rank = ri

        for i in range(n):
            start = starts[i]
            k = keys[i]
            if k < 0:  # an alias of the IPv4 subtree (IPv6 only)
                end = starts[i + 1] if i + 1 < n else top
                while c < ncuts and cuts[c] <= start:
                    c += 1
                if (c < ncuts and cuts[c] < end) or any(sigs[c]):
                    return None
                out_starts.append(start)
                out_ranked.append(k)
                runs.append(start)
                last_rank, last_order = k, k
                continue
            if not ncuts:
                ri = decided.get((k, ()))
                emit(start, rank(k, start, bits, ()) if ri is None else ri)
                continue
            end = starts[i + 1] if i + 1 < n else top
            while True:
                while c < ncuts and cuts[c] <= start:
                    c += 1
                piece_end = min(end, cuts[c]) if c < ncuts else end
                emit(start, rank(k, start, bits, sigs[c]))
                if piece_end >= end:
                    break
                start = piece_end
        return Family(bits, out_starts, out_ranked, runs)

    v4 = family(ranges.v4_starts, ranges.v4_keys, 32)
    v6 = family(ranges.v6_starts, ranges.v6_keys, 128)
    if v6 is None or v4 is None:
        return None
    return SteerMap(spec, rankings, v4, v6, time.perf_counter() - t0)


def describe(m: SteerMap, client: bytes) -> dict[str, Any]:
    """The range a client fell in and its ranking, for ``explain``."""
    fam, a, above = m.locate(client)
    make = ipaddress.IPv4Address if fam.bits == 32 else ipaddress.IPv6Address
    first, last = fam.span(a, False)
    rfirst, rlast = fam.span(a, True)
    r = m.look_up(client)
    return {"range": f"{make(first)}-{make(last)}",
            "same_order": f"{make(rfirst)}-{make(rlast)}",
            "via_ipv4": above > 0,
            "ranked": [{"pop": p, "base_score": round(s, 3)}
                       for p, s in zip(r.pops, r.scores, strict=True)]}


_warned: dict[str, str] = {}  # an unknown GEODNS_STEER_MAPS value, said once


def attach(steering: Steering, locator: Locator | None, previous: Steering | None) -> None:
    """Give ``steering`` its maps: at once when the previous snapshot's
    maps cover every set-up (same database and steering), else (with
    ``GEODNS_STEER_MAPS=1`` in the environment) from a thread of its own, so
    that neither the event loop nor the build waits for a database walk (seconds for a City database); until the maps are
    set, decisions are made as before, with the same answers."""
    prev = previous.maps if previous is not None and isinstance(previous.maps, Maps) else None
    ranges = getattr(locator, "_steermap_ranges", None)
    if prev is not None and ranges is not None and prev.database is ranges:
        base = _steering_setup(steering)
        if all((base, _setup(spec)) in prev.by_setup for spec in steering.specs.values()):
            steering.maps = compile_maps(steering, locator, prev)
            return
    # Opt-in for now (as GEODNS_UDP_MODE chooses a UDP path): a City
    # database takes tens of seconds of CPU to walk, and a build is not yet
    # stopped when its snapshot is retired before it ends.
    wanted = os.environ.get("GEODNS_STEER_MAPS", "")
    if wanted not in ("", "0", "1") and wanted != _warned.get("value"):
        _warned["value"] = wanted
        log.warning("GEODNS_STEER_MAPS=%r: 1 builds steering maps, 0 or unset does not; "
                    "not building them", wanted)
    if wanted == "1" and database_ranges_possible(locator) and steering.specs:
        threading.Thread(target=_build, args=(steering, locator, prev), daemon=True,
                         name="geodns-steermap").start()


def database_ranges_possible(locator: Locator | None) -> bool:
    return isinstance(locator, MaxMindLocator) and locator.asn_reader is None


def _build(steering: Steering, locator: Locator | None, previous: Maps | None) -> None:
    try:
        t0 = time.perf_counter()
        maps = compile_maps(steering, locator, previous)
        steering.maps = maps
        if maps is not None:
            log.info("steering maps built in %.1f s: %d set-ups, %d ranges",
                     time.perf_counter() - t0, len(maps.by_setup),
                     sum(len(m.v4) + len(m.v6) for m in maps.by_setup.values()))
    except Exception:
        log.exception("building the steering maps failed; deciding without them")
