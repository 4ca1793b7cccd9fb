"""Steering end to end through the compiled responder, with a static
locator and health set by hand; answers parsed by dnspython."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from geodns.compile import compile_zones
from geodns.geo import Place, StaticLocator
from geodns.steering import (
    DOWN,
    DRAINING,
    UP,
    HealthView,
    Pop,
    Steering,
    SteerSpec,
    great_circle_km,
)
from geodns.wire import Responder
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_file, load_zone_text

HERE = Path(__file__).parent
POPS = {
    "fra": Pop("fra", 50.11, 8.68, "Frankfurt", "DE", "EU", order=0),
    "iad": Pop("iad", 38.95, -77.45, "Ashburn", "US", "NA", order=1),
    "sin": Pop("sin", 1.35, 103.99, "Singapore", "SG", "AS", order=2),
    "gru": Pop("gru", -23.43, -46.47, "Sao Paulo", "BR", "SA", order=3),
    "jnb": Pop("jnb", -26.14, 28.25, "Johannesburg", "ZA", "AF", order=4),
}
LOCATIONS = {
    "10.1.0.0/16": dict(latitude=48.85, longitude=2.35, continent="EU", country="FR"),  # Paris
    "10.2.0.0/16": dict(latitude=40.71, longitude=-74.0, continent="NA", country="US"),
    "10.3.0.0/16": dict(latitude=-22.9, longitude=-43.2, continent="SA", country="BR"),
    "10.4.0.0/24": dict(latitude=13.75, longitude=100.5, continent="AS", country="TH"),
    "10.5.0.0/16": dict(latitude=-33.9, longitude=18.4, continent="AF", country="ZA"),
    "203.0.0.0/16": dict(latitude=35.68, longitude=139.69, continent="AS", country="JP"),
    "2001:db8:100::/48": dict(latitude=52.52, longitude=13.4, continent="EU", country="DE"),
}


def make(health: HealthView | None = None) -> Responder:
    problems = Problems()
    zone = load_zone_file(HERE / "zones" / "steer.example.yaml", problems, pops=POPS)
    assert zone is not None, list(map(str, problems))
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    steering = Steering(POPS, ("iad", "fra"), (), specs)
    return Responder(compile_zones([zone]), steering, StaticLocator(LOCATIONS),
                     health or HealthView())


def ask(r: Responder, name: str, rtype: str = "A", *, ecs: str | None = None,
        peer: str = "192.0.2.200", udp: bool = True) -> dns.message.Message:
    options = []
    if ecs:
        net = ipaddress.ip_network(ecs, strict=False)
        options.append(dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0))
    q = dns.message.make_query(name, rtype, use_edns=0, options=options)
    wire = r.respond(q.to_wire(), udp, (peer, 5353))
    assert wire is not None
    return dns.message.from_wire(wire)


def addresses(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


def scope(msg: dns.message.Message) -> int | None:
    for opt in msg.options:
        if isinstance(opt, dns.edns.ECSOption):
            return opt.scopelen
    return None


@pytest.mark.parametrize("ecs,expected,expected_scope", [
    ("10.1.5.0/24", "192.0.2.1", 16),    # Paris -> fra; scope = database network /16
    ("10.2.0.0/15", "192.0.2.2", 15),    # never wider than the source prefix
    ("10.2.7.0/24", "192.0.2.2", 16),    # New York -> iad
    ("10.3.0.0/24", "192.0.2.4", 16),    # Rio -> gru
    ("10.4.0.0/24", "192.0.2.3", 24),    # Bangkok -> sin
    ("10.5.1.0/24", "192.0.2.5", 16),    # Cape Town -> jnb
])
def test_closest_pop_for_client_subnet(ecs: str, expected: str, expected_scope: int) -> None:
    msg = ask(make(), "www.steer.example.", ecs=ecs)
    assert addresses(msg) == [expected]
    assert scope(msg) == expected_scope
    assert msg.answer[0].ttl == 30 and msg.flags & dns.flags.AA


def test_source_address_when_no_ecs() -> None:
    r = make()
    assert addresses(ask(r, "www.steer.example.", peer="10.2.3.4")) == ["192.0.2.2"]
    assert addresses(ask(r, "www.steer.example.", peer="10.3.3.4")) == ["192.0.2.4"]
    assert scope(ask(r, "www.steer.example.", peer="10.3.3.4")) is None


def test_ecs_source_prefix_zero_uses_the_source_address() -> None:
    msg = ask(make(), "www.steer.example.", ecs="0.0.0.0/0", peer="10.4.0.9")
    assert addresses(msg) == ["192.0.2.3"] and scope(msg) == 0


def test_ipv6_client_subnet() -> None:
    msg = ask(make(), "www.steer.example.", "AAAA", ecs="2001:db8:100:5::/56")
    assert addresses(msg) == ["2001:db8::1"] and scope(msg) == 48 and msg.answer[0].ttl == 60


def test_unplaced_client_follows_default_order() -> None:
    r = make()
    assert addresses(ask(r, "www.steer.example.", peer="192.168.1.1")) == ["192.0.2.2"]
    health = HealthView({"iad": DOWN})
    assert addresses(ask(make(health), "www.steer.example.", peer="192.168.1.1")) == \
        ["192.0.2.1"]


def test_n_best_answers_in_order() -> None:
    msg = ask(make(), "two.steer.example.", ecs="10.2.0.0/24")
    assert addresses(msg) == ["192.0.2.2", "192.0.2.1"]  # iad, then fra


def test_static_types_beside_steered_ones_and_nodata() -> None:
    r = make()
    assert addresses(ask(r, "www.steer.example.", "TXT")) == ['"static beside steered"']
    msg = ask(r, "www.steer.example.", "MX", ecs="10.1.0.0/24")
    assert msg.rcode() == 0 and not msg.answer and scope(msg) == 0
    assert scope(ask(r, "plain.steer.example.", ecs="10.1.0.0/24")) == 0


@pytest.mark.parametrize("ecs,expected,expected_scope", [
    ("203.0.113.0/24", "192.0.2.3", 24),    # pinned by network (Tokyo db entry around it)
    ("203.0.112.0/24", "192.0.2.3", 24),    # Tokyo -> sin anyway; the rule network narrows
    ("203.0.0.0/24", "192.0.2.3", 18),      # scope stops short of 203.0.113.0/24
    ("10.3.9.0/24", "192.0.2.4", 16),       # SA: restricted to gru, iad -> gru
    ("10.5.9.0/24", "192.0.2.4", 16),       # AF: gru or iad (no jnb) -> gru
    ("10.1.9.0/24", "192.0.2.1", 16),       # no rule: proximity
])
def test_rules(ecs: str, expected: str, expected_scope: int) -> None:
    msg = ask(make(), "ruled.steer.example.", ecs=ecs)
    assert addresses(msg) == [expected]
    assert scope(msg) == expected_scope


def test_network_rule_pins_even_when_farther() -> None:
    health = HealthView({"sin": UP})
    r = make(health)
    # 203.0.113.0/24 is in the Tokyo entry: sin is also nearest, so check the
    # pin with sin's answer forced by the rule and gru/iad excluded.
    d = r.decision(r.exact[b"\x05ruled\x05steer\x07example\x00\x00\x01\x00\x01"],
                   ipaddress.ip_address("203.0.113.7").packed, 32, explain=True)
    assert d.reason == "rule" and d.pops == ("sin",) and [c.pop for c in d.candidates] == ["sin"]


@pytest.mark.parametrize("state", [DOWN, DRAINING])
def test_down_or_draining_pop_is_never_chosen(state: str) -> None:
    health = HealthView({"fra": state})
    msg = ask(make(health), "www.steer.example.", ecs="10.1.0.0/24")
    assert addresses(msg) == ["192.0.2.2"]  # Paris -> iad when fra is out


def test_health_change_with_cache_cleared() -> None:
    r = make()
    assert addresses(ask(r, "www.steer.example.", ecs="10.1.0.0/24")) == ["192.0.2.1"]
    r.use_health(HealthView({"fra": DOWN}))
    assert addresses(ask(r, "www.steer.example.", ecs="10.1.0.0/24")) == ["192.0.2.2"]
    r.use_health(HealthView({"fra": UP}))
    assert addresses(ask(r, "www.steer.example.", ecs="10.1.0.0/24")) == ["192.0.2.1"]


def test_all_down_policies() -> None:
    health = HealthView({p: DOWN for p in POPS})
    r = make(health)
    assert ask(r, "closed.steer.example.", ecs="10.1.0.0/24").rcode() == dns.rcode.SERVFAIL
    nodata = ask(r, "empty.steer.example.", ecs="10.1.0.0/24")
    assert nodata.rcode() == 0 and not nodata.answer and nodata.authority
    assert addresses(ask(r, "fixed.steer.example.", ecs="10.1.0.0/24")) == ["192.0.2.250"]
    # fail-open: as if all were healthy
    assert addresses(ask(r, "open.steer.example.", ecs="10.2.0.0/24")) == ["192.0.2.2"]
    # fallback to another steered record (which is down too: fail-open there)
    assert addresses(ask(r, "chained.steer.example.", ecs="10.3.0.0/24")) == ["192.0.2.4"]


def test_fallback_to_another_record_follows_its_health() -> None:
    r = make(HealthView({"fra": DOWN, "gru": DOWN}))
    assert addresses(ask(r, "chained.steer.example.", ecs="10.3.0.0/24")) == ["192.0.2.3"]


def test_steered_cname_and_wildcard() -> None:
    r = make()
    msg = ask(r, "cdn.steer.example.", ecs="10.2.0.0/24")
    assert [rd.to_text() for rd in msg.answer[0]] == ["iad.cdn.example."]
    msg = ask(r, "anything.wild.steer.example.", ecs="10.4.0.0/24")
    assert addresses(msg) == ["192.0.2.3"]
    assert msg.answer[0].name.to_text() == "anything.wild.steer.example."


def test_tcp_uses_the_peer_address() -> None:
    r = make()
    assert addresses(ask(r, "www.steer.example.", peer="10.3.1.1", udp=False)) == ["192.0.2.4"]


def test_raw_sockaddr_peer() -> None:
    """The batched UDP path hands over the kernel's sockaddr bytes."""
    import socket
    import struct

    r = make()
    q = dns.message.make_query("www.steer.example.", "A").to_wire()
    sa = struct.pack("<H", socket.AF_INET) + struct.pack("!H", 5353) + \
        bytes([10, 5, 0, 1]) + bytes(8)
    assert addresses(dns.message.from_wire(r.respond(q, True, sa))) == ["192.0.2.5"]
    sa6 = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", 5353, 0) + \
        ipaddress.ip_address("2001:db8:100::1").packed + bytes(4)
    q6 = dns.message.make_query("www.steer.example.", "AAAA").to_wire()
    assert addresses(dns.message.from_wire(r.respond(q6, True, sa6))) == ["2001:db8::1"]


