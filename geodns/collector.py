"""Python's cyclic garbage collector, paused while zones are loaded and
snapshots built.

Loading a large zone makes hundreds of thousands of objects and no garbage
worth collecting; the collector would walk them again and again, for about
40 % of the load (reference counting still frees what is dropped), and
again after it (see :func:`collector_paused`).  Builds
run in threads, and the collector is one for the process: it is off while
any build is under way, and back as it was when the last one ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_collector = threading.Lock()
_building = 0  # builds under way (in threads)
_collector_was_on = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block (see the module's text)."""
    global _building, _collector_was_on
    with _collector:
        if _building == 0:
            _collector_was_on = gc.isenabled()
            gc.disable()
        _building += 1
    try:
        yield
    finally:
        with _collector:
            _building -= 1
            if _building == 0 and _collector_was_on:
                # What the builds made goes to the oldest generation at once
                # (frozen, then thawed: no object is visited).  Else the
                # collections that follow walk every object made two or three
                # times over as they move it up, generation by generation:
                # about a second after a 50,000-record zone's load.
                gc.freeze()
                gc.unfreeze()
                gc.enable()


__all__ = ["collector_paused"]
