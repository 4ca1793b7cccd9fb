"""Compiled steering maps: address ranges to ranked PoPs, built once per
database and steering set-up.  Pure (the database file is read, nothing else).

Theory of operation.  Without a map, a client network never seen before
costs a GeoIP look-up and a full :meth:`Steering.decide` (great-circle
distances, rules, sorting).  But a decision depends on the client only
through (a) the database record its address falls in, (b) which rule and
latency-table networks contain it.  So, at snapshot build time (in the
build's worker thread):

1. :func:`database_ranges` walks the MaxMind search tree once per database
   file (in C, geodns/_mmdbtree.c; the last one kept, shared by every
   snapshot and set-up that uses it) and cuts the IPv4 and IPv6 address
   spaces into ranges with one *place* each: every distinct data record is
   decoded once, for the fields a decision reads only, and records that
   agree on them share a place (neighbours with the same place merged; the
   IPv4 subtree's aliases in the IPv6 tree are markers, not walked again).
2. :func:`compile_map` builds, per distinct *set-up* (a record's PoPs and
   rules; the server's PoPs, default order and latency table), a
   :class:`SteerMap`: each place is ranked once by steering's scoring with
   every PoP unknown and unpenalised (:func:`_rank_places`), and what is
   kept is the *ranking*: its order of PoPs (a few hundred distinct) and
   base scores.  Ranges a rule or latency network cuts are cut again and
   those pieces decided by :meth:`Steering.decide` itself; a set-up without
   such networks shares the database's ranges.  Runs of ranges with the
   same order of PoPs (and rule, and reason) are kept for the ECS scope.
   The build checks a cancel flag as it goes (:class:`Build`,
   :func:`retire`).
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
import math
import os
import threading
import time
import weakref
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

try:
    from geodns import _mmdbtree
except ImportError:  # pragma: no cover - built at install time when a C compiler is there
    _mmdbtree = None  # type: ignore[assignment]
try:
    from geodns import _udpbatch
except ImportError:  # pragma: no cover - the C data plane: built with _mmdbtree
    _udpbatch = None  # type: ignore[assignment]

from geodns.collector import collector_paused
from geodns.geo import IPAddress, Locator, MaxMindLocator, Place
from geodns.steering import (
    EARTH_RADIUS_KM,
    KM_PER_MS_RTT,
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

    __slots__ = ("bits", "over", "ranked", "runs", "starts")

    def __init__(self, bits: int, starts: Sequence[int], ranked: array[int],
                 runs: Sequence[int], over: dict[int, int]) -> None:
        self.bits = bits
        self.starts = starts  # shared with the database's ranges (cut at every network)
        self.ranked = ranked  # the same: a place's number, or an alias marker
        self.runs = runs
        self.over = over  # range index -> its ranking, for ranges inside a network

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
    """The compiled map of one set-up: ranges to rankings, per family.  A
    range's ranking number below ``len(order_ids)`` is a database place
    (outside every rule and latency network): its order of PoPs is
    ``orders[order_ids[k]]`` and its base scores are in ``bases`` (shared by
    every set-up of one steering configuration); from there on, ``extra``
    holds the rankings of pieces inside such networks."""

    __slots__ = ("bases", "build_seconds", "c", "columns", "extra", "order_ids", "orders",
                 "ords", "spec", "v4", "v6")

    def __init__(self, spec: SteerSpec, order_ids: array[int], bases: BaseScores,
                 orders: list[Ranked], columns: list[tuple[int, ...]], extra: list[Ranked],
                 v4: Family, v6: Family, build_seconds: float, ords: array[int],
                 c: _udpbatch.SteerRanges | None = None) -> None:
        self.spec = spec
        self.order_ids = order_ids
        self.bases = bases
        self.orders = orders
        self.columns = columns
        self.extra = extra
        self.v4 = v4
        self.v6 = v6
        self.build_seconds = build_seconds
        # Each ranking's *order number*: rankings with the same order of PoPs
        # (and rule, and reason) share one, and without penalties so does
        # their decision (what the C data plane keys answers on).
        self.ords = ords
        self.c = c  # the same arrays for the C data plane (_udpbatch.SteerRanges), or None

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

    def look_up(self, client: bytes) -> tuple[Ranked, int]:
        """The client's order of PoPs (its scores left out) and its ranking's number."""
        fam, a, _ = self.locate(client)
        return self.ranked_at(fam, a)

    def ranked_at(self, fam: Family, a: int) -> tuple[Ranked, int]:
        """:meth:`look_up` for an address already located (:meth:`locate`)."""
        j = bisect_right(fam.starts, a) - 1
        i = fam.ranked[j]
        if fam.over:
            i = fam.over.get(j, i)
        ids = self.order_ids
        if i < len(ids):
            return self.orders[ids[i]], i
        return self.extra[i - len(ids)], i

    def ranking_number(self, client: bytes) -> int:
        """The number of the client's ranking (a database place's, or past
        them a piece inside a network's)."""
        return self.ranked_at(*self.locate(client)[:2])[1]

    def order_at(self, client: bytes) -> int:
        """The order number of the client's ranking (see :attr:`ords`)."""
        return self.ords[self.ranking_number(client)]

    def base_scores(self, r: Ranked, i: int) -> Sequence[float]:
        """The base scores of ranking ``i`` (``r``, from :meth:`look_up`), in its order."""
        ids = self.order_ids
        if i >= len(ids):
            return r.scores
        scores = self.bases.scores
        base = i * len(self.bases.pops)
        return [scores[base + c] for c in self.columns[ids[i]]]

    def ranking(self, client: bytes) -> Ranked:
        """The client's ranking with its base scores."""
        r, i = self.look_up(client)
        return replace(r, scores=tuple(self.base_scores(r, i)))

    def scope_at(self, fam: Family, a: int, above: int, source: int, penalised: bool) -> int:
        """The ECS scope of an answer decided from this map for an address
        located by :meth:`locate` (see the module docstring), at most
        ``source``."""
        first, last = fam.span(a, not penalised)
        return min(above + widest_prefix(a, first, last, fam.bits), source)

    def size_bytes(self) -> int:
        """Roughly what its own arrays hold (ranges shared with the database
        not counted; Python ints of IPv6 starts at 44 bytes with their slot)."""
        total = self.order_ids.itemsize * len(self.order_ids)
        for fam in (self.v4, self.v6):
            runs = fam.runs
            total += runs.itemsize * len(runs) if isinstance(runs, array) else 44 * len(runs)
            total += 100 * len(fam.over)
        return total


