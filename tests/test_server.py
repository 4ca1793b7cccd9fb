"""The server over real loopback sockets on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from refservers import skip_or_fail

from geodns.compile import compile_zones
from geodns.config import Address, Config, TcpConfig
from geodns.server import sockets
from geodns.server.app import Server
from geodns.server.transport import HAVE_UDPBATCH, UDPReader
from geodns.wire import Responder
from tests.conftest import TEST_ZONE, load_test_zone, section

ZONE_V1 = """\
origin: reload.example.
soa: {mname: ns1, rname: hostmaster, serial: SERIAL}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www: {A: ADDRESS}
"""


def write_zone(path: Path, address: str, serial: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ZONE_V1.replace("ADDRESS", address).replace("SERIAL", str(serial)))
    os.replace(tmp, path)


@pytest.fixture
def zones_dir(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    shutil.copy(TEST_ZONE, d / TEST_ZONE.name)
    write_zone(d / "reload.example.yaml", "192.0.2.1", 1)
    return d


@pytest.fixture(params=["batch", "reader", "protocol"])
async def server(zones_dir: Path, request):
    """A server for each way of reading UDP (recvmmsg, recvfrom, asyncio)."""
    if request.param == "batch" and not HAVE_UDPBATCH:
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones_dir,
                 tcp=TcpConfig(idle_timeout=1.0, max_connections=4), reload_interval=0.2)
    srv = Server(cfg, udp_mode=request.param)
    await srv.start()
    yield srv
    await srv.shutdown()


def addr(srv: Server) -> tuple[str, int]:
    return srv.bound[0].host, srv.bound[0].port


async def query(srv: Server, name: str, rtype: str = "A", tcp: bool = False):
    q = dns.message.make_query(name, rtype)
    host, port = addr(srv)
    if tcp:
        return await dns.asyncquery.tcp(q, host, port=port, timeout=2)
    return await dns.asyncquery.udp(q, host, port=port, timeout=2)


async def test_udp_and_tcp_answer(server: Server) -> None:
    for tcp in (False, True):
        resp = await query(server, "www.test.example.", tcp=tcp)
        assert section(resp.answer) == ["www.test.example. 300 A 192.0.2.10",
                                        "www.test.example. 300 A 192.0.2.11"]


async def _started_on(host: str, zones_dir: Path) -> Server:
    """A server listening on host (port 0), started; the test is skipped
    (or fails, in CI) where host cannot be bound."""
    srv = Server(Config(path=None, listen=[Address(host, 0)], zones_dir=zones_dir))
    try:
        await srv.start()
    except OSError as exc:
        skip_or_fail(f"cannot bind {host}: {exc}")
    return srv


async def test_ipv6_listener(zones_dir: Path) -> None:
    if not socket.has_ipv6:
        skip_or_fail("no IPv6 on this machine")
    srv = await _started_on("::1", zones_dir)
    try:
        q = dns.message.make_query("www.test.example.", "AAAA")
        for resp in (await dns.asyncquery.udp(q, "::1", port=srv.bound[0].port, timeout=2),
                     await dns.asyncquery.tcp(q, "::1", port=srv.bound[0].port, timeout=2)):
            assert section(resp.answer) == ["www.test.example. 3600 AAAA 2001:db8::10"]
    finally:
        await srv.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_udp_sockets_ignore_path_mtu(zones_dir: Path, host: str) -> None:
    """Every UDP socket a node answers on, bound by it or given to it (by
    systemd or the process it replaces), ignores path MTU information
    (IP_PMTUDISC_OMIT, as gdnsd and Knot set): no Don't Fragment on answers,
    and a forged ICMP "fragmentation needed" cannot shrink them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    level, name = ((socket.IPPROTO_IPV6, sockets.IPV6_MTU_DISCOVER) if ":" in host
                   else (socket.IPPROTO_IP, sockets.IP_MTU_DISCOVER))
    srv = await _started_on(host, zones_dir)
    try:
        udp = [s for s in srv.listeners.sockets if s.type == socket.SOCK_DGRAM]
        assert udp and all(s.getsockopt(level, name) == sockets.PMTUDISC_OMIT for s in udp)
        resp = await query(srv, "www.test.example.")
        assert resp.rcode() == dns.rcode.NOERROR
    finally:
        await srv.shutdown()
    given = socket.socket(family, socket.SOCK_DGRAM)
    given.bind((host, 0))
    assert given.getsockopt(level, name) != sockets.PMTUDISC_OMIT  # (the kernel's default)
    taken = sockets.GivenSockets([given]).take(host, given.getsockname()[1], socket.SOCK_DGRAM)
    with given:
        assert taken is given and given.getsockopt(level, name) == sockets.PMTUDISC_OMIT


