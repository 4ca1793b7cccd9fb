"""The compiled steering maps' database walk (geodns/_mmdbtree.c) on tiny
databases written here (mmdb-writer): every range's place is what
:class:`MaxMindLocator` reads there, for records with and without each field
a decision reads, in an IPv6 database (with the IPv4 subtree and its aliases)
and an IPv4 one; and the maps decide as steering does."""

from __future__ import annotations

import ipaddress
import random
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geodns import steermap
from geodns.geo import MaxMindLocator
from geodns.steering import DOWN, HealthView, Pop, Rule, Steering, SteerSpec

if steermap._mmdbtree is None:
    pytest.skip("the C helper geodns._mmdbtree is not built", allow_module_level=True)

mmdb_writer = pytest.importorskip("mmdb_writer")
netaddr = pytest.importorskip("netaddr")

RECORDS: dict[str, dict[str, Any]] = {
    "8.8.8.0/24": {"location": {"latitude": 38.95, "longitude": -77.45},
                   "country": {"iso_code": "US"}, "continent": {"code": "NA"},
                   "subdivisions": [{"iso_code": "VA"}, {"iso_code": "XX"}],
                   "city": {"names": {"en": "Ashburn", "de": "Ashburn"}}},
    "1.1.1.0/24": {"location": {"latitude": 1.35, "longitude": 103.99,
                                "accuracy_radius": 100},
                   "country": {"iso_code": "SG", "names": {"en": "Singapore"}},
                   "continent": {"code": "AS"}},
    "10.0.0.0/8": {"registered_country": {"iso_code": "DE"}, "continent": {"code": "EU"}},
    "10.1.0.0/16": {"country": {}, "registered_country": {"iso_code": "FR"}},
    "10.2.0.0/16": {"country": {"names": {"en": "nowhere"}},
                    "registered_country": {"iso_code": "FR"}},
    "192.0.2.0/24": {"location": {"latitude": -23.5}, "continent": {"code": "SA"}},
    "198.18.0.0/15": {"location": {"latitude": 50.11, "longitude": 8.68},
                      "country": {"iso_code": "DE"}, "continent": {"code": "EU"},
                      "subdivisions": []},
    "2001:db8::/32": {"location": {"latitude": -33.95, "longitude": 151.18},
                      "country": {"iso_code": "AU"}, "continent": {"code": "OC"}},
    "2001:db8:1::/48": {"location": {"latitude": 51.47, "longitude": -0.45},
                        "country": {"iso_code": "GB"}, "continent": {"code": "EU"},
                        "subdivisions": [{"names": {"en": "no code"}}]},
}


def _write(path: Path, ip_version: int) -> MaxMindLocator:
    writer = mmdb_writer.MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6,
                                    database_type="GeoLite2-City")
    for net, rec in RECORDS.items():
        if ip_version == 4 and ":" in net:
            continue
        writer.insert_network(netaddr.IPSet([net]), rec)
    writer.to_db_file(str(path))
    return MaxMindLocator(path)


@pytest.fixture(params=[6, 4], ids=["ipv6", "ipv4"])
def locator(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[MaxMindLocator]:
    monkeypatch.setattr(steermap, "_last_ranges", [])  # leave the City walk to its tests
    loc = _write(tmp_path / "tiny.mmdb", request.param)
    yield loc
    loc.close()


def _fields(loc: MaxMindLocator, address: ipaddress.IPv4Address | ipaddress.IPv6Address
            ) -> tuple[object, ...]:
    p = loc.locate(address)
    return (p.latitude, p.longitude, p.continent, p.country, p.subdivision)


def test_every_range_holds_the_place_the_reader_gives(locator: MaxMindLocator) -> None:
    ranges = steermap.database_ranges(locator)
    assert ranges is not None
    for starts, keys, make, top in (
            (ranges.v4_starts, ranges.v4_keys, ipaddress.IPv4Address, 1 << 32),
            (ranges.v6_starts, ranges.v6_keys, ipaddress.IPv6Address, 1 << 128)):
        if make is ipaddress.IPv6Address and locator.ip_version == 4:
            continue
        for i, start in enumerate(starts):
            last = (starts[i + 1] if i + 1 < len(starts) else top) - 1
            k = keys[i]
            if k < 0:  # an alias of the IPv4 subtree: looked up there
                continue
            for a in {start, last, (start + last) // 2}:
                assert ranges.places[k] == _fields(locator, make(a)), make(a)
    # The cases above, by name.
    place = {net: ranges.places[ranges.v4_keys[
        bisect_right(ranges.v4_starts, int(ipaddress.ip_network(net)[0])) - 1]]
        for net in RECORDS if ":" not in net}
    assert place["8.8.8.0/24"] == (38.95, -77.45, "NA", "US", "VA")
    assert place["10.0.0.0/8"] == (None, None, "EU", "DE", None)
    assert place["10.1.0.0/16"][3] == "FR"  # an empty country: the registered one
    assert place["10.2.0.0/16"][3] is None  # a country without a code: none
    assert place["192.0.2.0/24"] == (-23.5, None, "SA", None, None)


def test_maps_on_a_tiny_database_decide_as_steering_does(locator: MaxMindLocator) -> None:
    pops = {"fra": Pop("fra", 50.11, 8.68, country="DE", continent="EU", order=0),
            "iad": Pop("iad", 38.95, -77.45, country="US", continent="NA", order=1),
            "sin": Pop("sin", 1.35, 103.99, country="SG", continent="AS", bias=20, order=2)}
    spec = SteerSpec(b"\x03www\x00", 1, 30, {p: () for p in pops}, answers=2, rules=(
        Rule(("sin",), networks=(ipaddress.ip_network("198.18.4.0/24"),)),
        Rule(("iad", "fra"), places=frozenset({"EU-FR"}))))
    steering = Steering(pops, ("iad", "fra", "sin"), (), {spec.key: spec})
    maps = steermap.compile_maps(steering, locator)
    assert maps is not None
    rnd = random.Random(5)
    clients = [int(ipaddress.ip_network(n)[0]) + d for n in RECORDS if ":" not in n
               for d in (0, 1, 255)]
    clients += [rnd.getrandbits(32) for _ in range(300)]
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = \
        [ipaddress.IPv4Address(c) for c in clients]
    if locator.ip_version == 6:
        addresses += [ipaddress.IPv6Address(f"::ffff:{a}") for a in addresses[:50]]
        addresses += [ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8:1::1"),
                      ipaddress.IPv6Address("2001:db9::1")]
    for health in (HealthView(), HealthView({"iad": DOWN}, penalties={"fra": 3000.0})):
        penalised = any(health.penalties.values())
        for a in addresses:
            bits = 32 if a.version == 4 else 128
            got = steermap.decide(maps, steering, spec, a.packed, bits, health, penalised)
            want = steering.decide(spec, a, bits, locator.locate(a), health)
            assert got is not None
            assert (got.outcome, got.pops, got.reason) == (want.outcome, want.pops, want.reason), a
