#!/usr/bin/env python3
"""Zones: how soon geodns, Knot and NSD serve a large zone, an edit in it and
many zones, and how much memory they hold for them (issue #12).

Each server is given the same data, geodns as YAML, Knot and NSD as BIND
files written from the same list of records, and runs alone, with one worker,
in a temporary directory, on 127.0.0.1 at a free port:

* **tiny**: one zone of 2 records; the baseline for memory per record.
* **big**: one zone of ``--records`` records (A, AAAA, TXT and MX in turn, the
  shape of ``sizing.py``'s zones).  *first answer*: from just before the
  server process is started to the arrival of the first correct answer for
  the zone's last name (a dnspython query over UDP every 10 ms).  *RSS*: once
  serving, 0.5 s later.  Then ``--edits`` one-record edits: the zone file is
  written elsewhere and renamed over the served one (SOA serial + 1, one A
  record changed); *edit* is from the rename to the arrival of the first
  answer with the new address.  geodns finds the change by polling its zones
  directory every ``--reload-interval`` (0.1 s here; its default is 1 s);
  Knot and NSD are told, and the time includes the command
  (``knotc zone-reload ZONE``, ``nsd-control reload ZONE``).
* **many**: ``--zones`` zones of ``--zone-records`` records each.  *first
  answer* for the last zone's last name, then *all*: when a sweep that asks
  every zone once (again until each answers) has found them all served,
  an upper bound that includes the sweep; then RSS.

geodns's own modules are compiled to bytecode (``python -m compileall -q geodns``, into
``geodns/__pycache__``) before any server starts, as installing a wheel does: with an editable
install and ``PYTHONDONTWRITEBYTECODE`` set, every start would otherwise compile its ~90 modules
from source again (0.3-0.5 s here), which an installed geodns never does.  ``--no-precompile``
leaves that out (the start as it then is).

Memory: ``VmRSS`` of the serving process (``/proc/PID/status``): geodns's one
process (``workers: 1``), knotd, and for NSD the largest of its processes,
which is the server child that answers (it shares the zone data with the
main process that forked it; NSD's xfrd is a third process).  *PSS* is the
sum of the proportional set size of every process in the server's process
group, so pages shared by NSD's processes are counted once.  Memory per
record is (RSS with the zones - RSS with the tiny zone) / records.

    .venv/bin/python bench/zones.py                          # full sizes, 2 runs
    .venv/bin/python bench/zones.py --records 5000 --zones 200 --runs 1   # quick look
    .venv/bin/python bench/zones.py --servers knot,nsd --parts big
    .venv/bin/python bench/zones.py --profile                # cProfile of geodns building the big zone
    .venv/bin/python bench/zones.py --in-process             # its memory per record in one process, by type

Reuses ``knot_config``, ``nsd_config`` and ``free_port`` from
``tests/refservers.py`` (the reference servers of the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.refservers import free_port, knot_config, nsd_config  # noqa: E402

HOST = "127.0.0.1"
POLL = 0.010  # seconds between queries while waiting for an answer
SETTLE = 0.5  # seconds between serving and reading the memory
SERVERS = ("geodns", "knot", "nsd")
PARTS = ("tiny", "big", "many")

Record = tuple[str, str, str]  # owner relative to the origin, type, rdata (presentation)


# -- the data ------------------------------------------------------------------------
def records(n: int) -> list[Record]:
    """``h0`` .. ``h{n-1}``, one record each: A, AAAA, TXT, MX in turn."""
    out: list[Record] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append((f"h{i}", "A", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"))
        elif kind == 1:
            out.append((f"h{i}", "AAAA", f"2001:db8::{i:x}"))
        elif kind == 2:
            out.append((f"h{i}", "TXT", f"v=spf1 include:_spf{i}.example.net ~all"))
        else:
            out.append((f"h{i}", "MX", f"10 mail{i}.example.net."))
    return out


SOA_TIMES = (7200, 3600, 1209600, 300)  # refresh, retry, expire, minimum
FIXED: list[Record] = [("@", "NS", "ns1"), ("ns1", "A", "192.0.2.53")]


def bind_text(origin: str, serial: int, recs: Sequence[Record]) -> str:
    lines = [f"$ORIGIN {origin}", "$TTL 3600",
             "@ SOA ns1 hostmaster {} {} {} {} {}".format(serial, *SOA_TIMES)]
    for owner, rtype, value in [*FIXED, *recs]:
        lines.append(f'{owner} {rtype} "{value}"' if rtype == "TXT" else
                     f"{owner} {rtype} {value}")
    return "\n".join(lines) + "\n"


def yaml_text(origin: str, serial: int, recs: Sequence[Record]) -> str:
    refresh, retry, expire, minimum = SOA_TIMES
    lines = [f"origin: {origin}", "ttl: 3600",
             f"soa: {{mname: ns1, rname: hostmaster, serial: {serial}, refresh: {refresh}, "
             f"retry: {retry}, expire: {expire}, minimum: {minimum}}}",
             "records:", '  "@": {NS: [ns1]}', "  ns1: {A: 192.0.2.53}"]
    for owner, rtype, value in recs:
        if rtype == "MX":
            pref, exchange = value.split()
            rec = f"{{MX: [{{preference: {pref}, exchange: {exchange}}}]}}"
        else:
            rec = f'{{{rtype}: "{value}"}}'
        lines.append(f"  {owner}: {rec}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Dataset:
    """Zones written in both formats: ``yaml/ORIGINyaml`` and ``bind/ORIGINzone``."""

    root: Path
    origins: tuple[str, ...]
    recs: tuple[Record, ...]  # the same records in every zone

    def yaml_path(self, origin: str) -> Path:
        return self.root / "yaml" / f"{origin}yaml"

    def bind_path(self, origin: str) -> Path:
        return self.root / "bind" / f"{origin}zone"

    @property
    def records(self) -> int:
        return len(self.origins) * len(self.recs)

    def probe(self) -> tuple[str, str, str]:
        """The last zone's last name: (qname, type, rdata)."""
        owner, rtype, value = self.recs[-1]
        return f"{owner}.{self.origins[-1]}", rtype, value


