"""The server configuration file (``geodns.yaml``), validated with positions."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from geodns import __version__, logs, privileges
from geodns.address import DNS_PORT, Address, MissingPort, parse_address
from geodns.compile import DEFAULT_UDP_PAYLOAD
from geodns.cookies import parse_secret
from geodns.health.parse import CHECK_DEFAULTS, check_timing, parse_checks
from geodns.health.spec import CheckSpec, HealthSettings
from geodns.health.votes import parse_policy
from geodns.ratelimit import CLASSES, NO_HELPER, RateLimitConfig, available
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
    load_text,
    unknown_keys,
)

__all__ = ["DEFAULT_LISTEN", "DNS_PORT", "SHARED_KEYS", "Address", "AnycastConfig", "Config",
           "CookiesConfig", "FleetConfig", "RateLimitConfig",
           "TcpConfig", "check_zones_dir", "load_config", "load_config_text",
           "load_shared_config", "parse_address", "user_problem"]

# Without a ``listen`` key: loopback on an unprivileged port, so that trying
# geodns needs no privileges.  An address written without a port means 53.
DEFAULT_LISTEN = Address("127.0.0.1", 5300)
_T = TypeVar("_T")


@dataclass
class TcpConfig:
    """``tcp:``: the hard limits on TCP connections (docs/abuse.md, Hard limits)."""

    idle_timeout: float = 10.0  # seconds without a query before a connection is closed
    initial_timeout: float = 5.0  # seconds from accept to the first complete query
    query_timeout: float = 2.0  # seconds from a message's first byte to its last
    send_timeout: float = 5.0  # seconds a client may leave its answers unread at the caps
    max_connections: int = 1000  # in all; at the cap the least recently active is closed
    max_connections_per_network: int = 100  # per client network; the same, in the network
    ipv4_prefix_length: int = 24  # what a client network is
    ipv6_prefix_length: int = 56
    max_pipelined: int = 100  # answers held in geodns's buffer for one connection
    max_write_buffer: int = 65536  # bytes of answers held for one connection


@dataclass(frozen=True)
class FleetConfig:
    """``fleet:``: where this node's shared configuration and zones come
    from (etcd), and who it is in the fleet."""

    etcd: tuple[str, ...]  # client URLs of the etcd members
    node: str  # this node's name in the fleet (unique)
    prefix: str = "/geodns/"
    lease_ttl: int = 10  # seconds: how long a silent node's votes still count
    timeout: float = 2.0  # seconds per etcd request
    cache: Path | None = None  # the last snapshot applied, kept for a start without etcd


@dataclass(frozen=True)
class CookiesConfig:
    """``cookies:``: DNS cookies (RFC 7873, server cookies of RFC 9018).
    The first secret makes new server cookies; every one verifies them."""

    secrets: tuple[bytes, ...] = field(repr=False)  # 16 bytes each; never in a log line


@dataclass(frozen=True)
class AnycastConfig:
    """``anycast:``: the routes this node announces while it is fit to serve,
    and the BGP speaker that announces them."""

    prefixes: tuple[str, ...]  # e.g. 192.0.2.53/32, 2001:db8::53/128
    speaker: str = "exabgp"  # "exabgp" (runs geodns anycast-exabgp) or "bird" (birdc)
    hold_down: float = 10.0  # seconds fit before announcing again after a withdraw
    birdc: str = "birdc"
    bird_socket: Path | None = None  # None: birdc's default
    # BIRD static protocols holding the prefixes (one per address family).
    bird_protocols: tuple[str, ...] = ("geodns_anycast4", "geodns_anycast6")
    check_name: str | None = None  # None: the SOA of the first zone served
    check_type: str = "SOA"
    check_interval: float = 1.0
    check_timeout: float = 0.5
    check_fall: int = 2  # failed self-checks in a row that make the node unfit


@dataclass
class Config:
    path: Path | None
    listen: list[Address] = field(default_factory=lambda: [DEFAULT_LISTEN])
    zones_dir: Path = Path("zones")
    keys_dir: Path = Path("keys")  # DNSSEC private keys, named by zones' dnssec: settings
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
    fleet: FleetConfig | None = None  # None: configuration and zones from files
    # On SIGTERM: seconds still answering (not ready, routes withdrawn) before stopping.
    lameduck: float = 3.0
    # Where ``geodns restart`` finds the running node (None: beside the
    # configuration file; none without one).
    control_socket: Path | None = None
    restart_timeout: float = 60.0  # seconds a successor has to start serving
    anycast: AnycastConfig | None = None  # None: this node announces no routes
    cookies: CookiesConfig | None = None  # None: COOKIE options are ignored
    # ``USER[:GROUP]`` a node started as root becomes before it reads a zone
    # (geodns.privileges); None: it runs as it was started.
    user: str | None = None
    rate_limit: RateLimitConfig | None = None  # None: UDP answers are not rate limited
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
             "pops", "default_order", "latency", "geoip", "health", "fleet", "lifecycle",
             "anycast", "user", "cookies", "rate_limit", "keys"}
# What a fleet shares (published to etcd with ``geodns publish``); every other
# key is a node's own.  Cookie secrets are shared so that every node of an
# anycast address accepts the cookies any other made, and a rollover is one
# publish.
SHARED_KEYS = ("health", "pops", "default_order", "latency", "cookies")


def load_config(path: Path, problems: Problems) -> Config:
    """Read a configuration file: :func:`load_config_text` on its contents,
    with relative paths taken from the file's directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(Where(str(path), 1, 1), f"cannot read: {exc}")
        cfg = Config(path=path)
        cfg.zones_dir = path.parent / "zones"
        cfg.keys_dir = path.parent / "keys"
        return cfg
    cfg = load_config_text(text, str(path), path.parent, problems)
    cfg.path = path
    return cfg


