"""The hard limits on TCP (docs/abuse.md, Hard limits: TCP).

At two depths: the registry of connections with made-up connections and a
made-up clock (which network an address is in, which connection goes at a
cap, which timeout closes what); then a real `geodns serve` on loopback
(tests/test_tcp.py's Served), driven by plain sockets bound to other
127.x addresses so that they come from other client networks: a client
that sends one byte every 0.3 s, one that connects and says nothing, many
connections from one network, more connections than the total cap, and a
client that pipelines 10,000 queries without reading.  Timeouts are a
fraction of a second so that each test takes a few seconds; the bounds
checked leave room for a loaded machine (a sweep runs every half timeout).
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import dns.message
import pytest
import yaml
from test_tcp import Served, framed, split, stuck_client

from geodns.cli import main
from geodns.config import TcpConfig, load_config
from geodns.counters import TcpClosed
from geodns.server.transport import TCPConnection, TCPConnections
from geodns.yamlsrc import Problems

# -- the registry, without sockets ---------------------------------------------------------------


@dataclass(eq=False)
class FakeConnection:
    """What the registry uses of a connection."""

    peer: tuple[str, int] | None
    network: tuple[int, int] = (0, 0)
    dropped: bool = False

    def drop(self) -> None:
        self.dropped = True


def fake(peer: tuple[str, int] | None) -> TCPConnection:
    return cast(TCPConnection, FakeConnection(peer))


def dropped(conn: TCPConnection) -> bool:
    return cast(FakeConnection, conn).dropped


def test_client_networks() -> None:
    tcp = TCPConnections(TcpConfig())
    net = tcp.network_of
    assert net(("192.0.2.1", 53)) == net(("192.0.2.254", 1024)) != net(("192.0.3.1", 53))
    # /56: the first byte of the fourth group is still the network.
    assert net(("2001:db8:0:ff::1", 53, 0, 0)) == net(("2001:db8::1", 53, 0, 0))
    assert net(("2001:db8:0:100::1", 53, 0, 0)) != net(("2001:db8::1", 53, 0, 0))
    assert net(("fe80::1%lo", 53, 0, 1)) == net(("fe80::2", 53, 0, 0))
    # An IPv4-mapped address is the IPv4 client it is.
    assert net(("::ffff:192.0.2.9", 53, 0, 0)) == net(("192.0.2.1", 53))
    assert net(None) == net(("not an address", 1)) == (0, 0)
    tcp.configure(TcpConfig(ipv4_prefix_length=32, ipv6_prefix_length=128))
    assert net(("192.0.2.1", 53)) != net(("192.0.2.2", 53))
    assert net(("2001:db8::1", 53, 0, 0)) != net(("2001:db8::2", 53, 0, 0))


def test_at_a_network_cap_its_least_recently_active_connection_goes() -> None:
    tcp = TCPConnections(TcpConfig(max_connections=5, max_connections_per_network=3))
    a = [fake((f"192.0.2.{i}", 1000)) for i in range(1, 5)]
    for i, conn in enumerate(a[:3]):
        tcp.add(conn, float(i))
    tcp.touch(a[0], 3.0)  # a[0] is now the most recently active of its network
    other = fake(("198.51.100.1", 1000))
    tcp.add(other, 3.5)  # another network: no one goes
    assert not any(dropped(c) for c in a[:3])
    tcp.add(a[3], 4.0)
    assert [dropped(c) for c in a] == [False, True, False, False]
    assert tcp.closed[TcpClosed.NETWORK] == 1 and len(tcp.open) == 4
    # The total cap: the least recently active of all, whatever its network.
    tcp.add(fake(("203.0.113.1", 1000)), 5.0)
    tcp.add(fake(("203.0.113.2", 1000)), 6.0)
    assert dropped(a[2]) and not dropped(other)
    assert tcp.closed[TcpClosed.EVICTED] == 1 and len(tcp.open) == 5


def test_each_timeout_closes_from_when_it_counts() -> None:
    limits = TcpConfig(idle_timeout=10, initial_timeout=3, query_timeout=1, send_timeout=2)
    tcp = TCPConnections(limits)
    assert tcp.sweep_interval() == 0.5
    silent, asking, slow, stuck = (fake((f"192.0.2.{i}", 1000)) for i in range(4))
    for conn in (silent, asking, slow, stuck):
        tcp.add(conn, 0.0)
    tcp.touch(asking, 0.1)
    tcp.touch(slow, 0.1)
    tcp.partial[slow] = 0.2  # a message began
    tcp.touch(stuck, 0.1)
    tcp.stuck[stuck] = 0.5  # its answers are not read
    tcp.sweep(1.1)
    assert not any(dropped(c) for c in (silent, asking, slow, stuck))
    tcp.sweep(1.3)
    assert dropped(slow)
    tcp.sweep(2.6)
    assert dropped(stuck)
    tcp.sweep(3.1)
    assert dropped(silent) and not dropped(asking)  # asking has sent a query
    tcp.sweep(10.0)
    assert not dropped(asking)
    tcp.sweep(10.2)
    assert dropped(asking) and not tcp.open and not tcp.networks
    assert {r.value: n for r, n in tcp.closed.items() if n} == {
        "slow-query": 1, "unread": 1, "initial": 1, "idle": 1}


# -- configuration --------------------------------------------------------------------------------

TCP_KEYS = ("idle_timeout: 4.5\n  initial_timeout: 0.2\n  query_timeout: 0.3\n"
            "  send_timeout: 0.4\n  max_connections: 7\n  max_connections_per_network: 3\n"
            "  ipv4_prefix_length: 32\n  ipv6_prefix_length: 64\n  max_pipelined: 1\n"
            "  max_write_buffer: 1024\n")


def test_every_tcp_value_is_used_as_written(tmp_path: Path) -> None:
    (tmp_path / "zones").mkdir()
    path = tmp_path / "geodns.yaml"
    path.write_text("tcp:\n  " + TCP_KEYS)
    problems = Problems()
    cfg = load_config(path, problems)
    assert not problems, list(map(str, problems))
    assert cfg.tcp == TcpConfig(4.5, 0.2, 0.3, 0.4, 7, 3, 32, 64, 1, 1024)


@pytest.mark.parametrize("text,column,message", [
    ("tcp:\n  query_timeout: 0\n", 18, "tcp query_timeout 0.0 is out of range (0.1..3600)"),
    ("tcp:\n  initial_timeout: soon\n", 20, "tcp initial_timeout must be a number"),
    ("tcp:\n  max_pipelined: '10'\n", 18, "tcp max_pipelined must be an integer"),
    ("tcp:\n  max_connections_per_network: 0\n", 32,
     "tcp max_connections_per_network 0 is out of range"),
    ("tcp:\n  ipv6_prefix_length: 129\n", 23, "tcp ipv6_prefix_length 129 is out of range"),
    ("tcp:\n  max_write_buffer: 100\n", 21, "tcp max_write_buffer 100 is out of range"),
    ("tcp:\n  max_clients: 10\n", 3, "max_clients"),
])
def test_a_bad_tcp_value_is_rejected_at_its_position(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     text: str, column: int, message: str) -> None:
    (tmp_path / "zones").mkdir()
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(text)
    assert main(["check", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(e.startswith(f"{cfg}:2:{column}: ") and message in e for e in err), err


# -- a real server ---------------------------------------------------------------------------------

@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    """The client sockets a test opens, closed when it ends."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