def write_dataset(root: Path, zones: int, per_zone: int, prefix: str) -> Dataset:
    (root / "yaml").mkdir(parents=True)
    (root / "bind").mkdir()
    width = len(str(zones - 1))
    origins = tuple(f"{prefix}{z:0{width}d}.example." for z in range(zones))
    recs = tuple(records(per_zone))
    ds = Dataset(root, origins, recs)
    ytext, btext = yaml_text("@ORIGIN@", 1, recs), bind_text("@ORIGIN@", 1, recs)
    for origin in origins:
        ds.yaml_path(origin).write_text(ytext.replace("@ORIGIN@", origin))
        ds.bind_path(origin).write_text(btext.replace("@ORIGIN@", origin))
    return ds


def copy_dataset(ds: Dataset, root: Path) -> Dataset:
    shutil.copytree(ds.root, root)
    return Dataset(root, ds.origins, ds.recs)


# -- asking ----------------------------------------------------------------------------
class BenchError(RuntimeError):
    pass


def canonical(origin: str, rtype: str, value: str) -> frozenset[str]:
    text = f'"{value}"' if rtype == "TXT" else value
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text,
                             origin=dns.name.from_text(origin))
    return frozenset({rd.to_text()})


def correct(msg: dns.message.Message, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
            want: frozenset[str]) -> bool:
    if msg.rcode() != dns.rcode.NOERROR or not msg.flags & dns.flags.AA:
        return False
    for rrset in msg.answer:
        if rrset.name == qname and rrset.rdtype == rdtype:
            return frozenset(rd.to_text() for rd in rrset) == want
    return False


def wait_answer(port: int, qname: str, rtype: str, want: frozenset[str], since: float,
                limit: float, alive: Callable[[], bool]) -> float:
    """Seconds from ``since`` to the arrival of the first correct answer,
    asking every ``POLL`` s (a new query id each time, any of them may be
    answered).  Raises BenchError after ``limit`` s or if the server dies."""
    name, rdtype = dns.name.from_text(qname), dns.rdatatype.from_text(rtype)
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    base = query.to_wire()
    sent: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        sock.setblocking(False)
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now - since > limit:
                raise BenchError(f"no correct answer for {qname} {rtype} within {limit:g} s")
            if now >= next_send:
                if not alive():
                    raise BenchError("the server exited")
                qid = random.randrange(65536)
                sent.add(qid)
                with contextlib.suppress(ConnectionRefusedError, BlockingIOError):
                    sock.send(struct.pack("!H", qid) + base[2:])
                next_send = max(next_send + POLL, now)
            ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            if not ready:
                continue
            try:
                data = sock.recv(65535)
            except (ConnectionRefusedError, BlockingIOError):  # ICMP for an earlier query
                continue
            arrived = time.monotonic()
            try:
                msg = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            if msg.id in sent and correct(msg, name, rdtype, want):
                return arrived - since