def load_config_text(text: str, file: str, base: Path, problems: Problems) -> Config:
    """Validate a configuration given as YAML text.  ``file`` names it in
    problems (``file:line:column: message``); relative paths in it are taken
    from ``base``.  Every problem is collected; the returned config holds the
    defaults wherever a value was wrong, and is only usable when none was
    found.  ``Config.path`` is left None: set it when the text came from a
    file."""
    cfg = Config(path=None)
    cfg.zones_dir = base / "zones"
    cfg.keys_dir = base / "keys"
    # Beside the configuration file, named after it: nodes whose files share
    # a directory do not share a control socket.
    cfg.control_socket = base / f".{Path(file).stem}.sock"
    root = load_text(text, file, problems)
    top = expect_map(root, "the configuration", problems) if root is not None else None
    if top is None:
        return cfg
    unknown_keys(top, _TOP_KEYS, "the configuration", problems)

    listen = top.get("listen")
    if listen is not None:
        items = as_list(listen)
        addrs = []
        for item in items:
            addr = as_str(item, "listen address", problems)
            if addr is None:
                continue
            try:
                addrs.append(parse_address(addr, DNS_PORT))
            except ValueError as exc:
                problems.add(item.where, f"listen: {exc}")
        if not items:
            problems.add(listen.where, "listen: give at least one address")
        if addrs:
            cfg.listen = addrs

    zones = top.get("zones")
    if zones is not None:
        zones_dir = _path(zones, "zones", base, problems)
        if zones_dir is not None:
            cfg.zones_dir = zones_dir

    keys = top.get("keys")
    if keys is not None:
        keys_dir = _path(keys, "keys", base, problems)
        if keys_dir is not None:
            cfg.keys_dir = keys_dir

    _admin(top.get("admin"), cfg, base, problems)

    workers = top.get("workers")
    if workers is not None:
        n = as_int(workers, "workers", problems, 1, 256)
        if n is not None:
            cfg.workers = n

    _edns(top.get("edns"), cfg, problems)
    _chaos(top.get("chaos"), cfg, problems)
    defaults = _health(top.get("health"), cfg, problems)
    _pops(top.get("pops"), cfg, problems, defaults)
    _default_order(top.get("default_order"), cfg, problems)
    _geoip(top.get("geoip"), cfg, base, problems)
    _latency(top.get("latency"), cfg, problems)
    _tcp(top.get("tcp"), cfg, problems)
    _reload(top.get("reload"), cfg, problems)
    _log(top.get("log"), cfg, problems)
    _fleet(_unless_null(top.get("fleet")), cfg, base, problems)
    _lifecycle(top.get("lifecycle"), cfg, file, base, problems)
    _anycast(_unless_null(top.get("anycast")), cfg, base, problems)
    _user(top.get("user"), cfg, problems)
    _cookies(top.get("cookies"), cfg, problems)
    _rate_limit(_unless_null(top.get("rate_limit")), cfg, problems)
    if cfg.fleet is not None:
        for key, _ in top.items:
            # The zones and the DNSSEC keys that sign them are the fleet's,
            # published together: a node reads neither from its own disk.
            if key.text in SHARED_KEYS or key.text in ("zones", "keys"):
                how = "geodns publish --keys DIR" if key.text == "keys" else "geodns publish"
                problems.add(key.where, f"{key.text}: with 'fleet' set, it comes from the "
                             f"fleet store (publish it with '{how}'); remove it here")
    return cfg


