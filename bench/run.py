#!/usr/bin/env python3
"""Throughput benchmark: geodns vs Knot, PowerDNS and gdnsd, measured with dnsperf.

Run from anywhere (paths are relative to this file), preferably with the
project's virtualenv so ``python -m geodns`` and dnspython are importable::

    .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --duration 8 --runs 3 --workloads static,nxdomain,mix \\
        --servers geodns,knot,pdns --json /tmp/bench.json
    .venv/bin/python bench/run.py --workloads steered --servers gdnsd,pdns-geoip

See bench/README.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

WORKLOADS = ("static", "nxdomain", "mix", "steered")
SERVERS = ("geodns", "knot", "pdns", "gdnsd", "pdns-geoip", "geodns-fleet")
# What a plain `run.py` runs.  pdns-geoip is left out: it answers only
# `steered`, and by continent rather than by distance.
DEFAULT_WORKLOADS = ("static", "nxdomain", "mix", "steered")
DEFAULT_SERVERS = ("geodns", "knot", "pdns", "gdnsd")
# Which workloads each server can answer.  Knot and PowerDNS's bind backend
# cannot steer; the pdns-geoip zone holds only the steered name (peers.py).
SERVES = {
    "geodns": {"static", "nxdomain", "mix", "steered"},
    "geodns-fleet": {"static", "nxdomain", "mix", "steered"},
    "knot": {"static", "nxdomain", "mix"},
    "pdns": {"static", "nxdomain", "mix"},
    "gdnsd": {"static", "nxdomain", "mix", "steered"},
    "pdns-geoip": {"steered"},
}
QUERY_DIR = HERE / "queries"

# Expected share of each RCODE per workload (sanity check of the answers, not
# of their content).  A server that answers e.g. SERVFAIL or REFUSED is fast
# for the wrong reason; we flag it in the table.
EXPECTED_RCODES = {
    "static": {"NOERROR": 1.0},
    "nxdomain": {"NXDOMAIN": 1.0},
    "mix": {"NOERROR": 0.85, "NXDOMAIN": 0.15},
    "steered": {"NOERROR": 1.0},
}
RCODE_TOLERANCE = 0.02
STEERED_SAMPLE = 20  # ECS queries checked one by one with dnspython per server


@dataclass
class Measurement:
    server: str
    workload: str
    run: int
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    avg_latency_ms: float | None = None
    server_cpu: float | None = None  # CPU seconds of the server / wall seconds
    client_cpu: float | None = None  # same for dnsperf
    cpu_busy: list[float] = field(default_factory=list)  # whole machine, per CPU
    wall: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # answers look wrong
    notes: list[str] = field(default_factory=list)


# --- dnsperf ----------------------------------------------------------------

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_dnsperf(text: str) -> dict[str, object]:
    def grab(label: str) -> float | None:
        m = re.search(rf"^\s*{label}:\s+{_NUM}", text, re.M)
        return float(m.group(1)) if m else None

    out: dict[str, object] = {
        "sent": grab("Queries sent"),
        "completed": grab("Queries completed"),
        "lost": grab("Queries lost"),
        "qps": grab("Queries per second"),
        "latency": grab("Average Latency \\(s\\)"),
    }
    rc: dict[str, int] = {}
    m = re.search(r"^\s*Response codes:\s+(.*)$", text, re.M)
    if m:
        for name, count in re.findall(r"([A-Z]+) ([0-9]+) \(", m.group(1)):
            rc[name] = int(count)
    out["rcodes"] = rc
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process (all threads) from /proc, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14, 15 of stat(5)


def cpu_times() -> list[tuple[float, float]]:
    """(busy, total) jiffies per CPU from /proc/stat; idle = idle + iowait."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu[0-9]+ ", line):
            v = [float(x) for x in line.split()[1:]]
            total = sum(v[:8])  # user nice system idle iowait irq softirq steal
            out.append((total - v[3] - v[4], total))
    return out


