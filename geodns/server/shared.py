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

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodns.counters import Decoded, decode

if TYPE_CHECKING:
    from geodns.server.app import Server

log = logging.getLogger("geodns.server")

Events = dict[tuple[str, str], int]
PUBLISH_INTERVAL = 1.0


@dataclass
class WorkerCounters:
    """What one worker has counted since it started."""

    counts: Decoded = field(default_factory=dict)
    events: Events = field(default_factory=dict)
    tcp_open: int = 0
    tcp_idle: int = 0
    tcp_evicted: int = 0
    cache_entries: int = 0

    @classmethod
    def of(cls, server: Server) -> WorkerCounters:
        r = server.responder
        return cls(decode(r.counts), dict(r.events), len(server.tcp.open), server.tcp.timed_out,
                   server.tcp.evicted, r.cache_entries())

    def to_json(self) -> bytes:
        return json.dumps({
            "counts": [[list(label), qtype, udp, n]
                       for (label, qtype, udp), n in self.counts.items()],
            "events": [[kind, reason, n] for (kind, reason), n in self.events.items()],
            "tcp": [self.tcp_open, self.tcp_idle, self.tcp_evicted],
            "cache_entries": self.cache_entries,
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WorkerCounters:
        doc: dict[str, Any] = json.loads(data)
        counts: Decoded = {}
        for label, qtype, udp, n in doc["counts"]:
            counts[(tuple(label), int(qtype), bool(udp))] = int(n)
        events = {(kind, reason): int(n) for kind, reason, n in doc["events"]}
        tcp_open, tcp_idle, tcp_evicted = doc["tcp"]
        return cls(counts, events, tcp_open, tcp_idle, tcp_evicted, doc["cache_entries"])

    def add(self, other: WorkerCounters) -> None:
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        for e, n in other.events.items():
            self.events[e] = self.events.get(e, 0) + n
        self.tcp_open += other.tcp_open
        self.tcp_idle += other.tcp_idle
        self.tcp_evicted += other.tcp_evicted
        self.cache_entries += other.cache_entries


def publish(server: Server, directory: Path, index: int) -> None:
    """Write this worker's counters (atomically: readers never see half a file)."""
    path = directory / f"worker-{index}.json"
    tmp = directory / f".worker-{index}.tmp"
    try:
        tmp.write_bytes(WorkerCounters.of(server).to_json())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("worker %d: counters not written to %s: %s", index, path, exc)


def others(directory: Path, own: int) -> Iterable[WorkerCounters]:
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
            yield WorkerCounters.from_json(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("counters in %s not read: %s", path, exc)


def node_counters(server: Server) -> tuple[WorkerCounters, int]:
    """Every worker's counters added up, and how many workers that is."""
    total = WorkerCounters.of(server)
    workers = 1
    if server.runtime_dir is not None:
        for other in others(server.runtime_dir, server.worker_index):
            total.add(other)
            workers += 1
    return total, workers