def _lifecycle(node: YNode | None, cfg: Config, file: str, base: Path,
               problems: Problems) -> None:
    """``lifecycle``: stopping (lameduck) and restarting (the control socket)."""
    m = expect_map(node, "lifecycle", problems)
    if m is None:
        return
    unknown_keys(m, {"lameduck", "control_socket", "restart_timeout"}, "lifecycle", problems)
    v = m.get("lameduck")
    if v is not None:
        cfg.lameduck = _or_keep(as_float(v, "lifecycle lameduck", problems, 0, 3600),
                                cfg.lameduck)
    v = m.get("restart_timeout")
    if v is not None:
        cfg.restart_timeout = _or_keep(
            as_float(v, "lifecycle restart_timeout", problems, 1, 3600), cfg.restart_timeout)
    v = m.get("control_socket")
    if v is not None:
        if isinstance(v, YScalar) and v.is_null:
            cfg.control_socket = None
        else:
            path = _path(v, "lifecycle control_socket", base, problems)
            if path is not None and len(str(path).encode()) > 107:
                problems.add(v.where, f"lifecycle control_socket: {path} is longer than a "
                             "Unix socket path can be (107 bytes)")
            elif path is not None:
                cfg.control_socket = path


def _user(node: YNode | None, cfg: Config, problems: Problems) -> None:
    """``user: USER[:GROUP]``: who a node started as root runs as; it must
    be in the passwd (and group) database of this machine."""
    if node is None or (isinstance(node, YScalar) and node.is_null):
        return
    text = as_str(node, "user", problems)
    # Set even when rejected: ``geodns serve`` then reads nothing more as root.
    cfg.user = text if text is not None else ""
    if text is not None:
        user_problem(text, node.where, problems)


def user_problem(text: str, where: Where, problems: Problems, what: str = "user") -> None:
    """Report ``text`` (``user:``, ``--user``) if it names no usable user."""
    try:
        privileges.resolve(text)
    except ValueError as exc:
        problems.add(where, f"{what}: {exc}")


_PROTOCOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _unless_null(node: YNode | None) -> YNode | None:
    """A section written as ``null`` (``fleet: null``, as the documentation
    shows the defaults): the same as leaving it out."""
    return None if isinstance(node, YScalar) and node.is_null else node


