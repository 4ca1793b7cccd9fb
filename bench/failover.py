#!/usr/bin/env python3
"""Failover benchmark: how fast geodns's health checks move traffic off a dead
PoP, how fast it comes back, and how much a flaky PoP flaps.

Three real HTTP "PoP" endpoints (aiohttp, on 127.0.0.11-13, ports chosen at
run time) answer ``GET /health`` with 200 "ok".  geodns runs as a subprocess
with a temporary config whose PoPs p1, p2, p3 each have one HTTP check against
their endpoint, and a zone whose ``www.fo.example. A`` is steered to
192.0.2.1 (p1), 192.0.2.2 (p2) or 192.0.2.3 (p3).  Queries from 127.0.0.1
carry no usable location, so the answer follows ``default_order: [p1, p2,
p3]``: 192.0.2.1 while p1 is up.

Each trial: wait until the answer is 192.0.2.1; break p1's endpoint at t0
(``--mode stop``: close the listening socket, connects are refused; ``hang``:
accept but never answer; ``500``: answer 500); ask geodns every
``--interval`` (50 ms) until the answer is no longer 192.0.2.1 (failover
time); repair the endpoint at t1 and ask until the answer is 192.0.2.1 again
(recovery time).  Every wait is bounded by ``--max-wait``; a wait that runs
out counts as a failed trial.

Then the flap test: p1's endpoint fails ``--flap-rate`` (30%) of its requests
at random (fixed seed) for ``--flap-seconds``; the benchmark counts how often
the answer changes and how many "state change" lines for p1 geodns logs.

Usage (from the repository root)::

    .venv/bin/python bench/failover.py                       # 20 trials + 60 s flap, ~3 min
    .venv/bin/python bench/failover.py --mode stop,hang,500 --trials 10 --json /tmp/fo.json
    .venv/bin/python bench/failover.py --check-only          # does geodns accept the config?
    .venv/bin/python bench/failover.py --self-test           # against a stub server (no geodns)

See bench/README.md ("Failover") for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

QNAME = "www.fo.example."
ZONE_ORIGIN = "fo.example."
# name, endpoint address, location, answer
POPS = (
    ("p1", "127.0.0.11", (50.11, 8.68), "192.0.2.1"),
    ("p2", "127.0.0.12", (48.85, 2.35), "192.0.2.2"),
    ("p3", "127.0.0.13", (40.71, -74.0), "192.0.2.3"),
)
P1_ANSWER = POPS[0][3]
NEXT_ANSWER = POPS[1][3]
DEFAULT_ORDER = [p[0] for p in POPS]
MODES = ("stop", "hang", "500")
HANG_CAP = 30.0  # a hung request is released after this long at the latest
MAX_LOG_LINES = 200_000
MAX_REQUEST_LOG = 200_000
STATE_RE = re.compile(r"\bp1\b")
FIELD_RE = re.compile(r"\b(pop|old|new)=(\S+)")

ZONE_TEXT = """\
# written by bench/failover.py
origin: fo.example.
soa: {mname: ns1, rname: hostmaster}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      ttl: 5
      steer: {pops: {p1: 192.0.2.1, p2: 192.0.2.2, p3: 192.0.2.3}}
