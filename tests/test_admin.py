"""The admin API over real HTTP: tokens, drains, the state file."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import pytest

from geodns.config import Address, Config
from geodns.errors import StartupError
from geodns.server.app import Server
from geodns.steering import Pop

ZONE = """\
origin: adm.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}}
"""
POPS = {"fra": Pop("fra", 50.11, 8.68, order=0), "iad": Pop("iad", 38.95, -77.45, order=1)}
TOKEN = "s3cret-token-for-tests"


def config(tmp_path: Path, token: str | None = TOKEN) -> Config:
    zones = tmp_path / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "adm.example.yaml").write_text(ZONE)
    return Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                  admin=Address("127.0.0.1", 0), admin_token=token,
                  state_file=tmp_path / "state.json", reload_interval=0.2, pops=POPS,
                  default_order=("fra", "iad"))


@pytest.fixture
async def server(tmp_path: Path):
    srv = Server(config(tmp_path))
    await srv.start()
    yield srv
    await srv.shutdown()


def url(srv: Server, path: str) -> str:
    assert srv.admin is not None
    return f"http://127.0.0.1:{srv.admin.port}{path}"


async def answer(srv: Server) -> str:
    q = dns.message.make_query("www.adm.example.", "A")  # from 127.0.0.1: default order
    resp = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
    return resp.answer[0][0].to_text()


async def test_health_and_ready(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(url(server, "/healthz")) as r:
            assert r.status == 200
        async with s.get(url(server, "/readyz")) as r:
            assert r.status == 200 and (await r.json())["ready"] is True


async def test_drain_needs_the_right_token(server: Server, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with aiohttp.ClientSession() as s:
        async with s.post(url(server, "/pops/fra/drain")) as r:
            assert r.status == 401
        async with s.post(url(server, "/pops/fra/drain"),
                          headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        assert "wrong token" in caplog.text and "no token" in caplog.text
        assert await answer(server) == "192.0.2.1"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.post(url(server, "/pops/fra/drain"), headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["state"] == "draining"
        assert await answer(server) == "192.0.2.2"  # at once, in this worker
        async with s.post(url(server, "/pops/nowhere/drain"), headers=auth) as r:
            assert r.status == 404
        async with s.post(url(server, "/pops/fra/state"), headers=auth,
                          json={"state": "sideways"}) as r:
            assert r.status == 400
        async with s.post(url(server, "/pops/fra/undrain"), headers=auth) as r:
            assert r.status == 200 and (await r.json())["state"] == "unknown"
        assert await answer(server) == "192.0.2.1"
        async with s.post(url(server, "/pops/fra/state"), headers=auth,
                          json={"state": "down"}) as r:
            assert r.status == 200
        assert await answer(server) == "192.0.2.2"


async def test_changes_disabled_without_a_token(tmp_path: Path) -> None:
    srv = Server(config(tmp_path, token=None))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(url(srv, "/pops/fra/drain"),
                          headers={"Authorization": "Bearer anything"}) as r:
            assert r.status == 403
    finally:
        await srv.shutdown()


async def test_drain_survives_a_restart_and_reaches_other_workers(tmp_path: Path) -> None:
    first = Server(config(tmp_path))
    await first.start()
    other = Server(config(tmp_path), admin=False)  # a second worker: reads the state file
    await other.start()
    try:
        async with aiohttp.ClientSession() as s, s.post(url(first, "/pops/fra/drain"),
                          headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
        assert json.loads((tmp_path / "state.json").read_text())["pops"] == \
            {"fra": "draining"}
        for _ in range(30):
            if await answer(other) == "192.0.2.2":
                break
            await asyncio.sleep(0.1)
        assert await answer(other) == "192.0.2.2"
    finally:
        await first.shutdown()
        await other.shutdown()
    restarted = Server(config(tmp_path))
    await restarted.start()
    try:
        assert await answer(restarted) == "192.0.2.2"
        assert restarted.store.view().state("fra") == "draining"
    finally:
        await restarted.shutdown()


async def test_explain_over_http(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(url(server, "/explain"), params={
                "name": "www.adm.example", "type": "A", "client": "127.0.0.1"}) as r:
            body = await r.json()
            assert r.status == 200 and body["steering"]["chosen"] == ["fra"]
            assert body["answer"]["answer"][0].split()[-1] == "192.0.2.1"
        async with s.get(url(server, "/explain"), params={"name": "x"}) as r:
            assert r.status == 400


def test_broken_state_file_is_reported_and_ignored(tmp_path: Path, caplog) -> None:
    from geodns import state

    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert state.load(path) == {}
    assert "not read" in caplog.text
    state.save(path, {"fra": "draining", "bad": "nonsense"})
    assert state.load(path) == {"fra": "draining"}


async def test_cli_drain_and_undrain(server: Server, capsys) -> None:
    from geodns.cli import main

    base = url(server, "")
    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, main, ["drain", "fra", "--admin", base, "--token",
                                                   TOKEN])
    assert code == 0 and "fra: unknown -> draining" in capsys.readouterr().out
    assert await answer(server) == "192.0.2.2"
    code = await loop.run_in_executor(None, main, ["undrain", "fra", "--admin", base,
                                                   "--token", "wrong-token-xxxxxxxx"])
    assert code == 1 and "401" in capsys.readouterr().err
    code = await loop.run_in_executor(None, main, ["undrain", "fra", "--admin", base,
                                                   "--token", TOKEN])
    assert code == 0 and await answer(server) == "192.0.2.1"
    code = await loop.run_in_executor(None, main, ["drain", "fra", "--admin",
                                                   "http://127.0.0.1:9", "--token", TOKEN])
    assert code == 1 and "cannot reach" in capsys.readouterr().err


async def _readyz(srv: Server) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(url(srv, "/readyz")) as r:
        return r.status, await r.json()


async def test_not_ready_without_zones(tmp_path: Path) -> None:
    """A node serving no zone is up (/healthz) but must not get traffic
    (/readyz 503, with the reason)."""
    cfg = config(tmp_path)
    (cfg.zones_dir / "adm.example.yaml").write_text("records: [broken")
    srv = Server(cfg)
    await srv.start()
    try:
        status, body = await _readyz(srv)
        assert status == 503 and body["ready"] is False
        (problem,) = body["problems"]  # type: ignore[misc]
        assert "no zone is served" in problem
        async with aiohttp.ClientSession() as s, s.get(url(srv, "/healthz")) as r:
            assert r.status == 200
    finally:
        await srv.shutdown()


async def test_steering_without_its_geoip_database_does_not_start(tmp_path: Path) -> None:
    """PoPs without a usable GeoIP database would steer nobody right: the
    node refuses to start, naming the file (and listens on nothing)."""
    cfg = config(tmp_path)
    cfg.geoip_database = tmp_path / "missing.mmdb"
    srv = Server(cfg)
    with pytest.raises(StartupError, match=r"missing\.mmdb"):
        await srv.start()
    await srv.shutdown()
    assert srv.bound == []


async def test_not_ready_once_stopping(server: Server) -> None:
    assert (await _readyz(server))[0] == 200
    server.request_stop()
    status, body = await _readyz(server)
    assert status == 503 and body["problems"] == ["stopping"]
