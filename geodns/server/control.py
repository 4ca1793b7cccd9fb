"""The node's control socket: where ``geodns restart`` finds the running
process.  A Unix stream socket beside the configuration file
(``lifecycle.control_socket``); one JSON request per connection, one JSON
answer.  Only the file's permissions guard it (0600: the user the node runs
as, and root).

Requests: ``{"restart": true}`` (answered once the successor serves, or
with why it did not), ``{"status": true}``, and ``{"anycast_watch": true}``:
a line per anycast decision, and one a second, for ``geodns anycast-exabgp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Protocol

from geodns import __version__
from geodns.server.handover import HandoverError

log = logging.getLogger("geodns.server")


class Controlled(Protocol):
    """What the control socket asks of the node."""

    async def restart(self) -> int: ...

    def readiness(self) -> tuple[str, ...]: ...

    async def anycast_follow(self, writer: asyncio.StreamWriter) -> None: ...


class ControlSocket:
    def __init__(self, server: Controlled, path: Path | None,
                 given: socket.socket | None = None) -> None:
        self.server = server
        self.path = path
        self.given = given  # handed over by the node this one replaces
        self.pid = os.getpid()  # the node's process (its supervisor's, with workers)
        self.listening: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = self.given
        if sock is None:
            sock = self._bind()
        if sock is None:
            return
        self.listening = sock
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        log.info("control socket %s%s", self.path,
                 " (handed over)" if sock is self.given else "",
                 extra={"event": "control", "path": str(self.path)})

    def _bind(self) -> socket.socket | None:
        path = self.path
        if path is None:
            return None
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1)
                probe.connect(str(path))
            except OSError:
                with contextlib.suppress(OSError):
                    path.unlink()  # left by a process that is gone
            else:
                log.error("control socket %s: another geodns answers there; `geodns restart` "
                          "reaches that one, not this one (set lifecycle.control_socket)",
                          path, extra={"event": "control-error"})
                return None
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            log.warning("control socket %s not opened: %s (`geodns restart` cannot reach "
                        "this node; SIGUSR2 still restarts it)", path, exc,
                        extra={"event": "control-error"})
            return None
        sock.setblocking(False)
        return sock

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            request: Any = json.loads(line or b"{}")
            if isinstance(request, dict) and request.get("anycast_watch"):
                try:
                    await self.server.anycast_follow(writer)  # until either side ends
                finally:
                    writer.close()
                return
            answer = await self._answer(request if isinstance(request, dict) else {})
        except (ValueError, TimeoutError):
            answer = {"ok": False, "error": "not a JSON request"}
        try:
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("restart"):
            try:
                pid = await self.server.restart()
            except HandoverError as exc:
                return {"ok": False, "error": str(exc), "pid": self.pid}
            return {"ok": True, "pid": pid, "replaced": self.pid}
        if request.get("status"):
            return {"ok": True, "pid": self.pid, "version": __version__,
                    "ready": not self.server.readiness()}
        return {"ok": False, "error": "unknown request (restart, status)"}

    def close(self, unlink: bool) -> None:
        """Stop answering; ``unlink`` removes the path (not when a successor
        serves it now)."""
        if self._server is not None:
            self._server.close()
        if self.listening is not None:
            self.listening.close()
        if unlink and self.path is not None and self.listening is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.listening = None


def request(path: Path, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to a node's control socket (``geodns restart``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(body).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data or b"{}")
    return answer


__all__ = ["ControlSocket", "request"]