"""


# ---------------------------------------------------------------------------
# The PoP endpoints
class Endpoint:
    """One HTTP health endpoint that can be stopped, hung, broken and restarted.

    Modes: ``ok`` (200 "ok"), ``500`` (500 "broken"), ``hang`` (the request
    is read but never answered, until the mode changes or HANG_CAP), ``flaky``
    (500 with probability ``flaky_rate``, else 200; seeded), and stopped (no
    listening socket: connects are refused).
    """

    def __init__(self, name: str, host: str, seed: int) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.mode = "ok"
        self.flaky_rate = 0.3
        self.rng = random.Random(seed)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.release = asyncio.Event()
        # (monotonic time, outcome): one entry per request received
        self.requests: list[tuple[float, str]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    @property
    def listening(self) -> bool:
        return self.site is not None

    async def setup(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        self.port = free_port(self.host, socket.SOCK_STREAM)
        await self.start()

    def _log(self, outcome: str) -> None:
        if len(self.requests) < MAX_REQUEST_LOG:
            self.requests.append((time.monotonic(), outcome))

    async def _health(self, request: web.Request) -> web.StreamResponse:
        mode = self.mode
        if mode == "flaky":
            mode = "500" if self.rng.random() < self.flaky_rate else "ok"
        self._log(mode)
        if mode == "hang":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), HANG_CAP)
            # released: the client has long given up; answer anyway
        if mode == "500":
            return web.Response(status=500, text="broken\n")
        return web.Response(text="ok\n")

    async def start(self) -> None:
        """Listen (again) on the same address and port; mode ``ok``."""
        self.mode = "ok"
        self.release.set()
        if self.site is not None:
            return
        assert self.runner is not None
        err: OSError | None = None
        for _ in range(20):  # the port was ours a moment ago; retry briefly
            site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                err = exc
                with contextlib.suppress(Exception):
                    await site.stop()
                await asyncio.sleep(0.05)
                continue
            self.site = site
            return
        raise RuntimeError(f"endpoint {self.name}: cannot listen on {self.host}:{self.port}: {err}")

    def _drop_connections(self) -> None:
        assert self.runner is not None
        server = self.runner.server
        if server is None:
            return
        for handler in list(server.connections):
            transport = handler.transport
            if transport is not None:
                transport.abort()

    async def stop(self) -> None:
        """Close the listening socket (connects are refused) and every open connection."""
        if self.site is not None:
            await self.site.stop()
            self.site = None
        self._drop_connections()

    def hang(self) -> None:
        self.release.clear()
        self.mode = "hang"

    def fail_500(self) -> None:
        self.mode = "500"

    def flaky(self, rate: float) -> None:
        self.flaky_rate = rate
        self.mode = "flaky"

    async def restore(self) -> None:
        """Back to healthy, whatever was done to it."""
        # From hang: the stall ends, so the requests still waiting get their
        # 200 now (a probe still inside its timeout then succeeds).
        await self.start()

    async def close(self) -> None:
        self.release.set()
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
            self.runner = None
            self.site = None

    async def break_(self, mode: str) -> None:
        if mode == "stop":
            await self.stop()
        elif mode == "hang":
            self.hang()
        elif mode == "500":
            self.fail_500()
        else:
            raise ValueError(mode)


# ---------------------------------------------------------------------------
# The DNS client
@dataclass
class Reply:
    sent: float
    received: float
    answer: str | None  # sorted A addresses joined by ",", "<RCODE empty>", or None (timeout)
    error: str | None = None


class Client:
    def __init__(self, host: str, port: int, timeout: float, ecs: str | None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ecs = ecs
        self.queries = 0
        self.timeouts = 0
        self.errors = 0

    def _query(self) -> dns.message.Message:
        if self.ecs:
            opt = dns.edns.ECSOption.from_text(self.ecs)
            return dns.message.make_query(QNAME, "A", use_edns=0, options=[opt])
        return dns.message.make_query(QNAME, "A")

    async def ask(self) -> Reply:
        q = self._query()
        sent = time.monotonic()
        self.queries += 1
        try:
            r = await dns.asyncquery.udp(q, self.host, port=self.port, timeout=self.timeout)
        except dns.exception.Timeout:
            self.timeouts += 1
            return Reply(sent, time.monotonic(), None, "timeout")
        except (OSError, dns.exception.DNSException) as exc:
            self.errors += 1
            await asyncio.sleep(min(self.timeout, 0.05))  # e.g. refused: do not spin
            return Reply(sent, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
        now = time.monotonic()
        addrs = sorted(rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A
                       for rd in rrset)
        if addrs:
            return Reply(sent, now, ",".join(addrs))
        return Reply(sent, now, f"<{dns.rcode.to_text(r.rcode())} empty>")


@dataclass
class Wait:
    ok: bool
    seconds: float | None  # from the reference time to the first matching answer
    answer: str | None  # the matching answer
    queries: int
    timeouts: int
    answers: dict[str, int] = field(default_factory=dict)  # what was seen on the way


async def poll_until(client: Client, pred: Callable[[str], bool], t_ref: float,
                     interval: float, max_wait: float) -> Wait:
    """Ask every ``interval`` from now until an answer satisfies ``pred``
    (or ``max_wait`` after ``t_ref`` has passed).  One query in flight at a
    time; after a slow query the next one goes out at the next tick."""
    deadline = t_ref + max_wait
    w = Wait(False, None, None, 0, 0)
    limit = int(max_wait / interval) + 10  # bound in count as well as in time
    for _ in range(limit):
        if time.monotonic() > deadline:
            break
        r = await client.ask()
        w.queries += 1
        if r.answer is None:
            w.timeouts += 1
            key = f"<{r.error}>"
        else:
            key = r.answer
        w.answers[key] = w.answers.get(key, 0) + 1
        if r.answer is not None and pred(r.answer):
            if r.received <= deadline:
                w.ok, w.seconds, w.answer = True, r.received - t_ref, r.answer
            return w
        now = time.monotonic()
        ticks = math.floor((now - t_ref) / interval) + 1
        await asyncio.sleep(max(0.0, t_ref + ticks * interval - now))
    return w


# ---------------------------------------------------------------------------
# The server under test
@dataclass
class LogLine:
    t: float
    text: str


class ServerProc:
    def __init__(self, cmd: list[str], cwd: Path, log_path: Path) -> None:
        self.cmd = cmd
        self.cwd = cwd
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[LogLine] = []
        self.p1_changes: list[LogLine] = []  # lines with "state change" and "p1"
        self._reader: asyncio.Task[None] | None = None
        self._log: Any = None

    async def start(self) -> None:
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:  # ends at EOF, i.e. when the process exits
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            now = time.monotonic()
            text = raw.decode("utf-8", "replace").rstrip("\n")
            self._log.write(text + "\n")
            self._log.flush()
            line = LogLine(now, text)
            if len(self.lines) < MAX_LOG_LINES:
                self.lines.append(line)
            if "state change" in text and STATE_RE.search(text):
                self.p1_changes.append(line)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def tail(self, n: int = 20) -> str:
        return "\n".join(ln.text for ln in self.lines[-n:])

    def p1_changes_between(self, a: float, b: float) -> list[LogLine]:
        return [ln for ln in self.p1_changes if a <= ln.t <= b]

    async def stop(self) -> int | None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 5)
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 2)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.proc is None else self.proc.returncode


def parse_change(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in FIELD_RE.findall(text)}


async def wait_ready(client: Client, server: ServerProc, max_wait: float) -> bool:
    """Ready when the server answers SOA fo.example. with NOERROR."""
    deadline = time.monotonic() + max_wait
    q = dns.message.make_query(ZONE_ORIGIN, "SOA")
    for _ in range(int(max_wait / 0.1) + 10):
        if time.monotonic() > deadline or not server.running:
            return False
        with contextlib.suppress(dns.exception.DNSException, OSError):
            r = await dns.asyncquery.udp(q, client.host, port=client.port, timeout=0.3)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return True
        await asyncio.sleep(0.1)
    return False


# ---------------------------------------------------------------------------
# Files
def free_port(host: str, kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def write_files(workdir: Path, dns_port: int, endpoints: list[Endpoint],
                args: argparse.Namespace) -> Path:
    (workdir / "zones").mkdir(parents=True, exist_ok=True)
    (workdir / "zones" / "fo.example.yaml").write_text(ZONE_TEXT, encoding="utf-8")
    lines = [
        "# written by bench/failover.py",
        f'listen: ["127.0.0.1:{dns_port}"]',
        "zones: zones",
        "health:",
        f"  interval: {args.check_interval:g}",
        f"  timeout: {args.check_timeout:g}",
        f"  rise: {args.rise}",
        f"  fall: {args.fall}",
        f"  jitter: {args.jitter:g}",
        f"  grace: {args.grace:g}",
    ]
    if args.flap_window is not None:
        lines.append(f"  flap_window: {args.flap_window:g}")
    lines += ["pops:"]
    for (name, _host, (lat, lon), _answer), ep in zip(POPS, endpoints, strict=True):
        lines += [
            f"  {name}:",
            f"    location: [{lat}, {lon}]",
            "    checks:",
            f'      - {{type: http, url: "{ep.url}", expect: [200]}}',
        ]
    lines.append(f"default_order: [{', '.join(DEFAULT_ORDER)}]")
    cfg = workdir / "geodns.yaml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def server_cmd(args: argparse.Namespace, cfg: Path, port: int) -> list[str]:
    if args.self_test:
        template = "{python} {script} --fake-geodns --config {config}"
    else:
        template = args.geodns_cmd or "{python} -m geodns serve --config {config}"
    subs = {"python": sys.executable, "script": str(Path(__file__).resolve()),
            "config": str(cfg), "zones": str(cfg.parent / "zones"),
            "host": "127.0.0.1", "port": str(port)}
    return [w.format(**subs) for w in shlex.split(template)]


def check_cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "geodns", "check", "--config", str(cfg)]


# ---------------------------------------------------------------------------
# Statistics
def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def stats(values: list[float]) -> dict[str, float | int | None]:
    return {"n": len(values),
            "median": statistics.median(values) if values else None,
            "p95": pct(values, 95),
            "max": max(values) if values else None,
            "min": min(values) if values else None}


def expected_probes(p_event: float, run: int) -> float:
    """Expected number of Bernoulli(p_event) trials until ``run`` events in a row."""
    if p_event <= 0:
        return math.inf
    if p_event >= 1:
        return float(run)
    return (1 - p_event ** run) / ((1 - p_event) * p_event ** run)


def model_changes_per_minute(rate: float, rise: int, fall: int, interval: float) -> float:
    """State changes per minute of a rise/fall check whose probes fail
    independently with probability ``rate``, one probe per ``interval``."""
    cycle = expected_probes(rate, fall) + expected_probes(1 - rate, rise)
    if not math.isfinite(cycle):
        return 0.0
    return 2 * 60 / (cycle * interval)


def fmt(v: float | None, unit: str = " s") -> str:
    return "-" if v is None else f"{v:.2f}{unit}"


# ---------------------------------------------------------------------------
# The benchmark
@dataclass
class Trial:
    mode: str
    index: int
    failover_ok: bool
    failover_s: float | None
    failover_answer: str | None
    recovery_ok: bool
    recovery_s: float | None
    down_logged_s: float | None  # t0 -> geodns logs p1 new=down (if it logs that)
    up_logged_s: float | None  # t1 -> geodns logs p1 new=up
    queries: int
    timeouts: int
    seen_during_failover: dict[str, int]
    seen_during_recovery: dict[str, int]
    probes_while_broken: int  # requests p1's endpoint received between t0 and t1
    server_start: int  # which server process (1, 2, ...) the trial ran against


def first_change(server: ServerProc, after: float, new: str) -> float | None:
    for ln in server.p1_changes:
        if ln.t >= after:
            fields = parse_change(ln.text)
            if fields.get("new", new) == new:
                return ln.t
    return None


class Harness:
    """The endpoints, the server under test (started as often as needed), the client."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.endpoints = [Endpoint(name, host, args.seed + i)
                          for i, (name, host, _, _) in enumerate(POPS)]
        self.p1 = self.endpoints[0]
        self.server: ServerProc | None = None
        self.client: Client | None = None
        self.starts = 0
        self.cfg: Path | None = None
        self.port = 0
        self.p1_changes_total = 0

    async def setup(self) -> None:
        for ep in self.endpoints:
            await ep.setup()

    def write_config(self) -> Path:
        port = free_dns_port()
        self.cfg = write_files(self.workdir, port, self.endpoints, self.args)
        self.port = port
        return self.cfg

    async def start_server(self, quiet: bool = False) -> str | None:
        """Start the server with a fresh config (new port) and wait until it
        answers and p1 is up by its checks.  Returns an error text or None."""
        await self.stop_server()
        for ep in self.endpoints:
            await ep.restore()
        cfg = self.write_config()
        self.starts += 1
        cmd = server_cmd(self.args, cfg, self.port)
        if not quiet:
            print(f"server: {shlex.join(cmd)}", flush=True)
        self.server = ServerProc(cmd, self.workdir, self.workdir / f"server-{self.starts}.log")
        t_start = time.monotonic()
        await self.server.start()
        self.client = Client("127.0.0.1", self.port, self.args.query_timeout, self.args.ecs)
        if not await wait_ready(self.client, self.server, self.args.max_wait):
            return (f"the server did not come up within {self.args.max_wait:g} s; its output:\n"
                    f"{self.server.tail()}")
        ready = time.monotonic() - t_start
        # p1 must be up by its checks, not only by the grace period: wait for
        # the logged verdict, or long enough for one when nothing is logged.
        pre = await poll_until(self.client, lambda a: a == P1_ANSWER, time.monotonic(),
                               self.args.interval, self.args.max_wait)
        if not pre.ok:
            return (f"the answer never became {P1_ANSWER} (saw {pre.answers}); server "
                    f"output:\n{self.server.tail()}")
        settle_until = t_start + self.args.grace + self.args.rise * self.args.check_interval + 1
        for _ in range(int(self.args.max_wait / 0.05) + 1):
            if time.monotonic() >= settle_until or first_change(self.server, t_start, "up"):
                break
            await asyncio.sleep(0.05)
        if not quiet:
            print(f"server ready after {ready:.2f} s, p1 up after "
                  f"{time.monotonic() - t_start:.2f} s", flush=True)
        return None

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.p1_changes_total += len(self.server.p1_changes)

    async def close(self) -> None:
        await self.stop_server()
        for ep in self.endpoints:
            await ep.close()


