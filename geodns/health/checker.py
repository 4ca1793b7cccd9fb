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

from geodns.health.probes import Prober
from geodns.health.spec import CheckSpec, HealthSettings
from geodns.health.state import CheckState, PopState, Result, effective, penalty_ms
from geodns.health.states import DOWN, UNKNOWN, State
from geodns.health.store import LocalHealthStore
from geodns.names import to_text
from geodns.rdata import type_name

log = logging.getLogger("geodns.health")


# What a verdict is about: a PoP, or one record's own checks at a PoP.
Unit = str | tuple[bytes, int, str]


def _unit_name(unit: Unit) -> str:
    if isinstance(unit, str):
        return f"pop={unit}"
    owner, rtype, pop = unit
    return f"pop={pop} record={to_text(owner)}/{type_name(rtype)}"


class HealthChecker:
    """Runs every check once, however many PoPs and records use it, and
    writes the verdicts to the health store (publishing once per probe
    result that changed anything)."""

    def __init__(self, checks: dict[str, list[CheckSpec]], require: dict[str, int | str],
                 store: LocalHealthStore, settings: HealthSettings,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 observe: Callable[[str, float], None] | None = None,
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.observe = observe  # (PoP, probe seconds), for the duration histogram
        self.on_state = on_state  # (PoP, what changed): a state change, for the event log
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.prober = Prober()
        self.check_states: dict[CheckSpec, CheckState] = {}
        self.users: dict[CheckSpec, list[Unit]] = {}
        self.units: dict[Unit, PopState] = {}
        self.started: float | None = None
        self._tasks: dict[CheckSpec, asyncio.Task[None]] = {}
        self._sem = asyncio.Semaphore(settings.concurrency)
        for pop, specs in checks.items():
            self._add_unit(pop, specs, require.get(pop, "all"))

    @property
    def pops(self) -> dict[str, PopState]:
        return {u: s for u, s in self.units.items() if isinstance(u, str)}

    def _add_unit(self, unit: Unit, specs: list[CheckSpec], require: int | str) -> None:
        states = []
        for spec in specs:
            if spec not in self.check_states:
                self.check_states[spec] = CheckState(spec.rise, spec.fall,
                                                     flap_window=self.settings.flap_window)
                self.users[spec] = []
                if self.started is not None:
                    self._spawn(spec)
            self.users[spec].append(unit)
            states.append(self.check_states[spec])
        # A verdict the store already holds (handed over by the process this
        # one replaces, or kept across a reconfiguration) stands until the
        # checks reach their own.
        held = self.store.probed(unit) if isinstance(unit, str) else \
            self.store.record_state(unit[:2], unit[2])
        self.units[unit] = PopState(states, require, state=held, since=self.clock())

    def _remove_unit(self, unit: Unit) -> None:
        self.units.pop(unit, None)
        for spec in [s for s, users in self.users.items() if unit in users]:
            self.users[spec].remove(unit)
            if not self.users[spec]:
                del self.users[spec]
                del self.check_states[spec]
                task = self._tasks.pop(spec, None)
                if task is not None:
                    task.cancel()
        if isinstance(unit, str):
            self.store.clear_state(unit)
        else:
            self.store.drop_record(unit[:2], unit[2])

    def set_record_checks(self, records: dict[tuple[bytes, int],
                                              dict[str, tuple[CheckSpec, ...]]]) -> None:
        """The records' own checks after a zone (re)load: start new ones,
        stop those no longer written."""
        wanted: dict[Unit, list[CheckSpec]] = {
            (owner, rtype, pop): list(specs)
            for (owner, rtype), per_pop in records.items() for pop, specs in per_pop.items()}
        current: list[Unit] = [u for u in self.units if not isinstance(u, str)]
        for unit in current:
            if unit not in wanted or [s for s, users in self.users.items()
                                      if unit in users] != wanted[unit]:
                self._remove_unit(unit)
        for unit, specs in wanted.items():
            if unit not in self.units:
                self._add_unit(unit, specs, "all")
        self.store.publish()

    def set_pop_checks(self, checks: dict[str, list[CheckSpec]],
                       require: dict[str, int | str], settings: HealthSettings) -> None:
        """The PoPs' checks after a configuration reload: checks that stay
        the same keep their state and their schedule; the rest start or stop."""
        self.settings = settings
        current = [u for u in self.units if isinstance(u, str)]
        for pop in current:
            specs = [s for s, users in self.users.items() if pop in users]
            if pop not in checks or specs != checks[pop] or \
                    self.units[pop].require != require.get(pop, "all"):
                self._remove_unit(pop)
        for pop, specs in checks.items():
            if pop not in self.units:
                self._add_unit(pop, specs, require.get(pop, "all"))
        self.store.publish()

    def start(self) -> None:
        self.started = self.clock()
        for spec in self.check_states:
            self._spawn(spec)
        if self.units:
            log.info("health checks started: %d check(s) for %d PoP(s) and records; PoPs count "
                     "as up for %g s until their first verdict", len(self.check_states),
                     len(self.units), self.settings.grace)

    def _spawn(self, spec: CheckSpec) -> None:
        self._tasks[spec] = asyncio.create_task(self._loop(spec))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
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
                started = time.monotonic()
                result = await self.prober.run(spec)
                took = time.monotonic() - started
            if spec in self.check_states:
                if self.observe is not None:
                    for unit in self.users[spec]:
                        if isinstance(unit, str):
                            self.observe(unit, took)
                self.record(spec, result)
            spread = spec.interval * spec.jitter
            delay = spec.interval + self.rng.uniform(-spread, spread) - (self.clock() - begun)
            await asyncio.sleep(max(0.01, delay))

    def record(self, spec: CheckSpec, result: Result) -> None:
        """One probe result (public so tests can drive it without probing).
        Every unit using the check is re-evaluated: that is also how a grace
        period that ends without a verdict is noticed."""
        self.check_states[spec].record(result, self.clock())
        dirty = False
        for unit in self.users[spec]:
            state = self.units[unit]
            if not result.ok:
                reason = result.reason or "error"
                state.failures[reason] = state.failures.get(reason, 0) + 1
            if isinstance(unit, str) and result.ok and result.rtt_ms is not None:
                state.observe_rtt(result.rtt_ms)
                penalty = penalty_ms(state.rtt_ms, self.settings.slow_ms)
                if penalty != self.store.penalty_ms(unit):
                    self.store.set_penalty(unit, penalty)
                    log.info("PoP %s probes average %.0f ms: score penalty %.0f ms", unit,
                             state.rtt_ms, penalty)
                    dirty = True
            dirty |= self._update(unit, state, f"{spec.describe()}: {result.detail}")
        if dirty:
            self.store.publish()

    def _update(self, unit: Unit, pop: PopState, reason: str) -> bool:
        """Bring steering's view of one unit up to date; True if it changed."""
        now = self.clock()
        born = pop.since if pop.changes == 0 else now
        pop.state = pop.verdict()
        new = effective(pop, now, born, self.settings.grace)
        if pop.changes == 0 and new == DOWN and pop.state == UNKNOWN:
            reason = "no verdict within the grace period"
        if isinstance(unit, str):
            old = self.store.probed(unit)
        else:
            old = self.store.record_state(unit[:2], unit[2])
        if new == old:
            return False
        pop.since = now
        pop.changes += 1
        if isinstance(unit, str):
            self.store.set_state(unit, State(new))
        else:
            self.store.set_record_state(unit[:2], unit[2], State(new))
        checks = "; ".join(f"{s.describe()}={c.state}({c.last.detail if c.last else '-'})"
                           for s, c in self.check_states.items() if unit in self.users[s])
        pop_id = unit if isinstance(unit, str) else unit[2]
        log.info('state change %s old=%s new=%s reason="%s" checks="%s"', _unit_name(unit),
                 old, new, reason, checks,
                 extra={"event": "state-change", "pop": pop_id, "old": old, "new": new,
                        "reason": reason})
        if self.on_state is not None:
            what = pop_id if isinstance(unit, str) else _unit_name(unit)[len("pop="):]
            self.on_state(pop_id, f"{what} {old} -> {new}: {reason}")
        return True



__all__ = ["DOWN", "HealthChecker", "HealthSettings"]