def test_bias_grows_a_catchment() -> None:
    pops = {"a": Pop("a", 0.0, 0.0, order=0), "b": Pop("b", 0.0, 20.0, bias=50, order=1)}
    spec = SteerSpec(b"\x01x\x00", 1, 30, {"a": (), "b": ()})
    place = Place(ipaddress.ip_address("10.0.0.1"), 8, 0.0, 8.0)  # 8 deg from a, 12 from b
    unbiased = Steering({**pops, "b": Pop("b", 0.0, 20.0, order=1)})
    assert unbiased.decide(spec, ipaddress.ip_address("10.0.0.1"), 32, place,
                           HealthView()).pops == ("a",)
    # +50: b's distance counts half: 12 * 0.5 = 6 < 8
    assert Steering(pops).decide(spec, ipaddress.ip_address("10.0.0.1"), 32, place,
                                 HealthView()).pops == ("b",)


def test_ties_are_broken_by_configuration_order() -> None:
    pops = {"b": Pop("b", 0.0, -10.0, order=0), "a": Pop("a", 0.0, 10.0, order=1)}
    spec = SteerSpec(b"\x01x\x00", 1, 30, {"a": (), "b": ()})
    place = Place(ipaddress.ip_address("10.0.0.1"), 8, 0.0, 0.0)
    d = Steering(pops).decide(spec, ipaddress.ip_address("10.0.0.1"), 32, place,
                              HealthView())
    assert d.pops == ("b",)


