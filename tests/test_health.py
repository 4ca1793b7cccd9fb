"""Health checks: the pure state machine, probes against real endpoints on
loopback, and failover through a running server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
from aiohttp import web

from geodns.config import Address, Config
from geodns.health.checker import HealthChecker, HealthSettings
from geodns.health.probes import CheckSpec, Prober
from geodns.health.state import CheckState, PopState, Result, effective, penalty_ms
from geodns.health.store import LocalHealthStore
from geodns.server.app import Server
from geodns.steering import DOWN, UNKNOWN, UP, Pop

OK, BAD = Result(True, 1.0, "ok"), Result(False, None, "bad")


# -- the state machine ------------------------------------------------------------------

def test_rise_and_fall_hysteresis() -> None:
    c = CheckState(rise=2, fall=3, flap_window=0)  # plain hysteresis, no damping
    assert not c.record(OK) and c.state == UNKNOWN
    assert c.record(OK) and c.state == UP
    assert not c.record(BAD) and not c.record(BAD) and c.state == UP
    assert not c.record(OK)  # the failure run is broken
    assert not c.record(BAD) and not c.record(BAD) and c.record(BAD) and c.state == DOWN
    assert not c.record(OK) and c.record(OK) and c.state == UP


@pytest.mark.parametrize("require,states,expected", [
    ("all", [UP, UP, UP], UP), ("all", [UP, DOWN, UP], DOWN), ("all", [UP, UNKNOWN, UP], UNKNOWN),
    ("any", [DOWN, UP, DOWN], UP), ("any", [DOWN, DOWN, DOWN], DOWN),
    (2, [UP, DOWN, UP], UP), (2, [UP, DOWN, DOWN], DOWN), (2, [UP, DOWN, UNKNOWN], UNKNOWN),
])
def test_pop_policies(require, states, expected) -> None:
    checks = [CheckState(1, 1, state=s) for s in states]
    assert PopState(checks, require).verdict() == expected


def test_grace_period_and_penalty() -> None:
    pop = PopState([CheckState(2, 2)])
    assert effective(pop, now=4.9, started=0.0, grace=5.0) == UNKNOWN  # counts as up
    assert effective(pop, now=5.0, started=0.0, grace=5.0) == DOWN  # no verdict in time
    assert effective(PopState([]), now=100, started=0, grace=5) == UNKNOWN  # no checks
    assert penalty_ms(None, 250) == 0 and penalty_ms(240, 250) == 0
    assert penalty_ms(300, 250) == 50 and penalty_ms(309, 250) == 50


def test_checker_logs_one_line_per_state_change(caplog) -> None:
    caplog.set_level("INFO")
    spec = CheckSpec("tcp", "127.0.0.1:1", rise=2, fall=2)
    health = LocalHealthStore()
    changes = []
    health.subscribe(lambda view: changes.append(1))
    hc = HealthChecker({"fra": [spec], "iad": [spec]}, {}, health, HealthSettings(grace=5),
                       clock=lambda: 0.0)
    hc.record(spec, BAD)
    hc.record(spec, BAD)
    assert health.state("fra") == DOWN and health.state("iad") == DOWN
    lines = [r.getMessage() for r in caplog.records if "state change" in r.getMessage()]
    assert len(lines) == 2 and "pop=fra old=unknown new=down" in lines[0]
    assert 'reason="tcp 127.0.0.1:1: bad"' in lines[0]
    assert len(hc.check_states) == 1  # the same check, used twice, runs once
    hc.record(spec, OK)
    hc.record(spec, OK)
    assert health.state("fra") == UP and len(changes) == 2


def test_slow_probes_add_a_penalty() -> None:
    spec = CheckSpec("tcp", "127.0.0.1:1", rise=1, fall=1)
    health = LocalHealthStore()
    hc = HealthChecker({"fra": [spec]}, {}, health, HealthSettings(slow_ms=100))
    for _ in range(10):
        hc.record(spec, Result(True, 400.0, "slow"))
    assert health.penalty_ms("fra") >= 250


# -- probes against real endpoints ------------------------------------------------------

class Endpoint:
    """A real HTTP endpoint whose behaviour a test switches."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handler(self, request: web.Request) -> web.Response:
        if self.mode == "500":
            return web.Response(status=500, text="broken")
        if self.mode == "slow":
            await asyncio.sleep(0.3)
        if self.mode == "hang":
            await asyncio.sleep(30)
        return web.Response(text="all ok" if self.mode != "wrong-body" else "nope")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/health", self.handler)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture
