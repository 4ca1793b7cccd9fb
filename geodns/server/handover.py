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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
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


async def hand_over(offer: Offer, timeout: float,
                    command: Callable[[int], list[str]] | None = None) -> int:
    """Start the successor, give it ``offer``, and wait until it serves; its
    pid.  Raises :class:`HandoverError` (with the reason) when it does not
    take over: nothing has changed here then."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    try:
        cmd = command(theirs.fileno()) if command is not None else \
            successor_argv(theirs.fileno())
        try:
            # Not asyncio's subprocesses: closing this process's loop would
            # kill a successor started that way.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                    pass_fds=(theirs.fileno(),), close_fds=True)
        except OSError as exc:
            raise HandoverError(f"cannot start {cmd[0]}: {exc}") from None
        _successors.append(proc)
        theirs.close()
        ours.setblocking(False)
        waiter = asyncio.ensure_future(_exit_of(proc))
        try:
            hello = await _line(loop, ours, waiter, timeout)
            if "hello" not in hello:
                raise HandoverError(f"the new process said {hello!r}")
            fds = [s.fileno() for s in offer.sockets]
            await loop.run_in_executor(None, _send_offer, ours, fds, offer.state)
            ready = await _line(loop, ours, waiter, timeout)
            if "ready" not in ready:
                raise HandoverError(f"the new process said {ready!r}")
        except BaseException:
            if proc.poll() is None:
                # Not ready in time, or we are stopping: it must not serve
                # beside us half-started.
                proc.kill()
                await loop.run_in_executor(None, proc.wait)
            raise
        finally:
            waiter.cancel()
        return int(proc.pid)
    finally:
        theirs.close()
        ours.close()


_successors: list[subprocess.Popen[bytes]] = []  # referenced while this process lives


async def _exit_of(proc: subprocess.Popen[bytes]) -> int:
    while True:
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)


def _send_offer(sock: socket.socket, fds: list[int], state: dict[str, Any]) -> None:
    sock.setblocking(True)
    try:
        socket.send_fds(sock, [_HEADER], fds)
        sock.sendall(json.dumps(state).encode() + b"\n")
    finally:
        sock.setblocking(False)


async def _line(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                exited: asyncio.Future[int], timeout: float) -> dict[str, Any]:
    """One JSON line from the successor; HandoverError when it exits first,
    closes the pair, or says nothing in time."""
    data = b""
    deadline = loop.time() + timeout
    while not data.endswith(b"\n"):
        left = deadline - loop.time()
        if left <= 0:
            raise HandoverError(f"the new process was not ready within {timeout:g} s")
        recv: asyncio.Future[Any] = asyncio.ensure_future(loop.sock_recv(sock, 65536))
        done, _ = await asyncio.wait({recv, exited}, timeout=left,
                                     return_when=asyncio.FIRST_COMPLETED)
        if recv in done:
            chunk = recv.result()
            if not chunk:
                code = await asyncio.wait_for(asyncio.shield(exited), 5) if not \
                    exited.done() else exited.result()
                raise HandoverError(f"the new process exited with status {code} before "
                                    "it was ready (its log says why)")
            data += chunk
            continue
        recv.cancel()
        if exited in done:
            raise HandoverError(f"the new process exited with status {exited.result()} "
                                "before it was ready (its log says why)")
    doc: dict[str, Any] = json.loads(data)
    return doc


__all__ = ["HandoverError", "Offer", "hand_over", "receive", "say_ready", "successor_argv"]
