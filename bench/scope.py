#!/usr/bin/env python3
"""ECS scopes: how wide geodns's and gdnsd's Client Subnet scopes are for the
same clients and database, and whether each is true (issue 12).

A resolver keeps one copy of a steered answer per scope it was given, so a
wider scope means fewer copies and fewer queries, as long as it is true:
every address inside it must get the same answer.  This starts gdnsd
(``peers.Gdnsd``: plugin_geoip, city-auto, the bench PoPs) and geodns
(``geodns-bench.yaml``, the same PoPs and the bundled GeoLite2 City
database; its steering map built, which is what widens scopes: the run waits
for the log's ``steering maps built``), each once, on loopback.  Then, for
``--clients`` random public IPv4 /24s and ``--v6-clients`` random IPv6 /48s
(in the regional registries' /12 blocks, where the database's IPv6
networks are), it asks
both servers for ``geo.bench.test. A`` with that Client Subnet and records
the answer and the scope.  The database network each client falls in
(``maxminddb``'s prefix length) is the reference: a scope wider than it was
widened over neighbouring networks.

Truth: for ``--check`` of the clients, ``--probes`` other source networks of
the same length drawn inside the scope each server returned are asked of
that server; a probe answered differently means the scope claimed more than
is true.

    .venv/bin/python bench/scope.py                                 # 4,000 + 2,000 clients
    .venv/bin/python bench/scope.py --clients 1000 --v6-clients 500 --check 100
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dns.edns  # noqa: E402
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402
import maxminddb  # noqa: E402
from gen_queries import STEERED_NAME, public_slash24  # noqa: E402
from peers import HOST, Gdnsd, GeoDNS, geoip_database  # noqa: E402

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The regional registries' IPv6 blocks (APNIC, ARIN, LACNIC, RIPE NCC, AFRINIC).
V6_BLOCKS = [ipaddress.IPv6Network(b) for b in
             ("2400::/12", "2600::/12", "2800::/12", "2a00::/12", "2c00::/12")]


def clients(rng: random.Random, v4: int, v6: int) -> Iterator[Network]:
    seen: set[int] = set()
    for _ in range(20 * v4 + 100):  # bounded; about 1.2 draws per client
        if len(seen) >= v4:
            break
        i = rng.randrange(1 << 24)
        if i not in seen and public_slash24(i):
            seen.add(i)
            yield ipaddress.IPv4Network((i << 8, 24))
    for _ in range(v6):
        yield random_v6_48(rng)


def random_v6_48(rng: random.Random) -> ipaddress.IPv6Network:
    """A random /48 in a regional registry's /12, where the database's networks are."""
    block = rng.choice(V6_BLOCKS)
    return ipaddress.IPv6Network((int(block.network_address) | (rng.randrange(1 << 36) << 80), 48))


def ask(port: int, net: Network) -> tuple[tuple[str, ...], int]:
    """The answer's addresses and its ECS scope."""
    q = dns.message.make_query(STEERED_NAME, "A", use_edns=0, options=[
        dns.edns.ECSOption(str(net.network_address), net.prefixlen, 0)])
    for attempt in range(3):
        try:
            m = dns.query.udp(q, HOST, port=port, timeout=2)
            break
        except dns.exception.Timeout:
            if attempt == 2:
                raise
    scope = next((o.scopelen for o in m.options if isinstance(o, dns.edns.ECSOption)), -1)
    return tuple(sorted(rd.to_text() for rr in m.answer for rd in rr)), scope


def inside(rng: random.Random, scope_net: Network, length: int) -> Network:
    """A random network of ``length`` bits inside ``scope_net``."""
    span = length - scope_net.prefixlen
    base = int(scope_net.network_address)
    bits = scope_net.max_prefixlen
    offset = rng.randrange(1 << span) << (bits - length) if span > 0 else 0
    return ipaddress.ip_network((base + offset, length))


