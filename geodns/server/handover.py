"""Restarting without losing a query: the running process hands its
listening sockets to the one that replaces it.

Theory of operation.  A restart (``geodns restart``, or SIGUSR2 as nginx
takes it) makes the running process start its successor: the same command
line (so a newer installed version is what starts), with one end of a Unix
socket pair.  Over it the successor says hello and is given the listening
sockets (UDP and TCP of every listen address, and the admin API's) as
file descriptors, with the node's health view, drains and counters.  It
loads its configuration, zones and GeoIP database as any start does, starts
reading from the same sockets, and says "ready".  Only then does the old
process stop reading (closing its own descriptors: the sockets stay open in
the successor), answer what is left on its TCP connections, and exit.

Both processes read the same sockets for a moment: the kernel gives each
datagram and each new connection to one of them, so nothing is lost and
nothing is answered twice.  If the successor fails to start (a broken
configuration, a binary that does not run) or does not say ready in time,
the old process closes the pair and goes on serving, and says why.

With ``workers: N`` the node is a supervising process and N workers.  Each
worker gives the supervisor copies of its sockets once it listens
(:func:`send_set`); on a restart worker 0 sends the node's state, and the
supervisor is what starts the successor (a supervisor too) and offers it
every worker's :class:`SocketSet`, placed by role in the offer
(:func:`make_offer`, :func:`sets_of`).  The successor says ready once all
of its workers serve; the old workers then stop reading.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("geodns.server")

MAX_FDS = 256
_HEADER = b"GEODNS-HANDOVER\n"


class HandoverError(Exception):
    """The successor did not take over (the message says why)."""


@dataclass
class Offer:
    """What the successor is given: sockets and the node's state."""

    sockets: list[socket.socket]  # listening sockets, UDP and TCP, and the admin API's
    state: dict[str, Any]  # health view, drains, counters, fleet instance...


@dataclass
class SocketSet:
    """One serving process's listening sockets: what it is given, or hands
    over (a node with ``workers: N`` has N sets, one per worker)."""

    dns: list[socket.socket]  # UDP and TCP of every listen address
    admin: socket.socket | None = None
    control: socket.socket | None = None

    def all(self) -> list[socket.socket]:
        return [*self.dns, *(s for s in (self.admin, self.control) if s is not None)]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def make_offer(sets: Sequence[SocketSet], state: dict[str, Any]) -> Offer:
    """An offer of every set of sockets, each socket placed by its role."""
    sockets: list[socket.socket] = []
    layout = []
    for one in sets:
        place: dict[str, Any] = {"dns": list(range(len(sockets), len(sockets) + len(one.dns)))}
        sockets += one.dns
        for role in ("admin", "control"):
            sock = getattr(one, role)
            if sock is not None:
                place[role] = len(sockets)
                sockets.append(sock)
        layout.append(place)
    return Offer(sockets, {**state, "sets": layout})


def sets_of(offer: Offer) -> list[SocketSet]:
    """The sets of sockets in an offer, by their places (an offer without a
    layout, from an earlier version: one set, with the admin and control
    sockets where ``admin_fd`` and ``control_fd`` say)."""
    socks = offer.sockets
    layout = offer.state.get("sets")
    if not isinstance(layout, list):
        roles = {offer.state.get("admin_fd"): "admin", offer.state.get("control_fd"): "control"}
        layout = [{"dns": [i for i in range(len(socks)) if i not in roles]}]
        layout[0].update({role: i for i, role in roles.items() if isinstance(i, int)})
    used: set[int] = set()

    def at(place: object) -> socket.socket | None:
        if not isinstance(place, int) or not 0 <= place < len(socks) or place in used:
            return None
        used.add(place)
        return socks[place]

    sets = []
    for place in layout:
        if not isinstance(place, dict):
            continue
        dns = [s for s in (at(p) for p in place.get("dns", [])) if s is not None]
        sets.append(SocketSet(dns, at(place.get("admin")), at(place.get("control"))))
    for i, sock in enumerate(socks):
        if i not in used:
            sock.close()  # placed nowhere: not kept open by mistake
    return sets


