"""Health checks as written in YAML (server configuration and zone files)."""

from __future__ import annotations

from geodns.address import parse_address
from geodns.health.probes import CheckSpec
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
    if out["timeout"] >= out["interval"] and (m.get("timeout") or m.get("interval")):
        where = (m.get("timeout") or m.get("interval") or m).where
        problems.add(where, f"{what}: timeout ({out['timeout']:g} s) must be below the "
                     f"interval ({out['interval']:g} s)")


def parse_checks(node: YNode, pid: str, defaults: dict[str, float],
            problems: Problems) -> list[CheckSpec]:
    items = as_list(node)
    out = []
    for item in items:
        m = expect_map(item, f"PoP {pid} check", problems)
        if m is None:
            continue
        kind = as_str(m.get("type") or m, "check type", problems) if m.get("type") else None
        if kind not in ("http", "https", "tcp", "dns"):
            problems.add((m.get("type") or m).where,
                         f"PoP {pid}: check type must be http, https, tcp or dns")
            continue
        allowed = {"type", "interval", "timeout", "rise", "fall", "jitter"} | {
            "http": {"url", "method", "host", "expect", "contains", "verify_tls"},
            "https": {"url", "method", "host", "expect", "contains", "verify_tls"},
            "tcp": {"address"},
            "dns": {"server", "name", "qtype", "rcode", "answer"}}[kind]
        unknown_keys(m, allowed, f"{kind} check", problems)
        timing = dict(defaults)
        check_timing(m, timing, problems, f"PoP {pid} check")
        common = dict(interval=timing["interval"], timeout=timing["timeout"],
                      rise=int(timing["rise"]), fall=int(timing["fall"]),
                      jitter=timing["jitter"])
        if kind in ("http", "https"):
            url = as_str(m.get("url") or m, "check url", problems) if m.get("url") else None
            if not url or not url.startswith(("http://", "https://")):
                problems.add(m.where, f"PoP {pid}: an {kind} check needs url: http(s)://...")
                continue
            expect: tuple[int, ...] = (200,)
            en = m.get("expect")
            if en is not None:
                codes = [as_int(x, "expected status", problems, 100, 599)
                         for x in as_list(en)]
                expect = tuple(c for c in codes if c is not None)
            verify = True
            if m.get("verify_tls") is not None:
                verify = as_bool(m.get("verify_tls"), "verify_tls", problems) is not False  # type: ignore[arg-type]
            out.append(CheckSpec("http", url, method=(_opt(m, "method", problems) or "GET")
                                 .upper(), host=_opt(m, "host", problems), expect=expect,
                                 contains=_opt(m, "contains", problems), verify_tls=verify,
                                 **common))  # type: ignore[arg-type]
        elif kind == "tcp":
            addr = _opt(m, "address", problems)
            try:
                a = parse_address(addr or "", 0)
                if not a.port:
                    raise ValueError("a port is needed")
            except ValueError as exc:
                problems.add(m.where, f"PoP {pid}: tcp check address: {exc}")
                continue
            out.append(CheckSpec("tcp", str(a), **common))  # type: ignore[arg-type]
        else:
            server = _opt(m, "server", problems)
            name = _opt(m, "name", problems)
            try:
                a = parse_address(server or "", 53)
            except ValueError as exc:
                problems.add(m.where, f"PoP {pid}: dns check server: {exc}")
                continue
            if not name:
                problems.add(m.where, f"PoP {pid}: a dns check needs 'name'")
                continue
            out.append(CheckSpec("dns", str(a), name=name,
                                 qtype=(_opt(m, "qtype", problems) or "A").upper(),
                                 rcode=(_opt(m, "rcode", problems) or "NOERROR").upper(),
                                 answer=_opt(m, "answer", problems), **common))  # type: ignore[arg-type]
    return out


def _opt(m: YMap, key: str, problems: Problems) -> str | None:
    v = m.get(key)
    return None if v is None else as_str(v, key, problems)
