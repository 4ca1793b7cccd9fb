"""Restarts and stops that lose no query.

``geodns restart`` ten times under a steady, paced UDP load: every query is
answered, and no restart keeps queries waiting (100 ms); pipelined TCP
queries on a connection open across a restart are all answered; a successor
that cannot start leaves the old process serving.
The same with ``workers: 2`` (the supervisor hands every worker's sockets to
the successor's), and across a change of the number of workers.
SIGTERM with a lameduck time: not ready at once, answering until it ends.
systemd socket activation: the node serves on the sockets it is given.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from geodns.server.handover import HandoverError, Offer, hand_over
from tests.serveproc import Served, free_port

ZONE = """\
origin: restart.example.
soa: {mname: ns1, rname: h, serial: 1}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.80}
"""
RATE = 3000  # queries a second, paced


def setup(tmp_path: Path, extra: str = "") -> tuple[Path, int, int]:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "restart.example.yaml").write_text(ZONE)
    port, admin = free_port(), free_port()
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(f"listen: [127.0.0.1:{port}]\nadmin: 127.0.0.1:{admin}\nzones: zones\n"
                   "reload: {interval: 60}\n" + extra)
    return cfg, port, admin


SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time of each datagram (socket has no name for it)


class Load:
    """A paced UDP load (``RATE`` queries a second) from one socket.  Each
    answer's arrival is the kernel's receive time, so a reading thread that
    waits for the CPU does not make the node look slow: what is measured is
    how long each query waited for its answer, and the queries never answered.
    IDs are reused every 65,536 queries; a query still unanswered when its ID
    comes round again is lost."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.sent = 0
        self.waiting: dict[int, float] = {}  # ID -> when its query was sent (time.time())
        self.overtaken = 0  # unanswered when their ID was reused
        self.arrivals: list[tuple[float, float]] = []  # (kernel receive time, time waited)
        self.wrong = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        q = dns.message.make_query("www.restart.example.", "A")
        q.flags = 0
        self.wire = bytearray(q.to_wire())

    def _read(self) -> None:
        space = socket.CMSG_SPACE(16)
        while True:
            with self._lock:
                done = self._stop.is_set() and not self.waiting
            if done:
                return
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, space)
            except TimeoutError:
                if self._stop.is_set():
                    return
                continue
            arrived = time.time()
            for level, kind, stamp in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", stamp[:16])
                    arrived = sec + nsec / 1e9
            qid = struct.unpack("!H", data[:2])[0]
            if data[3] & 0x0F != 0 or len(data) < 40:
                self.wrong += 1
            with self._lock:
                sent = self.waiting.pop(qid, None)
            if sent is not None:
                self.arrivals.append((arrived, arrived - sent))

    def run(self, seconds: float, until: threading.Event | None = None) -> None:
        """Send for ``seconds`` (or until ``until`` is set), then wait a
        second for the last answers."""
        self._reader.start()
        began = time.monotonic()
        n = 0
        while True:
            due = began + n / RATE
            now = time.monotonic()
            if due - began >= seconds or (until is not None and until.is_set()):
                break
            if due > now:
                time.sleep(due - now)
            qid = n % 65536
            self.wire[0:2] = struct.pack("!H", qid)
            with self._lock:
                if self.waiting.pop(qid, None) is not None:
                    self.overtaken += 1
                self.waiting[qid] = time.time()
            self.sock.send(self.wire)
            n += 1
        self.sent = n
        time.sleep(1.0)
        self._stop.set()
        self._reader.join(2)
        self.sock.close()

    @property
    def lost(self) -> int:
        return self.overtaken + len(self.waiting)

    def longest_wait(self) -> float:
        """The longest any query waited for its answer."""
        return max((waited for _, waited in self.arrivals), default=0.0)

    def longest_silence(self) -> float:
        """The longest time between two answers (by the kernel's clock)."""
        times = sorted(arrived for arrived, _ in self.arrivals)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def restart(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geodns", "restart", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)


def workers(n: int) -> str:
    return f"workers: {n}\n" if n > 1 else ""


@pytest.mark.parametrize("n", [1, 2])
def test_restarts_under_paced_load(tmp_path: Path, n: int) -> None:
    """The measurement: the same paced load without restarts, then with ten
    restarts one after another.  Every query is answered.  A restart that
    left a gap would keep queries waiting in every restart.  The VMs these
    tests run on stall every process for 30 to 200 ms now and then, more
    often while another process touches fresh memory (as a successor does
    when it starts: measured with a process that only fills 300 MB, no
    restart), so a wait of 100 ms or more is allowed in three restarts of the
    ten, and none of a second."""
    cfg, port, _ = setup(tmp_path, workers(n))
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    try:
        node.dns_port()
        baseline = Load(port)
        baseline.run(5.0)
        load = Load(port)
        results: list[subprocess.CompletedProcess[str]] = []
        starts: list[float] = []  # each restart's, by time.time()
        began = time.monotonic()

        finished = threading.Event()

        def restarts() -> None:
            time.sleep(0.3)
            for _ in range(10):
                starts.append(time.time())
                results.append(restart(cfg))
            starts.append(time.time() + 0.3)  # the last one's end, with the old process's
            time.sleep(0.3)
            finished.set()

        worker = threading.Thread(target=restarts)
        worker.start()
        sender = threading.Thread(target=load.run, args=(120.0, finished))
        sender.start()
        worker.join(300)
        took = time.monotonic() - began
        sender.join(60)
        assert len(results) == 10 and all(r.returncode == 0 for r in results), \
            [r.stderr for r in results]
        pids = {line["pid"] for line in node.find(lambda x: x.get("event") == "handed-over")}
        assert len(pids) == 10
    finally:
        node.stop()
    waits = [max((w for t, w in load.arrivals if a <= t < b), default=0.0)
             for a, b in itertools.pairwise(starts)]  # each restart's longest, until the next
    print(f"\nworkers {n}: without restarts: {baseline.sent} sent, {baseline.lost} lost, longest "
          f"wait {baseline.longest_wait() * 1000:.1f} ms, silence "
          f"{baseline.longest_silence() * 1000:.1f} ms; with 10 restarts in {took:.1f} s: "
          f"{load.sent} sent, {load.lost} lost, longest silence "
          f"{load.longest_silence() * 1000:.1f} ms, longest wait in each restart (ms): "
          f"{' '.join(f'{w * 1000:.0f}' for w in waits)}")
    assert baseline.lost == 0 and baseline.wrong == 0
    assert load.lost == 0 and load.wrong == 0
    assert sum(w >= 0.1 for w in waits) <= 3 and load.longest_wait() < 1.0


@pytest.mark.parametrize("n", [1, 2])
def test_pipelined_tcp_queries_across_a_restart_are_all_answered(tmp_path: Path,
                                                                 n: int) -> None:
    cfg, port, _ = setup(tmp_path, workers(n))
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    try:
        node.dns_port()
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sent = 0
        result: list[subprocess.CompletedProcess[str]] = []
        worker = threading.Thread(target=lambda: result.append(restart(cfg)))
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            burst = b""
            for _ in range(10):
                q = dns.message.make_query("www.restart.example.", "A")
                q.id = sent % 65536
                wire = q.to_wire()
                burst += struct.pack("!H", len(wire)) + wire
                sent += 1
            sock.sendall(burst)
            if sent == 200:
                worker.start()
            time.sleep(0.02)
        worker.join(120)
        assert result and result[0].returncode == 0, result
        got: list[dns.message.Message] = []
        data = b""
        sock.settimeout(5)
        while len(got) < sent:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            while len(data) >= 2 and len(data) >= 2 + struct.unpack("!H", data[:2])[0]:
                size = struct.unpack("!H", data[:2])[0]
                got.append(dns.message.from_wire(data[2:2 + size]))
                data = data[2 + size:]
        sock.close()
    finally:
        node.stop()
    assert len(got) == sent, f"{len(got)} of {sent} answered"
    assert [m.id for m in got] == [i % 65536 for i in range(sent)]
    assert all(m.rcode() == dns.rcode.NOERROR for m in got)


@pytest.mark.parametrize("n", [1, 2])
def test_a_successor_that_cannot_start_leaves_the_node_serving(tmp_path: Path, n: int) -> None:
    cfg, port, _ = setup(tmp_path, workers(n))
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    try:
        node.dns_port()
        # A zone the successor refuses to start with.
        (tmp_path / "zones" / "broken.example.yaml").write_text("origin: broken.example.\n"
                                                                "records: [\n")
        done = restart(cfg)
        assert done.returncode == 1, done.stdout
        assert "not restarted" in done.stderr and "goes on serving" in done.stderr
        assert node.proc.poll() is None
        q = dns.message.make_query("www.restart.example.", "A")
        answer = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        assert answer.rcode() == dns.rcode.NOERROR
        assert node.find(lambda x: x.get("event") == "restart-failed")
    finally:
        node.stop()


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_a_restart_changes_the_number_of_workers(tmp_path: Path, before: int,
                                                 after: int) -> None:
    """``workers`` is read again by the successor: more workers share the
    sockets handed over, fewer close the extra ones.  Under the paced load,
    nothing is lost."""
    cfg, port, _ = setup(tmp_path, workers(before))
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    try:
        node.dns_port()
        cfg.write_text(cfg.read_text().replace(workers(before), "") + workers(after))
        load = Load(port)
        result: list[subprocess.CompletedProcess[str]] = []
        finished = threading.Event()

        def one_restart() -> None:
            time.sleep(0.5)
            result.append(restart(cfg))
            time.sleep(0.5)
            finished.set()

        worker = threading.Thread(target=one_restart)
        worker.start()
        load.run(60.0, finished)
        worker.join(120)
        assert result and result[0].returncode == 0, result
        pid = int(result[0].stdout.split("process ")[1].split()[0])
        serving = [p for p in os.listdir("/proc") if p.isdigit() and
                   _in_group(int(p), node.pgid) and int(p) != pid and _alive(int(p))]
        assert len(serving) == (after if after > 1 else 0), serving
        if after > 1:
            assert len(node.find(lambda x: x.get("event") == "listening" and
                                 x.get("message", "").startswith("listening"))) >= after
    finally:
        node.stop()
    print(f"\nworkers {before} -> {after}: {load.sent} sent, {load.lost} lost, longest "
          f"wait {load.longest_wait() * 1000:.1f} ms, silence {load.longest_silence() * 1000:.1f} ms")
    assert load.lost == 0 and load.wrong == 0


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize(("command", "why"), [
    ([sys.executable, "-c", "raise SystemExit(3)"], "exited with status 3"),
    ([sys.executable, "-c", "import time; time.sleep(30)"], "not ready within"),
    (["/nonexistent/geodns"], "cannot start"),
])
def test_a_successor_that_fails_is_reported_and_stopped(command: list[str], why: str) -> None:
    offer = Offer([], {})

    async def attempt() -> str:
        try:
            await hand_over(offer, timeout=1.5, command=lambda fd: command)
        except HandoverError as exc:
            return str(exc)
        return "taken over"

    assert why in asyncio.run(attempt())


def test_sigterm_lameduck_not_ready_but_answering(tmp_path: Path) -> None:
    cfg, port, admin = setup(tmp_path, "lifecycle: {lameduck: 1.5}\n")
    node = Served(["--config", str(cfg)], cwd=tmp_path, lameduck=None)
    try:
        node.dns_port()
        node.admin_port()
        q = dns.message.make_query("www.restart.example.", "A")
        node.proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        time.sleep(0.1)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2)
            raise AssertionError("ready during lameduck")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        answered = 0
        while time.monotonic() - sent_at < 1.2:
            if dns.query.udp(q, "127.0.0.1", port=port, timeout=1).rcode() == 0:
                answered += 1
            time.sleep(0.05)
        assert answered >= 15
        code = node.exit_code(5)
        took = time.monotonic() - sent_at
    finally:
        node.stop()
    assert code == 0 and 1.4 < took < 4.0, (code, took)


def test_systemd_socket_activation(tmp_path: Path) -> None:
    """The node serves on the sockets systemd passed (fds 3 and 4), even
    though nobody else could bind that address now."""
    cfg, port, _ = setup(tmp_path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", port))
    tcp.listen(16)

    def place() -> None:
        os.dup2(udp.fileno(), 3)
        os.dup2(tcp.fileno(), 4)

    script = ("import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
              "os.environ['LISTEN_FDS'] = '2'; sys.argv = ['geodns'] + sys.argv[1:]; "
              "from geodns.entry import main; sys.exit(main())")
    proc = subprocess.Popen([sys.executable, "-c", script, "serve", "--config", str(cfg),
                             "--lameduck", "0"], cwd=tmp_path, preexec_fn=place,
                            stderr=subprocess.PIPE, text=True, close_fds=False)
    udp.close()
    tcp.close()
    try:
        q = dns.message.make_query("www.restart.example.", "A")
        answer = None
        deadline = time.monotonic() + 15
        while answer is None and time.monotonic() < deadline:
            try:
                answer = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
            except Exception:
                time.sleep(0.1)
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR
        tcp_answer = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
        assert tcp_answer.rcode() == dns.rcode.NOERROR
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert "cannot listen" not in err
