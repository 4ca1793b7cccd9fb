"""The compiled steering map (geodns.steermap) against today's decisions.

On the bundled GeoLite2 City database and the example configuration (eight
PoPs, a network rule): for random IPv4 and IPv6 clients, under several
health views, the map's decision is the one :meth:`Steering.decide` makes;
every address inside an answer's ECS scope gets the same answer through
the responder; ``explain`` shows the range the client fell in.
"""

from __future__ import annotations

import bisect
import gc
import ipaddress
import random
import shutil
import socket
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import pytest
from refservers import skip_or_fail
from serveproc import served
from test_geo_oracle import CONFIG, NAME, ROOT, public_addresses

from geodns import steermap
from geodns.compile import Steered
from geodns.config import load_config
from geodns.explain import explain, render
from geodns.geo import bundled_database
from geodns.health.view import HealthView
from geodns.server.app import offline_snapshot
from geodns.snapshot import Snapshot
from geodns.steering import DOWN, DRAINING, Steering
from geodns.wire import Responder, _udpbatch
from geodns.yamlsrc import Problems

if bundled_database() is None:
    skip_or_fail("maxminddb-geolite2 (the GeoLite2 City database) is not installed")

HEALTH = [
    HealthView(),
    HealthView({"fra": DOWN}),
    HealthView({"iad": DOWN, "sin": DRAINING}),
    HealthView(penalties={"iad": 40.0, "gru": 5.0}),
    HealthView({"fra": DOWN}, penalties={"sin": 120.0}),
    HealthView({p: DOWN for p in ("fra", "iad", "sin", "gru", "lhr", "nrt", "syd", "jnb")}),
]


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    problems = Problems()
    cfg = load_config(CONFIG, problems)
    assert not problems
    snap = offline_snapshot(cfg)
    steering = snap.steering
    maps = steermap.compile_maps(steering, snap.locator)
    assert maps is not None and maps.by_key
    steering.maps = maps
    return snap


def _steered(responder: Responder) -> list[Steered]:
    return [e for e in responder.exact.values() if isinstance(e, Steered)]


def _clients(rnd: random.Random) -> list[bytes]:
    out = [a.packed for a in public_addresses(rnd, 1500)]
    out += [ipaddress.ip_network((a, 24), strict=False).network_address.packed
            for a in public_addresses(rnd, 500)]
    out += [b"\xc0\x00\x02" + bytes((rnd.randrange(256),)) for _ in range(20)]  # the rule
    out += [ipaddress.IPv6Address((0x2000 + rnd.randrange(0x1000)) << 112
                                  | rnd.getrandbits(64) << 48).packed for _ in range(600)]
    out += [ipaddress.IPv6Address(f"::ffff:{a}").packed for a in public_addresses(rnd, 100)]
    out += [ipaddress.IPv6Address((0x2002 << 112) | int(a) << 80).packed
            for a in public_addresses(rnd, 100)]
    return out


def _legacy(snap: Snapshot, st: Steered, client: bytes, source: int,
            health: HealthView) -> Any:
    locator = snap.locator
    assert locator is not None
    address = ipaddress.ip_address(client)
    return snap.steering.decide(st.spec, address, source, locator.locate(address), health)


def test_the_map_decides_as_steering_does(snap: Snapshot) -> None:
    steering: Steering = snap.steering
    maps = steering.maps
    assert isinstance(maps, steermap.Maps)
    entries = _steered(snap.responder)
    assert entries
    rnd = random.Random(12)
    clients = _clients(rnd)
    compared = 0
    for health in HEALTH:
        penalised = any(health.penalties.values())
        for client in clients:
            source = len(client) * 8
            for st in entries:
                got = steermap.decide(maps, steering, st.spec, client, source, health,
                                      penalised)
                assert got is not None, st.spec.owner
                want = _legacy(snap, st, client, source, health)
                assert (got.outcome, got.pops, got.reason) == \
                    (want.outcome, want.pops, want.reason), (ipaddress.ip_address(client), health)
                # Never wider than the database network would allow... but
                # never longer than the source prefix either.
                assert got.scope <= source
                compared += 1
    assert compared >= len(HEALTH) * len(clients)


def _ask(responder: Responder, net: ipaddress.IPv4Network | ipaddress.IPv6Network
         ) -> tuple[list[str], int]:
    q = dns.message.make_query(NAME, "A", use_edns=0, options=[
        dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0)])
    wire = responder.respond(q.to_wire(), True, ("192.0.2.53", 5353))
    assert wire is not None
    msg = dns.message.from_wire(wire)
    (opt,) = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset), opt.scopelen


