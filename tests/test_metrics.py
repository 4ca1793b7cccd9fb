"""/metrics: parsed as Prometheus parses it, checked by promtool, moving as
reloads, drains and probe failures happen."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import fleetsample
import pytest
from prometheus_client.parser import text_string_to_metric_families
from refservers import skip_or_fail

from geodns import __version__
from geodns.config import Address, Config
from geodns.health.checker import HealthSettings
from geodns.health.probes import CheckSpec
from geodns.metrics import Metrics
from geodns.server.app import Server
from geodns.steering import Pop

ZONE = """\
origin: m.example.
soa: {mname: ns1, rname: h, serial: 5}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}}
  big: {TXT: [BIG]}
""".replace("BIG", ", ".join(f'"{c * 200}"' for c in "abcd"))
TOKEN = "metrics-test-token-123"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def server(tmp_path: Path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "m.example.yaml").write_text(ZONE)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 admin=Address("127.0.0.1", 0), admin_token=TOKEN, reload_interval=0.2,
                 pops={"fra": Pop("fra", 50.1, 8.7, order=0),
                       "iad": Pop("iad", 38.9, -77.4, order=1)},
                 default_order=("fra", "iad"),
                 checks={"iad": [CheckSpec("tcp", "127.0.0.1:1", interval=0.1, timeout=0.05)]},
                 health=HealthSettings(grace=5))
    srv = Server(cfg)
    await srv.start()
    yield srv, zones
    await srv.shutdown()


async def scrape(srv: Server) -> str:
    assert srv.admin is not None
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{srv.admin.port}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def until_scraped(srv: Server, condition: Callable[[Samples], bool], what: str,
                        limit: float = 10.0) -> Samples:
    """Scrape /metrics until ``condition`` holds; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        got = samples(await scrape(srv))
        if condition(got):
            return got
        assert time.monotonic() < deadline, f"{what}: not in /metrics within {limit} s"
        await asyncio.sleep(0.1)


