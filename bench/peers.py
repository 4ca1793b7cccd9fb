"""Start and stop the servers the benchmark talks to: Knot, PowerDNS, geodns,
gdnsd and PowerDNS with its geoip backend.

Each server runs as the current user in a temporary directory of its own,
listens on 127.0.0.1 at a free port, is considered ready once it answers an
SOA query for the zone with NOERROR + AA, and is torn down with SIGTERM, a
bounded wait and SIGKILL.  Standard library only.

Usable on its own for poking at a peer by hand::

    python bench/peers.py knot      # prints the port, serves until Ctrl-C
    .venv/bin/python bench/peers.py gdnsd
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_zone import GEO_OWNER, GEO_TTL, POPS  # noqa: E402  (stdlib only)

ZONE_ORIGIN = "bench.test."
BIND_ZONE = HERE / "zone" / "bench.test.zone"
YAML_ZONE_DIR = HERE / "zone" / "yaml"
GEODNS_CONFIG = HERE / "geodns-bench.yaml"
HOST = "127.0.0.1"



def _pdns_common(d: Path, port: int) -> list[str]:
    """pdns.conf lines both PowerDNS set-ups share: one worker, no
    Internet look-ups, no web server, everything in its own directory."""
    return [
        f"local-address={HOST}:{port}",
        "receiver-threads=1",
        "distributor-threads=1",
        "security-poll-suffix=",
        "guardian=no",
        "daemon=no",
        "disable-syslog=yes",
        "write-pid=no",
        "webserver=no",
        "api=no",
        "loglevel=4",
        f"socket-dir={d}",
    ]

class ServerError(RuntimeError):
    pass


def geoip_database(path: str | Path | None = None) -> Path:
    """The GeoIP2 City database for the steering servers.

    Default: the GeoLite2-City.mmdb that the PyPI package maxminddb-geolite2
    ships, found through the interpreter running this code (so run the
    benchmark with the project's venv).  geodns uses the same file
    (``geoip: {database: null}`` in geodns-bench.yaml).
    """
    if path is None:
        try:
            from _maxminddb_geolite2 import geolite2_database  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ServerError(
                f"maxminddb-geolite2 is not importable by {sys.executable} ({exc}); run with "
                ".venv/bin/python or pass the database path (run.py --geoip-db)"
            ) from None
        path = geolite2_database()
    p = Path(path).resolve()
    if not p.is_file():
        raise ServerError(f"GeoIP database {p} does not exist")
    return p


def free_port(host: str = HOST) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
            return int(port)
    raise ServerError("no free port found")


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def soa_ready(host: str, port: int, zone: str = ZONE_ORIGIN, timeout: float = 0.3) -> bool:
    """True if the server answers ``zone SOA`` with NOERROR, AA and an answer."""
    qid = random.randrange(65536)
    # header: id, flags=0 (RD=0), qd=1, an=0, ns=0, ar=0; question zone/SOA/IN
    query = (
        struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + _encode_name(zone) + struct.pack("!HH", 6, 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (host, port))
            data, _ = s.recvfrom(65535)
        except OSError:  # timeout, connection refused (ICMP), ...
            return False
    if len(data) < 12:
        return False
    rid, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    qr, aa, rcode = flags >> 15, (flags >> 10) & 1, flags & 0xF
    return rid == qid and qr == 1 and aa == 1 and rcode == 0 and an >= 1


def parse_cpus(spec: str) -> set[int]:
    """taskset-style CPU list: "1", "0,2", "0-3" -> {0, ..}."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


class Server:
    """A DNS server process under test.  Subclasses write configs in ``prepare``."""

    name = "server"

    def __init__(self, cpus: str | None = None, port: int | None = None) -> None:
        self.cpus = cpus  # taskset CPU list, e.g. "1"; None = no pinning
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"

    # -- to override -------------------------------------------------------
    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return self.dir

    # -- lifecycle ---------------------------------------------------------
    def start(self, ready_timeout: float = 30.0) -> None:
        self.prepare()
        cmd = self.command()
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal goes to us, not the server
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode} during start-up:\n"
                    f"  command: {shlex.join(cmd)}\n{self.log_tail()}"
                )
            if soa_ready(HOST, self.port):
                self.enforce_affinity()
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(
            f"{self.name} did not answer SOA on {HOST}:{self.port} within {ready_timeout}s:\n"
            f"  command: {shlex.join(cmd)}\n{self.log_tail()}"
        )

    def enforce_affinity(self) -> list[str]:
        """Pin every thread of the server to ``self.cpus``.

        ``taskset`` only sets the affinity the process starts with; servers
        may change it for their threads (knotd pins UDP worker *n* to CPU
        *n* mod ncpu, which puts its only worker on CPU 0 next to dnsperf).
        Returns the threads that had to be moved, e.g. ``["12345 (knotd) {0}"]``.
        """
        if self.cpus is None or self.proc is None or self.proc.poll() is not None:
            return []
        want = parse_cpus(self.cpus)
        moved = []
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.proc.pid}/task")]
        except OSError:
            return []
        for tid in tids:
            try:
                have = os.sched_getaffinity(tid)
                if have != want:
                    os.sched_setaffinity(tid, want)
                    comm = Path(f"/proc/{self.proc.pid}/task/{tid}/comm").read_text().strip()
                    moved.append(f"{tid} ({comm}) {sorted(have)}")
            except OSError:  # thread exited meanwhile
                continue
        return moved

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=grace)
        if hasattr(self, "_log"):
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "  (no log)"
        return "\n".join("  | " + line for line in text[-lines:])

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class Knot(Server):
    """knotd with one UDP, one TCP and one background worker.

    Subclasses add configuration sections (``sections``: e.g. a DNSSEC
    policy or a module's settings, before ``template``) and options of the
    zone (``zone_options``: lines under ``domain``)."""

    name = "knot"
    sections = ""
    zone_options = ""

    def prepare(self) -> None:
        d = self.dir
        (d / "db").mkdir(exist_ok=True)
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        (d / "knot.conf").write_text(
            f"""\
server:
    rundir: "{d}"
    user: {user}:{group}
    listen: {HOST}@{self.port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    identity: ""
    version: ""
    nsid: ""

control:
    listen: "{d}/knot.sock"

database:
    storage: "{d}/db"

log:
  - target: stderr
    any: notice
{self.sections}
template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
  - domain: {ZONE_ORIGIN}
    file: "{BIND_ZONE}"
{self.zone_options}"""
        )

    def command(self) -> list[str]:
        return ["knotd", "-c", str(self.dir / "knot.conf")]


