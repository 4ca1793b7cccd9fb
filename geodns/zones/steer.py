"""Steered record sets in zone files: parsing and validation.

A steered record set is a record type whose mapping has a ``steer`` key::

    www:
      A:
        ttl: 30                      # default 30 for steered records
        steer:
          pops: {fra: 192.0.2.1, iad: [198.51.100.1, 198.51.100.2]}
          answers: 1                 # how many PoPs to answer with
          rules:                     # first match restricts the candidates
            - {networks: [203.0.113.0/24], pops: [fra]}
            - {places: [NA-US-CA, SA], pops: [iad]}
          all_down: fail-open        # or servfail, nodata, {answer: [...]}, {use: other}
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

from geodns import names, rdata
from geodns.geo import IPNetwork
from geodns.health.parse import parse_checks
from geodns.health.spec import CheckSpec
from geodns.rdata import AAAA, CNAME, HTTPS, SVCB, A, RData
from geodns.steering import ANSWER, FAIL_OPEN, NODATA, SERVFAIL, USE, AllDown, Rule, SteerSpec
from geodns.yamlsrc import (
    Problems,
    YMap,
    YNode,
    YScalar,
    YSeq,
    as_int,
    as_list,
    as_str,
    expect_map,
    unknown_keys,
)
from geodns.zones.values import parse_value

STEERABLE = (A, AAAA, CNAME, HTTPS, SVCB)
DEFAULT_STEERED_TTL = 30
CONTINENTS = {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
_PLACE = re.compile(r"^[A-Z]{2}(-[A-Z]{2}(-[A-Z0-9]{1,3})?)?$")


def steer_spec(owner: bytes, rtype: int, tkey: YScalar, tval: YMap, *, origin: bytes,
               pops: Collection[str], check_defaults: dict[str, float],
               p: Problems) -> SteerSpec | None:
    """The steered record set ``tkey: tval`` at ``owner`` (names relative to
    ``origin``), or None with its problems recorded.  ``pops`` are the PoPs
    the server configuration defines."""
    before = len(p)
    what = f"steered {tkey.text}"
    unknown_keys(tval, {"ttl", "steer"}, what, p)
    if rtype not in STEERABLE:
        p.add(tkey.where, "only A, AAAA, CNAME, HTTPS and SVCB records can be steered, "
              f"not {tkey.text}")
        return None
    if not pops:
        p.add(tval.where, "steered record, but the server configuration defines no PoPs "
              "('pops:')")
        return None
    ttl = DEFAULT_STEERED_TTL
    tn = tval.get("ttl")
    if tn is not None:
        written = as_int(tn, "ttl", p, 0, rdata.MAX_TTL)
        if written is not None:  # else a problem is recorded and no spec returned
            ttl = written
    sm = expect_map(tval.get("steer"), "steer", p)
    if sm is None:
        return None
    unknown_keys(sm, {"pops", "answers", "rules", "all_down", "checks"}, "steer", p)

    values: dict[str, tuple[RData, ...]] = {}
    pm = expect_map(sm.get("pops"), "steer pops", p)
    if pm is None:
        if sm.get("pops") is None:
            p.add(sm.where, "steer needs 'pops': the answer at each PoP")
        return None
    for key, val in pm.items:
        if key.text not in pops:
            p.add(key.where, f"unknown PoP {key.text!r} (configured: "
                  f"{', '.join(sorted(pops))})")
            continue
        rds = []
        for item in as_list(val):
            rd = parse_value(rtype, item, origin, p)
            if rd is not None:
                rds.append(rd)
        if rtype == CNAME and len(rds) > 1:
            p.add(val.where, "a steered CNAME has one target per PoP")
        if rds:
            values[key.text] = tuple(rds)

    answers = 1
    an = sm.get("answers")
    if an is not None:
        written = as_int(an, "answers", p, 1, 64)
        if written is not None:
            answers = written
        if rtype == CNAME and answers != 1:
            p.add(an.where, "a steered CNAME answers with one PoP")
        elif values and answers > len(values):
            p.add(an.where, f"answers: {answers} is more than the {len(values)} PoPs listed")

    rules = _rules(sm.get("rules"), values, pops, p)
    all_down: str = FAIL_OPEN
    fallback: tuple[RData, ...] = ()
    use: bytes | None = None
    ad = sm.get("all_down")
    if ad is not None:
        all_down, fallback, use = _all_down(ad, rtype, origin, p)
    checks: dict[str, tuple[CheckSpec, ...]] = {}
    cm = expect_map(sm.get("checks"), "steer checks", p)
    if cm is not None:
        for key, val in cm.items:
            if key.text not in values:
                p.add(key.where, f"checks for PoP {key.text!r}, which has no answer in 'pops'")
                continue
            specs = parse_checks(val, key.text, dict(check_defaults), p)
            if specs:
                checks[key.text] = tuple(specs)
    if len(p) != before:
        return None
    return SteerSpec(owner, rtype, ttl, values, answers, tuple(rules), AllDown(all_down), fallback,
                     use, tkey.where, checks)


def _rules(node: YNode | None, values: dict[str, tuple[RData, ...]], all_pops: Collection[str],
           p: Problems) -> list[Rule]:
    if node is None:
        return []
    if not isinstance(node, YSeq):
        p.add(node.where, "rules must be a list")
        return []
    rules: list[Rule] = []
    for item in node.items:
        m = expect_map(item, "rule", p)
        if m is None:
            continue
        unknown_keys(m, {"networks", "places", "pops"}, "rule", p)
        networks: list[IPNetwork] = []
        for n in as_list(m.get("networks")):
            text = as_str(n, "network", p)
            if text is None:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                p.add(n.where, f"rule network: {exc}")
        places: set[str] = set()
        for n in as_list(m.get("places")):
            text = as_str(n, "place", p)
            if text is None:
                continue
            code = text.upper()
            if not _PLACE.match(code) or code.split("-")[0] not in CONTINENTS:
                p.add(n.where, f"place {text!r} is not a code like EU, NA-US or NA-US-CA "
                      f"(continents: {', '.join(sorted(CONTINENTS))})")
                continue
            places.add(code)
        pops: list[str] = []
        pn = m.get("pops")
        if pn is None:
            p.add(m.where, "a rule needs 'pops': the PoPs it allows, in order")
            continue
        for x in as_list(pn):
            pid = as_str(x, "PoP", p)
            if pid is None:
                continue
            if pid not in all_pops:
                p.add(x.where, f"unknown PoP {pid!r}")
            elif pid not in values:
                p.add(x.where, f"PoP {pid!r} has no answer in this record's 'pops'")
            else:
                pops.append(pid)
        rule = Rule(tuple(pops), tuple(networks), frozenset(places), m.where)
        reason = _never_matches(rule, rules)
        if reason:
            p.add(m.where, f"this rule can never match: {reason}")
        rules.append(rule)
    return rules


def _never_matches(rule: Rule, earlier: list[Rule]) -> str | None:
    for i, prev in enumerate(earlier, 1):
        where = f"line {prev.where.line}" if prev.where else f"rule {i}"
        if not prev.networks and not prev.places:
            return f"the rule at {where} matches every client"
        # Earlier rule matches a superset of what this one matches.
        nets_covered = not prev.networks or (bool(rule.networks) and all(
            any(_within(n, q) for q in prev.networks) for n in rule.networks))
        places_covered = not prev.places or (bool(rule.places) and all(
            any(code == q or code.startswith(q + "-") for q in prev.places)
            for code in rule.places))
        if nets_covered and places_covered:
            return f"every client it matches is matched first by the rule at {where}"
    return None


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def _all_down(node: YNode, rtype: int, origin: bytes,
              p: Problems) -> tuple[str, tuple[RData, ...], bytes | None]:
    if isinstance(node, YScalar):
        if node.text in (FAIL_OPEN, SERVFAIL, NODATA):
            return node.text, (), None
        p.add(node.where, "all_down must be fail-open, servfail, nodata, {answer: [...]} "
              "or {use: NAME}")
        return FAIL_OPEN, (), None
    m = expect_map(node, "all_down", p)
    if m is None:
        return FAIL_OPEN, (), None
    unknown_keys(m, {"answer", "use"}, "all_down", p)
    answer, use = m.get("answer"), m.get("use")
    if answer is not None:
        if not as_list(answer):
            p.add(answer.where, "all_down answer needs at least one value")
        rds = [parse_value(rtype, item, origin, p) for item in as_list(answer)]
        return ANSWER, tuple(r for r in rds if r is not None), None
    if use is not None:
        text = as_str(use, "all_down use", p)
        if text is None:
            return FAIL_OPEN, (), None
        try:
            return USE, (), names.from_text(text, origin).lower()
        except names.NameError_ as exc:
            p.add(use.where, f"all_down use: {exc}")
    else:
        p.add(m.where, "all_down needs 'answer' or 'use'")
    return FAIL_OPEN, (), None
