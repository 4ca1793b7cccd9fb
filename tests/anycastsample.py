"""A made-up state of a node's anycast routes, for the tests of what a node
shows of them (metrics, the names alerts use, the status page) without a BGP
speaker: :func:`with_anycast` gives a running node's view an
:class:`~geodns.anycast.AnycastView`, as geodns.server.anycast builds it.

The node speaks through BIRD and has withdrawn its two prefixes five minutes
ago: an operator drained it for a BIRD upgrade, BIRD is stopped (so birdc
could not be told), and its self-check times out too.  It has announced
three times and withdrawn twice since it started.
"""

from __future__ import annotations

from dataclasses import replace

from geodns.anycast import AnycastView
from geodns.node import NodeView

PREFIXES = ("192.0.2.53/32", "2001:db8::53/128")
CHECK_ERROR = "192.0.2.53:53: no answer within 0.5 s"
DRAIN_WHO = "dave@ops"
DRAIN_WHY = "BIRD upgrade, ticket 4712"
SPEAKER_ERROR = ("birdc -s /run/bird/bird.ctl disable geodns_anycast4: "
                 "Unable to connect to server control socket")


def sample_anycast(now: float) -> AnycastView:
    return AnycastView(
        speaker="bird", prefixes=PREFIXES, announced=False, since=now - 300,
        why=(f"self-check failed: {CHECK_ERROR}", f"node drained: {DRAIN_WHY}"),
        changes={"announce": 3, "withdraw": 2}, self_check=CHECK_ERROR,
        self_check_failures=7,
        drained={"who": DRAIN_WHO, "why": DRAIN_WHY, "when": now - 300},
        speaker_error=SPEAKER_ERROR, watchers=0)


def with_anycast(view: NodeView) -> NodeView:
    """``view`` with the routes of :func:`sample_anycast`."""
    return replace(view, anycast=sample_anycast(view.now))


__all__ = ["sample_anycast", "with_anycast"]
