"""What DNSSEC costs per answered query (issue 14).

The issue's target: with DO set, server CPU per answered query at most 1.1
times the same query without DO, for the static, steered and NXDOMAIN
workloads; the random-NXDOMAIN flood with DO reported separately; Knot with
online signing in the same run, as the anchor.

One geodns (``geodns-bench.yaml``: one worker, the four PoPs) serves a copy
of the bench zone with ``dnssec:`` added (a KSK and a ZSK, ECDSA P-256 by
default, made fresh in a temporary keys directory), and is given each of
``run.py``'s query files ``static``, ``nxdomain`` (random names that do not
exist) and ``steered`` (``geo.bench.test`` with a Client Subnet option) as
they are (no DO) and with the DO bit set in every query's OPT record, the
two back to back in each round (which goes first alternates), so that both
see the same noise on the machine.  Beside it, in the same rounds:

* ``geodns-unsigned``: geodns with the bench zone as it is, without DO: the
  reference the signed zone's answers without DO should equal;
* ``knot-online``: Knot 3.2 with ``mod-onlinesign`` (it signs answers as it
  makes them; a name that does not exist gets NOERROR and an NSEC made and
  signed for that name, "black lies", in answer to DO), and
* ``knot-signed``: Knot with ``dnssec-signing: on`` (the zone signed at
  load, NSEC chain), each with and without DO, for static and nxdomain
  (Knot cannot steer).

Server CPU per answered query is the server's CPU time over the run
(``/proc/PID/stat``) divided by the answers dnsperf received: the figure
the target is about; queries a second follow from it on one core.  Before
measuring, a sample of each query file is asked with dnspython: every DO
answer of a signed server must carry RRSIGs that validate against the
zone's DNSKEY set, every answer without DO must carry none, and geodns's
answers without DO must be byte for byte the unsigned zone's.

The flood: a fresh server, then ``--flood-seconds`` of dnsperf at full
speed with random names that do not exist (``--flood-names`` of them, each
once), with DO (and for geodns without DO too, for comparison): CPU per
answered query, and the server's RSS before and after (geodns keeps the
signed NXDOMAIN answers it builds, one per pair of NSEC chain intervals).

    flock /tmp/geodns-bench.lock .venv/bin/python bench/dnssec_cost.py
    flock /tmp/geodns-bench.lock .venv/bin/python bench/dnssec_cost.py --rounds 5 --json /tmp/d.json
    .venv/bin/python bench/dnssec_cost.py --algorithm ed25519 --servers geodns,knot-online
    .venv/bin/python bench/dnssec_cost.py --rounds 1 --duration 2 --flood-seconds 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import string
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import peers  # noqa: E402
import run  # noqa: E402
from gen_queries import ZONE_FILE, ZoneInfo, read_blob, set_do  # noqa: E402
from scope import wait_for_maps  # noqa: E402
from serveproc import memory_kb  # noqa: E402

SERVERS = ("geodns", "geodns-unsigned", "knot-online", "knot-signed")
WORKLOADS = ("static", "nxdomain", "steered")
SERVES = {
    "geodns": set(WORKLOADS),
    "geodns-unsigned": set(WORKLOADS),
    "knot-online": {"static", "nxdomain"},
    "knot-signed": {"static", "nxdomain"},
}
SIGNED = {"geodns", "knot-online", "knot-signed"}  # geodns-unsigned runs without DO only
FLOOD = (("geodns", True), ("geodns", False), ("knot-online", True))
TARGET = 1.1  # issue 14: CPU per query with DO / without DO
ALGORITHMS = {"ecdsap256sha256": 13, "ed25519": 15}
ZONE = "bench.test."
CHECK_SAMPLE = 20
WARM_MAX = 10  # seconds


def expected_rcode(server: str, workload: str, do: bool) -> str:
    if workload != "nxdomain":
        return "NOERROR"
    # Knot's online signing proves a name absent with an NSEC made for that
    # very name, which says the name exists without the type: NODATA.
    return "NOERROR" if server == "knot-online" and do else "NXDOMAIN"


# --- queries ---------------------------------------------------------------------


def write_blob(path: Path, msgs: list[bytes]) -> None:
    """A ``dnsperf -B`` file: each message after its length."""
    path.write_bytes(b"".join(struct.pack("!H", len(m)) + m for m in msgs))


def flood_queries(count: int, seed: int) -> list[bytes]:
    """``count`` queries (A, EDNS payload 1232, no DO) for distinct random
    names under the zone that do not exist: one or two labels of 6 to 14
    letters and digits, as gen_queries.py draws them."""
    rng = random.Random(f"{seed}:flood")
    existing = {n.lower() for n in ZoneInfo(ZONE_FILE).existing}
    alphabet = string.ascii_lowercase + string.digits
    apex = peers._encode_name(ZONE)
    tail = b"\x00\x01\x00\x01" + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    seen: set[str] = set()
    out: list[bytes] = []
    while len(out) < count:
        labels = ["".join(rng.choices(alphabet, k=rng.randint(6, 14)))
                  for _ in range(rng.choice((1, 1, 1, 2)))]
        text = ".".join(labels)
        if text in seen or f"{text}.{ZONE}" in existing:
            continue
        seen.add(text)
        name = b"".join(bytes([len(x)]) + x.encode() for x in labels) + apex
        out.append(struct.pack("!HHHHHH", rng.randrange(65536), 0, 1, 0, 0, 1) + name + tail)
    return out


# --- servers ---------------------------------------------------------------------


def signed_geodns(tmp: Path, algorithm: str, cpus: str | None) -> peers.GeoDNS:
    """geodns serving a copy of the bench zone with ``dnssec:`` (a new KSK
    and ZSK of ``algorithm`` in ``tmp/keys``), configured as the bench is."""
    from geodns.dnssec.keys import generate

    zones, keys = tmp / "zones", tmp / "keys"
    if not zones.exists():
        zones.mkdir()
        keys.mkdir()
        for role in ("ksk", "zsk"):
            (keys / f"bench.{role}.pem").write_bytes(generate(ALGORITHMS[algorithm]))
        text = (peers.YAML_ZONE_DIR / "bench.test.yaml").read_text()
        text += ("dnssec:\n  keys:\n    - {file: bench.ksk.pem, role: ksk}\n"
                 "    - {file: bench.zsk.pem, role: zsk}\n")
        (zones / "bench.test.yaml").write_text(text)
        cfg = peers.GEODNS_CONFIG.read_text().replace("zones: zone/yaml/", f"zones: {zones}/")
        (tmp / "geodns.yaml").write_text(cfg + f"keys: {keys}\n")
    cmd = [sys.executable, "-m", "geodns", "serve", "--config", str(tmp / "geodns.yaml"),
           "--listen", "{host}:{port}", "--zones", str(zones), "--lameduck", "0"]
    srv = peers.GeoDNS(cmd, cpus=cpus)
    srv.name = "geodns"
    return srv


class KnotOnline(peers.Knot):
    """Knot signing each answer as it makes it (``mod-onlinesign``), with a
    key it makes at start (in its own temporary KASP database)."""

    name = "knot-online"

    def __init__(self, algorithm: str, cpus: str | None = None) -> None:
        super().__init__(cpus=cpus)
        self.sections = (f"\npolicy:\n  - id: bench\n    algorithm: {algorithm}\n\n"
                         "mod-onlinesign:\n  - id: bench\n    policy: bench\n")
        self.zone_options = "    module: mod-onlinesign/bench\n"


class KnotSigned(peers.Knot):
    """Knot signing the zone when it loads it (``dnssec-signing: on``: a KSK
    and a ZSK, an NSEC chain), answers then served as they are."""

    name = "knot-signed"

    def __init__(self, algorithm: str, cpus: str | None = None) -> None:
        super().__init__(cpus=cpus)
        self.sections = f"\npolicy:\n  - id: bench\n    algorithm: {algorithm}\n"
        self.zone_options = "    dnssec-signing: on\n    dnssec-policy: bench\n"


def start(srv: peers.Server, timeout: float = 120) -> None:
    """Start a server and, for geodns, wait for its steering maps (unless
    turned off): their build takes some 5 s of CPU after the first answer,
    which would otherwise be counted in the first runs (or a flood)."""
    srv.start(ready_timeout=timeout)
    if isinstance(srv, peers.GeoDNS) and os.environ.get("GEODNS_STEER_MAPS", "1") != "0":
        wait_for_maps(srv, 600)


def make(name: str, args: argparse.Namespace, tmp: Path) -> peers.Server:
    cpus = args.server_cpus or None
    if name == "geodns":
        return signed_geodns(tmp, args.algorithm, cpus)
    if name == "geodns-unsigned":
        srv = peers.GeoDNS(None, cpus=cpus)
        srv.name = name
        return srv
    if name == "knot-online":
        return KnotOnline(args.algorithm, cpus)
    return KnotSigned(args.algorithm, cpus)


# --- answers, checked with dnspython -------------------------------------------------


def ask(port: int, wire: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, (peers.HOST, port))
        while True:
            data, _ = s.recvfrom(65535)
            if data[:2] == wire[:2]:
                return data


def dnskeys(port: int) -> Any:
    """The zone's DNSKEY set, itself validated by its RRSIGs."""
    import dns.dnssec
    import dns.message
    import dns.name
    import dns.query
    import dns.rdataclass
    import dns.rdatatype

    origin = dns.name.from_text(ZONE)
    q = dns.message.make_query(origin, "DNSKEY", want_dnssec=True, payload=1232)
    r = dns.query.udp(q, peers.HOST, port=port, timeout=2)
    keys = r.find_rrset(r.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    sigs = r.find_rrset(r.answer, origin, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                        dns.rdatatype.DNSKEY)
    dns.dnssec.validate(keys, sigs, {origin: keys})
    return keys


def check_answers(srvs: dict[str, peers.Server], workloads: list[str],
                  files: dict[tuple[str, bool], Path], n: int) -> dict[str, dict[str, Any]]:
    """Ask ``n`` queries of each file with and without DO, one at a time;
    per server and workload, what was found (``problems`` empty if all is
    well)."""
    import dns.dnssec
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.rcode
    import dns.rdatatype

    origin = dns.name.from_text(ZONE)
    out: dict[str, dict[str, Any]] = {}
    keys = {s: dnskeys(srv.port) for s, srv in srvs.items() if s in SIGNED}
    for wl in workloads:
        plain, signed = read_blob(files[(wl, False)]), read_blob(files[(wl, True)])
        picks = random.Random(f"check:{wl}").sample(range(len(plain)), min(n, len(plain)))
        for s, srv in srvs.items():
            if wl not in SERVES[s]:
                continue
            problems: list[str] = []
            validated = same = 0
            for do in (False, True) if s in SIGNED else (False,):
                for k in picks:
                    wire = (signed if do else plain)[k]
                    q = dns.message.from_wire(wire)
                    if bool(q.ednsflags & dns.flags.DO) != do:
                        problems.append(f"query {k}: DO {'missing' if do else 'set'}")
                    data = ask(srv.port, wire)
                    r = dns.message.from_wire(data)
                    where = f"{q.question[0].name} DO" if do else f"{q.question[0].name}"
                    want = expected_rcode(s, wl, do)
                    if dns.rcode.to_text(r.rcode()) != want:
                        problems.append(f"{where}: {dns.rcode.to_text(r.rcode())}, not {want}")
                    sets = [x for x in r.answer + r.authority if x.rdtype != dns.rdatatype.RRSIG]
                    sigs = [x for x in r.answer + r.authority if x.rdtype == dns.rdatatype.RRSIG]
                    if not do:
                        if sigs or any(x.rdtype == dns.rdatatype.NSEC for x in sets):
                            problems.append(f"{where}: RRSIG or NSEC without DO")
                        if s == "geodns" and "geodns-unsigned" in srvs:
                            same += data == ask(srvs["geodns-unsigned"].port, wire)
                        continue
                    if not r.ednsflags & dns.flags.DO:
                        problems.append(f"{where}: the answer does not echo DO")
                    if not sets:
                        problems.append(f"{where}: no records")
                    for rrset in sets:
                        what = f"{where}: {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
                        cover = [x for x in sigs
                                 if x.name == rrset.name and x.covers == rrset.rdtype]
                        if not cover:
                            problems.append(f"{what}: no RRSIG")
                            continue
                        try:
                            dns.dnssec.validate(rrset, cover[0], {origin: keys[s]})
                            validated += 1
                        except dns.exception.ValidationFailure as exc:
                            problems.append(f"{what}: {exc}")
            parts = [f"{len(picks)} queries" + (" with and without DO" if s in SIGNED else "")]
            if s in SIGNED:
                parts.append(f"{validated} RRsets validated")
            if s == "geodns" and "geodns-unsigned" in srvs:
                parts.append(f"{same}/{len(picks)} answers without DO identical to the "
                             "unsigned zone's")
            out.setdefault(wl, {})[s] = {"problems": problems, "summary": ", ".join(parts)}
    return out


# --- measuring -------------------------------------------------------------------------


def warm(args: argparse.Namespace, srv: peers.Server, qfile: Path) -> None:
    """One unmeasured pass through ``qfile`` (for steered: every client
    network's decision made, as the later runs find them), at most
    ``WARM_MAX`` seconds (Knot signing every answer needs minutes)."""
    a = argparse.Namespace(**{**vars(args), "duration": WARM_MAX})
    cmd = [*run.dnsperf_cmd(a, srv.port, qfile), "-n", "1"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   timeout=600)


def us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.2f}"