async def run_trials(mode: str, h: Harness, rng: random.Random,
                     out: list[Trial]) -> str | None:
    """Append one Trial per trial to ``out``; returns an error text if it had to stop."""
    args = h.args
    p1 = h.p1
    for i in range(args.trials):
        if args.fresh_server or h.server is None:
            err = await h.start_server(quiet=i > 0 or mode != args.modes[0])
            if err:
                return err
        elif i > 0 and args.gap > 0:
            await asyncio.sleep(args.gap)
        server, client = h.server, h.client
        assert server is not None and client is not None
        if not server.running:
            return f"the server has exited; its output:\n{server.tail()}"
        # Start from p1 answering; then a random pause so that t0 falls at a
        # random point of the probe cycle.
        pre = await poll_until(client, lambda a: a == P1_ANSWER, time.monotonic(),
                               args.interval, args.max_wait)
        if not pre.ok:
            return f"the answer never became {P1_ANSWER} (saw {pre.answers})"
        await asyncio.sleep(rng.uniform(0, args.check_interval))

        n_req = len(p1.requests)
        t0 = time.monotonic()
        await p1.break_(mode)
        fo = await poll_until(client, lambda a: a != P1_ANSWER, t0, args.interval, args.max_wait)
        # Leave it broken a little longer, for a random part of a probe
        # interval: otherwise t1 would come right after the probe that moved
        # traffic, always at the same point of the probe cycle.
        await asyncio.sleep(rng.uniform(0, args.check_interval))
        t1 = time.monotonic()
        broken_probes = len(p1.requests) - n_req
        await p1.restore()
        rc = await poll_until(client, lambda a: a == P1_ANSWER, t1, args.interval, args.max_wait)
        down = first_change(server, t0, "down")
        up = first_change(server, t1, "up")
        t = Trial(mode, i + 1, fo.ok, fo.seconds, fo.answer, rc.ok, rc.seconds,
                  None if down is None or down > t1 else down - t0,
                  None if up is None else up - t1,
                  fo.queries + rc.queries, fo.timeouts + rc.timeouts,
                  fo.answers, rc.answers, broken_probes, h.starts)
        out.append(t)
        note = ""
        if fo.ok and fo.answer != NEXT_ANSWER:
            note = f"  (moved to {fo.answer}, expected {NEXT_ANSWER})"
        if fo.timeouts or rc.timeouts:
            note += f"  ({fo.timeouts + rc.timeouts} DNS timeouts)"
        print(f"  {mode:>4} trial {i + 1:2d}: failover "
              f"{fmt(fo.seconds) if fo.ok else 'TIMEOUT':>7}  recovery "
              f"{fmt(rc.seconds) if rc.ok else 'TIMEOUT':>7}  logged down/up "
              f"{fmt(t.down_logged_s)}/{fmt(t.up_logged_s)}  probes seen while broken "
              f"{broken_probes}{note}", flush=True)
    return None