class PowerDNS(Server):
    """pdns_server with the bind backend, one receiver and one distributor thread.

    Everything else (packet cache, query cache, ...) is left at PowerDNS's
    defaults.  The only non-performance changes: no security-status polling
    (it would query the Internet), no guardian/daemon/syslog, private
    config and socket directory.
    """

    name = "pdns"

    def prepare(self) -> None:
        d = self.dir
        (d / "named.conf").write_text(
            f'options {{ directory "{d}"; }};\n'
            f'zone "{ZONE_ORIGIN.rstrip(".")}" {{ type master; file "{BIND_ZONE}"; }};\n'
        )
        # An empty pdns.conf in --config-dir keeps /etc/powerdns out of it.
        (d / "pdns.conf").write_text(
            "\n".join(
                [
                    "launch=bind",
                    f"bind-config={d}/named.conf",
                    *_pdns_common(d, self.port),
                ]
            )
            + "\n"
        )

    def command(self) -> list[str]:
        return ["pdns_server", f"--config-dir={self.dir}"]


class PowerDNSGeoIP(PowerDNS):
    """pdns_server with the geoip backend, for the ``steered`` workload only.

    The geoip backend cannot compute distances, so the PoP is chosen by
    continent (``%cn``): EU and AF -> fra, NA -> iad, AS and OC -> sin,
    SA -> gru, anything else (AN, no location) -> fra.  The zone holds only
    SOA, NS with glue and ``geo``: this server runs no other workload.
    ``edns-subnet-processing=yes`` makes it use the ECS address (it is off by
    default).  Threads and caches as in :class:`PowerDNS`.
    """

    name = "pdns-geoip"
    CONTINENT_POP: ClassVar[dict[str, str]] = {
        "eu": "fra",
        "af": "fra",
        "na": "iad",
        "as": "sin",
        "oc": "sin",
        "sa": "gru",
    }
    DEFAULT_POP = "fra"

    def __init__(
        self, cpus: str | None = None, port: int | None = None, geoip_db: Path | None = None
    ) -> None:
        super().__init__(cpus=cpus, port=port)
        self.geoip_db = geoip_db

    def zones_yaml(self) -> str:
        origin = ZONE_ORIGIN.rstrip(".")
        geo = f"{GEO_OWNER}.{origin}"
        lines = [
            "domains:",
            f"- domain: {origin}",
            "  ttl: 3600",
            "  records:",
            f"    {origin}:",
            f"      - soa: ns1.{origin} hostmaster.{origin} 2026112201 7200 3600 1209600 300",
            f"      - ns: ns1.{origin}",
            f"      - ns: ns2.{origin}",
            f"    ns1.{origin}:",
            "      - a: 192.0.2.1",
            "      - aaaa: 2001:db8::1",
            f"    ns2.{origin}:",
            "      - a: 192.0.2.2",
            "      - aaaa: 2001:db8::2",
        ]
        targets = {**self.CONTINENT_POP, "default": self.DEFAULT_POP}
        for label, pop in targets.items():
            lines += [
                f"    {label}.{geo}:",
                f"      - a: {{content: {POPS[pop][2]}, ttl: {GEO_TTL}}}",
            ]
        lines += [
            "  services:",
            # The first name that exists in records is answered directly
            # (under the service name); default.geo catches unknown continents.
            f"    {geo}: ['%cn.{geo}', 'default.{geo}']",
        ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        d = self.dir
        db = geoip_database(self.geoip_db)
        (d / "zones.yaml").write_text(self.zones_yaml())
        (d / "pdns.conf").write_text(
            "\n".join(
                [
                    "launch=geoip",
                    f"geoip-database-files=mmdb:{db}",
                    f"geoip-zones-file={d}/zones.yaml",
                    "edns-subnet-processing=yes",
                    *_pdns_common(d, self.port),
                ]
            )
            + "\n"
        )


class Gdnsd(Server):
    """gdnsd 3 with plugin_geoip in city-auto mode, one UDP and one TCP thread.

    Config directory ``DIR`` (``gdnsd -c DIR start``, foreground, logs to
    stderr) with ``config``, ``zones/bench.test`` (the BIND zone plus
    ``geo 30 DYNA geoip!geo``) and ``geoip/`` (empty: the database is given
    by absolute path).  ``run_dir`` and ``state_dir`` are in DIR too, so it
    needs neither root nor /run/gdnsd.  ECS is honoured by default
    (``edns_client_subnet`` true, map ``ignore_ecs`` false).
    """

    name = "gdnsd"

    def __init__(
        self, cpus: str | None = None, port: int | None = None, geoip_db: Path | None = None
    ) -> None:
        super().__init__(cpus=cpus, port=port)
        self.geoip_db = geoip_db

    def config_text(self, db: Path) -> str:
        d = self.dir
        coords = "\n".join(
            f"          {name} => [ {lat}, {lon} ]" for name, (lat, lon, _a) in POPS.items()
        )
        dcmap = ", ".join(f"{name} => {addr}" for name, (_la, _lo, addr) in POPS.items())
        return f"""\
# Generated by bench/peers.py for the geodns benchmark.
options => {{
  listen => [ {HOST}:{self.port} ]
  udp_threads => 1          # one UDP worker, like the other servers
  tcp_threads => 1          # the minimum; TCP is not measured
  run_dir => {d}/run        # control socket + lock, instead of /run/gdnsd
  state_dir => {d}/state    # admin_state, instead of /var/lib/gdnsd
  # edns_client_subnet => true is the default: ECS is used
}}
plugins => {{
  geoip => {{
    maps => {{
      bench => {{
        geoip2_db => {db}
        datacenters => [ {", ".join(POPS)} ]
        auto_dc_coords => {{
{coords}
        }}
      }}
    }}
    resources => {{
      geo => {{
        map => bench
        dcmap => {{ {dcmap} }}
      }}
    }}
  }}
}}
"""

    def prepare(self) -> None:
        d = self.dir
        for sub in ("zones", "geoip", "run", "state"):
            (d / sub).mkdir(exist_ok=True)
        db = geoip_database(self.geoip_db)
        (d / "config").write_text(self.config_text(db))
        zone = BIND_ZONE.read_text()
        zone += (
            f"; steered name, added by bench/peers.py\n{GEO_OWNER}\t{GEO_TTL}\tDYNA\tgeoip!geo\n"
        )
        (d / "zones" / ZONE_ORIGIN.rstrip(".")).write_text(zone)

    def command(self) -> list[str]:
        return ["gdnsd", "-c", str(self.dir), "start"]


def default_geodns_cmd(port: int, python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "geodns",
        "serve",
        "--config",
        str(GEODNS_CONFIG),
        "--listen",
        f"{HOST}:{port}",
        "--zones",
        str(YAML_ZONE_DIR),
        "--lameduck",  # a benchmark stops its servers at once
        "0",
    ]


class GeoDNS(Server):
    """geodns, started by an arbitrary command line.

    ``cmd`` may contain ``{port}``, ``{host}``, ``{config}`` and ``{zones}``
    placeholders; without one, the default command line is used.  It runs
    from the repository root so ``python -m geodns`` finds the package.
    """

    name = "geodns"

    def __init__(
        self,
        cmd: Sequence[str] | None = None,
        python: str | None = None,
        cpus: str | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(cpus=cpus, port=port)
        self._cmd = list(cmd) if cmd else None
        self._python = python

    def command(self) -> list[str]:
        if self._cmd is None:
            return default_geodns_cmd(self.port, self._python)
        subst = {
            "port": str(self.port),
            "host": HOST,
            "config": str(GEODNS_CONFIG),
            "zones": str(YAML_ZONE_DIR),
        }
        return [arg.format(**subst) for arg in self._cmd]

    def cwd(self) -> Path:
        return HERE.parent


class GeoDNSFleet(GeoDNS):
    """geodns as a node of a fleet: the same zones and PoPs as ``geodns``,
    published to a one-member etcd of its own (started here, on loopback)
    and read from it.  It answers from the same kind of snapshot, so its CPU
    per query should be the same; the fleet session's own cost (watch, lease,
    status) shows in the idle CPU."""

    name = "geodns-fleet"

    def __init__(self, python: str | None = None, cpus: str | None = None) -> None:
        super().__init__(None, python=python, cpus=cpus)
        self.etcd: subprocess.Popen[bytes] | None = None
        self.etcd_port = free_port()

    def prepare(self) -> None:
        import yaml

        d = self.dir
        peer = free_port()
        url = f"http://{HOST}:{self.etcd_port}"
        self.etcd = subprocess.Popen(
            ["etcd", "--data-dir", str(d / "etcd"), "--listen-client-urls", url,
             "--advertise-client-urls", url, "--listen-peer-urls", f"http://{HOST}:{peer}",
             "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
             "--initial-cluster", f"default=http://{HOST}:{peer}"],
            stdout=subprocess.DEVNULL, stderr=open(d / "etcd.log", "wb"),  # noqa: SIM115
            start_new_session=True)
        bench = yaml.safe_load(GEODNS_CONFIG.read_text())
        (d / "shared.yaml").write_text(yaml.safe_dump({"pops": bench["pops"]}))
        (d / "node.yaml").write_text(yaml.safe_dump({
            "listen": [f"{HOST}:{self.port}"], "workers": 1, "geoip": bench["geoip"],
            "fleet": {"etcd": [url], "node": "bench", "cache": None}}))
        python = self._python or sys.executable
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [python, "-m", "geodns", "publish", "--etcd", url, "--config",
                 str(d / "shared.yaml"), str(YAML_ZONE_DIR)],
                cwd=HERE.parent, capture_output=True, text=True)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"geodns publish failed: {done.stderr}")
            time.sleep(0.3)

    def command(self) -> list[str]:
        return [self._python or sys.executable, "-m", "geodns", "serve", "--config",
                str(self.dir / "node.yaml")]

    def stop(self, grace: float = 5.0) -> None:
        super().stop(grace)
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(grace)


