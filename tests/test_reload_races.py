"""Answers and observers while something changes (issue 9, defects 1 and 2).

* The GeoIP database is replaced under steady, concurrent query load on a
  zone big enough that building the new snapshot takes a while: every answer
  must be the old database's or the new one's, with the right ECS scope, and
  no look-up may fail.  (The old reader used to be closed before the new
  snapshot was swapped in.)
* The admin API is read as fast as it answers while zone files appear,
  change and disappear: no request may fail.  (``/readyz`` used to iterate the
  zone store's table while the reload thread changed it.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.edns
import dns.message
import pytest

from geodns.config import Address, Config
from geodns.server.app import Server

pytest.importorskip("mmdb_writer")
from tests.geoip.make_mmdb import write
from tests.test_geoip_reload import POPS
from tests.test_geoip_reload import ZONE as STEERED


def big_zone(path: Path, records: int) -> None:
    """A zone whose compile takes a noticeable time (the window the race
    needs)."""
    lines = ["origin: big.example.", "soa: {mname: ns1, rname: h}", "records:",
             '  "@": {NS: [ns1]}', "  ns1: {A: 192.0.2.53}"]
    lines += [f"  h{i}: {{A: 198.51.{i // 256 % 256}.{i % 256}, TXT: \"record {i}\"}}"
              for i in range(records)]
    path.write_text("\n".join(lines) + "\n")


async def test_geoip_replaced_under_concurrent_load(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "geo.example.yaml").write_text(STEERED)
    big_zone(zones / "big.example.yaml", 6000)
    db = tmp_path / "geo.mmdb"
    write(db, {"198.18.0.0/15": "frankfurt"})
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 reload_interval=0.1, pops=POPS, default_order=("gru",), geoip_database=db)
    srv = Server(cfg)
    await srv.start()
    port = srv.bound[0].port
    # Both databases hold 198.18.0.0/15 as one network: an answer is right
    # when it is the old one's or the new one's, with scope 15.  A failed
    # look-up would answer as for an unplaced client: gru, scope 24.
    right = {("192.0.2.1", 15), ("192.0.2.3", 15)}
    seen: dict[tuple[str, int], int] = {}
    wrong: list[tuple[str, tuple[str, int]]] = []
    stop = asyncio.Event()
    rnd = random.Random(7)

    async def client() -> None:
        while not stop.is_set():
            # A new /24 every time: each query misses the decision cache and
            # looks the client up in the database.
            subnet = f"198.{18 + rnd.randrange(2)}.{rnd.randrange(256)}.0"
            q = dns.message.make_query("www.geo.example.", "A", use_edns=0,
                                       options=[dns.edns.ECSOption(subnet, 24, 0)])
            try:
                resp = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=2)
            except dns.exception.Timeout:
                continue
            (opt,) = [o for o in resp.options if isinstance(o, dns.edns.ECSOption)]
            got = (resp.answer[0][0].to_text(), opt.scopelen)
            seen[got] = seen.get(got, 0) + 1
            if got not in right:
                wrong.append((subnet, got))

    clients = [asyncio.create_task(client()) for _ in range(8)]
    try:
        await asyncio.sleep(0.5)
        new = tmp_path / "new.mmdb"
        write(new, {"198.18.0.0/15": "singapore"})
        os.replace(new, db)
        deadline = time.monotonic() + 15
        while seen.get(("192.0.2.3", 15), 0) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*clients)
        await srv.shutdown()
    assert seen.get(("192.0.2.1", 15), 0) > 50, seen  # load before the swap
    assert seen.get(("192.0.2.3", 15), 0) >= 200, seen  # and after it
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
    assert "GeoIP look-up failed" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_admin_reads_while_zones_change(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    zones = tmp_path / "zones"
    zones.mkdir()
    # Files that never load come first in the zone table, so that a reader
    # looking for a served zone walks a long way through it.
    for i in range(300):
        (zones / f"a{i:03}.example.yaml").write_text("records: [broken")
    for i in range(40):
        (zones / f"z{i}.example.yaml").write_text(
            f"origin: z{i}.example.\nsoa: {{mname: ns1, rname: h, serial: 1}}\n"
            f"records:\n  \"@\": {{NS: [ns1]}}\n  ns1: {{A: 192.0.2.{i + 1}}}\n")
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 reload_interval=0.1, admin=Address("127.0.0.1", 0))
    srv = Server(cfg)
    await srv.start()
    assert srv.admin is not None
    base = f"http://127.0.0.1:{srv.admin.port}"
    stop = asyncio.Event()
    statuses: dict[int, int] = {}

    async def churn() -> None:
        serial = 2
        rnd = random.Random(3)
        while not stop.is_set():
            for i in rnd.sample(range(40, 120), 20):  # files come and go
                path = zones / f"z{i}.example.yaml"
                if path.exists():
                    path.unlink()
                else:
                    path.write_text(
                        f"origin: z{i}.example.\nsoa: {{mname: ns1, rname: h, "
                        f"serial: {serial}}}\nrecords:\n  \"@\": {{NS: [ns1]}}\n"
                        f"  ns1: {{A: 192.0.2.1}}\n")
            serial += 1
            await asyncio.sleep(0.02)  # the server polls every 0.1 s

    async def reader(session: aiohttp.ClientSession, path: str) -> None:
        while not stop.is_set():
            async with session.get(base + path) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

    # Threads take turns far more often than the default 5 ms, so that a
    # reader and the reload thread interleave within a few seconds if they can.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(churn())] + [
            asyncio.create_task(reader(session, p))
            for p in ("/readyz", "/readyz", "/readyz", "/status", "/metrics")]
        try:
            await asyncio.sleep(3.0)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            sys.setswitchinterval(interval)
            await srv.shutdown()
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 100, statuses
    assert "changed size during iteration" not in caplog.text
    assert "Error handling request" not in caplog.text