class Maps:
    """Every compiled map of a snapshot, by the record set it serves."""

    def __init__(self, by_key: dict[tuple[bytes, int], SteerMap],
                 by_setup: dict[tuple[object, ...], SteerMap], database: DatabaseRanges) -> None:
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
    fam, a, above = m.locate(client)  # once for both
    scope = m.scope_at(fam, a, above, source, penalised)
    r, i = m.ranked_at(fam, a)
    pops = r.pops
    if penalised:  # penalties can reorder: as Steering.decide scores them
        scale = 1e-6 if r.unplaced else 1.0
        rows = sorted(zip([s + health.penalty_ms(p) * scale
                           for s, p in zip(m.base_scores(r, i), pops, strict=True)],
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
# What a decision reads of a database record: latitude, longitude, continent,
# country, first subdivision (geodns.geo._place_from_record's fields).
PlaceFields = tuple[float | None, float | None, str | None, str | None, str | None]


class Places:
    """Every distinct place of a database, by number (0: no record), in
    columns: coordinates (NaN: none) and codes by number into ``names``
    (0: none)."""

    __slots__ = ("_numbers", "continent", "country", "latitude", "longitude", "names",
                 "subdivision")

    def __init__(self) -> None:
        nan = math.nan
        self.latitude = array("d", [nan])
        self.longitude = array("d", [nan])
        self.continent = array("H", [0])
        self.country = array("H", [0])
        self.subdivision = array("H", [0])
        self.names: list[str | None] = [None]
        self._numbers: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.latitude)

    def add(self, fields: PlaceFields) -> int:
        lat, lon, cont, country, sub = fields
        names = self.names
        self.latitude.append(math.nan if lat is None else lat)
        self.longitude.append(math.nan if lon is None else lon)
        for column, name in ((self.continent, cont), (self.country, country),
                             (self.subdivision, sub)):
            if name is None:
                column.append(0)
                continue
            number = self._numbers.get(name)
            if number is None:
                number = self._numbers[name] = len(names)
                names.append(name)
            column.append(number)
        return len(self.latitude) - 1

    def __iter__(self) -> Iterator[PlaceFields]:
        names = self.names
        for lat, lon, cont, country, sub in zip(self.latitude, self.longitude, self.continent,
                                                self.country, self.subdivision, strict=True):
            yield (None if lat != lat else lat, None if lon != lon else lon,
                   names[cont], names[country], names[sub])

    def __getitem__(self, k: int) -> PlaceFields:
        names = self.names
        lat, lon = self.latitude[k], self.longitude[k]
        return (None if lat != lat else lat, None if lon != lon else lon,
                names[self.continent[k]], names[self.country[k]], names[self.subdivision[k]])

    def size_bytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.latitude, self.longitude, self.continent,
                                                 self.country, self.subdivision))