@pytest.mark.parametrize("health", [HEALTH[0], HEALTH[3]], ids=["healthy", "penalties"])
def test_every_address_in_the_scope_gets_the_same_answer(snap: Snapshot,
                                                         health: HealthView) -> None:
    responder = snap.responder.scratch()
    responder.use_health(health)
    rnd = random.Random(99)
    widened = 0
    locator = snap.locator
    assert locator is not None
    for a in public_addresses(rnd, 150):
        net = ipaddress.ip_network((a, 24), strict=False)
        answer, scope = _ask(responder, net)
        assert scope <= 24
        today = min(24, locator.locate(net.network_address).prefixlen)
        widened += scope < today
        assert scope <= today, net  # never narrower than the database network
        around = ipaddress.ip_network((a, scope), strict=False)
        probes = {around.network_address, around.broadcast_address}
        probes |= {around.network_address + rnd.randrange(around.num_addresses)
                   for _ in range(10)}
        for p in probes:
            sub = ipaddress.ip_network((p, 24), strict=False)
            assert _ask(responder, sub)[0] == answer, (net, scope, sub)
    assert widened > 0  # neighbouring networks that rank the same were merged


def test_explain_shows_the_range_and_the_ranking(snap: Snapshot) -> None:
    result = explain(snap.responder, NAME, "A", "192.0.2.1", "200.160.0.0/24")
    st = result["steering"]
    assert st["map"] is not None
    first, last = (ipaddress.IPv4Address(x) for x in st["map"]["range"].split("-"))
    assert first <= ipaddress.IPv4Address("200.160.0.0") <= last
    assert st["map"]["ranked"][0]["pop"] == st["chosen"][0] == "gru"
    assert st["ecs_scope"] == result["answer"]["ecs_scope"]
    assert "range" in render(result)


def _copy(steering: Steering) -> Steering:
    return Steering(steering.pops, steering.default_order, steering.latency, steering.specs)