def cpu_busy(t0: list[tuple[float, float]], t1: list[tuple[float, float]]) -> list[float]:
    return [
        (b1 - b0) / (n1 - n0) if n1 > n0 else 0.0
        for (b0, n0), (b1, n1) in zip(t0, t1, strict=False)
    ]


def dnsperf_cmd(args: argparse.Namespace, port: int, qfile: Path) -> list[str]:
    cmd = [
        "dnsperf",
        "-s",
        peers.HOST,
        "-p",
        str(port),
        "-d",
        str(qfile),
        "-B",
        "-l",
        str(args.duration),
        "-c",
        str(args.clients),
        "-T",
        str(args.threads),
        "-q",
        str(args.outstanding),
        "-t",
        str(args.timeout),
        "-O",
        "suppress=timeouts,congestion,sendfailed,sockready,unexpected",
    ]
    if args.max_qps:
        cmd += ["-Q", str(args.max_qps)]
    if args.client_cpus:
        cmd = ["taskset", "-c", args.client_cpus, *cmd]
    return cmd


def measure(
    args: argparse.Namespace,
    srv: peers.Server,
    workload: str,
    run: int,
    duration: float | None = None,
    qfile: Path | None = None,
    expected: dict[str, float] | None = None,
    dnsperf_args: Sequence[str] = (),
) -> Measurement:
    """One dnsperf run of ``workload`` (the file ``qfile``, by default the
    workload's in ``QUERY_DIR``) against ``srv``; the RCODEs are checked
    against ``expected`` (default: the workload's ``EXPECTED_RCODES``).
    ``dnsperf_args`` are added to dnsperf's (``-n 1``: the file once)."""
    return measure_together(args, [srv], workload, run, duration, qfile, expected,
                            dnsperf_args)[0]