class Cancelled(Exception):
    """The build was abandoned: the snapshot it was for is retired."""


def _never() -> bool:
    return False


@dataclass(slots=True)
class DatabaseRanges:
    """The database's address space in ranges with one place each: range
    ``i`` of a family starts at ``starts[i]`` and is at ``places[keys[i]]``
    (``places[0]``: no record; a negative key in the IPv6 ranges: an alias
    of the IPv4 subtree, see :meth:`SteerMap.locate`).  :meth:`cut` splits
    ranges at networks' boundaries: a new pair of arrays each time (maps
    made before keep theirs), never changed in place."""

    v4_starts: array[int]
    v4_keys: array[int]
    v6_starts: list[int]
    v6_keys: array[int]
    places: Places
    build_seconds: float
    identity: tuple[object, ...]  # the file's (path, device, inode, size, mtime)
    # The last steering configuration's BaseScores, shared by its set-ups.
    _bases: list[BaseScores] = field(default_factory=list)
    # IPv6 starts packed for the C data plane, by the list they pack (shared
    # by every set-up that shares the list).
    _packed: list[tuple[list[int], bytes]] = field(default_factory=list)

    def packed(self, values: Sequence[int]) -> bytes:
        """IPv6 addresses as 16-byte big-endian numbers, one after another
        (the database's starts: packed once and shared)."""
        with _ranges_lock:
            for seq, packed in self._packed:
                if seq is values:
                    return packed
        packed = _pack128(values)
        if values is self.v6_starts:
            with _ranges_lock:
                self._packed[:] = [(self.v6_starts, packed)]
        return packed

    def cut(self, bits: int, points: tuple[int, ...]) -> tuple[Sequence[int], array[int]]:
        """A family's ranges, cut (from now on) at ``points`` (sorted) too:
        every set-up shares one pair of arrays."""
        with _ranges_lock:
            return self._cut(bits, points)

    def _cut(self, bits: int, points: tuple[int, ...]) -> tuple[Sequence[int], array[int]]:
        starts: Any = self.v4_starts if bits == 32 else self.v6_starts
        keys = self.v4_keys if bits == 32 else self.v6_keys
        if all(starts[bisect_right(starts, p) - 1] == p for p in points):
            return starts, keys
        out_starts: Any = array("I") if bits == 32 else []
        out_keys = array("i")
        at = 0  # starts[:at] are copied
        for p in points:
            i = bisect_right(starts, p) - 1
            if starts[i] == p:
                continue
            out_starts.extend(starts[at:i + 1])
            out_keys.extend(keys[at:i + 1])
            out_starts.append(p)
            out_keys.append(keys[i])
            at = i + 1
        out_starts.extend(starts[at:])
        out_keys.extend(keys[at:])
        if bits == 32:
            self.v4_starts, self.v4_keys = out_starts, out_keys
        else:
            self.v6_starts, self.v6_keys = out_starts, out_keys
        return out_starts, out_keys

    def base_scores(self, steering: Steering, cancelled: Callable[[], bool]) -> BaseScores:
        setup = _steering_setup(steering)
        if self._bases and self._bases[0].setup == setup:
            return self._bases[0]
        found = _base_scores(steering, self.places, cancelled)
        self._bases[:] = [found]
        return found


_ranges_lock = threading.Lock()
# The last database walked, by file identity: a reload that opens the same
# file again (or another node of the same process, in tests) does not walk it again.
_last_ranges: list[DatabaseRanges] = []
_PLACES_CHUNK = 128  # records decoded per call to _mmdbtree.places


def database_ranges(locator: Locator | None, cancelled: Callable[[], bool] = _never
                    ) -> DatabaseRanges | None:
    """The locator's database in ranges (computed once per database file and
    kept), or None for a locator a map cannot be built from."""
    if not database_ranges_possible(locator):
        return None
    identity = _identity(locator)
    with _ranges_lock:
        if _last_ranges and _last_ranges[0].identity == identity:
            return _last_ranges[0]
        assert isinstance(locator, MaxMindLocator)
        found = _walk(locator, identity, cancelled)
        _last_ranges[:] = [found]
        return found


