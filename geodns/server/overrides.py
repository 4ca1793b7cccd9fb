"""Administrative PoP states (drains): set through the admin API, kept in the
state file, written into the health store.

The state file outlives the process, so a drain survives a restart; it is
also read again when it changes on disk (an operator or a tool may write
it), and each change is published to the health store, whose subscribers
(the serving responder, the other workers) see it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from geodns import state as state_file
from geodns.health.states import State
from geodns.health.store import LocalHealthStore
from geodns.snapshot import Signature, file_signature

log = logging.getLogger("geodns.server")

# (PoP, message): an administrative change of a PoP's effective state.
Notify = Callable[[str, str], None]


class AdminOverrides:
    def __init__(self, store: LocalHealthStore, path: Path | None,
                 notify: Notify | None = None) -> None:
        self.store = store
        self.path = path
        self.notify = notify
        self._signature: Signature | None = None

    def current(self) -> dict[str, State]:
        """The overrides in force: the store's (a worker started again is
        handed the node's drains there, and a change made here keeps them)."""
        return dict(self.store.view().admin)

    def load(self, pops: Collection[str], force: bool = False) -> bool:
        """Read the state file if it changed; True if the overrides changed."""
        if self.path is None:
            return False
        sig = file_signature(str(self.path))
        if sig == self._signature and not force:
            return False
        self._signature = sig
        loaded = {p: State(s) for p, s in state_file.load(self.path).items()}
        if loaded == self.current():
            return False
        text = ", ".join(f"{p} {s}" for p, s in sorted(loaded.items())) or "none"
        log.info("administrative PoP states: %s", text,
                 extra={"event": "admin", "states": dict(loaded)})
        self._apply(loaded, pops, f"state file {self.path}")
        return True

    def set(self, pop: str, state: State | None, pops: Collection[str], why: str) -> None:
        """Set (or with None remove) one PoP's override, keep it in the state
        file, and publish it."""
        overrides = self.current()
        if state is None:
            overrides.pop(pop, None)
        else:
            overrides[pop] = state
        self._apply(overrides, pops, why)
        if self.path is not None:
            try:
                state_file.save(self.path, overrides)
                self._signature = file_signature(str(self.path))
            except OSError as exc:
                log.error("state file %s not written: %s (the change holds in this "
                          "process only)", self.path, exc)

    def _apply(self, overrides: Mapping[str, State], pops: Collection[str], why: str) -> None:
        before = {p: self.store.state(p) for p in pops}
        self.store.set_admin(overrides)
        self.store.publish()
        if self.notify is not None:
            for pop, old in before.items():
                new = self.store.state(pop)
                if new != old:
                    self.notify(pop, f"{pop} {old} -> {new} ({why})")


__all__ = ["AdminOverrides"]
