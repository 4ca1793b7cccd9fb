#!/usr/bin/env python3
"""Sizing: how much memory a geodns node needs for its zones and for the
client networks it has answered.

Two measurements, each on a fresh ``geodns serve`` (one worker) on loopback,
reading the serving process's resident memory (``VmRSS``) once it is ready:

* **zones**: ``--zones-count`` zones of ``--records`` names each (A, AAAA,
  TXT and MX in turn), against the same node with one small zone; reported
  per zone and per record.
* **client networks**: the node of ``bench/geodns-bench.yaml`` (four PoPs,
  the bundled GeoLite2 City database), then ``--networks`` steered queries
  for ``geo.bench.test`` each with an EDNS Client Subnet from a different
  /24, paced; memory read after every ``--step`` networks and reported per
  million.

    .venv/bin/python bench/sizing.py [--zones-count 1000] [--records 100]
                                     [--networks 1000000] [--step 250000] [--rate 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def zone_text(origin: str, names: int) -> str:
    lines = [f"origin: {origin}", "soa: {mname: ns1, rname: hostmaster, serial: 1}",
             "records:", '  "@": {NS: [ns1]}', "  ns1: {A: 192.0.2.53}"]
    for i in range(names):
        kind = i % 4
        if kind == 0:
            rec = f"{{A: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}}}"
        elif kind == 1:
            rec = f'{{AAAA: "2001:db8::{i:x}"}}'
        elif kind == 2:
            rec = f'{{TXT: "v=spf1 include:_spf{i}.example.net ~all"}}'
        else:
            rec = f"{{MX: [{{preference: 10, exchange: mail{i}.example.net.}}]}}"
        lines.append(f"  h{i}: {rec}")
    return "\n".join(lines) + "\n"


class Node:
    """geodns serve on a free port; its resident memory once ready."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.port, self.admin = free_port(), free_port()
        cfg = workdir / "geodns.yaml"
        cfg.write_text(config.replace("@PORT@", str(self.port))
                       .replace("@ADMIN@", str(self.admin)))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geodns", "serve", "--config", str(cfg), "--lameduck", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"),  # noqa: SIM115
            start_new_session=True)
        deadline = time.monotonic() + 600
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"geodns did not start: {(workdir / 'log').read_text()[-2000:]}")
            time.sleep(0.2)
        self.ready_after = time.monotonic()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


CONFIG = "listen: [127.0.0.1:@PORT@]\nadmin: 127.0.0.1:@ADMIN@\nzones: zones\n" \
         "reload: {interval: 60}\n"


def zones(count: int, records: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, n, size in (("one small zone", 1, 2), ("zones", count, records)):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d)
            (work / "zones").mkdir()
            for z in range(n):
                origin = f"z{z}.example."
                (work / "zones" / f"{origin}yaml").write_text(zone_text(origin, size))
            began = time.monotonic()
            node = Node(work, CONFIG)
            try:
                out[label] = node.rss_mb()
                out[label + " start s"] = node.ready_after - began
            finally:
                node.stop()
    return out


def ecs_query(qid: int, net: int) -> bytes:
    """geo.bench.test A with ECS net/24 (IPv4)."""
    name = b"".join(bytes([len(p)]) + p for p in (b"geo", b"bench", b"test")) + b"\0"
    ecs = struct.pack("!HBB", 1, 24, 0) + struct.pack("!I", net << 8)[:3]
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 4 + len(ecs)) + \
        struct.pack("!HH", 8, len(ecs)) + ecs
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1) + name + struct.pack("!HH", 1, 1) + opt


def networks(total: int, step: int, rate: int) -> list[tuple[int, float, int]]:
    """(networks sent, RSS MB, answers) after every ``step`` networks."""
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        bench = (HERE / "geodns-bench.yaml").read_text()
        pops = bench[bench.index("geoip:"):]
        config = CONFIG.replace("zones: zones", f"zones: {HERE / 'zone' / 'yaml'}") + pops
        node = Node(work, config)
        rows = [(0, node.rss_mb(), 0)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.connect(("127.0.0.1", node.port))
        sock.settimeout(0.5)
        answered = [0]
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    sock.recv(4096)
                    answered[0] += 1

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        nets = random.Random(1).sample(range(1 << 24), total)  # distinct /24s
        try:
            began = time.monotonic()
            for i, net in enumerate(nets, 1):
                due = began + i / rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                sock.send(ecs_query(i & 0xFFFF, net))
                if i % step == 0:
                    time.sleep(1.0)  # the last answers
                    rows.append((i, node.rss_mb(), answered[0]))
                    print(f"  {i:>9,} networks: {rows[-1][1]:.0f} MB, {answered[0]:,} answered",
                          flush=True)
                    began = time.monotonic() - i / rate
        finally:
            stop.set()
            reader.join(2)
            sock.close()
            node.stop()
        return rows


def report_zones(count: int, records: int) -> None:
    z = zones(count, records)
    extra = z["zones"] - z["one small zone"]
    print(f"zones: one small zone {z['one small zone']:.0f} MB; {count:,} zones of {records} "
          f"names: {z['zones']:.0f} MB, ready {z['zones start s']:.1f} s after start; "
          f"{extra * 1024 / count:.0f} KB per zone, "
          f"{extra * 1024 * 1024 / (count * records):.0f} bytes per name")


def report_networks(total: int, step: int, rate: int) -> None:
    print(f"client networks ({rate:,} queries a second, each from a new /24):")
    rows = networks(total, step, rate)
    first, last = rows[0], rows[-1]
    # Past the first step: the GeoIP database's pages, mapped as they are
    # first read, are counted in the first step's growth.
    marginal = (last[1] - rows[1][1]) / (last[0] - rows[1][0]) * 1e6 \
        if len(rows) > 2 else float("nan")
    print(f"client networks: {first[1]:.0f} MB before, {last[1]:.0f} MB after {last[0]:,} "
          f"({last[2]:,} answered); past the first {rows[1][0]:,}: {marginal:.0f} MB per "
          "million more networks")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zones-count", type=int, default=1000, help="0: skip the zones")
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--networks", type=int, default=1_000_000, help="0: skip the networks")
    ap.add_argument("--step", type=int, default=250_000)
    ap.add_argument("--rate", type=int, default=8_000, help="queries a second")
    args = ap.parse_args()
    if args.zones_count:
        report_zones(args.zones_count, args.records)
    if args.networks:
        report_networks(args.networks, args.step, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