def measure_together(
    args: argparse.Namespace,
    servers: Sequence[peers.Server],
    workload: str,
    run: int,
    duration: float | None = None,
    qfile: Path | None = None,
    expected: dict[str, float] | None = None,
    dnsperf_args: Sequence[str] = (),
) -> list[Measurement]:
    """:func:`measure` for several servers at once: a dnsperf each, all
    started together, so that each server's CPU per query comes from the
    same seconds of the machine (``steer_cost.py --paired``).  The servers
    then share their CPUs and the dnsperfs theirs; ``client_cpu`` is all the
    dnsperfs' together."""
    ms = [Measurement(server=srv.name, workload=workload, run=run) for srv in servers]
    qfile = qfile or QUERY_DIR / f"{workload}.bin"
    if expected is None:
        expected = EXPECTED_RCODES.get(workload, {})
    a = argparse.Namespace(**vars(args))
    if duration is not None:
        a.duration = duration
    live = []
    for m, srv in zip(ms, servers, strict=True):
        if not srv.alive():
            m.error = "server not running"
            continue
        assert srv.proc is not None
        moved = srv.enforce_affinity()
        if moved and run >= 0:
            m.notes.append("re-pinned threads: " + ", ".join(moved))
        live.append((m, srv, srv.proc.pid))
    if not live:
        return ms
    cpu0 = [proc_cpu_seconds(pid) for _, _, pid in live]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    st0 = cpu_times()
    t0 = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _, srv, _ in live:
            procs.append(subprocess.Popen([*dnsperf_cmd(a, srv.port, qfile), *dnsperf_args],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outs = []
        for (m, _, _), p in zip(live, procs, strict=True):
            try:
                out, _ = p.communicate(timeout=max(1.0, t0 + a.duration + a.timeout + 30
                                                   - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate(timeout=10)
                m.error = "dnsperf did not finish in time"
            outs.append(out)
    except BaseException:  # Ctrl-C / SIGTERM: do not leave dnsperf running
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        raise
    wall = time.monotonic() - t0
    busy = cpu_busy(st0, cpu_times())
    cpu1 = [proc_cpu_seconds(pid) for _, _, pid in live]
    # the dnsperfs are the only children reaped in between (taskset execs them).
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / max(wall, 1e-9)
    for (m, srv, _), p, out, c0, c1 in zip(live, procs, outs, cpu0, cpu1, strict=True):
        m.wall = wall
        m.cpu_busy = busy
        m.client_cpu = client
        if c0 is not None and c1 is not None:
            m.server_cpu = (c1 - c0) / max(wall, 1e-9)
        _read_dnsperf(m, out.decode(errors="replace"), p.returncode, expected)
        if not srv.alive():
            m.error = "server died during the run"
    return ms


def _read_dnsperf(m: Measurement, text: str, returncode: int,
                  expected: dict[str, float]) -> None:
    """What one dnsperf run said, into m; its RCODEs checked against expected."""
    r = parse_dnsperf(text)
    if returncode != 0 or r["qps"] is None:
        m.error = m.error or f"dnsperf exit {returncode}: " + " | ".join(
            text.strip().splitlines()[-5:]
        )
        return
    m.qps = float(r["qps"])  # type: ignore[arg-type]
    m.sent = int(r["sent"] or 0)  # type: ignore[call-overload]
    m.completed = int(r["completed"] or 0)  # type: ignore[call-overload]
    m.lost = int(r["lost"] or 0)  # type: ignore[call-overload]
    m.rcodes = r["rcodes"]  # type: ignore[assignment]
    if r["latency"] is not None:
        m.avg_latency_ms = float(r["latency"]) * 1000  # type: ignore[arg-type]
    total = sum(m.rcodes.values())
    for rcode, share in expected.items():
        got = m.rcodes.get(rcode, 0) / total if total else 0.0
        if abs(got - share) > RCODE_TOLERANCE:
            m.warnings.append(f"{rcode} {got:.1%} (expected {share:.0%})")
    for rcode in m.rcodes:
        if rcode not in expected:
            m.warnings.append(f"unexpected {rcode} x{m.rcodes[rcode]}")


def per_query(m: Measurement) -> float | None:
    """Server CPU seconds per answered query."""
    if m.error or not m.completed or m.server_cpu is None:
        return None
    return m.server_cpu * m.wall / m.completed


# --- query files ---------------------------------------------------------------


def ensure_queries(workloads: list[str], seed: int, regenerate: bool) -> None:
    missing = [w for w in workloads if regenerate or not (QUERY_DIR / f"{w}.bin").exists()]
    if not missing:
        return
    print(f"generating query files for {','.join(missing)} (seed {seed}) ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            str(HERE / "gen_queries.py"),
            "--out",
            str(QUERY_DIR),
            "--seed",
            str(seed),
            "--workloads",
            ",".join(missing),
        ],
        check=True,
        timeout=600,
    )


# --- steered answers ----------------------------------------------------------------


def _nearest_pops(addrs: list[str], db: Path | None) -> dict[str, str | None]:
    """The PoP nearest to each address's GeoIP location (great circle), or None
    when the database has no coordinates for it.  Empty if maxminddb is missing."""
    import math

    try:
        import maxminddb
    except ImportError:
        return {}
    out: dict[str, str | None] = {}
    with maxminddb.open_database(str(db)) as reader:
        for a in addrs:
            rec = reader.get(a)
            loc = rec.get("location") if isinstance(rec, dict) else None
            if not isinstance(loc, dict) or "latitude" not in loc:
                out[a] = None
                continue
            la1, lo1 = math.radians(loc["latitude"]), math.radians(loc["longitude"])

            def dist(pop: str, la1: float = la1, lo1: float = lo1) -> float:
                lat, lon, _ = peers.POPS[pop]
                la2, lo2 = math.radians(lat), math.radians(lon)
                h = (
                    math.sin((la2 - la1) / 2) ** 2
                    + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
                )
                return 2 * math.asin(min(1.0, math.sqrt(h)))

            out[a] = min(peers.POPS, key=dist)
    return out


def check_steered(
    srv: peers.Server, db: Path | None, n: int = STEERED_SAMPLE, seed: int = 1
) -> tuple[list[str], str]:
    """Send ``n`` queries from the steered file to ``srv`` one by one with dnspython.

    Every answer must be NOERROR with AA, an A RRset for the steered name
    whose addresses are PoP addresses, and an ECS option that echoes the
    query's family, source prefix and address and reports a scope.  Not
    all answers may name the same PoP and not all scopes may be 0 (either
    means the server ignored ECS).  Returns (problems, one-line summary).
    The agreement with the PoP nearest to the GeoIP location (maxminddb)
    is reported, not required: pdns-geoip picks by continent.
    """
    try:
        import dns.edns
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype
    except ImportError:
        return [], "not checked (dnspython not importable)"
    from gen_queries import STEERED_NAME, read_blob

    msgs = read_blob(QUERY_DIR / "steered.bin")
    sample = random.Random(seed).sample(msgs, min(n, len(msgs)))
    pop_of = {addr: name for name, (_lat, _lon, addr) in peers.POPS.items()}
    problems: list[str] = []
    answered: dict[str, str] = {}  # ECS address -> PoP
    scopes: list[int] = []
    for wire in sample:
        q = dns.message.from_wire(wire)
        (ecs_q,) = [o for o in q.options if isinstance(o, dns.edns.ECSOption)]
        where = f"{ecs_q.address}/{ecs_q.srclen}"
        try:
            r = dns.query.udp(q, peers.HOST, port=srv.port, timeout=2)
        except Exception as exc:  # timeout, bad response ...
            problems.append(f"{where}: {type(exc).__name__} {exc}")
            continue
        bad = []
        if r.rcode() != dns.rcode.NOERROR:
            bad.append(dns.rcode.to_text(r.rcode()))
        if not r.flags & dns.flags.AA:
            bad.append("no AA")
        addrs = sorted(
            rd.address
            for rrset in r.answer
            if rrset.name.to_text() == STEERED_NAME and rrset.rdtype == dns.rdatatype.A
            for rd in rrset
        )
        pops = {pop_of.get(a) for a in addrs}
        if not addrs or None in pops or len(pops) != 1:
            bad.append(f"answer {addrs or 'empty'} is not one PoP's address")
        else:
            answered[ecs_q.address] = pops.pop()  # type: ignore[assignment]
        ecs_r = [o for o in r.options if isinstance(o, dns.edns.ECSOption)]
        if not ecs_r:
            bad.append("no ECS option in the answer")
        else:
            e = ecs_r[0]
            if (e.family, e.srclen, e.address) != (ecs_q.family, ecs_q.srclen, ecs_q.address):
                bad.append(f"ECS echo {e.address}/{e.srclen} family {e.family}")
            scopes.append(e.scopelen)
        if bad:
            problems.append(f"{where}: " + ", ".join(bad))
    failed = len(problems)  # queries with a bad answer
    if len(answered) >= 5 and len(set(answered.values())) == 1:
        problems.append(f"every answer is {next(iter(answered.values()))}: ECS ignored?")
    if scopes and max(scopes) == 0:
        problems.append("ECS scope 0 in every answer: ECS ignored?")
    parts = [f"{len(sample) - failed}/{len(sample)} answers OK"]
    if answered:
        by_pop = {p: list(answered.values()).count(p) for p in peers.POPS}
        parts.append("PoPs " + " ".join(f"{p}:{c}" for p, c in by_pop.items() if c))
    if scopes:
        parts.append(f"ECS scope /{min(scopes)}../{max(scopes)}")
    nearest = _nearest_pops(list(answered), db) if db else {}
    located = {a: p for a, p in nearest.items() if p is not None}
    if located:
        same = sum(answered[a] == p for a, p in located.items())
        parts.append(f"nearest PoP by GeoIP distance for {same}/{len(located)} located")
    return problems, ", ".join(parts)


# --- report --------------------------------------------------------------------


def fmt_qps(v: float) -> str:
    return f"{v:,.0f}"


def summarize(
    results: list[Measurement],
    plan: dict[str, list[str]],
    checks: dict[tuple[str, str], tuple[list[str], str]] | None = None,
) -> dict[str, dict[str, dict[str, object]]]:
    """Per workload and server (only the servers in ``plan[workload]``)."""
    checks = checks or {}
    summary: dict[str, dict[str, dict[str, object]]] = {}
    for wl, servers in plan.items():
        summary[wl] = {}
        for s in servers:
            ms = [m for m in results if m.workload == wl and m.server == s]
            ok = [m for m in ms if m.error is None]
            cpus = [m.server_cpu for m in ok if m.server_cpu is not None]
            ccpus = [m.client_cpu for m in ok if m.client_cpu is not None]
            busy = [m.cpu_busy for m in ok if m.cpu_busy]
            # Little's law: queries in flight = throughput x latency.
            inflight = [m.qps * m.avg_latency_ms / 1000 for m in ok if m.avg_latency_ms]
            summary[wl][s] = {
                "median_qps": statistics.median([m.qps for m in ok]) if ok else None,
                "runs_qps": [m.qps if m.error is None else None for m in ms],
                "lost": sum(m.lost for m in ok),
                "sent": sum(m.sent for m in ok),
                "median_server_cpu": statistics.median(cpus) if cpus else None,
                "median_dnsperf_cpu": statistics.median(ccpus) if ccpus else None,
                "median_in_flight": statistics.median(inflight) if inflight else None,
                "median_cpu_busy": [statistics.median(c) for c in zip(*busy, strict=True)]
                if busy
                else [],
                "median_latency_ms": statistics.median(
                    [m.avg_latency_ms for m in ok if m.avg_latency_ms is not None]
                )
                if ok
                else None,
                "errors": [m.error for m in ms if m.error],
                "warnings": sorted({w for m in ms for w in m.warnings})
                + checks.get((wl, s), ([], ""))[0],
                "notes": sorted({n for m in ms for n in m.notes}),
            }
            if (wl, s) in checks:
                summary[wl][s]["answer_check"] = checks[(wl, s)][1]
    return summary


def print_table(summary: dict[str, dict[str, dict[str, object]]], outstanding: int) -> None:
    head = [
        "workload",
        "server",
        "median q/s",
        "runs q/s",
        "lost",
        "srv CPU",
        "CPUs busy",
        "lat ms",
        "in flight",
        "geodns ÷ it",
    ]
    rows: list[list[str]] = []
    notes: list[str] = []
    for wl, per in summary.items():
        g = per.get("geodns", {}).get("median_qps") if "geodns" in per else None
        for i, (s, d) in enumerate(per.items()):
            med = d["median_qps"]
            runs = " ".join("FAIL" if v is None else fmt_qps(v) for v in d["runs_qps"])  # type: ignore[attr-defined]
            lost = d["lost"]
            sent = d["sent"] or 0
            lost_s = f"{lost:,}" + (f" ({lost / sent:.2%})" if lost and sent else "")  # type: ignore[operator]
            cpu = d["median_server_cpu"]
            busy_s = "/".join(f"{b * 100:.0f}" for b in d["median_cpu_busy"])  # type: ignore[attr-defined]
            lat = d["median_latency_ms"]
            inf = d["median_in_flight"]
            ratio = ""
            if s != "geodns" and g and med:
                ratio = f"{g / med:.3f}"  # type: ignore[operator]
            rows.append(
                [
                    wl if i == 0 else "",
                    s,
                    fmt_qps(med) if med else "-",
                    runs,
                    lost_s,  # type: ignore[arg-type]
                    f"{cpu:.0%}" if cpu is not None else "-",  # type: ignore[str-format]
                    busy_s or "-",
                    f"{lat:.2f}" if lat is not None else "-",  # type: ignore[str-format]
                    f"{inf:.0f}" if inf is not None else "-",  # type: ignore[str-format]
                    ratio,
                ]
            )
            for e in d["errors"]:  # type: ignore[attr-defined]
                notes.append(f"{wl}/{s}: ERROR {e}")
            for w in d["warnings"]:  # type: ignore[attr-defined]
                notes.append(f"{wl}/{s}: answers look wrong: {w}")
            for n in d["notes"]:  # type: ignore[attr-defined]
                notes.append(f"{wl}/{s}: note: {n}")
            if inf is not None and inf < 0.8 * outstanding:  # type: ignore[operator]
                notes.append(
                    f"{wl}/{s}: only {inf:.0f} of {outstanding} queries in flight on average: "
                    "dnsperf, not the server, was probably the limit (the q/s is a lower bound)"
                )
    print_aligned(head, rows, {2, 4, 5, 6, 7, 8, 9}, notes)


def report_head(started: float, args: argparse.Namespace) -> dict[str, object]:
    """What every benchmark's JSON report starts with: when, where, with what."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def print_aligned(head: list[str], rows: list[list[str]], right: set[int],
                  notes: list[str]) -> None:
    """A table in columns (those in ``right`` aligned right), then the notes."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    print()
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if notes:
        print()
        for n in notes:
            print("  " + n)


# --- main -----------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark geodns against Knot, PowerDNS and gdnsd with dnsperf.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--duration", type=float, default=8, help="seconds per dnsperf run (-l)")
    ap.add_argument("--runs", type=int, default=3, help="runs per workload and server")
    ap.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"comma-separated, from {','.join(WORKLOADS)}",
    )
    ap.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, from {','.join(SERVERS)}; a server runs only the "
        "workloads it can answer",
    )
    ap.add_argument(
        "--geoip-db",
        type=Path,
        default=None,
        help="GeoIP2 City database for gdnsd and pdns-geoip (default: the GeoLite2-City.mmdb "
        "of maxminddb-geolite2, found through this interpreter)",
    )
    ap.add_argument(
        "--geodns-cmd",
        default=None,
        help="command line for geodns (shell words; {port} {host} {config} {zones} "
        "are substituted). Default: PYTHON -m geodns serve --config "
        "bench/geodns-bench.yaml --listen 127.0.0.1:{port} --zones bench/zone/yaml",
    )
    ap.add_argument(
        "--geodns-python",
        default=None,
        help="interpreter for the default geodns command (default: this interpreter)",
    )
    ap.add_argument("--json", type=Path, help="also write all results to this JSON file")
    ap.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of unmeasured load per server before each workload",
    )
    g = ap.add_argument_group("dnsperf / CPU placement (see README for why)")
    g.add_argument("--clients", type=int, default=1, help="dnsperf -c")
    g.add_argument("--threads", type=int, default=1, help="dnsperf -T")
    g.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    g.add_argument("--timeout", type=float, default=1, help="dnsperf -t (seconds)")
    g.add_argument("--max-qps", type=int, default=0, help="dnsperf -Q (0 = unlimited)")
    g.add_argument(
        "--server-cpus", default="1", help="taskset CPU list for the servers ('' = no pinning)"
    )
    g.add_argument(
        "--client-cpus", default="0", help="taskset CPU list for dnsperf ('' = no pinning)"
    )
    ap.add_argument("--seed", type=int, default=1, help="seed for generating query files")
    ap.add_argument("--regenerate", action="store_true", help="rewrite the query files first")
    args = ap.parse_args()
    peers.sigterm_as_interrupt()

    workloads = [w for w in args.workloads.split(",") if w]
    servers = [s for s in args.servers.split(",") if s]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    if args.runs < 1 or args.duration <= 0:
        ap.error("--runs and --duration must be positive")
    for tool in ["dnsperf", *(["taskset"] if args.server_cpus or args.client_cpus else [])]:
        if not shutil.which(tool):
            ap.error(f"{tool} not found")
    ncpu = os.cpu_count() or 1
    for spec in (args.server_cpus, args.client_cpus):
        if spec and any(int(c) >= ncpu for c in re.findall(r"\d+", spec)):
            print(
                f"note: CPU list {spec!r} not available on {ncpu} CPUs; not pinning",
                file=sys.stderr,
            )
            args.server_cpus = args.client_cpus = ""
            break

    # Which servers run which workload; a server that can answer none of the
    # chosen workloads is not started at all.
    plan = {wl: [s for s in servers if wl in SERVES[s]] for wl in workloads}
    for wl in workloads:
        skipped = [s for s in servers if wl not in SERVES[s]]
        if skipped:
            print(f"note: {wl}: skipping {', '.join(skipped)} (cannot answer this workload)")
    needed = [s for s in servers if any(s in plan[wl] for wl in workloads)]
    for s in servers:
        if s not in needed:
            print(f"note: not starting {s}: it answers none of {','.join(workloads)}")
    plan = {wl: ss for wl, ss in plan.items() if ss}
    if not plan:
        ap.error("no chosen server answers any chosen workload")

    ensure_queries(list(plan), args.seed, args.regenerate)

    geodns_cmd = shlex.split(args.geodns_cmd) if args.geodns_cmd else None
    srvs: dict[str, peers.Server] = {}
    results: list[Measurement] = []
    checks: dict[tuple[str, str], tuple[list[str], str]] = {}
    geoip_db: Path | None = None
    started = time.time()
    try:
        if any(s in ("gdnsd", "pdns-geoip") for s in needed) or "steered" in plan:
            try:
                geoip_db = peers.geoip_database(args.geoip_db)
                print(f"GeoIP database: {geoip_db}")
            except peers.ServerError as exc:
                if any(s in ("gdnsd", "pdns-geoip") for s in needed):
                    print(exc, file=sys.stderr)
                    return 2
        for s in needed:
            srv = peers.make_server(
                s,
                cpus=args.server_cpus or None,
                geodns_cmd=geodns_cmd,
                python=args.geodns_python,
                geoip_db=geoip_db,
            )
            print(f"starting {s} ...", end=" ", flush=True)
            try:
                srv.start()
            except peers.ServerError as exc:
                srv.cleanup()
                print("FAILED")
                print(exc, file=sys.stderr)
                return 2
            srvs[s] = srv
            print(f"ready on {peers.HOST}:{srv.port}", flush=True)

        dp = " ".join(dnsperf_cmd(args, 0, Path("FILE"))).replace("-p 0", "-p PORT")
        print(f"dnsperf: {dp}")
        print(
            f"servers pinned to CPU {args.server_cpus or '(none)'}; "
            f"{args.runs} runs x {args.duration:g}s per workload and server"
        )

        for s in plan.get("steered", []):
            problems, text = check_steered(srvs[s], geoip_db)
            checks[("steered", s)] = (problems, text)
            print(f"steered answers of {s}: {text}", flush=True)
            for problem in problems:
                print(f"  answers look wrong: {problem}", flush=True)

        sw = max(7, *(len(s) + 1 for s in needed))  # name column of the progress lines
        for wl, wl_servers in plan.items():
            for s in wl_servers:  # warm-up: fill caches, let Python settle, unmeasured
                if args.warmup > 0:
                    measure(args, srvs[s], wl, -1, duration=args.warmup)
            for run in range(args.runs):
                # Rotate the order each run so drift and noise spread evenly.
                k = run % len(wl_servers)
                order = wl_servers[k:] + wl_servers[:k]
                for s in order:
                    srv = srvs[s]
                    if not srv.alive():
                        print(f"  {s} is not running - restarting it", flush=True)
                        srv.stop()
                        srv.start()
                    m = measure(args, srv, wl, run)
                    results.append(m)
                    status = m.error or (
                        f"{fmt_qps(m.qps)} q/s, lost {m.lost}, CPU server "
                        f"{m.server_cpu or 0:.0%}, CPUs busy "
                        + "/".join(f"{b:.0%}" for b in m.cpu_busy)
                    )
                    print(
                        f"  {wl:<9} run {run + 1}/{args.runs} {s:<{sw}} {status}"
                        + (f"  [{'; '.join(m.warnings)}]" if m.warnings else ""),
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("\ninterrupted - reporting what was measured")
    finally:
        for srv in srvs.values():
            srv.cleanup()

    summary = summarize(results, plan, checks)
    print_table(summary, args.outstanding)
    print(f"\ntotal time {time.time() - started:.0f}s")
    if args.json:
        doc = {
            **report_head(started, args),
            "dnsperf_cmd": dp,
            "plan": plan,
            "geoip_database": str(geoip_db) if geoip_db else None,
            "summary": summary,
            "runs": [asdict(m) for m in results],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
