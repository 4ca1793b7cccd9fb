"""Why a client got the answer it got.

:func:`explain` answers with the code that serves queries, over the same
snapshot (tables, steering, locator and health): the decision comes from
the same :meth:`Responder.decision` a query reaches on a cache miss, and the
answer shown is the one :meth:`Responder.respond` produces for a real query
built from the arguments, decoded with dnslib.  So an explanation cannot
drift from what is served.  It runs in a scratch responder
(:meth:`Responder.scratch`) with its own counters and caches, so that an
explanation is not counted as a served query and leaves nothing behind in
the serving caches.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import dnslib

from geodns import names
from geodns.compile import Steered
from geodns.ecs import client_subnet
from geodns.errors import GeodnsError
from geodns.rdata import type_from_text
from geodns.steering import Decision, SteerSpec
from geodns.wire import Responder


class ExplainError(GeodnsError, ValueError):
    pass


def _query(wire_name: bytes, qtype: int, ecs: tuple[int, int, bytes] | None) -> bytes:
    head = struct.pack("!HHHHHH", 0x4745, 0, 1, 0, 0, 1)
    options = b""
    if ecs is not None:
        family, source, addr = ecs
        data = struct.pack("!HBB", family, source, 0) + addr
        options = struct.pack("!HH", 8, len(data)) + data
    opt = struct.pack("!BHHBBHH", 0, 41, 1232, 0, 0, 0, len(options)) + options
    return head + wire_name + struct.pack("!HH", qtype, 1) + opt


def _parse_ecs(text: str) -> tuple[int, int, bytes]:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ExplainError(f"--ecs {text!r}: {exc}") from None
    family = 1 if net.version == 4 else 2
    source = net.prefixlen
    addr = net.network_address.packed[: (source + 7) // 8]
    return family, source, addr


def explain(serving: Responder, qname: str, qtype_text: str, client: str,
            ecs: str | None = None) -> dict[str, Any]:
    """Explain the answer ``serving`` gives ``client`` (and its Client
    Subnet ``ecs``, if any) for ``qname``/``qtype_text``, without touching
    its counters or caches."""
    responder = serving.scratch()
    qtype = type_from_text(qtype_text)
    if qtype is None:
        raise ExplainError(f"unknown type {qtype_text!r}")
    try:
        client_ip = ipaddress.ip_address(client)
    except ValueError:
        raise ExplainError(f"--client {client!r} is not an IP address") from None
    ecs_parts = _parse_ecs(ecs) if ecs else None
    try:
        wire_name = names.from_text(qname if qname.endswith(".") else qname + ".")
    except names.NameError_ as exc:
        raise ExplainError(f"{qname!r}: {exc}") from None
    query = _query(wire_name, qtype, ecs_parts)

    peer = (str(client_ip), 53)
    result: dict[str, Any] = {"query": {"name": qname, "type": qtype_text.upper(),
                                        "client": str(client_ip), "ecs": ecs}}
    key = wire_name.lower() + struct.pack("!HH", qtype, 1)
    entry = responder.look_up(key, True)
    result["chain"] = []
    if isinstance(entry, Steered):
        if ecs_parts is not None and ecs_parts[1] > 0:
            data = struct.pack("!HBB", ecs_parts[0], ecs_parts[1], 0) + ecs_parts[2]
            address, source = client_subnet(data)
            basis = f"client subnet {ecs}"
        else:
            address, source = client_ip.packed, client_ip.max_prefixlen
            basis = f"source address {client_ip}"
        # The first decision, then one per steered record set that a chosen
        # CNAME target leads to (the answer rests on all of them).
        (first, decision), *rest = responder.decisions.chain(entry, address, source, True)
        result["steering"] = _decision_json(decision, first.spec, entry.zone, basis, responder)
        result["chain"] = [_decision_json(d, point.spec, entry.zone, basis, responder)
                           for point, d in rest]
    else:
        result["steering"] = None
    wire = responder.respond(query, True, peer)
    result["answer"] = _answer_json(wire)
    return result


def _decision_json(d: Decision, spec: SteerSpec, zone: str, basis: str,
                   responder: Responder) -> dict[str, Any]:
    place = d.place
    pops = responder.steering.pops if responder.steering else {}
    return {
        "record": f"{names.to_text(spec.owner)} (zone {zone})",
        "located_by": basis,
        "place": None if place is None else {
            "network": str(place.network), "continent": place.continent,
            "country": place.country, "subdivision": place.subdivision, "city": place.city,
            "latitude": place.latitude, "longitude": place.longitude,
            "accuracy_km": place.accuracy_km,
        },
        "database": responder.locator.description if responder.locator else None,
        "rule": None if d.rule is None else {
            "line": d.rule.where.line if d.rule.where else None, "rule": d.rule.describe()},
        "candidates": [{
            "pop": c.pop, "city": pops[c.pop].city if c.pop in pops else None,
            "distance_km": None if c.distance_km is None else round(c.distance_km, 1),
            "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 2),
            "latency_from": c.latency_source, "bias": c.bias, "health": c.health,
            "penalty_ms": c.penalty_ms, "score": round(c.score, 3), "eligible": c.eligible,
        } for c in sorted(d.candidates, key=lambda c: c.score)],
        "outcome": d.outcome, "chosen": list(d.pops), "reason": d.reason,
        "fallback_via": d.via, "ecs_scope": d.scope, "ttl": spec.ttl,
        # The compiled map's range holding the client and its ranking before
        # health (geodns.steermap); None while the maps are being built.
        "map": d.map,
    }


def _answer_json(wire: bytes | None) -> dict[str, Any]:
    if wire is None:
        return {"dropped": True}
    msg = dnslib.DNSRecord.parse(wire)
    out: dict[str, Any] = {
        "rcode": dnslib.RCODE.get(msg.header.rcode),
        "flags": [f for f in ("aa", "tc", "rd", "ra") if getattr(msg.header, f)],
        "answer": [str(rr) for rr in msg.rr],
        "authority": [str(rr) for rr in msg.auth],
        "additional": [str(rr) for rr in msg.ar if rr.rtype != 41],
        "ecs_scope": None,
    }
    for rr in msg.ar:
        if rr.rtype == 41:
            for opt in rr.rdata:
                if opt.code == 8 and len(opt.data) >= 4:
                    out["ecs_scope"] = opt.data[3]
    return out


def render(result: dict[str, Any]) -> str:
    """The explanation as text for an operator."""
    q = result["query"]
    lines = [f"{q['name']} {q['type']} asked by {q['client']}"
             + (f" with client subnet {q['ecs']}" if q["ecs"] else "")]
    st = result["steering"]
    if st is None:
        lines.append("not steered: the same answer for every client")
    else:
        lines.append(f"steered record {st['record']}, placed by {st['located_by']}")
        p = st["place"]
        if p is None or p["latitude"] is None:
            net = p["network"] if p else "?"
            lines.append(f"  client network {net}: the database cannot place it")
        else:
            where = ", ".join(x for x in (p["city"], p["subdivision"], p["country"],
                                          p["continent"]) if x)
            lines.append(f"  client network {p['network']}: {where or 'unnamed place'} "
                         f"({p['latitude']}, {p['longitude']}; within {p['accuracy_km']} km)")
        if st["database"]:
            lines.append(f"  database: {st['database']}")
        _render_decision(st, lines)
        for then in result.get("chain", []):
            lines.append(f"then {then['record']}, where the chosen CNAME leads, for the same "
                         "client")
            _render_decision(then, lines)
    a = result["answer"]
    if a.get("dropped"):
        lines.append("answer: none (dropped)")
    else:
        lines.append(f"answer: {a['rcode']} flags {' '.join(a['flags']) or '-'}"
                     + (f", ECS scope /{a['ecs_scope']}" if a["ecs_scope"] is not None else ""))
        for section in ("answer", "authority", "additional"):
            for rr in a[section]:
                lines.append(f"  {section:<10} {rr}")
    return "\n".join(lines)


def _render_decision(st: dict[str, Any], lines: list[str]) -> None:
    if st["rule"]:
        lines.append(f"  rule (line {st['rule']['line']}) matched: {st['rule']['rule']}")
    else:
        lines.append("  no rule matched: every PoP of the record is a candidate")
    if st.get("map"):
        m = st["map"]
        lines.append(f"  map range {m['range']} (same order of PoPs over {m['same_order']}): "
                     + ", ".join(f"{r['pop']} {r['base_score']}" for r in m["ranked"]))
    lines.append("  candidates, best first:")
    lines.append("    pop    distance km  latency ms  from           bias  health    "
                 "score")
    for c in st["candidates"]:
        dist = "-" if c["distance_km"] is None else f"{c['distance_km']:.0f}"
        lat = "-" if c["latency_ms"] is None else f"{c['latency_ms']:.1f}"
        mark = "" if c["eligible"] else "  (not eligible)"
        lines.append(f"    {c['pop']:<6} {dist:>11}  {lat:>10}  {c['latency_from']:<13} "
                     f"{c['bias']:>5}  {c['health']:<8} {c['score']:>8.2f}{mark}")
    chosen = ", ".join(st["chosen"]) or st["outcome"]
    lines.append(f"  chosen: {chosen} (reason: {st['reason']}"
                 + (f", via {' -> '.join(st['fallback_via'])}" if st["fallback_via"] else "")
                 + f"); TTL {st['ttl']}; ECS scope /{st['ecs_scope']}")