async def _tcp_read_messages(reader: asyncio.StreamReader, count: int) -> list[dns.message.Message]:
    out = []
    for _ in range(count):
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
        out.append(dns.message.from_wire(await reader.readexactly(size)))
    return out


async def test_tcp_pipelining_in_one_write(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*addr(server))
    queries = [dns.message.make_query(n, "A") for n in
               ("www.test.example.", "nothere.test.example.", "mail.test.example.")]
    writer.write(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries)))
    answers = await _tcp_read_messages(reader, 3)
    assert [a.id for a in answers] == [q.id for q in queries]
    assert [a.rcode() for a in answers] == [0, dns.rcode.NXDOMAIN, 0]
    writer.close()


async def test_tcp_query_split_across_segments(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*addr(server))
    wire = dns.message.make_query("www.test.example.", "A").to_wire()
    framed = struct.pack("!H", len(wire)) + wire
    for i in range(len(framed)):
        writer.write(framed[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0)
    (answer,) = await _tcp_read_messages(reader, 1)
    assert len(answer.answer[0]) == 2
    writer.close()


async def test_tcp_idle_connection_is_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection(*addr(server))
    t0 = time.monotonic()
    data = await asyncio.wait_for(reader.read(1), 5)
    assert data == b""  # closed by the server
    assert 0.9 <= time.monotonic() - t0 < 3.5
    writer.close()


async def test_tcp_connection_cap_evicts_longest_idle(server: Server) -> None:
    conns = [await asyncio.open_connection(*addr(server)) for _ in range(6)]
    # The first two (longest idle) are closed to make room.
    for reader, _ in conns[:2]:
        assert await asyncio.wait_for(reader.read(1), 5) == b""
    assert len(server.tcp.open) <= 4
    # A new client still gets an answer.
    resp = await query(server, "www.test.example.", tcp=True)
    assert resp.rcode() == 0
    for _, writer in conns:
        writer.close()


async def test_garbage_does_not_stop_the_server(server: Server) -> None:
    rnd = random.Random(7)
    host, port = addr(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(300):
        sock.sendto(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 80))), (host, port))
    sock.close()
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x00\x05hello\x00\x00")
    await asyncio.sleep(0.05)
    writer.close()
    resp = await query(server, "www.test.example.")
    assert resp.rcode() == 0