def wait_for_maps(server: GeoDNS, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if "steering maps built" in server.log_path.read_text(errors="replace"):
            return time.monotonic() - t0
        if not server.alive():
            raise SystemExit(f"geodns exited:\n{server.log_tail()}")
        time.sleep(0.5)
    raise SystemExit(f"no 'steering maps built' in geodns's log after {timeout:g} s:\n"
                     f"{server.log_tail()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--clients", type=int, default=4000, help="random public IPv4 /24s")
    ap.add_argument("--v6-clients", type=int, default=2000, help="random IPv6 /48s")
    ap.add_argument("--check", type=int, default=300, help="clients whose scope is probed")
    ap.add_argument("--probes", type=int, default=8, help="probes inside each checked scope")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--map-timeout", type=float, default=600)
    ap.add_argument("--python", default=sys.executable, help="geodns's Python (its tree)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    db_path = geoip_database()
    reader = maxminddb.open_database(str(db_path))
    rng = random.Random(args.seed)
    nets = list(clients(rng, args.clients, args.v6_clients))
    os.environ["GEODNS_STEER_MAPS"] = "1"  # on for this run whatever the default
    results: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    wrong: dict[str, int] = {}
    probed: dict[str, int] = {}
    built = 0.0
    for make in (Gdnsd, lambda: GeoDNS(python=args.python)):
        server = make()
        with server:  # started here, stopped at the end
            if isinstance(server, GeoDNS):
                built = wait_for_maps(server, args.map_timeout)
            got = results[server.name] = [ask(server.port, n) for n in nets]
            wrong[server.name] = probed[server.name] = 0
            for k in random.Random(args.seed + 1).sample(range(len(nets)), min(args.check,
                                                                               len(nets))):
                answer, scope = got[k]
                if scope < 0:
                    continue
                scope_net = nets[k].supernet(new_prefix=min(scope, nets[k].prefixlen))
                for _ in range(args.probes):
                    probe = inside(rng, scope_net, nets[k].prefixlen)
                    probed[server.name] += 1
                    wrong[server.name] += ask(server.port, probe)[0] != answer
    rows: list[dict[str, Any]] = []
    for family, version in (("IPv4", 4), ("IPv6", 6)):
        idx = [i for i, n in enumerate(nets) if n.version == version]
        dbp = []
        for i in idx:
            _, prefix = reader.get_with_prefix_len(str(nets[i].network_address))
            dbp.append(prefix - 96 if version == 4 and prefix > 32 else prefix)
        row: dict[str, Any] = {"family": family, "clients": len(idx),
                               "database_mean": statistics.fmean(dbp) if idx else None}
        for name, got in results.items():
            scopes = [got[i][1] for i in idx]
            row[name] = {"mean_scope": statistics.fmean(scopes) if idx else None,
                         "wider_than_database": sum(s < d for s, d in zip(scopes, dbp,
                                                                          strict=True)),
                         "narrower_than_database": sum(s > d for s, d in zip(scopes, dbp,
                                                                             strict=True))}
        row["same_answer"] = sum(results["geodns"][i][0] == results["gdnsd"][i][0] for i in idx)
        rows.append(row)
    print(f"geodns's steering maps built {built:.1f} s after it answered; "
          f"database {db_path.name}")
    print(f"{'family':<6} {'clients':>7} {'db mean':>8}  {'server':<7} {'mean scope':>10} "
          f"{'wider':>6} {'narrower':>8}   same answer")
    for row in rows:
        for name in ("geodns", "gdnsd"):
            r = row[name]
            print(f"{row['family']:<6} {row['clients']:>7} {row['database_mean']:>8.2f}  "
                  f"{name:<7} {r['mean_scope']:>10.2f} {r['wider_than_database']:>6} "
                  f"{r['narrower_than_database']:>8}   {row['same_answer']}")
    print("lower mean scope = wider (fewer resolver copies)")
    for name in results:
        print(f"{name}: {wrong[name]} of {probed[name]} probes inside its scopes answered "
              "differently")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "wrong": wrong, "probed": probed,
                                         "maps_built_s": built, "seed": args.seed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
