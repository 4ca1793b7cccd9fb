"""What a running node tells an operator: recent events, answers per PoP
over the last minutes, and the ``/status`` document built from them.

The event log and the answer history are fed by the control plane (state
changes, admin calls, reloads, a timer); nothing here is on the query path.
The answer history samples the responder's counters, which the query path
increments anyway, so watching answers costs the data plane nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from geodns import __version__, names
from geodns.counters import Decoded
from geodns.fleet.keys import behind
from geodns.health.states import DOWN
from geodns.node import Event, FleetView, NodeView
from geodns.ratelimit import ACTIONS, CLASSES
from geodns.rdata import type_name
from geodns.snapshot import Snapshot
from geodns.zones.model import Zone

START, STATE_CHANGE, ADMIN, RELOAD, RELOAD_ERROR = (
    "start", "state-change", "admin", "reload", "reload-error")
MAX_EVENTS = 100
HISTORY_INTERVAL = 10.0  # seconds per bucket of the answer history
HISTORY_BUCKETS = 60  # ten minutes


class EventLog:
    """The last :data:`MAX_EVENTS` events, newest last (added from the
    event loop's thread only)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)

    def add(self, kind: str, message: str, pop: str | None = None) -> None:
        self.events.append(Event(self.clock(), kind, message, pop))

    def newest_first(self) -> tuple[Event, ...]:
        return tuple(reversed(self.events))


class AnswerHistory:
    """Steered answers per PoP, in buckets of ``interval`` seconds.

    :meth:`sample` is given the running totals per PoP (counters only grow)
    and keeps the differences; call it once per interval."""

    def __init__(self, interval: float = HISTORY_INTERVAL, buckets: int = HISTORY_BUCKETS
                 ) -> None:
        self.interval = interval
        self.buckets: deque[dict[str, int]] = deque(maxlen=buckets)
        self.last: dict[str, int] | None = None
        self.end: float | None = None

    def sample(self, totals: Mapping[str, int], now: float) -> None:
        if self.last is not None:
            self.buckets.append({p: n - self.last.get(p, 0) for p, n in totals.items()
                                 if n - self.last.get(p, 0)})
        self.last = dict(totals)
        self.end = now

    def as_json(self, pops: Iterable[str]) -> dict[str, Any]:
        series = {p: [b.get(p, 0) for b in self.buckets] for p in pops}
        return {"interval_seconds": self.interval, "end": self.end, "pops": series}


def answers_per_pop(counts: Decoded) -> dict[str, int]:
    """Steered answers per first PoP, from the query counters (steered
    answers are counted under (zone, rcode, PoP, reason))."""
    totals: dict[str, int] = {}
    for (label, _qt, _udp), n in counts.items():
        if len(label) == 4 and label[2]:
            totals[label[2]] = totals.get(label[2], 0) + n
    return totals


def record_health(view: NodeView) -> list[dict[str, Any]]:
    """Every steered record: its PoPs and how many of them can be chosen."""
    health = view.health
    out = []
    for st in view.snapshot.tables.steered:
        spec = st.spec
        healthy = 0
        for pop in spec.values:
            state = health.state(pop)
            if not state.eligible or health.record_state(spec.key, pop) == DOWN:
                continue
            healthy += 1
        out.append({"zone": st.zone, "name": names.to_text(spec.owner),
                    "type": type_name(spec.rtype), "pops": list(spec.values),
                    "healthy_pops": healthy})
    return out


def status(view: NodeView) -> dict[str, Any]:
    """The ``GET /status`` document."""
    snap = view.snapshot
    cfg = snap.config
    answers = answers_per_pop(view.counters.counts)
    pops = []
    for pop_id, pop in cfg.pops.items():
        probes = view.probes.get(pop_id)
        pops.append({
            "id": pop_id, "latitude": pop.latitude, "longitude": pop.longitude,
            "city": pop.city, "country": pop.country, "continent": pop.continent,
            "bias": pop.bias, "state": view.health.state(pop_id),
            "admin_state": view.health.admin.get(pop_id),
            "since": view.pop_since.get(pop_id),
            "rtt_ms": probes.rtt_ms if probes is not None else None,
            "penalty_ms": view.health.penalty_ms(pop_id),
            "probe_failures": sum(probes.failures.values()) if probes is not None else 0,
            "state_changes": probes.changes if probes is not None else 0,
            "answers": answers.get(pop_id, 0),
            "checks": [{"check": c.check, "state": c.state, "ok": c.ok, "detail": c.detail}
                       for c in (probes.checks if probes is not None else ())],
        })
    zones = []
    for name, entry in sorted(snap.zones.items()):
        zones.append({"zone": entry.zone.name if entry.zone is not None else None,
                      "file": name,
                      "serial": entry.zone.serial if entry.zone is not None else None,
                      "loaded_at": entry.loaded_at, "errors": [str(p) for p in entry.errors],
                      "dnssec": _dnssec(snap, entry.zone)})
    geo = snap.geoip
    geoip = {"path": geo.path, "type": geo.database_type, "build_epoch": geo.build_epoch,
             "description": geo.description, "error": geo.error}
    return {
        "version": __version__, "node": cfg.identity, "now": view.now,
        "serving": {"revision": snap.version.revision, "serials": dict(snap.version.serials),
                    "built_at": snap.built_at,
                    "refused": None if snap.refused is None else
                    {"revision": snap.refused.revision, "at": snap.refused.at,
                     "problems": [str(p) for p in snap.refused.problems]}},
        "started_at": view.started_at, "uptime_seconds":
            view.now - view.started_at if view.started_at else 0.0,
        "ready": not view.readiness, "not_ready_because": list(view.readiness),
        "workers": view.counters.workers, "geoip": geoip, "pops": pops,
        "records": record_health(view), "zones": zones,
        "configuration": {"file": str(cfg.path) if cfg.path else None,
                          "errors": [str(p) for p in snap.config_errors],
                          "restart_needed": list(snap.restart_needed)},
        "reloads": {"success": snap.reloads_ok, "failure": snap.reloads_failed,
                    "last_success": snap.last_success},
        "answers_history": dict(view.history),
        "events": [e.as_json() for e in view.events],
        "fleet": fleet_status(view.fleet, snap.version.revision),
        "rate_limit": rate_limit_status(view),
        "anycast": None if view.anycast is None else {
            "speaker": view.anycast.speaker, "prefixes": list(view.anycast.prefixes),
            "announced": view.anycast.announced, "since": view.anycast.since,
            "withdrawn_because": list(view.anycast.why), "changes": view.anycast.changes,
            "self_check": {"ok": view.anycast.self_check is None,
                           "error": view.anycast.self_check,
                           "failures": view.anycast.self_check_failures},
            "node_drain": view.anycast.drained, "speaker_error": view.anycast.speaker_error,
            "helpers": view.anycast.watchers},
    }


def rate_limit_status(view: NodeView) -> dict[str, Any] | None:
    """Response rate limiting: its settings, the limited answers by class
    and action, and the networks with the most limited answers lately
    (every worker's, added up); None when it is off."""
    rl = view.snapshot.config.rate_limit
    if rl is None:
        return None
    limited = view.counters.limited
    return {
        "rate": rl.rate, "slip": rl.slip, "ipv4_prefix": rl.ipv4_prefix,
        "ipv6_prefix": rl.ipv6_prefix, "table_size": rl.table_size, "exempt": list(rl.exempt),
        "class_rates": dict(rl.class_rates),
        "limited": {cls: {a: limited.get((cls, a), 0) for a in ACTIONS} for cls in CLASSES},
        "top": [{"network": net, "limited": n} for net, n in view.counters.limited_top],
    }


def fleet_status(fleet: FleetView | None, serving: str) -> dict[str, Any] | None:
    """The fleet as this node sees it: every live node and what it serves,
    the votes on every PoP, and fleet-wide drains."""
    if fleet is None:
        return None
    return {
        "node": fleet.node, "etcd": {"endpoints": list(fleet.endpoints),
                                     "endpoint": fleet.endpoint,
                                     "in_contact": fleet.in_contact,
                                     "last_contact": fleet.last_contact, "error": fleet.error},
        "health": fleet.health, "policy": fleet.policy, "lease_ttl": fleet.lease_ttl,
        "documents_from": fleet.origin, "cache_saved_at": fleet.cache_saved_at,
        "newest_revision": fleet.newest, "published": dict(fleet.published),
        "nodes": [dict(doc, name=name, behind=behind(doc, fleet.newest))
                  for name, doc in sorted(fleet.nodes.items())],
        "votes": {pop: {"verdict": t.verdict, "votes": dict(t.votes), "disagree": t.disagree}
                  for pop, t in fleet.votes.items()},
        "drains": {pop: d.to_json() for pop, d in fleet.drains.items()},
        "serving": serving,
    }


def _dnssec(snap: Snapshot, zone: Zone | None) -> dict[str, Any] | None:
    """A signed zone's keys and signature times (None: not signed)."""
    part = snap.tables.parts.get(zone.origin) if zone is not None else None
    if part is None or part.signer is None or zone is None:
        return None
    return {"keys": [{"tag": k.key.tag, "algorithm": k.key.algorithm, "role": k.key.role.value,
                      "signs": k.sign} for k in zone.keys],
            "signatures_expire": part.signer.earliest_expiration, "refresh_at": part.due}