def make_server(
    name: str,
    *,
    cpus: str | None = None,
    geodns_cmd: Sequence[str] | None = None,
    python: str | None = None,
    geoip_db: Path | None = None,
) -> Server:
    if name == "knot":
        return Knot(cpus=cpus)
    if name == "pdns":
        return PowerDNS(cpus=cpus)
    if name == "gdnsd":
        return Gdnsd(cpus=cpus, geoip_db=geoip_db)
    if name == "pdns-geoip":
        return PowerDNSGeoIP(cpus=cpus, geoip_db=geoip_db)
    if name == "geodns":
        return GeoDNS(geodns_cmd, python=python, cpus=cpus)
    if name == "geodns-fleet":
        return GeoDNSFleet(python=python, cpus=cpus)
    raise ValueError(f"unknown server {name!r}")


def sigterm_as_interrupt() -> None:
    """Make SIGTERM raise KeyboardInterrupt so ``finally`` blocks stop the servers."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> int:
    import argparse

    sigterm_as_interrupt()

    ap = argparse.ArgumentParser(description="Run one benchmark peer until Ctrl-C.")
    ap.add_argument("server", choices=["knot", "pdns", "geodns", "gdnsd", "pdns-geoip",
                                       "geodns-fleet"])
    ap.add_argument("--cpus", help="taskset CPU list for the server")
    args = ap.parse_args()
    srv = make_server(args.server, cpus=args.cpus)
    try:
        srv.start()
        print(
            f"{srv.name} ready on {HOST}:{srv.port} (pid {srv.proc.pid if srv.proc else '?'}, "
            f"dir {srv.dir}); Ctrl-C to stop",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while srv.alive():
                time.sleep(0.5)
    finally:
        srv.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
