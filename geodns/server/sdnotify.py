"""systemd's readiness protocol (sd_notify), for ``Type=notify`` units: a
datagram to ``$NOTIFY_SOCKET``.  Nothing happens without that variable."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(*lines: str) -> None:
    """Send ``READY=1``, ``STOPPING=1``, ``MAINPID=N``... to the service
    manager, if one asked for them."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto("\n".join(lines).encode(), address)


__all__ = ["notify"]