def test_latency_table_overrides_distance() -> None:
    from geodns.steering import LatencyEntry

    spec = SteerSpec(b"\x01x\x00", 1, 30, {"fra": (), "iad": ()})
    place = Place(ipaddress.ip_address("10.1.9.1"), 16, 48.85, 2.35, "EU", "FR")
    table = (LatencyEntry({"fra": 80.0, "iad": 20.0}, country="FR"),)
    d = Steering(POPS, latency=table).decide(spec, ipaddress.ip_address("10.1.0.1"), 32,
                                             place, HealthView(), explain=True)
    assert d.pops == ("iad",) and {c.latency_source for c in d.candidates} == {"table"}
    narrow = (LatencyEntry({"fra": 80.0, "iad": 20.0},
                           network=ipaddress.ip_network("10.1.2.0/24")),)
    d = Steering(POPS, latency=narrow).decide(spec, ipaddress.ip_address("10.1.9.1"), 24,
                                              place, HealthView())
    assert d.pops == ("fra",) and d.scope == 21  # 10.1.8.0/21 stops short of 10.1.2.0/24


def test_great_circle() -> None:
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(20015.1, abs=1)
    assert great_circle_km(50.11, 8.68, 38.95, -77.45) == pytest.approx(6530, abs=30)


# -- ECS validation (RFC 7871 section 6; Knot and gdnsd answer FORMERR) -----------------