def summarize(trials: list[Trial]) -> dict[str, Any]:
    fo = [t.failover_s for t in trials if t.failover_ok and t.failover_s is not None]
    rc = [t.recovery_s for t in trials if t.recovery_ok and t.recovery_s is not None]
    dn = [t.down_logged_s for t in trials if t.down_logged_s is not None]
    up = [t.up_logged_s for t in trials if t.up_logged_s is not None]
    return {
        "trials": len(trials),
        "failover_failures": sum(not t.failover_ok for t in trials),
        "recovery_failures": sum(not t.recovery_ok for t in trials),
        "unexpected_answers": sum(1 for t in trials
                                  if t.failover_ok and t.failover_answer != NEXT_ANSWER),
        "dns_timeouts": sum(t.timeouts for t in trials),
        "failover": stats(fo), "recovery": stats(rc),
        "down_logged": stats(dn), "up_logged": stats(up),
    }


async def run_flap(h: Harness) -> dict[str, Any]:
    args = h.args
    if args.fresh_server or h.server is None or not h.server.running:
        err = await h.start_server(quiet=True)
        if err:
            return {"error": err}
    server, client, p1 = h.server, h.client, h.p1
    assert server is not None and client is not None
    pre = await poll_until(client, lambda a: a == P1_ANSWER, time.monotonic(),
                           args.interval, args.max_wait)
    if not pre.ok:
        return {"error": f"the answer never became {P1_ANSWER} before the flap test"}
    p1.rng = random.Random(args.seed)
    n_req = len(p1.requests)
    t_start = time.monotonic()
    p1.flaky(args.flap_rate)
    answers: list[tuple[float, str]] = []
    timeouts = 0
    changes = 0
    last: str | None = None
    time_on: dict[str, float] = {}
    deadline = t_start + args.flap_seconds
    for _ in range(int(args.flap_seconds / args.interval) + 10):
        now = time.monotonic()
        if now >= deadline:
            break
        r = await client.ask()
        if r.answer is None:
            timeouts += 1
        else:
            if last is not None and r.answer != last:
                changes += 1
            if last is not None and answers:
                time_on[last] = time_on.get(last, 0.0) + (r.received - answers[-1][0])
            last = r.answer
            answers.append((r.received, r.answer))
        now = time.monotonic()
        ticks = math.floor((now - t_start) / args.interval) + 1
        await asyncio.sleep(max(0.0, t_start + ticks * args.interval - now))
    t_end = time.monotonic()
    await p1.restore()
    reqs = p1.requests[n_req:]
    failed = sum(1 for _, o in reqs if o != "ok")
    logged = server.p1_changes_between(t_start, t_end)
    minutes = (t_end - t_start) / 60
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(reqs)]
    model = model_changes_per_minute(args.flap_rate, args.rise, args.fall, args.check_interval)
    return {
        "seconds": t_end - t_start,
        "rate": args.flap_rate,
        "probes": len(reqs),
        "probes_failed": failed,
        "probe_gap_median_s": statistics.median(gaps) if gaps else None,
        "queries": len(answers) + timeouts,
        "timeouts": timeouts,
        "answer_changes": changes,
        "answer_changes_per_min": changes / minutes if minutes else None,
        "answer_share": {k: v / (t_end - t_start) for k, v in sorted(time_on.items())},
        "logged_state_changes": len(logged),
        "logged_state_changes_per_min": len(logged) / minutes if minutes else None,
        "logged_lines": [ln.text for ln in logged],
        "model_undamped_changes_per_min": model,
    }


