#!/usr/bin/env python3
"""Memory under any mix of client networks: does a node's memory stop
growing once its per-client caches are full, and does it stall when they
are?

One geodns node (``bench/geodns-bench.yaml``: one worker, four PoPs, the
GeoLite2 City database; the bench zone with the steered name
``geo.bench.test``) on loopback gets, at a fixed ``--rate`` from one UDP
socket, queries for ``geo.bench.test A`` each with an EDNS Client Subnet
option from a client network never seen before (``--networks`` of them,
IPv4 /24s and IPv6 /48s in turn), and between them a ``--nx`` share of
queries for random names under the zone (NXDOMAIN, no per-client state).

Reported every ``--every`` seconds: queries sent, answers, the node's RSS;
at the end: RSS before, after and at its peak (``VmHWM``), the growth over
the last half of the run (flat once the caches are full?), and the longest
time between two answers while queries kept coming (a stall, e.g. a cache
emptied at once, or the cyclic garbage collector walking millions of
cached objects), with the gaps over 50 ms counted.

    flock /tmp/geodns-bench.lock .venv/bin/python bench/memory_bound.py \\
        [--networks 2000000] [--rate 10000] [--nx 0.2] [--every 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from serveproc import free_port, logged_node, memory_kb  # noqa: E402

GEO = b"\x03geo\x05bench\x04test\x00"
ZONE = b"\x05bench\x04test\x00"


def ecs_query(qid: int, n: int) -> bytes:
    """geo.bench.test A from client network number ``n``: an IPv4 /24 for
    even n, an IPv6 /48 in 2000::/4 for odd n, never the same twice and
    spread over the whole space (an odd multiplier is a permutation)."""
    m = (n // 2) * 2654435761
    if n % 2 == 0:
        net = m % (1 << 24)
        ecs = struct.pack("!HBB", 1, 24, 0) + struct.pack("!I", net << 8)[:3]
    else:
        net = (0x2 << 44) | (m % (1 << 44))
        ecs = struct.pack("!HBB", 2, 48, 0) + net.to_bytes(6, "big")
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + len(ecs)) + \
        struct.pack("!HH", 8, len(ecs)) + ecs
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1) + GEO + b"\x00\x01\x00\x01" + opt


def nx_query(qid: int, rnd: random.Random) -> bytes:
    label = f"{rnd.getrandbits(48):012x}".encode()
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + bytes([len(label)]) + label + ZONE + \
        b"\x00\x01\x00\x01"


class Answers:
    """Counts answers and the longest silence between two of them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.nxdomain = 0
        self.last = time.monotonic()
        self.max_gap = 0.0
        self.max_gap_at = 0.0
        self.gaps_over_50ms = 0
        self.gaps: list[tuple[float, float]] = []  # (s after the start, ms) of each over 50 ms
        self.began = self.last
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            gap = now - self.last
            self.last = now
            if gap > self.max_gap:
                self.max_gap, self.max_gap_at = gap, now - self.began
            if gap > 0.05:
                self.gaps_over_50ms += 1
                self.gaps.append((now - self.began, gap * 1000))
            self.count += 1
            self.nxdomain += (data[3] & 0xF) == 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=2_000_000)
    ap.add_argument("--rate", type=float, default=10_000, help="queries a second, both kinds")
    ap.add_argument("--nx", type=float, default=0.2, help="share of random-name queries")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between reports")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bench = (HERE / "geodns-bench.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="geodns-memory-") as d:
        work = Path(d)
        port = free_port()
        config = work / "geodns.yaml"
        config.write_text(f"listen: [127.0.0.1:{port}]\nzones: {HERE / 'zone' / 'yaml'}\n"
                          "workers: 1\nreload: {interval: 60}\n" + bench[bench.index("geoip:"):])
        log = work / "node.log"
        with logged_node(config, work, log) as proc:
            return run(args, proc, port, log)


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, log: Path) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    deadline = time.monotonic() + 60
    while True:  # ready: a steered answer
        with contextlib.suppress(OSError):
            sock.send(ecs_query(1, 0))
            if sock.recv(4096)[3] & 0xF == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the node did not start:\n" + log.read_text()[-3000:])
    time.sleep(0.5)
    before = memory_kb(proc.pid)["VmRSS"]
    print(f"memory: {args.networks:,} client networks (IPv4 /24 and IPv6 /48 in turn) for "
          f"geo.bench.test, {args.nx:.0%} random names, {args.rate:,.0f} queries/s; "
          f"RSS {before / 1024:.1f} MB", flush=True)
    answers = Answers(sock)
    rnd = random.Random(15)
    total = int(args.networks / (1 - args.nx))
    samples: list[tuple[float, int, int, float]] = []  # (s, networks, answers, RSS MB)
    began = time.monotonic()
    wall = time.time()
    answers.began = answers.last = began
    next_report = began + args.every
    networks = 0
    for i in range(total):
        due = began + i / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # more than a second behind: the client is the limit
            began += now - due - 1.0
        if rnd.random() < args.nx:
            sock.send(nx_query(i & 0xFFFF, rnd))
        else:
            sock.send(ecs_query(i & 0xFFFF, networks))
            networks += 1
        if now >= next_report:
            next_report += args.every
            mb = memory_kb(proc.pid)["VmRSS"] / 1024
            samples.append((now - began, networks, answers.count, mb))
            print(f"  {now - answers.began:6.0f} s: {networks:>9,} networks, {i + 1:>9,} sent, "
                  f"{answers.count:>9,} answers, RSS {mb:7.1f} MB", flush=True)
    elapsed = time.monotonic() - answers.began
    time.sleep(1.0)
    answers.stop.set()
    answers.thread.join(2)
    st = memory_kb(proc.pid)
    half = [s for s in samples if s[1] >= networks / 2]
    growth = (half[-1][3] - half[0][3]) if len(half) > 1 else float("nan")
    text = log.read_text(errors="replace")
    result = {
        "networks": networks, "sent": total, "seconds": elapsed, "rate": total / elapsed,
        "answers": answers.count, "nxdomain": answers.nxdomain,
        "rss_before_mb": before / 1024, "rss_after_mb": st["VmRSS"] / 1024,
        "rss_peak_mb": st["VmHWM"] / 1024, "rss_growth_last_half_mb": growth,
        "max_gap_ms": answers.max_gap * 1000, "max_gap_at_s": answers.max_gap_at,
        "gaps_over_50ms": answers.gaps_over_50ms, "gaps": answers.gaps, "samples": samples,
        "log_tracebacks": text.count("Traceback"), "alive": proc.poll() is None,
    }
    print(f"sent {total:,} queries in {elapsed:.0f} s ({total / elapsed:,.0f}/s), "
          f"{networks:,} networks; answers {answers.count:,} ({answers.nxdomain:,} NXDOMAIN)")
    print(f"RSS {before / 1024:.1f} MB before, {st['VmRSS'] / 1024:.1f} MB after, peak "
          f"{st['VmHWM'] / 1024:.1f} MB; over the second half of the networks "
          f"{growth:+.1f} MB")
    print(f"longest time between two answers {answers.max_gap * 1000:.1f} ms (at "
          f"{answers.max_gap_at:.0f} s); gaps over 50 ms: {answers.gaps_over_50ms}"
          + "".join(f"; {ms:.1f} ms at {at:.2f} s" for at, ms in answers.gaps[:10]))
    for line in text.splitlines():
        if "steering maps built" in line:
            began_at = time.strftime("%H:%M:%S", time.localtime(wall)) + f"{wall % 1:.3f}"[1:]
            print(f"node (the flood began at {began_at}): {line}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["alive"] and not result["log_tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