async def _wait_for_answer(srv: Server, expect: str, limit: float = 10.0) -> float:
    """Seconds until www.reload.example. is answered with ``expect``; fails
    after ``limit`` seconds (generous: a loaded 2-core machine is slow)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        resp = await query(srv, "www.reload.example.")
        if section(resp.answer) == [f"www.reload.example. 3600 A {expect}"]:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{expect} not served within {limit} s")


async def _wait_for_rcode(srv: Server, name: str, rcode: int, limit: float = 10.0
                          ) -> dns.message.Message:
    deadline = time.monotonic() + limit
    while True:
        resp = await query(srv, name)
        if resp.rcode() == rcode or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.05)


async def test_changed_zone_is_served_without_a_signal(server: Server,
                                                       zones_dir: Path) -> None:
    await _wait_for_answer(server, "192.0.2.1")
    write_zone(zones_dir / "reload.example.yaml", "192.0.2.2", 2)
    # The poll (every 0.2 s here) picks it up in well under a second on an idle
    # machine; the bound leaves room for a loaded one.
    took = await _wait_for_answer(server, "192.0.2.2")
    assert took < 5.0, took


def test_udp_reader_does_not_wait_on_a_socket_made_blocking() -> None:
    """``reader`` UDP shares its socket with a successor on a hand-over,
    whose reader thread makes it blocking (UDPPlaneThread.start): its reads
    and sends say not to wait, so a readiness event that finds the socket
    empty at the end costs no wait."""
    server, client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), \
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind(("127.0.0.1", 0))
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 2, 0))
        server.setblocking(False)
        os.set_blocking(server.fileno(), True)  # (as a successor's thread leaves it)
        client.settimeout(2)

        class Source:
            limiter = None
            responder = Responder(compile_zones([load_test_zone()]))

        reader = UDPReader(Source(), server)
        client.sendto(dns.message.make_query("www.test.example.", "A").to_wire(),
                      server.getsockname())
        started = time.monotonic()
        reader.on_readable()
        assert time.monotonic() - started < 1.0
        assert section(dns.message.from_wire(client.recv(512)).answer) == [
            "www.test.example. 300 A 192.0.2.10", "www.test.example. 300 A 192.0.2.11"]


async def test_batch_udp_lets_an_old_snapshot_go_while_idle(zones_dir: Path) -> None:
    """``batch`` UDP: once the socket is quiet, its thread (whose reads wait
    in recvmmsg, with a snapshot's plane) holds nothing of the snapshot a
    reload replaced, which is freed; the next query gets the new answer.
    (A batch read just after a reload: tests/test_plane.py.)"""
    if not HAVE_UDPBATCH:
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones_dir,
                 reload_interval=3600)
    srv = Server(cfg, udp_mode="batch")
    await srv.start()
    try:
        assert srv.responder.plane is not None
        for address, serial in (("192.0.2.2", 2), ("192.0.2.3", 3)):
            for _ in range(3):  # (the plane's answer: the name is in its exact table)
                await query(srv, "www.reload.example.")
            old = srv.responder
            write_zone(zones_dir / "reload.example.yaml", address, serial)
            assert await srv.reload(force=True)
            deadline = time.monotonic() + 5
            while sys.getrefcount(old) > 2:  # (old, and the call's argument)
                assert time.monotonic() < deadline, gc.get_referrers(old)
                await asyncio.sleep(0.05)  # (the thread's reads wait 0.05 s, then it polls)
                gc.collect()
            del old
            resp = await query(srv, "www.reload.example.")
            assert section(resp.answer) == [f"www.reload.example. 3600 A {address}"]
    finally:
        await srv.shutdown()


async def test_broken_edit_keeps_previous_version(server: Server, zones_dir: Path,
                                                  caplog) -> None:
    path = zones_dir / "reload.example.yaml"
    path.write_text(path.read_text().replace("192.0.2.1", "192.0.2.999"))
    deadline = time.monotonic() + 10
    while not server.snapshot.errors():
        assert time.monotonic() < deadline, "the broken edit was not read within 10 s"
        await asyncio.sleep(0.05)
    resp = await query(server, "www.reload.example.")
    assert section(resp.answer) == ["www.reload.example. 3600 A 192.0.2.1"]
    errors = server.snapshot.errors()
    assert len(errors) == 1 and "reload.example.yaml:6:" in str(errors[0])
    assert "is not an IPv4 address" in caplog.text
    # Fixing the file brings the new version in.
    write_zone(path, "192.0.2.3", 3)
    await _wait_for_answer(server, "192.0.2.3")
    assert server.snapshot.errors() == []


async def test_new_zone_file_and_removed_zone_file(server: Server, zones_dir: Path) -> None:
    extra = zones_dir / "added.example.yaml"
    extra.write_text(ZONE_V1.replace("reload.example.", "added.example.")
                     .replace("ADDRESS", "192.0.2.7").replace("SERIAL", "1"))
    resp = await _wait_for_rcode(server, "www.added.example.", dns.rcode.NOERROR)
    assert section(resp.answer) == ["www.added.example. 3600 A 192.0.2.7"]
    extra.unlink()
    resp = await _wait_for_rcode(server, "www.added.example.", dns.rcode.REFUSED)
    assert resp.rcode() == dns.rcode.REFUSED


async def test_no_query_lost_or_wrong_during_reloads_under_load(server: Server,
                                                               zones_dir: Path) -> None:
    """Queries flow while the zone is rewritten (sometimes broken); each
    answer is one of the valid versions, none goes unanswered, and once the
    last edit settles it is what every later query gets."""
    path = zones_dir / "reload.example.yaml"
    versions = ["192.0.2.1", "192.0.2.2"]
    final = "192.0.2.3"  # the last edit, served by no earlier version
    valid = {*versions, final}
    final_written: float | None = None

    async def rewrite() -> None:
        nonlocal final_written
        serial = 10
        for i in range(12):
            serial += 1
            if i % 4 == 3:
                path.write_text("records: [broken")
            else:
                write_zone(path, versions[i % 2], serial)
            await asyncio.sleep(0.25)
        write_zone(path, final, serial + 1)  # right after a broken edit
        final_written = time.monotonic()

    seen: set[str] = set()
    count = 0

    async def load() -> None:
        nonlocal count
        host, port = addr(server)
        final_answers = 0  # answers with the final version, to queries sent after the first
        while final_answers < 20:
            assert count < 100_000
            q = dns.message.make_query("www.reload.example.", "A")
            resp = await dns.asyncquery.udp(q, host, port=port, timeout=2)
            assert resp.rcode() == 0
            got = {rd.address for rd in resp.answer[0]}
            assert len(got) == 1 and got <= valid, got
            seen.update(got)
            count += 1
            if got == {final}:
                final_answers += 1
            elif final_answers:
                raise AssertionError(f"{got} served after the final version was")
            elif final_written is not None:
                waited = time.monotonic() - final_written
                assert waited < 10, f"the last edit is not served {waited:.1f} s after it"

    await asyncio.gather(rewrite(), load(), load())
    assert count > 100 and seen == valid


ZONE_TOKEN = "reload-test-token-1234"


async def test_same_size_rewrite_within_one_mtime_tick(zones_dir: Path) -> None:
    """A zone file is rewritten in place twice, with contents of the same size,
    within one tick of the file system's clock (kernel timestamps advance in
    coarse ticks, and some file systems keep whole seconds), with a forced
    reload in between: the second version must still be served.  The test
    pins the second write's mtime to the first's, so that the collision does
    not depend on how fast this machine is."""
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones_dir,
                 admin=Address("127.0.0.1", 0), admin_token=ZONE_TOKEN, reload_interval=0.2)
    srv = Server(cfg)
    await srv.start()
    path = zones_dir / "reload.example.yaml"

    def rewrite_in_place(address: str, serial: int) -> os.stat_result:
        with path.open("r+") as f:  # same inode, as an editor or `cat >` would
            f.write(ZONE_V1.replace("ADDRESS", address).replace("SERIAL", str(serial)))
            f.truncate()
        return os.stat(path)

    try:
        first = rewrite_in_place("192.0.2.41", 41)
        assert srv.admin is not None
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{srv.admin.port}/reload",
                headers={"Authorization": f"Bearer {ZONE_TOKEN}"}) as r:
            assert r.status == 200
            assert [z["serial"] for z in (await r.json())["zones"].values()
                    if z["zone"] == "reload.example."] == [41]
        await _wait_for_answer(srv, "192.0.2.41", limit=5)
        second = rewrite_in_place("192.0.2.42", 42)
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))  # the same tick
        second = os.stat(path)
        assert (second.st_size, second.st_ino, second.st_mtime_ns) == \
            (first.st_size, first.st_ino, first.st_mtime_ns)
        await _wait_for_answer(srv, "192.0.2.42", limit=3)
    finally:
        await srv.shutdown()


def test_cli_serve_sighup_and_sigterm(zones_dir: Path, tmp_path: Path) -> None:
    """A real `geodns serve` process: answers, reloads on SIGHUP, stops on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(f"listen: ['127.0.0.1:{port}']\nzones: zones\nreload: {{interval: 60}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    try:
        q = dns.message.make_query("www.reload.example.", "A")

        for _ in range(100):
            try:
                resp = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.2)
                break
            except (dns.exception.Timeout, ConnectionRefusedError):
                time.sleep(0.05)
        assert section(resp.answer) == ["www.reload.example. 3600 A 192.0.2.1"]
        write_zone(zones_dir / "reload.example.yaml", "192.0.2.9", 9)
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            resp = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
            if section(resp.answer) == ["www.reload.example. 3600 A 192.0.2.9"]:
                break
            time.sleep(0.05)
        assert section(resp.answer) == ["www.reload.example. 3600 A 192.0.2.9"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "reload requested (SIGHUP)" in err and "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _epoll_watched() -> set[int]:
    """Every file descriptor some epoll set of this process watches
    (``tfd`` in /proc/self/fdinfo of each eventpoll descriptor)."""
    watched: set[int] = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            info = Path(f"/proc/self/fdinfo/{name}").read_text()
        except OSError:
            continue
        watched |= {int(line.split()[1]) for line in info.splitlines()
                    if line.startswith("tfd:")}
    return watched


async def test_batch_udp_is_read_by_a_thread_outside_the_event_loop(zones_dir: Path) -> None:
    """``batch`` UDP: a thread per socket waits in recvmmsg and the C plane
    answers; the socket is in no epoll set (whose wait entry would be woken
    for every answer sent), what the plane leaves to Python is answered all
    the same (NODATA, a zone's types not pre-built, a query with a
    cookie-less unknown option), and shutting down stops the thread."""
    if not HAVE_UDPBATCH:
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones_dir)
    srv = Server(cfg, udp_mode="batch")
    await srv.start()
    try:
        udp = [s for s in srv.listeners.sockets if s.type == socket.SOCK_DGRAM]
        assert udp and not {s.fileno() for s in udp} & _epoll_watched()
        assert [t for t in threading.enumerate() if t.name.startswith("geodns-udp-")]
        plane = srv.responder.plane
        assert plane is not None
        for _ in range(3):  # C's answer, then Python's (NODATA), then C's again
            resp = await query(srv, "www.test.example.")
            assert section(resp.answer) == ["www.test.example. 300 A 192.0.2.10",
                                            "www.test.example. 300 A 192.0.2.11"]
            resp = await query(srv, "www.test.example.", "TXT")
            assert resp.rcode() == dns.rcode.NOERROR and not resp.answer and resp.authority
            q = dns.message.make_query("www.test.example.", "A")
            q.use_edns(0, options=[dns.edns.GenericOption(65001, b"x")])  # left to Python
            resp = await dns.asyncquery.udp(q, *addr(srv)[:1], port=addr(srv)[1], timeout=2)
            assert len(section(resp.answer)) == 2
        counts = srv.responder.counts
        assert sum(counts.values()) == 9
    finally:
        await srv.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("geodns-udp-")]