def _identity(locator: Locator | None) -> tuple[object, ...]:
    assert isinstance(locator, MaxMindLocator)
    st = os.stat(locator.path)
    return (str(locator.path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _walk(locator: MaxMindLocator, identity: tuple[object, ...],
          cancelled: Callable[[], bool]) -> DatabaseRanges:
    t0 = time.perf_counter()
    meta = locator.reader.metadata()
    node_count: int = meta.node_count
    size: int = meta.record_size
    tree_size = node_count * size // 4
    with open(locator.path, "rb") as f:  # the search tree, then 16 zero bytes, then the data
        content = f.read()
    if content[tree_size:tree_size + 16] != bytes(16):
        raise ValueError(f"{locator.path}: not the database the reader opened (replaced since?)")
    step = size // 4

    def children(node: int) -> tuple[int, int]:
        o = node * step
        if size == 24:
            return int.from_bytes(content[o:o + 3]), int.from_bytes(content[o + 3:o + 6])
        if size == 28:
            x = int.from_bytes(content[o:o + 7])
            return ((x >> 4) & 0xF000000) | (x >> 32), x & 0xFFFFFFF
        return int.from_bytes(content[o:o + 4]), int.from_bytes(content[o + 4:o + 8])

    def leaves(root: int, bits: int, alias: int) -> tuple[bytes, memoryview]:
        starts, records = _mmdbtree.walk(content, node_count, size, root, bits, alias)
        return starts, memoryview(records).cast("q")

    v4_starts, v4_recs = array("I", [0]).tobytes(), memoryview(array("q", [0])).cast("B").cast("q")
    v6_starts, v6_recs = bytes(16), v4_recs
    if meta.ip_version == 4:
        v4_starts, v4_recs = leaves(0, 32, -1)
    else:
        ipv4_root = 0
        for _ in range(96):
            if ipv4_root >= node_count:
                break
            ipv4_root = children(ipv4_root)[0]
        if ipv4_root < node_count:
            v4_starts, v4_recs = leaves(ipv4_root, 32, -1)
            v6_starts, v6_recs = leaves(0, 128, ipv4_root)
        else:  # no IPv4 subtree: IPv4 addresses all share one record (or none)
            one = array("q", [0 if ipv4_root == node_count else ipv4_root])
            v4_recs = memoryview(one).cast("B").cast("q")
            v6_starts, v6_recs = leaves(0, 128, -1)
    if cancelled():
        raise Cancelled
    # Each distinct record decoded once (only the fields a decision reads);
    # records that agree on them share a place.
    known = array("q")
    known.frombytes(_mmdbtree.distinct(v4_recs, v6_recs))
    data = memoryview(content)[tree_size + 16:]
    places = Places()
    by_fields: dict[PlaceFields, int] = {(None, None, None, None, None): 0}
    mapped = array("i")
    # A few hundred records a call: a call holds the GIL (about 20 ms for
    # 1,024 GeoLite2 City records), and the thread that answers must not wait
    # that long for it.
    for i in range(0, len(known), _PLACES_CHUNK):
        if cancelled():
            raise Cancelled
        for fields in _mmdbtree.places(data, array("q", [r - node_count - 16
                                                         for r in known[i:i + _PLACES_CHUNK]])):
            k = by_fields.get(fields)
            if k is None:
                k = by_fields[fields] = places.add(fields)
            mapped.append(k)
    while by_fields:  # freed a piece at a time, not in one long deallocation
        by_fields.popitem()
    del data
    if cancelled():
        raise Cancelled

    def merged(starts: bytes, recs: memoryview, width: int) -> tuple[bytes, array[int]]:
        keys = array("i")
        keys.frombytes(_mmdbtree.lookup(recs, known, mapped))
        at = _mmdbtree.changes(keys)
        if len(at) == 4 * len(keys):
            return starts, keys
        k2 = array("i")
        k2.frombytes(_mmdbtree.pick(keys, 4, at))
        return _mmdbtree.pick(starts, width, at), k2

    s4, v4k = merged(v4_starts, v4_recs, 4)
    v4s = array("I")
    v4s.frombytes(s4)
    s6, v6k = merged(v6_starts, v6_recs, 16)
    v6s = [int.from_bytes(s6[i:i + 16]) for i in range(0, len(s6), 16)]
    del v4_recs, v6_recs
    return DatabaseRanges(v4s, v4k, v6s, v6k, places, time.perf_counter() - t0, identity)


# -- one set-up's map -------------------------------------------------------------
def _setup(spec: SteerSpec) -> tuple[object, ...]:
    """What a record's map depends on besides the server's steering."""
    return (tuple(spec.values), tuple((r.pops, r.networks, r.places) for r in spec.rules))


def _steering_setup(steering: Steering) -> tuple[object, ...]:
    return (tuple(steering.pops.values()), steering.default_order,
            tuple((tuple(sorted(e.latencies.items())), e.network, e.country, e.asn)
                  for e in steering.latency))


def compile_maps(steering: Steering, locator: Locator | None, previous: Maps | None = None,
                 cancelled: Callable[[], bool] = _never) -> Maps | None:
    """A map for every steered record set of ``steering`` (one per distinct
    set-up), reusing ``previous`` maps made from the same database and
    steering.  None when the locator cannot be mapped.  ``cancelled`` is
    asked now and then; when it says so, :class:`Cancelled` is raised."""
    if not steering.specs:
        return None
    ranges = database_ranges(locator, cancelled)
    if ranges is None:
        return None
    base = _steering_setup(steering)
    reuse = previous.by_setup if previous is not None and previous.database is ranges else {}
    cuts = _cuts(list(steering.specs.values()), steering)
    by_setup: dict[tuple[object, ...], SteerMap] = {}
    by_key: dict[tuple[bytes, int], SteerMap] = {}
    for key, spec in steering.specs.items():
        setup = (base, _setup(spec))
        m = by_setup.get(setup) or reuse.get(setup)
        if m is None:
            m = compile_map(steering, spec, ranges, cancelled, cuts)
            if m is None:
                continue  # decided without a map
        by_setup[setup] = m
        by_key[key] = m
    return Maps(by_key, by_setup, ranges)


def _cuts(specs: Sequence[SteerSpec], steering: Steering) -> dict[int, tuple[int, ...]]:
    """Every boundary of a rule or latency network, per family: the
    database's ranges are cut there once for every set-up."""
    nets = [n for spec in specs for r in spec.rules for n in r.networks] + \
        [e.network for e in steering.latency if e.network is not None]
    out: dict[int, tuple[int, ...]] = {}
    for bits, version in ((32, 4), (128, 6)):
        points = {x for n in nets if n.version == version
                  for x in (int(n.network_address), int(n.broadcast_address) + 1)}
        out[bits] = tuple(sorted(points - {0, 1 << bits}))
    return out


class BaseScores:
    """Every place's score at every PoP of the server (in configuration
    order) outside every latency network, with the health view's penalty
    left out: what every set-up of one steering configuration ranks by.
    ``unplaced[k]``: place ``k`` is ranked by country, continent and default
    order (its scores are that rank)."""

    __slots__ = ("pops", "scores", "setup", "unplaced")

    def __init__(self, setup: tuple[object, ...], pops: list[str], scores: array[float],
                 unplaced: bytearray) -> None:
        self.setup = setup
        self.pops = pops
        self.scores = scores
        self.unplaced = unplaced


def _base_scores(steering: Steering, places: Places, cancelled: Callable[[], bool]
                 ) -> BaseScores:
    """:class:`BaseScores`, computed as :meth:`Steering.decide` scores (the
    same operations in the same order, so the same floats)."""
    pops = list(steering.pops.values())
    trig = steering._trig
    rank = steering._rank
    n = max(1, len(pops))
    by_country: dict[str, Any] = {}
    for entry in steering.latency:  # the first entry for a country wins, as in _latency_for
        if entry.country is not None:
            by_country.setdefault(entry.country, entry)
    scores = array("d", bytes(8 * n * len(places)))
    unplaced_flags = bytearray(len(places))
    sin, asin, sqrt, radians, cos = math.sin, math.asin, math.sqrt, math.radians, math.cos
    per_pop = [(pop, trig[pop.id], 1.0 - pop.bias / 100.0) for pop in pops]
    base = 0
    for k, (lat, lon, cont, country, _) in enumerate(places):
        if not k & 0xFFF and cancelled():
            raise Cancelled
        table = by_country.get(country) if country is not None and by_country else None
        placed = lat is not None and lon is not None
        unplaced = not placed and table is None
        unplaced_flags[k] = unplaced
        if placed:
            assert lat is not None and lon is not None
            p1, l1 = radians(lat), radians(lon)
            c1 = cos(p1)
        for j, (pop, (p2, l2, c2), scale) in enumerate(per_pop):
            if unplaced:
                near = 0 if country and pop.country == country else (
                    1 if cont and pop.continent == cont else 2)
                scores[base + j] = near * 1000 + rank[pop.id] + 0.0
                continue
            if table is not None and pop.id in table.latencies:
                latency = table.latencies[pop.id]
            elif placed:
                a = sin((p2 - p1) / 2) ** 2 + c1 * c2 * sin((l2 - l1) / 2) ** 2
                latency = 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(a))) / KM_PER_MS_RTT
            else:
                latency = None
            scores[base + j] = (latency or 0.0) * scale + 0.0
        base += n
    return BaseScores(_steering_setup(steering), [p.id for p in pops], scores, unplaced_flags)