def send_set(sock: socket.socket, sockets: SocketSet) -> None:
    """Give the supervising process copies of a worker's listening sockets
    (blocking; a few bytes), so that it can hand them to a successor."""
    roles = {"dns": len(sockets.dns), "admin": sockets.admin is not None,
             "control": sockets.control is not None}
    socket.send_fds(sock, [json.dumps(roles).encode()], [s.fileno() for s in sockets.all()])


def recv_set(sock: socket.socket) -> SocketSet:
    """What :func:`send_set` sent (raises OSError or ValueError)."""
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, MAX_FDS)
    socks = [socket.socket(fileno=f) for f in fds]
    try:
        roles = json.loads(msg)
        n = int(roles["dns"])
        if n + bool(roles["admin"]) + bool(roles["control"]) != len(socks):
            raise ValueError(f"{len(socks)} sockets for {roles}")
    except (ValueError, KeyError, TypeError):
        for s in socks:
            s.close()
        raise
    rest = iter(socks[n:])
    return SocketSet(socks[:n], next(rest) if roles["admin"] else None,
                     next(rest) if roles["control"] else None)


# -- the successor's side -------------------------------------------------------------
def receive(fd: int, timeout: float = 30.0) -> Offer:
    """Say hello on the inherited end ``fd`` and receive the offer (blocking:
    called before the event loop starts)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    sock.settimeout(timeout)
    sock.sendall(json.dumps({"hello": os.getpid()}).encode() + b"\n")
    msg, fds, _flags, _addr = socket.recv_fds(sock, len(_HEADER), MAX_FDS)
    if msg != _HEADER:
        for f in fds:
            os.close(f)
        raise HandoverError(f"unexpected hand-over message {msg!r}")
    line = _read_line(sock)
    state = json.loads(line)
    sockets = [socket.socket(fileno=f) for f in fds]
    sock.setblocking(False)
    _keep[fd] = sock
    return Offer(sockets, state)


_keep: dict[int, socket.socket] = {}  # the pair's end, kept open until ready is said


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise HandoverError("the running process closed the hand-over")
        data += chunk
    return data


def forget(fd: int) -> None:
    """Close this process's copy of the hand-over ``fd`` (a worker forked
    while its supervisor takes over: the supervisor says ready)."""
    sock = _keep.pop(fd, None)
    if sock is not None:
        sock.close()


def say_ready(fd: int) -> None:
    """Tell the old process that this one serves now: it stops reading and
    exits."""
    sock = _keep.pop(fd, None)
    if sock is None:
        return
    try:
        sock.setblocking(True)
        sock.settimeout(5)
        sock.sendall(json.dumps({"ready": os.getpid()}).encode() + b"\n")
    except OSError as exc:
        log.warning("could not tell the process this one replaces that it serves now: %s",
                    exc)
    finally:
        sock.close()


# -- the running process's side ------------------------------------------------------
def successor_argv(fd: int, argv: Sequence[str] | None = None) -> list[str]:
    """The command line of the process that replaces this one: this one's,
    through the Python that runs this one (a newer geodns installed since is
    what it runs), told where to find the hand-over."""
    args = list(sys.argv[1:] if argv is None else argv)
    # A hand-over given to this process is not its successor's.
    if "--takeover-fd" in args:
        i = args.index("--takeover-fd")
        del args[i:i + 2]
    return [sys.executable, "-m", "geodns", *args, "--takeover-fd", str(fd)]


class Successor:
    """A successor being started and given its offer.  Driven by whoever
    waits for it: :func:`hand_over` on an event loop, or the supervisor's
    selector loop (call :meth:`readable` when :meth:`fileno` is readable and
    :meth:`check` now and then).  Raises :class:`HandoverError` (with the
    reason) when it will not take over; :meth:`abort` then stops it."""

    def __init__(self, offer: Offer, timeout: float,
                 command: Callable[[int], list[str]] | None = None) -> None:
        self.offer = offer
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._data = b""
        self.closed_at: float | None = None  # when it closed its end (stop watching it)
        try:
            cmd = command(theirs.fileno()) if command is not None else \
                successor_argv(theirs.fileno())
            try:
                # Not asyncio's subprocesses: closing this process's loop would
                # kill a successor started that way.
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                             pass_fds=(theirs.fileno(),), close_fds=True)
            except OSError as exc:
                self._ours.close()
                raise HandoverError(f"cannot start {cmd[0]}: {exc}") from None
        finally:
            theirs.close()
        _successors.append(self.proc)
        self._ours.setblocking(False)

    def fileno(self) -> int:
        return self._ours.fileno()

    def readable(self) -> int | None:
        """Read what the successor said: its pid once it is ready.  Never
        blocks (the caller serves queries): when the successor closes its end
        without saying ready, :attr:`closed_at` is set and :meth:`check`
        reports why once it has exited."""
        try:
            chunk = self._ours.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            chunk = b""
        if not chunk:
            self.closed_at = time.monotonic()
            return None
        self._data += chunk
        while b"\n" in self._data:
            line, self._data = self._data.split(b"\n", 1)
            said = json.loads(line)
            if "hello" in said:
                self._send_offer()
            elif "ready" in said:
                return int(self.proc.pid)
            else:
                raise HandoverError(f"the new process said {said!r}")
        return None

    def check(self) -> None:
        """Raise if the successor has exited or is late."""
        code = self.proc.poll()
        if code is not None:
            raise HandoverError(f"the new process exited with status {code} before it was "
                                "ready (its log says why)")
        if self.closed_at is not None and time.monotonic() - self.closed_at > 5:
            raise HandoverError("the new process closed the hand-over without saying it was "
                                "ready")
        if time.monotonic() > self.deadline:
            raise HandoverError(f"the new process was not ready within {self.timeout:g} s")

    def abort(self) -> None:
        """It must not serve beside this process half-started: kill it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()

    def close(self) -> None:
        self._ours.close()

    def _send_offer(self) -> None:
        fds = [s.fileno() for s in self.offer.sockets]
        sock = self._ours
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            socket.send_fds(sock, [_HEADER], fds)
            sock.sendall(json.dumps(self.offer.state).encode() + b"\n")
        finally:
            sock.setblocking(False)


