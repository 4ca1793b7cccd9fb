"""One read-only view of a running node, for everyone who watches it.

The admin API, the metrics and the status document read a :class:`NodeView`,
never the running server: the view is made on the event loop's thread from
immutable parts (the snapshot being served, the health view, copies of the
probe states, counters and events), so a reader cannot race a reload, and
the observers depend on this module rather than on the server.

:class:`NodeControl` is what the admin API may ask a node to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from geodns.anycast import AnycastView
from geodns.counters import Decoded
from geodns.fleet.keys import Drain
from geodns.health.states import State
from geodns.health.view import HealthView
from geodns.health.votes import Tally
from geodns.ratelimit import TOP as LIMITED_TOP
from geodns.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: str
    message: str
    pop: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "pop": self.pop, "message": self.message}


@dataclass(frozen=True, slots=True)
class CheckStatus:
    check: str  # what it probes, as an operator reads it
    state: State
    ok: bool | None  # the last probe's result (None: not probed yet)
    detail: str | None


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """What this node's probes say about one PoP."""

    checks: tuple[CheckStatus, ...] = ()
    rtt_ms: float | None = None
    failures: Mapping[str, int] = field(default_factory=dict)  # failed probes by reason
    changes: int = 0  # state changes


Events = dict[tuple[str, str], int]


@dataclass
class Counters:
    """What one worker, or every worker of the node added up, has counted
    since it started."""

    counts: Decoded = field(default_factory=dict)
    events: Events = field(default_factory=dict)  # rare events by (kind, reason)
    tcp_open: int = 0
    # TCP connections geodns closed, by reason (geodns.counters.TcpClosed)
    tcp_closed: dict[str, int] = field(default_factory=dict)
    cache_entries: int = 0
    workers: int = 0  # how many workers' counters these are
    # Answers rate limiting left out or truncated, by (class, action).
    limited: dict[tuple[str, str], int] = field(default_factory=dict)
    # The networks with the most limited answers lately, most first.
    limited_top: list[tuple[str, int]] = field(default_factory=list)

    def add(self, other: Counters) -> None:
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        for e, n in other.events.items():
            self.events[e] = self.events.get(e, 0) + n
        self.tcp_open += other.tcp_open
        for reason, n in other.tcp_closed.items():
            self.tcp_closed[reason] = self.tcp_closed.get(reason, 0) + n
        self.cache_entries += other.cache_entries
        self.workers += other.workers
        for key, n in other.limited.items():
            self.limited[key] = self.limited.get(key, 0) + n
        if other.limited_top:
            top = dict(self.limited_top)
            for net, n in other.limited_top:
                top[net] = top.get(net, 0) + n
            self.limited_top = sorted(top.items(), key=lambda t: (-t[1], t[0]))[:LIMITED_TOP]

    def to_json(self) -> bytes:
        return json.dumps({
            "counts": [[list(label), qtype, udp, n]
                       for (label, qtype, udp), n in self.counts.items()],
            "events": [[kind, reason, n] for (kind, reason), n in self.events.items()],
            "tcp_open": self.tcp_open,
            "tcp_closed": self.tcp_closed,
            "cache_entries": self.cache_entries,
            "limited": [[cls, action, n] for (cls, action), n in self.limited.items()],
            "limited_top": [[net, n] for net, n in self.limited_top],
        }).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Counters:
        doc: dict[str, Any] = json.loads(data)
        counts: Decoded = {}
        for label, qtype, udp, n in doc["counts"]:
            counts[(tuple(label), int(qtype), bool(udp))] = int(n)
        events = {(kind, reason): int(n) for kind, reason, n in doc["events"]}
        closed = {str(reason): int(n) for reason, n in doc["tcp_closed"].items()}
        # (Not written by a geodns older than rate limiting, which may hand over to this one.)
        limited = {(str(c), str(a)): int(n) for c, a, n in doc.get("limited", [])}
        top = [(str(net), int(n)) for net, n in doc.get("limited_top", [])]
        return cls(counts, events, int(doc["tcp_open"]), closed, doc["cache_entries"], 1,
                   limited, top)


@dataclass(frozen=True)
class FleetView:
    """What this node knows of its fleet (etcd), for /status and metrics."""

    node: str  # this node's name
    endpoints: tuple[str, ...]
    endpoint: str  # the one in use
    in_contact: bool  # etcd answered within a lease time
    last_contact: float | None  # wall clock
    error: str | None  # why the last session with etcd ended
    health: str  # "fleet" (every node's votes count) or "own" (etcd unreachable)
    policy: str  # health.up_votes
    published: Mapping[str, Any]  # who published last, when, why
    newest: str | None  # the newest documents revision seen in etcd
    nodes: Mapping[str, Mapping[str, Any]]  # every live node's status, by name
    votes: Mapping[str, Tally]  # per PoP: who votes what, and the verdict
    drains: Mapping[str, Drain]  # fleet-wide, by PoP
    origin: str  # where the documents came from: "etcd", "cache" or "none"
    cache_saved_at: float | None  # when the cached copy served at start was saved
    lease_ttl: int


@dataclass(frozen=True)
class NodeView:
    now: float
    started_at: float | None
    snapshot: Snapshot  # what is served: configuration, zones, GeoIP, version
    health: HealthView
    probes: Mapping[str, ProbeStatus]  # by PoP; empty where this process does not probe
    pop_since: Mapping[str, float]  # wall clock of each PoP's last state change
    events: tuple[Event, ...]  # newest first
    history: Mapping[str, Any]  # answers per PoP over the last minutes (status page)
    counters: Counters
    readiness: tuple[str, ...]  # why this node should not get traffic (empty: ready)
    admin_requests: Mapping[tuple[str, str], int]  # admin change requests by (action, result)
    fleet: FleetView | None = None  # None: not part of a fleet
    anycast: AnycastView | None = None  # None: announces no route


class NodeControl(Protocol):
    """What the admin API reads and changes."""

    def view(self) -> NodeView: ...

    def set_admin_state(self, pop: str, state: State | None, why: str) -> None:
        """Set (None: remove) a PoP's administrative state."""
        ...

    async def reload(self, force: bool = False) -> bool:
        """Read configuration, zones and GeoIP again; True if a new snapshot
        is served."""
        ...

    def add_event(self, kind: str, message: str, pop: str | None = None) -> None: ...

    async def set_node_drain(self, drain: dict[str, Any] | None) -> None:
        """Drain (None: undrain) the node from anycast."""
        ...

    async def set_fleet_drain(self, pop: str, state: State | None, who: str, why: str
                              ) -> None:
        """Set (None: remove) a PoP's fleet-wide administrative state;
        :class:`~geodns.errors.GeodnsError` when that cannot be done now."""
        ...


__all__ = ["CheckStatus", "Counters", "Event", "FleetView", "NodeControl", "NodeView",
           "ProbeStatus"]