def _rank_places(steering: Steering, spec: SteerSpec, places: Places, bases: BaseScores,
                 cancelled: Callable[[], bool]
                 ) -> tuple[array[int], list[Ranked], list[tuple[int, ...]]]:
    """Every place's ranking outside every rule and latency network: what
    :meth:`Steering.decide` ranks with a health view where every PoP is
    unknown and unpenalised (its rules and order, from ``bases``' scores).
    Returns each place's order (a :class:`Ranked` without scores, by
    number), the orders, and for each the columns of ``bases.scores`` that
    hold its PoPs' scores."""
    pops = steering.pops
    column = {p: j for j, p in enumerate(bases.pops)}
    stride = max(1, len(bases.pops))
    columns: list[tuple[int, ...]] = []

    def candidates(names: Sequence[str] | Any) -> tuple[list[int], tuple[str, ...],
                                                        tuple[int, ...]]:
        """The PoPs of a candidate list that exist, by configuration order
        (a stable sort by score then breaks ties as decide does)."""
        known = sorted((pops[p].order, p) for p in names if p in pops)
        return [column[p] for _, p in known], tuple(p for _, p in known), \
            tuple(o for o, _ in known)

    every = candidates(spec.values)
    rules = [(r, candidates(r.pops)) for r in spec.rules
             if not r.networks]  # a rule with networks cannot match outside them
    order_ids = array("i", bytes(4 * len(places)))
    all_scores = bases.scores
    unplaced_flags = bases.unplaced
    orders: list[Ranked] = []
    order_ids_by: dict[tuple[object, ...], int] = {}
    base = 0
    for k, (_, _, cont, country, sub) in enumerate(places):
        if not k & 0xFFF and cancelled():
            raise Cancelled
        cols, names, pop_orders = every
        reason = Reason.PROXIMITY
        matched: Rule | None = None
        if rules:
            codes = set()
            if cont:
                codes.add(cont)
                if country:
                    codes.add(f"{cont}-{country}")
                    if sub:
                        codes.add(f"{cont}-{country}-{sub}")
            for rule, its in rules:
                if not rule.places or codes & rule.places:
                    matched, reason = rule, Reason.RULE
                    cols, names, pop_orders = its
                    break
        unplaced = unplaced_flags[k] == 1
        if unplaced and reason == Reason.PROXIMITY:
            reason = Reason.COUNTRY if country or cont else Reason.DEFAULT_ORDER
        sc = [all_scores[base + j] for j in cols]
        perm = sorted(range(len(sc)), key=sc.__getitem__)
        if not names:  # no candidate at all
            okey: tuple[object, ...] = ((), False, Reason.PROXIMITY, matched)
        else:
            okey = (tuple(perm), unplaced, reason, matched, names)
        i = order_ids_by.get(okey)
        if i is None:
            i = order_ids_by[okey] = len(orders)
            if names:
                orders.append(Ranked(tuple(names[x] for x in perm), (),
                                     tuple(pop_orders[x] for x in perm), unplaced, reason,
                                     matched))
                columns.append(tuple(cols[x] for x in perm))
            else:
                orders.append(Ranked((), (), (), False, Reason.PROXIMITY, matched))
                columns.append(())
        order_ids[k] = i
        base += stride
    return order_ids, orders, columns


