"""Build tiny MaxMind databases for the tests, in the City layout.

The tests build them on the fly (mmdb-writer is a test dependency); run this
file to write them by hand: ``python tests/geoip/make_mmdb.py OUTDIR``.
Nothing binary is committed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

PLACES: dict[str, dict[str, Any]] = {
    "frankfurt": {"lat": 50.11, "lon": 8.68, "cc": "DE", "co": "EU"},
    "singapore": {"lat": 1.35, "lon": 103.99, "cc": "SG", "co": "AS"},
    "saopaulo": {"lat": -23.5, "lon": -46.6, "cc": "BR", "co": "SA"},
    "ashburn": {"lat": 38.95, "lon": -77.45, "cc": "US", "co": "NA"},
}


def record(place: str) -> dict[str, Any]:
    p = PLACES[place]
    return {"location": {"latitude": p["lat"], "longitude": p["lon"], "accuracy_radius": 50},
            "country": {"iso_code": p["cc"]}, "continent": {"code": p["co"]}}


def write(path: Path, layout: dict[str, str]) -> Path:
    """``layout`` maps networks to place names; well-known addresses are
    placed too, so that geodns's start-up check accepts the file."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    wanted = {"8.8.8.0/24": "ashburn", "1.1.1.0/24": "singapore", **layout}
    for net, place in wanted.items():
        writer.insert_network(IPSet([net]), record(place))
    writer.to_db_file(str(path))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    write(out / "europe.mmdb", {"198.18.0.0/15": "frankfurt"})
    write(out / "asia.mmdb", {"198.18.0.0/15": "singapore"})
    print(f"wrote {out}/europe.mmdb and {out}/asia.mmdb")
