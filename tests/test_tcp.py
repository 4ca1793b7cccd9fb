"""TCP at its edges, against a real `geodns serve` process on loopback.

Each test starts its own server (uvloop, as in production) with a zone whose
TXT answer is about 4 KB, and drives it with plain sockets: a client that
half-closes after its queries, one that pipelines thousands of queries and
never reads (its small receive buffer fills, then the server's send buffer,
then the server's own write buffer, until back-pressure makes the server stop
reading), one that resets the connection while answers are pending, and a
SIGTERM while a write buffer is full.

What the server holds is observed from outside: its count of TCP answers in
/metrics, its resident memory and its open sockets in /proc.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families
from refservers import free_port

BIG_TXT = "[" + ", ".join(f'"{c * 250}"' for c in "abcdefghijklmnop") + "]"  # ~4 KB
ZONE = f"""\
origin: tcp.example.
soa: {{mname: ns1, rname: h}}
records:
  "@": {{NS: [ns1]}}
  ns1: {{A: 192.0.2.53}}
  big: {{TXT: [{BIG_TXT}]}}
"""
BIG_ANSWER = 4000  # bytes, at least
SMALL_BUFFER = 4096  # SO_RCVBUF / SO_SNDBUF of the stuck clients (the kernel doubles it)


class Served:
    """A `geodns serve` process with the zone above and an admin API (metrics)."""

    def __init__(self, tmp_path: Path, idle_timeout: float = 30.0,
                 max_connections: int = 100, **limits: float) -> None:
        (tmp_path / "zones").mkdir()
        (tmp_path / "zones" / "tcp.example.yaml").write_text(ZONE)
        self.tmp_path = tmp_path
        # Generous timeouts unless a test is about one of them (tcp: in docs/configuration.md).
        self.tcp = {"idle_timeout": idle_timeout, "max_connections": max_connections,
                    "initial_timeout": 30, "query_timeout": 30, "send_timeout": 30, **limits}
        self.log_path = tmp_path / "geodns.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = self.admin_port = 0

    def start(self) -> None:
        for _ in range(3):  # a free port can be taken by someone else before we bind it
            self.port = self.admin_port = free_port()
            while self.admin_port == self.port:
                self.admin_port = free_port()
            cfg = self.tmp_path / "geodns.yaml"
            cfg.write_text(json.dumps({
                "listen": [f"127.0.0.1:{self.port}"], "zones": "zones",
                "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
                "tcp": self.tcp, "reload": {"interval": 60}}))
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config", str(cfg)],
                    stdout=subprocess.DEVNULL, stderr=log)
            if self._ready():
                return
        raise AssertionError(f"geodns serve did not start:\n{self.log()}")

    def _ready(self) -> bool:
        assert self.proc is not None
        q = dns.message.make_query("ns1.tcp.example.", "A")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:  # short: most tries reach a port nobody listens on yet
                dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.2)
                self.tcp_answers()
                return True
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """The samples of one metric in /metrics: (labels, value)."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return [(s.labels, s.value) for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == name]

    def tcp_answers(self) -> int:
        """TCP queries answered so far, as /metrics counts them."""
        return int(sum(v for labels, v in self.samples("geodns_dns_queries_total")
                       if labels.get("transport") == "tcp"))

    def tcp_closed(self) -> dict[str, int]:
        """TCP connections geodns closed, by reason, as /metrics counts them."""
        return {labels["reason"]: int(v)
                for labels, v in self.samples("geodns_tcp_closed_connections_total")}

    def settled_tcp_answers(self, quiet: float = 1.5, limit: float = 20.0) -> int:
        """The TCP answer count once it has not moved for ``quiet`` seconds
        (longer than workers take to publish their counts, every second: a
        shorter wait once read a count that was still to grow by 85)."""
        deadline = time.monotonic() + limit
        last = self.tcp_answers()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.tcp_answers()
            if now == last:
                return now
            last = now
        raise AssertionError(f"the server kept answering for {limit} s")

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def held(self, client_ports: set[int]) -> set[int]:
        """Which of these client ports the server process still has a socket to."""
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:  # closed since the listing
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        out = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (inode in inodes and int(local.rsplit(":", 1)[1], 16) == self.port
                        and int(remote.rsplit(":", 1)[1], 16) in client_ports):
                    out.add(int(remote.rsplit(":", 1)[1], 16))
        return out

    def still_serves(self) -> None:
        """Other clients get answers over UDP and over TCP."""
        q = dns.message.make_query("ns1.tcp.example.", "A")
        for resp in (dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5),
                     dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5)):
            assert resp.rcode() == 0 and resp.answer[0][0].to_text() == "192.0.2.53"

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    srv = Served(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def framed(qid: int, name: str = "big.tcp.example.", rtype: str = "TXT") -> bytes:
    """One query with ID ``qid``, with the 2-byte length TCP puts in front."""
    wire = _query_wire(name, rtype)
    return struct.pack("!HH", len(wire), qid) + wire[2:]


@functools.cache
def _query_wire(name: str, rtype: str) -> bytes:
    return dns.message.make_query(name, rtype).to_wire()


def split(data: bytes) -> tuple[list[dns.message.Message], int]:
    """The complete messages in a TCP byte stream, and how many bytes are left over."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        size = struct.unpack("!H", data[pos : pos + 2])[0]
        if pos + 2 + size > len(data):
            break
        out.append(dns.message.from_wire(data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out, len(data) - pos


def read_to_end(sock: socket.socket, limit: float = 15.0) -> tuple[bytes, str]:
    """Everything the server sends until it closes: (data, "eof" or the error)."""
    sock.setblocking(True)
    data = bytearray()
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(data), "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except OSError as exc:  # a reset, or the time is up
            return bytes(data), repr(exc)
        if not chunk:
            return bytes(data), "eof"
        data += chunk


def stuck_client(port: int, count: int = 20000, patience: float = 0.3
                 ) -> tuple[socket.socket, int]:
    """A client with small buffers that pipelines ``count`` queries for the
    4 KB answer and reads nothing.  Returns the socket and how many complete
    queries it got to send before its sends stayed blocked for ``patience``
    seconds (the server stopped reading), or all of them if they never did."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    one = len(framed(0))
    data = b"".join(framed(i) for i in range(count))
    sent = 0
    blocked_since: float | None = None
    deadline = time.monotonic() + 30
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent : sent + 65536])
            blocked_since = None
        except BlockingIOError:
            now = time.monotonic()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > patience:
                break
            time.sleep(0.01)
    return sock, sent // one


def unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def back_pressure(srv: Served, count: int = 20000) -> tuple[socket.socket, int, int]:
    """A stuck client, and proof that the server's write buffer filled: the
    server answered only part of what was sent and then stopped reading,
    while the client still has queries queued.  Returns (socket, queries
    sent, queries answered)."""
    sock, sent = stuck_client(srv.port, count)
    answered = srv.settled_tcp_answers()
    assert sent < count, "the client sent everything: the server never stopped reading"
    assert 0 < answered < sent, (answered, sent)
    assert unsent(sock) > 0
    # The client read nothing and its receive buffer is a few KB: the answers
    # are in the server's send buffer and, beyond that, its write buffer.
    assert answered * BIG_ANSWER > 64 * SMALL_BUFFER, answered
    return sock, sent, answered


# -- tests ------------------------------------------------------------------------------


def test_half_close_after_the_queries(served: Served) -> None:
    """A client may shut down its sending side right after its queries
    (RFC 7766 6.2.1.1 lets it): every answer still arrives, then the server closes."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(framed(7, "ns1.tcp.example.", "A"))
        sock.shutdown(socket.SHUT_WR)
        data, end = read_to_end(sock)
    answers, left = split(data)
    assert end == "eof" and left == 0
    assert [(a.id, a.answer[0][0].to_text()) for a in answers] == [(7, "192.0.2.53")]
    # Many large answers: the server's write buffer fills and it stops reading
    # before it has seen the end of the stream; the answers and the close still come.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    with sock:
        sock.connect(("127.0.0.1", served.port))
        sock.settimeout(10)
        sock.sendall(b"".join(framed(i) for i in range(5000)))
        sock.shutdown(socket.SHUT_WR)
        settled = served.settled_tcp_answers()
        assert settled < 1 + 5000, "the server did not stop reading: no back-pressure"
        # Read faster from here (the window can only grow to what was agreed at connect).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        data, end = read_to_end(sock)
    answers, left = split(data)
    assert end == "eof" and left == 0, (end, len(answers))
    assert [a.id for a in answers] == list(range(5000))
    assert all(len(a.answer[0]) == 1 for a in answers)


def test_client_that_never_reads_is_bounded_and_others_are_served(served: Served) -> None:
    """A client that pipelines queries and never reads gets its queries read
    only while the server can buffer the answers; then the server stops
    reading it, stops growing, and goes on serving everybody else."""
    before = served.rss()
    sock, _, answered = back_pressure(served)
    with sock:
        # Pushing harder gets it nowhere.
        for _ in range(20):
            with contextlib.suppress(BlockingIOError):
                sock.send(framed(0) * 100)
            time.sleep(0.025)
        assert served.tcp_answers() == answered
        # Answering all it sent would take some 25 MB (4 KB each); the server
        # holds what back-pressure lets in, a few MB.
        grown = served.rss() - before
        assert grown < 32 * (1 << 20), f"the server grew by {grown >> 20} MB"
        served.still_serves()


def test_clients_that_never_read_are_let_go(tmp_path: Path) -> None:
    """More clients that never read than max_connections: each is closed when
    idle (or evicted), and the server must then let go of its socket and its
    buffered answers within a few seconds, not hold them for ever."""
    srv = Served(tmp_path, idle_timeout=0.5, max_connections=2)
    srv.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            sock, _ = stuck_client(srv.port, 5000)
            socks.append(sock)
        ports = {s.getsockname()[1] for s in socks}
        deadline = time.monotonic() + 0.5 + 3
        while held := srv.held(ports):
            assert time.monotonic() < deadline, (
                f"{len(held)} of {len(ports)} clients that never read are still held "
                f"{0.5 + 3} s after the last one went idle (max_connections 2)")
            time.sleep(0.1)
        srv.still_serves()
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_client_reset_with_answers_pending(served: Served) -> None:
    """The client resets the connection while the server holds answers for it:
    the server's writes fail; it lets the connection go, logs nothing
    alarming and keeps serving."""
    sock, _, _ = back_pressure(served)
    port = sock.getsockname()[1]
    assert served.held({port}) == {port}
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with linger 0: RST
    deadline = time.monotonic() + 5
    while served.held({port}):
        assert time.monotonic() < deadline, "the reset connection is still held after 5 s"
        time.sleep(0.05)
    served.still_serves()
    assert served.stop() == 0
    alarming = [line for line in served.log().splitlines()
                if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "Traceback",
                                           "Exception", "exception", "Fatal"))]
    assert not alarming, alarming


def test_sigterm_delivers_every_answer_already_produced(served: Served) -> None:
    """SIGTERM while a client's answers fill the server's write buffer: every
    answer the server produced (its TCP answer count) reaches the client, in
    order and whole, before the connection closes cleanly."""
    sock, _, answered = back_pressure(served)
    with sock:
        assert served.proc is not None
        served.proc.send_signal(signal.SIGTERM)
        data, end = read_to_end(sock)
    answers, left = split(data)
    assert end == "eof", f"{end} after {len(answers)} of {answered} answers"
    assert left == 0
    assert [a.id for a in answers] == list(range(answered))
    assert served.stop() == 0
    assert "stopped" in served.log()