async def endpoint():
    ep = Endpoint()
    await ep.start()
    yield ep
    await ep.stop()


async def _hanging_server() -> tuple[asyncio.AbstractServer, int, list]:
    """Accepts connections and never says a word."""
    writers: list = []

    async def silent(reader, writer):
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], writers


@pytest.mark.parametrize("mode,ok,detail", [
    ("ok", True, "status 200"), ("500", False, "status 500, expected 200"),
    ("wrong-body", False, "lacks 'all ok'"), ("slow", True, "status 200"),
    ("hang", False, "timeout after 1 s"),
])
async def test_http_probe(endpoint: Endpoint, mode: str, ok: bool, detail: str) -> None:
    endpoint.mode = mode
    prober = Prober()
    try:
        t0 = time.monotonic()
        result = await prober.run(CheckSpec("http", endpoint.url, timeout=1.0,
                                            contains="all ok"))
        assert time.monotonic() - t0 < 1.8  # a hanging target costs one timeout, not two
    finally:
        await prober.close()
    assert result.ok == ok and detail in result.detail, result
    if mode == "slow":
        assert result.rtt_ms is not None and result.rtt_ms >= 290


async def test_refused_and_hanging_tcp_and_http() -> None:
    prober = Prober()
    server, port, writers = await _hanging_server()
    try:
        refused = await prober.run(CheckSpec("http", "http://127.0.0.1:1/health", timeout=0.5))
        assert not refused.ok and "refused" in refused.detail
        assert not (await prober.run(CheckSpec("tcp", "127.0.0.1:1", timeout=0.5))).ok
        assert (await prober.run(CheckSpec("tcp", f"127.0.0.1:{port}", timeout=0.5))).ok
        t0 = time.monotonic()
        hung = await prober.run(CheckSpec("http", f"http://127.0.0.1:{port}/", timeout=0.4))
        assert not hung.ok and "timeout" in hung.detail and time.monotonic() - t0 < 0.8
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
        await prober.close()


async def test_dns_probe(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "p.example.yaml").write_text(
        "soa: {mname: ns1, rname: h}\nrecords:\n  '@': {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n")
    srv = Server(Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones))
    await srv.start()
    prober = Prober()
    try:
        target = f"127.0.0.1:{srv.bound[0].port}"
        good = await prober.run(CheckSpec("dns", target, name="ns1.p.example.",
                                          answer="192.0.2.53"))
        assert good.ok, good
        wrong = await prober.run(CheckSpec("dns", target, name="ns1.p.example.",
                                           answer="192.0.2.99"))
        assert not wrong.ok and "lacks" in wrong.detail
        nx = await prober.run(CheckSpec("dns", target, name="nothere.p.example."))
        assert not nx.ok and "NXDOMAIN" in nx.detail
        silent = await prober.run(CheckSpec("dns", "127.0.0.1:9", name="x.", timeout=0.3))
        assert not silent.ok
    finally:
        await prober.close()
        await srv.shutdown()


# -- failover through a running server ---------------------------------------------------

ZONE = """\
origin: hc.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {p1: 192.0.2.1, p2: 192.0.2.2}}
"""


async def _answer(srv: Server) -> tuple[str, float]:
    q = dns.message.make_query("www.hc.example.", "A")
    t0 = time.monotonic()
    resp = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
    return resp.answer[0][0].to_text(), time.monotonic() - t0


