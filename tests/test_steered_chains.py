"""Steered CNAMEs followed inside the zone (issue #9, defect 10).

A steered CNAME whose chosen target is in the zone is followed as a static
CNAME is (RFC 1034 4.3.2, RFC 6604), a target that is steered itself adds a
second decision for the same client, and a static CNAME whose target is
steered is followed too.  The ECS scope of such an answer is the longest of
its decisions' scopes (never longer than the source prefix); static links
do not narrow it.  Answers are parsed by dnspython.  At three depths: the
responder with a fixed locator (table-driven), thousands of clients on the
real GeoLite2 database against the independent oracle of
tests/test_geo_oracle.py, and a server over loopback.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from test_steering import LOCATIONS, POPS, addresses, ask, scope

from geodns import counters
from geodns.compile import Steered, compile_zones
from geodns.config import Address, Config
from geodns.explain import explain, render
from geodns.geo import MaxMindLocator, StaticLocator, bundled_database
from geodns.health.view import HealthView
from geodns.server.app import Server
from geodns.steering import DOWN, Pop, Steering
from geodns.wire import Responder
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_file, load_zone_text
from tests.conftest import section

HERE = Path(__file__).parent
Z = "chain.example."
SOA = f"{Z} 300 SOA ns1.{Z} hostmaster.{Z} 3 7200 3600 1209600 300"
PARIS, NEW_YORK, BANGKOK, RIO = "10.1.9.0/24", "10.2.7.0/24", "10.4.0.0/24", "10.3.0.0/24"


def make(health: HealthView | None = None) -> Responder:
    problems = Problems()
    zone = load_zone_file(HERE / "zones" / "chain.example.yaml", problems, pops=POPS)
    assert zone is not None and not problems, list(map(str, problems))
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    return Responder(compile_zones([zone]), Steering(POPS, ("iad", "fra"), (), specs),
                     StaticLocator(LOCATIONS), health or HealthView())


@dataclass
class Case:
    qname: str
    qtype: str
    ecs: str
    scope: int | None  # None: no ECS option in the answer
    answer: list[str] = field(default_factory=list)
    ns: list[str] = field(default_factory=list)
    rcode: str = "NOERROR"


def n(name: str) -> str:
    return f"{name}.{Z}"


def cname(owner: str, target: str, ttl: int = 30) -> str:
    return f"{n(owner)} {ttl} CNAME {target if target.endswith('.') else n(target)}"


def a(owner: str, address: str, ttl: int = 3600) -> str:
    return f"{n(owner)} {ttl} A {address}"


CASES = [
    # A steered CNAME to static names: followed, one decision, its scope.
    Case("www", "A", PARIS, 16, [cname("www", "www-fra"), a("www-fra", "192.0.2.1")]),
    Case("www", "AAAA", PARIS, 16,
         [cname("www", "www-fra"), f"{n('www-fra')} 3600 AAAA 2001:db8::1"]),
    Case("www", "TXT", PARIS, 16, [cname("www", "www-fra"), f'{n("www-fra")} 3600 TXT "fra"']),
    Case("www", "MX", PARIS, 16, [cname("www", "www-fra")], [SOA]),  # the target's NODATA
    Case("www", "TYPE65", PARIS, 16, [cname("www", "www-fra")], [SOA]),  # a type not served
    Case("www", "CNAME", PARIS, 16, [cname("www", "www-fra")]),  # the CNAME itself
    Case("www", "ANY", PARIS, 16, [cname("www", "www-fra")]),  # RFC 8482: one RRset
    Case("www", "A", "10.4.0.0/20", 20,  # never longer than the source prefix
         [cname("www", "www-sin"), cname("www-sin", "www-fra", 3600), a("www-fra", "192.0.2.1")]),
    Case("www", "A", NEW_YORK, 16, [cname("www", "www-iad"), a("www-iad", "192.0.2.2")]),
    # ... then a static CNAME after the steered one.
    Case("www", "A", BANGKOK, 24, [cname("www", "www-sin"), cname("www-sin", "www-fra", 3600),
                                   a("www-fra", "192.0.2.1")]),
    Case("www", "A", RIO, 16, [cname("www", "www.outside.example.")]),  # not ours: not followed
    # A steered CNAME to steered names: two decisions; the longer scope wins.
    Case("cdn", "A", "10.1.5.0/24", 22,  # rule /22 pins iad: us.cdn, whose decision is /16
         [cname("cdn", "us.cdn"), a("us.cdn", "192.0.2.12", 30)]),
    Case("cdn", "A", PARIS, 21,  # stops short of the rule's 10.1.4.0/22: /21; fra: eu.cdn /16
         [cname("cdn", "eu.cdn"), a("eu.cdn", "192.0.2.11", 30)]),
    Case("cdn", "A", "10.5.200.0/24", 17,  # jnb: eu.cdn /16, whose rule pins fra at /17
         [cname("cdn", "eu.cdn"), a("eu.cdn", "192.0.2.11", 30)]),
    Case("cdn", "A", "10.5.1.0/24", 17,  # the same scope outside the rule; jnb
         [cname("cdn", "eu.cdn"), a("eu.cdn", "192.0.2.15", 30)]),
    Case("cdn", "A", "10.5.0.0/16", 16,  # never longer than the source prefix
         [cname("cdn", "eu.cdn"), a("eu.cdn", "192.0.2.15", 30)]),
    Case("cdn", "TXT", "10.5.1.0/24", 16, [cname("cdn", "eu.cdn")], [SOA]),
    # Static CNAMEs to steered names: followed; the static link does not narrow the scope.
    Case("alias", "A", PARIS, 16, [cname("alias", "www", 3600), cname("www", "www-fra"),
                                   a("www-fra", "192.0.2.1")]),
    Case("alias-a", "A", "10.5.200.0/24", 17,
         [cname("alias-a", "eu.cdn", 3600), a("eu.cdn", "192.0.2.11", 30)]),
    Case("alias-a", "TXT", "10.5.200.0/24", 0,  # eu.cdn has no TXT: static, scope 0
         [cname("alias-a", "eu.cdn", 3600)], [SOA]),
    # Loops end at the repeated name; other ends of a chain as for static CNAMEs.
    Case("loop", "A", PARIS, 16, [cname("loop", "loop-back"), cname("loop-back", "loop", 3600)]),
    Case("dangling", "A", PARIS, 16, [cname("dangling", "missing")], [SOA], "NXDOMAIN"),
    Case("dangling", "A", NEW_YORK, 16, [cname("dangling", "www-iad"),
                                         a("www-iad", "192.0.2.2")]),
    Case("to-sub", "A", PARIS, 16, [cname("to-sub", "host.sub")],
         [f"{n('sub')} 3600 NS ns.elsewhere.example."]),
    Case("x.wild", "A", PARIS, 16, [cname("x.wild", "www-fra"), a("www-fra", "192.0.2.1")]),
    Case("to-wild", "A", PARIS, 16, [cname("to-wild", "x.users"), a("x.users", "192.0.2.80")]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.qname}/{c.qtype}/{c.ecs}")
def test_followed_chains(case: Case) -> None:
    msg = ask(make(), n(case.qname), case.qtype, ecs=case.ecs)
    assert dns.rcode.to_text(msg.rcode()) == case.rcode
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.TC
    assert section(msg.answer) == sorted(case.answer)
    assert section(msg.authority) == sorted(case.ns)
    assert scope(msg) == case.scope
    if case.answer:  # the question's own record takes the question's case
        assert msg.answer[0].name.to_text() == n(case.qname)


@pytest.mark.parametrize("peer,expected", [("10.1.9.9", "192.0.2.1"), ("10.2.0.1", "192.0.2.2")])
def test_without_ecs_the_resolver_address_decides(peer: str, expected: str) -> None:
    msg = ask(make(), n("www"), peer=peer)
    assert addresses(msg)[-1] == expected and scope(msg) is None
    msg = ask(make(), n("www"), peer=peer, ecs="0.0.0.0/0")
    assert addresses(msg)[-1] == expected and scope(msg) == 0


def test_all_down_policies_at_the_second_decision() -> None:
    r = make(HealthView({p: DOWN for p in POPS}))
    # to-closed fails open; closed fails closed: SERVFAIL for the whole answer.
    assert ask(r, n("to-closed"), ecs=PARIS).rcode() == dns.rcode.SERVFAIL
    # to-empty fails open; empty answers NODATA: the CNAME and the SOA.
    msg = ask(r, n("to-empty"), ecs=PARIS)
    assert msg.rcode() == 0 and section(msg.answer) == [cname("to-empty", "empty")]
    assert section(msg.authority) == [SOA] and scope(msg) == 16


def test_a_chain_is_decided_once_per_client_network() -> None:
    """The combined answer is cached like a single decision: a repeat costs
    no steering; a health change forgets it."""
    r = make()
    for _ in range(3):
        assert addresses(ask(r, n("cdn"), ecs="10.1.5.0/24"))[-1] == "192.0.2.12"
    assert r.events[(counters.Event.STEERING_MISS, "")] == 1
    assert r.cache_entries() == 1
    r.use_health(HealthView({"iad": DOWN}))
    assert r.cache_entries() == 0
    msg = ask(r, n("cdn"), ecs="10.1.5.0/24")  # the pin to iad fails open; us.cdn: gru
    assert addresses(msg)[-1] == "192.0.2.14" and scope(msg) == 22
    assert r.events[(counters.Event.STEERING_MISS, "")] == 2


def test_location_only_chains_are_cached_by_location() -> None:
    r = make()
    by_location = {e.qname: e.by_location for e in _entries(r)}
    assert by_location[b"\x03www\x05chain\x07example\x00"]
    assert by_location[b"\x05alias\x05chain\x07example\x00"]
    assert not by_location[b"\x03cdn\x05chain\x07example\x00"]  # its rule has networks
    assert not by_location[b"\x07alias-a\x05chain\x07example\x00"]  # eu.cdn's rule does
    ask(r, n("www"), ecs="10.1.9.0/24")
    ask(r, n("www"), ecs="10.1.10.0/24")  # the same database network: one decision
    assert r.events[(counters.Event.STEERING_MISS, "")] == 1


def _entries(r: Responder) -> list[Steered]:
    return [e for e in r.exact.values() if isinstance(e, Steered)]


def test_counted_under_the_decision_that_chose_the_address() -> None:
    r = make()
    ask(r, n("cdn"), ecs="10.1.5.0/24")  # cdn: rule -> iad; us.cdn: proximity -> iad
    ask(r, n("cdn"), ecs="10.5.200.0/24")  # cdn: proximity -> jnb; eu.cdn: rule -> fra
    labels = {label for (label, _, _) in counters.decode(r.counts)}
    assert labels == {(Z, 0, "iad", "proximity"), (Z, 0, "fra", "rule")}


def test_tables_list_each_steered_record_set_once() -> None:
    r = make()
    sets = [(e.spec.owner, e.spec.rtype) for e in r.tables.steered]
    assert len(sets) == len(set(sets)) == 13


def test_explain_shows_every_decision() -> None:
    r = make()
    result = explain(r, n("cdn"), "A", "192.0.2.1", "10.5.200.0/24")
    assert result["steering"]["chosen"] == ["jnb"] and result["steering"]["ecs_scope"] == 16
    (then,) = result["chain"]
    assert then["record"].startswith("eu.cdn.chain.example.")
    assert then["chosen"] == ["fra"] and then["reason"] == "rule" and then["ecs_scope"] == 17
    assert result["answer"]["ecs_scope"] == 17
    assert result["answer"]["answer"][-1].split()[-1] == "192.0.2.11"
    text = render(result)
    assert "then eu.cdn.chain.example." in text and "chosen: fra (reason: rule)" in text
    static = explain(r, n("alias-a"), "A", "192.0.2.1", "10.5.200.0/24")
    assert static["steering"]["record"].startswith("eu.cdn.chain.example.")
    assert static["chain"] == []


# -- thousands of clients on the real database, against the oracle ------------------------

CHAIN_ZONE = """\
origin: chain.test.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    CNAME:
      steer: {pops: {fra: eu, lhr: eu, iad: am, sjc: am, gru: am, jnb: eu, sin: ap, syd: ap}}
  eu: {A: {steer: {pops: {fra: 192.0.2.1, lhr: 192.0.2.2, jnb: 192.0.2.3}}}}
  am: {A: {steer: {pops: {iad: 198.51.100.1, sjc: 198.51.100.2, gru: 198.51.100.3}}}}
  ap: {A: {steer: {pops: {sin: 203.0.113.1, syd: 203.0.113.2}}}}
  alias: {CNAME: www}
