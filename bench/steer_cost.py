#!/usr/bin/env python3
"""Steering per query against gdnsd: client networks never seen before, and
seen before (issue 12).

Issue 12's targets, server CPU per answered query, one worker each, in the
same run: client networks never seen before (100,000 IPv4 /24s, and the
same for IPv6 /48s) at most 1.5 times gdnsd's; networks seen before at most
gdnsd's.  This starts geodns (``geodns-bench.yaml``: the bundled GeoLite2
City database and the bench PoPs; with its steering map, which the run waits
for: ``steering maps built`` in its log) and gdnsd (``peers.Gdnsd``), each
once, pinned as ``run.py`` pins them, and then, for ``--rounds`` rounds,
each server in turn (the order alternating):

* ``cold-v4``: ``--cold`` distinct public IPv4 /24s, a new set each round
  (seeded), each asked once (``dnsperf -n 1``): no server has seen them;
* ``cold-v6``: the same with IPv6 /48s in the regional registries' blocks;
* ``warm-v4``: 1,000 /24s, asked over and over for ``--duration`` seconds
  after one unmeasured pass.

Every query asks ``geo.bench.test. A`` with a Client Subnet option.  The
figure is the server's CPU time over the run (``/proc/PID/stat``) divided by
the answers dnsperf received (``run.measure``).

``--paired`` runs both servers at once instead, each with its own dnsperf
(``run.measure_together``; both servers on the server CPU, both dnsperfs on
the client CPU), so that each server's CPU per query comes from the same
seconds of the machine: this machine's speed changes by 10 to 15 % from one
run to the next, which in turn scatters the ratio of two runs by as much,
while paired the ratio moves by 1 to 3 %.  Both servers are then busier
than alone (larger batches); ``--max-qps`` caps each dnsperf.

    flock /tmp/geodns-bench.lock .venv/bin/python bench/steer_cost.py
    .venv/bin/python bench/steer_cost.py --rounds 1 --cold 20000 --workloads cold-v4
    .venv/bin/python bench/steer_cost.py --paired --rounds 8 --workloads warm-v4 --max-qps 40000
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import run  # noqa: E402
from gen_queries import ECS_SOURCE_PREFIX, STEERED_NAME, public_slash24, write_blob  # noqa: E402
from scope import random_v6_48, wait_for_maps  # noqa: E402

WORKLOADS = ("cold-v4", "cold-v6", "warm-v4")
TARGETS = {"cold-v4": 1.5, "cold-v6": 1.5, "warm-v4": 1.0}  # geodns ÷ gdnsd, at most


def networks(workload: str, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct client networks for a workload."""
    out: set[str] = set()
    for _ in range(20 * count + 100):  # bounded
        if len(out) >= count:
            break
        if workload.endswith("v4"):
            i = rng.randrange(1 << 24)
            if public_slash24(i):
                out.add(f"{ipaddress.IPv4Address(i << 8)}/{ECS_SOURCE_PREFIX}")
        else:
            out.add(str(random_v6_48(rng)))
    return sorted(out, key=lambda _: rng.random())