async def test_metrics_are_valid_and_move(server, tmp_path: Path) -> None:
    srv, zones = server
    first = samples(await scrape(srv))
    assert first[("geodns_zones_serial", (("zone", "m.example."),))] == 5
    assert first[("geodns_zones_reloads_total", (("result", "success"),))] == 1
    assert first[("geodns_pop_state", (("pop", "fra"), ("state", "unknown")))] == 1
    assert ("process_cpu_seconds_total", ()) in first
    # Event counters exist (at 0) before their first event, for rate() and alerts.
    assert first[("geodns_dns_dropped_packets_total", (("reason", "short"),))] == 0
    assert first[("geodns_dns_truncated_answers_total", (("kind", "tc"),))] == 0
    assert first[("geodns_dns_malformed_queries_total", (("reason", "truncated"),))] == 0
    assert first[("geodns_config_errors", ())] == 0
    revision = srv.snapshot.version.revision
    assert first[("geodns_snapshot_info", (("revision", revision),))] == 1
    # A reload with a new serial, then a broken edit.
    (zones / "m.example.yaml").write_text(ZONE.replace("serial: 5", "serial: 6"))
    await until_scraped(srv, lambda m: m[("geodns_zones_serial", (("zone", "m.example."),))] == 6,
                        "the new serial")
    (zones / "m.example.yaml").write_text("records: [broken")
    await until_scraped(srv, lambda m: m.get(("geodns_zones_reloads_total",
                                              (("result", "failure"),)), 0) >= 1,
                        "the failed reload")
    await until_scraped(srv, lambda m: m[("geodns_pop_state",
                                          (("pop", "iad"), ("state", "down")))] == 1,
                        "iad down")
    # A drain, and the failing probes of iad.
    assert srv.admin is not None
    drain = f"http://127.0.0.1:{srv.admin.port}/pops/fra/drain"
    async with aiohttp.ClientSession() as s, \
            s.post(drain, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    text = await scrape(srv)
    after = samples(text)
    assert after[("geodns_zones_serial", (("zone", "m.example."),))] == 6
    assert after[("geodns_zones_reloads_total", (("result", "failure"),))] >= 1
    assert after[("geodns_zones_errors", (("zone", "m.example."),))] >= 1
    assert after[("geodns_pop_state", (("pop", "fra"), ("state", "draining")))] == 1
    assert after[("geodns_pop_state", (("pop", "iad"), ("state", "down")))] == 1
    assert after[("geodns_pop_state_changes_total", (("pop", "iad"),))] >= 1
    assert after[("geodns_health_probe_failures_total",
                  (("pop", "iad"), ("reason", "refused")))] >= 2
    assert after[("geodns_zones_last_reload_success_timestamp_seconds", ())] > 1.7e9
    assert after[("geodns_admin_requests_total", (("action", "drain"), ("result", "ok")))] == 1
    assert after[("geodns_build_info", (("version", __version__),))] == 1
    assert after[("geodns_health_probe_duration_seconds_count", (("pop", "iad"),))] >= 2
    assert ("geodns_geoip_build_timestamp_seconds", ()) in after
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (apt install prometheus)")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


async def test_fleet_metrics(server) -> None:
    """The fleet as this node sees it (a made-up FleetView on the running
    node's view): etcd contact, revisions, nodes, votes and drains; and no
    geodns_fleet_* at all on a node outside a fleet."""
    srv, _ = server
    plain = samples(await scrape(srv))
    assert not [k for k in plain if k[0].startswith("geodns_fleet_")]
    assert "geodns_fleet_" not in await scrape(srv)  # not even HELP lines

    view = fleetsample.with_fleet(srv.view())
    assert view.fleet is not None
    text = Metrics(lambda: view).render().decode()
    got = samples(text)
    fleet = {k: v for k, v in got.items() if k[0].startswith("geodns_fleet_")}
    now = view.now
    assert fleet == {
        ("geodns_fleet_etcd_up", ()): 0,
        ("geodns_fleet_last_contact_timestamp_seconds", ()): now - 75,
        ("geodns_fleet_own_verdicts", ()): 1,
        ("geodns_fleet_documents_origin", (("origin", "etcd"),)): 1,
        ("geodns_fleet_documents_origin", (("origin", "cache"),)): 0,
        ("geodns_fleet_documents_origin", (("origin", "none"),)): 0,
        ("geodns_fleet_revision", (("which", "serving"),)): 41,
        ("geodns_fleet_revision", (("which", "newest"),)): 42,
        ("geodns_fleet_revision_refused", ()): 1,
        ("geodns_fleet_published_timestamp_seconds", ()): now - 600,
        ("geodns_fleet_nodes", ()): 3,
        ("geodns_fleet_nodes_behind", ()): 1,  # ns3-sin; not ns1-fra, which refused etcd:42
        ("geodns_fleet_votes", (("pop", "fra"), ("state", "up"))): 2,
        ("geodns_fleet_votes", (("pop", "fra"), ("state", "down"))): 1,
        ("geodns_fleet_votes", (("pop", "iad"), ("state", "up"))): 3,
        ("geodns_fleet_votes", (("pop", "iad"), ("state", "down"))): 0,
        ("geodns_fleet_disagreement", (("pop", "fra"),)): 1,
        ("geodns_fleet_disagreement", (("pop", "iad"),)): 0,
        ("geodns_fleet_drain_timestamp_seconds", (("pop", "iad"), ("state", "draining"))):
            now - 300,
    }
    assert got[("geodns_snapshot_info", (("revision", "etcd:41"),))] == 1
    # Node names are never labels; every family has its HELP and TYPE.
    for family in text_string_to_metric_families(text):
        if family.name.startswith("geodns_fleet_"):
            assert family.documentation and family.type == "gauge", family.name
            for s in family.samples:
                assert set(s.labels) <= {"pop", "state", "which", "origin"}, s

    # Back in contact, the newest served everywhere, nothing drained.
    fleet_view = replace(view.fleet, in_contact=True, health="fleet", error=None,
                         last_contact=now - 1, drains={}, nodes={
                             n: dict(d, revision="etcd:42", refused=None)
                             for n, d in view.fleet.nodes.items()})
    healthy = replace(view, fleet=fleet_view, snapshot=replace(
        view.snapshot, refused=None,
        version=replace(view.snapshot.version, revision="etcd:42")))
    got = samples(Metrics(lambda: healthy).render().decode())
    assert got[("geodns_fleet_etcd_up", ())] == 1
    assert got[("geodns_fleet_own_verdicts", ())] == 0
    assert got[("geodns_fleet_revision", (("which", "serving"),))] == 42
    assert got[("geodns_fleet_revision_refused", ())] == 0
    assert got[("geodns_fleet_nodes_behind", ())] == 0
    assert not [k for k in got if k[0] == "geodns_fleet_drain_timestamp_seconds"]
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (apt install prometheus)")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_query_name_or_address_in_labels() -> None:
    source = (Path(__file__).parent.parent / "geodns" / "metrics.py").read_text()
    for forbidden in ('"qname"', '"client"', '"address"', '"name"'):
        assert forbidden not in source


async def test_query_counters(server) -> None:
    import dns.asyncquery
    import dns.message

    srv, _ = server
    port = srv.bound[0].port
    for _ in range(3):
        await dns.asyncquery.udp(dns.message.make_query("ns1.m.example.", "A"), "127.0.0.1",
                                 port=port, timeout=2)
    await dns.asyncquery.tcp(dns.message.make_query("nothere.m.example.", "AAAA"), "127.0.0.1",
                             port=port, timeout=2)
    await dns.asyncquery.udp(dns.message.make_query("www.other.example.", "TYPE4242"),
                             "127.0.0.1", port=port, timeout=2)
    await dns.asyncquery.udp(dns.message.make_query("www.m.example.", "A"), "127.0.0.1",
                             port=port, timeout=2)
    got = samples(await scrape(srv))

    def q(zone: str, qtype: str, rcode: str, transport: str) -> float:
        return got.get(("geodns_dns_queries_total", (("qtype", qtype), ("rcode", rcode),
                                                     ("transport", transport),
                                                     ("zone", zone))), 0)

    assert q("m.example.", "A", "NOERROR", "udp") == 4  # three static, one steered
    assert q("m.example.", "AAAA", "NXDOMAIN", "tcp") == 1
    assert q("", "other", "REFUSED", "udp") == 1


async def udp_exchange(port: int, wire: bytes, timeout: float = 5.0) -> bytes | None:
    """Send raw bytes over real UDP; the answer, or None if none came in
    ``timeout`` seconds (pass a short one where no answer is expected)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, wire, ("127.0.0.1", port))
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
        except TimeoutError:
            return None


def ecs_query(name: str, subnet: str, prefix: int, scope: int = 0) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0)
    q.use_edns(0, options=[dns.edns.ECSOption(subnet, prefix, scope)])
    return q.to_wire()


async def test_drops_malformed_truncated_and_steering(server) -> None:
    """Every data-plane counter moves, over real UDP, by the reason it names."""
    srv, _ = server
    port = srv.bound[0].port
    good = dns.message.make_query("ns1.m.example.", "A").to_wire()
    assert await udp_exchange(port, good[:5], timeout=0.5) is None  # short
    response = bytearray(good)
    response[2] |= 0x80
    assert await udp_exchange(port, bytes(response), timeout=0.5) is None  # QR set
    two = bytearray(good)
    two[5] = 2  # QDCOUNT 2
    r = await udp_exchange(port, bytes(two))
    assert r is not None and dns.message.from_wire(r, question_only=True).rcode() == \
        dns.rcode.FORMERR
    bad_ecs = bytearray(ecs_query("www.m.example.", "77.88.8.0", 24))
    bad_ecs[-5] = 7  # a non-zero scope in a query
    r = await udp_exchange(port, bytes(bad_ecs))
    assert r is not None and dns.message.from_wire(r).rcode() == dns.rcode.FORMERR
    r = await udp_exchange(port, dns.message.make_query("big.m.example.", "TXT").to_wire())
    assert r is not None and dns.message.from_wire(r).flags & dns.flags.TC
    # Steered: Moscow and Sao Paulo, twice each; iad fails its probes, so both get fra.
    deadline = time.monotonic() + 10
    while srv.store.view().state("iad") != "down":
        assert time.monotonic() < deadline, "iad not down within 10 s"
        await asyncio.sleep(0.05)
    for subnet in ("77.88.8.0", "200.160.0.0", "77.88.8.0", "200.160.0.0"):
        r = await udp_exchange(port, ecs_query("www.m.example.", subnet, 24))
        assert r is not None
        assert [rd.to_text() for rd in dns.message.from_wire(r).answer[0]] == ["192.0.2.1"]
    got = samples(await scrape(srv))
    assert got[("geodns_dns_dropped_packets_total", (("reason", "short"),))] == 1
    assert got[("geodns_dns_dropped_packets_total", (("reason", "response"),))] == 1
    assert got[("geodns_dns_malformed_queries_total", (("reason", "qdcount"),))] == 1
    assert got[("geodns_dns_malformed_queries_total", (("reason", "ecs"),))] == 1
    assert got[("geodns_dns_truncated_answers_total", (("kind", "tc"),))] == 1
    assert got[("geodns_steering_decisions_total",
                (("pop", "fra"), ("reason", "proximity"), ("zone", "m.example.")))] == 4
    assert got[("geodns_steering_cache_misses_total", ())] == 2
    assert got[("geodns_steering_cache_hits_total", ())] == 2
    assert got[("geodns_steering_record_healthy_pops",
                (("record", "www.m.example./A"), ("zone", "m.example.")))] == 1
    # Drain fra as well: no PoP left, so the record fails open (and says so).
    assert srv.admin is not None
    async with aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{srv.admin.port}"
        async with s.post(f"{base}/pops/fra/drain") as resp:
            assert resp.status == 401
        async with s.post(f"{base}/pops/fra/drain",
                          headers={"Authorization": "Bearer wrong-token-1234567"}) as resp:
            assert resp.status == 401
        async with s.post(f"{base}/pops/fra/drain",
                          headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
    r = await udp_exchange(port, ecs_query("www.m.example.", "77.88.8.0", 24))
    assert r is not None
    got = samples(await scrape(srv))
    assert got[("geodns_steering_record_healthy_pops",
                (("record", "www.m.example./A"), ("zone", "m.example.")))] == 0
    assert got[("geodns_steering_decisions_total",
                (("pop", "fra"), ("reason", "fail-open"), ("zone", "m.example.")))] == 1
    assert got[("geodns_admin_requests_total",
                (("action", "drain"), ("result", "unauthorized")))] == 2


def test_two_workers_count_every_query_in_one_scrape(tmp_path: Path) -> None:
    """With workers: 2, the first worker's /metrics adds up both workers'
    counters (the second's reach it within about a second)."""
    import json
    import signal
    import sys
    import urllib.request

    import dns.query

    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "m.example.yaml").write_text(ZONE.split("  www:")[0])  # no PoPs here
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    dns_port, admin_port = ports
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(json.dumps({"listen": [f"127.0.0.1:{dns_port}"], "zones": "zones",
                               "workers": 2, "admin": {"listen": f"127.0.0.1:{admin_port}"}}))
    log = tmp_path / "geodns.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config", str(cfg)],
                                stderr=err, text=True)
    try:
        # Wait until both workers listen, asking a question that is counted
        # apart (SOA) from the one counted below.
        soa = dns.message.make_query("m.example.", "SOA")
        deadline = time.monotonic() + 20
        while log.read_text().count("listening on 127.0.0.1") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        while True:
            try:
                dns.query.udp(soa, "127.0.0.1", port=dns_port, timeout=0.5)
                break
            except dns.exception.Timeout:
                assert time.monotonic() < deadline, "no answer within 20 s"
        # Each counted query is sent once, with a timeout no busy machine
        # reaches: a query that timed out and was sent again could have been
        # answered (and counted) both times.
        q = dns.message.make_query("ns1.m.example.", "A")
        for _ in range(60):  # a fresh socket (source port) each time spreads over the workers
            dns.query.udp(q, "127.0.0.1", port=dns_port, timeout=10)
        key = ("geodns_dns_queries_total", (("qtype", "A"), ("rcode", "NOERROR"),
                                            ("transport", "udp"), ("zone", "m.example.")))
        deadline = time.monotonic() + 10
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics",
                                          timeout=5).read().decode()
            got = samples(text)
            if got.get(key) == 60 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got[("geodns_workers", ())] == 2
        assert got.get(key) == 60
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert proc.returncode == 0, log.read_text()


