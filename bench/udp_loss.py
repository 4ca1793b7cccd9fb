#!/usr/bin/env python3
"""UDP loss at a fixed rate: queries the kernel dropped because a server did
not read its socket in time.

Each server (started as ``run.py`` starts it: one worker, pinned to the
server CPU) is sent the ``static`` workload by ``dnsperf -q 50000 -Q RATE``
(50,000 queries may be outstanding, so dnsperf never waits for answers and
the rate holds) for ``--duration`` seconds, ``--runs`` times, the servers in
turn.  Reported per run: what dnsperf lost; the datagrams the kernel
dropped at the server's full receive buffer (the ``drops`` of its socket in
``/proc/net/udp``: the server's own loss); the rise of the kernel's
``UdpRcvbufErrors`` (``/proc/net/snmp``, the whole machine's: dnsperf's
socket too, whose drops are the client's, not the server's); and the
server's CPU per answered query.  dnsperf's socket buffer is raised with
``-b`` (up to ``net.core.rmem_max``), or at high rates it drops answers
itself.

    flock /tmp/geodns-bench.lock .venv/bin/python bench/udp_loss.py --rate 100000
    .venv/bin/python bench/udp_loss.py --servers geodns --python ../other/.venv/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import run  # noqa: E402


def rcvbuf_errors() -> int:
    """The kernel's UdpRcvbufErrors (IPv4), from /proc/net/snmp."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def socket_drops(port: int) -> int:
    """Datagrams dropped at the receive buffers of the UDP sockets bound to
    port (/proc/net/udp and udp6, the last column)."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                total += int(f[-1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--servers", default="geodns,knot,gdnsd")
    ap.add_argument("--rate", type=int, default=100_000, help="queries a second (dnsperf -Q)")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable, help="geodns's Python (its tree)")
    ap.add_argument("--client-buffer", type=int, default=8192,
                    help="dnsperf -b: its socket buffers, KiB")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--client-cpus", default="0")
    args = ap.parse_args()
    makers = {"geodns": lambda: peers.GeoDNS(python=args.python, cpus=args.server_cpus),
              "knot": lambda: peers.Knot(cpus=args.server_cpus),
              "gdnsd": lambda: peers.Gdnsd(cpus=args.server_cpus)}
    names = [s for s in args.servers.split(",") if s]
    if not set(names) <= set(makers):
        ap.error(f"servers from {','.join(makers)}")
    peers.sigterm_as_interrupt()
    run.ensure_queries(["static"], seed=1, regenerate=False)
    dp = argparse.Namespace(duration=args.duration, clients=1, threads=1, outstanding=50_000,
                            timeout=1, max_qps=args.rate, client_cpus=args.client_cpus)
    servers = [makers[n]() for n in names]
    rows: dict[str, list[tuple[int, int, int, float | None]]] = {n: [] for n in names}
    try:
        for srv in servers:
            srv.start()
        for r in range(args.runs):
            for srv in servers if r % 2 == 0 else servers[::-1]:
                before, at_server = rcvbuf_errors(), socket_drops(srv.port)
                m = run.measure(dp, srv, "static", r, dnsperf_args=["-b", str(args.client_buffer)])
                dropped = rcvbuf_errors() - before
                at_server = socket_drops(srv.port) - at_server
                cpu = run.per_query(m)
                rows[srv.name].append((m.lost, at_server, dropped, cpu))
                print(f"  run {r + 1}/{args.runs} {srv.name:<7} {m.qps:>9,.0f} q/s  "
                      f"lost {m.lost:,}  dropped at the server {at_server:,}  "
                      f"UdpRcvbufErrors +{dropped:,}  "
                      f"{cpu * 1e6 if cpu else float('nan'):.2f} µs CPU/q"
                      f"{'  ' + m.error if m.error else ''}", flush=True)
    finally:
        for srv in servers:
            srv.cleanup()
    print(f"\n{args.rate:,} queries a second for {args.duration:g} s, {args.runs} runs:")
    for name, got in rows.items():
        cpus = [c * 1e6 for *_, c in got if c]
        print(f"  {name:<7} lost {sum(g[0] for g in got):,}, dropped at the server "
              f"{sum(g[1] for g in got):,}, UdpRcvbufErrors +{sum(g[2] for g in got):,}, "
              f"median {statistics.median(cpus) if cpus else float('nan'):.2f} µs CPU/q")
    return 0


if __name__ == "__main__":
    sys.exit(main())