def sweep(port: int, ds: Dataset, since: float, limit: float) -> float:
    """Seconds from ``since`` until every zone of ``ds`` has answered its last
    name correctly, asking zone after zone and again those that did not."""
    owner, rtype, value = ds.recs[-1]
    rdtype = dns.rdatatype.from_text(rtype)
    pending = list(ds.origins)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        sock.settimeout(0.5)
        while pending:
            if time.monotonic() - since > limit:
                raise BenchError(f"{len(pending)} zones not served within {limit:g} s")
            left = []
            for origin in pending:
                name = dns.name.from_text(f"{owner}.{origin}")
                query = dns.message.make_query(name, rdtype)
                query.flags &= ~dns.flags.RD
                ok = False
                try:
                    sock.send(query.to_wire())
                    while True:
                        msg = dns.message.from_wire(sock.recv(65535))
                        if msg.id == query.id:
                            ok = correct(msg, name, rdtype, canonical(origin, rtype, value))
                            break
                except (OSError, dns.exception.DNSException):
                    pass
                if not ok:
                    left.append(origin)
            pending = left
            if pending:
                time.sleep(POLL)
    return time.monotonic() - since


# -- memory ------------------------------------------------------------------------------
def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pgid: int) -> float:
    """CPU seconds (user + system, with reaped children's) of the group's processes."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pgid: int) -> tuple[float, float, int]:
    """(largest VmRSS in the group, sum of Pss over the group, processes), MB."""
    pids = group_pids(pgid)
    rss = max((_kb(f"/proc/{p}/status", "VmRSS:") for p in pids), default=0)
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss / 1024, pss / 1024, len(pids)


# -- servers -----------------------------------------------------------------------------
class Server:
    """One server process on one dataset; ``start`` returns the start time."""

    name = "server"
    fmt = "bind"

    def __init__(self, work: Path, ds: Dataset, python: str, reload_interval: float) -> None:
        self.dir = work
        self.ds = ds
        self.python = python
        self.reload_interval = reload_interval
        self.port = free_port(HOST)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "server.log"

    def zone_path(self, origin: str) -> Path:
        return self.ds.yaml_path(origin) if self.fmt == "yaml" else self.ds.bind_path(origin)

    def prepare(self) -> list[str]:
        raise NotImplementedError

    def tell_reload(self, origin: str) -> None:
        """Make the server read ``origin``'s file again (geodns polls by itself)."""

    def start(self) -> float:
        cmd = self.prepare()
        with open(self.log, "wb") as log:
            began = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=ROOT if self.name == "geodns" else self.dir,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return began

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (p.poll() is None or group_pids(p.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if p.poll() is None or group_pids(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stdout}"
                             f"{done.stderr}")


class GeoDNS(Server):
    name = "geodns"
    fmt = "yaml"

    def prepare(self) -> list[str]:
        cfg = self.dir / "geodns.yaml"
        cfg.write_text(f"listen: ['{HOST}:{self.port}']\nzones: {self.ds.root / 'yaml'}\n"
                       f"workers: 1\nreload: {{interval: {self.reload_interval}}}\n")
        return [self.python, "-m", "geodns", "serve", "--config", str(cfg), "--lameduck", "0"]


class Knot(Server):
    name = "knot"

    def prepare(self) -> list[str]:
        (self.dir / "db").mkdir()
        self.conf = self.dir / "knot.conf"
        zones = {o: self.ds.bind_path(o) for o in self.ds.origins}
        self.conf.write_text(knot_config(self.dir, HOST, self.port, zones))
        return ["knotd", "-c", str(self.conf)]

    def tell_reload(self, origin: str) -> None:
        self._run(["knotc", "-c", str(self.conf), "zone-reload", origin])


class NSD(Server):
    name = "nsd"

    def prepare(self) -> list[str]:
        self.conf = self.dir / "nsd.conf"
        zones = {o: self.ds.bind_path(o) for o in self.ds.origins}
        text = nsd_config(self.dir, HOST, self.port, zones)
        control = f"    control-enable: yes\n    control-interface: {self.dir / 'nsd.ctl'}"
        if "    control-enable: no" not in text:
            raise BenchError("nsd_config changed: cannot turn nsd-control on")
        self.conf.write_text(text.replace("    control-enable: no", control))
        return ["nsd", "-d", "-c", str(self.conf)]

    def tell_reload(self, origin: str) -> None:
        self._run(["nsd-control", "-c", str(self.conf), "reload", origin.rstrip(".")])


KINDS: dict[str, type[Server]] = {"geodns": GeoDNS, "knot": Knot, "nsd": NSD}


# -- one measurement ---------------------------------------------------------------------
@dataclass
class Sample:
    server: str
    part: str
    run: int
    first_answer_s: float
    first_answer_cpu_s: float  # the server's CPU time by then
    all_served_s: float | None = None
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    processes: int = 0
    edits_s: list[float] = field(default_factory=list)
    edits_cpu_s: list[float] = field(default_factory=list)  # the server's, for each edit


@contextlib.contextmanager
def serving(kind: str, work: Path, ds: Dataset, args: argparse.Namespace
            ) -> Iterator[tuple[Server, float, float]]:
    srv = KINDS[kind](work, ds, args.python, args.reload_interval)
    qname, rtype, value = ds.probe()
    try:
        began = srv.start()
        try:
            first = wait_answer(srv.port, qname, rtype, canonical(ds.origins[-1], rtype, value),
                                began, args.max_wait, srv.alive)
        except BenchError as exc:
            raise BenchError(f"{kind}: {exc}\n{srv.log_tail()}") from None
        yield srv, began, first
    finally:
        srv.stop()


def measure(kind: str, part: str, run: int, ds: Dataset, work: Path,
            args: argparse.Namespace) -> Sample:
    with serving(kind, work, ds, args) as (srv, began, first):
        assert srv.proc is not None
        sample = Sample(kind, part, run, first, cpu_s(srv.proc.pid))
        if part == "many":
            sample.all_served_s = sweep(srv.port, ds, began, args.max_wait)
        time.sleep(SETTLE)
        sample.rss_mb, sample.pss_mb, sample.processes = memory_mb(srv.proc.pid)
        if part == "big":
            for k in range(1, args.edits + 1):
                cpu = cpu_s(srv.proc.pid)
                sample.edits_s.append(edit(srv, ds, k, args))
                sample.edits_cpu_s.append(cpu_s(srv.proc.pid) - cpu)
    return sample


def edit(srv: Server, ds: Dataset, k: int, args: argparse.Namespace) -> float:
    """Change h0's address (serial 1 + k), rename the file in, wait for the answer."""
    origin = ds.origins[-1]
    recs = list(ds.recs)
    owner, rtype, _ = recs[0]
    new = f"192.0.2.{100 + k}"
    recs[0] = (owner, rtype, new)
    text = (yaml_text if srv.fmt == "yaml" else bind_text)(origin, 1 + k, recs)
    tmp = ds.root / f"edit-{k}.tmp"  # same file system, outside the zones directory
    tmp.write_text(text)
    target = srv.zone_path(origin)
    time.sleep(0.2)  # nothing else pending: the previous answer has settled
    began = time.monotonic()
    os.replace(tmp, target)
    srv.tell_reload(origin)
    try:
        return wait_answer(srv.port, f"{owner}.{origin}", rtype, frozenset({new}), began,
                           args.edit_wait, srv.alive)
    except BenchError as exc:
        raise BenchError(f"{srv.name} edit {k}: {exc}\n{srv.log_tail()}") from None


# -- the report ----------------------------------------------------------------------------
def med(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def summarise(samples: list[Sample], sizes: dict[str, int]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for kind in sorted({s.server for s in samples}, key=SERVERS.index):
        def pick(part: str, attr: str, kind: str = kind) -> float | None:
            return med([getattr(s, attr) for s in samples if s.server == kind and s.part == part])

        row: dict[str, float | None] = {}
        for part in PARTS:
            for attr in ("first_answer_s", "first_answer_cpu_s", "all_served_s", "rss_mb",
                         "pss_mb"):
                row[f"{part}_{attr}"] = pick(part, attr)
        row["edit_s"] = med([e for s in samples if s.server == kind for e in s.edits_s])
        row["edit_cpu_s"] = med([e for s in samples if s.server == kind for e in s.edits_cpu_s])
        edits = [e for s in samples if s.server == kind for e in s.edits_s]
        row["edit_min_s"] = min(edits) if edits else None
        row["edit_max_s"] = max(edits) if edits else None
        tiny = row["tiny_rss_mb"]
        for part in ("big", "many"):
            rss = row[f"{part}_rss_mb"]
            row[f"{part}_bytes_per_record"] = (
                (rss - tiny) * 1024 * 1024 / sizes[part]
                if rss is not None and tiny is not None and sizes.get(part) else None)
        out[kind] = row
    return out


def fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{unit}"


def report(summary: dict[str, dict[str, float | None]], sizes: dict[str, int],
           args: argparse.Namespace) -> None:
    print(f"\nmedians of {args.runs} run(s) (CPU: the server's CPU time by then); big zone: {sizes['big']:,} records; many: "
          f"{args.zones:,} zones x {args.zone_records} records; geodns reload interval "
          f"{args.reload_interval:g} s; Knot and NSD edits include knotc/nsd-control")
    head = ("server", "tiny RSS", "big: 1st answer", "CPU", "RSS", "B/record",
            "edit (min-max)", "CPU", "many: last zone", "CPU", "all", "RSS", "PSS", "B/record")
    rows = [head]
    for kind, r in summary.items():
        rows.append((kind, fmt(r["tiny_rss_mb"], " MB", 0),
                     fmt(r["big_first_answer_s"], " s", 3), fmt(r["big_first_answer_cpu_s"], " s"),
                     fmt(r["big_rss_mb"], " MB", 0),
                     fmt(r["big_bytes_per_record"], "", 0),
                     f"{fmt(r['edit_s'], ' s', 3)} ({fmt(r['edit_min_s'], '', 3)}-"
                     f"{fmt(r['edit_max_s'], '', 3)})", fmt(r["edit_cpu_s"], " s"),
                     fmt(r["many_first_answer_s"], " s", 2),
                     fmt(r["many_first_answer_cpu_s"], " s"), fmt(r["many_all_served_s"], " s", 2),
                     fmt(r["many_rss_mb"], " MB", 0), fmt(r["many_pss_mb"], " MB", 0),
                     fmt(r["many_bytes_per_record"], "", 0)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    g = summary.get("geodns")
    if g is None:
        return
    for peer in ("knot", "nsd"):
        p = summary.get(peer)
        if p is None:
            continue
        parts = []
        for key, label in (("big_first_answer_s", "big zone first answer"),
                           ("edit_s", "edit"), ("many_first_answer_s", "many first answer"),
                           ("many_rss_mb", "many RSS"),
                           ("many_bytes_per_record", "memory per record")):
            a, b = g[key], p[key]
            if a is not None and b:
                parts.append(f"{label} {a / b:,.1f}x")
        print(f"geodns / {peer}: " + ", ".join(parts))
    print("issue #12 targets:")
    big, ed = g["big_first_answer_s"], g["edit_s"]
    if big is not None:
        print(f"  {sizes['big']:,}-record zone served <= 1 s after start: {big:.2f} s "
              f"{'PASS' if big <= 1 else 'FAIL'}")
    if ed is not None:
        print(f"  one-record edit served <= 1 s after the write: {ed:.2f} s "
              f"{'PASS' if ed <= 1 else 'FAIL'}")
    k = summary.get("knot")
    if k is not None and g["many_bytes_per_record"] is not None and k["many_bytes_per_record"]:
        ratio = g["many_bytes_per_record"] / k["many_bytes_per_record"]
        print(f"  memory per record within 3x Knot's: {g['many_bytes_per_record']:,.0f} / "
              f"{k['many_bytes_per_record']:,.0f} B = {ratio:.1f}x "
              f"{'PASS' if ratio <= 3 else 'FAIL'}")


# -- profile ---------------------------------------------------------------------------------
def profile_build(n: int, top: int) -> None:
    """cProfile of geodns building a snapshot of one ``n``-record zone, as
    tests/test_incremental.py calls ``geodns.snapshot.build``."""
    import cProfile
    import pstats

    from geodns.config import Config
    from geodns.health.view import HealthView
    from geodns.snapshot import Document, Documents, GeoipStatus, build, new_responder

    origin = "big.example."
    text = yaml_text(origin, 1, records(n)).encode()
    docs = Documents("r1", None, {f"{origin}yaml": Document(f"{origin}yaml", text)})
    config = Config(path=None, zones_dir=Path("zones"))
    prof = cProfile.Profile()
    began = time.perf_counter()
    prof.enable()
    built = build(docs, config, None, (None, GeoipStatus()), HealthView(), new_responder, 0.0)
    prof.disable()
    took = time.perf_counter() - began
    assert all(not e.errors for e in built.snapshot.zones.values()), "the zone did not load"
    print(f"geodns.snapshot.build of one {n:,}-record zone: {took:.2f} s under cProfile")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)

    # The reload after a one-record edit: the same build, given the snapshot before.
    recs = records(n)
    recs[0] = (recs[0][0], recs[0][1], "192.0.2.101")
    edited = yaml_text(origin, 2, recs).encode()
    docs2 = Documents("r2", None, {f"{origin}yaml": Document(f"{origin}yaml", edited)})
    prof = cProfile.Profile()
    began = time.perf_counter()
    prof.enable()
    build(docs2, config, built.snapshot, (None, GeoipStatus()), HealthView(), new_responder, 1.0)
    prof.disable()
    print(f"the same after a one-record edit (previous snapshot given): "
          f"{time.perf_counter() - began:.2f} s under cProfile")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def memory_in_process(n: int, top: int) -> None:
    """Memory per record of a snapshot of one ``n``-record zone built in
    this process (as :func:`profile_build` builds it): ``VmRSS`` after
    ``gc.collect()`` against that after a 2-record zone's, and what
    is reachable from the zone model and from the compiled tables (the
    sizes ``sys.getsizeof`` gives), by type.  No server, no sockets; a zone's document bytes are
    dropped after the build (a server's source of documents holds them:
    about one byte per byte of the file more)."""
    import gc
    from collections import Counter

    from geodns.config import Config
    from geodns.health.view import HealthView
    from geodns.snapshot import Document, Documents, GeoipStatus, build, new_responder

    def rss_kb() -> int:
        return _kb("/proc/self/status", "VmRSS")

    def built(origin: str, count: int) -> object:
        text = yaml_text(origin, 1, records(count)).encode()
        docs = Documents("r", None, {f"{origin}yaml": Document(f"{origin}yaml", text)})
        return build(docs, Config(path=None, zones_dir=Path("zones")), None,
                     (None, GeoipStatus()), HealthView(), new_responder, 0.0).snapshot

    keep = [built("tiny.example.", 2)]
    seen = {id(o) for o in gc.get_objects()}  # (not the big zone's: made before it)
    gc.collect()
    before = rss_kb()
    snap = built("big.example.", n)
    keep.append(snap)
    gc.collect()
    print(f"one {n:,}-record zone in one process: {(rss_kb() - before) * 1024 / n:,.0f} B/record "
          "(VmRSS)")

    def reachable(root: object) -> Counter[str]:
        sizes: Counter[str] = Counter()
        stack = [root]
        while stack:
            o = stack.pop()
            if id(o) in seen or isinstance(o, type) or type(o).__name__ in (
                    "module", "function", "builtin_function_or_method"):
                continue
            seen.add(id(o))
            sizes[type(o).__name__] += sys.getsizeof(o)
            stack.extend(gc.get_referents(o))
        return sizes

    zone = next(iter(snap.zones.values())).zone  # type: ignore[attr-defined]
    for what, root in (("the zone model", zone), ("the compiled tables", snap.tables)):  # type: ignore[attr-defined]
        sizes = reachable(root)
        print(f"{what}: {sum(sizes.values()) / n:,.0f} B/record (sys.getsizeof of what it "
              "reaches): " + ", ".join(f"{t} {v / n:.0f}" for t, v in sizes.most_common(top)
                                       if v / n >= 1))


def precompile(python: str) -> None:
    """geodns's modules compiled into ``__pycache__`` (as a wheel's install does), so that
    the server's start does not compile them from source (editable install,
    ``PYTHONDONTWRITEBYTECODE``)."""
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "geodns")], check=True)


# -- main ---------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000, help="records in the big zone")
    ap.add_argument("--zones", type=int, default=10_000, help="zones in 'many'")
    ap.add_argument("--zone-records", type=int, default=100, help="records per zone in 'many'")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--edits", type=int, default=3, help="one-record edits per big-zone run")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--reload-interval", type=float, default=0.1, help="geodns reload.interval")
    ap.add_argument("--max-wait", type=float, default=900, help="seconds to wait for a load")
    ap.add_argument("--edit-wait", type=float, default=120, help="seconds to wait for an edit")
    ap.add_argument("--python", default=sys.executable, help="interpreter for geodns")
    ap.add_argument("--no-precompile", action="store_true",
                    help="do not compile geodns's modules to bytecode first (see above)")
    ap.add_argument("--json", type=Path, help="also write every sample and the summary here")
    ap.add_argument("--profile", action="store_true",
                    help="only profile geodns building the big zone (in this process)")
    ap.add_argument("--top", type=int, default=25, help="lines of the profile")
    ap.add_argument("--in-process", action="store_true",
                    help="only geodns's memory per record for the big zone built in this process, "
                         "by type")
    args = ap.parse_args()
    if args.profile:
        profile_build(args.records, args.top)
        return 0
    if args.in_process:
        memory_in_process(args.records, 8)
        return 0
    servers = [s for s in args.servers.split(",") if s]
    parts = [p for p in args.parts.split(",") if p]
    if not set(servers) <= set(SERVERS) or not set(parts) <= set(PARTS):
        ap.error(f"servers from {SERVERS}, parts from {PARTS}")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if "geodns" in servers and not args.no_precompile:
        precompile(args.python)
    sizes = {"tiny": 2, "big": args.records, "many": args.zones * args.zone_records}
    samples: list[Sample] = []
    work = Path(tempfile.mkdtemp(prefix="bench-zones-"))
    try:
        began = time.monotonic()
        data = {"tiny": write_dataset(work / "data-tiny", 1, 2, "tiny"),
                "big": write_dataset(work / "data-big", 1, args.records, "big")}
        if "many" in parts:
            data["many"] = write_dataset(work / "data-many", args.zones, args.zone_records, "z")
        print(f"zone files written in {time.monotonic() - began:.1f} s ({work})", flush=True)
        n = 0
        for run in range(1, args.runs + 1):
            order = servers[run - 1:] + servers[:run - 1]  # rotate, as run.py does
            for kind in order:
                for part in parts:
                    n += 1
                    base = work / f"{n:03d}-{kind}-{part}"
                    base.mkdir()
                    ds = data[part]
                    if part == "big":  # edited: a copy of its own
                        ds = copy_dataset(ds, base / "data")
                    s = measure(kind, part, run, ds, base, args)
                    samples.append(s)
                    extra = (f", all served {s.all_served_s:.2f} s" if s.all_served_s else "") + \
                        (f", edits {', '.join(f'{e:.3f}' for e in s.edits_s)} s (CPU "
                         f"{', '.join(f'{e:.2f}' for e in s.edits_cpu_s)} s)"
                         if s.edits_s else "")
                    print(f"run {run} {kind:6} {part:4}: first answer {s.first_answer_s:.3f} s "
                          f"(CPU {s.first_answer_cpu_s:.2f} s)"
                          f"{extra}, RSS {s.rss_mb:.0f} MB, PSS {s.pss_mb:.0f} MB "
                          f"({s.processes} processes)", flush=True)
                    if part == "big":
                        shutil.rmtree(base / "data", ignore_errors=True)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(samples, sizes)
    report(summary, sizes, args)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "samples": [asdict(s) for s in samples],
                                         "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