"""


def test_thousands_of_clients_against_the_oracle() -> None:
    from test_geo_oracle import CONFIG, Oracle, public_addresses

    from geodns.config import load_config

    db = bundled_database()
    if db is None:
        pytest.skip("maxminddb-geolite2 is not installed")
    problems = Problems()
    cfg = load_config(CONFIG, problems)
    zone = load_zone_text(CHAIN_ZONE, "chain.yaml", "chain.test.", problems, pops=cfg.pops)
    assert zone is not None and not problems, list(map(str, problems))
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    r = Responder(compile_zones([zone]), Steering(cfg.pops, cfg.default_order, cfg.latency,
                                                  specs), MaxMindLocator(db), HealthView())
    regions = {"eu": ("fra", "lhr", "jnb"), "am": ("iad", "sjc", "gru"), "ap": ("sin", "syd")}
    region_of = {p: reg for reg, pops in regions.items() for p in pops}
    by_address = {str(ipaddress.ip_address(rd.wire)): pop for (o, _), s in specs.items() if o != b"\x03www\x05chain\x04test\x00"
                  for pop, rds in s.values.items() for rd in rds}
    # Unplaced clients: the default order, then the other PoPs in configuration order.
    order = (*cfg.default_order, *(p for p in cfg.pops if p not in cfg.default_order))
    oracle = Oracle({p: (v.latitude, v.longitude) for p, v in cfg.pops.items()},
                    cfg.default_order[0],
                    {p: (v.country, v.continent) for p, v in cfg.pops.items()}, order)
    rnd = random.Random(20261202)
    for address in public_addresses(rnd, 1500):
        net = ipaddress.ip_network((address, 24), strict=False)
        first, prefix = oracle.acceptable(net.network_address)
        for qname in ("www.chain.test.", "alias.chain.test."):
            msg = ask(r, qname, ecs=str(net))
            *links, last = [rrset for rrset in msg.answer]
            target = links[-1][0].target.to_text()
            region = target.split(".")[0]
            assert any(region_of[p] == region for p in first), (net, target)
            # The second decision: the nearest of that region's PoPs.
            down = frozenset(p for p in cfg.pops if p not in regions[region])
            second, _ = oracle.acceptable(net.network_address, down)
            assert by_address[last[0].to_text()] in second, (net, target, last)
            assert scope(msg) == min(24, prefix), net


# -- over loopback --------------------------------------------------------------------------

async def test_over_a_real_server(tmp_path: Path) -> None:
    if bundled_database() is None:
        pytest.skip("maxminddb-geolite2 is not installed")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "chain.test.yaml").write_text(CHAIN_ZONE)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 pops={"fra": Pop("fra", 50.11, 8.68, order=0),
                       "lhr": Pop("lhr", 51.47, -0.45, order=1),
                       "jnb": Pop("jnb", -26.14, 28.25, order=2),
                       "iad": Pop("iad", 38.95, -77.45, order=3),
                       "sjc": Pop("sjc", 37.36, -121.93, order=4),
                       "gru": Pop("gru", -23.43, -46.47, order=5),
                       "sin": Pop("sin", 1.35, 103.99, order=6),
                       "syd": Pop("syd", -33.95, 151.18, order=7)},
                 default_order=("iad", "fra"))
    srv = Server(cfg, admin=False)
    await srv.start()
    try:
        port = srv.bound[0].port
        for subnet, want in (("200.160.0.0/24", ["www.chain.test. 30 CNAME am.chain.test.",
                                                 "am.chain.test. 30 A 198.51.100.3"]),
                             ("77.88.8.0/24", ["www.chain.test. 30 CNAME eu.chain.test.",
                                               "eu.chain.test. 30 A 192.0.2.1"])):
            net = ipaddress.ip_network(subnet)
            q = dns.message.make_query("www.chain.test.", "A", use_edns=0, options=[
                dns.edns.ECSOption(str(net.network_address), 24, 0)])
            for resp in (await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2),
                         await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)):
                assert section(resp.answer) == sorted(want), subnet
                assert 0 < (scope(resp) or 0) <= 24
        # Without ECS: the resolver's own address (unplaced: the default order, iad).
        resp = await dns.asyncquery.udp(dns.message.make_query("alias.chain.test.", "A"),
                                        "127.0.0.1", port=port, timeout=2)
        assert section(resp.answer) == sorted([
            "alias.chain.test. 3600 CNAME www.chain.test.", "www.chain.test. 30 CNAME "
            "am.chain.test.", "am.chain.test. 30 A 198.51.100.1"])
    finally:
        await srv.shutdown()
