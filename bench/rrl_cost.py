"""What response rate limiting costs (docs/abuse.md, issue 15).

``cost``: ``bench/run.py`` (one geodns worker, dnsperf, the workloads given)
for geodns without ``rate_limit``, with it and the client exempt, and with it
at a rate no client reaches (every answer classified, hashed and counted in
the table), in alternating runs so that all three see the same machine noise.
Prints the medians and the ratios of queries a second and of server CPU per
query to the run without rate limiting.

``flood``: one network (127.0.9.1..8) sends one name as fast as the C
helper's ``send_batch`` can (the same queries, 64 per system call), at a
geodns with the default ``rate_limit`` (20 a second, slip 2) and at one
without.  Prints the server's CPU per received query, and the answers and
bytes that went back.

    flock /tmp/geodns-bench.lock .venv/bin/python bench/rrl_cost.py cost --rounds 3
    flock /tmp/geodns-bench.lock .venv/bin/python bench/rrl_cost.py flood --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import GEODNS_CONFIG, GeoDNS
from run import proc_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "off": "",
    "exempt": "rate_limit: {exempt: [127.0.0.0/8]}\n",
    "high": "rate_limit: {rate: 1000000}\n",
}


def config(tmp: Path, extra: str) -> Path:
    path = tmp / f"geodns-{abs(hash(extra))}.yaml"
    text = GEODNS_CONFIG.read_text().replace("zones: zone/yaml/", f"zones: {GEODNS_CONFIG.parent}/zone/yaml/")
    path.write_text(text + extra)
    return path


def geodns_cmd(cfg: Path) -> str:
    return (f"{sys.executable} -m geodns serve --config {cfg} --listen {{host}}:{{port}} "
            "--zones {zones} --lameduck 0")


def run_bench(args: argparse.Namespace, out: Path, cmd: str) -> dict[str, tuple[float, float]]:
    subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--servers", "geodns",
                    "--runs", "1", "--duration", str(args.duration), "--workloads",
                    args.workloads, "--json", str(out), "--geodns-cmd", cmd],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    return {wl: (s["geodns"]["median_qps"], s["geodns"]["median_server_cpu"])
            for wl, s in doc["summary"].items()}


def cost(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="geodns-rrl-") as tmp:
        cmds = {name: geodns_cmd(config(Path(tmp), extra)) for name, extra in VARIANTS.items()}
        for r in range(args.rounds):
            order = list(VARIANTS)[r % 3:] + list(VARIANTS)[:r % 3]
            for name in order:
                got = run_bench(args, Path(tmp) / f"{name}-{r}.json", cmds[name])
                for wl, m in got.items():
                    results.setdefault(wl, {}).setdefault(name, []).append(m)
                print(f"round {r + 1}/{args.rounds} {name:>6}: " + "  ".join(
                    f"{wl} {q:,.0f} q/s, CPU {c:.0%}" for wl, (q, c) in got.items()), flush=True)
    print(f"\n{'workload':<9}{'variant':>8}{'q/s':>10}{'µs CPU/q':>10}{'q/s ratio':>11}"
          f"{'CPU/q ratio':>13}   runs (q/s)")
    for wl, per in results.items():
        base_q = statistics.median(q for q, _ in per["off"])
        base_c = statistics.median(c / q for q, c in per["off"])
        for name, runs in per.items():
            q = statistics.median(x for x, _ in runs)
            c = statistics.median(cpu / qps for qps, cpu in runs)
            print(f"{wl:<9}{name:>8}{q:>10,.0f}{c * 1e6:>10.2f}{q / base_q:>11.3f}"
                  f"{c / base_c:>13.3f}   " + " ".join(f"{x:,.0f}" for x, _ in runs))


def flood_one(extra: str, seconds: float, cpus: str, tmp: Path) -> dict[str, float]:
    from geodns._udpbatch import send_batch

    srv = GeoDNS(geodns_cmd(config(tmp, extra)).split(), cpus=cpus or None)
    srv.start()
    try:
        q = dns.message.make_query("static.bench.test.", "A", use_edns=0).to_wire()
        socks = []
        for i in range(1, 9):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind((f"127.0.9.{i}", 0))
            s.connect(("127.0.0.1", srv.port))
            s.setblocking(False)
            socks.append(s)
        os.sched_setaffinity(0, {0})  # the sender beside the server, not on its CPU
        sockaddr = _sockaddr("127.0.0.1", srv.port)
        batch = [(q, sockaddr)] * 64
        pid = srv.proc.pid
        sent = got = got_bytes = 0

        def drain(s: socket.socket) -> None:
            nonlocal got, got_bytes
            while True:
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    return
                got += 1
                got_bytes += len(data)

        cpu0 = proc_cpu_seconds(pid) or 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for s in socks:
                sent += send_batch(s.fileno(), batch)
                drain(s)
        time.sleep(0.5)  # what is queued still gets read
        cpu = (proc_cpu_seconds(pid) or 0.0) - cpu0
        for s in socks:
            drain(s)
            s.close()
        read = sent - udp_drops(srv.port)  # what the server's socket did not have to drop
        return {"sent": sent, "read": read, "answers": got, "bytes_in": read * len(q),
                "bytes_out": got_bytes, "cpu": cpu}
    finally:
        srv.stop()


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to ``port``
    (its receive buffer was full), from /proc/net/udp."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[-1])
    return total


def _sockaddr(host: str, port: int) -> bytes:
    import struct
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
        socket.inet_aton(host) + bytes(8)


def flood(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="geodns-rrl-") as tmp:
        print(f"{'variant':<8}{'sent':>11}{'read':>11}{'answers':>10}{'bytes out/in':>14}"
              f"{'server CPU s':>14}{'µs CPU / query read':>22}")
        for r in range(args.rounds):
            for name, extra in (("off", ""), ("on", "rate_limit: {}\n")):
                m = flood_one(extra, args.seconds, args.server_cpus, Path(tmp))
                print(f"{name:<8}{m['sent']:>11,.0f}{m['read']:>11,.0f}{m['answers']:>10,.0f}"
                      f"{m['bytes_out'] / max(m['bytes_in'], 1):>14.3f}{m['cpu']:>14.2f}"
                      f"{m['cpu'] / max(m['read'], 1) * 1e6:>22.2f}   (round {r + 1})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("cost", "flood"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8, help="cost: seconds per dnsperf run")
    ap.add_argument("--workloads", default="static", help="cost: run.py workloads")
    ap.add_argument("--seconds", type=float, default=5, help="flood: seconds of flood")
    ap.add_argument("--server-cpus", default="1", help="flood: taskset CPU list for geodns")
    args = ap.parse_args()
    (cost if args.part == "cost" else flood)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
