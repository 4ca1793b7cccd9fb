"""Steering on the real GeoLite2 City database against an independent oracle.

Thousands of random public addresses, with and without ECS, on the example
configuration (eight PoPs).  The oracle reads the database with maxminddb
itself and measures distance with 3-D unit vectors and atan2 (not the
haversine formula geodns uses); geodns's answer must be the oracle's nearest
PoP (or, within 1 km of a tie, either), the ECS scope must be the database
network (capped at the source prefix), and `explain` must agree with every
served answer.  A few hundred go over real UDP to a `geodns serve` process.
"""

from __future__ import annotations

import ipaddress
import math
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import maxminddb
import pytest
from refservers import skip_or_fail

from geodns.config import load_config
from geodns.explain import explain
from geodns.geo import bundled_database
from geodns.health.view import HealthView
from geodns.server.app import offline_snapshot
from geodns.steering import DOWN
from geodns.yamlsrc import Problems

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "geodns.yaml"
NAME = "www.example.com."
RESERVED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3")]

if bundled_database() is None:
    skip_or_fail("maxminddb-geolite2 (the GeoLite2 City database) is not installed")


def public_addresses(rnd: random.Random, count: int) -> list[ipaddress.IPv4Address]:
    out = []
    while len(out) < count:
        a = ipaddress.IPv4Address(rnd.getrandbits(32))
        if not any(a in n for n in RESERVED):
            out.append(a)
    return out


def unit(lat: float, lon: float) -> tuple[float, float, float]:
    la, lo = math.radians(lat), math.radians(lon)
    return (math.cos(la) * math.cos(lo), math.cos(la) * math.sin(lo), math.sin(la))


def oracle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    u, v = unit(*a), unit(*b)
    cross = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    return 6371.0 * math.atan2(math.sqrt(sum(c * c for c in cross)), dot)


class Oracle:
    def __init__(self, pops: dict[str, tuple[float, float]], default: str,
                 labels: dict[str, tuple[str | None, str | None]],
                 order: tuple[str, ...]) -> None:
        self.reader = maxminddb.open_database(str(bundled_database()))
        self.pops = pops
        self.default = default
        self.labels = labels  # pop -> (country, continent)
        self.order = order  # default order, then the rest in configuration order

    def acceptable(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                   down: frozenset[str] = frozenset()) -> tuple[set[str], int]:
        """PoPs an honest implementation may pick, and the database prefix."""
        record, prefix = self.reader.get_with_prefix_len(address)
        loc = (record or {}).get("location") or {}
        if "latitude" not in loc:
            # docs/steering.md: same country, then same continent, then default order.
            country = ((record or {}).get("country") or
                       (record or {}).get("registered_country") or {}).get("iso_code")
            continent = ((record or {}).get("continent") or {}).get("code")
            for want in (lambda p: country and self.labels[p][0] == country,
                         lambda p: continent and self.labels[p][1] == continent,
                         lambda p: True):
                ranked = [p for p in self.order if p not in down and want(p)]
                if ranked:
                    return {ranked[0]}, prefix
            return set(), prefix
        here = (loc["latitude"], loc["longitude"])
        dist = sorted((oracle_km(here, where), pop) for pop, where in self.pops.items()
                      if pop not in down)
        return {p for d, p in dist if d - dist[0][0] < 1.0}, prefix


@pytest.fixture(scope="module")
def setup():
    problems = Problems()
    cfg = load_config(CONFIG, problems)
    assert not problems, list(map(str, problems))
    snap = offline_snapshot(cfg)
    assert not snap.errors()
    zone = next(z for z in snap.served() if z.name == "example.com.")
    spec = zone.steered[b"\x03www\x07example\x03com\x00"][1]
    by_address = {str(ipaddress.ip_address(rds[0].wire)): pop for pop, rds in spec.values.items()}
    oracle = Oracle({p: (v.latitude, v.longitude) for p, v in cfg.pops.items()},
                    cfg.default_order[0],
                    {p: (v.country, v.continent) for p, v in cfg.pops.items()},
                    cfg.default_order)
    return cfg, snap.responder, None, by_address, oracle


def ask(responder, address: str, ecs: str | None = None) -> dns.message.Message:
    options = []
    if ecs:
        net = ipaddress.ip_network(ecs)
        options.append(dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0))
    q = dns.message.make_query(NAME, "A", use_edns=0, options=options)
    return dns.message.from_wire(responder.respond(q.to_wire(), True, (address, 40000)))