async def _until(condition, what: str, limit: float = 8.0) -> float:
    """Seconds until ``await condition()`` is true; fails after ``limit``."""
    t0 = time.monotonic()
    while not await condition():
        assert time.monotonic() - t0 < limit, f"{what}: not within {limit} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


# The probes run in the test's own event loop, next to the endpoints and the
# server: a timeout far above what a busy machine adds to a local HTTP request,
# so that a healthy endpoint never looks down.
PROBE_TIMEOUT = 0.8


async def test_failover_and_recovery(tmp_path: Path) -> None:
    p1, p2 = Endpoint(), Endpoint()
    await p1.start()
    await p2.start()
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "hc.example.yaml").write_text(ZONE)
    fast = dict(interval=0.2, timeout=PROBE_TIMEOUT, rise=2, fall=2, jitter=0.1)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 pops={"p1": Pop("p1", 50.1, 8.7, order=0), "p2": Pop("p2", 48.9, 2.4, order=1)},
                 default_order=("p1", "p2"),
                 checks={"p1": [CheckSpec("http", p1.url, **fast)],
                         "p2": [CheckSpec("http", p2.url, **fast)]},
                 health=HealthSettings(grace=2.0))
    srv = Server(cfg)
    await srv.start()

    async def answer_is(expected: str) -> bool:
        return (await _answer(srv))[0] == expected

    try:
        assert (await _answer(srv))[0] == "192.0.2.1"  # grace: unknown counts as up

        async def p1_up() -> bool:
            return srv.store.view().state("p1") == UP

        await _until(p1_up, "p1 up")
        # The endpoint hangs: probes wait out their timeout (two of them, fall 2)
        # while DNS answers stay fast; a probe that blocked the loop would hold
        # an answer back for most of a timeout.
        p1.mode = "hang"
        slowest = 0.0

        async def moved() -> bool:
            nonlocal slowest
            answer, took = await _answer(srv)
            slowest = max(slowest, took)
            return answer == "192.0.2.2"

        await _until(moved, "failover from a hanging p1")
        assert slowest < PROBE_TIMEOUT / 2, slowest
        p1.mode = "ok"
        await _until(lambda: answer_is("192.0.2.1"), "back to p1")
        # Refused: the endpoint goes away.
        await p1.stop()
        await _until(lambda: answer_is("192.0.2.2"), "failover from a refusing p1")
        # And back on the same port.
        await p1.start(p1.port)
        await _until(lambda: answer_is("192.0.2.1"), "back to p1 on the same port")
        assert srv.checker is not None and srv.checker.pops["p1"].changes >= 4
    finally:
        await srv.shutdown()
        await p1.stop()
        await p2.stop()


