"""GET /status and POST /reload on a running node, and the pieces behind
them (event log, answer history) on their own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import pytest

from geodns import __version__
from geodns.config import Address, Config
from geodns.health.checker import HealthSettings
from geodns.health.probes import CheckSpec
from geodns.server.app import Server
from geodns.status import AnswerHistory, EventLog
from geodns.steering import Pop

ZONE = """\
origin: st.example.
soa: {mname: ns1, rname: h, serial: 7}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}}
"""
TOKEN = "status-test-token-123"


@pytest.fixture
async def server(tmp_path: Path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "st.example.yaml").write_text(ZONE)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 admin=Address("127.0.0.1", 0), admin_token=TOKEN, reload_interval=0.2,
                 identity="node-test-1",
                 pops={"fra": Pop("fra", 50.11, 8.68, city="Frankfurt", country="DE",
                                  continent="EU", order=0),
                       "iad": Pop("iad", 38.95, -77.45, order=1)},
                 default_order=("fra", "iad"),
                 checks={"iad": [CheckSpec("tcp", "127.0.0.1:1", interval=0.1, timeout=0.05)]},
                 health=HealthSettings(grace=5))
    srv = Server(cfg)
    srv.history = AnswerHistory(interval=0.2)
    await srv.start()
    yield srv, zones
    await srv.shutdown()


async def get_status(srv: Server) -> dict[str, Any]:
    assert srv.admin is not None
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{srv.admin.port}/status") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        body: dict[str, Any] = await r.json()
        return body


async def post(srv: Server, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    assert srv.admin is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, \
            s.post(f"http://127.0.0.1:{srv.admin.port}{path}", headers=headers) as r:
        return r.status, await r.json()


async def wait_for(predicate: Any, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, f"condition not met in {seconds} s"
        await asyncio.sleep(0.05)


async def test_status_document(server) -> None:
    srv, _ = server
    await wait_for(lambda: srv.store.view().state("iad") == "down")
    # Three steered answers from Moscow: fra.
    q = dns.message.make_query("www.st.example.", "A")
    q.use_edns(0, options=[dns.edns.ECSOption("77.88.8.0", 24)])
    for _ in range(3):
        await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
    # The history is sampled every 0.2 s: wait for a sample taken after the queries.
    deadline = asyncio.get_running_loop().time() + 10
    while sum((doc := await get_status(srv))["answers_history"]["pops"]["fra"]) < 3:
        assert asyncio.get_running_loop().time() < deadline, "no history sample in 10 s"
        await asyncio.sleep(0.05)
    assert doc["version"] == __version__ and doc["node"] == "node-test-1"
    assert doc["ready"] is True and doc["uptime_seconds"] >= 0
    assert doc["geoip"]["type"] and doc["geoip"]["build_epoch"] > 1e9
    pops = {p["id"]: p for p in doc["pops"]}
    assert pops["fra"]["state"] == "unknown" and pops["fra"]["city"] == "Frankfurt"
    assert pops["fra"]["answers"] == 3 and pops["fra"]["checks"] == []
    iad = pops["iad"]
    assert iad["state"] == "down" and iad["probe_failures"] >= 2 and iad["state_changes"] == 1
    assert iad["since"] >= doc["started_at"]
    assert iad["checks"][0]["check"] == "tcp 127.0.0.1:1"
    assert iad["checks"][0]["ok"] is False and "refused" in iad["checks"][0]["detail"]
    assert doc["records"] == [{"zone": "st.example.", "name": "www.st.example.", "type": "A",
                               "pops": ["fra", "iad"], "healthy_pops": 1}]
    (zone,) = doc["zones"]
    assert zone["zone"] == "st.example." and zone["serial"] == 7 and zone["errors"] == []
    assert sum(doc["answers_history"]["pops"]["fra"]) == 3
    assert sum(doc["answers_history"]["pops"]["iad"]) == 0
    kinds = [e["kind"] for e in doc["events"]]
    assert kinds[-1] == "start"  # newest first
    assert "reload" in kinds
    change = next(e for e in doc["events"] if e["kind"] == "state-change")
    assert change["pop"] == "iad" and "iad unknown -> down" in change["message"]


async def test_drain_shows_in_status(server) -> None:
    srv, _ = server
    before = (await get_status(srv))["pops"][0]
    await asyncio.sleep(0.05)
    status, body = await post(srv, "/pops/fra/drain")
    assert status == 200 and body["state"] == "draining"
    doc = await get_status(srv)
    fra = doc["pops"][0]
    assert fra["state"] == "draining" and fra["admin_state"] == "draining"
    assert fra["since"] > before["since"]
    event = doc["events"][0]
    assert event["kind"] == "admin" and event["pop"] == "fra"
    assert "fra unknown -> draining (drain" in event["message"]


async def test_reload_needs_the_token_and_reports_errors(server) -> None:
    srv, zones = server
    assert (await post(srv, "/reload", token=None))[0] == 401
    assert (await post(srv, "/reload", token="not-the-token-12345"))[0] == 401
    srv.config.reload_interval = 3600  # only our POST reloads from here on
    await asyncio.sleep(0.3)
    (zones / "st.example.yaml").write_text(ZONE.replace("serial: 7", "serial: 8"))
    status, body = await post(srv, "/reload")
    assert status == 200 and body["errors"] == []
    assert list(body["zones"].values()) == [{"zone": "st.example.", "serial": 8, "errors": []}]
    (zones / "st.example.yaml").write_text(ZONE.replace("serial: 7", "serial: 9")
                                           .replace("ns1: {A: 192.0.2.53}", "ns1: {A: nope}"))
    status, body = await post(srv, "/reload")
    assert status == 200
    (err,) = body["errors"]
    assert "st.example.yaml:5:" in err
    (served,) = body["zones"].values()
    assert served["serial"] == 8 and served["errors"] == [err]  # the old version serves
    doc = await get_status(srv)
    assert doc["zones"][0]["serial"] == 8 and doc["zones"][0]["errors"] == [err]
    event = next(e for e in doc["events"] if e["kind"] == "reload-error")
    assert "st.example.yaml:5:" in event["message"] and "serial 8 stays" in event["message"]
    assert doc["reloads"]["failure"] == 1


async def test_reload_disabled_without_a_token(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "st.example.yaml").write_text(ZONE)
    srv = Server(Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                        admin=Address("127.0.0.1", 0)))
    await srv.start()
    try:
        assert (await post(srv, "/reload"))[0] == 403
    finally:
        await srv.shutdown()


def test_answer_history_keeps_differences_per_interval() -> None:
    h = AnswerHistory(interval=10, buckets=3)
    h.sample({}, 0)
    h.sample({"fra": 5}, 10)
    h.sample({"fra": 5, "iad": 2}, 20)
    h.sample({"fra": 9, "iad": 2}, 30)
    h.sample({"fra": 10, "iad": 3}, 40)
    doc = h.as_json(["fra", "iad", "sin"])
    assert doc == {"interval_seconds": 10, "end": 40,
                   "pops": {"fra": [0, 4, 1], "iad": [2, 0, 1], "sin": [0, 0, 0]}}


def test_event_log_is_bounded_and_newest_first() -> None:
    t = iter(range(1000))
    log = EventLog(clock=lambda: float(next(t)))
    for i in range(150):
        log.add("admin", f"event {i}", "fra")
    events = log.newest_first()
    assert len(events) == 100
    assert events[0].message == "event 149" and events[-1].message == "event 50"
