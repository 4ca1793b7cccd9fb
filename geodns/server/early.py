"""Signals before a process's event loop takes over.

SIGHUP's default action kills a process.  ``geodns serve`` is told to
reload with SIGHUP, and a reload may be asked for while the node is still
starting (a configuration tool that edits a zone and signals every node, a
service manager's reload right after a start), so from its first moments a
serving process only remembers a SIGHUP and reloads once it has started.
This module imports nothing of geodns, so that ``python -m geodns serve``
can install it before the (slow) rest of the program is imported.
"""

from __future__ import annotations

import signal
from types import FrameType

hup_pending = False  # a SIGHUP came before the event loop's handler existed


def _note_hup(_signum: int, _frame: FrameType | None) -> None:
    global hup_pending
    hup_pending = True


def install() -> None:
    """Until the event loop's handlers replace it, SIGHUP only asks for a
    reload once the process has started."""
    signal.signal(signal.SIGHUP, _note_hup)


__all__ = ["hup_pending", "install"]