def _anycast(node: YNode | None, cfg: Config, base: Path, problems: Problems) -> None:
    m = expect_map(node, "anycast", problems)
    if m is None:
        return
    unknown_keys(m, {"prefixes", "speaker", "hold_down", "bird", "check"}, "anycast", problems)
    prefixes = []
    pn = m.get("prefixes")
    for item in as_list(pn) if pn is not None else []:
        text = as_str(item, "anycast prefix", problems)
        if text is None:
            continue
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            problems.add(item.where, f"anycast prefix: {exc}")
            continue
        prefixes.append(str(net))
    if not prefixes:
        problems.add((pn or m).where, "anycast: give the prefixes to announce "
                     "(prefixes: [192.0.2.53/32, ...])")
    speaker = "exabgp"
    sn = m.get("speaker")
    if sn is not None:
        text = as_str(sn, "anycast speaker", problems)
        if text not in ("exabgp", "bird"):
            problems.add(sn.where, "anycast speaker must be exabgp or bird")
        else:
            speaker = text
    hold = 10.0
    hn = m.get("hold_down")
    if hn is not None:
        hold = _or_keep(as_float(hn, "anycast hold_down", problems, 0, 3600), hold)
    birdc, bird_socket = "birdc", None
    protocols: tuple[str, ...] = ("geodns_anycast4", "geodns_anycast6")
    bm = expect_map(m.get("bird"), "anycast bird", problems)
    if bm is not None:
        unknown_keys(bm, {"birdc", "socket", "protocols"}, "anycast bird", problems)
        v = bm.get("birdc")
        if v is not None:
            birdc = as_str(v, "anycast bird birdc", problems) or birdc
        v = bm.get("socket")
        if v is not None:
            bird_socket = _path(v, "anycast bird socket", base, problems)
        v = bm.get("protocols")
        if v is not None:
            names = []
            for item in as_list(v):
                text = as_str(item, "anycast bird protocol", problems)
                if text is not None and not _PROTOCOL.match(text):
                    problems.add(item.where, f"anycast bird protocol {text!r}: a BIRD "
                                 "protocol name (letters, digits, '_')")
                elif text is not None:
                    names.append(text)
            protocols = tuple(names) or protocols
    check: dict[str, object] = {}
    cm = expect_map(m.get("check"), "anycast check", problems)
    if cm is not None:
        unknown_keys(cm, {"name", "type", "interval", "timeout", "fall"}, "anycast check",
                     problems)
        v = cm.get("name")
        if v is not None:
            check["check_name"] = as_str(v, "anycast check name", problems)
        v = cm.get("type")
        if v is not None:
            check["check_type"] = (as_str(v, "anycast check type", problems) or "SOA").upper()
        for key, low, high in (("interval", 0.1, 60), ("timeout", 0.05, 10)):
            v = cm.get(key)
            if v is not None:
                got = as_float(v, f"anycast check {key}", problems, low, high)
                if got is not None:
                    check[f"check_{key}"] = got
        v = cm.get("fall")
        if v is not None:
            got_fall = as_int(v, "anycast check fall", problems, 1, 100)
            if got_fall is not None:
                check["check_fall"] = got_fall
    if prefixes:
        cfg.anycast = AnycastConfig(tuple(prefixes), speaker, hold, birdc, bird_socket,
                                    protocols, **check)  # type: ignore[arg-type]


def load_shared_config(text: str, file: str, onto: Config, problems: Problems) -> Config:
    """A fleet's shared configuration (the keys of :data:`SHARED_KEYS`)
    applied to a node's own configuration ``onto``, which is not changed.
    Every other key is a problem: a node's own settings stay in its own file."""
    cfg = replace(onto, pops={}, pop_states={}, checks={}, require={},
                  health=HealthSettings(), check_defaults=dict(CHECK_DEFAULTS),
                  default_order=(), latency=(), cookies=None,
                  overrides=dict(onto.overrides))
    root = load_text(text, file, problems)
    top = expect_map(root, "the fleet configuration", problems) if root is not None else None
    if top is None:
        return cfg
    for key, _ in top.items:
        if key.text in _TOP_KEYS and key.text not in SHARED_KEYS:
            problems.add(key.where, f"{key.text} is a node's own setting: it goes in each "
                         "node's configuration file, not in the fleet's")
        elif key.text not in SHARED_KEYS:
            problems.add(key.where, f"unknown key {key.text!r} in the fleet configuration "
                         f"(expected: {', '.join(SHARED_KEYS)})")
    defaults = _health(top.get("health"), cfg, problems)
    _pops(top.get("pops"), cfg, problems, defaults)
    _default_order(top.get("default_order"), cfg, problems)
    _latency(top.get("latency"), cfg, problems)
    _cookies(top.get("cookies"), cfg, problems)
    return cfg


def _cookies(node: YNode | None, cfg: Config, problems: Problems) -> None:
    """``cookies: {secrets: [32 hex characters, ...]}``; null or absent: no cookies."""
    m = expect_map(_unless_null(node), "cookies", problems)
    if m is None:
        return
    unknown_keys(m, {"secrets"}, "cookies", problems)
    sn = m.get("secrets")
    items = as_list(sn) if sn is not None and not (isinstance(sn, YScalar) and sn.is_null) \
        else []
    if not items:
        problems.add((sn or m).where, "cookies: give at least one secret (secrets: [32 hex "
                     "characters], e.g. from: openssl rand -hex 16); or cookies: null for none")
        return
    secrets: list[bytes] = []
    for item in items:
        text = as_str(item, "cookies secret", problems)
        if text is None:
            continue
        try:
            secret = parse_secret(text)
        except ValueError as exc:
            problems.add(item.where, f"cookies secret: {exc}")
            continue
        if secret in secrets:
            problems.add(item.where, "cookies secret: the same secret twice")
            continue
        secrets.append(secret)
    if len(secrets) == len(items):
        cfg.cookies = CookiesConfig(tuple(secrets))


