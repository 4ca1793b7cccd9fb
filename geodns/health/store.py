"""The health store: where verdicts are written and views are published.

Theory of operation: writers (this node's probes, an operator's drains,
and, later, other nodes' votes) change the store; :meth:`publish` then makes
one new immutable :class:`~geodns.health.view.HealthView` and hands it to
every subscriber (the server swaps it into the responder, the worker link
sends it to the other workers).  Several changes made before one publish
become one view, so a probe round that moves three PoPs clears the
decision caches once.  Everything here runs in the event loop's thread.

:class:`HealthStore` is the interface; :class:`LocalHealthStore` is the one
implementation today.  A node whose verdicts come from elsewhere (a worker
that does not probe) uses :meth:`LocalHealthStore.replace` with the views
it is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from geodns.health.states import UNKNOWN, State
from geodns.health.view import HealthView, Record

Subscriber = Callable[[HealthView], None]


class HealthStore(Protocol):
    def view(self) -> HealthView:
        """The view published last."""
        ...

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber`` with every view published from now on."""
        ...


class LocalHealthStore:
    def __init__(self, initial: HealthView | None = None) -> None:
        self._view = initial or HealthView()
        self._states = dict(self._view.states)
        self._penalties = dict(self._view.penalties)
        self._admin = dict(self._view.admin)
        self._records = {r: dict(per) for r, per in self._view.records.items()}
        self._subscribers: list[Subscriber] = []

    def view(self) -> HealthView:
        return self._view

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    # -- writers (nothing is seen until publish) --------------------------------
    def set_state(self, pop: str, state: State) -> None:
        self._states[pop] = State(state)

    def clear_state(self, pop: str) -> None:
        """The PoP has no checks any more: no verdict, no penalty."""
        self._states.pop(pop, None)
        self._penalties.pop(pop, None)

    def set_penalty(self, pop: str, ms: float) -> None:
        if ms:
            self._penalties[pop] = ms
        else:
            self._penalties.pop(pop, None)

    def set_record_state(self, record: Record, pop: str, state: State) -> None:
        self._records.setdefault(record, {})[pop] = State(state)

    def drop_record(self, record: Record, pop: str) -> None:
        per = self._records.get(record)
        if per is not None:
            per.pop(pop, None)
            if not per:
                del self._records[record]

    def set_admin(self, overrides: Mapping[str, State]) -> None:
        """Replace every administrative override."""
        self._admin = {p: State(s) for p, s in overrides.items()}

    def keep_pops(self, pops: Iterable[str]) -> None:
        """Forget PoPs the configuration no longer has (their verdicts,
        penalties and record states; drains stay, as the state file has them)."""
        keep = set(pops)
        for table in (self._states, self._penalties):
            for pop in [p for p in table if p not in keep]:
                del table[pop]
        for record in list(self._records):
            for pop in [p for p in self._records[record] if p not in keep]:
                self.drop_record(record, pop)

    def state(self, pop: str) -> State:
        """What a view published now would say (including unpublished changes)."""
        return self._admin.get(pop) or self._states.get(pop, UNKNOWN)

    def probed(self, pop: str) -> State:
        return self._states.get(pop, UNKNOWN)

    def record_state(self, record: Record, pop: str) -> State:
        return self._records.get(record, {}).get(pop, UNKNOWN)

    def penalty_ms(self, pop: str) -> float:
        return self._penalties.get(pop, 0.0)

    # -- publishing -----------------------------------------------------------
    def publish(self) -> bool:
        """Make the changes visible as one new view; False if nothing changed."""
        view = HealthView(self._states, self._penalties, self._admin, self._records)
        if view == self._view:
            return False
        self._view = view
        for subscriber in list(self._subscribers):
            subscriber(view)
        return True

    def replace(self, view: HealthView) -> bool:
        """Take a whole view from elsewhere (another worker's probes)."""
        self._states = dict(view.states)
        self._penalties = dict(view.penalties)
        self._admin = dict(view.admin)
        self._records = {r: dict(per) for r, per in view.records.items()}
        return self.publish()


__all__ = ["HealthStore", "LocalHealthStore", "Subscriber"]