def query_file(d: Path, workload: str, count: int, seed: str) -> Path:
    rng = random.Random(seed)
    path = d / f"{workload}-{seed}.bin"
    write_blob(path, rng, [(STEERED_NAME, "A", n) for n in networks(workload, count, rng)])
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--cold", type=int, default=100_000, help="networks per cold run")
    ap.add_argument("--warm", type=int, default=1000, help="networks of the warm file")
    ap.add_argument("--duration", type=float, default=5, help="seconds per warm run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--map-timeout", type=float, default=600)
    ap.add_argument("--python", default=sys.executable, help="geodns's Python (its tree)")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--client-cpus", default="0")
    ap.add_argument("--paired", action="store_true",
                    help="both servers at once, each with its dnsperf, rather than in turn")
    ap.add_argument("--max-qps", type=int, default=0, help="dnsperf -Q (each; 0: none)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    if not set(workloads) <= set(WORKLOADS):
        ap.error(f"workloads from {','.join(WORKLOADS)}")
    peers.sigterm_as_interrupt()
    # run.measure's dnsperf options.
    dp = argparse.Namespace(duration=args.duration, clients=1, threads=1,
                            outstanding=args.outstanding, timeout=1, max_qps=args.max_qps,
                            client_cpus=args.client_cpus)
    os.environ["GEODNS_STEER_MAPS"] = "1"  # on for this run whatever the default
    results: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in workloads}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="steer-cost-") as tmp:
        d = Path(tmp)
        warm = query_file(d, "warm-v4", args.warm, f"{args.seed}:warm")
        gdnsd = peers.Gdnsd(cpus=args.server_cpus or None)
        geodns = peers.GeoDNS(python=args.python, cpus=args.server_cpus or None)
        try:
            gdnsd.start()
            geodns.start(ready_timeout=120)
            print(f"geodns's steering maps built {wait_for_maps(geodns, args.map_timeout):.1f} s"
                  " after it answered", flush=True)
            servers: list[peers.Server] = [geodns, gdnsd]
            for r in range(args.rounds):
                for wl in workloads:
                    qfile = warm if wl == "warm-v4" else \
                        query_file(d, wl, args.cold, f"{args.seed}:{wl}:{r}")
                    order = servers if r % 2 == 0 else servers[::-1]
                    # in turn, or (--paired) both at once
                    for group in ([order] if args.paired else [[srv] for srv in order]):
                        if wl == "warm-v4":  # one unmeasured pass: every network seen
                            run.measure_together(dp, group, wl, -1, duration=2, qfile=warm,
                                                 expected={})
                            got = run.measure_together(dp, group, wl, r, qfile=qfile,
                                                       expected={"NOERROR": 1.0})
                        else:
                            once = argparse.Namespace(**vars(dp))
                            once.duration = 300  # the file's end stops it first (-n 1)
                            got = run.measure_together(once, group, wl, r, qfile=qfile,
                                                       expected={"NOERROR": 1.0},
                                                       dnsperf_args=["-n", "1"])
                        for srv, m in zip(group, got, strict=True):
                            record(results, wl, r, args.rounds, srv, m)
        finally:
            for srv in (geodns, gdnsd):
                srv.cleanup()
    summary = report(results)
    if args.json:
        args.json.write_text(json.dumps({**run.report_head(started, args), "results": results,
                                         "summary": summary}, indent=1))
    return 0


def record(results: dict[str, dict[str, list[dict[str, Any]]]], wl: str, r: int, rounds: int,
           srv: peers.Server, m: run.Measurement) -> None:
    """One measurement into results, and printed."""
    cpu = cpu_us(m)
    row = {"qps": m.qps, "completed": m.completed, "lost": m.lost, "cpu_us": cpu,
           "errors": m.error, "warnings": m.warnings, "busy": m.cpu_busy}
    results[wl].setdefault(srv.name, []).append(row)
    print(f"  {wl:<8} round {r + 1}/{rounds} {srv.name:<7} "
          f"{(m.qps or 0):>9,.0f} q/s  {fmt(cpu)} µs CPU/q  "
          f"answered {m.completed:,}  lost {m.lost:,}"
          f"{'  ' + m.error if m.error else ''}", flush=True)


def cpu_us(m: run.Measurement) -> float | None:
    """Server CPU per answered query, µs."""
    cpu = run.per_query(m)
    return None if cpu is None else cpu * 1e6


def fmt(v: float | None) -> str:
    return f"{v:6.2f}" if v is not None else "     -"


def report(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    head = ["workload", "server", "q/s", "µs CPU/q", "runs µs CPU/q", "geodns ÷ gdnsd",
            "round by round", "target"]
    rows: list[list[str]] = []
    for wl, by_server in results.items():
        med = {s: statistics.median([x["cpu_us"] for x in runs if x["cpu_us"] is not None])
               for s, runs in by_server.items() if any(x["cpu_us"] for x in runs)}
        ratio = med["geodns"] / med["gdnsd"] if {"geodns", "gdnsd"} <= set(med) else None
        pairs = [a["cpu_us"] / b["cpu_us"] for a, b in zip(by_server.get("geodns", []),
                                                           by_server.get("gdnsd", []),
                                                           strict=False)
                 if a["cpu_us"] and b["cpu_us"]]
        summary[wl] = {"median_cpu_us": med, "ratio": ratio,
                       "round_ratios": pairs, "target": TARGETS[wl]}
        for s, runs in by_server.items():
            qps = statistics.median([x["qps"] or 0 for x in runs])
            last = s == "gdnsd"
            rows.append([wl if s == "geodns" else "", s, f"{qps:,.0f}", fmt(med.get(s)),
                         " ".join(fmt(x["cpu_us"]).strip() for x in runs),
                         f"{ratio:.3f}" if last and ratio else "",
                         f"{statistics.median(pairs):.3f} ({min(pairs):.2f}-{max(pairs):.2f})"
                         if last and pairs else "",
                         (f"≤ {TARGETS[wl]}: " + ("PASS" if ratio <= TARGETS[wl] else "FAIL"))
                         if last and ratio else ""])
    run.print_aligned(head, rows, right={2, 3, 5}, notes=[])
    return summary


if __name__ == "__main__":
    sys.exit(main())
