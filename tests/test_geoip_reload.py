"""The GeoIP database: replaced on disk while serving, broken, missing, or a
Country database without coordinates.  Tiny databases are built by
tests/geoip/make_mmdb.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import pytest
from refservers import skip_or_fail

from geodns.cli import main
from geodns.config import Address, Config
from geodns.server.app import Server
from geodns.steering import Pop

try:
    from tests.geoip.make_mmdb import write
except ModuleNotFoundError as exc:
    if exc.name not in ("mmdb_writer", "netaddr"):
        raise
    skip_or_fail(f"{exc.name} is not installed (a test dependency: pip install -e '.[test]')")

ZONE = """\
origin: geo.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, sin: 192.0.2.3, gru: 192.0.2.4}}
"""
POPS = {"fra": Pop("fra", 50.11, 8.68, country="DE", continent="EU", order=0),
        "sin": Pop("sin", 1.35, 103.99, country="SG", continent="AS", order=1),
        "gru": Pop("gru", -23.43, -46.47, country="BR", continent="SA", order=2)}


@pytest.fixture
def setup(tmp_path: Path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "geo.example.yaml").write_text(ZONE)
    db = tmp_path / "geo.mmdb"
    write(db, {"198.18.0.0/15": "frankfurt"})
    return tmp_path, zones, db


async def steered(srv: Server, subnet: str = "198.18.4.0/24") -> str:
    q = dns.message.make_query("www.geo.example.", "A", use_edns=0, options=[
        dns.edns.ECSOption(subnet.split("/")[0], int(subnet.split("/")[1]), 0)])
    resp = await dns.asyncquery.udp(q, srv.bound[0].host, port=srv.bound[0].port, timeout=2)
    return resp.answer[0][0].to_text()


async def test_replaced_database_is_used_without_restart(setup, caplog) -> None:
    tmp, zones, db = setup
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 reload_interval=0.2, pops=POPS, default_order=("fra",), geoip_database=db)
    srv = Server(cfg)
    await srv.start()
    try:
        assert await steered(srv) == "192.0.2.1"  # Frankfurt
        new = tmp / "new.mmdb"
        write(new, {"198.18.0.0/15": "singapore"})
        os.replace(new, db)
        t0 = time.monotonic()
        while await steered(srv) != "192.0.2.3" and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.1)
        assert await steered(srv) == "192.0.2.3"  # Singapore now
        # A broken file is reported and the last good database stays in use.
        broken = tmp / "broken.mmdb"
        broken.write_bytes(b"this is not a MaxMind database")
        os.replace(broken, db)
        t0 = time.monotonic()
        while srv.snapshot.geoip.error is None:
            assert time.monotonic() - t0 < 10, "the broken database was not read in 10 s"
            await asyncio.sleep(0.05)
        assert await steered(srv) == "192.0.2.3"
        assert "GeoIP database not loaded" in caplog.text
        assert srv.snapshot.geoip.error is not None
    finally:
        await srv.shutdown()


async def test_country_database_gives_coarser_answers(setup) -> None:
    tmp, zones, _ = setup
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    db = tmp / "country.mmdb"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for net, cc, co in (("8.8.8.0/24", "US", "NA"), ("198.18.0.0/16", "BR", "SA"),
                        ("198.19.0.0/16", "JP", "AS")):
        w.insert_network(IPSet([net]), {"country": {"iso_code": cc},
                                        "continent": {"code": co}})
    w.to_db_file(str(db))
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 pops=POPS, default_order=("fra",), geoip_database=db)
    srv = Server(cfg)
    await srv.start()
    try:
        assert await steered(srv, "198.18.4.0/24") == "192.0.2.4"  # same country: gru
        assert await steered(srv, "198.19.4.0/24") == "192.0.2.3"  # same continent: sin
        assert await steered(srv, "203.0.113.0/24") == "192.0.2.1"  # unknown: default order
    finally:
        await srv.shutdown()


def test_check_reports_missing_and_unusable_databases(setup, capsys) -> None:
    tmp, _zones, _ = setup
    cfg = tmp / "geodns.yaml"
    cfg.write_text("zones: zones\ngeoip: {database: nowhere.mmdb}\n"
                   "pops: {fra: {location: [50.1, 8.7]}, sin: {location: [1.3, 104]}, "
                   "gru: {location: [-23.4, -46.5]}}\n")
    assert main(["check", "--config", str(cfg)]) == 1
    assert "nowhere.mmdb does not exist" in capsys.readouterr().err
    empty = tmp / "empty.mmdb"
    write(empty, {})
    shutil.copy(empty, tmp / "nowhere.mmdb")
    assert main(["check", "--config", str(cfg)]) == 0  # places 8.8.8.8 and 1.1.1.1
    (tmp / "nowhere.mmdb").write_bytes(b"junk")
    assert main(["check", "--config", str(cfg)]) == 1
    assert "GeoIP database" in capsys.readouterr().err


async def test_latency_table_by_asn(setup, tmp_path: Path) -> None:
    """An ASN database narrows the place to the ASN's network, and a latency
    entry for that ASN beats distance."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from geodns.steering import LatencyEntry

    _, zones, db = setup  # 198.18.0.0/15 is in Frankfurt
    asn_db = tmp_path / "asn.mmdb"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    w.insert_network(IPSet(["198.18.64.0/18"]), {"autonomous_system_number": 64500,
                                                "autonomous_system_organization": "Test"})
    w.to_db_file(str(asn_db))
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones, pops=POPS,
                 default_order=("fra",), geoip_database=db, geoip_asn_database=asn_db,
                 latency=(LatencyEntry({"sin": 5.0, "fra": 90.0}, asn=64500),))
    srv = Server(cfg)
    await srv.start()
    try:
        q = dns.message.make_query("www.geo.example.", "A", use_edns=0, options=[
            dns.edns.ECSOption("198.18.70.0", 24, 0)])
        resp = await dns.asyncquery.udp(q, "127.0.0.1", port=srv.bound[0].port, timeout=2)
        assert resp.answer[0][0].to_text() == "192.0.2.3"  # AS64500 measured: sin
        (opt,) = [o for o in resp.options if isinstance(o, dns.edns.ECSOption)]
        assert opt.scopelen == 18  # the ASN network inside the /15
        assert await steered(srv, "198.18.4.0/24") == "192.0.2.1"  # other ASN: distance
    finally:
        await srv.shutdown()


def test_latency_by_asn_needs_an_asn_database(tmp_path: Path, capsys) -> None:
    (tmp_path / "zones").mkdir()
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text("pops: {fra: {location: [50.1, 8.7]}}\n"
                   "latency: [{asn: 64500, pops: {fra: 10}}]\n")
    assert main(["check", "--config", str(cfg)]) == 1
    assert "needs geoip.asn_database" in capsys.readouterr().err
