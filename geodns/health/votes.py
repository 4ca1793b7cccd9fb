"""Fleet health: one verdict per PoP from every node's vote.  Pure.

Theory of operation.  Each node of a fleet probes every PoP itself; its
verdicts (after rise/fall, grace and flap damping, :mod:`geodns.health.state`)
are its *votes*.  A node votes ``up`` or ``down`` on a PoP, or abstains
(``unknown``: no verdict yet, or the PoP has no checks).  Every node reads
the same votes from the fleet store and applies the same :class:`Policy`, so
every node reaches the same verdict:

* ``N`` (an integer): up when at least N voting nodes say up; with fewer than
  N voters, when all of them do (a fleet that shrinks does not turn PoPs down
  by arithmetic);
* ``P%``: up when *more than* P % of the voting nodes say up (Route 53's
  "healthy when more than 18 % of checkers say so" is ``18%``);
* ``any``: up when one voting node says up; ``all``: when every one does.

A PoP nobody votes on is unknown (which steering treats as up).  The same
policy applies to steered records' own checks.  The fleet's score penalty
for a slow PoP is the median of the voters' penalties.  Drains: a fleet-wide
drain applies everywhere; a node's own override (its admin API, its state
file) wins over it on that node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import median

from geodns.health.states import DOWN, UNKNOWN, UP, State
from geodns.health.view import HealthView, Record

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$", re.ASCII)


@dataclass(frozen=True, slots=True)
class Policy:
    kind: str  # "count", "percent", "any", "all"
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind == "count":
            return str(int(self.value))
        if self.kind == "percent":
            return f"{self.value:g}%"
        return self.kind

    def decide(self, up: int, down: int) -> State:
        """The verdict from ``up`` and ``down`` votes."""
        voters = up + down
        if voters == 0:
            return UNKNOWN
        if self.kind == "any":
            ok = up >= 1
        elif self.kind == "all":
            ok = down == 0
        elif self.kind == "count":
            ok = up >= min(int(self.value), voters)
        else:
            ok = up * 100 > self.value * voters
        return UP if ok else DOWN


DEFAULT_POLICY = Policy("percent", 50.0)


def parse_policy(text: str) -> Policy:
    """``2``, ``18%``, ``any`` or ``all``; ValueError says what is accepted."""
    word = text.strip().lower()
    if word in ("any", "all"):
        return Policy(word)
    if word.isascii() and word.isdigit() and int(word) >= 1:
        return Policy("count", int(word))
    m = _PERCENT.match(word)
    if m and 0 <= float(m.group(1)) < 100:
        return Policy("percent", float(m.group(1)))
    raise ValueError(f"{text!r}: give a number of nodes (1 or more), a percentage below "
                     "100 such as '18%' (up when more than that share says up), 'any' or 'all'")


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes on one PoP (or one record at a PoP) and what they add up to."""

    votes: Mapping[str, State]  # node -> its vote (abstentions left out)
    verdict: State

    @property
    def disagree(self) -> bool:
        return len(set(self.votes.values())) > 1


def tally(votes: Mapping[str, State], policy: Policy) -> Tally:
    cast = {n: s for n, s in votes.items() if s in (UP, DOWN)}
    up = sum(1 for s in cast.values() if s == UP)
    return Tally(cast, policy.decide(up, len(cast) - up))


def fleet_view(votes: Mapping[str, HealthView], policy: Policy,
               drains: Mapping[str, State], own_admin: Mapping[str, State]) -> HealthView:
    """The view every node serves: the verdicts of ``votes`` (node -> the
    view that node's probes made) under ``policy``, the fleet's ``drains``,
    and this node's own overrides, which win."""
    pops = sorted({p for v in votes.values() for p in v.states})
    states = {}
    for pop in pops:
        t = tally({n: v.probed(pop) for n, v in votes.items()}, policy)
        if t.verdict != UNKNOWN:
            states[pop] = t.verdict
    penalties = {}
    for pop in pops:
        cast = [v.penalty_ms(pop) for v in votes.values() if v.probed(pop) in (UP, DOWN)]
        if cast and median(cast):
            penalties[pop] = float(median(cast))
    records: dict[Record, dict[str, State]] = {}
    for record, pop in _record_pops(votes.values()):
        t = tally({n: v.record_state(record, pop) for n, v in votes.items()}, policy)
        if t.verdict != UNKNOWN:
            records.setdefault(record, {})[pop] = t.verdict
    return HealthView(states, penalties, {**drains, **own_admin}, records)


def _record_pops(views: Iterable[HealthView]) -> list[tuple[Record, str]]:
    return sorted({(r, p) for v in views for r, per in v.records.items() for p in per})


def tallies(votes: Mapping[str, HealthView], policy: Policy) -> dict[str, Tally]:
    """Per PoP: who voted what, and the verdict (for status pages)."""
    pops = sorted({p for v in votes.values() for p in v.states})
    return {p: tally({n: v.probed(p) for n, v in votes.items()}, policy) for p in pops}


__all__ = ["DEFAULT_POLICY", "Policy", "Tally", "fleet_view", "parse_policy", "tallies",
           "tally"]
