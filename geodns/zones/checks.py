"""Checks on a whole zone, once every record is parsed: what no single
record can tell (apex NS, CNAME beside other data, glue, steered fallbacks)."""

from __future__ import annotations

import functools
import re
from array import array

from geodns import names, rdata
from geodns.rdata import AAAA, CNAME, DS, NS, A
from geodns.steering import USE
from geodns.yamlsrc import Problems, Where, YMap, flow_entry
from geodns.zones.model import Zone


def where_of(zone: Zone, owner: bytes, rtype: int) -> Where | None:
    """Where ``owner``'s record set of type ``rtype`` is written: kept with
    it, or for an entry the loader read in C (one line of the usual shape,
    whose record sets keep no position), read again from the zone's source.
    None when neither knows."""
    rrset = zone.nodes.get(owner, {}).get(rtype)
    if rrset is None or rrset.where is not None:
        return None if rrset is None else rrset.where
    source = zone.source
    if source is None:
        return None
    try:
        number = source.starts[source.owners.index(owner)]
    except ValueError:
        return None
    text = source.text
    starts = _line_starts(text)
    if number > len(starts):
        return None
    begin = starts[number - 1]
    end = text.find("\n", begin)
    got = flow_entry(text[begin:] if end < 0 else text[begin:end], number, zone.file)
    if got is None or not isinstance(got[1], YMap):
        return None
    for key, _ in got[1].items:
        if rdata.type_from_text(key.text) == rtype:
            return key.where
    return None


@functools.lru_cache(maxsize=2)
def _line_starts(text: str) -> array[int]:
    """Where each line of ``text`` starts (a problem is rare: made when
    one is found, and kept for the next of the same zone)."""
    return array("L", [0, *(m.end() for m in re.finditer("\n", text))])


def check_zone(zone: Zone, p: Problems, where: Where) -> None:
    """Every whole-zone problem; ``where`` (the top of the file) locates
    those that belong to no record."""
    apex = zone.nodes.get(zone.origin, {})
    if NS not in apex:
        p.add(where, f"the zone apex {zone.name} has no NS records")
    if CNAME in apex:
        p.add(where_of(zone, zone.origin, CNAME) or where, "a CNAME is not allowed at the zone apex")
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
            at = where_of(zone, owner, CNAME) if CNAME in types else steered[CNAME].where
            p.add(at or where, f"{names.to_text(owner)} has a CNAME beside other data ({others})")
        if steered and (owner == zone.origin or any(names.is_subdomain(owner, c) for c in cuts)):
            spec = next(iter(steered.values()))
            p.add(spec.where or where, f"{names.to_text(owner)}: a steered record cannot "
                  "be at the zone apex or at or below a delegation")
        if owner in cuts and owner[0] == 1 and owner[1:2] == b"*":
            p.add(where_of(zone, owner, NS) or where, "a wildcard cannot be a delegation point")
        if DS in types and owner not in cuts:
            p.add(where_of(zone, owner, DS) or where, f"{names.to_text(owner)}: a DS record belongs "
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
                p.add(where_of(zone, cut, NS) or where,
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
