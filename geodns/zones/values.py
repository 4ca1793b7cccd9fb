"""One record value as written in a zone file (a YAML node) -> :class:`RData`.

A value is a string in the zone-file form (``"10 mail"``), a mapping with
named fields for the types that have several (MX, SRV, CAA), or for TXT
(and SPF) a list of strings that make one record.  The types with a longer
zone-file form (DS, HTTPS, LOC, ...) and types geodns has no name for (the
RFC 3597 generic form) are parsed by :mod:`geodns.zones.rdtext`.  Problems
are recorded at the value's position; None is returned then.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from geodns import rdata
from geodns.rdata import AAAA, CAA, CNAME, MX, NS, PTR, SPF, SRV, TXT, A, RData, RDataError
from geodns.yamlsrc import Problems, YMap, YNode, YScalar, YSeq, as_int, as_str, unknown_keys
from geodns.zones import rdtext


def parse_value(rtype: int, node: YNode, origin: bytes, p: Problems) -> RData | None:
    """The RDATA of one value of type ``rtype``; names are relative to ``origin``."""
    try:
        if isinstance(node, YScalar):  # (the usual value, first)
            if node.is_null:
                p.add(node.where, f"empty {rdata.type_name(rtype)} value")
                return None
            return _from_text(rtype, node, origin, p)
        what = rdata.type_name(rtype)
        if isinstance(node, YMap):
            parse_map = _STRUCTURED.get(rtype)
            if parse_map is None:
                p.add(node.where, f"a {what} value is a plain string, not a mapping")
                return None
            return parse_map(node, origin, p)
        if isinstance(node, YSeq):
            if rtype not in (TXT, SPF):
                p.add(node.where, f"a {what} value must be a string")
                return None
            parts = []
            for s in node.items:
                raw = txt_bytes(s, p)
                if raw is None:
                    return None
                parts.append(raw)
            return rdata.txt(parts)
        raise TypeError(f"not a YAML value: {node!r}")
    except RDataError as exc:
        p.add(node.where, f"{rdata.type_name(rtype)}: {exc}")
        return None


def is_structured(rtype: int, node: YMap) -> bool:
    """Whether a mapping is one value with named fields (``{preference: 10,
    exchange: mail}``) rather than a record set's options (``{ttl, values}``)."""
    return bool(_STRUCTURED_KEYS.get(rtype, set()) & set(node.keys()))


def _from_text(rtype: int, node: YScalar, origin: bytes, p: Problems) -> RData | None:
    text = node.text
    if rtype == A:
        return rdata.a(text)
    if rtype == AAAA:
        return rdata.aaaa(text)
    if rtype in (NS, CNAME, PTR):
        return rdata.name_rdata(text, origin)
    if rtype in (TXT, SPF):
        raw = txt_bytes(node, p)
        return None if raw is None else rdata.txt([raw])
    if rtype == MX:
        pref, exch = rdata.split_fields(text, 2)
        return rdata.mx(rdata.parse_int(pref, "MX preference", 65535), exch, origin)
    if rtype == SRV:
        pr, w, port, target = rdata.split_fields(text, 4)
        return rdata.srv(rdata.parse_int(pr, "SRV priority", 65535),
                         rdata.parse_int(w, "SRV weight", 65535),
                         rdata.parse_int(port, "SRV port", 65535), target, origin)
    if rtype == CAA:
        flags, tag, val = rdata.split_fields(text, 3)
        return rdata.caa(rdata.parse_int(flags, "CAA flags", 255), tag, val.encode("utf-8"))
    return rdtext.from_text(rtype, text, origin)


def txt_bytes(node: YNode, p: Problems, what: str = "TXT string") -> bytes | None:
    """A TXT string (or CAA value): text (UTF-8), or ``!!binary`` base64 for
    other bytes."""
    if not isinstance(node, YScalar) or node.is_null:
        p.add(node.where, f"{what}s must be plain text" if what.endswith("string")
              else f"{what} must be a string")
        return None
    if node.tag == "tag:yaml.org,2002:binary":
        try:
            return base64.b64decode("".join(node.text.split()), validate=True)
        except (binascii.Error, ValueError):
            p.add(node.where, f"!!binary {what} is not valid base64")
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
    priority = as_int(f["priority"], "SRV priority", p, 0, 65535)
    weight = as_int(f["weight"], "SRV weight", p, 0, 65535)
    port = as_int(f["port"], "SRV port", p, 0, 65535)
    target = as_str(f["target"], "SRV target", p)
    if priority is None or weight is None or port is None or target is None:
        return None
    return rdata.srv(priority, weight, port, target, origin)


def _caa_map(node: YMap, origin: bytes, p: Problems) -> RData | None:
    f = _map_fields(node, ["flags", "tag", "value"], "CAA", p)
    if f is None:
        return None
    flags = as_int(f["flags"], "CAA flags", p, 0, 255)
    tag = as_str(f["tag"], "CAA tag", p)
    value = txt_bytes(f["value"], p, "CAA value")
    if flags is None or tag is None or value is None:
        return None
    return rdata.caa(flags, tag, value)


_STRUCTURED_KEYS = {
    MX: {"preference", "exchange"},
    SRV: {"priority", "weight", "port", "target"},
    CAA: {"flags", "tag"},
}
_STRUCTURED: dict[int, Callable[[YMap, bytes, Problems], RData | None]] = {
    MX: _mx_map, SRV: _srv_map, CAA: _caa_map,
}
