"""Health state, pure: probe results in, state changes out.  No clock, no I/O.

Theory of operation: each *check* keeps two run counters.  ``rise``
consecutive successes make it up, ``fall`` consecutive failures make it down;
anything less leaves the state as it was, so one lost probe does not move
traffic and one lucky probe does not bring a sick site back (hysteresis).
A check starts *unknown*.

A *PoP* is up when its checks satisfy its policy (``all``, ``any``, or a
quorum of N), down when they can no longer satisfy it, unknown otherwise.
Until a PoP's first verdict it counts as up for a grace period after
start-up (so a restart does not turn every site dark); a PoP still without a
verdict when the grace period ends counts as down.  A PoP with no checks
stays unknown, which steering treats as up.

A flaky check is damped: every isolated failure (a run of failures too
short to bring it down) in the last minute adds one success to what it
needs to come back up (see :meth:`CheckState.rise_needed`).  Failing over
stays as fast, clean outages come back after ``rise`` successes however
often they happen, and a target failing at random stays down instead of
flapping.

Round-trip times of successful probes feed a moving average per PoP; above
the ``slow_ms`` threshold the excess becomes a score penalty (in steps of
``PENALTY_STEP_MS`` so that cached decisions are not thrown away on every
probe), and a sick-but-alive PoP loses clients gradually.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geodns.health.states import DOWN, UNKNOWN, UP, State

PENALTY_STEP_MS = 10.0
EWMA_ALPHA = 0.3


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    rtt_ms: float | None
    detail: str  # "200 in 3.1 ms", "connect refused", "timeout after 0.8 s"
    # Why a probe failed, from a short fixed list (a metric label): timeout,
    # refused, connect, status, body, rcode, answer, error.
    reason: str = ""


@dataclass
class CheckState:
    rise: int
    fall: int
    state: State = UNKNOWN
    ok_run: int = 0
    fail_run: int = 0
    last: Result | None = None
    flap_window: float = 60.0  # seconds; 0 turns flap damping off
    short_runs: list[float] = field(default_factory=list)  # times of isolated failures

    def rise_needed(self, now: float) -> int:
        """Flap damping: each run of failures too short to bring the check
        down (fewer than ``fall``) in the last ``flap_window`` seconds adds
        one success to what it needs to come back up (at most 30 more).
        Such isolated failures are what a flaky target looks like; a clean
        outage has none, so it comes back after ``rise`` as usual."""
        if not self.flap_window:
            return self.rise
        recent = sum(1 for t in self.short_runs if now - t < self.flap_window)
        return self.rise + min(recent, 30)

    def record(self, result: Result, now: float = 0.0) -> bool:
        """Count one result; True when the check's state changed."""
        self.last = result
        if result.ok:
            if 0 < self.fail_run < self.fall:
                self.short_runs.append(now)
                del self.short_runs[:-64]
            self.ok_run += 1
            self.fail_run = 0
            if self.state != UP and self.ok_run >= self.rise_needed(now):
                self.state = UP
                return True
        else:
            self.fail_run += 1
            self.ok_run = 0
            if self.state != DOWN and self.fail_run >= self.fall:
                self.state = DOWN
                return True
        return False


@dataclass
class PopState:
    """One PoP's checks and what they add up to."""

    checks: list[CheckState]
    require: int | str = "all"  # "all", "any", or a quorum count
    state: State = UNKNOWN
    since: float = 0.0
    rtt_ms: float | None = None
    changes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # failed probes by reason

    def needed(self) -> int:
        if self.require == "all":
            return len(self.checks)
        if self.require == "any":
            return 1
        return int(self.require)

    def verdict(self) -> State:
        if not self.checks:
            return UNKNOWN
        up = sum(c.state == UP for c in self.checks)
        down = sum(c.state == DOWN for c in self.checks)
        need = self.needed()
        if up >= need:
            return UP
        if len(self.checks) - down < need:
            return DOWN
        return self.state if self.state != UNKNOWN else UNKNOWN

    def observe_rtt(self, rtt_ms: float) -> None:
        self.rtt_ms = rtt_ms if self.rtt_ms is None else \
            (1 - EWMA_ALPHA) * self.rtt_ms + EWMA_ALPHA * rtt_ms


def penalty_ms(rtt_ms: float | None, slow_ms: float) -> float:
    """Score penalty for a slow PoP: the average RTT above the threshold,
    rounded down to whole steps."""
    if rtt_ms is None or rtt_ms <= slow_ms:
        return 0.0
    return (rtt_ms - slow_ms) // PENALTY_STEP_MS * PENALTY_STEP_MS


def effective(pop: PopState, now: float, started: float, grace: float) -> State:
    """The state steering should see: unknown after the grace period is
    down when the PoP has checks that never gave a verdict."""
    if pop.state == UNKNOWN and pop.checks and now - started >= grace:
        return DOWN
    return pop.state
