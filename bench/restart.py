#!/usr/bin/env python3
"""Restarts under load: geodns's ``geodns restart`` against gdnsd's
``gdnsd replace``, in the same run.

Each server gets the same paced UDP load (``--rate`` queries a second from
one socket, every answer timed), first for ``--baseline`` seconds without
restarts, then while it is restarted ``--restarts`` times in a row.  Reported
per server: queries sent, lost (no answer within a second), and the longest
time without an answer.  The load is paced on purpose: ``dnsperf -q 50000``
opens with a burst that overflows the socket buffer of every server here, so
its loss count says nothing about restarts.

    .venv/bin/python bench/restart.py [--rate 3000] [--restarts 10] [--runs 3] [--workers N]

``--workers N`` runs geodns with N workers (the supervisor hands every
worker's sockets over).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

QUERY_NAME = "www.bench.test."


def query_wire(name: str) -> bytearray:
    out = bytearray(struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0))
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0" + struct.pack("!HH", 1, 1)


class Load:
    def __init__(self, port: int, rate: int) -> None:
        self.rate = rate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.connect((peers.HOST, port))
        self.sock.settimeout(0.2)
        self.sent: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        self.wire = query_wire(QUERY_NAME)
        self.done = threading.Event()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.answered.setdefault(struct.unpack("!H", data[:2])[0], time.monotonic())

    def run(self, until: threading.Event, longest: float) -> None:
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        began = time.monotonic()
        for n in itertools.count():
            due = began + n / self.rate
            if until.is_set() or due - began > longest:
                break
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            qid = n % 65536
            self.wire[0:2] = struct.pack("!H", qid)
            self.sent[qid] = time.monotonic()
            self.sock.send(self.wire)
        time.sleep(1.0)
        self.done.set()
        reader.join(2)
        self.sock.close()

    def summary(self) -> dict[str, float]:
        times = sorted(self.answered.values())
        gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        return {"sent": len(self.sent), "lost": len(set(self.sent) - set(self.answered)),
                "silence_ms": gap * 1000}


def loaded(port: int, rate: int, seconds: float, action: object = None) -> dict[str, float]:
    """The load for ``seconds``, or while ``action()`` runs."""
    load = Load(port, rate)
    until = threading.Event()
    sender = threading.Thread(target=load.run, args=(until, seconds if action is None else 600))
    sender.start()
    if action is not None:
        time.sleep(0.3)
        action()  # type: ignore[operator]
        time.sleep(0.3)
        until.set()
    sender.join()
    return load.summary()


def measure(name: str, rate: int, restarts: int, baseline: float,
            workers: int = 1) -> list[dict[str, float]]:
    if name == "geodns":
        cmd = [*peers.default_geodns_cmd(0), "--workers", str(workers)]
        cmd[cmd.index("--listen") + 1] = f"{peers.HOST}:{{port}}"
        srv: peers.Server = peers.make_server("geodns", geodns_cmd=cmd)
        srv.start()
        config = peers.GEODNS_CONFIG

        def restart() -> None:
            for _ in range(restarts):
                done = subprocess.run([sys.executable, "-m", "geodns", "restart", "--config",
                                       str(config)], capture_output=True, text=True,
                                      cwd=HERE.parent, timeout=120)
                if done.returncode != 0:
                    raise SystemExit(f"geodns restart failed: {done.stderr}")
    else:
        srv = peers.make_server("gdnsd", geoip_db=peers.geoip_database(None))
        srv.start()
        replaced: list[subprocess.Popen[bytes]] = []

        def restart() -> None:
            for _ in range(restarts):
                before = len(replaced)
                replaced.append(subprocess.Popen(["gdnsd", "-c", str(srv.dir), "-R", "start"],
                                                 stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL,
                                                 start_new_session=True))
                # replace is done when the old daemon has exited
                old = srv.proc if before == 0 else replaced[before - 1]
                assert old is not None
                old.wait(60)
    try:
        base = loaded(srv.port, rate, baseline)
        with_restarts = loaded(srv.port, rate, 0, restart)
    finally:
        if name == "gdnsd":
            for p in replaced:
                p.terminate()
                p.wait(10)
        if srv.proc is not None:  # the group: successors started by a restart too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(srv.proc.pid, signal.SIGTERM)
        srv.cleanup()
    return [base, with_restarts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--baseline", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--servers", default="geodns,gdnsd")
    ap.add_argument("--workers", type=int, default=1, help="geodns's worker processes")
    args = ap.parse_args()
    rows = []
    for run in range(1, args.runs + 1):
        for name in args.servers.split(","):
            base, rest = measure(name, args.rate, args.restarts, args.baseline, args.workers)
            print(f"run {run} {name:7} no restart: {base['sent']:.0f} sent, {base['lost']:.0f} "
                  f"lost, longest silence {base['silence_ms']:.1f} ms | {args.restarts} "
                  f"restarts: {rest['sent']:.0f} sent, {rest['lost']:.0f} lost, longest "
                  f"silence {rest['silence_ms']:.1f} ms", flush=True)
            rows.append((name, base, rest))
    print()
    for name in args.servers.split(","):
        mine = [r for r in rows if r[0] == name]
        lost = [r[2]["lost"] for r in mine]
        gap = [r[2]["silence_ms"] for r in mine]
        print(f"{name:7} with restarts: lost per run {lost} (median {statistics.median(lost):g}), "
              f"longest silence median {statistics.median(gap):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
