"""CPU per steered answer for client networks never seen before, with and
without the compiled steering maps (geodns.steermap), in process; and the
maps' build time and size on the bundled GeoLite2 City database.

    PYTHONPATH=. .venv/bin/python bench/steermap_cost.py [N [CONFIG]]

CONFIG defaults to geodns.yaml (eight PoPs, www.example.com); with
bench/geodns-bench.yaml (four PoPs) geo.bench.test is asked.
Then the maps are built again in their thread (geodns.steermap.Build) beside
an event loop that wakes every millisecond: its longest wait is reported.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import resource
import sys
import time
from pathlib import Path

import dns.edns
import dns.message

from geodns import steermap
from geodns.config import load_config
from geodns.server.app import offline_snapshot
from geodns.steering import Steering
from geodns.wire import Responder
from geodns.yamlsrc import Problems


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    problems = Problems()
    path = Path(sys.argv[2] if len(sys.argv) > 2 else "geodns.yaml")
    cfg = load_config(path, problems)
    name = "geo.bench.test." if path.name == "geodns-bench.yaml" else "www.example.com."
    steermap.attach = lambda *a: None  # no background build to share the CPU with
    snap = offline_snapshot(cfg)
    print(f"before the maps: peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    s = snap.steering
    rnd = random.Random(1)
    queries: list[bytes] = []
    for _ in range(n):
        net = ipaddress.ip_network((rnd.getrandbits(24) << 8, 24))
        msg = dns.message.make_query(name, "A", use_edns=0, options=[
            dns.edns.ECSOption(str(net.network_address), 24, 0)])
        queries.append(msg.to_wire())
    for label in ("today (no map)", "compiled map"):
        steering = Steering(s.pops, s.default_order, s.latency, s.specs)
        if label == "compiled map":
            t0 = time.process_time()
            steering.maps = steermap.compile_maps(steering, snap.locator)
            built = time.process_time() - t0
            maps = steering.maps
            assert maps is not None
            ranges = maps.database
            shared = (4 + 4) * len(ranges.v4_starts) + (44 + 4) * len(ranges.v6_starts)
            print(f"database walk {ranges.build_seconds:.1f} s, "
                  f"{len(ranges.v4_starts):,} IPv4 + "
                  f"{len(ranges.v6_starts):,} IPv6 ranges (~{shared / 1e6:.0f} MB), "
                  f"{len(ranges.places):,} distinct places; all maps {built:.1f} s CPU, "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
            for m in maps.by_setup.values():
                print(f"  set-up {m.spec.owner!r} {m.spec.rtype}: {len(m.v4):,} IPv4 + "
                      f"{len(m.v6):,} IPv6 ranges ({len(m.v4.runs):,} + {len(m.v6.runs):,} "
                      f"runs of one order; {len(m.v4.over) + len(m.v6.over):,} inside its networks), "
                      f"{len(m.orders)} orders, ~{m.size_bytes() / 1e6:.1f} MB of its own, "
                      f"{m.build_seconds:.1f} s")
        r = Responder(snap.tables, steering, snap.locator, snap.responder.health)
        t0 = time.process_time()
        for q in queries:
            r.respond(q, True, ("192.0.2.53", 5353))
        cpu = time.process_time() - t0
        print(f"{label}: {cpu / n * 1e6:.1f} us CPU per answer for {n:,} new /24s")
    steermap._last_ranges.clear()  # walk the database again, as for a new file
    print(f"event loop beside a build: longest wait {asyncio.run(_beside(s, snap)) * 1e3:.1f} ms")


async def _beside(s: Steering, snap: object) -> float:
    """The longest a 1 ms timer waits while the maps are built in their thread."""
    steering = Steering(s.pops, s.default_order, s.latency, s.specs)
    build = steermap.Build(steering, snap.locator, None)  # type: ignore[attr-defined]
    worst = 0.0
    while not build.done.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - t0 - 0.001)
    assert steering.maps is not None
    return worst


if __name__ == "__main__":
    main()
