"""Counters of every worker in one scrape.

With ``workers: N`` the kernel spreads queries over N processes, but only
the first serves the admin API.  So that ``/metrics`` and ``/status`` count
every query of the node, each other worker writes its counters to a file in
a private run directory once a second (and when it stops), replacing the
file atomically, and the first worker adds them to its own when asked.
A scrape therefore sees the other workers' counts at most a second late,
and counters still only grow.  Nothing here is on the query path: writing
is a timer in each worker, reading happens when someone scrapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from geodns.counters import decode
from geodns.node import Counters
from geodns.ratelimit import Limiting
from geodns.server.transport import TCPConnections
from geodns.wire import Responder

log = logging.getLogger("geodns.server")

PUBLISH_INTERVAL = 1.0


def worker_counters(responder: Responder, tcp: TCPConnections,
                    limiting: Limiting | None = None) -> Counters:
    """What this worker has counted since it started."""
    counters = Counters(decode(responder.counts), dict(responder.events), len(tcp.open),
                        {str(reason): n for reason, n in tcp.closed.items()},
                        responder.cache_entries(), workers=1)
    if limiting is not None:
        counters.limited = limiting.counters()
        counters.limited_top = limiting.top()
    return counters


def publish(counters: Counters, directory: Path, index: int) -> None:
    """Write this worker's counters (atomically: readers never see half a file)."""
    path = directory / f"worker-{index}.json"
    tmp = directory / f".worker-{index}.tmp"
    try:
        tmp.write_bytes(counters.to_json())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("worker %d: counters not written to %s: %s", index, path, exc)


def others(directory: Path, own: int) -> Iterable[Counters]:
    """The counters the other workers last wrote (a file that cannot be
    read now is skipped: its worker writes it again within a second)."""
    try:
        paths = sorted(directory.glob("worker-*.json"))
    except OSError:
        return
    for path in paths:
        if path.name == f"worker-{own}.json":
            continue
        try:
            yield Counters.from_json(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("counters in %s not read: %s", path, exc)


def node_counters(own: Counters, directory: Path | None, index: int) -> Counters:
    """Every worker's counters added up (this one's and what the others last
    wrote to ``directory``)."""
    total = Counters()
    total.add(own)
    if directory is not None:
        for other in others(directory, index):
            total.add(other)
    return total