def _raw_ecs(family: int, source: int, scope_: int, addr: bytes) -> bytes:
    import struct

    q = dns.message.make_query("www.steer.example.", "A").to_wire()
    data = struct.pack("!HBB", family, source, scope_) + addr
    opt = struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, 4 + len(data)) + \
        struct.pack("!HH", 8, len(data)) + data
    return q[:10] + b"\x00\x01" + q[12:] + opt


@pytest.mark.parametrize("family,source,scope_,addr", [
    (1, 24, 8, bytes([10, 1, 0])),       # scope set in a query
    (3, 24, 0, bytes([10, 1, 0])),       # unknown family
    (1, 33, 0, bytes(5)),                # prefix too long for IPv4
    (2, 129, 0, bytes(17)),              # prefix too long for IPv6
    (1, 24, 0, bytes([10, 1, 0, 0])),    # more address bytes than the prefix needs
    (1, 24, 0, bytes([10, 1])),          # fewer
    (1, 23, 0, bytes([10, 1, 1])),       # bits set beyond the prefix
])
def test_bad_client_subnet_is_formerr(family: int, source: int, scope_: int,
                                      addr: bytes) -> None:
    r = make()
    for name_packet in (_raw_ecs(family, source, scope_, addr),):
        msg = dns.message.from_wire(r.respond(name_packet, True, ("10.1.1.1", 53)))
        assert msg.rcode() == dns.rcode.FORMERR


def test_good_client_subnet_with_other_options() -> None:
    r = make()
    q = dns.message.make_query("www.steer.example.", "A", use_edns=0, options=[
        dns.edns.GenericOption(65001, b"x"), dns.edns.ECSOption("10.3.0.0", 24, 0)])
    msg = dns.message.from_wire(r.respond(q.to_wire(), True, ("127.0.0.1", 53)))
    assert addresses(msg) == ["192.0.2.4"] and scope(msg) == 16


# -- zone validation ---------------------------------------------------------------------

HEAD = ("origin: v.example.\nsoa: {mname: ns1, rname: h}\nrecords:\n  '@': {NS: [ns1]}\n"
        "  ns1: {A: 192.0.2.1}\n")


def problems_for(body: str) -> list[str]:
    problems = Problems()
    load_zone_text(HEAD + body, "z.yaml", "v.example.", problems, pops=POPS)
    return [str(p) for p in problems]


