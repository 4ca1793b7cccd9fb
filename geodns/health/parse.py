"""Health checks as written in YAML (server configuration and zone files).

Every value is used as written or rejected with its position: an empty
method, Host header or expected answer is an error, not "use the default".
"""

from __future__ import annotations

import re
from typing import TypedDict

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype

from geodns.address import DNS_PORT, MissingPort, parse_address
from geodns.health.spec import CheckSpec
from geodns.yamlsrc import (
    Problems,
    YMap,
    YNode,
    as_bool,
    as_float,
    as_int,
    as_list,
    as_str,
    expect_map,
    unknown_keys,
)

CHECK_DEFAULTS = {"interval": 1.0, "timeout": 0.8, "rise": 2, "fall": 2, "jitter": 0.1}
_METHOD = re.compile(r"^[A-Za-z]+$")


class _Timing(TypedDict):
    interval: float
    timeout: float
    rise: int
    fall: int
    jitter: float


def check_timing(m: YMap, out: dict[str, float], problems: Problems, what: str) -> None:
    ranges = {"interval": (0.1, 3600.0), "timeout": (0.05, 600.0), "jitter": (0.0, 0.5)}
    for key, (lo, hi) in ranges.items():
        v = m.get(key)
        if v is not None:
            f = as_float(v, f"{what} {key}", problems, lo, hi)
            if f is not None:
                out[key] = f
    for key in ("rise", "fall"):
        v = m.get(key)
        if v is not None:
            n = as_int(v, f"{what} {key}", problems, 1, 100)
            if n is not None:
                out[key] = n
    written = m.get("timeout") or m.get("interval")
    if out["timeout"] >= out["interval"] and written is not None:
        problems.add(written.where, f"{what}: timeout ({out['timeout']:g} s) must be below the "
                     f"interval ({out['interval']:g} s)")


def parse_checks(node: YNode, pid: str, defaults: dict[str, float],
                 problems: Problems) -> list[CheckSpec]:
    out = []
    for item in as_list(node):
        m = expect_map(item, f"PoP {pid} check", problems)
        if m is None:
            continue
        spec = _check(m, pid, defaults, problems)
        if spec is not None:
            out.append(spec)
    return out


def _check(m: YMap, pid: str, defaults: dict[str, float],
           problems: Problems) -> CheckSpec | None:
    tnode = m.get("type")
    kind = _opt(m, "type", problems)
    if kind not in ("http", "https", "tcp", "dns"):
        problems.add((tnode or m).where, f"PoP {pid}: check type must be http, https, tcp or dns")
        return None
    allowed = {"type", "interval", "timeout", "rise", "fall", "jitter"} | {
        "http": {"url", "method", "host", "expect", "contains", "verify_tls"},
        "https": {"url", "method", "host", "expect", "contains", "verify_tls"},
        "tcp": {"address"},
        "dns": {"server", "name", "qtype", "rcode", "answer"}}[kind]
    unknown_keys(m, allowed, f"{kind} check", problems)
    timing = dict(defaults)
    check_timing(m, timing, problems, f"PoP {pid} check")
    common = _Timing(interval=timing["interval"], timeout=timing["timeout"],
                     rise=int(timing["rise"]), fall=int(timing["fall"]), jitter=timing["jitter"])
    if kind in ("http", "https"):
        return _http(m, kind, pid, common, problems)
    if kind == "tcp":
        return _tcp(m, pid, common, problems)
    return _dns(m, pid, common, problems)


