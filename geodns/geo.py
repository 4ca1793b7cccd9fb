"""Where a client is: a small interface, a MaxMind implementation, a fake.

A :class:`Place` is what steering needs about a client network: the
database network it falls in (which bounds how widely an answer may be
cached, the ECS scope), coordinates and the codes rules match on.  The
data plane never opens a database: a :class:`Locator` is handed in.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("geodns.geo")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Place:
    address: IPAddress  # the address looked up
    prefixlen: int  # of the database network holding it
    latitude: float | None = None
    longitude: float | None = None
    continent: str | None = None  # "EU"
    country: str | None = None  # "DE"
    subdivision: str | None = None  # "BE" (first level), matched as "EU-DE-BE"
    city: str | None = None
    accuracy_km: int | None = None
    asn: int | None = None  # from an ASN database, when one is configured

    @property
    def network(self) -> IPNetwork:
        """The database network holding the address (built on demand: the
        query path only needs its prefix length)."""
        return ipaddress.ip_network((self.address, self.prefixlen), strict=False)

    @property
    def placed(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def codes(self) -> set[str]:
        """The place codes this client matches: "EU", "EU-DE", "EU-DE-BE"."""
        out = set()
        if self.continent:
            out.add(self.continent)
            if self.country:
                out.add(f"{self.continent}-{self.country}")
                if self.subdivision:
                    out.add(f"{self.continent}-{self.country}-{self.subdivision}")
        return out


class Locator(Protocol):
    """Answers where an address is.  ``locate`` must be cheap to call again
    for the same address, but callers cache by network anyway."""

    description: str

    def locate(self, address: IPAddress) -> Place: ...


def bundled_database() -> Path | None:
    """GeoLite2 City from the maxminddb-geolite2 package (2018 data,
    CC BY-SA 4.0, created by MaxMind), when installed."""
    try:
        import geolite2
    except ImportError:
        return None
    path = Path(os.path.dirname(geolite2.__file__)) / "_maxminddb_geolite2" / \
        "GeoLite2-City.mmdb"
    return path if path.is_file() else None


class MaxMindLocator:
    """A MaxMind City or Country database (``.mmdb``), and optionally an ASN
    database whose networks further narrow the place (for latency tables
    keyed by ASN)."""

    def __init__(self, path: Path, asn_path: Path | None = None) -> None:
        import maxminddb

        self.path = path
        self.reader = maxminddb.open_database(str(path))
        meta = self.reader.metadata()
        self.database_type: str = meta.database_type
        self.build_epoch: int = meta.build_epoch
        self.ip_version: int = meta.ip_version
        self.description = f"{meta.database_type} ({path}, built {meta.build_epoch})"
        self.asn_reader = None
        if asn_path is not None:
            self.asn_reader = maxminddb.open_database(str(asn_path))
            ameta = self.asn_reader.metadata()
            self.description += f" + {ameta.database_type} ({asn_path})"
        self._check_usable()

    def _check_usable(self) -> None:
        """Fail fast on a database that places nothing (wrong file type)."""
        for probe in ("8.8.8.8", "1.1.1.1", "77.88.8.8", "200.160.0.8"):
            place = self.locate(ipaddress.ip_address(probe))
            if place.country or place.continent or place.placed:
                return
        raise ValueError(f"{self.path}: the database holds no country, continent or "
                         "location for well-known addresses; is it a City or Country "
                         "database?")

    def locate(self, address: IPAddress) -> Place:
        if address.version == 6 and self.ip_version == 4:
            return Place(address, 0)
        record, prefix = self.reader.get_with_prefix_len(address)
        asn = None
        if self.asn_reader is not None:
            arec, aprefix = self.asn_reader.get_with_prefix_len(address)
            if isinstance(arec, dict):
                number = arec.get("autonomous_system_number")
                asn = number if isinstance(number, int) else None
            # The place holds on the intersection of both networks.
            prefix = max(prefix, aprefix)
        if not isinstance(record, dict):
            return Place(address, prefix, asn=asn)
        return replace(_place_from_record(address, prefix, record), asn=asn)

    def close(self) -> None:
        self.reader.close()
        if self.asn_reader is not None:
            self.asn_reader.close()


def _place_from_record(address: IPAddress, prefix: int, record: dict[str, Any]) -> Place:
    loc = record.get("location") or {}
    country = (record.get("country") or record.get("registered_country") or {}).get("iso_code")
    continent = (record.get("continent") or {}).get("code")
    subs = record.get("subdivisions") or []
    city = ((record.get("city") or {}).get("names") or {}).get("en")
    return Place(
        address=address,
        prefixlen=prefix,
        latitude=loc.get("latitude"),
        longitude=loc.get("longitude"),
        continent=continent,
        country=country,
        subdivision=subs[0].get("iso_code") if subs else None,
        city=city,
        accuracy_km=loc.get("accuracy_radius"),
    )


class StaticLocator:
    """A locator from a list of (network, Place fields): for tests and for
    sites without a database.  Longest prefix wins; unknown addresses get
    an unplaced Place covering the largest network that holds no entry."""

    description = "static table"

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = sorted(
            ((ipaddress.ip_network(net), fields) for net, fields in entries.items()),
            key=lambda e: -e[0].prefixlen)

    def locate(self, address: IPAddress) -> Place:
        for net, fields in self.entries:
            if address.version == net.version and address in net:
                return Place(address, net.prefixlen, **fields)
        # The widest network around the address that contains no entry.
        bits = 32 if address.version == 4 else 128
        for plen in range(0, bits + 1):
            candidate = ipaddress.ip_network((address, plen), strict=False)
            if not any(n.version == address.version and n.overlaps(candidate)
                       for n, _ in self.entries):
                return Place(address, plen)
        return Place(address, bits)  # pragma: no cover
