"""BIND master files (RFC 1035 section 5) -> geodns YAML, for migrations.

dnspython parses the master file ($ORIGIN, $TTL, $INCLUDE, $GENERATE,
parentheses, escapes); we only decide how each record is written in our
format.  The output loads back into the same records (the tests check that
by serving both with Knot/NSD and geodns and comparing answers).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import yaml

from geodns import rdata as rd
from geodns.errors import GeodnsError

SUPPORTED = {dns.rdatatype.from_text(t) for t in rd.TYPE_BY_NAME}


class ImportError_(GeodnsError):
    pass


def _rel(name: dns.name.Name, origin: dns.name.Name) -> str:
    if name == origin:
        return "@"
    if name.is_subdomain(origin):
        return name.relativize(origin).to_text()
    return name.to_text()


def _txt_value(strings: tuple[bytes, ...]) -> Any:
    """Text strings as YAML strings; any that is not UTF-8 as ``!!binary``."""
    out: list[str | bytes] = []
    for s in strings:
        try:
            out.append(s.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(s)
    return out[0] if len(out) == 1 else out


def convert(path: Path, origin: str, skip_unsupported: bool = False) -> tuple[str, list[str]]:
    """Returns (YAML text, warnings).  Raises ImportError_ on what cannot be
    carried over faithfully."""
    try:
        zone = dns.zone.from_file(str(path), origin=origin, relativize=False,
                                  check_origin=True)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        raise ImportError_(f"{path}: {exc}") from None
    zorigin = zone.origin
    assert zorigin is not None
    ttls: Counter[int] = Counter()
    for _, node in zone.nodes.items():
        for rds in node.rdatasets:
            ttls[rds.ttl] += len(rds)
    default_ttl = ttls.most_common(1)[0][0] if ttls else 3600
    warnings: list[str] = []
    records: dict[str, dict[str, Any]] = {}
    soa_out: dict[str, Any] = {}
    unsupported: Counter[str] = Counter()

    for name in sorted(zone.nodes, key=lambda n: (n != zorigin, n.to_text().lower())):
        node = zone.nodes[name]
        owner = _rel(name, zorigin)
        types: dict[str, Any] = {}
        for rds in sorted(node.rdatasets, key=lambda r: r.rdtype):
            if rds.rdclass != dns.rdataclass.IN:
                raise ImportError_(f"{name}: class {dns.rdataclass.to_text(rds.rdclass)} "
                                   "records are not supported")
            tname = dns.rdatatype.to_text(rds.rdtype)
            if rds.rdtype == dns.rdatatype.SOA:
                soa = rds[0]
                soa_out = {
                    "mname": _rel(soa.mname, zorigin), "rname": _rel(soa.rname, zorigin),
                    "serial": soa.serial, "refresh": soa.refresh, "retry": soa.retry,
                    "expire": soa.expire, "minimum": soa.minimum,
                }
                if rds.ttl != default_ttl:
                    soa_out["ttl"] = rds.ttl
                continue
            if rds.rdtype not in SUPPORTED:
                unsupported[tname] += len(rds)
                continue
            values = [_value(rds.rdtype, r, zorigin) for r in rds]
            value: Any = values[0] if len(values) == 1 else values
            if rds.rdtype == dns.rdatatype.TXT and len(values) == 1 and isinstance(
                    values[0], list):
                value = [values[0]]  # one multi-string record: keep it one record
            if rds.ttl != default_ttl:
                value = {"ttl": rds.ttl, "values": values}
            types[tname] = value
        if types:
            records[owner] = types
    if unsupported:
        what = ", ".join(f"{n} {t}" for t, n in sorted(unsupported.items()))
        msg = f"records of types geodns does not serve: {what}"
        if not skip_unsupported:
            raise ImportError_(msg + " (use --skip-unsupported to leave them out)")
        warnings.append("left out " + msg)
    doc = {"origin": zorigin.to_text(), "ttl": default_ttl, "soa": soa_out, "records": records}
    header = f"# Imported from {path.name} by geodns import-zone.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000), warnings


def _value(rdtype: int, r: Any, origin: dns.name.Name) -> Any:
    t = dns.rdatatype
    if rdtype in (t.A, t.AAAA):
        return r.address
    if rdtype in (t.NS, t.CNAME, t.PTR):
        return _rel(r.target, origin)
    if rdtype == t.MX:
        return f"{r.preference} {_rel(r.exchange, origin)}"
    if rdtype == t.SRV:
        return f"{r.priority} {r.weight} {r.port} {_rel(r.target, origin)}"
    if rdtype == t.CAA:
        return {"flags": r.flags, "tag": r.tag.decode("ascii"),
                "value": r.value.decode("utf-8")}
    if rdtype == t.TXT:
        return _txt_value(tuple(r.strings))
    raise ImportError_(f"type {rdtype} not supported")  # pragma: no cover