def label(server: str, do: bool) -> str:
    return f"{server} {'DO' if do else 'no DO'}"


def rounds(args: argparse.Namespace, srvs: dict[str, peers.Server], workloads: list[str],
           files: dict[tuple[str, bool], Path]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for wl in workloads:
        names = [s for s in srvs if wl in SERVES[s]]
        for s in names:
            for do in (False, True) if s in SIGNED else (False,):
                warm(args, srvs[s], files[(wl, do)])
        for r in range(args.rounds):
            k = r % len(names)
            for s in names[k:] + names[:k]:
                dos = (False, True) if s in SIGNED else (False,)
                for do in dos if r % 2 == 0 else dos[::-1]:
                    srv = srvs[s]
                    if not srv.alive():
                        print(f"  {s} is not running - restarting it", flush=True)
                        srv.stop()
                        start(srv)
                    m = run.measure(args, srv, wl, r, qfile=files[(wl, do)],
                                    expected={expected_rcode(s, wl, do): 1.0})
                    cpu = run.per_query(m)
                    results.append({"workload": wl, "server": s, "do": do, "round": r,
                                    "cpu_per_query": cpu, **asdict(m)})
                    status = m.error or (f"{m.qps:,.0f} q/s, {us(cpu)} µs CPU/query, "
                                         f"lost {m.lost}, CPUs busy "
                                         + "/".join(f"{b:.0%}" for b in m.cpu_busy))
                    print(f"  {wl:<9} round {r + 1}/{args.rounds} {label(s, do):<22} {status}"
                          + (f"  [{'; '.join(m.warnings)}]" if m.warnings else ""), flush=True)
    return results


def flood(args: argparse.Namespace, tmp: Path, files: dict[bool, Path],
          servers: list[str]) -> list[dict[str, Any]]:
    """Each variant on a fresh server: RSS, a flood, RSS."""
    out: list[dict[str, Any]] = []
    variants = [(s, do) for s, do in FLOOD if s in servers]
    for r in range(args.rounds):
        k = r % len(variants)
        for s, do in variants[k:] + variants[:k]:
            srv = make(s, args, tmp)
            try:
                start(srv)
                assert srv.proc is not None
                before = memory_kb(srv.proc.pid)
                m = run.measure(args, srv, "nxdomain", r, duration=args.flood_seconds,
                                qfile=files[do], expected={expected_rcode(s, "nxdomain", do): 1.0})
                after = memory_kb(srv.proc.pid) if srv.alive() else {}
            finally:
                srv.cleanup()
            cpu = run.per_query(m)
            row = {"server": s, "do": do, "round": r, "cpu_per_query": cpu,
                   "rss_before_kb": before.get("VmRSS"), "rss_after_kb": after.get("VmRSS"),
                   "hwm_after_kb": after.get("VmHWM"), **asdict(m)}
            out.append(row)
            status = m.error or (f"{m.qps:,.0f} q/s, {m.completed:,} answered, "
                                 f"{us(cpu)} µs CPU/query, RSS "
                                 f"{before['VmRSS'] / 1024:.1f} -> "
                                 f"{after.get('VmRSS', 0) / 1024:.1f} MB")
            print(f"  flood     round {r + 1}/{args.rounds} {label(s, do):<22} {status}"
                  + (f"  [{'; '.join(m.warnings)}]" if m.warnings else ""), flush=True)
    return out


# --- report ----------------------------------------------------------------------------


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload and ``label(server, do)``: medians, the runs, and for
    DO the ratio to the same server without DO (of the medians, and the
    median of the ratios round by round)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        d = out.setdefault(r["workload"], {}).setdefault(label(r["server"], r["do"]), {
            "server": r["server"], "do": r["do"], "runs": []})
        d["runs"].append(r)
    for per in out.values():
        for d in per.values():
            runs = d.pop("runs")
            d["median_qps"] = med([x["qps"] for x in runs if not x["error"]])
            d["median_cpu_per_query"] = med([x["cpu_per_query"] for x in runs])
            d["runs_cpu_per_query"] = [x["cpu_per_query"] for x in runs]
            d["runs_qps"] = [x["qps"] if not x["error"] else None for x in runs]
            d["lost"] = sum(x["lost"] for x in runs)
            d["warnings"] = sorted({w for x in runs for w in x["warnings"]}
                                   | {x["error"] for x in runs if x["error"]})
            d["by_round"] = {x["round"]: x["cpu_per_query"] for x in runs}
        for d in per.values():
            base = per.get(label(d["server"], False))
            if d["do"] and base and base["median_cpu_per_query"] and d["median_cpu_per_query"]:
                d["ratio"] = d["median_cpu_per_query"] / base["median_cpu_per_query"]
                paired = [c / base["by_round"][k] for k, c in d["by_round"].items()
                          if c and base["by_round"].get(k)]
                d["paired_ratios"] = paired
                d["paired_ratio"] = med(paired)
    return out


def print_table(summary: dict[str, dict[str, dict[str, Any]]], target: float) -> None:
    head = ["workload", "server", "DO", "q/s", "µs CPU/q", "runs µs CPU/q", "DO ÷ no DO",
            "round by round", "target"]
    rows, notes = [], []
    for wl, per in summary.items():
        for i, (lab, d) in enumerate(per.items()):
            cpu = d["median_cpu_per_query"]
            ratio = d.get("ratio")
            paired = d.get("paired_ratios") or []
            verdict = ""
            if ratio is not None and d["server"] == "geodns":
                verdict = f"≤ {target}: " + ("PASS" if ratio <= target else "FAIL")
            rows.append([
                wl if i == 0 else "", d["server"], "DO" if d["do"] else "-",
                f"{d['median_qps']:,.0f}" if d["median_qps"] else "-",
                f"{cpu * 1e6:.2f}" if cpu else "-",
                " ".join("FAIL" if c is None else f"{c * 1e6:.2f}"
                         for c in d["runs_cpu_per_query"]),
                f"{ratio:.3f}" if ratio is not None else "",
                f"{d['paired_ratio']:.3f} ({min(paired):.2f}-{max(paired):.2f})" if paired else "",
                verdict,
            ])
            notes += [f"{wl}/{lab}: {w}" for w in d["warnings"]]
            if d["lost"]:
                notes.append(f"{wl}/{lab}: {d['lost']:,} queries lost (no answer within -t)")
        g, u = per.get("geodns no DO"), per.get("geodns-unsigned no DO")
        if g and u and g["median_cpu_per_query"] and u["median_cpu_per_query"]:
            notes.append(f"{wl}: geodns signed zone without DO ÷ unsigned zone: "
                         f"{g['median_cpu_per_query'] / u['median_cpu_per_query']:.3f}")
    run.print_aligned(head, rows, {3, 4, 6}, notes)


def print_flood(rows: list[dict[str, Any]], names: int) -> None:
    print(f"\nflood of {names:,} random names that do not exist (then again from the first), "
          "each server fresh; medians:")
    print(f"  {'server':<16}{'q/s':>10}{'answered':>12}{'µs CPU/q':>10}{'RSS before':>12}"
          f"{'RSS after':>11}   runs µs CPU/q")
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(label(r["server"], r["do"]), []).append(r)
    for lab, rs in by.items():
        q = med([r["qps"] for r in rs if not r["error"]])
        c = med([r["cpu_per_query"] for r in rs])
        b = med([r["rss_before_kb"] for r in rs if r["rss_before_kb"]])
        a = med([r["rss_after_kb"] for r in rs if r["rss_after_kb"]])
        n = med([r["completed"] for r in rs if not r["error"]])
        print(f"  {lab:<16}{q or 0:>10,.0f}{n or 0:>12,.0f}{(c or 0) * 1e6:>10.2f}"
              f"{(b or 0) / 1024:>9.1f} MB{(a or 0) / 1024:>8.1f} MB   "
              + " ".join("FAIL" if r["cpu_per_query"] is None else
                         f"{r['cpu_per_query'] * 1e6:.2f}" for r in rs))
        for w in sorted({w for r in rs for w in r["warnings"]} |
                        {r["error"] for r in rs if r["error"]}):
            print(f"    {w}")


# --- main ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="runs per workload, server and DO")
    ap.add_argument("--duration", type=float, default=5, help="seconds per dnsperf run")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="ecdsap256sha256",
                    help="of the KSK and ZSK (geodns) and of Knot's policy")
    ap.add_argument("--flood-seconds", type=float, default=10,
                    help="seconds of each flood (0: no flood)")
    ap.add_argument("--flood-names", type=int, default=1_000_000,
                    help="distinct random names in the flood's query file")
    ap.add_argument("--check", type=int, default=CHECK_SAMPLE,
                    help="queries of each file checked with dnspython (0: none)")
    ap.add_argument("--json", type=Path, help="also write every run and the summary here")
    ap.add_argument("--seed", type=int, default=1, help="for the query files")
    g = ap.add_argument_group("dnsperf and CPU placement, as run.py")
    g.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    g.add_argument("--timeout", type=float, default=1, help="dnsperf -t")
    g.add_argument("--server-cpus", default="1", help="taskset CPU list ('' = no pinning)")
    g.add_argument("--client-cpus", default="0", help="taskset CPU list ('' = no pinning)")
    args = ap.parse_args()
    args.clients, args.threads, args.max_qps = 1, 1, 0
    workloads = [w for w in args.workloads.split(",") if w]
    servers = [s for s in args.servers.split(",") if s]
    if not set(workloads) <= set(WORKLOADS) or not set(servers) <= set(SERVERS):
        ap.error(f"workloads from {','.join(WORKLOADS)}, servers from {','.join(SERVERS)}")
    if args.rounds < 1 or args.duration <= 0:
        ap.error("--rounds and --duration must be positive")
    for tool in ("dnsperf", "taskset", *(("knotd",) if any("knot" in s for s in servers) else ())):
        if not shutil.which(tool):
            ap.error(f"{tool} not found")
    peers.sigterm_as_interrupt()
    run.ensure_queries(workloads, args.seed, False)

    started = time.time()
    srvs: dict[str, peers.Server] = {}
    results: list[dict[str, Any]] = []
    floods: list[dict[str, Any]] = []
    checks: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="geodns-dnssec-") as tmpdir:
        tmp = Path(tmpdir)
        files: dict[tuple[str, bool], Path] = {}
        for wl in workloads:
            plain = run.QUERY_DIR / f"{wl}.bin"
            files[(wl, False)] = plain
            files[(wl, True)] = tmp / f"{wl}-do.bin"
            write_blob(files[(wl, True)], [set_do(w) for w in read_blob(plain)])
        try:
            for s in servers:
                srv = make(s, args, tmp)
                print(f"starting {s} ...", end=" ", flush=True)
                t0 = time.monotonic()
                start(srv)
                srvs[s] = srv
                print(f"ready on {peers.HOST}:{srv.port} after {time.monotonic() - t0:.1f} s",
                      flush=True)
            print(f"dnssec: {args.algorithm} KSK + ZSK (geodns, knot-signed); "
                  f"{args.rounds} rounds x {args.duration:g} s; servers on CPU "
                  f"{args.server_cpus or '(any)'}, dnsperf on {args.client_cpus or '(any)'}")
            if args.check:
                checks = check_answers(srvs, workloads, files, args.check)
                for wl, per in checks.items():
                    for s, c in per.items():
                        print(f"answers {wl}/{s}: {c['summary']}"
                              + ("" if c["problems"] else ": OK"))
                        for p in c["problems"][:10]:
                            print(f"  answers look wrong: {p}")
            results = rounds(args, srvs, workloads, files)
            for srv in srvs.values():
                srv.cleanup()
            srvs = {}
            if args.flood_seconds > 0 and any(s in servers for s, _ in FLOOD):
                print(f"writing {args.flood_names:,} random names for the flood ...", flush=True)
                msgs = flood_queries(args.flood_names, args.seed)
                ffiles = {False: tmp / "flood.bin", True: tmp / "flood-do.bin"}
                write_blob(ffiles[False], msgs)
                write_blob(ffiles[True], [set_do(w) for w in msgs])
                del msgs
                floods = flood(args, tmp, ffiles, servers)
        except KeyboardInterrupt:
            print("\ninterrupted - reporting what was measured")
        finally:
            for srv in srvs.values():
                srv.cleanup()

    summary = summarize(results)
    print_table(summary, TARGET)
    for wl, per in checks.items():
        for s, c in per.items():
            for p in c["problems"]:
                print(f"  {wl}/{s}: answer check: {p}")
    if floods:
        print_flood(floods, args.flood_names)
    print(f"\ntotal time {time.time() - started:.0f}s")
    if args.json:
        doc = {
            **run.report_head(started, args),
            "target": TARGET,
            "checks": checks,
            "summary": summary,
            "runs": results,
            "flood": floods,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
