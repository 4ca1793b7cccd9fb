#!/usr/bin/env python3
"""A million fuzzed packets at a real geodns node: does it stay up, answer
correctly, log no traceback and keep its memory?

The packets come from tests/fuzzpackets.py (the generator that
tests/test_fuzz_server.py sends 30,000 of): random bytes, mutated valid
queries, EDNS and Client Subnet edge cases, a share over TCP; every packet
is determined by ``--seed`` and its index.  The node (one worker, loopback,
a free port) serves tests/zones' static zone and steered zone with five
PoPs and the GeoLite2 City database.

Packets go out in chunks of ``--chunk`` at ``--rate`` a second; after each
chunk the answers received are checked (``fuzzpackets.check``: the query's
ID, the question as asked, a size UDP allows, and dnspython parses it or it
is a deliberate FORMERR, NOTIMP, REFUSED or BADVERS; never SERVFAIL) and the
node's memory is read.  Reported: packets a second sent, answers by rcode,
packets that should have had an answer and did not, the node's RSS before,
after and at its peak (``VmHWM``) and its CPU time, whether it still answers
a normal query, and whether its log holds "Traceback" or "internal error".

    flock /tmp/geodns-bench.lock .venv/bin/python bench/fuzz.py \\
        [--packets 1000000] [--rate 8000] [--chunk 100000] [--seed 15] [--json FILE]

Exit status 0 when nothing was wrong, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzzpackets as fp  # noqa: E402
from serveproc import free_port, logged_node, memory_kb  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def normal_answers(port: int) -> bool:
    """A static and a steered name (with ECS) answered NOERROR with data."""
    for name, ecs in (("www.test.example.", None), ("www.steer.example.", "8.8.8.0")):
        options: list[dns.edns.Option] = [dns.edns.ECSOption(ecs, 24)] if ecs else []
        q = dns.message.make_query(name, "A", use_edns=0 if ecs else False, options=options)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        except dns.exception.Timeout:
            return False
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=8_000, help="packets a second")
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="geodns-fuzz-") as d:
        work = Path(d)
        port = free_port()
        config = fp.node_files(work, port)
        log = work / "node.log"
        with logged_node(config, work, log) as proc:
            return run(args, proc, port, log)


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], port: int, log: Path) -> int:
    deadline = time.monotonic() + 60
    while not normal_answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            print(log.read_text()[-3000:])
            raise SystemExit("the node did not start")
        time.sleep(0.2)
    before = memory_kb(proc.pid)["VmRSS"]
    cpu0 = cpu_seconds(proc.pid)
    print(f"fuzz: {args.packets:,} packets, seed {args.seed}, {args.rate:,.0f}/s in chunks of "
          f"{args.chunk:,}; node pid {proc.pid}, RSS {before / 1024:.1f} MB", flush=True)
    barrage = fp.Barrage("127.0.0.1", port, args.seed)
    sending = 0.0
    rss = [before]
    began = time.monotonic()
    try:
        for start in range(0, args.packets, args.chunk):
            count = min(args.chunk, args.packets - start)
            sending += barrage.run(start, count, args.rate)
            time.sleep(0.3)  # the chunk's last answers
            barrage.check_pending()
            if proc.poll() is not None:
                break
            rss.append(memory_kb(proc.pid)["VmRSS"])
            print(f"  {start + count:>9,} sent: {barrage.answered:,} answers, "
                  f"{barrage.wrong_count} wrong, RSS {rss[-1] / 1024:.1f} MB, "
                  f"{time.monotonic() - began:.0f} s", flush=True)
    finally:
        barrage.finish(1.0)
    alive = proc.poll() is None
    st = memory_kb(proc.pid) if alive else {"VmRSS": 0, "VmHWM": 0}
    cpu = cpu_seconds(proc.pid) - cpu0 if alive else float("nan")
    answers = normal_answers(port) if alive else False
    text = log.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    internal = text.count("internal error")
    missing = barrage.due - barrage.answered
    result = {
        "packets": barrage.sent, "seed": args.seed, "rate_asked": args.rate,
        "rate_sent": barrage.sent / sending if sending else 0.0,
        "kinds": barrage.kinds, "due": barrage.due, "answered": barrage.answered,
        "unanswered": missing, "due_tcp": barrage.due_tcp, "answered_tcp": barrage.answered_tcp,
        "rcodes": dict(sorted(barrage.rcodes.items(), key=lambda x: -x[1])),
        "wrong": barrage.wrong_count, "wrong_first": barrage.wrong[:10],
        "tcp_connections": barrage.tcp_reconnects,
        "rss_before_mb": before / 1024, "rss_after_mb": st["VmRSS"] / 1024,
        "rss_peak_mb": st["VmHWM"] / 1024, "rss_samples_mb": [r / 1024 for r in rss],
        "server_cpu_s": cpu, "server_cpu_us_per_packet": cpu / barrage.sent * 1e6,
        "alive": alive, "normal_query_answered": answers,
        "log_tracebacks": tracebacks, "log_internal_errors": internal,
    }
    print(f"sent {barrage.sent:,} packets at {result['rate_sent']:,.0f}/s "
          f"({barrage.tcp_reconnects} TCP connections for the TCP share)")
    missing_tcp = barrage.due_tcp - barrage.answered_tcp
    print(f"packets that must be answered: {barrage.due:,}; answers: {barrage.answered:,}; "
          f"unanswered: {missing:,} ({missing / max(barrage.due, 1):.3%}), of them over TCP "
          f"{missing_tcp:,} of {barrage.due_tcp:,}")
    print("answers by rcode: " + ", ".join(f"{k} {v:,}" for k, v in result["rcodes"].items()))
    print(f"wrong answers: {barrage.wrong_count}" + (f" (first: {barrage.wrong[:3]})"
                                                      if barrage.wrong else ""))
    print(f"node RSS: {before / 1024:.1f} MB before, {st['VmRSS'] / 1024:.1f} MB after, "
          f"peak {st['VmHWM'] / 1024:.1f} MB; CPU {cpu:.1f} s "
          f"({result['server_cpu_us_per_packet']:.1f} us a packet)")
    print(f"node alive: {alive}; answers a normal query: {answers}; log: {tracebacks} "
          f"'Traceback', {internal} 'internal error'")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = alive and answers and not tracebacks and not internal and not barrage.wrong_count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