@pytest.mark.parametrize("body,fragment", [
    ("  w: {A: {steer: {pops: {xyz: 192.0.2.1}}}}\n", "6:26: unknown PoP 'xyz'"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{pops: [fra]}, "
     "{networks: [10.0.0.0/8], pops: [fra]}]}}}\n", "matches every client"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{networks: [10.0.0.0/8], pops: [fra]},"
     " {networks: [10.1.0.0/16], pops: [fra]}]}}}\n", "matched first by the rule"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{places: [EU], pops: [fra]},"
     " {places: [EU-DE], pops: [fra]}]}}}\n", "matched first by the rule"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{places: [XX], pops: [fra]}]}}}\n",
     "is not a code like EU"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{networks: [10.0.0.1/8], "
     "pops: [fra]}]}}}\n", "has host bits set"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, rules: [{places: [EU], pops: [iad]}]}}}\n",
     "has no answer in this record's 'pops'"),
    ("  w: {A: {steer: {pops: {fra: 192.0.2.1}, answers: 2}}}\n", "more than the 1 PoPs"),
    ("  w: {CNAME: {steer: {pops: {fra: a.example., iad: b.example.}, answers: 2}}}\n",
     "answers with one PoP"),
    ("  w: {MX: {steer: {pops: {fra: '10 mx'}}}}\n", "only A, AAAA, CNAME, HTTPS and SVCB"),
    ("  a: {A: {steer: {pops: {fra: 192.0.2.1}, all_down: {use: b}}}}\n"
     "  b: {A: {steer: {pops: {fra: 192.0.2.1}, all_down: {use: a}}}}\n", "fallback loop"),
    ("  a: {A: {steer: {pops: {fra: 192.0.2.1}, all_down: {use: zz}}}}\n",
     "has no steered A record"),
    ("  a: {A: {steer: {pops: {fra: 192.0.2.1}, all_down: maybe}}}\n", "all_down must be"),
    ("  a: {A: {steer: {pops: {fra: 192.0.2.1}}}, CNAME: x}\n", "CNAME beside other data"),
    ("  a: {A: {steer: {pops: {fra: 192.0.2.999}}}}\n", "not an IPv4 address"),
])
def test_steer_validation(body: str, fragment: str) -> None:
    found = problems_for(body)
    assert any(fragment in p and p.startswith("z.yaml:") for p in found), found


def test_steered_record_at_apex_is_rejected() -> None:
    problems = Problems()
    text = ("origin: v.example.\nsoa: {mname: ns1, rname: h}\nrecords:\n"
            "  '@': {NS: [ns1], A: {steer: {pops: {fra: 192.0.2.1}}}}\n  ns1: {A: 192.0.2.1}\n")
    load_zone_text(text, "z.yaml", "v.example.", problems, pops=POPS)
    assert any("zone apex" in str(p) for p in problems)


def test_ecs_source_zero_does_not_leak_into_plain_answers() -> None:
    """A /0 subnet and a plain query from the same resolver share one
    decision; the plain answer must not carry the ECS echo."""
    r = make()
    with_ecs = ask(r, "www.steer.example.", ecs="0.0.0.0/0", peer="10.4.0.9")
    assert scope(with_ecs) == 0
    plain = ask(r, "www.steer.example.", peer="10.4.0.9")
    assert addresses(plain) == ["192.0.2.3"] and scope(plain) is None
    again = ask(r, "www.steer.example.", ecs="0.0.0.0/0", peer="10.4.0.9")
    assert scope(again) == 0


def test_explain_leaves_counters_and_caches_alone() -> None:
    """explain answers with the serving code in a scratch responder: the
    serving one counts nothing and caches nothing (issue #9, defect 6)."""
    from geodns.explain import explain

    r = make()
    ask(r, "www.steer.example.", ecs="10.1.0.0/24")
    counts, events, entries = dict(r.counts), dict(r.events), r.cache_entries()
    places = len(r.decisions.places)
    result = explain(r, "www.steer.example.", "A", "10.2.0.9", "10.3.0.0/24")
    assert result["steering"]["chosen"] == ["gru"]
    assert explain(r, "www.steer.example.", "A", "10.2.0.9")["steering"]["chosen"] == ["iad"]
    explain(r, "plain.steer.example.", "A", "10.2.0.9", "10.3.0.0/24")
    assert dict(r.counts) == counts and r.events == events
    assert r.cache_entries() == entries and len(r.decisions.places) == places
