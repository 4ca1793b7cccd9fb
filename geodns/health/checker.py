"""Runs the checks and feeds their verdicts to steering's health view.

Probes start when the server starts (not at the first query), run
concurrently under a bound, each identical check once however many PoPs use
it, on its interval with a little jitter so probes do not march in step.
They run in the server's event loop but never delay an answer: a probe
only awaits I/O, and its timeout bounds a hanging target.

Every PoP state change writes one log line:
``state change pop=fra old=up new=down reason="..." checks="..."``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from geodns.health.probes import CheckSpec, Prober
from geodns.health.state import CheckState, PopState, Result, effective, penalty_ms
from geodns.steering import DOWN, UNKNOWN, StaticHealth

log = logging.getLogger("geodns.health")


@dataclass(frozen=True)
class HealthSettings:
    grace: float = 5.0
    slow_ms: float = 250.0
    concurrency: int = 64


class HealthChecker:
    def __init__(self, checks: dict[str, list[CheckSpec]], require: dict[str, int | str],
                 health: StaticHealth, settings: HealthSettings,
                 on_change: Callable[[], None], clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.health = health
        self.settings = settings
        self.on_change = on_change
        self.clock = clock
        self.rng = rng or random.Random()
        self.prober = Prober()
        self.check_states: dict[CheckSpec, CheckState] = {}
        self.users: dict[CheckSpec, list[str]] = {}
        self.pops: dict[str, PopState] = {}
        for pop, specs in checks.items():
            states = []
            for spec in specs:
                if spec not in self.check_states:
                    self.check_states[spec] = CheckState(spec.rise, spec.fall)
                    self.users[spec] = []
                self.users[spec].append(pop)
                states.append(self.check_states[spec])
            self.pops[pop] = PopState(states, require.get(pop, "all"))
        self.started = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._sem = asyncio.Semaphore(settings.concurrency)

    def start(self) -> None:
        self.started = self.clock()
        for pop in self.pops.values():
            pop.since = self.started
        for spec in self.check_states:
            self._tasks.append(asyncio.create_task(self._loop(spec)))
        if self.pops:
            self._tasks.append(asyncio.create_task(self._grace_timer()))
            log.info("health checks started: %d check(s) for %d PoP(s); PoPs count as up "
                     "for %g s until their first verdict", len(self.check_states),
                     len(self.pops), self.settings.grace)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.prober.close()

    # -------------------------------------------------------------------------
    async def _loop(self, spec: CheckSpec) -> None:
        # A first probe right away (within a little jitter), then every interval.
        await asyncio.sleep(self.rng.uniform(0, spec.interval * spec.jitter))
        while True:
            begun = self.clock()
            async with self._sem:
                result = await self.prober.run(spec)
            self.record(spec, result)
            spread = spec.interval * spec.jitter
            delay = spec.interval + self.rng.uniform(-spread, spread) - (self.clock() - begun)
            await asyncio.sleep(max(0.01, delay))

    async def _grace_timer(self) -> None:
        await asyncio.sleep(self.settings.grace)
        self.refresh_all("no verdict within the grace period")

    def record(self, spec: CheckSpec, result: Result) -> None:
        """One probe result (public so tests can drive it without probing)."""
        cstate = self.check_states[spec]
        changed = cstate.record(result)
        dirty = False
        for name in self.users[spec]:
            pop = self.pops[name]
            if result.ok and result.rtt_ms is not None:
                pop.observe_rtt(result.rtt_ms)
                penalty = penalty_ms(pop.rtt_ms, self.settings.slow_ms)
                if penalty != self.health.penalties.get(name, 0.0):
                    self.health.penalties[name] = penalty
                    log.info("PoP %s probes average %.0f ms: score penalty %.0f ms", name,
                             pop.rtt_ms, penalty)
                    dirty = True
            if changed:
                reason = f"{spec.describe()}: {result.detail}"
                dirty |= self._update(name, pop, reason)
        if dirty:
            self.on_change()

    def refresh_all(self, reason: str) -> None:
        dirty = False
        for name, pop in self.pops.items():
            dirty |= self._update(name, pop, reason)
        if dirty:
            self.on_change()

    def _update(self, name: str, pop: PopState, reason: str) -> bool:
        """Bring steering's view of one PoP up to date; True if it changed."""
        now = self.clock()
        pop.state = pop.verdict()
        new = effective(pop, now, self.started, self.settings.grace)
        old = self.health.states.get(name, UNKNOWN)
        if new == old:
            return False
        pop.since = now
        pop.changes += 1
        pop.history.append((time.time(), old, new, reason))
        del pop.history[:-50]
        self.health.set(name, new)
        checks = "; ".join(f"{s.describe()}={c.state}({c.last.detail if c.last else '-'})"
                           for s, c in self.check_states.items() if name in self.users[s])
        log.info('state change pop=%s old=%s new=%s reason="%s" checks="%s"', name, old, new,
                 reason, checks)
        return True

    def status(self) -> dict[str, dict[str, object]]:
        """Per PoP: state, since, probe results and RTT (for /status)."""
        out: dict[str, dict[str, object]] = {}
        for name, pop in self.pops.items():
            out[name] = {
                "state": self.health.states.get(name, UNKNOWN),
                "rtt_ms": None if pop.rtt_ms is None else round(pop.rtt_ms, 2),
                "changes": pop.changes,
                "checks": [{"check": s.describe(), "state": c.state,
                            "last": c.last.detail if c.last else None}
                           for s, c in self.check_states.items() if name in self.users[s]],
            }
        return out


__all__ = ["DOWN", "HealthChecker", "HealthSettings"]