async def test_500_brings_a_pop_down(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.mode = "500"
    spec = CheckSpec("http", endpoint.url, interval=0.1, timeout=PROBE_TIMEOUT)
    health = LocalHealthStore()
    hc = HealthChecker({"p1": [spec]}, {}, health, HealthSettings(grace=5))
    hc.start()

    async def down() -> bool:
        return health.state("p1") == DOWN

    try:
        await _until(down, "p1 down")
        assert "status 500" in (hc.check_states[spec].last.detail)  # type: ignore[union-attr]
    finally:
        await hc.stop()


async def test_record_checks_move_only_that_record(tmp_path: Path) -> None:
    """api's own check fails at p1 while p1's PoP check passes: api moves to p2,
    www stays on p1.  Removing the check from the zone brings api back."""
    pop_ep, api_ep = Endpoint(), Endpoint()
    await pop_ep.start()
    await api_ep.start()
    api_ep.mode = "500"
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_with_check = ZONE + f"""\
  api:
    A:
      steer:
        pops: {{p1: 192.0.2.11, p2: 192.0.2.12}}
        checks:
          p1: [{{type: http, url: "{api_ep.url}", interval: 0.2, timeout: 0.15}}]
"""
    path = zones / "hc.example.yaml"
    path.write_text(zone_with_check)
    fast = dict(interval=0.2, timeout=PROBE_TIMEOUT, rise=2, fall=2, jitter=0.1)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 reload_interval=0.2,
                 pops={"p1": Pop("p1", 50.1, 8.7, order=0), "p2": Pop("p2", 48.9, 2.4, order=1)},
                 default_order=("p1", "p2"),
                 checks={"p1": [CheckSpec("http", pop_ep.url, **fast)]},
                 health=HealthSettings(grace=2.0))
    srv = Server(cfg)
    await srv.start()

    async def ask(name: str) -> str:
        q = dns.message.make_query(f"{name}.hc.example.", "A")
        resp = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
        return resp.answer[0][0].to_text()

    async def answers(name: str, expected: str) -> bool:
        return await ask(name) == expected

    async def p1_up() -> bool:
        return srv.store.view().state("p1") == UP

    try:
        await _until(lambda: answers("api", "192.0.2.12"), "api off p1")  # its own check failed
        await _until(p1_up, "p1 up")
        assert await ask("www") == "192.0.2.1"  # the PoP itself is fine
        assert await ask("api") == "192.0.2.12"
        path.write_text(ZONE + "  api:\n    A:\n      steer: {pops: {p1: 192.0.2.11, "
                        "p2: 192.0.2.12}}\n")
        await _until(lambda: answers("api", "192.0.2.11"), "api back on p1")
        assert srv.checker is not None and not any(
            not isinstance(u, str) for u in srv.checker.units)
    finally:
        await srv.shutdown()
        await pop_ep.stop()
        await api_ep.stop()


def test_record_check_validation() -> None:
    from geodns.yamlsrc import Problems
    from geodns.zones.loader import load_zone_text

    problems = Problems()
    text = ("origin: v.example.\nsoa: {mname: ns1, rname: h}\nrecords:\n  '@': {NS: [ns1]}\n"
            "  ns1: {A: 192.0.2.1}\n  w: {A: {steer: {pops: {fra: 192.0.2.1}, checks: "
            "{iad: [{type: tcp, address: '192.0.2.1:80'}], fra: [{type: smtp}]}}}}\n")
    load_zone_text(text, "z.yaml", "v.example.", problems, pops={"fra", "iad"})
    found = [str(p) for p in problems]
    assert any("checks for PoP 'iad', which has no answer" in p for p in found), found
    assert any("check type must be http, https, tcp or dns" in p for p in found), found


def test_flap_damping() -> None:
    c = CheckState(rise=2, fall=2, flap_window=60)
    for t, r in enumerate([OK, OK, BAD, OK, BAD, OK, BAD, OK]):  # three isolated failures
        c.record(r, float(t))
    assert c.state == UP and c.rise_needed(8) == 2 + 3
    c.record(BAD, 8)
    assert c.record(BAD, 9) and c.state == DOWN  # going down is never delayed
    for t in range(10, 14):
        assert not c.record(OK, float(t))
    assert c.record(OK, 14) and c.state == UP  # 5 successes needed
    assert c.rise_needed(200) == 2  # the window has passed
    undamped = CheckState(rise=2, fall=2, flap_window=0)
    undamped.short_runs = [1.0, 2.0, 3.0]
    assert undamped.rise_needed(4) == 2


def test_clean_outages_back_to_back_are_not_damped() -> None:
    c = CheckState(rise=2, fall=2)
    t = 0.0
    for _ in range(20):  # down 4 s, up 4 s, again and again
        for _ in range(4):
            c.record(BAD, t)
            t += 1
        assert c.state == DOWN
        c.record(OK, t)
        assert c.record(OK, t + 1) and c.state == UP  # back after rise, every time
        t += 4


def test_flaky_target_changes_state_a_few_times_a_minute() -> None:
    import random

    rnd = random.Random(30)
    c = CheckState(rise=2, fall=2)
    changes = 0
    for t in range(3600):  # an hour of 1-second probes, 30% failing
        changes += c.record(OK if rnd.random() >= 0.3 else BAD, float(t))
    assert changes / 60 <= 3, changes / 60