async def check_config(cfg: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *check_cmd(cfg), cwd=cfg.parent, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "geodns check did not finish within 60 s"
    return proc.returncode or 0, out.decode("utf-8", "replace")


def git_state() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        out["head"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
        st = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "geodns"],
                            capture_output=True, text=True, timeout=10).stdout
        out["geodns_uncommitted_files"] = len([ln for ln in st.splitlines() if ln.strip()])
    return out


async def bench(args: argparse.Namespace) -> int:
    args.modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    for m in args.modes:
        if m not in MODES:
            print(f"unknown --mode {m!r}; choose from {', '.join(MODES)}", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="geodns-failover-"))
    h = Harness(args, workdir)
    result: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(), "python": sys.version.split()[0], "git": git_state(),
    }
    t_begin = time.monotonic()
    all_trials: dict[str, list[Trial]] = {m: [] for m in args.modes}
    summary: dict[str, Any] = {}
    flap: dict[str, Any] | None = None
    code = 0
    try:
        await h.setup()
        cfg = h.write_config()
        result["endpoints"] = {ep.name: ep.url for ep in h.endpoints}
        result["config"] = cfg.read_text(encoding="utf-8")
        print(f"endpoints: {', '.join(f'{ep.name} {ep.url}' for ep in h.endpoints)}")
        print(f"config: {cfg}", flush=True)

        if not args.self_test and not args.geodns_cmd:
            rc, out = await check_config(cfg)
            result["check"] = {"rc": rc, "output": out}
            print(f"geodns check: rc={rc}: {out.strip()}", flush=True)
            if args.check_only or rc != 0:
                if rc != 0:
                    print("geodns does not accept the config; nothing measured", file=sys.stderr)
                return 0 if rc == 0 else 3

        rng = random.Random(args.seed)
        how = ("a fresh server per trial" if args.fresh_server else
               f"one server, {args.gap:g} s between trials")
        for mode in args.modes:
            print(f"mode {mode}: {args.trials} trials, {how}", flush=True)
            err = await run_trials(mode, h, rng, all_trials[mode])
            if err:
                print(f"  {mode}: stopped early: {err}", flush=True)
                result.setdefault("errors", []).append(f"{mode}: {err}")
                code = 4
        if args.flap_seconds > 0:
            print(f"flap: p1 fails {args.flap_rate:.0%} of requests for {args.flap_seconds:g} s",
                  flush=True)
            flap = await run_flap(h)
            if "error" in flap:
                code = 4
    except asyncio.CancelledError:
        print("\ninterrupted; stopping (what was measured so far follows)", file=sys.stderr)
        code = 130
    finally:
        for mode, trials in all_trials.items():
            if trials:
                summary[mode] = summarize(trials)
        result["trials"] = {m: [asdict(t) for t in ts] for m, ts in all_trials.items()}
        result["summary"] = summary
        if flap is not None:
            result["flap"] = flap
        if h.server is not None:
            result["last_server_cmd"] = h.server.cmd
            result["last_server_log_tail"] = h.server.tail(50)
        result["server_starts"] = h.starts
        await h.close()
        result["p1_state_change_lines"] = h.p1_changes_total
        result["elapsed_s"] = round(time.monotonic() - t_begin, 1)
        if summary or flap:
            print_summary(args, summary, flap)
            print(f"({h.starts} server start(s), {result['elapsed_s']:.0f} s in all)")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str) + "\n",
                                 encoding="utf-8")
            print(f"wrote {args.json}")
        if args.keep:
            print(f"kept {workdir} (config, zone, server-N.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def print_summary(args: argparse.Namespace, summary: dict[str, Any],
                  flap: dict[str, Any] | None) -> None:
    print()
    what = "stub server (--self-test)" if args.self_test else "geodns"
    damping = "" if args.flap_window is None else f", flap_window {args.flap_window:g}"
    how = ("a fresh server per trial" if args.fresh_server else
           f"one server, {args.gap:g} s between trials")
    print(f"Failover of {what}: health interval {args.check_interval:g} s, timeout "
          f"{args.check_timeout:g} s, rise {args.rise}, fall {args.fall}, jitter "
          f"{args.jitter:g}{damping}; {how}; queries every {args.interval * 1000:.0f} ms")
    hdr = (f"{'mode':<5} {'what':<9} {'trials':>6} {'failed':>6} {'median':>8} {'p95':>8} "
           f"{'max':>8} {'logged med':>10}  target")
    print(hdr)
    print("-" * len(hdr))
    for mode, s in summary.items():
        fo, rc = s["failover"], s["recovery"]
        fo_ok = None if fo["p95"] is None else (fo["p95"] <= 3.0 and s["failover_failures"] == 0)
        rc_ok = None if rc["max"] is None else (rc["max"] <= 5.0 and s["recovery_failures"] == 0)
        print(f"{mode:<5} {'failover':<9} {s['trials']:>6} {s['failover_failures']:>6} "
              f"{fmt(fo['median']):>8} {fmt(fo['p95']):>8} {fmt(fo['max']):>8} "
              f"{fmt(s['down_logged']['median']):>10}  p95 <= 3 s: {verdict(fo_ok)}")
        print(f"{'':<5} {'recovery':<9} {s['trials']:>6} {s['recovery_failures']:>6} "
              f"{fmt(rc['median']):>8} {fmt(rc['p95']):>8} {fmt(rc['max']):>8} "
              f"{fmt(s['up_logged']['median']):>10}  every one <= 5 s: {verdict(rc_ok)}")
        extra = []
        if s["unexpected_answers"]:
            extra.append(f"{s['unexpected_answers']} failovers to an answer other than "
                         f"{NEXT_ANSWER}")
        if s["dns_timeouts"]:
            extra.append(f"{s['dns_timeouts']} DNS queries timed out")
        if extra:
            print(f"{'':<5} note: {'; '.join(extra)}")
    if flap is not None:
        print()
        if "error" in flap:
            print(f"flap test: {flap['error']}")
            return
        share = ", ".join(f"{k} {v:.0%}" for k, v in flap["answer_share"].items())
        gap = flap["probe_gap_median_s"]
        print(f"flap test ({flap['seconds']:.0f} s, p1 fails {flap['rate']:.0%} at random): "
              f"p1 got {flap['probes']} probes, {flap['probes_failed']} failed"
              f"{f', one every {gap:.2f} s' if gap else ''}")
        print(f"  answer changed {flap['answer_changes']} times = "
              f"{flap['answer_changes_per_min']:.1f}/min  (time on each answer: {share})")
        print(f"  logged p1 state changes: {flap['logged_state_changes']} = "
              f"{flap['logged_state_changes_per_min']:.1f}/min")
        print(f"  for comparison, plain rise {args.rise}/fall {args.fall} at "
              f"{args.check_interval:g} s without flap damping would average "
              f"{flap['model_undamped_changes_per_min']:.1f}/min; "
              f"target: no more than a few a minute")


