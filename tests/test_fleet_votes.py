"""Fleet health verdicts from every node's votes (geodns.health.votes).  Pure:
policies, tallies, and the view every node of a fleet serves."""

from __future__ import annotations

import pytest

from geodns.health.states import DOWN, DRAINING, UNKNOWN, UP, State
from geodns.health.view import HealthView
from geodns.health.votes import (
    DEFAULT_POLICY,
    Policy,
    fleet_view,
    parse_policy,
    tallies,
    tally,
)

WWW = (b"www.example.", 1)  # a steered record: owner, type A


# -- parse_policy ---------------------------------------------------------------------

@pytest.mark.parametrize("text,policy,shown", [
    ("2", Policy("count", 2), "2"),
    ("1", Policy("count", 1), "1"),
    (" 3 ", Policy("count", 3), "3"),
    ("18%", Policy("percent", 18), "18%"),
    ("18 %", Policy("percent", 18), "18%"),
    ("50.5%", Policy("percent", 50.5), "50.5%"),
    ("0%", Policy("percent", 0), "0%"),
    ("99.9%", Policy("percent", 99.9), "99.9%"),
    ("any", Policy("any"), "any"),
    ("ALL", Policy("all"), "all"),
    (" all ", Policy("all"), "all"),
])
def test_parse_policy_accepts(text: str, policy: Policy, shown: str) -> None:
    got = parse_policy(text)
    assert got == policy
    assert str(got) == shown
    assert parse_policy(str(got)) == got  # what /status shows reads back


@pytest.mark.parametrize("text", ["0", "100%", "150%", "-1", "-5%", "abc", "", "1.5",
                                  "2 nodes", "most", "%",
                                  "²", "\u0663", "\u0662\u0660%"])  # digits, but not ASCII
def test_parse_policy_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_policy(text)
    message = str(exc.value)
    assert repr(text) in message
    assert "'18%'" in message and "'any'" in message and "'all'" in message


def test_default_policy_is_a_majority() -> None:
    assert parse_policy("50%") == DEFAULT_POLICY
    assert DEFAULT_POLICY.decide(2, 1) == UP
    assert DEFAULT_POLICY.decide(1, 1) == DOWN


# -- Policy.decide --------------------------------------------------------------------

@pytest.mark.parametrize("policy,up,down,verdict", [
    # N: at least N voters say up ...
    ("2", 2, 1, UP), ("2", 1, 2, DOWN), ("2", 3, 0, UP), ("2", 2, 5, UP),
    # ... and with fewer voters than N, all of them must
    ("3", 2, 0, UP), ("3", 1, 1, DOWN), ("3", 1, 0, UP), ("3", 0, 1, DOWN),
    ("5", 4, 0, UP), ("5", 4, 1, DOWN),
    # P%: strictly more than P % of the voters
    ("50%", 1, 1, DOWN), ("50%", 2, 1, UP), ("50%", 1, 0, UP), ("50%", 0, 1, DOWN),
    ("18%", 1, 4, UP),  # 20 % > 18 %
    ("18%", 1, 5, DOWN),  # 16.7 %
    ("20%", 1, 4, DOWN),  # 20 % is not more than 20 %
    ("0%", 1, 9, UP), ("0%", 0, 3, DOWN),
    ("99%", 99, 1, DOWN), ("99%", 100, 0, UP),
    # any / all
    ("any", 1, 5, UP), ("any", 0, 3, DOWN),
    ("all", 3, 0, UP), ("all", 2, 1, DOWN), ("all", 1, 0, UP),
])
def test_policy_decides(policy: str, up: int, down: int, verdict: State) -> None:
    assert parse_policy(policy).decide(up, down) == verdict


@pytest.mark.parametrize("policy", ["1", "3", "18%", "0%", "any", "all"])
def test_no_voters_is_unknown(policy: str) -> None:
    assert parse_policy(policy).decide(0, 0) == UNKNOWN


# -- tally ------------------------------------------------------------------------------