async def test_batch_udp_threads_of_two_sockets_answer_at_once(zones_dir: Path) -> None:
    """Two listen addresses: two reader threads, each with its own receive
    and send vectors (a thread's batch may let the other run while it is
    half done: the plane hands Python what it leaves).  Both are asked at
    once, answers of C and of Python mixed; every answer must be its own
    query's, with the right data."""
    if not HAVE_UDPBATCH:
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0), Address("127.0.0.2", 0)],
                 zones_dir=zones_dir)
    srv = Server(cfg, udp_mode="batch")
    await srv.start()
    try:
        want = {"A": ["www.test.example. 300 A 192.0.2.10", "www.test.example. 300 A 192.0.2.11"],
                "TXT": []}  # (TXT: NODATA, Python's)
        bad: list[str] = []

        def ask(host: str, port: int, seed: int) -> int:
            rnd = random.Random(seed)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(2)
            sent: dict[int, str] = {}
            got = 0
            try:
                for n in range(40):  # 40 rounds of 50 queries in flight
                    for k in range(50):
                        rtype = rnd.choice(["A", "TXT"])
                        q = dns.message.make_query("www.test.example.", rtype)
                        q.id = n * 50 + k  # (no two alike in flight)
                        sent[q.id] = rtype
                        sock.sendto(q.to_wire(), (host, port))
                    for _ in range(50):
                        r = dns.message.from_wire(sock.recv(4096))
                        rtype = sent.pop(r.id, None)
                        if rtype is None or section(r.answer) != want[rtype] or \
                                r.question[0].rdtype != dns.rdatatype.from_text(rtype):
                            bad.append(r.to_text())
                        got += 1
            except TimeoutError:
                pass
            finally:
                sock.close()
            return got

        loop = asyncio.get_running_loop()
        (h1, p1), (h2, p2) = [(b.host, b.port) for b in srv.bound]
        # Python's lock passed at (nearly) every chance: a batch half done in
        # one thread meets the other's as often as it can.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            got = await asyncio.gather(loop.run_in_executor(None, ask, h1, p1, 1),
                                       loop.run_in_executor(None, ask, h2, p2, 2))
        finally:
            sys.setswitchinterval(interval)
        assert not bad, bad[:3]
        assert got == [2000, 2000]
    finally:
        await srv.shutdown()


