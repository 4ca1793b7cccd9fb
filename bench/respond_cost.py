"""Instructions per query, counted by callgrind: the stable figure on a noisy host.

Rates from ``run.py`` move by 10-30% from run to run on a shared machine; the
number of instructions the server executes per query does not.  This script
answers the benchmark's workloads (``gen_queries.py``, the bench zone and
configuration) with one responder, with no sockets, and runs itself twice
under ``valgrind --tool=callgrind``: once with N queries and once with 2N.
The difference divided by N is the cost of one query, start-up excluded.

    .venv/bin/python bench/respond_cost.py                       # this tree
    .venv/bin/python bench/respond_cost.py --python /work/baseline/.venv/bin/python
    .venv/bin/python bench/respond_cost.py --workloads static,steered-warm --count 4000

Workloads: ``static``, ``nxdomain``, ``mix`` and ``steered`` as ``run.py``
sends them; ``steered-warm`` repeats 1,000 client subnets whose decisions are
cached first; ``steered-cold`` is ``steered`` (every query a new /24: a GeoIP
look-up and, unless the place was seen, a decision); ``udp-batch`` is
``static`` through the batched UDP reader over loopback (the client's sends
and receives are counted too, the same in every tree).  ``cookie-client`` is
``static`` with a client cookie in every query, ``cookie-valid`` with a client
cookie and a valid server cookie (RFC 7873, RFC 9018; the responder has a
cookie secret), for the cost of the cookie stage; ``cookie-ignored`` sends
those to a responder without cookies configured (the option is ignored: what
such a query costs without the stage).  ``static-do``, ``nxdomain-do`` and
``steered-warm-do`` are those queries with the DO bit set, answered from the
bench zone signed (``dnssec:`` with a new ECDSA P-256 KSK and ZSK; the
signing is start-up, not counted): the cost of the sign stage, against the
same workload without ``-do`` (a query without DO is answered alike from a
signed and an unsigned zone).

The tree measured is the one whose ``geodns`` package the given Python
imports (its editable install); the queries come from this tree's bench/.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = ("static", "nxdomain", "mix", "steered-warm", "steered-cold", "udp-batch",
             "cookie-client", "cookie-valid", "cookie-ignored", "static-do", "nxdomain-do",
             "steered-warm-do")
COOKIE_SECRET = bytes(range(16))
COOKIE_NOW = 1_800_000_000  # the responder's clock in the cookie workloads


def queries(workload: str, count: int) -> list[bytes]:
    import gen_queries as gq

    if workload.endswith("-do"):
        return [gq.set_do(q) for q in queries(workload[:-3], count)]
    zi = gq.ZoneInfo(gq.ZONE_FILE)
    rng = random.Random(f"1:{workload}")
    if workload.startswith("cookie-"):
        return [with_cookie(gq.make_wire(rng, *q), rng, workload != "cookie-client")
                for q in gq.gen_static(zi, rng, 1000)]
    if workload in ("static", "udp-batch"):
        qs = gq.gen_static(zi, rng, 1000)
    elif workload == "nxdomain":
        qs = gq.gen_nxdomain(zi, rng, count)
    elif workload == "mix":
        qs = gq.gen_mix(zi, rng, count)
    elif workload == "steered-warm":
        qs = gq.gen_steered(zi, rng, 1000)
    else:
        qs = gq.gen_steered(zi, rng, count)
    return [gq.make_wire(rng, *q) for q in qs]


def with_cookie(wire: bytes, rng: random.Random, server: bool) -> bytes:
    """A query (ending with an OPT without options) with a COOKIE option: a
    random client cookie and, with ``server``, the server cookie the
    responder makes for 127.0.0.1 at COOKIE_NOW."""
    from geodns.cookies import Cookies

    client = rng.randbytes(8)
    data = client
    if server:
        data += Cookies([COOKIE_SECRET]).server_cookie(client, bytes([127, 0, 0, 1]), COOKIE_NOW)
    option = struct.pack("!HH", 10, len(data)) + data
    assert wire[-2:] == b"\x00\x00", "the query's OPT has options already"
    return wire[:-2] + len(option).to_bytes(2, "big") + option


def responder(signed: bool = False) -> Any:
    from geodns.compile import compile_zones
    from geodns.config import load_config
    from geodns.geo import MaxMindLocator, bundled_database
    from geodns.steering import Steering
    from geodns.wire import Responder
    from geodns.yamlsrc import Problems
    from geodns.zones.loader import load_zone_file

    problems = Problems()
    cfg = load_config(HERE / "geodns-bench.yaml", problems)
    zone = load_zone_file(HERE / "zone" / "yaml" / "bench.test.yaml", problems, pops=cfg.pops)
    assert zone is not None and not problems, [str(p) for p in problems]
    if signed:  # the same zone with dnssec: (a KSK and a ZSK), as geodns serve signs it
        from geodns.dnssec import policy
        from geodns.dnssec.keys import ECDSAP256SHA256, generate
        from geodns.dnssec.zonesign import with_keys
        from geodns.zones.loader import load_zone_text

        text = (HERE / "zone" / "yaml" / "bench.test.yaml").read_text() + (
            "dnssec:\n  keys:\n    - {file: ksk.pem, role: ksk}\n"
            "    - {file: zsk.pem, role: zsk}\n")
        zone = load_zone_text(text, "bench.test.yaml", "bench.test.", problems, pops=cfg.pops)
        assert zone is not None and zone.dnssec is not None, [str(p) for p in problems]
        keys = policy.resolve(zone.dnssec, {"ksk.pem": generate(ECDSAP256SHA256),
                                            "zsk.pem": generate(ECDSAP256SHA256)}, problems)
        assert keys is not None and not problems, [str(p) for p in problems]
        zone = with_keys(zone, keys)
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    steering = Steering(cfg.pops, cfg.default_order, cfg.latency, specs)
    db = bundled_database()
    assert db is not None
    try:  # the health view since the control plane's interfaces; before, StaticHealth
        from geodns.health.view import HealthView as health
    except ImportError:
        from geodns.steering import StaticHealth as health  # type: ignore[attr-defined,no-redef]
    return Responder(compile_zones([zone], cfg.udp_payload), steering, MaxMindLocator(db),
                     health())


def run(workload: str, count: int, pool: Path) -> None:
    """The measured program: answer ``count`` queries of ``workload`` from
    the queries in ``pool`` (written beforehand, so that both runs read the
    same file and generating queries is not measured)."""
    import gen_queries as gq

    qs = gq.read_blob(pool)
    r = responder(signed=workload.endswith("-do"))
    if workload in ("cookie-client", "cookie-valid"):
        from geodns.cookies import Cookies

        r.cookies = Cookies([COOKIE_SECRET])
        r.now = COOKIE_NOW
    respond = r.respond
    peer = ("127.0.0.1", 40000)
    if workload.startswith("steered-warm"):
        for q in qs:
            respond(q, True, peer)
    if workload == "udp-batch":
        udp_batch(r, qs, count)
        return
    n = len(qs)
    for i in range(count):
        if respond(qs[i % n], True, peer) is None:
            raise SystemExit("no answer")


def udp_batch(r: Any, qs: list[bytes], count: int) -> None:
    import socket

    from geodns.server.transport import UDPBatchReader

    class Source:
        responder = r
        limiter = None

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client.connect(server.getsockname())
    reader = UDPBatchReader(Source(), server)
    for start in range(0, count, 64):
        burst = min(64, count - start)
        for i in range(burst):
            client.send(qs[(start + i) % len(qs)])
        reader.on_readable()
        for _ in range(burst):
            client.recv(65535)


def collected(python: str, workload: str, count: int, pool: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", python,
             __file__, "--child", workload, "--count", str(count), "--pool", str(pool)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
            cwd=tmp)
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode or m is None:
        raise SystemExit(f"{workload}: valgrind failed:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="the tree's Python (its venv)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--count", type=int, default=10_000, help="N (the second run is 2N)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if args.child:
        run(args.child, args.count, args.pool)
        return 0
    for wl in args.workloads.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            pool = Path(tmp) / "queries.bin"
            pool.write_bytes(b"".join(len(q).to_bytes(2, "big") + q
                                      for q in queries(wl, 2 * args.count)))
            one = collected(args.python, wl, args.count, pool)
            two = collected(args.python, wl, 2 * args.count, pool)
        print(f"{wl:<16}{(two - one) / args.count:>9,.0f} instructions per query", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