def chosen(msg: dns.message.Message, by_address: dict[str, str]) -> str:
    (rrset,) = msg.answer
    (rd,) = list(rrset)
    return by_address[rd.to_text()]


def ecs_scope(msg: dns.message.Message) -> int:
    (opt,) = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    return opt.scopelen


def test_thousands_of_clients_with_and_without_ecs(setup) -> None:
    _, responder, _, by_address, oracle = setup
    rnd = random.Random(20261122)
    checked = 0
    for address in public_addresses(rnd, 3000):
        ok, _ = oracle.acceptable(address)
        assert chosen(ask(responder, str(address)), by_address) in ok, address
        net = ipaddress.ip_network((address, 24), strict=False)
        ok24, prefix = oracle.acceptable(net.network_address)
        msg = ask(responder, "192.0.2.1", ecs=str(net))
        assert chosen(msg, by_address) in ok24, net
        assert ecs_scope(msg) == min(24, prefix), net
        checked += 2
    assert checked == 6000


def test_the_rule_pins_its_network(setup) -> None:
    _, responder, _, by_address, _ = setup
    for last in (0, 7, 255):
        assert chosen(ask(responder, f"192.0.2.{last}"), by_address) == "fra"
    msg = ask(responder, "127.0.0.1", ecs="192.0.2.0/24")
    assert chosen(msg, by_address) == "fra" and ecs_scope(msg) == 24


def test_explain_agrees_with_every_served_answer(setup) -> None:
    _, responder, _, by_address, _ = setup
    rnd = random.Random(7)
    for address in public_addresses(rnd, 1000):
        ecs = str(ipaddress.ip_network((address, 24), strict=False)) if rnd.random() < 0.5 \
            else None
        served = ask(responder, str(address), ecs=ecs)
        result = explain(responder, NAME, "A", str(address), ecs)
        st = result["steering"]
        assert st["chosen"] == [chosen(served, by_address)]
        assert result["answer"]["answer"][0].split()[-1] == served.answer[0][0].to_text()
        if ecs:
            assert st["ecs_scope"] == ecs_scope(served) == result["answer"]["ecs_scope"]


def test_a_down_pop_is_never_chosen(setup) -> None:
    _, responder, _, by_address, oracle = setup
    rnd = random.Random(11)
    addresses = public_addresses(rnd, 600)
    try:
        for down in ("fra", "iad", "sin", "gru"):
            responder.use_health(HealthView({down: DOWN}))
            for address in addresses:
                got = chosen(ask(responder, str(address)), by_address)
                assert got != down
                ok, _ = oracle.acceptable(address, frozenset({down}))
                if len(ok) == 1 and oracle.default not in ok | {down}:
                    assert got in ok, (address, down)
    finally:
        responder.use_health(HealthView())


def test_ipv6_clients(setup) -> None:
    _, responder, _, by_address, oracle = setup
    reader = oracle.reader
    rnd = random.Random(3)
    placed = 0
    blocks = [ipaddress.ip_network(b) for b in (  # the regional registries' IPv6 blocks
        "2a00::/12", "2400::/12", "2600::/12", "2800::/12", "2c00::/12", "2001:4800::/21")]
    for _ in range(1500):
        block = rnd.choice(blocks)
        address = ipaddress.IPv6Address(int(block.network_address)
                                        | rnd.getrandbits(128 - block.prefixlen))
        ok, _ = oracle.acceptable(address)
        got = chosen(ask(responder, str(address)), by_address)
        assert got in ok, address
        placed += bool((reader.get(address) or {}).get("location"))
    assert placed > 80  # the sample did reach placed networks


def test_over_real_udp(tmp_path: Path, setup) -> None:
    _cfg, _, _, by_address, oracle = setup
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config", str(CONFIG),
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        rnd = random.Random(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                dns.query.udp(dns.message.make_query(NAME, "A"), "127.0.0.1", port=port,
                              timeout=0.3)
                break
            except dns.exception.Timeout:
                continue
        for address in public_addresses(rnd, 300):
            net = ipaddress.ip_network((address, 24), strict=False)
            q = dns.message.make_query(NAME, "A", use_edns=0, options=[
                dns.edns.ECSOption(str(net.network_address), 24, 0)])
            msg = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
            ok, prefix = oracle.acceptable(net.network_address)
            assert chosen(msg, by_address) in ok
            assert ecs_scope(msg) == min(24, prefix)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