async def test_batch_udp_falls_back_to_the_event_loop_if_its_thread_fails(
        zones_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the UDP reader thread (here: its batch raises) is logged and
    the event loop reads the socket from then on: the node keeps answering,
    and shuts down cleanly."""
    if not HAVE_UDPBATCH:
        skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")
    from geodns.server import transport

    def broken(self: transport.UDPPlaneThread) -> None:
        raise RuntimeError("a bug in the reader thread")

    monkeypatch.setattr(transport.UDPPlaneThread, "_read", broken)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones_dir)
    srv = Server(cfg, udp_mode="batch")
    await srv.start()
    try:
        q = dns.message.make_query("www.test.example.", "A")
        with contextlib.suppress(dns.exception.Timeout):  # the query the thread failed on
            await dns.asyncquery.udp(q, addr(srv)[0], port=addr(srv)[1], timeout=0.5)
        for _ in range(3):
            resp = await query(srv, "www.test.example.")
            assert section(resp.answer) == ["www.test.example. 300 A 192.0.2.10",
                                            "www.test.example. 300 A 192.0.2.11"]
        udp = [s for s in srv.listeners.sockets if s.type == socket.SOCK_DGRAM]
        assert {s.fileno() for s in udp} <= _epoll_watched()  # the loop reads it now
        assert "UDP reader thread failed" in caplog.text
    finally:
        await srv.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("geodns-udp-")]
