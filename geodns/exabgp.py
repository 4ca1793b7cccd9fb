"""``geodns anycast-exabgp``: the process ExaBGP runs to announce the node's
anycast prefixes while the node is fit to serve.

ExaBGP reads this program's standard output (its process API): one
``announce route PREFIX next-hop self`` or ``withdraw route PREFIX`` per line.
This program follows the node over its control socket: the node sends its
decision at once, on every change, and every second.  When the node is gone
(its process ended) or silent (hung) for ``grace`` seconds, this program
withdraws the routes by itself, so a dead node does not keep attracting
traffic; a restart (a successor takes over the same control socket within
milliseconds) does not withdraw anything.  It ends when ExaBGP closes its
standard input.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


class Routes:
    """What ExaBGP has been told."""

    def __init__(self, out: IO[str], next_hop: str, next_hop6: str | None = None) -> None:
        self.out = out
        self.next_hop = next_hop
        # IPv6 prefixes over an IPv4 session need an IPv6 next hop: "self"
        # would be sent as 0.0.0.0 (ExaBGP 4.2).
        self.next_hop6 = next_hop6 or next_hop
        self.announced: set[str] = set()

    def set(self, prefixes: list[str]) -> None:
        """Announce exactly ``prefixes`` (withdraw the others)."""
        for prefix in sorted(self.announced - set(prefixes)):
            self.out.write(f"withdraw route {prefix}\n")
        for prefix in prefixes:
            if prefix not in self.announced:
                v6 = ipaddress.ip_network(prefix).version == 6
                hop = self.next_hop6 if v6 else self.next_hop
                self.out.write(f"announce route {prefix} next-hop {hop}\n")
        self.out.flush()
        self.announced = set(prefixes)


def _watch(path: Path, silence: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(silence)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({"anycast_watch": True}).encode() + b"\n")
    except OSError:
        sock.close()
        raise
    return sock


def _messages(sock: socket.socket) -> Any:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def follow(path: Path, prefixes: list[str], grace: float = 1.0, next_hop: str = "self",
           out: IO[str] | None = None, stop: threading.Event | None = None,
           next_hop6: str | None = None) -> int:
    """Follow the node at ``path`` until ExaBGP closes standard input (or
    ``stop`` is set).  The node says where it stands four times a second:
    ``grace`` seconds without a word (the node is gone or hung, and no
    successor took over) withdraw every route."""
    routes = Routes(out or sys.stdout, next_hop, next_hop6)
    stop = stop or threading.Event()
    if out is None:
        threading.Thread(target=_wait_for_eof, args=(stop,), daemon=True).start()
    lost_at = time.monotonic()
    known = list(prefixes)
    while not stop.is_set():
        try:
            sock = _watch(path, grace)
        except OSError:
            if routes.announced and time.monotonic() - lost_at > grace:
                _log(f"node not reachable on {path} for {grace:g} s: withdrawing")
                routes.set([])
            stop.wait(0.1)
            continue
        try:
            for msg in _messages(sock):
                if msg.get("bye"):
                    break
                known = [str(p) for p in msg.get("prefixes") or known]
                routes.set(known if msg.get("announce") else [])
                lost_at = time.monotonic()
                if stop.is_set():
                    break
        except (OSError, ValueError):
            pass  # a broken or silent node: as if it were gone
        finally:
            sock.close()
        if routes.announced and time.monotonic() - lost_at > grace:
            _log(f"no word from the node on {path} for {grace:g} s: withdrawing")
            routes.set([])
        stop.wait(0.05)  # then ask again (a successor takes over within milliseconds)
    routes.set([])
    return 0


def _wait_for_eof(stop: threading.Event) -> None:
    for _ in sys.stdin:
        pass
    stop.set()


def _log(message: str) -> None:
    print(f"geodns anycast-exabgp: {message}", file=sys.stderr, flush=True)


__all__ = ["Routes", "follow"]