async def hand_over(offer: Offer, timeout: float,
                    command: Callable[[int], list[str]] | None = None) -> int:
    """Start the successor, give it ``offer``, and wait until it serves; its
    pid.  Raises :class:`HandoverError` (with the reason) when it does not
    take over: nothing has changed here then."""
    successor = Successor(offer, timeout, command)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[int] = loop.create_future()

    def on_readable() -> None:
        try:
            pid = successor.readable()
        except (HandoverError, OSError, ValueError) as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, HandoverError) else
                                    HandoverError(f"the hand-over broke: {exc}"))
            return
        if pid is not None and not ready.done():
            ready.set_result(pid)
        if pid is not None or successor.closed_at is not None:
            loop.remove_reader(fd)  # nothing more to read

    fd = successor.fileno()
    loop.add_reader(fd, on_readable)
    pid: int | None = None
    try:
        while pid is None:
            try:
                pid = await asyncio.wait_for(asyncio.shield(ready), 0.05)
            except TimeoutError:
                successor.check()
        return pid
    finally:
        loop.remove_reader(fd)
        if pid is None:
            successor.abort()  # not ready in time, or this process stops: it must not serve
        else:
            successor.close()


_successors: list[subprocess.Popen[bytes]] = []  # referenced while this process lives


__all__ = ["HandoverError", "Offer", "SocketSet", "Successor", "forget", "hand_over",
           "make_offer", "receive", "recv_set", "say_ready", "send_set", "sets_of",
           "successor_argv"]