# ---------------------------------------------------------------------------
# --self-test: a stub "geodns" that health-checks the endpoints itself
class StubDNS(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[], str]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        if q.question:
            qq = q.question[0]
            name = qq.name.to_text().lower()
            if name == QNAME and qq.rdtype == dns.rdatatype.A:
                r.answer.append(dns.rrset.from_text(QNAME, 5, "IN", "A", self.answer()))
            elif name == ZONE_ORIGIN and qq.rdtype == dns.rdatatype.SOA:
                r.answer.append(dns.rrset.from_text(
                    ZONE_ORIGIN, 300, "IN", "SOA",
                    f"ns1.{ZONE_ORIGIN} hostmaster.{ZONE_ORIGIN} 1 3600 600 86400 300"))
            elif not name.endswith(ZONE_ORIGIN):
                r.set_rcode(dns.rcode.REFUSED)
        assert self.transport is not None
        self.transport.sendto(r.to_wire(), addr)


async def fake_geodns(cfg_path: Path, lifetime: float) -> int:
    """Reads the config this script writes, probes each PoP's HTTP check with
    the same interval/timeout/rise/fall/jitter/grace semantics as described
    for geodns, answers www.fo.example. A with the first PoP of default_order
    that is up, and logs 'state change pop=.. old=.. new=..' lines."""
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    host, _, port = cfg["listen"][0].rpartition(":")
    h = cfg.get("health", {})
    interval, timeout = float(h.get("interval", 1.0)), float(h.get("timeout", 0.8))
    rise, fall = int(h.get("rise", 2)), int(h.get("fall", 2))
    jitter, grace = float(h.get("jitter", 0.1)), float(h.get("grace", 5))
    order = cfg["default_order"]
    answers = {p: a for p, _, _, a in POPS}
    urls = {p: v["checks"][0]["url"] for p, v in cfg["pops"].items()}
    state = {p: "unknown" for p in urls}
    started = time.monotonic()
    rng = random.Random()

    def up(p: str) -> bool:
        if state[p] == "unknown":
            return time.monotonic() - started < grace
        return state[p] == "up"

    def answer() -> str:
        for p in order:
            if up(p):
                return answers[p]
        return answers[order[0]]

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} INFO stub.health: {msg}", file=sys.stderr, flush=True)

    async def probe(session: aiohttp.ClientSession, url: str) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(timeout), session.get(url) as resp:
                return resp.status == 200, f"status {resp.status}"
        except TimeoutError:
            return False, "timeout"
        except (OSError, aiohttp.ClientError) as exc:
            return False, type(exc).__name__

    async def check(session: aiohttp.ClientSession, p: str) -> None:
        ok_run = fail_run = 0
        await asyncio.sleep(rng.uniform(0, interval * jitter))
        for _ in range(int(lifetime / max(interval * (1 - jitter), 0.01)) + 10):
            begun = time.monotonic()
            ok, detail = await probe(session, urls[p])
            if ok:
                ok_run, fail_run = ok_run + 1, 0
                new = "up" if ok_run >= rise else state[p]
            else:
                ok_run, fail_run = 0, fail_run + 1
                new = "down" if fail_run >= fall else state[p]
            if new != state[p]:
                log(f'state change pop={p} old={state[p]} new={new} reason="{detail}"')
                state[p] = new
            spread = interval * jitter
            await asyncio.sleep(max(0.01, interval + rng.uniform(-spread, spread)
                                    - (time.monotonic() - begun)))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    transport, _ = await loop.create_datagram_endpoint(lambda: StubDNS(answer),
                                                       local_addr=(host, int(port)))
    log(f"stub serving on {host}:{port}")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        tasks = [asyncio.create_task(check(session, p)) for p in urls]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    transport.close()
    return 0


