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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geodns import __version__, names
from geodns.counters import Decoded
from geodns.rdata import type_name
from geodns.server.shared import node_counters
from geodns.steering import DOWN, DRAINING

if TYPE_CHECKING:
    from geodns.server.app import Server

START, STATE_CHANGE, ADMIN, RELOAD, RELOAD_ERROR = (
    "start", "state-change", "admin", "reload", "reload-error")
MAX_EVENTS = 100
HISTORY_INTERVAL = 10.0  # seconds per bucket of the answer history
HISTORY_BUCKETS = 60  # ten minutes


@dataclass(frozen=True, slots=True)
class Event:
    time: float
    kind: str
    message: str
    pop: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "pop": self.pop, "message": self.message}


class EventLog:
    """The last :data:`MAX_EVENTS` events, newest last.  ``add`` may be
    called from the reload thread: a deque append is atomic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)

    def add(self, kind: str, message: str, pop: str | None = None) -> None:
        self.events.append(Event(self.clock(), kind, message, pop))

    def newest_first(self) -> list[Event]:
        return list(reversed(self.events))


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


def record_health(server: Server) -> list[dict[str, Any]]:
    """Every steered record: its PoPs and how many of them can be chosen."""
    health = server.health
    out = []
    for st in server.responder.tables.steered:
        spec = st.spec
        healthy = 0
        for pop in spec.values:
            state = health.state(pop)
            if state in (DOWN, DRAINING) or health.record_state(spec.key, pop) == DOWN:
                continue
            healthy += 1
        out.append({"zone": st.zone, "name": names.to_text(spec.owner),
                    "type": type_name(spec.rtype), "pops": list(spec.values),
                    "healthy_pops": healthy})
    return out


def status(server: Server) -> dict[str, Any]:
    """The ``GET /status`` document."""
    now = time.time()
    cfg = server.config
    store = server.store
    checker = server.checker
    counters, workers = node_counters(server)
    answers = answers_per_pop(counters.counts)
    pops = []
    for pop_id, pop in cfg.pops.items():
        unit = checker.units.get(pop_id) if checker is not None else None
        checks = []
        if checker is not None:
            for spec, users in checker.users.items():
                if pop_id not in users:
                    continue
                cs = checker.check_states[spec]
                checks.append({"check": spec.describe(), "state": cs.state,
                               "ok": cs.last.ok if cs.last else None,
                               "detail": cs.last.detail if cs.last else None})
        pops.append({
            "id": pop_id, "latitude": pop.latitude, "longitude": pop.longitude,
            "city": pop.city, "country": pop.country, "continent": pop.continent,
            "bias": pop.bias, "state": server.health.state(pop_id),
            "admin_state": server.health.admin.get(pop_id),
            "since": server.pop_since.get(pop_id),
            "rtt_ms": unit.rtt_ms if unit is not None else None,
            "penalty_ms": server.health.penalty_ms(pop_id),
            "probe_failures": sum(unit.failures.values()) if unit is not None else 0,
            "state_changes": unit.changes if unit is not None else 0,
            "answers": answers.get(pop_id, 0),
            "checks": checks,
        })
    zones = []
    for path, zs in sorted(store.files.items()):
        zones.append({"zone": zs.zone.name if zs.zone is not None else None, "file": path,
                      "serial": zs.zone.serial if zs.zone is not None else None,
                      "loaded_at": zs.loaded_at, "errors": [str(p) for p in zs.errors]})
    locator = store.locator
    geoip = {"path": str(store.geoip_path) if store.geoip_path else None,
             "type": getattr(locator, "database_type", None),
             "build_epoch": getattr(locator, "build_epoch", None),
             "description": locator.description if locator is not None else None,
             "error": store.geoip_error}
    return {
        "version": __version__, "node": cfg.identity, "now": now,
        "started_at": server.started_at, "uptime_seconds":
            now - server.started_at if server.started_at else 0.0,
        "ready": not server.readiness(), "workers": workers, "geoip": geoip, "pops": pops,
        "records": record_health(server), "zones": zones,
        "reloads": {"success": store.reloads_ok, "failure": store.reloads_failed,
                    "last_success": store.last_success},
        "answers_history": server.history.as_json(cfg.pops),
        "events": [e.as_json() for e in server.events.newest_first()],
    }