_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _fleet(node: YNode | None, cfg: Config, base: Path, problems: Problems) -> None:
    m = expect_map(node, "fleet", problems)
    if m is None:
        return
    unknown_keys(m, {"etcd", "prefix", "node", "lease_ttl", "timeout", "cache"}, "fleet",
                 problems)
    endpoints = []
    etcd = m.get("etcd")
    for item in as_list(etcd) if etcd is not None else []:
        url = as_str(item, "fleet etcd endpoint", problems)
        if url is None:
            continue
        if not re.match(r"^https?://[^/\s]+/?$", url):
            problems.add(item.where, f"fleet etcd: {url!r} is not an etcd client URL "
                         "(http://HOST:PORT)")
            continue
        endpoints.append(url.rstrip("/"))
    if etcd is None or (etcd is not None and not as_list(etcd)):
        problems.add((etcd or m).where, "fleet: give the etcd client URLs (etcd: [http://HOST:2379, ...])")
    name_node = m.get("node")
    name = as_str(name_node, "fleet node", problems) if name_node is not None else None
    if name_node is None:
        problems.add(m.where, "fleet: give this node's name in the fleet (node: NAME)")
    elif name is not None and not _NODE_NAME.match(name):
        problems.add(name_node.where, f"fleet node {name!r}: use letters, digits, '.', '-' "
                     "or '_' (at most 63)")
        name = None
    prefix = "/geodns/"
    pn = m.get("prefix")
    if pn is not None:
        text = as_str(pn, "fleet prefix", problems)
        if text is not None and not (text.startswith("/") and text.endswith("/")):
            problems.add(pn.where, f"fleet prefix {text!r} must start and end with '/'")
        elif text is not None:
            prefix = text
    ttl = 10
    tn = m.get("lease_ttl")
    if tn is not None:
        ttl = _or_keep(as_int(tn, "fleet lease_ttl", problems, 2, 3600), ttl)
    timeout = 2.0
    ton = m.get("timeout")
    if ton is not None:
        timeout = _or_keep(as_float(ton, "fleet timeout", problems, 0.1, 60), timeout)
    # The last revision applied, kept for a start without etcd; null: none.
    cache = base / f".geodns-fleet-{name}.json" if name is not None else None
    cn = m.get("cache")
    if cn is not None:
        cache = None if isinstance(cn, YScalar) and cn.is_null else \
            _path(cn, "fleet cache", base, problems)
    if endpoints and name is not None:
        cfg.fleet = FleetConfig(tuple(endpoints), name, prefix, ttl, timeout, cache)


def _path(node: YNode, what: str, base: Path, problems: Problems) -> Path | None:
    """A file or directory name, relative to ``base`` unless absolute."""
    text = as_str(node, what, problems)
    if text is None:
        return None
    if not text.strip():
        problems.add(node.where, f"{what} is empty (write '.' for the configuration's "
                     "own directory)")
        return None
    return Path(text) if Path(text).is_absolute() else base / text


def _geoip(node: YNode | None, cfg: Config, base: Path, problems: Problems) -> None:
    m = expect_map(node, "geoip", problems)
    if m is None:
        return
    unknown_keys(m, {"database", "asn_database"}, "geoip", problems)
    for key in ("database", "asn_database"):
        db = m.get(key)
        if db is None or (isinstance(db, YScalar) and db.is_null):
            continue
        path = _path(db, f"geoip {key}", base, problems)
        if path is None:
            continue
        if not path.is_file():
            problems.add(db.where, f"geoip {key} {path} does not exist")
        if key == "database":
            cfg.geoip_database = path
        else:
            cfg.geoip_asn_database = path


def _reload(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "reload", problems)
    if m is None:
        return
    unknown_keys(m, {"interval"}, "reload", problems)
    iv = m.get("interval")
    if iv is not None:
        f = as_float(iv, "reload interval", problems, 0.1, 60)
        if f is not None:
            cfg.reload_interval = f


def _log(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "log", problems)
    if m is None:
        return
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
        f = as_float(qs, "log query_sample", problems, 0.0, 1.0)
        if f is not None:
            cfg.query_sample = f


def _or_keep(value: _T | None, default: _T) -> _T:
    """The value written, or the default when the accessor found it invalid
    (it has recorded a problem then, so the config is rejected anyway)."""
    return default if value is None else value