def connect(srv: Served, source: str, opened: list[socket.socket],
            rcvbuf: int | None = None) -> socket.socket:
    """A connection to the server from ``source`` (any 127.x address)."""
    sock = socket.socket()
    opened.append(sock)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", srv.port))
    return sock


def stop(srv: Served, opened: list[socket.socket]) -> None:
    """Stop the server once the clients have closed (it would wait for them
    to read the end of their streams)."""
    for sock in opened:
        sock.close()
    srv.stop()


def count_messages(data: bytes | bytearray) -> int:
    """How many whole messages a TCP byte stream holds."""
    pos = n = 0
    while pos + 2 <= len(data):
        pos += 2 + ((data[pos] << 8) | data[pos + 1])
        n += pos <= len(data)
    return n


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def ask(sock: socket.socket, qid: int) -> None:
    """One query for ns1's address on this connection, answered."""
    sock.sendall(framed(qid, "ns1.tcp.example.", "A"))
    size = struct.unpack("!H", _read_exactly(sock, 2))[0]
    answer = dns.message.from_wire(_read_exactly(sock, size))
    assert answer.id == qid and answer.answer[0][0].to_text() == "192.0.2.53"


def is_closed(sock: socket.socket) -> bool:
    """The server has closed (or reset) this connection, which has nothing to read."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(5)


def seconds_until_closed(sock: socket.socket, since: float, limit: float = 10.0) -> float:
    while not is_closed(sock):
        assert time.monotonic() - since < limit, f"still open after {limit} s"
        time.sleep(0.02)
    return time.monotonic() - since


def test_a_byte_every_few_tenths_of_a_second_does_not_keep_a_connection(tmp_path: Path,
                                                                        opened: list[socket.socket]) -> None:
    """Slowloris: a query sent one byte every 0.3 s (each byte well within any
    idle timeout) is closed query_timeout after its first byte, while another
    client keeps being answered."""
    srv = Served(tmp_path, query_timeout=0.6)
    srv.start()
    try:
        normal = connect(srv, "127.0.0.1", opened)
        slow = connect(srv, "127.0.7.1", opened)
        wire = framed(1)
        began = time.monotonic()
        closed_after = None
        answered = 0
        for i in range(len(wire) - 1):  # never the whole query
            try:
                slow.send(wire[i : i + 1])
            except OSError:  # reset since the last check
                closed_after = time.monotonic() - began
                break
            ask(normal, i)
            answered += 1
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline and closed_after is None:
                if is_closed(slow):
                    closed_after = time.monotonic() - began
                time.sleep(0.02)
            if closed_after is not None:
                break
        assert closed_after is not None, "the slow client was never closed"
        # Closed by the sweep after the timeout (it runs every half timeout).
        assert 0.55 <= closed_after < 0.6 + 1.2, closed_after
        assert answered >= 2
        ask(normal, 999)
        assert srv.tcp_closed()["slow-query"] == 1
    finally:
        stop(srv, opened)


def test_a_connection_that_never_asks_is_closed_after_the_initial_timeout(
        tmp_path: Path, opened: list[socket.socket]) -> None:
    srv = Served(tmp_path, initial_timeout=0.5)
    srv.start()
    try:
        began = time.monotonic()
        silent = connect(srv, "127.0.8.1", opened)
        asking = connect(srv, "127.0.8.2", opened)
        ask(asking, 1)
        assert 0.45 <= seconds_until_closed(silent, began) < 0.5 + 1.5
        time.sleep(0.3)
        ask(asking, 2)  # it asked in time: the idle timeout applies to it now
        closed = srv.tcp_closed()
        assert closed["initial"] == 1 and closed["idle"] == 0
    finally:
        stop(srv, opened)


def test_one_network_cannot_take_every_connection(tmp_path: Path,
                                                  opened: list[socket.socket]) -> None:
    """At max_connections_per_network, a new connection from the network
    closes that network's least recently active one; other networks are not
    touched, and the server never holds more than the cap for the network."""
    srv = Served(tmp_path, max_connections_per_network=4)
    srv.start()
    try:
        first = [connect(srv, f"127.0.5.{i}", opened) for i in range(1, 5)]
        for i, sock in enumerate(first):
            ask(sock, i)
        others = [connect(srv, "127.0.6.1", opened) for _ in range(4)]  # another network: full too
        for sock in others:
            ask(sock, 7)
        ask(first[0], 10)  # now the most recently active of 127.0.5.0/24
        late = []
        for i in range(20):
            ask(first[0], 100 + i)  # first[0] stays the most recently active
            late.append(connect(srv, f"127.0.5.{10 + i}", opened))
            ask(late[-1], 20 + i)
        since = time.monotonic()
        assert all(seconds_until_closed(s, since, 3) >= 0 for s in first[1:] + late[:-3])
        for sock in (first[0], *late[-3:], *others):
            ask(sock, 99)
        ports = {s.getsockname()[1] for s in first + late}
        assert len(srv.held(ports)) == 4
        assert srv.tcp_closed()["network"] == 3 + 17
        assert srv.tcp_closed()["evicted"] == 0
    finally:
        stop(srv, opened)


def test_the_total_cap_closes_the_least_recently_active_connection(tmp_path: Path,
                                                                   opened: list[socket.socket]) -> None:
    srv = Served(tmp_path, max_connections=6)
    srv.start()
    try:
        socks = [connect(srv, f"127.0.{10 + i}.1", opened) for i in range(6)]
        for i, sock in enumerate(socks):
            ask(sock, i)
        ask(socks[0], 6)
        newcomer = connect(srv, "127.0.30.1", opened)
        socks.append(newcomer)
        ask(newcomer, 7)
        assert seconds_until_closed(socks[1], time.monotonic(), 3) >= 0
        for sock in (socks[0], *socks[2:]):
            ask(sock, 8)
        assert srv.tcp_closed()["evicted"] == 1
        assert len(srv.held({s.getsockname()[1] for s in socks})) == 6
    finally:
        stop(srv, opened)


def test_pipelining_without_reading_is_stopped_then_reset(tmp_path: Path,
                                                         opened: list[socket.socket]) -> None:
    """50,000 queries for a 4 KB answer pipelined by a client that reads
    nothing: geodns answers what the kernel buffers and its own capped buffer
    hold, stops reading, does not grow, resets the connection send_timeout
    later, and answers another client all along."""
    srv = Served(tmp_path, send_timeout=1.0)
    srv.start()
    try:
        before = srv.rss()
        # 2 MB of queries: more than the kernel's buffers take on their own
        # (10,000, 400 KB, sometimes all went in before the window closed).
        sock, sent = stuck_client(srv.port, 50000)
        opened.append(sock)
        stopped = time.monotonic()
        with sock:
            port = sock.getsockname()[1]
            assert sent < 50000, "the client sent everything: the server never stopped reading"
            answered = srv.tcp_answers()
            srv.still_serves()
            grown = srv.rss() - before
            while srv.held({port}):
                assert time.monotonic() - stopped < 1.0 + 3, "not reset in time"
                time.sleep(0.05)
            print(f"\n{sent} queries sent before the server stopped reading, {answered} "
                  f"answered, RSS grown by {grown / (1 << 20):.1f} MB")
            # Answering all 50,000 would take some 200 MB; held: 100 answers and a read.
            assert grown < 8 * (1 << 20), f"the server grew by {grown >> 20} MB"
            assert srv.tcp_closed()["unread"] == 1
            srv.still_serves()
    finally:
        stop(srv, opened)


def test_a_client_that_reads_may_pipeline_as_much_as_it_likes(tmp_path: Path,
                                                              opened: list[socket.socket]) -> None:
    """The caps stop only clients that do not read: 10,000 pipelined queries
    from one that reads are all answered, in order."""
    srv = Served(tmp_path, send_timeout=1.0)
    srv.start()
    try:
        sock = connect(srv, "127.0.0.1", opened)
        queries = b"".join(framed(i % 65536, "ns1.tcp.example.", "A") for i in range(10000))
        sender = threading.Thread(target=sock.sendall, args=(queries,))
        sender.start()
        data = bytearray()
        sock.settimeout(10)
        while count_messages(data) < 10000:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {count_messages(data)} answers"
            data += chunk
        sender.join(10)
        answers, left = split(bytes(data))
        assert left == 0 and [a.id for a in answers] == list(range(10000))
        assert srv.tcp_closed()["unread"] == 0
    finally:
        stop(srv, opened)


def test_every_answer_is_delivered_to_a_client_that_half_closes(tmp_path: Path,
                                                                opened: list[socket.socket]) -> None:
    """A slow reader pipelines 3,000 large queries and half-closes: geodns
    stops at its caps, goes on as the client reads, and ends the stream only
    after the last answer."""
    srv = Served(tmp_path, send_timeout=5.0)
    srv.start()
    try:
        sock = connect(srv, "127.0.0.1", opened, rcvbuf=4096)

        def send() -> None:
            sock.sendall(b"".join(framed(i) for i in range(3000)))
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # held back at the caps meanwhile
        data = bytearray()
        sock.settimeout(10)
        while chunk := sock.recv(1 << 16):
            data += chunk
        sender.join(10)
        answers, left = split(bytes(data))
        assert left == 0 and [a.id for a in answers] == list(range(3000))
    finally:
        stop(srv, opened)


def _tcp_block(text: str) -> dict[str, object]:
    """The ``tcp:`` mapping of the first YAML configuration in ``text``."""
    if "```yaml" in text:
        text = text.split("```yaml", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    block = doc["tcp"]
    assert isinstance(block, dict)
    return block


@pytest.mark.parametrize("name", ["docs/configuration.md", "geodns.yaml"])
def test_the_documented_tcp_defaults_are_the_defaults(name: str) -> None:
    written = _tcp_block((Path(__file__).parent.parent / name).read_text())
    assert written == dataclasses.asdict(TcpConfig())
