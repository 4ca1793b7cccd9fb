"""The first thing ``geodns serve`` does: make SIGHUP (and SIGUSR2, a
restart) harmless until the event loop's handlers take over.

SIGHUP's default action ends a process.  An operator or a deploy tool may
send it while the node is still starting (reading zones, opening the GeoIP
database); it then only notes that a reload was asked for, and the node
reloads once it has started.  This module imports nothing of geodns, so the
handler is in place within milliseconds of the interpreter starting.
"""

from __future__ import annotations

import signal
from types import FrameType

reload_requested = False
restart_requested = False


def _note(_signum: int, _frame: FrameType | None) -> None:
    global reload_requested
    reload_requested = True


def _note_restart(_signum: int, _frame: FrameType | None) -> None:
    global restart_requested
    restart_requested = True


def install() -> None:
    signal.signal(signal.SIGHUP, _note)
    signal.signal(signal.SIGUSR2, _note_restart)  # its default action ends a process too


__all__ = ["install", "reload_requested", "restart_requested"]