async def test_explain_is_not_a_served_query(server) -> None:
    """GET /explain answers with the serving code but counts nothing and
    leaves nothing in the decision caches (issue #9, defect 6)."""
    srv, _ = server
    port = srv.bound[0].port
    assert await udp_exchange(port, ecs_query("www.m.example.", "77.88.8.0", 24)) is not None
    assert srv.admin is not None
    base = f"http://127.0.0.1:{srv.admin.port}"

    def query_path(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {k: v for k, v in samples(text).items()
                if k[0].startswith(("geodns_dns_", "geodns_steering_"))}

    before = query_path(await scrape(srv))
    entries = srv.responder.cache_entries()
    async with aiohttp.ClientSession() as s:
        for params in ({"name": "www.m.example.", "client": "200.160.0.1"},
                       {"name": "www.m.example.", "client": "192.0.2.1", "ecs": "1.0.16.0/24"},
                       {"name": "ns1.m.example.", "client": "192.0.2.1", "type": "AAAA"},
                       {"name": "nothere.m.example.", "client": "192.0.2.1"}):
            async with s.get(f"{base}/explain", params=params) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["answer"]["rcode"]
    assert query_path(await scrape(srv)) == before
    assert srv.responder.cache_entries() == entries
    assert await udp_exchange(port, ecs_query("www.m.example.", "77.88.8.0", 24)) is not None
    after = query_path(await scrape(srv))
    assert after != before  # the scrape does see real queries
