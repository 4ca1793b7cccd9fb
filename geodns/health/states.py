"""The states a PoP (or one record's checks at a PoP) can be in.  Pure.

``up`` and ``unknown`` (not probed yet, or no checks) can be chosen by
steering; ``down`` (probes failed) and ``draining`` (an operator's drain)
are chosen only when every candidate is.  The values are the words
operators write and see (configuration, admin API, metrics labels).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    UNKNOWN = "unknown"

    @property
    def eligible(self) -> bool:
        """Whether steering may choose a PoP in this state while others are
        down."""
        return self in (State.UP, State.UNKNOWN)


UP, DOWN, DRAINING, UNKNOWN = State.UP, State.DOWN, State.DRAINING, State.UNKNOWN
STATES: tuple[State, ...] = tuple(State)


def parse_state(text: object) -> State | None:
    """The state a word names, or None."""
    if not isinstance(text, str):
        return None
    try:
        return State(text)
    except ValueError:
        return None