# ---------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(
        description="Failover benchmark for geodns's active health checks (see bench/README.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="failover trials per mode")
    ap.add_argument("--mode", default="stop",
                    help="how p1 fails, comma-separated list: stop (connection refused), "
                         "hang (accepts, never answers), 500 (answers 500)")
    ap.add_argument("--interval", type=float, default=0.05,
                    help="seconds between the client's DNS queries")
    ap.add_argument("--query-timeout", type=float, default=0.5, help="DNS query timeout (s)")
    ap.add_argument("--max-wait", type=float, default=30.0,
                    help="longest wait for a failover or a recovery; longer is a failure")
    ap.add_argument("--ecs", metavar="SUBNET",
                    help="send this EDNS Client Subnet (e.g. 77.88.8.0/24, nearest p1 then p2) "
                         "instead of relying on default_order")
    ap.add_argument("--flap-seconds", type=float, default=60.0,
                    help="length of the flap test (0 skips it)")
    ap.add_argument("--flap-rate", type=float, default=0.3,
                    help="share of p1's health requests that fail in the flap test")
    ap.add_argument("--seed", type=int, default=1, help="seed for the flap and the pauses")
    g = ap.add_argument_group("health settings written to geodns's config (health: section)")
    g.add_argument("--check-interval", type=float, default=1.0)
    g.add_argument("--check-timeout", type=float, default=0.8)
    g.add_argument("--rise", type=int, default=2)
    g.add_argument("--fall", type=int, default=2)
    g.add_argument("--jitter", type=float, default=0.1)
    g.add_argument("--grace", type=float, default=5.0)
    g.add_argument("--flap-window", type=float,
                   help="write health.flap_window (0 turns flap damping off); default: leave "
                        "it out, so geodns's default applies")
    ap.add_argument("--reuse-server", dest="fresh_server", action="store_false",
                    help="run all trials (and the flap test) against one server instead of "
                         "starting a fresh one for each; back-to-back outages then meet "
                         "geodns's flap damping, see --gap")
    ap.add_argument("--gap", type=float, default=0.0,
                    help="with --reuse-server: seconds of quiet between trials")
    ap.add_argument("--geodns-cmd",
                    help="how to start the server; shell words, {python} {config} {zones} "
                         "{host} {port} are replaced. Default: "
                         "'{python} -m geodns serve --config {config}' (python = this "
                         "interpreter); with it, 'geodns check' runs first")
    ap.add_argument("--check-only", action="store_true",
                    help="write the config, run 'geodns check' on it and exit with 0 if "
                         "geodns accepts it")
    ap.add_argument("--self-test", action="store_true",
                    help="run against a stub DNS server in this script that health-checks "
                         "the endpoints itself (tests the benchmark, not geodns)")
    ap.add_argument("--json", type=Path, help="write settings, every trial and the summary here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (config, zone, server log)")
    ap.add_argument("--fake-geodns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--fake-lifetime", type=float, default=3600, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.fake_geodns:
        return asyncio.run(fake_geodns(args.config, args.fake_lifetime))
    if args.trials < 0 or args.interval <= 0 or args.max_wait <= 0:
        ap.error("--trials must be >= 0, --interval and --max-wait > 0")

    async def guarded() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(args)

    try:
        return asyncio.run(guarded())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
