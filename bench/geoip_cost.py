"""What placing a client costs: maxminddb's reader (what geodns uses) against
geoip2's wrapper around the same reader, on the GeoLite2 City database of the
maxminddb-geolite2 package.

geoip2 is not a dependency of geodns; run this in a scratch venv:

    python3 -m venv /tmp/geo && /tmp/geo/bin/pip install geoip2 maxminddb-geolite2
    PYTHONPATH=. /tmp/geo/bin/python bench/geoip_cost.py [--lookups 100000]

Each way looks up the same random IPv4 addresses (seeded), in turns; the
best of ``--runs`` runs of each is printed, in microseconds per look-up.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from geodns.geo import MaxMindLocator, bundled_database


def timed(fn: Callable[[Any], object], addresses: list[Any]) -> float:
    """Microseconds per look-up, one pass over the addresses."""
    start = time.perf_counter()
    for a in addresses:
        fn(a)
    return (time.perf_counter() - start) / len(addresses) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    try:
        import geoip2.database
        import geoip2.errors
    except ImportError:
        print("geoip2 is not installed here: see this script's docstring", file=sys.stderr)
        return 2
    import maxminddb

    path = bundled_database()
    if path is None:
        print("the maxminddb-geolite2 package is not installed", file=sys.stderr)
        return 2
    rng = random.Random(1)
    addresses = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(args.lookups)]

    reader = maxminddb.open_database(str(path))
    locator = MaxMindLocator(path)
    city = geoip2.database.Reader(str(path))

    def geoip2_city(a: Any) -> object:
        try:
            return city.city(a)
        except geoip2.errors.AddressNotFoundError:
            return None

    def geoip2_fields(a: Any) -> object:
        """What geodns reads from a record (its Place), through geoip2's model."""
        try:
            r = city.city(a)
        except geoip2.errors.AddressNotFoundError:
            return None
        sub = r.subdivisions.most_specific.iso_code if r.subdivisions else None
        return (r.traits.network, r.location.latitude, r.location.longitude,
                r.continent.code, r.country.iso_code, sub, r.city.names.get("en"),
                r.location.accuracy_radius)

    print(f"{args.lookups} random IPv4 addresses, best of {args.runs} runs; maxminddb "
          f"{maxminddb.__version__} ({type(reader).__module__}.{type(reader).__name__}), "
          f"geoip2 {geoip2.__version__}, Python {sys.version.split()[0]}")
    rows = [
        ("maxminddb get_with_prefix_len (the look-up geodns does)",
         reader.get_with_prefix_len),
        ("geodns MaxMindLocator.locate (that look-up, then a Place)", locator.locate),
        ("geoip2 Reader.city (the same look-up, then its model)", geoip2_city),
        ("geoip2 Reader.city, reading the fields a Place holds", geoip2_fields),
    ]
    # The ways take turns, so that a busy moment of the machine hits them all.
    best = [min(ts) for ts in zip(*([timed(fn, addresses) for _, fn in rows]
                                    for _ in range(args.runs)), strict=True)]
    for (name, _), us in zip(rows, best, strict=True):
        print(f"  {us:6.2f} us/look-up  {1e6 / us:>9,.0f}/s  x{us / best[0]:4.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
