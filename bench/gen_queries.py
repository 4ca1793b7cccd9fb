#!/usr/bin/env python3
"""Write ``dnsperf -B`` query files for the geodns benchmark.

``dnsperf -B`` reads "TCP-stream binary format" (RFC 1035 4.2.2): each DNS
message is preceded by its length as a 2-byte big-endian integer.  dnsperf
overwrites the first two bytes of every message (the ID) on the fly and sends
everything else as is, so the files carry the EDNS0 OPT record themselves
(``-e`` cannot be combined with ``-B``).

Every query: QR=0, opcode QUERY, RD=0 (as a resolver asks an authoritative
server), one question, class IN, EDNS0 OPT with UDP payload size 1232, no DO
bit, a random ID.  Output is deterministic for a given ``--seed``.

Workloads (names are relative to ``bench.test.``, taken from the BIND zone file
``bench/zone/bench.test.zone`` so the files always match the zone):

* ``static``   - ``static.bench.test. A``, the same question every time
                 (1,000 messages that differ only in the ID).
* ``nxdomain`` - 100,000 distinct random names under the zone that do not exist,
                 1-2 random labels, type A.
* ``mix``      - 100,000 queries in random order:
                 70% A/AAAA for existing names (random letter case, A:AAAA about 3:1),
                 10% MX/TXT/NS/SOA (apex and the hosts that have MX/TXT),
                 15% NXDOMAIN (random non-existent names, various types),
                  5% NODATA (a type the name lacks, including the empty
                     non-terminal ``dc``).
* ``steered``  - 100,000 queries for ``geo.bench.test. A``, each with an EDNS
                 Client Subnet option (RFC 7871: family 1, source prefix 24,
                 scope 0, address = the first 3 bytes of the /24) for 100,000
                 distinct /24s drawn uniformly from the public IPv4 space
                 (``NOT_PUBLIC_V4`` is left out).  ``geo`` is the steered name
                 (gen_zone.py); it is not in the BIND zone file.

Usage::

    .venv/bin/python bench/gen_queries.py [--out bench/queries] [--seed 1]
        [--workloads static,nxdomain,mix,steered] [--count 100000]

Needs dnspython (generation time only).
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import random
import string
import struct
import sys
from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

HERE = Path(__file__).resolve().parent
ZONE_FILE = HERE / "zone" / "bench.test.zone"
ORIGIN = dns.name.from_text("bench.test.")
WORKLOADS = ("static", "nxdomain", "mix", "steered")
EDNS_PAYLOAD = 1232
STEERED_NAME = "geo.bench.test."  # gen_zone.py: GEO_OWNER under ORIGIN
ECS_SOURCE_PREFIX = 24
# Not drawn for the steered workload: "this network", private, shared (CGN),
# loopback, link-local, IETF protocol assignments, the documentation nets,
# benchmarking, and multicast + reserved (224/3).
NOT_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)

# A query: (name, type) or (name, type, ECS network "a.b.c.0/24").
Query = tuple[str, ...]


def make_wire(rng: random.Random, qname: str, rdtype: str, ecs: str | None = None) -> bytes:
    options: list[dns.edns.Option] = []
    if ecs is not None:
        net = ipaddress.ip_network(ecs)
        # scope 0 in queries (RFC 7871 6); dnspython sends only the first
        # ceil(prefix/8) address bytes (3 for a /24, 6 for a /48).
        options.append(dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0))
    q = dns.message.make_query(
        qname,
        rdtype,
        dns.rdataclass.IN,
        use_edns=0,
        payload=EDNS_PAYLOAD,
        want_dnssec=False,
        options=options or None,
    )
    q.id = rng.randrange(65536)
    q.flags = 0  # RD=0
    # Keep the caller's letter case: dnspython's name compression only
    # compresses; with one question there is nothing to compress anyway.
    return q.to_wire()


def set_do(wire: bytes) -> bytes:
    """A query of :func:`make_wire` with the DNSSEC OK bit set in its OPT
    record (one question, then the OPT as the only additional record): the
    same query from a resolver that validates."""
    i = 12
    while wire[i]:
        i += wire[i] + 1
    p = i + 5  # the OPT's owner, after the root label, QTYPE and QCLASS
    if wire[10:12] != b"\x00\x01" or wire[p : p + 3] != b"\x00\x00\x29":
        raise ValueError("not a query with one OPT record after the question")
    return wire[: p + 7] + bytes([wire[p + 7] | 0x80]) + wire[p + 8 :]


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c.lower() for c in name)


class ZoneInfo:
    """Names and types present in the zone file (the single source of truth)."""

    def __init__(self, path: Path) -> None:
        z = dns.zone.from_file(str(path), origin=ORIGIN, relativize=False, check_origin=True)
        self.types: dict[str, set[str]] = {}
        for name, node in z.nodes.items():
            self.types[name.to_text()] = {
                dns.rdatatype.to_text(rds.rdtype) for rds in node.rdatasets
            }
        # Empty non-terminals: ancestors of names that have no data themselves.
        self.ents: set[str] = set()
        for n in list(self.types):
            name = dns.name.from_text(n)
            while True:
                name = name.parent()
                if name == ORIGIN or not name.is_subdomain(ORIGIN):
                    break
                if name.to_text() not in self.types:
                    self.ents.add(name.to_text())
        self.existing = set(self.types) | self.ents
        self.apex = ORIGIN.to_text()

    def with_type(self, t: str) -> list[str]:
        return sorted(n for n, ts in self.types.items() if t in ts)

    def nonexistent(self, rng: random.Random, seen: set[str]) -> str:
        """A random name under the zone that does not exist (and is not in ``seen``)."""
        alphabet = string.ascii_lowercase + string.digits
        for _ in range(1000):
            labels = [
                "".join(rng.choice(alphabet) for _ in range(rng.randint(6, 14)))
                for _ in range(rng.choice((1, 1, 1, 2)))
            ]
            name = ".".join(labels) + "." + self.apex
            if name not in self.existing and name not in seen:
                # A name below an existing node is still NXDOMAIN (no wildcards
                # in the zone) - fine, but keep it simple: require the first
                # ancestor below the apex not to exist either.
                seen.add(name)
                return name
        raise RuntimeError("could not find a fresh random name")  # pragma: no cover


def gen_static(zi: ZoneInfo, rng: random.Random, count: int) -> list[tuple[str, str]]:
    name = "static." + zi.apex
    assert "A" in zi.types[name], "zone has no static A record"
    return [(name, "A")] * min(count, 1000)


def gen_nxdomain(zi: ZoneInfo, rng: random.Random, count: int) -> list[tuple[str, str]]:
    seen: set[str] = set()
    return [(zi.nonexistent(rng, seen), "A") for _ in range(count)]


def gen_mix(zi: ZoneInfo, rng: random.Random, count: int) -> list[tuple[str, str]]:
    a_names = zi.with_type("A")
    aaaa_names = zi.with_type("AAAA")
    other: list[tuple[str, str]] = [(zi.apex, t) for t in ("MX", "TXT", "NS", "SOA")]
    other += [(n, "MX") for n in zi.with_type("MX") if n != zi.apex]
    other += [(n, "TXT") for n in zi.with_type("TXT") if n != zi.apex]
    # NODATA: a type the (existing) name lacks.
    nodata: list[tuple[str, str]] = []
    for n, ts in sorted(zi.types.items()):
        for t in ("A", "AAAA", "MX", "TXT"):
            if t not in ts and n != zi.apex:
                nodata.append((n, t))
    nodata += [(n, t) for n in sorted(zi.ents) for t in ("A", "AAAA", "TXT")]
    nx_types = ["A"] * 6 + ["AAAA"] * 3 + ["MX", "TXT"]

    n_existing = round(count * 0.70)
    n_other = round(count * 0.10)
    n_nx = round(count * 0.15)
    n_nodata = count - n_existing - n_other - n_nx
    out: list[tuple[str, str]] = []
    for _ in range(n_existing):
        if rng.random() < 0.75:
            out.append((random_case(rng, rng.choice(a_names)), "A"))
        else:
            out.append((random_case(rng, rng.choice(aaaa_names)), "AAAA"))
    # Apex types are asked for most often; host MX/TXT fill the rest.
    for _ in range(n_other):
        if rng.random() < 0.6:
            out.append(rng.choice(other[:4]))
        else:
            out.append(rng.choice(other[4:]))
    seen: set[str] = set()
    out += [(zi.nonexistent(rng, seen), rng.choice(nx_types)) for _ in range(n_nx)]
    out += [rng.choice(nodata) for _ in range(n_nodata)]
    rng.shuffle(out)
    return out


# The same as ranges of /24 indices (address >> 8), first and last inclusive.
_NOT_PUBLIC_24 = tuple(
    (int(n.network_address) >> 8, int(n.broadcast_address) >> 8) for n in NOT_PUBLIC_V4
)


def public_slash24(index: int) -> bool:
    """True if the /24 with this index (address >> 8) is in the public IPv4 space."""
    return not any(lo <= index <= hi for lo, hi in _NOT_PUBLIC_24)


def gen_steered(zi: ZoneInfo, rng: random.Random, count: int) -> list[Query]:
    # Uniform over the public /24s: draw uniformly over all 2^24 /24s and
    # reject non-public ones and repeats.  About 14% of draws are rejected.
    seen: set[int] = set()
    out: list[Query] = []
    draws = 0
    while len(out) < count:
        draws += 1
        if draws > 20 * count + 1000:  # bounded; needs about 1.2 x count draws
            raise RuntimeError("could not draw enough distinct public /24s")  # pragma: no cover
        i = rng.randrange(1 << 24)
        if i in seen or not public_slash24(i):
            continue
        seen.add(i)
        out.append((STEERED_NAME, "A", f"{ipaddress.IPv4Address(i << 8)}/{ECS_SOURCE_PREFIX}"))
    return out


GENERATORS = {
    "static": gen_static,
    "nxdomain": gen_nxdomain,
    "mix": gen_mix,
    "steered": gen_steered,
}


def write_blob(path: Path, rng: random.Random, queries: list[Query]) -> None:
    buf = bytearray()
    for qname, rdtype, *ecs in queries:
        wire = make_wire(rng, qname, rdtype, ecs[0] if ecs else None)
        buf += struct.pack("!H", len(wire)) + wire
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(buf))


def read_blob(path: Path) -> list[bytes]:
    """The wire-format messages of a ``dnsperf -B`` file."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def classify(zi: ZoneInfo, qname: str, rdtype: str, *ecs: str) -> str:
    if ecs:
        return "steered+ECS"
    n = qname.lower()
    if n not in zi.existing:
        return "nxdomain"
    if rdtype in zi.types.get(n, set()):
        if n == zi.apex or rdtype in ("MX", "TXT", "NS", "SOA"):
            return "other"
        return "existing-a/aaaa"
    return "nodata"


def main() -> int:
    ap = argparse.ArgumentParser(description="Write dnsperf -B query files.")
    ap.add_argument("--out", type=Path, default=HERE / "queries", help="output directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument(
        "--count", type=int, default=100_000, help="queries per file (nxdomain, mix, steered)"
    )
    ap.add_argument("--zone", type=Path, default=ZONE_FILE)
    args = ap.parse_args()

    zi = ZoneInfo(args.zone)
    for wl in args.workloads.split(","):
        if wl not in GENERATORS:
            ap.error(f"unknown workload {wl!r} (choose from {', '.join(WORKLOADS)})")
        # One RNG per workload, seeded from (seed, workload): files do not
        # depend on which other workloads were generated in the same call.
        rng = random.Random(f"{args.seed}:{wl}")
        queries = GENERATORS[wl](zi, rng, args.count)
        path = args.out / f"{wl}.bin"
        write_blob(path, rng, queries)
        kinds = collections.Counter(classify(zi, *q) for q in queries)
        summary = ", ".join(f"{k} {v * 100 / len(queries):.1f}%" for k, v in sorted(kinds.items()))
        print(f"wrote {path}: {len(queries)} queries ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
