"""Every metric geodns exports, defined in one place.

Names follow ``geodns_<subsystem>_<name>_<unit>``; labels are bounded (zone,
PoP, state, reason, result): never a query name or a client address.

Values are read when Prometheus scrapes, from the objects that already hold
them (the zone store, the health view, the checker, the TCP registry), by a
custom collector: nothing on the query path takes a lock or calls into
prometheus-client.  Each worker has its own registry (one process each).
The ``geodns_fleet_*`` metrics exist only on a node that is part of a fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from geodns import __version__
from geodns.counters import OTHER, TcpClosed
from geodns.fleet.keys import behind, revision_number
from geodns.health.states import DOWN, STATES, UP
from geodns.node import NodeView
from geodns.ratelimit import ACTIONS, CLASSES
from geodns.rdata import type_name
from geodns.resolve import RCODE_NAMES
from geodns.status import record_health
from geodns.wire import COOKIE, DROPPED, MALFORMED, STEERING_MISS, TRUNCATED

# Event counters shown at 0 before they first happen, so that rate() and
# alerts see a series from the start.  Other reasons appear when they occur.
_KNOWN_EVENTS = [(DROPPED, r) for r in ("short", "response", "send-failed")] + \
    [(TRUNCATED, k) for k in ("tc", "additional")] + \
    [(MALFORMED, r) for r in ("question", "label", "qdcount", "record", "opt", "ecs",
                             "cookie", "truncated")] + \
    [(COOKIE, v) for v in ("client-only", "valid", "invalid", "expired", "malformed")]
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One worker's registry: the custom collector plus the few metrics that
    are observed as they happen (probe durations)."""

    def __init__(self, view: Callable[[], NodeView]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(_NodeCollector(view))
        self.probe_duration = Histogram(
            "geodns_health_probe_duration_seconds", "Duration of health probes, by PoP.",
            ["pop"], buckets=PROBE_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    def __init__(self, view: Callable[[], NodeView]) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        view = self.view()
        snap = view.snapshot

        info = GaugeMetricFamily("geodns_build_info", "Always 1; the version as a label.",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        serving = GaugeMetricFamily(
            "geodns_snapshot_info", "Always 1; the revision of configuration and zones "
            "served (files:HASH, later the fleet store's revision) as a label.",
            labels=["revision"])
        serving.add_metric([snap.version.revision], 1)
        yield serving
        yield GaugeMetricFamily(
            "geodns_snapshot_built_timestamp_seconds",
            "When the snapshot being served was built.",
            value=snap.built_at)
        yield GaugeMetricFamily(
            "geodns_config_errors", "Problems in the configuration file on disk (0: it is "
            "served; otherwise the previous configuration is).",
            value=len(snap.config_errors))
        yield GaugeMetricFamily(
            "geodns_config_restart_needed", "Settings changed on disk that take effect only "
            "after a restart (listen, workers, admin address, zones directory, ...).",
            value=len(snap.restart_needed))

        reloads = CounterMetricFamily(
            "geodns_zones_reloads", "Zone file loads, by result.", labels=["result"])
        reloads.add_metric(["success"], snap.reloads_ok)
        reloads.add_metric(["failure"], snap.reloads_failed)
        yield reloads
        last_ok = GaugeMetricFamily("geodns_zones_last_reload_success_timestamp_seconds",
                                    "When a zone file last loaded without problems.")
        if snap.last_success is not None:
            last_ok.add_metric([], snap.last_success)
        yield last_ok

        serial = GaugeMetricFamily("geodns_zones_serial", "SOA serial of each zone served.",
                                   labels=["zone"])
        loaded = GaugeMetricFamily("geodns_zones_last_load_timestamp_seconds",
                                   "When each zone's served version was loaded.",
                                   labels=["zone"])
        errors = GaugeMetricFamily("geodns_zones_errors",
                                   "Problems in the zone file version on disk (0: it is served).",
                                   labels=["zone"])
        for _, entry in sorted(snap.zones.items()):
            if entry.zone is None:
                continue
            serial.add_metric([entry.zone.name], entry.zone.serial)
            loaded.add_metric([entry.zone.name], entry.loaded_at or 0)
            errors.add_metric([entry.zone.name], len(entry.errors))
        yield serial
        yield loaded
        yield errors

        expires = GaugeMetricFamily(
            "geodns_dnssec_signatures_expire_timestamp_seconds",
            "When the first signature served for each signed zone expires (refreshed before: "
            "an alert if it comes near).", labels=["zone"])
        refresh = GaugeMetricFamily(
            "geodns_dnssec_refresh_timestamp_seconds",
            "When each signed zone's next signatures are due to be made again.", labels=["zone"])
        for part in sorted(snap.tables.parts.values(), key=lambda p: p.zone.origin):
            first = part.signer.earliest_expiration if part.signer is not None else None
            if first is not None:
                expires.add_metric([part.zone.name], first)
                refresh.add_metric([part.zone.name], part.due)
        yield expires
        yield refresh

        if snap.geoip.build_epoch is not None:
            yield GaugeMetricFamily(
                "geodns_geoip_build_timestamp_seconds",
                "Build time of the GeoIP database in use.",
                value=float(snap.geoip.build_epoch))

        pops = snap.config.pops
        if pops:
            pop_state = GaugeMetricFamily("geodns_pop_state",
                                      "1 for each PoP's current state, 0 for the others.",
                                      labels=["pop", "state"])
            for pop in pops:
                current = view.health.state(pop)
                for s in STATES:
                    pop_state.add_metric([pop, s], 1.0 if s == current else 0.0)
            yield pop_state
            changes = CounterMetricFamily("geodns_pop_state_changes",
                                          "PoP state changes from health checks.",
                                          labels=["pop"])
            rtt = GaugeMetricFamily("geodns_pop_probe_rtt_seconds",
                                    "Moving average of each PoP's successful probe RTT.",
                                    labels=["pop"])
            failures = CounterMetricFamily("geodns_health_probe_failures",
                                           "Failed health probes, by PoP and reason.",
                                           labels=["pop", "reason"])
            for pop in pops:
                unit = view.probes.get(pop)
                changes.add_metric([pop], unit.changes if unit else 0)
                for reason, n in sorted(unit.failures.items()) if unit else ():
                    failures.add_metric([pop, reason], n)
                if unit is not None and unit.rtt_ms is not None:
                    rtt.add_metric([pop], unit.rtt_ms / 1000)
            yield changes
            yield rtt
            yield failures

        node = view.counters
        yield GaugeMetricFamily(
            "geodns_workers",
            "Worker processes whose counters this scrape adds up.",
            value=node.workers)
        yield GaugeMetricFamily(
            "geodns_tcp_connections", "Open TCP connections.",
            value=node.tcp_open)
        closed = CounterMetricFamily("geodns_tcp_closed_connections",
                                     "TCP connections closed by geodns, by reason.",
                                     labels=["reason"])
        for reason in TcpClosed:  # every reason, so that a rate is 0 before the first
            closed.add_metric([reason.value], node.tcp_closed.get(reason.value, 0))
        yield closed

        queries = CounterMetricFamily(
            "geodns_dns_queries", "Queries answered, by zone, qtype, rcode and transport "
            "(zone \"\" for answers outside every zone's tables: errors, malformed).",
            labels=["zone", "qtype", "rcode", "transport"])
        totals: dict[tuple[str, str, str, str], int] = {}
        steered: dict[tuple[str, str, str], int] = {}
        for (label, qtype, udp), n in node.counts.items():
            zone, rcode = label[0], label[1]
            name = "other" if qtype == OTHER else type_name(qtype)
            key = (zone, name, RCODE_NAMES.get(rcode, str(rcode)), "udp" if udp else "tcp")
            totals[key] = totals.get(key, 0) + n
            if len(label) == 4:  # a steered answer: (zone, rcode, PoP, reason)
                skey = (zone, label[2], label[3])
                steered[skey] = steered.get(skey, 0) + n
        for key, n in sorted(totals.items()):
            queries.add_metric(list(key), n)
        yield queries

        events = dict.fromkeys(_KNOWN_EVENTS, 0) | dict(node.events)  # every series from the start
        for kind, name, help_text, label_name in (
                (DROPPED, "geodns_dns_dropped_packets",
                 "Packets not answered at all, by reason (short: under 12 bytes; response: QR "
                 "set; send-failed: the answer could not be sent).", "reason"),
                (MALFORMED, "geodns_dns_malformed_queries",
                 "Queries answered FORMERR, by what was wrong.", "reason"),
                (TRUNCATED, "geodns_dns_truncated_answers",
                 "UDP answers cut to fit (tc: TC set, only the question sent; additional: "
                 "additional section left out).", "kind"),
                (COOKIE, "geodns_dns_cookies",
                 "Queries with a DNS COOKIE option, by verdict (client-only, valid, invalid, "
                 "expired, malformed); none while cookies are not configured.", "outcome")):
            family = CounterMetricFamily(name, help_text, labels=[label_name])
            for (k, why), n in sorted(events.items()):
                if k == kind:
                    family.add_metric([why], n)
            yield family

        limited = CounterMetricFamily(
            "geodns_rate_limited_answers", "UDP answers over the rate limit (rate_limit), by "
            "class (positive, nodata, nxdomain, referral, error, large) and action (dropped; "
            "truncated: sent with TC and the question only).", labels=["class", "action"])
        for cls in CLASSES:
            for action in ACTIONS:
                limited.add_metric([cls, action], node.limited.get((cls, action), 0))
        yield limited

        decisions = CounterMetricFamily(
            "geodns_steering_decisions", "Steered answers, by zone, first PoP and reason "
            "(proximity, rule, country, default-order, fallback, fail-open, fail-closed); a "
            "decision served from the cache counts each time.",
            labels=["zone", "pop", "reason"])
        for skey, n in sorted(steered.items()):
            decisions.add_metric(list(skey), n)
        yield decisions
        misses = events.get((STEERING_MISS, ""), 0)
        yield CounterMetricFamily(
            "geodns_steering_cache_hits",
            "Steered answers given from a cached decision.",
            value=max(0, sum(steered.values()) - misses))
        yield CounterMetricFamily(
            "geodns_steering_cache_misses",
            "Steered answers that ran steering (not cached yet).",
            value=misses)
        yield GaugeMetricFamily(
            "geodns_steering_cache_entries",
            "Cached steering decisions in the running snapshot.",
            value=node.cache_entries)
        healthy = GaugeMetricFamily(
            "geodns_steering_record_healthy_pops",
            "PoPs a steered record can choose (not down or draining); 0: all its PoPs are "
            "down and its all_down policy answers.", labels=["zone", "record"])
        for rec in record_health(view):
            healthy.add_metric([rec["zone"], f"{rec['name']}/{rec['type']}"],
                               rec["healthy_pops"])
        yield healthy

        admin = CounterMetricFamily("geodns_admin_requests",
                                    "Admin API change requests, by action and result.",
                                    labels=["action", "result"])
        for (action, result), n in sorted(view.admin_requests.items()):
            admin.add_metric([action, result], n)
        yield admin
        yield from _fleet_metrics(view)
        yield from _anycast_metrics(view)


def _anycast_metrics(view: NodeView) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The node's anycast routes; nothing when it announces none."""
    anycast = view.anycast
    if anycast is None:
        return
    yield GaugeMetricFamily(
        "geodns_anycast_announced", "1 while this node announces its anycast prefixes (it is "
        "fit to serve and not drained); 0: withdrawn (/status anycast says why).",
        value=1.0 if anycast.announced else 0.0)
    changes = CounterMetricFamily("geodns_anycast_route_changes",
                                  "Announcements and withdrawals of the anycast prefixes.",
                                  labels=["action"])
    for action, n in sorted(anycast.changes.items()):
        changes.add_metric([action], n)
    yield changes
    yield CounterMetricFamily(
        "geodns_anycast_self_check_failures", "Self-check queries to this node's own "
        "listening addresses that failed.", value=anycast.self_check_failures)
    yield GaugeMetricFamily(
        "geodns_anycast_node_drained", "1 while an operator has drained this node from "
        "anycast (geodns node drain).", value=1.0 if anycast.drained else 0.0)


_ORIGINS = ("etcd", "cache", "none")


def _fleet_metrics(view: NodeView) -> Iterator[GaugeMetricFamily]:
    """What this node knows of its fleet; nothing when it is not in one.
    Node names are never labels: every node exports its own revisions, and
    the fleet-wide figures are counts (votes, nodes behind)."""
    fleet = view.fleet
    if fleet is None:
        return
    snap = view.snapshot
    yield GaugeMetricFamily(
        "geodns_fleet_etcd_up", "1 while etcd answers this node (within a lease time); 0: it "
        "keeps serving what it has, sees no publish or drain and steers by its own verdicts.",
        value=1.0 if fleet.in_contact else 0.0)
    contact = GaugeMetricFamily("geodns_fleet_last_contact_timestamp_seconds",
                                "When etcd last answered this node.")
    if fleet.last_contact is not None:
        contact.add_metric([], fleet.last_contact)
    yield contact
    yield GaugeMetricFamily(
        "geodns_fleet_own_verdicts", "1 when this node steers by its own probes' verdicts "
        "(etcd unreachable); 0: by the fleet's verdicts from every node's votes.",
        value=1.0 if fleet.health == "own" else 0.0)
    origin = GaugeMetricFamily(
        "geodns_fleet_documents_origin", "1 for where the served configuration and zones "
        "came from (etcd; cache: the local copy, etcd not read since the start; none), 0 for "
        "the others.", labels=["origin"])
    for o in _ORIGINS:
        origin.add_metric([o], 1.0 if fleet.origin == o else 0.0)
    yield origin
    revision = GaugeMetricFamily(
        "geodns_fleet_revision", "etcd revision of the documents (configuration and zones) "
        "this node serves (which=serving) and of the newest published that it has seen "
        "(which=newest).", labels=["which"])
    for which, text in (("serving", snap.version.revision), ("newest", fleet.newest)):
        number = revision_number(text)
        if number is not None:
            revision.add_metric([which], number)
    yield revision
    yield GaugeMetricFamily(
        "geodns_fleet_revision_refused", "1 when the newest published revision has problems "
        "and is not served (this node keeps serving the one before).",
        value=1.0 if snap.refused is not None else 0.0)
    published = GaugeMetricFamily("geodns_fleet_published_timestamp_seconds",
                                  "When the newest revision was published (geodns publish).")
    when = fleet.published.get("when")
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        published.add_metric([], float(when))
    yield published
    yield GaugeMetricFamily(
        "geodns_fleet_nodes", "Live nodes of the fleet (their status is in etcd under a "
        "lease), this one included.", value=len(fleet.nodes))
    yield GaugeMetricFamily(
        "geodns_fleet_nodes_behind", "Live nodes that serve an older revision than the newest "
        "(one that refused the newest is not counted).",
        value=sum(1 for doc in fleet.nodes.values() if behind(doc, fleet.newest)))
    votes = GaugeMetricFamily("geodns_fleet_votes",
                              "Nodes voting a PoP up or down (abstentions left out).",
                              labels=["pop", "state"])
    split = GaugeMetricFamily("geodns_fleet_disagreement",
                              "1 when the nodes' votes on a PoP differ (some up, some down).",
                              labels=["pop"])
    for pop, t in sorted(fleet.votes.items()):
        for s in (UP, DOWN):
            votes.add_metric([pop, s], sum(1 for v in t.votes.values() if v == s))
        split.add_metric([pop], 1.0 if t.disagree else 0.0)
    yield votes
    yield split
    drains = GaugeMetricFamily(
        "geodns_fleet_drain_timestamp_seconds", "When each fleet-wide administrative state "
        "(geodns drain --etcd) was set, with that state; no series: no fleet-wide drain.",
        labels=["pop", "state"])
    for pop, d in sorted(fleet.drains.items()):
        drains.add_metric([pop, d.state], d.when)
    yield drains