@pytest.mark.parametrize("votes,policy,cast,verdict,disagree", [
    ({"n1": UP, "n2": UP, "n3": UP}, "2", {"n1": UP, "n2": UP, "n3": UP}, UP, False),
    ({"n1": UP, "n2": UP, "n3": DOWN}, "2", {"n1": UP, "n2": UP, "n3": DOWN}, UP, True),
    ({"n1": UP, "n2": UNKNOWN, "n3": DOWN}, "all", {"n1": UP, "n3": DOWN}, DOWN, True),
    # abstentions are left out: they neither agree nor disagree
    ({"n1": UP, "n2": UNKNOWN}, "2", {"n1": UP}, UP, False),
    ({"n1": UNKNOWN, "n2": UNKNOWN}, "1", {}, UNKNOWN, False),
    ({}, "any", {}, UNKNOWN, False),
    # a drain is not a vote
    ({"n1": DRAINING, "n2": DOWN}, "any", {"n2": DOWN}, DOWN, False),
])
def test_tally(votes: dict[str, State], policy: str, cast: dict[str, State], verdict: State,
               disagree: bool) -> None:
    t = tally(votes, parse_policy(policy))
    assert dict(t.votes) == cast
    assert t.verdict == verdict
    assert t.disagree is disagree


# -- fleet_view -------------------------------------------------------------------------

def views(**per_node: dict[str, State]) -> dict[str, HealthView]:
    """node -> the view its own probes made (PoP -> its verdict)."""
    return {node: HealthView(states) for node, states in per_node.items()}


@pytest.mark.parametrize("votes,policy,expected", [
    # one dissenting node of three does not turn a PoP down under "2"
    (views(n1={"fra": UP}, n2={"fra": UP}, n3={"fra": DOWN}), "2", UP),
    # a PoP two nodes of three see down is down
    (views(n1={"fra": DOWN}, n2={"fra": DOWN}, n3={"fra": UP}), "2", DOWN),
    (views(n1={"fra": DOWN}, n2={"fra": DOWN}, n3={"fra": DOWN}), "any", DOWN),
    # abstentions (no verdict yet) do not count as down ...
    (views(n1={"fra": UP}, n2={"fra": UNKNOWN}, n3={}), "2", UP),
    (views(n1={"fra": UP}, n2={"fra": UNKNOWN}, n3={"fra": UNKNOWN}), "all", UP),
    (views(n1={"fra": UP}, n2={"fra": UNKNOWN}, n3={"fra": DOWN}), "all", DOWN),
    # ... nor as up
    (views(n1={"fra": DOWN}, n2={"fra": UNKNOWN}, n3={"fra": UNKNOWN}), "any", DOWN),
    (views(n1={"fra": UP}, n2={"fra": UP}, n3={"fra": DOWN}, n4={"fra": UNKNOWN}), "50%", UP),
    (views(n1={"fra": UP}, n2={"fra": DOWN}, n3={"fra": UNKNOWN}), "50%", DOWN),
    # nobody voted: unknown (which steering treats as up)
    (views(n1={"fra": UNKNOWN}, n2={"fra": UNKNOWN}), "1", UNKNOWN),
    (views(n1={}, n2={}), "1", UNKNOWN),
    ({}, "1", UNKNOWN),
])
def test_fleet_view_verdicts(votes: dict[str, HealthView], policy: str,
                             expected: State) -> None:
    view = fleet_view(votes, parse_policy(policy), {}, {})
    assert view.state("fra") == expected
    assert view.probed("fra") == expected
    if expected == UNKNOWN:
        assert "fra" not in view.states  # left out, not stored as unknown


def test_fleet_view_counts_each_pop_on_its_own() -> None:
    votes = views(n1={"fra": UP, "iad": DOWN, "sin": UP},
                  n2={"fra": UP, "iad": DOWN},
                  n3={"fra": DOWN, "iad": UP, "sin": UNKNOWN})
    view = fleet_view(votes, parse_policy("2"), {}, {})
    assert dict(view.states) == {"fra": UP, "iad": DOWN, "sin": UP}


@pytest.mark.parametrize("policy,record_votes,expected", [
    ("2", {"n1": UP, "n2": UP, "n3": DOWN}, UP),
    ("2", {"n1": DOWN, "n2": DOWN, "n3": UP}, DOWN),
    ("all", {"n1": UP, "n2": UP, "n3": DOWN}, DOWN),
    ("any", {"n1": DOWN, "n2": UNKNOWN, "n3": UP}, UP),
    ("2", {"n1": UP, "n2": UNKNOWN, "n3": UNKNOWN}, UP),
    ("2", {"n1": UNKNOWN, "n2": UNKNOWN, "n3": UNKNOWN}, UNKNOWN),
])
def test_record_checks_use_the_same_policy(policy: str, record_votes: dict[str, State],
                                           expected: State) -> None:
    votes = {n: HealthView({"fra": UP}, records={WWW: {"fra": s, "iad": UP}})
             for n, s in record_votes.items()}
    view = fleet_view(votes, parse_policy(policy), {}, {})
    assert view.record_state(WWW, "fra") == expected
    assert view.record_state(WWW, "iad") == UP
    assert view.state("fra") == UP  # the PoP's own checks are counted apart
    if expected == UNKNOWN:
        assert "fra" not in view.records[WWW]