def compile_map(steering: Steering, spec: SteerSpec, ranges: DatabaseRanges,
                cancelled: Callable[[], bool] = _never,
                cuts: dict[int, tuple[int, ...]] | None = None) -> SteerMap | None:
    """The map of one record set's set-up (see the module docstring), or
    None when an IPv6 network of its rules or latency table overlaps an
    alias of the IPv4 subtree (not mapped yet)."""
    t0 = time.perf_counter()
    networks = [n for r in spec.rules for n in r.networks] + \
        [e.network for e in steering.latency if e.network is not None]
    if cuts is None:
        cuts = _cuts([spec], steering)
    bases = ranges.base_scores(steering, cancelled)
    order_ids, orders, columns = _rank_places(steering, spec, ranges.places, bases, cancelled)
    nplaces = len(ranges.places)
    # Pieces inside a rule or latency network, decided by Steering.decide
    # itself: rankings numbered from len(places) on.
    extra: list[Ranked] = []
    extra_ids: dict[Ranked, int] = {}
    decided: dict[tuple[int, tuple[bool, ...]], int] = {}

    def rank(k: int, start: int, bits: int, inside: tuple[bool, ...]) -> int:
        found = decided.get((k, inside))
        if found is not None:
            return found
        address: IPAddress = ipaddress.IPv4Address(start) if bits == 32 \
            else ipaddress.IPv6Address(start)
        lat, lon, cont, country, sub = ranges.places[k]
        place = Place(address, 0, lat, lon, cont, country, sub)
        d = steering.decide(spec, address, bits, place, NEUTRAL, explain=True)
        if d.outcome != Outcome.POPS or d.spec is not spec:
            r = Ranked((), (), (), False, Reason.PROXIMITY, d.rule)  # no candidate at all
        else:
            table = steering._latency_for(address, place) if steering.latency else None
            r = Ranked(tuple(c.pop for c in d.candidates),
                       tuple(c.score for c in d.candidates),
                       tuple(steering.pops[c.pop].order for c in d.candidates),
                       not place.placed and table is None, d.reason, d.rule)
        i = extra_ids.get(r)
        if i is None:
            i = extra_ids[r] = nplaces + len(extra)
            extra.append(r)
        decided[(k, inside)] = i
        return i

    def family(bits: int) -> Family | None:
        mine = [(int(n.network_address), int(n.broadcast_address))
                for n in networks if n.version == (4 if bits == 32 else 6)]
        starts, keys = ranges.cut(bits, cuts[bits])
        over: dict[int, int] = {}
        if mine:
            points = sorted({x for lo, hi in mine for x in (lo, hi + 1)} - {1 << bits})
            bounds = [0, *points, 1 << bits]
            for j in range(len(bounds) - 1):
                if cancelled():
                    raise Cancelled
                lo, hi = bounds[j], bounds[j + 1]
                # The networks holding every address of this piece.
                sig = tuple(a <= lo <= b for a, b in mine)
                if not any(sig):
                    continue
                for i in range(bisect_left(starts, lo), bisect_left(starts, hi)):
                    k = keys[i]
                    if k < 0:
                        return None  # a network over an alias of the IPv4 subtree
                    over[i] = rank(k, starts[i], bits, sig)
        # Runs: where the order of PoPs (or the rule, or the reason) changes.
        table = _order_table(order_ids, orders, extra)
        ords = array("i")
        ords.frombytes(_mmdbtree.gather(keys, table))
        for i, ri in over.items():
            ords[i] = table[ri]
        at = _mmdbtree.changes(ords)
        del ords
        runs: list[int] | array[int]
        if isinstance(starts, array):
            runs = array("I")
            runs.frombytes(_mmdbtree.pick(starts, 4, at))
        else:
            where = array("I")
            where.frombytes(at)
            runs = [starts[i] for i in where]
        return Family(bits, starts, keys, runs, over)

    v4 = family(32)
    v6 = family(128)
    if v6 is None or v4 is None:
        return None
    table = _order_table(order_ids, orders, extra)
    c = None
    if _udpbatch is not None:
        c = _udpbatch.SteerRanges(v4.starts, v4.ranked, v4.runs, v4.over,
                                  ranges.packed(v6.starts), v6.ranked, _pack128(v6.runs),
                                  v6.over, table)
    return SteerMap(spec, order_ids, bases, orders, columns, extra, v4, v6,
                    time.perf_counter() - t0, table, c)


