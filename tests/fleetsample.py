"""A made-up fleet as one node sees it, for the tests of what a node shows
of its fleet (metrics, the names alerts and the dashboard use, the status
page) without etcd: :func:`with_fleet` gives a running node's view a
:class:`~geodns.node.FleetView`, built as the server builds it.

Three nodes.  This one, ns1-fra, has lost etcd (it steers by its own
verdicts) and refused the newest revision (etcd:42) so serves etcd:41;
ns2-iad serves the newest; ns3-sin is behind (etcd:40).  They disagree on
fra (two up, one down), agree on iad, and iad is drained fleet-wide.
"""

from __future__ import annotations

from dataclasses import replace

from geodns.fleet.keys import Drain
from geodns.health.states import DOWN, DRAINING, UP
from geodns.health.votes import Policy, tally
from geodns.node import FleetView, NodeView
from geodns.problems import Problem, Where
from geodns.snapshot import Refused

NODE = "ns1-fra"
NEWEST = 42
SERVING = 41
BEHIND = 40
PROBLEM = Problem(Where("etcd:/geodns/zones/m.example.yaml", 5, 8),
                  "A: 'nope' is not an IPv4 address")
ETCD_ERROR = "http://10.0.0.1:2379: connection refused"
DRAIN_WHY = "fiber cut, see ticket 4711"


def node_status(name: str, revision: int, now: float, refused: int | None = None,
                health: str = "fleet") -> dict[str, object]:
    """What a node writes about itself under its lease (geodns.server.app)."""
    errors = [str(PROBLEM)] if refused is not None else []
    return {"node": name, "identity": name, "software": "0.1.0",
            "revision": f"etcd:{revision}", "serials": {"m.example.": revision},
            "error_count": len(errors), "errors": errors,
            "refused": f"etcd:{refused}" if refused is not None else None,
            "health": health, "started_at": now - 3600, "pid": 4242,
            "dns": ["192.0.2.53:53"], "heard_at": now - 4, "lease_ttl": 10}


def sample_fleet(now: float) -> FleetView:
    policy = Policy("percent", 50.0)
    votes = {"fra": tally({NODE: UP, "ns2-iad": UP, "ns3-sin": DOWN}, policy),
             "iad": tally({NODE: UP, "ns2-iad": UP, "ns3-sin": UP}, policy)}
    return FleetView(
        node=NODE, endpoints=("http://10.0.0.1:2379", "http://10.0.0.2:2379"),
        endpoint="http://10.0.0.1:2379", in_contact=False, last_contact=now - 75,
        error=ETCD_ERROR, health="own", policy=str(policy),
        published={"who": "alice@laptop", "when": now - 600, "message": "add www",
                   "changes": ["zone m.example.: changed"], "based_on": SERVING},
        newest=f"etcd:{NEWEST}",
        nodes={NODE: node_status(NODE, SERVING, now, refused=NEWEST, health="own"),
               "ns2-iad": node_status("ns2-iad", NEWEST, now),
               "ns3-sin": node_status("ns3-sin", BEHIND, now)},
        votes=votes, drains={"iad": Drain(DRAINING, "bob@ops", now - 300, DRAIN_WHY)},
        origin="etcd", cache_saved_at=now - 3000, lease_ttl=10)


def with_fleet(view: NodeView) -> NodeView:
    """``view`` as the node of :func:`sample_fleet` would show it: serving
    etcd:41, having refused etcd:42."""
    snap = view.snapshot
    snap = replace(snap, version=replace(snap.version, revision=f"etcd:{SERVING}"),
                   refused=Refused(f"etcd:{NEWEST}", (PROBLEM,), view.now - 30))
    return replace(view, snapshot=snap, fleet=sample_fleet(view.now))


__all__ = ["node_status", "sample_fleet", "with_fleet"]
