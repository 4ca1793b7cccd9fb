"""What steering knows about PoP health: one immutable view.  Pure.

A view joins three layers: the verdicts of health checks per PoP (``states``),
the administrative overrides an operator set (``admin``: a drain wins over
whatever the probes say), and the verdicts of steered records' own checks at
each PoP (``records``).  Slow PoPs carry a score ``penalty`` in ms.

Views are values: nothing changes one after it is made.  The health store
(:mod:`geodns.health.store`) makes a new view for every change and hands it
to whoever serves; a reader holding a view (a query on a cache miss, the
admin API, a metrics scrape) always sees one consistent whole, and a view
can be copied to another worker or node as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geodns.health.states import UNKNOWN, State, parse_state

Record = tuple[bytes, int]  # a steered record: lower-case wire owner, type


def _frozen(m: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    # A private copy, typed read-only.  Not a MappingProxyType: steering reads
    # these on every cache miss, and a proxy's get costs twice a dict's.
    return dict(m) if m else {}


@dataclass(frozen=True, slots=True)
class HealthView:
    states: Mapping[str, State] = field(default_factory=dict)
    penalties: Mapping[str, float] = field(default_factory=dict)
    admin: Mapping[str, State] = field(default_factory=dict)
    records: Mapping[Record, Mapping[str, State]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copies: a caller's dict changing later cannot change the view.
        object.__setattr__(self, "states", _frozen({p: State(s) for p, s in self.states.items()}))
        object.__setattr__(self, "penalties", _frozen(self.penalties))
        object.__setattr__(self, "admin", _frozen({p: State(s) for p, s in self.admin.items()}))
        object.__setattr__(self, "records", _frozen(
            {r: _frozen({p: State(s) for p, s in per.items()})
             for r, per in self.records.items()}))

    def state(self, pop: str) -> State:
        """The state steering uses: an administrative override, else the
        probes' verdict, else unknown."""
        return self.admin.get(pop) or self.states.get(pop, UNKNOWN)

    def probed(self, pop: str) -> State:
        """The probes' verdict alone (what a PoP returns to when undrained)."""
        return self.states.get(pop, UNKNOWN)

    def record_state(self, record: Record, pop: str) -> State:
        """The state of a record's own checks at a PoP (unknown if none)."""
        per = self.records.get(record)
        return per.get(pop, UNKNOWN) if per else UNKNOWN

    def penalty_ms(self, pop: str) -> float:
        return self.penalties.get(pop, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "states": dict(self.states), "penalties": dict(self.penalties),
            "admin": dict(self.admin),
            "records": [[owner.hex(), rtype, dict(per)]
                        for (owner, rtype), per in self.records.items()],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HealthView:
        """The inverse of :meth:`to_json`; unknown state words are left out."""
        def states(m: Any) -> dict[str, State]:
            out = {}
            for k, v in (m or {}).items():
                s = parse_state(v)
                if s is not None:
                    out[str(k)] = s
            return out

        records = {(bytes.fromhex(owner), int(rtype)): states(per)
                   for owner, rtype, per in doc.get("records") or ()}
        return cls(states(doc.get("states")),
                   {str(k): float(v) for k, v in (doc.get("penalties") or {}).items()},
                   states(doc.get("admin")), records)


__all__ = ["HealthView", "Record"]
