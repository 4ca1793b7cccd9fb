"""YAML zone files -> :class:`Zone`, with every problem reported at once.

The format is documented in ``docs/zones.md``.  In short::

    origin: example.com.          # optional, defaults to the file name
    ttl: 3600                     # default TTL
    soa: {mname: ns1, rname: hostmaster, serial: 1, ...}
    records:
      "@":  {NS: [ns1, ns2], MX: ["10 mail"]}
      www:  {A: [192.0.2.1], AAAA: {ttl: 300, values: ["2001:db8::1"]}}

A record type maps to one value, a list of values, or a mapping with
``ttl`` and ``value``/``values``.  The mapping form is where a record's
own options live, which is also where a steered record's options go.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection
from pathlib import Path

from geodns import names, rdata
from geodns.health.parse import CHECK_DEFAULTS
from geodns.rdata import AAAA, CNAME, MX, NS, SOA, TXT, A, RData, RDataError
from geodns.yamlsrc import (
    Problems,
    Where,
    YMap,
    YNode,
    YScalar,
    YSeq,
    as_int,
    as_list,
    as_str,
    expect_map,
    load_file,
    load_text,
    unknown_keys,
)
from geodns.zones.model import RRset, Zone
from geodns.zones.steer import check_steering, steer_spec

ZONE_SUFFIXES = (".yaml", ".yml")
_LABEL_OK = re.compile(r"^(\*|[A-Za-z0-9_\-]([A-Za-z0-9_\-/\\]*))$")
DEFAULT_TTL = 3600
SOA_DEFAULTS = {"refresh": 7200, "retry": 3600, "expire": 1209600, "minimum": 300}


def origin_from_filename(path: Path) -> str:
    stem = path.name
    for suffix in ZONE_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem.rstrip(".") + "."


def load_zone_file(path: Path, problems: Problems, display: str | None = None,
                   pops: Collection[str] = (),
                   check_defaults: dict[str, float] | None = None) -> Zone | None:
    """Load and validate one zone file.  Returns None (with problems added)
    when the zone cannot be served."""
    before = len(problems)
    root = load_file(path, problems, display)
    if root is None:
        return None
    zone = _build(root, display or str(path), origin_from_filename(path), problems, pops,
                  check_defaults)
    return zone if len(problems) == before else None


def load_zone_text(text: str, file: str, default_origin: str, problems: Problems,
                   pops: Collection[str] = (),
                   check_defaults: dict[str, float] | None = None) -> Zone | None:
    before = len(problems)
    root = load_text(text, file, problems)
    if root is None:
        return None
    zone = _build(root, file, default_origin, problems, pops, check_defaults)
    return zone if len(problems) == before else None


def _check_owner_text(text: str) -> str | None:
    """Reason why an owner name is malformed, or None."""
    if text == "@":
        return None
    body = text[:-1] if text.endswith(".") else text
    if not body:
        return "empty name"
    labels = body.split(".")
    for i, label in enumerate(labels):
        if not label:
            return "empty label (two dots in a row)"
        if "*" in label and (label != "*" or i != 0):
            return "'*' is only allowed as the whole leftmost label (a wildcard)"
        if not _LABEL_OK.match(label):
            bad = next((c for c in label if not (c.isalnum() or c in "_-*/\\")), label[0])
            return f"character {bad!r} is not allowed in a name"
    return None


def _build(root: YNode, file: str, default_origin: str, problems: Problems,
           pops: Collection[str] = (),
           check_defaults: dict[str, float] | None = None) -> Zone | None:
    top = expect_map(root, "a zone file", problems)
    if top is None:
        return None
    unknown_keys(top, {"origin", "ttl", "soa", "records"}, "the zone", problems)

    origin_text = default_origin
    onode = top.get("origin")
    if onode is not None:
        origin_text = as_str(onode, "origin", problems) or default_origin
        if not origin_text.endswith("."):
            problems.add(onode.where, f"origin {origin_text!r} must be absolute (end with '.')")
            origin_text += "."
    try:
        origin = names.from_text(origin_text).lower()
    except names.NameError_ as exc:
        problems.add(onode.where if onode else Where(file, 1, 1), f"origin: {exc}")
        return None

    default_ttl = DEFAULT_TTL
    tnode = top.get("ttl")
    if tnode is not None:
        default_ttl = as_int(tnode, "ttl", problems, 0, rdata.MAX_TTL) or default_ttl

    zone = Zone(origin=origin, file=file, default_ttl=default_ttl)
    builder = _ZoneBuilder(zone, problems, pops, check_defaults)

    snode = top.get("soa")
    if snode is None:
        problems.add(top.where, "missing 'soa': every zone needs an SOA record")
    else:
        builder.soa(snode)

    rnode = top.get("records")
    if rnode is None:
        problems.add(top.where, "missing 'records' (at least the apex NS records)")
    else:
        records = expect_map(rnode, "records", problems)
        if records is not None:
            for key, value in records.items:
                builder.owner(key, value)

    builder.check_zone(top.where)
    return zone


class _ZoneBuilder:
    def __init__(self, zone: Zone, problems: Problems, pops: Collection[str] = (),
                 check_defaults: dict[str, float] | None = None) -> None:
        self.zone = zone
        self.problems = problems
        self.pops = set(pops)
        self.check_defaults = check_defaults or dict(CHECK_DEFAULTS)

    # -- SOA --------------------------------------------------------------
    def soa(self, node: YNode) -> None:
        p = self.problems
        m = expect_map(node, "soa", p)
        if m is None:
            return
        unknown_keys(m, {"mname", "rname", "serial", "refresh", "retry", "expire",
                         "minimum", "ttl"}, "soa", p)
        text: dict[str, str] = {}
        for key in ("mname", "rname"):
            v = m.get(key)
            if v is None:
                p.add(m.where, f"soa: missing {key!r}")
                return
            s = as_str(v, f"soa {key}", p)
            if s is None:
                return
            if key == "rname" and "@" in s:
                local, _, domain = s.partition("@")
                s = local.replace(".", "\\.") + "." + domain
            text[key] = s
        nums: dict[str, int] = {}
        for key in ("serial", "refresh", "retry", "expire", "minimum"):
            v = m.get(key)
            if v is None:
                nums[key] = SOA_DEFAULTS.get(key, 1)
                continue
            n = as_int(v, f"soa {key}", p, 0, 2**32 - 1)
            if n is None:
                return
            nums[key] = n
        ttl = self.zone.default_ttl
        tn = m.get("ttl")
        if tn is not None:
            ttl = as_int(tn, "soa ttl", p, 0, rdata.MAX_TTL) or 0
        try:
            rd = rdata.soa(text["mname"], text["rname"], nums["serial"], nums["refresh"],
                           nums["retry"], nums["expire"], nums["minimum"], self.zone.origin)
        except RDataError as exc:
            p.add(m.where, f"soa: {exc}")
            return
        self.zone.nodes.setdefault(self.zone.origin, {})[SOA] = RRset(
            self.zone.origin, SOA, ttl, (rd,), m.where)

    # -- owners -----------------------------------------------------------
    def owner(self, key: YScalar, value: YNode) -> None:
        p = self.problems
        reason = _check_owner_text(key.text)
        if reason:
            p.add(key.where, f"malformed name {key.text!r}: {reason}")
            return
        try:
            owner = names.from_text(key.text, self.zone.origin)
        except names.NameError_ as exc:
            p.add(key.where, f"malformed name {key.text!r}: {exc}")
            return
        low = owner.lower()
        if not names.is_subdomain(low, self.zone.origin):
            p.add(key.where, f"{names.to_text(owner)} is outside the zone {self.zone.name} "
                  "(out-of-zone data)")
            return
        types = expect_map(value, f"records for {key.text!r}", p)
        if types is None:
            return
        node = self.zone.nodes.get(low)
        if node is not None and any(t != SOA for t in node):
            p.add(key.where, f"{names.to_text(owner)} appears twice (as {key.text!r}); "
                  "merge its records under one key")
        for tkey, tval in types.items:
            self.rrset(owner, tkey, tval)

    def rrset(self, owner: bytes, tkey: YScalar, tval: YNode) -> None:
        p = self.problems
        rtype = rdata.TYPE_BY_NAME.get(tkey.text.upper())
        if rtype is None or tkey.text != tkey.text.upper():
            if rtype is not None:
                p.add(tkey.where, f"write record types in capitals: {tkey.text.upper()!r}")
            else:
                p.add(tkey.where, f"unknown record type {tkey.text!r} (geodns serves: "
                      + ", ".join(sorted(rdata.TYPE_BY_NAME)) + ")")
            return
        if rtype == SOA:
            p.add(tkey.where, "the SOA record goes in the top-level 'soa' key")
            return
        ttl = self.zone.default_ttl
        values: YNode | None = tval
        if isinstance(tval, YMap) and tval.get("steer") is not None:
            spec = steer_spec(self, owner, rtype, tkey, tval)
            if spec is not None:
                self.zone.steered.setdefault(owner.lower(), {})[rtype] = spec
                self.zone.nodes.setdefault(owner.lower(), {})
            return
        if isinstance(tval, YMap):
            if rtype in _STRUCTURED and _STRUCTURED_KEYS[rtype] & set(tval.keys()):
                values = tval  # a single structured value such as {preference: 10, ...}
            else:
                unknown_keys(tval, {"ttl", "value", "values"}, f"{tkey.text} record", p)
                if tval.get("value") is not None and tval.get("values") is not None:
                    p.add(tval.where, "give either 'value' or 'values', not both")
                tn = tval.get("ttl")
                if tn is not None:
                    t = as_int(tn, "ttl", p, 0, rdata.MAX_TTL)
                    if t is None:
                        return
                    ttl = t
                values = tval.get("values") or tval.get("value")
                if values is None:
                    p.add(tval.where, f"{tkey.text} record has no 'value' or 'values'")
                    return
        assert values is not None
        items = as_list(values)
        if not items:
            p.add(tval.where, f"{tkey.text} has an empty list of values")
            return
        parsed: list[RData] = []
        seen: dict[bytes, Where] = {}
        for item in items:
            rd = self.value(rtype, item)
            if rd is None:
                continue
            key = rd.wire.lower() if rtype in (NS, CNAME, rdata.PTR, MX) else rd.wire
            if key in seen:
                p.add(item.where, f"duplicate {tkey.text} record {rd.text!r} "
                      f"(first at line {seen[key].line})")
                continue
            seen[key] = item.where
            parsed.append(rd)
        if not parsed:
            return
        if rtype == CNAME and len(parsed) > 1:
            p.add(tval.where, "a name can have only one CNAME record")
            return
        low = owner.lower()
        self.zone.nodes.setdefault(low, {})[rtype] = RRset(owner, rtype, ttl, tuple(parsed),
                                                           tkey.where)

    def value(self, rtype: int, node: YNode) -> RData | None:
        p = self.problems
        origin = self.zone.origin
        what = rdata.type_name(rtype)
        try:
            if isinstance(node, YMap):
                if rtype not in _STRUCTURED:
                    p.add(node.where, f"a {what} value is a plain string, not a mapping")
                    return None
                return _STRUCTURED[rtype](node, origin, p)
            if isinstance(node, YSeq):
                if rtype != TXT:
                    p.add(node.where, f"a {what} value must be a string")
                    return None
                parts = []
                for s in node.items:
                    raw = _txt_bytes(s, p)
                    if raw is None:
                        return None
                    parts.append(raw)
                return rdata.txt(parts)
            assert isinstance(node, YScalar)
            if node.is_null:
                p.add(node.where, f"empty {what} value")
                return None
            text = node.text
            if rtype == A:
                return rdata.a(text)
            if rtype == AAAA:
                return rdata.aaaa(text)
            if rtype in (NS, CNAME, rdata.PTR):
                return rdata.name_rdata(text, origin)
            if rtype == TXT:
                raw = _txt_bytes(node, p)
                return None if raw is None else rdata.txt([raw])
            if rtype == MX:
                pref, exch = rdata.split_fields(text, 2)
                return rdata.mx(rdata.parse_int(pref, "MX preference", 65535), exch, origin)
            if rtype == rdata.SRV:
                pr, w, port, target = rdata.split_fields(text, 4)
                return rdata.srv(rdata.parse_int(pr, "SRV priority", 65535),
                                 rdata.parse_int(w, "SRV weight", 65535),
                                 rdata.parse_int(port, "SRV port", 65535), target, origin)
            if rtype == rdata.CAA:
                flags, tag, val = rdata.split_fields(text, 3)
                return rdata.caa(rdata.parse_int(flags, "CAA flags", 255), tag,
                                 val.encode("utf-8"))
        except RDataError as exc:
            p.add(node.where, f"{what}: {exc}")
            return None
        p.add(node.where, f"{what} values are not supported")  # pragma: no cover
        return None

    # -- whole-zone checks --------------------------------------------------
    def check_zone(self, where: Where) -> None:
        p = self.problems
        zone = self.zone
        apex = zone.nodes.get(zone.origin, {})
        if NS not in apex:
            p.add(where, f"the zone apex {zone.name} has no NS records")
        if CNAME in apex:
            p.add(apex[CNAME].where or where, "a CNAME is not allowed at the zone apex")
        cuts = zone.delegations()
        for owner, types in zone.nodes.items():
            steered = zone.steered.get(owner, {})
            all_types = set(types) | set(steered)
            if CNAME in all_types and len(all_types) > 1:
                others = ", ".join(rdata.type_name(t) for t in sorted(all_types) if t != CNAME)
                at = types[CNAME].where if CNAME in types else steered[CNAME].where
                p.add(at or where,
                      f"{names.to_text(owner)} has a CNAME beside other data ({others})")
            if steered and (owner == zone.origin or any(
                    names.is_subdomain(owner, c) for c in cuts)):
                spec = next(iter(steered.values()))
                p.add(spec.where or where, f"{names.to_text(owner)}: a steered record cannot "
                      "be at the zone apex or at or below a delegation")
            if owner in cuts and owner[0] == 1 and owner[1:2] == b"*":
                p.add(types[NS].where or where, "a wildcard cannot be a delegation point")
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


def _txt_bytes(node: YNode, p: Problems) -> bytes | None:
    """A TXT string: text (UTF-8), or ``!!binary`` base64 for other bytes."""
    if not isinstance(node, YScalar) or node.is_null:
        p.add(node.where, "TXT strings must be plain text")
        return None
    if node.tag == "tag:yaml.org,2002:binary":
        try:
            return base64.b64decode("".join(node.text.split()), validate=True)
        except (binascii.Error, ValueError):
            p.add(node.where, "!!binary TXT string is not valid base64")
            return None
    return node.text.encode("utf-8")


def _map_fields(node: YMap, fields: list[str], what: str, p: Problems) -> dict[str, YNode] | None:
    unknown_keys(node, set(fields), what, p)
    out = {}
    for f in fields:
        v = node.get(f)
        if v is None:
            p.add(node.where, f"{what}: missing {f!r}")
            return None
        out[f] = v
    return out


def _mx_map(node: YMap, origin: bytes, p: Problems) -> RData | None:
    f = _map_fields(node, ["preference", "exchange"], "MX", p)
    if f is None:
        return None
    pref = as_int(f["preference"], "MX preference", p, 0, 65535)
    exch = as_str(f["exchange"], "MX exchange", p)
    if pref is None or exch is None:
        return None
    return rdata.mx(pref, exch, origin)


def _srv_map(node: YMap, origin: bytes, p: Problems) -> RData | None:
    f = _map_fields(node, ["priority", "weight", "port", "target"], "SRV", p)
    if f is None:
        return None
    nums = [as_int(f[k], f"SRV {k}", p, 0, 65535) for k in ("priority", "weight", "port")]
    target = as_str(f["target"], "SRV target", p)
    if None in nums or target is None:
        return None
    return rdata.srv(nums[0] or 0, nums[1] or 0, nums[2] or 0, target, origin)


def _caa_map(node: YMap, origin: bytes, p: Problems) -> RData | None:
    f = _map_fields(node, ["flags", "tag", "value"], "CAA", p)
    if f is None:
        return None
    flags = as_int(f["flags"], "CAA flags", p, 0, 255)
    tag = as_str(f["tag"], "CAA tag", p)
    value = f["value"]
    text = value.text if isinstance(value, YScalar) else None
    if text is None:
        p.add(value.where, "CAA value must be a string")
    if flags is None or tag is None or text is None:
        return None
    return rdata.caa(flags, tag, text.encode("utf-8"))


_STRUCTURED_KEYS = {
    MX: {"preference", "exchange"},
    rdata.SRV: {"priority", "weight", "port", "target"},
    rdata.CAA: {"flags", "tag"},
}
_STRUCTURED: dict[int, Callable[[YMap, bytes, Problems], RData | None]] = {
    MX: _mx_map, rdata.SRV: _srv_map, rdata.CAA: _caa_map,
}


def load_zone_dir(directory: Path, problems: Problems) -> dict[str, Zone]:
    """Every zone file in a directory, keyed by file path.  Files with
    problems are left out (the problems say why)."""
    zones: dict[str, Zone] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in ZONE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            zone = load_zone_file(path, problems)
            if zone is not None:
                zones[str(path)] = zone
    return zones