def _edns(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "edns", problems)
    if m is None:
        return
    unknown_keys(m, {"udp_payload"}, "edns", problems)
    v = m.get("udp_payload")
    if v is not None:
        n = as_int(v, "edns udp_payload", problems, 512, 4096)
        if n is not None:
            cfg.udp_payload = n


_POP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_POP_KEYS = {"location", "city", "country", "continent", "bias", "state", "checks", "require"}
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def _health(node: YNode | None, cfg: Config, problems: Problems) -> dict[str, float]:
    """The ``health:`` section: defaults for every check, and settings."""
    defaults: dict[str, float] = dict(CHECK_DEFAULTS)
    m = expect_map(node, "health", problems)
    if m is None:
        return defaults
    unknown_keys(m, {"interval", "timeout", "rise", "fall", "jitter", "grace", "slow_ms",
                     "concurrency", "flap_window", "up_votes"}, "health", problems)
    check_timing(m, defaults, problems, "health")
    settings = cfg.health
    grace, slow, flap = settings.grace, settings.slow_ms, settings.flap_window
    conc = settings.concurrency
    node = m.get("flap_window")
    if node is not None:
        flap = _or_keep(as_float(node, "health flap_window", problems, 0, 86400), flap)
    node = m.get("grace")
    if node is not None:
        grace = _or_keep(as_float(node, "health grace", problems, 0, 3600), grace)
    node = m.get("slow_ms")
    if node is not None:
        slow = _or_keep(as_float(node, "health slow_ms", problems, 0, 60000), slow)
    node = m.get("concurrency")
    if node is not None:
        conc = _or_keep(as_int(node, "health concurrency", problems, 1, 10000), conc)
    policy = settings.up_votes
    node = m.get("up_votes")
    if node is not None:
        text = as_str(node, "health up_votes", problems)
        if text is not None:
            try:
                policy = parse_policy(text)
            except ValueError as exc:
                problems.add(node.where, f"health up_votes: {exc}")
    cfg.health = HealthSettings(grace, slow, conc, flap, policy)
    cfg.check_defaults = defaults
    return defaults


def _pops(node: YNode | None, cfg: Config, problems: Problems,
          defaults: dict[str, float]) -> None:
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
        for pkey, _ in pm.items:
            if pkey.text == "weight":
                problems.add(pkey.where, f"PoP {pid}: weight is not supported (steering does not "
                             "use PoP weights); remove it, or use bias to grow or shrink the "
                             "PoP's catchment")
        unknown_keys(YMap([(k, v) for k, v in pm.items if k.text != "weight"], pm.where),
                     _POP_KEYS, f"PoP {pid}", problems)
        checks = pm.get("checks")
        if checks is not None:
            cfg.checks[pid] = parse_checks(checks, pid, defaults, problems)
        rq = pm.get("require")
        if rq is not None:
            req = as_str(rq, "require", problems)
            if req in ("all", "any"):
                cfg.require[pid] = req
            elif req is not None and req.isascii() and req.isdigit() \
                    and 1 <= int(req) <= len(cfg.checks.get(pid, [])):
                cfg.require[pid] = int(req)
            elif req is not None:
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
        bias = 0.0
        bn = pm.get("bias")
        if bn is not None:
            bias = _or_keep(as_float(bn, f"PoP {pid} bias", problems, -99, 99), bias)
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
                            labels["continent"], bias, order)


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
            if text is None:
                continue
            try:
                network = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                problems.add(net.where, f"latency network: {exc}")
                continue
        cc = None
        if country is not None:
            cc = as_str(country, "latency country", problems)
            if cc is None:
                continue
            if not _COUNTRY.match(cc):
                problems.add(country.where, f"latency country {cc!r} must be a two-letter "
                             "country code (ISO 3166-1, as the GeoIP database gives it)")
                continue
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
            cfg.state_file = _path(sf, "admin state_file", base, problems)
    if listen is None:
        return
    text = as_str(listen, "admin listen address", problems)
    if text is not None:
        try:
            cfg.admin = parse_address(text, None)
        except MissingPort:
            problems.add(listen.where, f"admin: {text!r} needs a port: there is no standard "
                         "admin port (for example 127.0.0.1:8053)")
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


