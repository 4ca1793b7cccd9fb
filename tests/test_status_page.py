"""The status page at GET /: self-contained, and watched in a real headless
Chromium while a PoP goes down, another is drained and a zone breaks.

The browser test reads what the page shows from the DOM (``data-state`` on
each map marker) and from screenshots (the colour at a marker's centre, land
and ocean on the map), never from the JSON the page polls.  The Fleet panel
is checked on a node whose view is given the made-up fleet of
tests/fleetsample.py (the /status document is the real one built from it);
the Anycast panel on a real node with ``anycast:``, followed by a real
``geodns anycast-exabgp`` helper and drained, then with the made-up routes of
tests/anycastsample.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import anycastsample
import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import fleetsample
import pytest
from cdp import CHROMIUM, Page, chromium
from PIL import Image
from refservers import skip_or_fail

from geodns.config import Address, AnycastConfig, Config, RateLimitConfig
from geodns.exabgp import follow
from geodns.health.checker import HealthSettings
from geodns.health.probes import CheckSpec
from geodns.node import NodeView
from geodns.ratelimit import available as rate_limit_available
from geodns.server.app import Server
from geodns.status import AnswerHistory
from geodns.steering import Pop

ZONE = """\
origin: st.example.
soa: {mname: ns1, rname: h, serial: 3}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2, gru: 192.0.2.3}}
"""
POPS = {"fra": Pop("fra", 50.11, 8.68, city="Frankfurt", country="DE", continent="EU", order=0),
        "iad": Pop("iad", 38.95, -77.45, city="Ashburn", country="US", continent="NA", order=1),
        "gru": Pop("gru", -23.55, -46.63, city="São Paulo", country="BR", continent="SA",
                   order=2)}
TOKEN = "status-page-test-token"
# The page, land included, stays small.  60 KB until the Anycast panel took
# it to 62 KB: 64 KB leaves room for one more small panel, not for a library.
PAGE_BUDGET = 64 * 1024
# (lon, lat) well inside land and open sea, away from the 30-degree graticule
# and from the PoPs above.
LAND = [(22.0, 2.0), (-55.0, -8.0), (100.0, 62.0)]  # Congo basin, Amazon, Siberia
OCEAN = [(-35.0, 25.0), (-140.0, -10.0), (80.0, -20.0)]  # Atlantic, Pacific, Indian
CLIENTS = ["77.88.8.0/24", "200.160.0.0/24", "8.8.8.0/24"]  # Moscow, Brazil, the US


def config(tmp_path: Path, health_url: str | None = None) -> Config:
    zones = tmp_path / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "st.example.yaml").write_text(ZONE)
    # The probe runs in the test's event loop, busy with the browser and the
    # screenshots: a timeout well above what that adds, so that fra does not
    # flap down while it should be up.
    checks = {"fra": [CheckSpec("http", health_url, interval=0.2, timeout=0.8)]} \
        if health_url else {}
    return Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                  admin=Address("127.0.0.1", 0), admin_token=TOKEN,
                  state_file=tmp_path / "state.json", reload_interval=0.2, pops=POPS,
                  default_order=("fra", "iad", "gru"), checks=checks,
                  health=HealthSettings(grace=3), identity="status-test-node")


def base_url(srv: Server) -> str:
    assert srv.admin is not None and srv.admin.port is not None
    return f"http://127.0.0.1:{srv.admin.port}"


async def test_page_is_served_and_self_contained(tmp_path: Path) -> None:
    srv = Server(config(tmp_path))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s, s.get(base_url(srv) + "/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert r.charset == "utf-8"
            body = await r.read()
    finally:
        await srv.shutdown()
    html = body.decode()
    assert len(body) < PAGE_BUDGET
    # Nothing from any other host, and nothing fetched but /status.
    assert "http://" not in html and "https://" not in html and "//" + "cdn" not in html
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"<(img|iframe|object|embed|audio|video|source)\b", html, re.I)
    assert not re.search(r"@import|url\(", html, re.I)
    assert re.findall(r"fetch\(([^,)]*)", html) == ['"/status"']
    # The land is there, generated from Natural Earth by docs/maps/make_land_path.py.
    land = re.search(r'<!-- land:begin --><path id="land"[^>]* d="([^"]+)"/><!-- land:end -->',
                     html)
    assert land is not None and land.group(1).count("M") > 100
    # Strings from JSON only ever reach the page as text.
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html


# -- the browser test ---------------------------------------------------------------------


def need_chromium() -> None:
    if os.access(CHROMIUM, os.X_OK):
        return
    skip_or_fail(f"{CHROMIUM} is not installed (apt install chromium)")


class HealthTarget:
    """A real HTTP endpoint for fra's health check, stopped on demand.

    It runs in a thread with the standard library's HTTP server, outside the
    event loop: stopping an asyncio server while a probe connects can leave
    the half-accepted socket unclosed (CPython 3.11), and the test would
    then fail on the ResourceWarning rather than on the page."""

    def __init__(self) -> None:
        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/health" else 404)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/health"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       name="health-target", daemon=True)
        self.thread.start()
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await asyncio.to_thread(self.httpd.shutdown)
            self.httpd.server_close()
            self.thread.join(5)


@pytest.fixture
async def target() -> AsyncIterator[HealthTarget]:
    t = HealthTarget()
    yield t
    await t.stop()


def marker_state(pop: str) -> str:
    return f"document.querySelector('circle.marker[data-pop=\"{pop}\"]')?.dataset.state"


# The geometry, in device pixels of the screenshot: the centre of every
# marker, and where the land and ocean test points are drawn.
GEOMETRY = """(() => {
  const dpr = window.devicePixelRatio;
  const map = document.getElementById('map');
  const ctm = map.getScreenCTM();
  const at = ([lon, lat]) => {
    const p = new DOMPoint(lon + 180, 90 - lat).matrixTransform(ctm);
    return [p.x * dpr, p.y * dpr];
  };
  const markers = {};
  for (const m of document.querySelectorAll('circle.marker')) {
    const r = m.getBoundingClientRect();
    markers[m.dataset.pop] = [(r.left + r.width / 2) * dpr, (r.top + r.height / 2) * dpr,
                              r.width * dpr, getComputedStyle(m).fill];
  }
  const fill = (el) => getComputedStyle(el).fill;
  return {dpr, width: innerWidth * dpr, height: innerHeight * dpr, markers,
          land: LAND.map(at), ocean: OCEAN.map(at),
          landFill: fill(document.getElementById('land')),
          oceanFill: fill(document.getElementById('ocean'))};
})()""".replace("LAND", json.dumps(LAND)).replace("OCEAN", json.dumps(OCEAN))


def rgb(css: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", css)
    assert m is not None, css
    return int(m[1]), int(m[2]), int(m[3])


def near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a[:3], b[:3], strict=True))


class Shot:
    def __init__(self, png: bytes, geometry: dict[str, Any], path: Path) -> None:
        path.write_bytes(png)
        print(f"screenshot: {path}")
        self.path = path
        self.image = Image.open(io.BytesIO(png)).convert("RGB")
        self.geometry = geometry
        # The screenshot is in device pixels: CSS pixels times devicePixelRatio.
        assert abs(self.image.width - geometry["width"]) <= 1, (self.image.size, geometry)

    def pixel(self, xy: list[float]) -> tuple[int, int, int]:
        value = self.image.getpixel((round(xy[0]), round(xy[1])))
        assert isinstance(value, tuple)
        return value[0], value[1], value[2]

    def marker(self, pop: str) -> tuple[int, int, int]:
        """The colour at the marker's centre, which must be the marker's own
        fill: nothing (a label, another marker) is drawn over it."""
        x, y, width, fill = self.geometry["markers"][pop]
        assert width >= 6, f"the {pop} marker is {width} device pixels wide"
        colour = self.pixel([x, y])
        assert near(colour, rgb(fill), 8), (pop, colour, fill)
        return colour


async def shoot(page: Page, path: Path) -> Shot:
    geometry = await page.evaluate(GEOMETRY)
    return Shot(await page.screenshot(), geometry, path)


def green(c: tuple[int, int, int]) -> bool:
    return c[1] > 150 and c[1] > c[0] + 60 and c[1] > c[2] + 40


def red(c: tuple[int, int, int]) -> bool:
    return c[0] > 180 and c[0] > c[1] + 100 and c[0] > c[2] + 100


def amber(c: tuple[int, int, int]) -> bool:
    return c[0] > 200 and 110 < c[1] < 200 and c[2] < 80


@pytest.mark.timeout(60)
async def test_status_page_in_chromium(tmp_path: Path, target: HealthTarget) -> None:
    need_chromium()
    began = time.monotonic()
    srv = Server(config(tmp_path, target.url))
    srv.history = AnswerHistory(interval=0.5)  # seconds, not minutes, of answers
    await srv.start()
    stop = asyncio.Event()
    queries = asyncio.create_task(traffic(srv, stop))
    try:
        async with chromium(tmp_path / "profile", 1280, 900) as page:
            await check_page(page, srv, target, tmp_path)
    finally:
        stop.set()
        await asyncio.wait_for(queries, 5)
        await srv.shutdown()
    print(f"browser test took {time.monotonic() - began:.1f} s")


async def traffic(srv: Server, stop: asyncio.Event) -> None:
    """Steered queries from three places, ten times a second, so that the
    page has answers per PoP to draw (and sees them move off a down PoP)."""
    port = srv.bound[0].port
    while not stop.is_set():
        for subnet in CLIENTS:
            address, length = subnet.split("/")
            q = dns.message.make_query("www.st.example.", "A", use_edns=0, options=[
                dns.edns.ECSOption(address, int(length))])
            with contextlib.suppress(dns.exception.Timeout):
                await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def check_page(page: Page, srv: Server, target: HealthTarget, tmp_path: Path) -> None:
    url = base_url(srv) + "/"
    await page.navigate(url)
    await page.evaluate("window.sameDocument = true")

    # fra comes up once its HTTP check has passed twice.
    assert await page.wait_for(f"{marker_state('fra')} === 'up'", 10)
    assert await page.wait_for("document.getElementById('node').textContent", 5) == \
        "status-test-node"
    assert await page.evaluate("document.getElementById('live').className") == "live ok"
    # No anycast in its configuration: no Anycast panel; no rate_limit, no Rate limiting panel.
    assert await page.evaluate("document.getElementById('anycast').hidden") is True
    assert await page.evaluate("document.getElementById('rrl').hidden") is True
    assert await page.evaluate("document.getElementById('anycast').offsetHeight") == 0
    # Answers per PoP: bars in the chart, fra's among them.
    assert await page.wait_for(
        "document.querySelectorAll('#chart rect').length > 0 && "
        "/fra\\s*[1-9]/.test(document.getElementById('chart-legend').textContent)", 10)
    up = await shoot(page, tmp_path / "1-fra-up.png")
    assert green(up.marker("fra")), up.marker("fra")
    land, ocean = rgb(up.geometry["landFill"]), rgb(up.geometry["oceanFill"])
    assert not near(land, ocean, 10)
    for xy in up.geometry["land"]:
        assert near(up.pixel(xy), land, 6), (xy, up.pixel(xy), land)
    for xy in up.geometry["ocean"]:
        assert near(up.pixel(xy), ocean, 6), (xy, up.pixel(xy), ocean)
    # iad and gru have no checks: unknown, grey.
    assert await page.evaluate(marker_state("iad")) == "unknown"
    grey = up.marker("iad")
    assert max(grey) - min(grey) < 60 and min(grey) > 110, grey

    # The health target goes away: the page, without reloading, turns fra red
    # and lists the state change.
    await target.stop()
    assert await page.wait_for(f"{marker_state('fra')} === 'down'", 10)
    assert await page.wait_for(
        "[...document.querySelectorAll('#events li[data-kind=\"state-change\"][data-pop=\"fra\"]')]"
        ".some(li => /->\\s*down/.test(li.textContent))", 5)
    assert await page.evaluate(
        "document.querySelector('#pop-table tr[data-pop=\"fra\"]').dataset.state") == "down"
    assert await page.evaluate("window.sameDocument") is True
    down = await shoot(page, tmp_path / "2-fra-down.png")
    assert red(down.marker("fra")), down.marker("fra")

    # An operator drains iad: amber.
    async with aiohttp.ClientSession() as s, s.post(
            base_url(srv) + "/pops/iad/drain",
            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
    assert await page.wait_for(f"{marker_state('iad')} === 'draining'", 10)
    assert await page.wait_for(
        "!!document.querySelector('#events li[data-kind=\"admin\"][data-pop=\"iad\"]')", 5)

    # A broken edit of the zone: a red banner naming the file and line.
    (srv.config.zones_dir / "st.example.yaml").write_text(ZONE + "  bad: {A: [\n")
    banner = await page.wait_for(
        "(() => { const b = document.getElementById('zone-errors');"
        " return !b.hidden && b.textContent; })()", 10)
    assert "st.example.yaml:" in banner
    assert await page.evaluate(
        "document.querySelector('#zone-table tr[data-zone=\"st.example.\"]').dataset.errors"
    ) != "0"
    assert await page.wait_for(
        "!!document.querySelector('#events li[data-kind=\"reload-error\"]')", 5)
    drained = await shoot(page, tmp_path / "3-iad-drained-zone-broken.png")
    assert amber(drained.marker("iad")), drained.marker("iad")
    assert red(drained.marker("fra")), drained.marker("fra")
    banner_box = await page.evaluate(
        "(() => { const r = document.getElementById('zone-errors').getBoundingClientRect();"
        " return [r.left + 8, r.top + r.height / 2].map(v => v * devicePixelRatio); })()")
    r_, g_, b_ = drained.pixel(banner_box)
    assert r_ > g_ + 20 and r_ > b_ + 20, (r_, g_, b_)  # a red background
    whole = tmp_path / "4-whole-page.png"
    whole.write_bytes(await page.screenshot(full_page=True))
    print(f"screenshot: {whole}")

    # The page loaded nothing but itself and /status, and threw nothing.
    requested = {e["params"]["request"]["url"] for e in page.events
                 if e["method"] == "Network.requestWillBeSent"}
    assert requested <= {url, base_url(srv) + "/status"}, requested
    errors = [e for e in page.events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")]
    assert not errors, errors

    # The browser loses the network: the page says so and keeps the last picture.
    await page.send("Network.emulateNetworkConditions", offline=True, latency=0,
                    downloadThroughput=-1, uploadThroughput=-1)
    assert await page.wait_for("document.getElementById('live').classList.contains('lost')", 10)
    assert "connection lost" in await page.evaluate(
        "document.getElementById('live').textContent")
    assert await page.evaluate(marker_state("fra")) == "down"
    await shoot(page, tmp_path / "5-connection-lost.png")


# -- the Fleet panel --------------------------------------------------------------------------

def text_of(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)})?.textContent ?? '')"


class Dressed:
    """What /status reads (the node's view), dressed by ``dress`` with
    made-up parts while ``on``."""

    def __init__(self, srv: Server, dress: Callable[[NodeView], NodeView]) -> None:
        self.on = False
        own = srv.view
        srv.view = lambda: dress(own()) if self.on else own()  # type: ignore[method-assign]


@pytest.mark.timeout(60)
async def test_fleet_panel_in_chromium(tmp_path: Path) -> None:
    """Hidden on a node outside a fleet; on a node in one (a made-up view:
    etcd lost, the newest revision refused, one node behind, a split vote,
    a fleet-wide drain) every part of it shows, and it hides again when the
    /status document has no fleet."""
    need_chromium()
    srv = Server(config(tmp_path))
    await srv.start()
    fleet = Dressed(srv, fleetsample.with_fleet)
    try:
        async with chromium(tmp_path / "profile", 1280, 900) as page:
            url = base_url(srv) + "/"
            await page.navigate(url)
            assert await page.wait_for(f"{text_of('#node')} === 'status-test-node'", 10)
            assert await page.evaluate("document.getElementById('fleet').hidden") is True
            assert await page.evaluate("document.getElementById('fleet-own').hidden") is True
            assert await page.evaluate("document.getElementById('fleet').offsetHeight") == 0

            fleet.on = True
            assert await page.wait_for("!document.getElementById('fleet').hidden", 10)
            # etcd lost: a warning banner at the top, and the etcd line says why.
            own = await page.wait_for(
                "!document.getElementById('fleet-own').hidden && "
                "document.getElementById('fleet-own').textContent", 5)
            # (Times are drawn when /status arrives: a slow machine may add a second.)
            assert "Own health verdicts" in own and re.search(r"since 1m 1[56]s ago", own)
            etcd = await page.evaluate(text_of("#fleet-etcd"))
            assert "http://10.0.0.1:2379" in etcd and fleetsample.ETCD_ERROR in etcd
            assert re.search(r"published etcd:42 by alice@laptop, 10m [01]s ago", etcd)
            assert "add www" in etcd
            assert "serving etcd:41" in etcd
            sub = await page.evaluate(text_of("#fleet-sub"))
            assert "ns1-fra" in sub and "own verdicts (up_votes 50%)" in sub
            # The refused revision, with its first problem.
            refused = await page.evaluate(
                "(() => { const b = document.getElementById('fleet-refused');"
                " return !b.hidden && b.textContent; })()")
            assert re.search(r"etcd:42 refused 3[01]s ago: etcd:41 keeps serving", refused)
            assert str(fleetsample.PROBLEM) in refused
            # Nodes: what each serves, behind or refused, health, errors.
            nodes = await page.evaluate(
                "[...document.querySelectorAll('#fleet-nodes tbody tr')].map(tr =>"
                " [tr.dataset.node, tr.dataset.behind || '', tr.textContent])")
            assert [n[:2] for n in nodes] == [["ns1-fra", ""], ["ns2-iad", ""],
                                               ["ns3-sin", "true"]]
            fra, iad, sin = (n[2] for n in nodes)
            assert "(this node)" in fra and "etcd:41" in fra and "refused etcd:42" in fra
            assert "own verdicts" in fra and re.search("[45]s ago", fra)
            assert "1: etcd:/geodns/zones" in fra
            assert "etcd:42" in iad and "newest" in iad and "fleet" in iad and "none" in iad
            assert "etcd:40" in sin and "behind" in sin and "(this node)" not in iad + sin
            # Votes: the verdict, every node's vote, the split one marked.
            votes = await page.evaluate(
                "[...document.querySelectorAll('#fleet-votes tbody tr')].map(tr =>"
                " [tr.dataset.pop, tr.dataset.disagree || '', tr.className,"
                "  tr.cells[1].textContent, [...tr.querySelectorAll('[data-vote]')]"
                "  .map(v => v.dataset.node + '=' + v.dataset.vote).join(' ')])")
            assert votes == [
                ["fra", "true", "split", "updisagree", "ns1-fra=up ns2-iad=up ns3-sin=down"],
                ["iad", "", "", "up", "ns1-fra=up ns2-iad=up ns3-sin=up"]]
            split_bg = await page.evaluate(
                "getComputedStyle(document.querySelector("
                "'#fleet-votes tr[data-pop=\"fra\"] td')).backgroundColor")
            plain_bg = await page.evaluate(
                "getComputedStyle(document.querySelector("
                "'#fleet-votes tr[data-pop=\"iad\"] td')).backgroundColor")
            assert split_bg != plain_bg, (split_bg, plain_bg)
            # The fleet-wide drain: state, who, when, why.
            drains = await page.evaluate(
                "[...document.querySelectorAll('#fleet-drains tbody tr')].map(tr =>"
                " [tr.dataset.pop, tr.textContent])")
            assert len(drains) == 1 and drains[0][0] == "iad"
            assert "draining" in drains[0][1] and "bob@ops" in drains[0][1]
            assert re.search(r"5m [01]s ago", drains[0][1]) and fleetsample.DRAIN_WHY in drains[0][1]
            shot = tmp_path / "fleet.png"
            shot.write_bytes(await page.screenshot(full_page=True))
            print(f"screenshot: {shot}")

            fleet.on = False
            assert await page.wait_for("document.getElementById('fleet').hidden && "
                                       "document.getElementById('fleet-own').hidden", 10)
            errors = [e for e in page.events if e["method"] == "Runtime.exceptionThrown"
                      or (e["method"] == "Runtime.consoleAPICalled"
                          and e["params"]["type"] == "error")]
            assert not errors, errors
    finally:
        await srv.shutdown()


# -- the Anycast panel ------------------------------------------------------------------------

PREFIXES = ("192.0.2.53/32", "2001:db8::53/128")
NOTES = ("[...document.querySelectorAll('#anycast-notes li')]"
         ".map(li => [li.dataset.note, li.textContent])")


@pytest.mark.timeout(60)
async def test_anycast_panel_in_chromium(tmp_path: Path) -> None:
    """A node with ``anycast:`` (ExaBGP): announced with no helper, then
    followed by a real ``geodns anycast-exabgp``, then drained by an operator
    (withdrawn, who and why); then the made-up routes of tests/anycastsample.py
    (BIRD not told, the self-check failing, drained) show the rest.  A node
    without ``anycast:`` shows no panel (test_status_page_in_chromium)."""
    need_chromium()
    # The self-check runs in the test's event loop, busy with the browser: a
    # generous timeout, so that the node does not withdraw by itself.
    cfg = replace(config(tmp_path), control_socket=tmp_path / "control.sock",
                  anycast=AnycastConfig(PREFIXES, hold_down=0.5, check_interval=0.2,
                                        check_timeout=0.8))
    srv = Server(cfg)
    await srv.start()
    made_up = Dressed(srv, anycastsample.with_anycast)
    exabgp = io.StringIO()
    stop = threading.Event()
    helper = threading.Thread(target=follow, args=(cfg.control_socket, list(PREFIXES)),
                              kwargs={"out": exabgp, "stop": stop}, daemon=True)
    try:
        async with chromium(tmp_path / "profile", 1280, 900) as page:
            await page.navigate(base_url(srv) + "/")
            facts = await page.wait_for(
                "document.getElementById('anycast').dataset.announced === 'true' && "
                + text_of("#anycast-facts"), 10)
            assert await page.evaluate("document.getElementById('anycast').hidden") is False
            assert re.search(r"^announced \d+s ago", facts), facts
            assert f"prefixes {', '.join(PREFIXES)}" in facts
            # ExaBGP announces nothing until a helper follows the node: flagged.
            assert "speaker exabgp · no helper" in facts
            assert "self-check ok 0 failed" in facts
            assert "changes 1 announce · 0 withdraw" in facts
            assert await page.evaluate(NOTES) == []

            helper.start()
            assert await page.wait_for(
                f"{text_of('#anycast-facts')}.includes('speaker exabgp · 1 helper')", 10)
            assert exabgp.getvalue().startswith(f"announce route {PREFIXES[0]} next-hop self")

            async with aiohttp.ClientSession() as s, s.post(
                    base_url(srv) + "/node/drain", json={"who": "carol@ops", "why": "disk swap"},
                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
            notes = await page.wait_for(
                "document.getElementById('anycast').dataset.announced === 'false' && " + NOTES, 10)
            assert [kind for kind, _ in notes] == ["why", "drain"], notes
            assert notes[0][1] == "withdrawn becausenode drained: disk swap"
            assert re.fullmatch(r"node drainedby carol@ops, [0-2]s ago“disk swap”", notes[1][1])
            facts = await page.evaluate(text_of("#anycast-facts"))
            assert re.search(r"^withdrawn [0-2]s ago", facts), facts
            assert "changes 1 announce · 1 withdraw" in facts and "self-check ok" in facts
            badge = await page.evaluate(
                "getComputedStyle(document.querySelector('#anycast-facts .badge'))"
                ".backgroundColor")
            assert amber(rgb(badge)), badge  # withdrawn by an operator, not by a failure

            made_up.on = True
            notes = await page.wait_for(
                f"{text_of('#anycast-facts')}.includes('speaker bird') && " + NOTES, 10)
            facts = await page.evaluate(text_of("#anycast-facts"))
            assert re.search(r"^withdrawn 5m [01]s ago", facts), facts
            assert "speaker bird" in facts and "helper" not in facts  # BIRD needs none
            assert "self-check failing 7 failed" in facts
            assert "changes 3 announce · 2 withdraw" in facts
            assert [kind for kind, _ in notes] == ["why", "drain", "check", "speaker"], notes
            assert notes[0][1] == (f"withdrawn becauseself-check failed: "
                                   f"{anycastsample.CHECK_ERROR}; node drained: "
                                   f"{anycastsample.DRAIN_WHY}")
            assert re.fullmatch(f"node drainedby {anycastsample.DRAIN_WHO}, 5m [01]s ago"
                                f"“{anycastsample.DRAIN_WHY}”", notes[1][1]), notes[1]
            assert notes[2][1] == f"self-check{anycastsample.CHECK_ERROR}"
            assert notes[3][1] == f"speaker{anycastsample.SPEAKER_ERROR}"
            shot = tmp_path / "anycast.png"
            shot.write_bytes(await page.screenshot(full_page=True))
            print(f"screenshot: {shot}")

            errors = [e for e in page.events if e["method"] == "Runtime.exceptionThrown"
                      or (e["method"] == "Runtime.consoleAPICalled"
                          and e["params"]["type"] == "error")]
            assert not errors, errors
    finally:
        stop.set()
        if helper.is_alive():
            await asyncio.to_thread(helper.join, 5)
        await srv.shutdown()


async def test_rate_limit_panel_in_chromium(tmp_path: Path) -> None:
    """A node with ``rate_limit``: the Rate limiting panel shows its settings,
    the limited answers and the network that sent too many."""
    need_chromium()
    if not rate_limit_available():
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    srv = Server(replace(config(tmp_path), rate_limit=RateLimitConfig(rate=2, slip=2)))
    await srv.start()
    try:
        query = dns.message.make_query("st.example.", "SOA").to_wire()

        def flood() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.9.7", 0))
                for _ in range(12):
                    s.sendto(query, ("127.0.0.1", srv.bound[0].port))

        await asyncio.to_thread(flood)
        async with chromium(tmp_path / "profile", 1280, 900) as page:
            await page.navigate(base_url(srv) + "/")
            top = await page.wait_for(
                "!document.getElementById('rrl').hidden && " + text_of("#rrl-top tbody"), 10)
            facts = await page.evaluate(text_of("#rrl-facts"))
    finally:
        await srv.shutdown()
    limited = sum(srv.view().counters.limited.values())
    assert 5 <= limited <= 10  # 12 sent, 2 a second with as many at once
    assert top == f"127.0.9.0/24{limited}", top
    assert facts.startswith("rate 2/s · slip 2 · /24 /56"), facts
    assert f"dropped {limited - limited // 2}" in facts and f"truncated {limited // 2}" in facts