def test_maps_are_built_by_default(snap: Snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEODNS_STEER_MAPS")
    steering = _copy(snap.steering)
    steermap.attach(steering, snap.locator, None)
    build = steering.map_build
    assert isinstance(build, steermap.Build)
    assert build.done.wait(60)
    assert isinstance(steering.maps, steermap.Maps) and steering.maps.by_key
    # The next snapshot with the same database and set-ups gets them at once.
    again = _copy(snap.steering)
    steermap.attach(again, snap.locator, steering)
    assert isinstance(again.maps, steermap.Maps) and again.map_build is None
    monkeypatch.setenv("GEODNS_STEER_MAPS", "0")
    off = _copy(snap.steering)
    steermap.attach(off, snap.locator, None)
    assert off.maps is None and off.map_build is None


def test_a_retired_snapshots_build_stops(snap: Snapshot,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEODNS_STEER_MAPS", "1")
    steering = _copy(snap.steering)
    steermap.attach(steering, snap.locator, None)
    build = steering.map_build
    assert isinstance(build, steermap.Build)
    steermap.retire(steering)  # what Server._swap does to the snapshot it replaces
    assert build.done.wait(2), "the build went on after its snapshot was retired"
    assert steering.maps is None
    # A snapshot dropped without being served (a refused reload) stops its build too.
    dropped = _copy(snap.steering)
    steermap.attach(dropped, snap.locator, None)
    build = dropped.map_build
    assert isinstance(build, steermap.Build)
    del dropped
    gc.collect()
    assert build.done.wait(2), "the build went on after its snapshot was dropped"


# -- the C data plane (geodns/_plane.c) answering from the maps -----------------------
def _sockaddr(client: bytes) -> bytes:
    """The raw sockaddr the kernel gives recvmmsg for a query from ``client``."""
    if len(client) == 4:
        return socket.AF_INET.to_bytes(2, "little") + (5353).to_bytes(2, "big") + client \
            + bytes(8)
    return socket.AF_INET6.to_bytes(2, "little") + (5353).to_bytes(2, "big") + bytes(4) \
        + client + bytes(4)


def _query(rnd: random.Random, name: str, rtype: str, client: bytes) -> bytes:
    """A query for ``name`` in random case, with or without EDNS, DO, RD and
    a Client Subnet option for ``client`` (a random source prefix, 0 included)."""
    ecs = rnd.random() < 0.7
    bits = len(client) * 8
    options = []
    if ecs:
        source = rnd.choice([0, bits, bits // 2, rnd.randrange(bits + 1)])
        net = ipaddress.ip_network((ipaddress.ip_address(client), source), strict=False)
        options = [dns.edns.ECSOption(str(net.network_address), source, 0)]
    edns = 0 if ecs or rnd.random() < 0.7 else -1
    q = dns.message.make_query(name, rtype, use_edns=edns, options=options,
                               want_dnssec=edns == 0 and rnd.random() < 0.3)
    if rnd.random() < 0.5:
        q.flags &= ~dns.flags.RD
    wire = bytearray(q.to_wire())
    i = 12
    while wire[i]:
        for k in range(i + 1, i + 1 + wire[i]):
            if rnd.random() < 0.5:
                wire[k] = ord(chr(wire[k]).swapcase())
        i += wire[i] + 1
    return bytes(wire)


@pytest.mark.skipif(_udpbatch is None, reason="the C helper is not built")
@pytest.mark.parametrize("health", HEALTH, ids=["healthy", "fra-down", "down-draining",
                                                "penalties", "down-penalties", "all-down"])
def test_the_c_plane_answers_as_python_does(snap: Snapshot, health: HealthView) -> None:
    """Every query the C plane answers gets the bytes Python gives it, and
    is counted the same; once Python has decided a client's order of PoPs
    (with penalties, which reorder within an order: its ranking), C answers
    every client with that order (ranking)."""
    responder = snap.responder.scratch()
    responder.use_health(health)
    oracle = snap.responder.scratch()
    oracle.use_health(health)
    plane = responder.plane
    assert plane is not None
    rnd = random.Random(7)
    entries = _steered(responder)
    names = sorted({_name_of(k) for k, e in responder.exact.items() if isinstance(e, Steered)})
    assert names
    counts_c: dict[int, int] = {}
    by_c = 0
    clients = _clients(rnd)
    for round_ in range(2):  # the first round teaches, the second is mostly C's
        for client in clients:
            name = rnd.choice(names)
            data = _query(rnd, name, rnd.choice(["A", "AAAA"]), client)
            peer = _sockaddr(client)
            want = oracle.respond(data, True, peer)
            got = plane.answer(data, peer, counts_c)
            if got is None:
                got = responder.respond(data, True, peer)
            else:
                by_c += round_
            assert got == want, (ipaddress.ip_address(client), name, data.hex())
    merged = dict(responder.counts)
    for k, v in counts_c.items():
        merged[k] = merged.get(k, 0) + v
    assert merged == dict(oracle.counts)
    # Rankings are many more than orders: fewer clients share one.
    assert by_c > len(clients) // (4 if any(health.penalties.values()) else 2), by_c
    assert plane.learnt() > 0
    assert entries


def _name_of(key: bytes) -> str:
    labels = []
    i = 0
    while key[i]:
        labels.append(key[i + 1:i + 1 + key[i]].decode())
        i += key[i] + 1
    return ".".join(labels) + "."


@pytest.mark.skipif(_udpbatch is None, reason="the C helper is not built")
def test_the_c_plane_forgets_when_health_changes(snap: Snapshot) -> None:
    responder = snap.responder.scratch()
    responder.use_health(HEALTH[0])
    plane = responder.plane
    assert plane is not None
    client = ipaddress.IPv4Address("200.160.0.1").packed
    data = _query(random.Random(1), NAME, "A", client)
    peer = _sockaddr(client)
    assert plane.answer(data, peer, {}) is None  # not learnt yet
    first = responder.respond(data, True, peer)
    assert plane.answer(data, peer, {}) == first
    assert plane.answer(data, peer, {}) == first  # (now from the client's slot)
    # What the slot keeps goes with what was learnt.
    plane.forget()
    assert plane.answer(data, peer, {}) is None
    responder.use_health(HealthView({"gru": DOWN}))
    assert plane.learnt() == 0 and plane.answer(data, peer, {}) is None
    again = responder.respond(data, True, peer)
    assert again != first and plane.answer(data, peer, {}) == again


@pytest.mark.skipif(_udpbatch is None, reason="the C helper is not built")
def test_the_c_ranges_find_what_python_finds(snap: Snapshot) -> None:
    """SteerRanges.look_up (the C plane's search, with its index by the top
    16 bits) against SteerMap in Python: order number and scope, for random
    clients, every range's first and last address near the index's bucket
    edges, and the ends of both address spaces."""
    maps = snap.steering.maps
    assert isinstance(maps, steermap.Maps)
    rnd = random.Random(5)
    for m in {id(m): m for m in maps.by_key.values()}.values():
        assert m.c is not None
        clients = _clients(rnd)
        for fam, size in ((m.v4, 4), (m.v6, 16)):
            top = (1 << fam.bits) - 1
            edges = {0, top, *(rnd.randrange(1 << 16) << (fam.bits - 16) for _ in range(50))}
            for e in list(edges):
                j = bisect.bisect_right(fam.starts, e) - 1
                for k in (j - 1, j, j + 1):
                    if 0 <= k < len(fam.starts):
                        edges |= {fam.starts[k], max(fam.starts[k] - 1, 0)}
            for j in rnd.sample(range(len(fam.starts)), 300):
                edges |= {fam.starts[j], max(fam.starts[j] - 1, 0)}
            clients += [e.to_bytes(size, "big") for e in edges]
        for client in clients:
            source = rnd.choice([len(client) * 8, 24 if len(client) == 4 else 48])
            loc, a, above = m.locate(client)
            want = (m.order_at(client), m.scope_at(loc, a, above, source, False))
            assert m.c.look_up(client, source) == want, ipaddress.ip_address(client)
            want = (m.ranking_number(client), m.scope_at(loc, a, above, source, True))
            assert m.c.look_up(client, source, True) == want, ipaddress.ip_address(client)


def test_the_c_ranges_refuse_starts_that_do_not_increase() -> None:
    """SteerRanges checks its arrays (without the GIL, as it makes its index):
    starts or runs that repeat or go back, or that do not begin at 0, are a
    ValueError, not a map that answers wrongly."""
    from array import array

    from geodns import _udpbatch

    def ranges(v4_starts: list[int], v4_runs: list[int], v6_starts: list[int]) -> object:
        return _udpbatch.SteerRanges(
            array("I", v4_starts), array("i", [0] * len(v4_starts)), array("I", v4_runs), {},
            b"".join(s.to_bytes(16, "big") for s in v6_starts),
            array("i", [0] * len(v6_starts)), bytes(16), {}, array("i", [0]))

    assert ranges([0, 5, 9], [0, 9], [0, 1 << 64]) is not None
    for v4_starts, v4_runs, v6_starts in (([0, 5, 5], [0], [0]), ([0, 9, 5], [0], [0]),
                                          ([0, 5], [0, 5, 2], [0]), ([0], [0], [0, 7, 7]),
                                          ([1, 5], [0], [0])):
        with pytest.raises(ValueError, match="SteerRanges"):
            ranges(v4_starts, v4_runs, v6_starts)


def test_a_snapshot_is_served_once_its_maps_are_built(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real node: at the start it listens only once its steering maps are
    built, and a reload that needs a new map (a new set-up) is served only
    once that map is built, the snapshot before answering meanwhile, so that
    no new client network meets a node still building its map."""
    monkeypatch.setenv("GEODNS_STEER_MAPS", "1")
    zones = tmp_path / "zones"
    zones.mkdir()
    zone = zones / "bench.test.yaml"
    shutil.copy(ROOT / "bench" / "zone" / "yaml" / "bench.test.yaml", zone)
    config = tmp_path / "geodns.yaml"
    config.write_text(f"listen: ['127.0.0.1:0']\nzones: {zones}\nworkers: 1\n"
                      "reload: {interval: 0.2}\ngeoip: {database: null}\n"
                      "pops:\n  fra: {location: [50.11, 8.68]}\n"
                      "  iad: {location: [38.95, -77.45]}\n"
                      "  sin: {location: [1.35, 103.99]}\n  gru: {location: [-23.43, -46.47]}\n")
    with served(["--config", str(config)]) as node:
        port = node.dns_port(timeout=120)
        said = node.messages()
        built = [i for i, m in enumerate(said) if m.startswith("steering maps built")]
        listening = [i for i, m in enumerate(said) if m.startswith("listening on")]
        assert built and listening and built[0] < listening[0], node.text()
        q = dns.message.make_query("geo.bench.test.", "A")
        q.use_edns(0, options=[dns.edns.ECSOption("81.2.69.0", 24)])  # a London network
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
        assert [str(rd) for rr in r.answer for rd in rr] == ["192.0.2.1"]
        # A second steered name with a set-up of its own: a new map.
        mark = node.mark()
        zone.write_text(zone.read_text().replace("serial: 2026112201", "serial: 2026112202")
                        + '  "geo2":\n    A:\n      steer:\n'
                          "        pops: {iad: 192.0.2.12, sin: 192.0.2.13}\n")
        node.wait_for(lambda x: str(x.get("message", "")).startswith("serving "), 120, mark)
        said = node.messages()[mark:]
        built = [i for i, m in enumerate(said) if m.startswith("steering maps built")]
        serving = [i for i, m in enumerate(said) if m.startswith("serving ")]
        assert built and built[0] < serving[0], node.text()
        q = dns.message.make_query("geo2.bench.test.", "A")
        q.use_edns(0, options=[dns.edns.ECSOption("81.2.69.0", 24)])
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
        assert [str(rd) for rr in r.answer for rd in rr] == ["192.0.2.12"]