def _order_table(order_ids: array[int], orders: list[Ranked], extra: list[Ranked]
                 ) -> array[int]:
    """Each ranking number's order number: a database place's is its order
    of PoPs' (``order_ids``); a piece inside a network shares the number of
    a ranking with the same order, rule and reason, or gets a new one."""
    table = array("i", order_ids)
    known = {(o.pops, o.orders, o.unplaced, o.reason, o.rule): j
             for j, o in enumerate(orders)}
    for r in extra:
        table.append(known.setdefault((r.pops, r.orders, r.unplaced, r.reason, r.rule),
                                      len(known)))
    return table


def _pack128(values: Sequence[int]) -> bytes:
    """128-bit numbers as 16-byte big-endian bytes, one after another."""
    return b"".join([v.to_bytes(16, "big") for v in values])


def describe(m: SteerMap, client: bytes) -> dict[str, Any]:
    """The range a client fell in and its ranking, for ``explain``."""
    fam, a, above = m.locate(client)
    make = ipaddress.IPv4Address if fam.bits == 32 else ipaddress.IPv6Address
    first, last = fam.span(a, False)
    rfirst, rlast = fam.span(a, True)
    r = m.ranking(client)
    return {"range": f"{make(first)}-{make(last)}",
            "same_order": f"{make(rfirst)}-{make(rlast)}",
            "via_ipv4": above > 0,
            "ranked": [{"pop": p, "base_score": round(s, 3)}
                       for p, s in zip(r.pops, r.scores, strict=True)]}