def _http(m: YMap, kind: str, pid: str, common: _Timing,
          problems: Problems) -> CheckSpec | None:
    before = len(problems)
    url = _opt(m, "url", problems)
    if not url or not url.startswith(("http://", "https://")):
        problems.add((m.get("url") or m).where,
                     f"PoP {pid}: an {kind} check needs url: http(s)://...")
    expect: tuple[int, ...] = (200,)
    en = m.get("expect")
    if en is not None:
        codes = [as_int(x, "expected status", problems, 100, 599) for x in as_list(en)]
        expect = tuple(c for c in codes if c is not None)
        if not codes:
            problems.add(en.where, f"PoP {pid}: expect needs at least one status code")
    verify = True
    vn = m.get("verify_tls")
    if vn is not None:
        verify = as_bool(vn, "verify_tls", problems) is not False
    method = _opt(m, "method", problems, nonempty=True)
    mn = m.get("method")
    if method is not None and mn is not None and not _METHOD.match(method):
        problems.add(mn.where, f"PoP {pid}: method {method!r} is not an HTTP method")
    host = _opt(m, "host", problems, nonempty=True)
    contains = _opt(m, "contains", problems)
    if len(problems) != before or url is None:
        return None
    return CheckSpec("http", url, method="GET" if method is None else method.upper(),
                     host=host, expect=expect, contains=contains, verify_tls=verify, **common)


def _tcp(m: YMap, pid: str, common: _Timing, problems: Problems) -> CheckSpec | None:
    addr = _opt(m, "address", problems)
    where = (m.get("address") or m).where
    if addr is None:
        if m.get("address") is None:
            problems.add(where, f"PoP {pid}: a tcp check needs 'address: HOST:PORT'")
        return None
    try:
        a = parse_address(addr, None)
    except MissingPort:
        problems.add(where, f"PoP {pid}: tcp check address {addr!r} needs a port "
                     "(192.0.2.1:443 or [2001:db8::1]:443)")
        return None
    except ValueError as exc:
        problems.add(where, f"PoP {pid}: tcp check address: {exc}")
        return None
    if a.port == 0:
        problems.add(where, f"PoP {pid}: tcp check address {addr!r}: port 0 cannot be probed")
        return None
    return CheckSpec("tcp", str(a), **common)


def _dns(m: YMap, pid: str, common: _Timing, problems: Problems) -> CheckSpec | None:
    before = len(problems)
    server = _opt(m, "server", problems)
    a = None
    if server is None:
        if m.get("server") is None:
            problems.add(m.where, f"PoP {pid}: a dns check needs 'server' (port 53 unless "
                         "given)")
    else:
        try:
            a = parse_address(server, DNS_PORT)
            if a.port == 0:
                raise ValueError(f"{server!r}: port 0 cannot be probed")
        except ValueError as exc:
            problems.add((m.get("server") or m).where, f"PoP {pid}: dns check server: {exc}")
    name = _opt(m, "name", problems, nonempty=True)
    nn = m.get("name")
    if nn is None:
        problems.add(m.where, f"PoP {pid}: a dns check needs 'name'")
    elif name is not None:
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            problems.add(nn.where, f"PoP {pid}: dns check name {name!r}: {exc}")
    qtype = _opt(m, "qtype", problems)
    qn = m.get("qtype")
    if qtype is not None and qn is not None:
        try:
            dns.rdatatype.from_text(qtype)
        except (dns.exception.DNSException, ValueError):
            problems.add(qn.where, f"PoP {pid}: dns check qtype {qtype!r} is not a record type")
    rcode = _opt(m, "rcode", problems)
    rn = m.get("rcode")
    if rcode is not None and rn is not None:
        try:
            # The probe compares rcode names: "3" is written NXDOMAIN.
            rcode = dns.rcode.to_text(dns.rcode.from_text(rcode))
        except (dns.exception.DNSException, ValueError):
            problems.add(rn.where, f"PoP {pid}: dns check rcode {rcode!r} is not an rcode "
                         "(NOERROR, NXDOMAIN, ...)")
    answer = _opt(m, "answer", problems, nonempty=True)
    if len(problems) != before or a is None or name is None:
        return None
    return CheckSpec("dns", str(a), name=name, qtype="A" if qtype is None else qtype.upper(),
                     rcode="NOERROR" if rcode is None else rcode, answer=answer, **common)


def _opt(m: YMap, key: str, problems: Problems, nonempty: bool = False) -> str | None:
    """The string under ``key``, or None when absent (or invalid: a problem
    is recorded then).  ``nonempty``: an empty string is a problem too."""
    v = m.get(key)
    if v is None:
        return None
    text = as_str(v, key, problems)
    if nonempty and text is not None and not text.strip():
        problems.add(v.where, f"{key} is empty (leave the key out for the default)")
        return None
    return text
