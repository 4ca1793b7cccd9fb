"""One health view for every worker of a node.

With ``workers: N`` the kernel spreads queries over N processes.  So that
they all answer alike, one of them (worker 0, which also serves the admin
API) runs the probes and takes the drains, and every view its health store
publishes goes to the others at once: each worker has a Unix stream socket
to the supervising process, which relays what worker 0 sends to every other
worker and keeps the latest view, so that a worker started later (or worker 0
itself, started again after a crash) begins with the node's current
verdicts instead of "unknown".

Messages are JSON objects, each framed by a 4-byte big-endian length.  A
view is the whole state, so a slow reader that misses intermediate views
loses nothing: only the newest one not yet started on the wire is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from geodns.health.view import HealthView

log = logging.getLogger("geodns.server")

MAX_MESSAGE = 64 << 20
_LEN = struct.Struct("!I")


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


class Frames:
    """Splits a byte stream into messages."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (size,) = _LEN.unpack_from(self.buf)
            if size > MAX_MESSAGE:
                raise ValueError(f"message of {size} bytes")
            if len(self.buf) < 4 + size:
                break
            body = bytes(self.buf[4 : 4 + size])
            del self.buf[: 4 + size]
            doc = json.loads(body)
            if isinstance(doc, dict):
                out.append(doc)
        return out


class WorkerLink:
    """A worker's end: sends this worker's views (worker 0) and applies the
    views it is sent (every worker).  ``on_lost`` is called when the
    supervising process is gone (the link closed while the worker runs): a
    worker on its own would serve a health view nobody updates any more."""

    def __init__(self, sock: socket.socket, on_view: Callable[[HealthView], None],
                 on_lost: Callable[[], None] | None = None,
                 on_message: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.sock = sock
        self.on_view = on_view
        self.on_lost = on_lost
        self.on_message = on_message  # what is not a view (a restart's steps)
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        self._task = asyncio.create_task(self._read(reader))

    def send_view(self, view: HealthView) -> None:
        self.send({"health": view.to_json()})

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame(message))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        frames = Frames()
        while True:
            try:
                data = await reader.read(1 << 16)
            except OSError:
                data = b""
            if not data:
                log.error("the supervising process is gone (the worker link closed)")
                if self.on_lost is not None:
                    self.on_lost()
                return
            try:
                messages = frames.feed(data)
            except ValueError as exc:
                log.error("worker link: %s; closing it", exc)
                return
            for message in messages:
                doc = message.get("health")
                if "health" not in message:
                    if self.on_message is not None:
                        self.on_message(message)
                elif isinstance(doc, dict):
                    try:
                        view = HealthView.from_json(doc)
                    except (TypeError, ValueError, AttributeError) as exc:
                        log.error("worker link: unreadable health view: %s", exc)
                        continue
                    self.on_view(view)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = Frames()
        self.sending = b""  # a frame already partly written
        self.latest = b""  # the newest view not started yet
        self.messages: list[bytes] = []  # other messages, each sent, in order

    def queue(self, data: bytes) -> None:
        self.latest = data

    def flush(self) -> bool:
        """Write what can be written now; True if something is still waiting."""
        while True:
            if not self.sending:
                if self.messages:
                    self.sending = self.messages.pop(0)
                elif self.latest:
                    self.sending, self.latest = self.latest, b""
                else:
                    return False
            try:
                n = self.sock.send(self.sending)
            except BlockingIOError:
                return True
            except OSError:
                self.sending = self.latest = b""
                return False
            self.sending = self.sending[n:]


class Relay:
    """The supervising process's end: relays views between workers and
    keeps the latest one.  Driven by the supervisor's selector loop."""

    def __init__(self) -> None:
        self.peers: dict[int, _Peer] = {}
        self.latest: bytes | None = None

    def add(self, index: int, sock: socket.socket) -> None:
        sock.setblocking(False)
        peer = self.peers[index] = _Peer(sock)
        if self.latest is not None:
            peer.queue(self.latest)
            peer.flush()

    def remove(self, index: int) -> None:
        peer = self.peers.pop(index, None)
        if peer is not None:
            peer.sock.close()

    def send(self, index: int, message: dict[str, Any]) -> None:
        """Send worker ``index`` a message (not a view: every one arrives)."""
        peer = self.peers.get(index)
        if peer is not None:
            peer.messages.append(frame(message))
            peer.flush()

    def index_of(self, fd: int) -> int | None:
        for index, peer in self.peers.items():
            if peer.sock.fileno() == fd:
                return index
        return None

    def readable(self, index: int) -> list[dict[str, Any]] | None:
        """Read what worker ``index`` sent: health views are relayed to the
        other workers; every message is returned for the supervisor.  None
        when the worker has closed its end (stop watching it: its exit is
        handled by the supervisor)."""
        peer = self.peers.get(index)
        if peer is None:
            return None
        try:
            data = peer.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        try:
            messages = peer.frames.feed(data)
        except ValueError as exc:
            log.error("worker %d sent something unreadable: %s", index, exc)
            return []
        for message in messages:
            if "health" in message:
                data = frame(message)
                self.latest = data
                for other, target in self.peers.items():
                    if other != index:
                        target.queue(data)
                        target.flush()
        return messages

    def flush(self) -> bool:
        """Retry writes a full socket held back; True if some still wait."""
        waiting = False
        for peer in self.peers.values():
            waiting |= peer.flush()
        return waiting


__all__ = ["Frames", "Relay", "WorkerLink", "frame"]
