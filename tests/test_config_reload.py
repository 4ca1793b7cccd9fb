"""The whole configuration reloads in place (issue 9, defect 7).

PoPs, checks, rules, default order and the latency table change on
``POST /reload``, on SIGHUP and when the file changes on disk, atomically and
under the same last-good rule as zones; settings a running process cannot
take (listen addresses, workers, the admin address) are reported as needing
a restart.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import dns.query
import pytest
from aiohttp import web

from geodns.config import load_config
from geodns.problems import Problems
from geodns.server.app import Server

pytest.importorskip("mmdb_writer")
from tests.geoip.make_mmdb import write

TOKEN = "token-for-config-reload-tests"
ZONE = """\
origin: cfg.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, sin: 192.0.2.3}}
"""
# 8.8.8.0/24 is in Ashburn (see tests/geoip/make_mmdb.py): nearer fra than sin,
# until sin gets a bias of +99 (it then looks a hundred times nearer).
ASHBURN = "8.8.8.0/24"
SIN_PULLS = "  sin: {location: [1.35, 103.99], bias: 99}\n"


def config_text(pops: str, extra: str = "", listen: str = "127.0.0.1:0",
                admin: str = "127.0.0.1:0") -> str:
    return (f"listen: ['{listen}']\nzones: zones\n"
            f"admin: {{listen: '{admin}', token: {TOKEN}}}\n"
            f"reload: {{interval: 0.2}}\ngeoip: {{database: geo.mmdb}}\n"
            f"pops:\n{pops}{extra}")


FRA = "  fra: {location: [50.11, 8.68]}\n"
SIN = "  sin: {location: [1.35, 103.99]}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "cfg.example.yaml").write_text(ZONE)
    write(tmp_path / "geo.mmdb", {"198.18.0.0/15": "frankfurt"})
    (tmp_path / "geodns.yaml").write_text(config_text(FRA + SIN))
    return tmp_path


async def start(tree: Path) -> Server:
    problems = Problems()
    cfg = load_config(tree / "geodns.yaml", problems)
    assert not problems, list(map(str, problems))
    srv = Server(cfg)
    await srv.start()
    return srv


async def steered(srv: Server, subnet: str = ASHBURN) -> str:
    q = dns.message.make_query("www.cfg.example.", "A", use_edns=0, options=[
        dns.edns.ECSOption(subnet.split("/")[0], int(subnet.split("/")[1]), 0)])
    resp = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
    return resp.answer[0][0].to_text() if resp.answer else dns.rcode.to_text(resp.rcode())


async def admin(srv: Server, method: str, path: str) -> tuple[int, Any]:
    assert srv.admin is not None
    url = f"http://127.0.0.1:{srv.admin.port}{path}"
    async with aiohttp.ClientSession() as s, s.request(
            method, url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        return r.status, await r.json()


async def until(check: Any, what: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {limit} s: {what}")


async def test_pop_bias_default_order_and_latency_apply_on_reload(tree: Path) -> None:
    srv = await start(tree)
    try:
        assert await steered(srv) == "192.0.2.1"  # Ashburn client: fra
        before = (await admin(srv, "GET", "/status"))[1]["serving"]["revision"]
        # A bias that pushes fra away, and a latency table for another network.
        (tree / "geodns.yaml").write_text(config_text(
            FRA + SIN_PULLS, "latency: [{network: 203.0.113.0/24, pops: {fra: 1, sin: 1000}}]\n"))
        status, body = await admin(srv, "POST", "/reload")
        assert status == 200 and body["reloaded"] is True, body
        assert body["configuration_errors"] == [] and body["revision"] != before
        assert await steered(srv) == "192.0.2.3"  # the bias moved Ashburn to sin
        assert await steered(srv, "203.0.113.0/24") == "192.0.2.1"  # measured: fra
        doc = (await admin(srv, "GET", "/status"))[1]
        assert doc["serving"]["revision"] == body["revision"]
        assert [p["bias"] for p in doc["pops"]] == [0.0, 99.0]
    finally:
        await srv.shutdown()


async def test_a_broken_configuration_keeps_the_last_good_one(tree: Path) -> None:
    srv = await start(tree)
    try:
        good = (await admin(srv, "GET", "/status"))[1]["serving"]["revision"]
        (tree / "geodns.yaml").write_text(config_text(
            "  fra: {location: [500, 8.68]}\n" + SIN_PULLS))
        status, body = await admin(srv, "POST", "/reload")
        assert status == 200
        (problem,) = body["configuration_errors"]
        assert problem.startswith(f"{tree / 'geodns.yaml'}:") and "latitude" in problem
        assert await steered(srv) == "192.0.2.1"  # the bias did not apply either
        doc = (await admin(srv, "GET", "/status"))[1]
        assert doc["configuration"]["errors"] == [problem]
        assert any("configuration not applied" in e["message"] for e in doc["events"])
        assert doc["serving"]["revision"] != good  # the zones' documents were read again
        assert srv.snapshot.config.pops["sin"].bias == 0.0
        # Removing a PoP a served zone uses would stop that zone: refused too.
        (tree / "geodns.yaml").write_text(config_text(FRA))
        body = (await admin(srv, "POST", "/reload"))[1]
        assert any("unknown PoP 'sin'" in p for p in body["configuration_errors"]), body
        assert await steered(srv, "1.1.1.0/24") == "192.0.2.3"  # sin still served
        # Fixed: applied, errors gone.
        (tree / "geodns.yaml").write_text(config_text(FRA + SIN_PULLS))
        body = (await admin(srv, "POST", "/reload"))[1]
        assert body["configuration_errors"] == []
        assert await steered(srv) == "192.0.2.3"
        metrics = await metrics_text(srv)
        assert "geodns_config_errors 0.0" in metrics
    finally:
        await srv.shutdown()


async def metrics_text(srv: Server) -> str:
    assert srv.admin is not None
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{srv.admin.port}/metrics") as r:
        return await r.text()


async def test_the_file_is_polled_and_restart_only_settings_are_reported(tree: Path,
                                                                         caplog) -> None:
    srv = await start(tree)
    try:
        (tree / "geodns.yaml").write_text(config_text(FRA + SIN_PULLS, "workers: 3\n",
                                                      listen="127.0.0.2:0"))

        async def moved() -> bool:
            return await steered(srv) == "192.0.2.3"

        await until(moved, "the edited configuration applied without a signal")
        doc = (await admin(srv, "GET", "/status"))[1]
        restart = doc["configuration"]["restart_needed"]
        assert any(r.startswith("listen addresses changed") for r in restart), restart
        assert any(r.startswith("workers changed") for r in restart), restart
        assert "needs a restart" in caplog.text
        assert srv.bound[0].host == "127.0.0.1"  # still listening where it was
        assert "geodns_config_restart_needed 2.0" in await metrics_text(srv)
    finally:
        await srv.shutdown()


class Endpoint:
    """An HTTP health endpoint the test switches between healthy and not."""

    def __init__(self) -> None:
        self.ok = True
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(status=200 if self.ok else 500)

        app = web.Application()
        app.router.add_get("/health", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_checks_added_by_a_reload_start_probing(tree: Path) -> None:
    endpoint = Endpoint()
    await endpoint.start()
    srv = await start(tree)
    try:
        assert srv.checker is not None and not srv.checker.units  # no checks yet
        endpoint.ok = False
        check = (f"  fra: {{location: [50.11, 8.68], checks: [{{type: http, url: "
                 f"'http://127.0.0.1:{endpoint.port}/health', interval: 0.1, "
                 f"timeout: 0.08, rise: 1, fall: 1}}]}}\n")
        (tree / "geodns.yaml").write_text(config_text(check + SIN))
        await admin(srv, "POST", "/reload")

        async def fra_down() -> bool:
            return await steered(srv) == "192.0.2.3"

        await until(fra_down, "fra down by its new check")
        endpoint.ok = True

        async def fra_up() -> bool:
            return await steered(srv) == "192.0.2.1"

        await until(fra_up, "fra back up")
        # The check goes away with the next configuration: fra is unknown again.
        (tree / "geodns.yaml").write_text(config_text(FRA + SIN))
        await admin(srv, "POST", "/reload")
        assert not srv.checker.units
        doc = (await admin(srv, "GET", "/status"))[1]
        assert doc["pops"][0]["state"] == "unknown"
    finally:
        await srv.shutdown()
        assert endpoint.runner is not None
        await endpoint.runner.cleanup()


def test_sighup_reloads_the_configuration(tree: Path) -> None:
    """A real process: the configuration's edit is served after SIGHUP (with
    polling out of the way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def text(bias: int) -> str:
        return (f"listen: ['127.0.0.1:{port}']\nzones: zones\nreload: {{interval: 60}}\n"
                f"geoip: {{database: geo.mmdb}}\npops:\n"
                f"{FRA}  sin: {{location: [1.35, 103.99], bias: {bias}}}\n")

    (tree / "geodns.yaml").write_text(text(0))
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config",
                             str(tree / "geodns.yaml")], stderr=subprocess.PIPE, text=True)
    q = dns.message.make_query("www.cfg.example.", "A", use_edns=0,
                               options=[dns.edns.ECSOption("8.8.8.0", 24, 0)])

    def answer() -> str | None:
        try:
            resp = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
        except (dns.exception.Timeout, ConnectionRefusedError):
            return None
        return resp.answer[0][0].to_text()

    try:
        deadline = time.monotonic() + 20
        while answer() != "192.0.2.1" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer() == "192.0.2.1"
        (tree / "geodns.yaml").write_text(text(99))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while answer() != "192.0.2.3" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer() == "192.0.2.3"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "configuration loaded" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