_warned: dict[str, str] = {}  # an unknown GEODNS_STEER_MAPS value, said once


def enabled() -> bool:
    """Whether maps are built: yes unless ``GEODNS_STEER_MAPS=0`` (any
    other value than 0 or 1 is reported once and builds them)."""
    wanted = os.environ.get("GEODNS_STEER_MAPS", "1")
    if wanted not in ("0", "1") and wanted != _warned.get("value"):
        _warned["value"] = wanted
        log.warning("GEODNS_STEER_MAPS=%r: 0 turns steering maps off, 1 (the default) on; "
                    "building them", wanted)
    return wanted != "0"


class Build:
    """A map build running in its thread; :meth:`stop` abandons it."""

    def __init__(self, steering: Steering, locator: Locator | None,
                 previous: Maps | None) -> None:
        self._stop = threading.Event()
        target = weakref.ref(steering)
        # The build works on a copy of the configuration, so that a snapshot
        # dropped without being retired (a refused build) is seen to be gone.
        copy = Steering(steering.pops, steering.default_order, steering.latency, steering.specs)

        def cancelled() -> bool:
            return self._stop.is_set() or target() is None

        self.cancelled = cancelled
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(copy, target, locator, previous),
                                       daemon=True, name="geodns-steermap")
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, copy: Steering, target: weakref.ref[Steering], locator: Locator | None,
             previous: Maps | None) -> None:
        try:
            t0 = time.perf_counter()
            c0 = time.thread_time()
            with collector_paused():  # makes few objects, and no cycles: see geodns.collector
                maps = compile_maps(copy, locator, previous, self.cancelled)
            steering = target()
            if steering is None or self._stop.is_set():
                raise Cancelled
            steering.maps = maps
            if maps is not None:
                log.info("steering maps built in %.1f s (%.1f s CPU): %d set-ups over %d "
                         "database ranges, %.0f MB of their own",
                         time.perf_counter() - t0, time.thread_time() - c0,
                         len(maps.by_setup),
                         len(maps.database.v4_starts) + len(maps.database.v6_starts),
                         sum(m.size_bytes() for m in maps.by_setup.values()) / 1e6)
        except Cancelled:
            log.debug("steering map build abandoned: its snapshot is retired")
        except Exception:
            if self.cancelled():  # its reader closed, its file replaced: it was retired
                log.debug("steering map build abandoned: its snapshot is retired",
                          exc_info=True)
            else:
                log.exception("building the steering maps failed; deciding without them")
        finally:
            self.done.set()


def attach(steering: Steering, locator: Locator | None, previous: Steering | None) -> None:
    """Give ``steering`` its maps: at once when the previous snapshot's
    maps cover every set-up (same database and steering), else from a
    thread of its own (:class:`Build`, kept in ``steering.map_build``), so
    that neither the event loop nor the snapshot build waits for it (the
    server waits for it before serving the snapshot: :func:`wait_built`);
    until the maps are set, decisions are made as before, with the same
    answers.  :func:`retire` stops a build whose snapshot is no longer
    served."""
    prev = previous.maps if previous is not None and isinstance(previous.maps, Maps) else None
    if prev is not None and database_ranges_possible(locator) and _last_ranges \
            and prev.database is _last_ranges[0] and prev.database.identity == _identity(locator):
        base = _steering_setup(steering)
        if all((base, _setup(spec)) in prev.by_setup for spec in steering.specs.values()):
            steering.maps = compile_maps(steering, locator, prev)
            return
    if steering.specs and database_ranges_possible(locator) and enabled():
        steering.map_build = Build(steering, locator, prev)


def wait_built(steering: Steering) -> bool:
    """Wait for the map build of ``steering`` if one is running (the server
    calls this before it serves a new snapshot: until its maps are made, the
    snapshot before it answers, or at the start nothing listens yet, so that
    no query waits on a full decision per new client network while a map is
    built beside it).  A build always ends: done, failed or abandoned.
    Whether there was one to wait for."""
    build = steering.map_build
    if not isinstance(build, Build) or build.done.is_set():
        return False
    log.info("building the steering maps before serving this snapshot")
    build.done.wait()
    return True


def retire(steering: Steering) -> None:
    """The snapshot of ``steering`` is no longer served: stop its map build."""
    build = steering.map_build
    if isinstance(build, Build):
        build.stop()


def database_ranges_possible(locator: Locator | None) -> bool:
    """Whether a map can be built for this locator: a MaxMind database
    without an ASN database, and the C helper that walks it."""
    return isinstance(locator, MaxMindLocator) and locator.asn_reader is None \
        and _mmdbtree is not None