def _rate_limit(node: YNode | None, cfg: Config, problems: Problems) -> None:
    """``rate_limit:`` (absent or null: off); docs/abuse.md says why the defaults."""
    m = expect_map(node, "rate_limit", problems)
    if m is None:
        return
    unknown_keys(m, {"rate", "slip", "ipv4_prefix", "ipv6_prefix", "table_size", "exempt",
                     "class_rates"}, "rate_limit", problems)
    if not available():
        problems.add(m.where, NO_HELPER)
    d = RateLimitConfig()
    got: dict[str, int] = {}
    for key, lo, hi in (("rate", 1, 1_000_000), ("slip", 0, 10), ("ipv4_prefix", 0, 32),
                        ("ipv6_prefix", 0, 128), ("table_size", 4, 1 << 26)):
        v = m.get(key)
        if v is None:
            continue
        n = as_int(v, f"rate_limit {key}", problems, lo, hi)
        if n is not None and key == "table_size" and n % 4:
            problems.add(v.where, f"rate_limit table_size {n} must be a multiple of 4 (the "
                         "table is made of sets of 4 entries)")
        elif n is not None:
            got[key] = n
    exempt = []
    en = m.get("exempt")
    for item in as_list(_unless_null(en)):
        text = as_str(item, "rate_limit exempt network", problems)
        if text is None:
            continue
        try:
            exempt.append(str(ipaddress.ip_network(text, strict=True)))
        except ValueError as exc:
            problems.add(item.where, f"rate_limit exempt: {exc}")
    class_rates = []
    cm = expect_map(_unless_null(m.get("class_rates")), "rate_limit class_rates", problems)
    for cls, value in cm.items if cm is not None else []:
        if cls.text not in CLASSES:
            problems.add(cls.where, f"rate_limit class_rates: unknown class {cls.text!r} "
                         f"(expected one of: {', '.join(CLASSES)})")
            continue
        n = as_int(value, f"rate_limit class_rates {cls.text}", problems, 1, 1_000_000)
        if n is not None:
            class_rates.append((cls.text, n))
    cfg.rate_limit = RateLimitConfig(
        got.get("rate", d.rate), got.get("slip", d.slip), got.get("ipv4_prefix", d.ipv4_prefix),
        got.get("ipv6_prefix", d.ipv6_prefix), got.get("table_size", d.table_size),
        tuple(exempt), tuple(class_rates))


# tcp: key -> (bounds, integer?).  Timeouts may be a fraction of a second
# (tests use that); none can be switched off: they are hard limits.
_TCP_KEYS: dict[str, tuple[float, float, bool]] = {
    "idle_timeout": (0.5, 3600, False),
    "initial_timeout": (0.1, 3600, False),
    "query_timeout": (0.1, 3600, False),
    "send_timeout": (0.1, 3600, False),
    "max_connections": (1, 1_000_000, True),
    "max_connections_per_network": (1, 1_000_000, True),
    "ipv4_prefix_length": (0, 32, True),
    "ipv6_prefix_length": (0, 128, True),
    "max_pipelined": (1, 65535, True),
    "max_write_buffer": (1024, 64 << 20, True),
}


def _tcp(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m: YMap | None = expect_map(node, "tcp", problems)
    if m is None:
        return
    unknown_keys(m, set(_TCP_KEYS), "tcp", problems)
    for key, (lo, hi, integer) in _TCP_KEYS.items():
        v = m.get(key)
        if v is None:
            continue
        value: float | int | None
        if integer:
            value = as_int(v, f"tcp {key}", problems, int(lo), int(hi))
        else:
            value = as_float(v, f"tcp {key}", problems, lo, hi)
        setattr(cfg.tcp, key, _or_keep(value, getattr(cfg.tcp, key)))


def check_zones_dir(cfg: Config, problems: Problems) -> None:
    """The zones directory exists and this process (the user it runs as)
    can read it."""
    where = Where(str(cfg.path) if cfg.path else "<command line>", 1, 1)
    try:
        is_dir = cfg.zones_dir.is_dir()
    except OSError as exc:  # a parent it may not search
        problems.add(where, f"zones directory {cfg.zones_dir}: {exc.strerror or exc}")
        return
    if not is_dir:
        problems.add(where, f"zones directory {cfg.zones_dir} does not exist")
    elif not os.access(cfg.zones_dir, os.R_OK | os.X_OK):
        problems.add(where, f"zones directory {cfg.zones_dir}: cannot read it (permission "
                     "denied)")
