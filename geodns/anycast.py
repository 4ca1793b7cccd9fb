"""Health-gated anycast: when this node should announce its anycast routes.
Pure: no clock, no I/O (the server feeds it the time and what it observed).

Theory of operation.  Every node of an anycast fleet announces the same
prefixes; routers send each client to the nearest node that announces them.
A node must therefore announce only while it is *fit to serve*: its listeners
are up, its zones and GeoIP database loaded, a self-check query sent to its
own listening socket is answered correctly, the operator has not drained it
(``geodns node drain``), and it is not stopping (lameduck).  Any of these
failing withdraws the routes at once.  Coming back is slower on purpose: a
node re-announces only once it has been fit without a break for the
hold-down time, so that a node that flaps does not make routes flap.  The
first announcement after start needs no hold-down (there was nothing to
flap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    ANNOUNCE = "announce"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class Fitness:
    """Why a node is not fit to serve (nothing: it is)."""

    reasons: tuple[str, ...] = ()

    @property
    def fit(self) -> bool:
        return not self.reasons


def fitness(readiness: tuple[str, ...], self_check: str | None, drained: str | None,
            stopping: bool) -> Fitness:
    """``readiness``: why the node is not ready (listeners, zones, GeoIP);
    ``self_check``: why the last self-check failed (None: it passed);
    ``drained``: the operator's reason for a node drain (None: not drained)."""
    reasons = list(readiness)
    if self_check is not None:
        reasons.append(f"self-check failed: {self_check}")
    if drained is not None:
        reasons.append(f"node drained: {drained}" if drained else "node drained")
    if stopping:
        reasons.append("stopping (lameduck)")
    return Fitness(tuple(dict.fromkeys(reasons)))


@dataclass
class Announcer:
    """Whether the routes should be announced now."""

    hold_down: float
    announced: bool = False
    since: float | None = None  # when the last announce or withdraw was decided
    fit_since: float | None = None  # start of the current unbroken run of fitness
    ever_announced: bool = False
    changes: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    why: tuple[str, ...] = ("not started",)  # why it is withdrawn

    def update(self, fit: Fitness, now: float) -> Action | None:
        """The action to take now, if any."""
        if not fit.fit:
            self.fit_since = None
            self.why = fit.reasons
            if self.announced:
                return self._set(False, now)
            return None
        if self.fit_since is None:
            self.fit_since = now
        if self.announced:
            return None
        waited = now - self.fit_since
        if not self.ever_announced or waited >= self.hold_down:
            self.why = ()
            return self._set(True, now)
        self.why = (f"hold-down: fit for {waited:.1f} of {self.hold_down:g} s",)
        return None

    def _set(self, announce: bool, now: float) -> Action:
        self.announced = announce
        self.since = now
        action = Action.ANNOUNCE if announce else Action.WITHDRAW
        if announce:
            self.ever_announced = True
        self.changes[action.value] += 1
        return action


@dataclass(frozen=True)
class AnycastView:
    """What /status and /metrics show of the node's routes."""

    speaker: str
    prefixes: tuple[str, ...]
    announced: bool
    since: float | None  # wall clock of the last announce or withdraw
    why: tuple[str, ...]  # why the routes are withdrawn
    changes: dict[str, int]
    self_check: str | None  # the last self-check's failure (None: it passed)
    self_check_failures: int
    drained: dict[str, Any] | None  # the operator's node drain: who, when, why
    speaker_error: str | None = None
    watchers: int = 0  # ExaBGP helpers following this node


__all__ = ["Action", "Announcer", "AnycastView", "Fitness", "fitness"]