@pytest.mark.parametrize("penalties,expected", [
    ({"n1": 100.0, "n2": 200.0, "n3": 900.0}, 200.0),  # one slow node does not set it
    ({"n1": 100.0, "n2": 200.0}, 150.0),
    ({"n1": 0.0, "n2": 0.0, "n3": 500.0}, None),  # median 0: no penalty
    ({"n1": 300.0}, 300.0),
])
def test_fleet_penalty_is_the_median_of_the_voters(penalties: dict[str, float],
                                                   expected: float | None) -> None:
    votes = {n: HealthView({"fra": UP}, {"fra": p} if p else {}) for n, p in penalties.items()}
    view = fleet_view(votes, DEFAULT_POLICY, {}, {})
    assert view.penalties.get("fra") == expected
    assert view.penalty_ms("fra") == (expected or 0.0)


def test_an_abstaining_nodes_penalty_is_not_counted() -> None:
    votes = {"n1": HealthView({"fra": UP}, {"fra": 100.0}),
             "n2": HealthView({"fra": UNKNOWN}, {"fra": 5000.0}),
             "n3": HealthView({}, {"fra": 5000.0})}
    assert fleet_view(votes, DEFAULT_POLICY, {}, {}).penalties == {"fra": 100.0}


def test_fleet_drains_apply_and_a_nodes_own_override_wins() -> None:
    votes = views(n1={"fra": UP, "iad": UP}, n2={"fra": UP, "iad": UP})
    drains = {"fra": DRAINING, "iad": DRAINING}
    view = fleet_view(votes, parse_policy("2"), drains, {})
    assert view.state("fra") == DRAINING and view.state("iad") == DRAINING
    assert view.probed("fra") == UP  # what it returns to when undrained

    own = {"iad": UP, "sin": DRAINING}
    view = fleet_view(votes, parse_policy("2"), drains, own)
    assert view.state("fra") == DRAINING  # the fleet's drain
    assert view.state("iad") == UP  # this node's own override wins over it
    assert view.state("sin") == DRAINING  # and applies where the fleet says nothing
    assert dict(view.admin) == {"fra": DRAINING, "iad": UP, "sin": DRAINING}
    # the inputs are not changed
    assert drains == {"fra": DRAINING, "iad": DRAINING}


def test_votes_carry_no_drains() -> None:
    """A node's drain in the view it votes with is not counted by the others
    (FleetMember.set_votes strips it; fleet_view reads only probed states)."""
    votes = {"n1": HealthView({"fra": UP}, admin={"fra": DRAINING}),
             "n2": HealthView({"fra": UP})}
    view = fleet_view(votes, parse_policy("2"), {}, {})
    assert view.state("fra") == UP and not view.admin


# -- tallies (status pages) ----------------------------------------------------------

def test_tallies_per_pop_with_disagreement() -> None:
    votes = views(n1={"fra": UP, "iad": UP, "sin": UNKNOWN},
                  n2={"fra": UP, "iad": DOWN},
                  n3={"fra": UNKNOWN, "iad": UP})
    t = tallies(votes, parse_policy("2"))
    assert sorted(t) == ["fra", "iad", "sin"]
    assert t["fra"].verdict == UP and not t["fra"].disagree
    assert dict(t["fra"].votes) == {"n1": UP, "n2": UP}
    assert t["iad"].verdict == UP and t["iad"].disagree
    assert dict(t["iad"].votes) == {"n1": UP, "n2": DOWN, "n3": UP}
    assert t["sin"].verdict == UNKNOWN and not t["sin"].disagree and not t["sin"].votes
    # the same verdicts as the view served
    view = fleet_view(votes, parse_policy("2"), {}, {})
    assert {p: x.verdict for p, x in t.items() if x.verdict != UNKNOWN} == dict(view.states)


def test_tallies_all_down_agree() -> None:
    t = tallies(views(n1={"fra": DOWN}, n2={"fra": DOWN}), parse_policy("any"))
    assert t["fra"].verdict == DOWN and not t["fra"].disagree
