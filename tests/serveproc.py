"""A real ``geodns serve`` in a child process, for tests of start-up, signals
and workers: its JSON log lines read as they come, a way to wait for one,
and a stop that leaves no process behind (the node runs in its own process
group, so a worker the supervisor lost is killed too)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

Line = dict[str, Any]


class Served:
    def __init__(self, args: list[str], cwd: Path | None = None,
                 command: str = "serve", wrap: Sequence[str] = (),
                 lameduck: float | None = 0.0, python: str = sys.executable) -> None:
        # ``wrap``: a command that runs the node, e.g. ip netns exec NAME.
        # ``python``: the interpreter (one another user may run, say).
        # ``lameduck``: tests stop their nodes at once unless they ask.
        if command == "serve" and lameduck is not None and "--lameduck" not in args:
            args = [*args, "--lameduck", str(lameduck)]
        self.proc = subprocess.Popen(
            [*wrap, python, "-m", "geodns", command, *args, "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=cwd, start_new_session=True)
        self.spawned = time.monotonic()
        self.pgid = self.proc.pid  # a new session: the group is the child's pid
        self.lines: list[Line] = []
        self.arrived: list[float] = []  # when each line was read
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"message": raw.rstrip("\n"), "raw": True}
            if not isinstance(line, dict):
                line = {"message": raw.rstrip("\n"), "raw": True}
            with self._cond:
                self.lines.append(line)
                self.arrived.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # -- the log ------------------------------------------------------------------
    def wait_for(self, match: Callable[[Line], bool], timeout: float = 15.0,
                 start: int = 0) -> Line:
        """The first line from index ``start`` on that matches (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if match(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and self.proc.poll() is not None):
                    raise AssertionError(f"no such log line within {timeout} s; log:\n"
                                         + self.text())
                self._cond.wait(min(left, 0.1))

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def text(self) -> str:
        with self._cond:
            return "\n".join(f"{line.get('worker', '-')} {line.get('level', '?')} "
                             f"{line.get('message')}" for line in self.lines)

    def messages(self) -> list[str]:
        with self._cond:
            return [str(line.get("message")) for line in self.lines]

    def find(self, match: Callable[[Line], bool], start: int = 0) -> list[Line]:
        with self._cond:
            return [line for line in self.lines[start:] if match(line)]

    def dns_port(self, timeout: float = 15.0) -> int:
        line = self.wait_for(lambda x: x.get("event") == "listening", timeout)
        return int(str(line["address"]).rsplit(":", 1)[1])

    def admin_port(self, timeout: float = 15.0, start: int = 0) -> int:
        line = self.wait_for(lambda x: str(x.get("message", "")).startswith("admin API on "),
                             timeout, start)
        return int(str(line["message"]).rsplit(":", 1)[1])

    def worker_pids(self, timeout: float = 15.0) -> list[int]:
        line = self.wait_for(lambda x: str(x.get("message", "")).startswith("started "),
                             timeout)
        return [int(p) for p in str(line["message"]).split(":", 1)[1].split()]

    # -- the process ------------------------------------------------------------
    def exit_code(self, timeout: float) -> int:
        """Wait for the node to exit by itself (fails the test if it does not)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; log:\n"
                                 + self.text()) from None
        self._reader.join(5)
        return code

    def group_alive(self) -> bool:
        """Is any process of the node's group still running (a worker left
        behind)?  Zombies do not count: an orphan that exited waits for init."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.pgid and fields[0] not in ("Z", "X"):
                return True
        return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group if anything is left."""
        code = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout)
        else:
            code = self.proc.returncode
        self.kill_group()
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
        return code

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def served(args: list[str], cwd: Path | None = None) -> Iterator[Served]:
    node = Served(args, cwd)
    try:
        yield node
    finally:
        node.stop()


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1])
    return out


@contextlib.contextmanager
def logged_node(config: Path, cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``geodns serve --config CONFIG --lameduck 0`` for a benchmark: its own
    session, its log written to ``log`` and not read along (a long run logs
    little, and the benchmark looks at it at the end), the whole group
    stopped at the end (SIGTERM, then SIGKILL after 10 s)."""
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "geodns", "serve", "--config", str(config), "--lameduck", "0"],
            cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf,
            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def busy_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on one port of 127.0.0.1 (a port free
    for UDP may be taken for TCP: then another is tried)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind(("127.0.0.1", 0))
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            tcp.listen()
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
    raise AssertionError("no port free for both UDP and TCP")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (just now)."""
    udp, tcp = busy_pair()
    port = int(udp.getsockname()[1])
    udp.close()
    tcp.close()
    return port


def ask(port: int, name: str, rtype: str = "A", timeout: float = 1.0,
        tries: int = 1) -> dns.message.Message | None:
    """One query from a new socket (so SO_REUSEPORT may pick any worker);
    None when nothing answered."""
    q = dns.message.make_query(name, rtype)
    for _ in range(tries):
        try:
            return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
        except dns.exception.Timeout:
            continue
    return None


def address_of(resp: dns.message.Message | None) -> str | None:
    if resp is None or not resp.answer:
        return None
    return str(resp.answer[0][0].to_text())


class Prober:
    """Sends a query to ``port`` every few milliseconds from a thread and
    remembers whether anything ever answered (for "never answered DNS")."""

    def __init__(self, port: int, name: str = "ns1.start.example.") -> None:
        self.port = port
        self.name = name
        self.answers = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        wire = dns.message.make_query(self.name, "A").to_wire()
        while not self._stop.is_set():
            for family, kind in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
                with socket.socket(socket.AF_INET, family) as s:
                    s.settimeout(0.02)
                    try:
                        if kind == "udp":
                            s.sendto(wire, ("127.0.0.1", self.port))
                            self.sent += 1
                            s.recvfrom(4096)
                        else:
                            s.connect(("127.0.0.1", self.port))
                            self.sent += 1
                            s.sendall(len(wire).to_bytes(2, "big") + wire)
                            if not s.recv(2):
                                continue
                        self.answers += 1
                    except OSError:
                        pass
            self._stop.wait(0.01)


__all__ = ["Prober", "Served", "address_of", "ask", "free_port", "served"]
