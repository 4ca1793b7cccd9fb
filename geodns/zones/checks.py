"""Checks on a whole zone, once every record is parsed: what no single
record can tell (apex NS, CNAME beside other data, glue, steered fallbacks)."""

from __future__ import annotations

from geodns import names, rdata
from geodns.rdata import AAAA, CNAME, DS, NS, A
from geodns.steering import USE
from geodns.yamlsrc import Problems, Where
from geodns.zones.model import Zone


def check_zone(zone: Zone, p: Problems, where: Where) -> None:
    """Every whole-zone problem; ``where`` (the top of the file) locates
    those that belong to no record."""
    apex = zone.nodes.get(zone.origin, {})
    if NS not in apex:
        p.add(where, f"the zone apex {zone.name} has no NS records")
    if CNAME in apex:
        p.add(apex[CNAME].where or where, "a CNAME is not allowed at the zone apex")
    cuts = zone.delegations()
    steered_sets = zone.steered
    for owner, types in zone.nodes.items():
        if owner not in steered_sets and (len(types) == 1 or CNAME not in types) and \
                DS not in types and owner not in cuts:
            continue  # (the usual name: nothing below applies to it)
        steered = steered_sets.get(owner, {})
        all_types = set(types) | set(steered)
        if CNAME in all_types and len(all_types) > 1:
            others = ", ".join(rdata.type_name(t) for t in sorted(all_types) if t != CNAME)
            at = types[CNAME].where if CNAME in types else steered[CNAME].where
            p.add(at or where, f"{names.to_text(owner)} has a CNAME beside other data ({others})")
        if steered and (owner == zone.origin or any(names.is_subdomain(owner, c) for c in cuts)):
            spec = next(iter(steered.values()))
            p.add(spec.where or where, f"{names.to_text(owner)}: a steered record cannot "
                  "be at the zone apex or at or below a delegation")
        if owner in cuts and owner[0] == 1 and owner[1:2] == b"*":
            p.add(types[NS].where or where, "a wildcard cannot be a delegation point")
        if DS in types and owner not in cuts:
            p.add(types[DS].where or where, f"{names.to_text(owner)}: a DS record belongs "
                  "at a delegation (a name below the apex with NS records): it is the "
                  "parent's side of the cut (RFC 4035 2.4)")
    check_steering(zone, p, where)
    # Delegations: in-bailiwick NS targets need glue addresses.
    for cut in cuts:
        for rd in zone.nodes[cut][NS].rdatas:
            target = rd.target
            if target is None or not names.is_subdomain(target, cut):
                continue
            target_types = zone.nodes.get(target, {})
            if A not in target_types and AAAA not in target_types:
                p.add(zone.nodes[cut][NS].where or where,
                      f"delegation {names.to_text(cut)}: name server "
                      f"{names.to_text(target)} is inside the delegated zone and needs "
                      "glue (an A or AAAA record for it in this zone)")


def check_steering(zone: Zone, p: Problems, where: Where) -> None:
    """Cross-record checks: ``all_down: use`` must name a steered record of
    the same type in this zone, and such fallbacks must not loop."""
    for owner, types in zone.steered.items():
        for rtype, spec in types.items():
            if spec.all_down != USE or spec.use is None:
                continue
            seen = [owner]
            cur = spec
            while cur.all_down == USE and cur.use is not None:
                target = zone.steered.get(cur.use, {}).get(rtype)
                if target is None:
                    p.add(cur.where or where, f"all_down use: {names.to_text(cur.use)} has no "
                          f"steered {rdata.type_name(rtype)} record in this zone")
                    break
                if cur.use in seen:
                    chain = " -> ".join(names.to_text(n) for n in [*seen, cur.use])
                    p.add(spec.where or where, f"fallback loop: {chain}")
                    break
                seen.append(cur.use)
                cur = target
