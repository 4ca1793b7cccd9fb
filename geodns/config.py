"""The server configuration file (``geodns.yaml``), validated with positions."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodns import __version__, logs
from geodns.address import DEFAULT_PORT, Address, parse_address

__all__ = ["DEFAULT_PORT", "Address", "Config", "TcpConfig", "check_zones_dir", "load_config",
           "parse_address"]
from geodns.compile import DEFAULT_UDP_PAYLOAD
from geodns.health.checker import HealthSettings
from geodns.health.parse import CHECK_DEFAULTS, check_timing, parse_checks
from geodns.health.probes import CheckSpec
from geodns.steering import STATES, LatencyEntry, Pop
from geodns.yamlsrc import (
    Problems,
    Where,
    YMap,
    YNode,
    YScalar,
    YSeq,
    as_float,
    as_int,
    as_list,
    as_str,
    expect_map,
    load_file,
    load_text,
    unknown_keys,
)


@dataclass
class TcpConfig:
    idle_timeout: float = 10.0
    max_connections: int = 1000


@dataclass
class Config:
    path: Path | None
    listen: list[Address] = field(default_factory=lambda: [Address("127.0.0.1", DEFAULT_PORT)])
    zones_dir: Path = Path("zones")
    admin: Address | None = None
    admin_token: str | None = None  # None: admin changes are disabled
    state_file: Path | None = None  # where admin PoP states are kept
    workers: int = 1
    udp_payload: int = DEFAULT_UDP_PAYLOAD
    tcp: TcpConfig = field(default_factory=TcpConfig)
    reload_interval: float = 1.0
    log_level: str = "info"
    log_format: str = "text"  # or "json"
    query_sample: float = 0.0  # fraction of queries logged (0: no query log)
    pops: dict[str, Pop] = field(default_factory=dict)
    pop_states: dict[str, str] = field(default_factory=dict)  # static health
    checks: dict[str, list[CheckSpec]] = field(default_factory=dict)  # per PoP
    require: dict[str, int | str] = field(default_factory=dict)  # all, any, or a quorum
    health: HealthSettings = field(default_factory=HealthSettings)
    check_defaults: dict[str, float] = field(default_factory=lambda: dict(CHECK_DEFAULTS))
    default_order: tuple[str, ...] = ()
    latency: tuple[LatencyEntry, ...] = ()
    geoip_database: Path | None = None  # None: the bundled GeoLite2 City file
    geoip_asn_database: Path | None = None  # optional GeoLite2-ASN style database
    # CH-class TXT answers; an empty string refuses the question instead.
    identity: str = field(default_factory=socket.gethostname)
    version: str = f"geodns {__version__}"
    # Settings given on the command line, which win over the file's on every
    # reload too (attribute name -> value).
    overrides: dict[str, Any] = field(default_factory=dict)

    def chaos(self) -> dict[str, str]:
        """The CH TXT names answered, as Knot and NSD answer them."""
        out = {}
        if self.identity:
            out.update({"id.server.": self.identity, "hostname.bind.": self.identity})
        if self.version:
            out.update({"version.server.": self.version, "version.bind.": self.version})
        return out


_TOP_KEYS = {"listen", "zones", "admin", "workers", "edns", "tcp", "reload", "log", "chaos",
             "pops", "default_order", "latency", "geoip", "health"}


def load_config(path: Path, problems: Problems) -> Config:
    """Read a configuration file.  Problems are collected; the returned
    config holds defaults wherever a value was wrong."""
    root = load_file(path, problems)
    return _from_root(root, path, path.parent, problems)


def load_config_text(text: str, file: str, base: Path, problems: Problems) -> Config:
    """A configuration document (relative paths in it are relative to
    ``base``)."""
    return _from_root(load_text(text, file, problems), Path(file), base, problems)


def _from_root(root: YNode | None, path: Path, base: Path, problems: Problems) -> Config:
    cfg = Config(path=path)
    top = expect_map(root, "the configuration", problems) if root is not None else None
    cfg.zones_dir = base / "zones"
    if top is None:
        return cfg
    unknown_keys(top, _TOP_KEYS, "the configuration", problems)

    listen = top.get("listen")
    if listen is not None:
        items = as_list(listen)
        addrs = []
        for item in items:
            text = as_str(item, "listen address", problems)
            if text is None:
                continue
            try:
                addrs.append(parse_address(text))
            except ValueError as exc:
                problems.add(item.where, f"listen: {exc}")
        if not addrs and not problems:
            problems.add(listen.where, "listen: give at least one address")
        if addrs:
            cfg.listen = addrs

    zones = top.get("zones")
    if zones is not None:
        text = as_str(zones, "zones", problems)
        if text is not None:
            cfg.zones_dir = (base / text) if not Path(text).is_absolute() else Path(text)

    _admin(top.get("admin"), cfg, base, problems)

    workers = top.get("workers")
    if workers is not None:
        cfg.workers = as_int(workers, "workers", problems, 1, 256) or 1

    _edns(top.get("edns"), cfg, problems)
    _chaos(top.get("chaos"), cfg, problems)
    defaults = _health(top.get("health"), cfg, problems)
    _pops(top.get("pops"), cfg, problems, defaults)
    _default_order(top.get("default_order"), cfg, problems)
    geoip = top.get("geoip")
    if geoip is not None:
        m = expect_map(geoip, "geoip", problems)
        if m is not None:
            unknown_keys(m, {"database", "asn_database"}, "geoip", problems)
            for key in ("database", "asn_database"):
                db = m.get(key)
                if db is None or (isinstance(db, YScalar) and db.is_null):
                    continue
                text = as_str(db, f"geoip {key}", problems)
                if text is not None:
                    path = Path(text) if Path(text).is_absolute() else base / text
                    if not path.is_file():
                        problems.add(db.where, f"geoip {key} {path} does not exist")
                    if key == "database":
                        cfg.geoip_database = path
                    else:
                        cfg.geoip_asn_database = path
    _latency(top.get("latency"), cfg, problems)
    _tcp(top.get("tcp"), cfg, problems)
    reload = top.get("reload")
    if reload is not None:
        m = expect_map(reload, "reload", problems)
        if m is not None:
            unknown_keys(m, {"interval"}, "reload", problems)
            iv = m.get("interval")
            if iv is not None:
                cfg.reload_interval = as_float(iv, "reload interval", problems, 0.1, 60) or 1.0
    log = top.get("log")
    if log is not None:
        m = expect_map(log, "log", problems)
        if m is not None:
            unknown_keys(m, {"level", "format", "query_sample"}, "log", problems)
            lv = m.get("level")
            if lv is not None:
                text = as_str(lv, "log level", problems)
                if text is not None and text.lower() not in ("debug", "info", "warning", "error"):
                    problems.add(lv.where, "log level must be debug, info, warning or error")
                elif text is not None:
                    cfg.log_level = text.lower()
            fmt = m.get("format")
            if fmt is not None:
                text = as_str(fmt, "log format", problems)
                if text is not None and text not in logs.FORMATS:
                    problems.add(fmt.where, "log format must be text or json")
                elif text is not None:
                    cfg.log_format = text
            qs = m.get("query_sample")
            if qs is not None:
                cfg.query_sample = as_float(qs, "log query_sample", problems, 0.0, 1.0) or 0.0
    return cfg


def _edns(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "edns", problems)
    if m is None:
        return
    unknown_keys(m, {"udp_payload"}, "edns", problems)
    v = m.get("udp_payload")
    if v is not None:
        cfg.udp_payload = as_int(v, "edns udp_payload", problems, 512, 4096) or cfg.udp_payload


_POP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _health(node: YNode | None, cfg: Config, problems: Problems) -> dict[str, float]:
    """The ``health:`` section: defaults for every check, and settings."""
    defaults: dict[str, float] = dict(CHECK_DEFAULTS)
    m = expect_map(node, "health", problems)
    if m is None:
        return defaults
    unknown_keys(m, {"interval", "timeout", "rise", "fall", "jitter", "grace", "slow_ms",
                     "concurrency", "flap_window"}, "health", problems)
    check_timing(m, defaults, problems, "health")
    grace, slow, conc = cfg.health.grace, cfg.health.slow_ms, cfg.health.concurrency
    flap = cfg.health.flap_window
    if m.get("flap_window") is not None:
        flap = as_float(m.get("flap_window"), "health flap_window", problems, 0, 86400) or 0.0  # type: ignore[arg-type]
    if m.get("grace") is not None:
        grace = as_float(m.get("grace"), "health grace", problems, 0, 3600) or 0.0  # type: ignore[arg-type]
    if m.get("slow_ms") is not None:
        slow = as_float(m.get("slow_ms"), "health slow_ms", problems, 0, 60000) or slow  # type: ignore[arg-type]
    if m.get("concurrency") is not None:
        conc = as_int(m.get("concurrency"), "health concurrency", problems, 1, 10000) or conc  # type: ignore[arg-type]
    cfg.health = HealthSettings(grace, slow, conc, flap)
    cfg.check_defaults = defaults
    return defaults


def _pops(node: YNode | None, cfg: Config, problems: Problems,
          defaults: dict[str, float] | None = None) -> None:
    m = expect_map(node, "pops", problems)
    if m is None:
        return
    for order, (key, value) in enumerate(m.items):
        pid = key.text
        if not _POP_ID.match(pid):
            problems.add(key.where, f"PoP id {pid!r} must be lower-case letters, digits, '-' "
                         "or '_' (at most 32)")
            continue
        pm = expect_map(value, f"PoP {pid}", problems)
        if pm is None:
            continue
        unknown_keys(pm, {"location", "city", "country", "continent", "bias", "weight",
                          "state", "checks", "require"}, f"PoP {pid}", problems)
        if pm.get("checks") is not None:
            cfg.checks[pid] = parse_checks(pm.get("checks"), pid,  # type: ignore[arg-type]
                                      defaults or dict(CHECK_DEFAULTS), problems)
        rq = pm.get("require")
        if rq is not None:
            req = as_str(rq, "require", problems) or "all"
            if req in ("all", "any"):
                cfg.require[pid] = req
            elif req.isdigit() and 1 <= int(req) <= len(cfg.checks.get(pid, [])):
                cfg.require[pid] = int(req)
            else:
                problems.add(rq.where, f"PoP {pid}: require must be all, any, or a number of "
                             "checks (a quorum) up to how many it has")
        loc = pm.get("location")
        if not isinstance(loc, YSeq) or len(loc.items) != 2:
            problems.add((loc or pm).where, f"PoP {pid}: location must be [latitude, longitude]")
            continue
        lat = as_float(loc.items[0], "latitude", problems, -90, 90)
        lon = as_float(loc.items[1], "longitude", problems, -180, 180)
        labels: dict[str, str | None] = {}
        for k in ("city", "country", "continent"):
            v = pm.get(k)
            labels[k] = as_str(v, f"PoP {pid} {k}", problems) if v is not None else None
        bias, weight = 0.0, 1.0
        bn, wn = pm.get("bias"), pm.get("weight")
        if bn is not None:
            bias = as_float(bn, f"PoP {pid} bias", problems, -99, 99) or 0.0
        if wn is not None:
            weight = as_float(wn, f"PoP {pid} weight", problems, 0, 1e6) or 1.0
        st = pm.get("state")
        if st is not None:
            text = as_str(st, f"PoP {pid} state", problems)
            if text not in STATES:
                problems.add(st.where, f"PoP {pid}: state must be one of {', '.join(STATES)}")
            elif text is not None:
                cfg.pop_states[pid] = text
        if lat is None or lon is None:
            continue
        cfg.pops[pid] = Pop(pid, lat, lon, labels["city"], labels["country"],
                            labels["continent"], bias, weight, order)


def _default_order(node: YNode | None, cfg: Config, problems: Problems) -> None:
    if node is None:
        cfg.default_order = tuple(cfg.pops)
        return
    items = as_list(node)
    order = []
    for item in items:
        pid = as_str(item, "default_order entry", problems)
        if pid is None:
            continue
        if pid not in cfg.pops:
            problems.add(item.where, f"default_order: unknown PoP {pid!r}")
            continue
        order.append(pid)
    cfg.default_order = tuple(order) + tuple(p for p in cfg.pops if p not in order)


def _latency(node: YNode | None, cfg: Config, problems: Problems) -> None:
    if node is None:
        return
    if not isinstance(node, YSeq):
        problems.add(node.where, "latency must be a list of entries")
        return
    entries = []
    for item in node.items:
        m = expect_map(item, "latency entry", problems)
        if m is None:
            continue
        unknown_keys(m, {"network", "country", "asn", "pops"}, "latency entry", problems)
        net = m.get("network")
        country = m.get("country")
        asn_node = m.get("asn")
        if sum(x is not None for x in (net, country, asn_node)) != 1:
            problems.add(m.where, "a latency entry has one of 'network', 'asn' or 'country'")
            continue
        asn = None
        if asn_node is not None:
            asn = as_int(asn_node, "latency asn", problems, 1, 2**32 - 1)
            if asn is None:
                continue
            if cfg.geoip_asn_database is None:
                problems.add(asn_node.where, "latency by 'asn' needs geoip.asn_database")
        network = None
        if net is not None:
            text = as_str(net, "latency network", problems)
            try:
                network = ipaddress.ip_network(text or "", strict=True)
            except ValueError as exc:
                problems.add(net.where, f"latency network: {exc}")
                continue
        cc = as_str(country, "latency country", problems) if country is not None else None
        pm = expect_map(m.get("pops"), "latency pops", problems)
        if pm is None:
            problems.add(m.where, "a latency entry needs 'pops: {pop: milliseconds}'")
            continue
        values = {}
        for k, v in pm.items:
            if k.text not in cfg.pops:
                problems.add(k.where, f"latency: unknown PoP {k.text!r}")
                continue
            ms = as_float(v, "latency", problems, 0, 100000)
            if ms is not None:
                values[k.text] = ms
        entries.append(LatencyEntry(values, network, cc.upper() if cc else None, asn))
    cfg.latency = tuple(entries)


def _admin(node: YNode | None, cfg: Config, base: Path, problems: Problems) -> None:
    """``admin: ADDR:PORT`` or ``admin: {listen, token, state_file}``."""
    if node is None:
        return
    listen: YNode | None = node
    if isinstance(node, YMap):
        unknown_keys(node, {"listen", "token", "state_file"}, "admin", problems)
        listen = node.get("listen")
        token = node.get("token")
        if token is not None and not (isinstance(token, YScalar) and token.is_null):
            text = as_str(token, "admin token", problems)
            if text is not None and len(text) < 16:
                problems.add(token.where, "admin token: use at least 16 characters")
            cfg.admin_token = text
        sf = node.get("state_file")
        if sf is not None and not (isinstance(sf, YScalar) and sf.is_null):
            text = as_str(sf, "admin state_file", problems)
            if text is not None:
                cfg.state_file = Path(text) if Path(text).is_absolute() else base / text
    if listen is None:
        return
    text = as_str(listen, "admin listen address", problems)
    if text is not None:
        try:
            cfg.admin = parse_address(text, 8053)
        except ValueError as exc:
            problems.add(listen.where, f"admin: {exc}")


def _chaos(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "chaos", problems)
    if m is None:
        return
    unknown_keys(m, {"identity", "version"}, "chaos", problems)
    for key in ("identity", "version"):
        v = m.get(key)
        if v is None:
            continue
        if isinstance(v, YScalar) and (v.is_null or v.text == ""):
            setattr(cfg, key, "")
        else:
            text = as_str(v, f"chaos {key}", problems)
            if text is not None:
                if len(text.encode("utf-8")) > 255:
                    problems.add(v.where, f"chaos {key} is longer than 255 bytes")
                else:
                    setattr(cfg, key, text)


def _tcp(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m: YMap | None = expect_map(node, "tcp", problems)
    if m is None:
        return
    unknown_keys(m, {"idle_timeout", "max_connections"}, "tcp", problems)
    v = m.get("idle_timeout")
    if v is not None:
        cfg.tcp.idle_timeout = as_float(v, "tcp idle_timeout", problems, 0.5, 3600) or 10.0
    v = m.get("max_connections")
    if v is not None:
        cfg.tcp.max_connections = as_int(v, "tcp max_connections", problems, 1, 1_000_000) or 1000


def check_zones_dir(cfg: Config, problems: Problems) -> None:
    if not cfg.zones_dir.is_dir():
        where = Where(str(cfg.path) if cfg.path else "<command line>", 1, 1)
        problems.add(where, f"zones directory {cfg.zones_dir} does not exist")
