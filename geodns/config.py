"""The server configuration file (``geodns.yaml``), validated with positions."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

from geodns import __version__
from geodns.compile import DEFAULT_UDP_PAYLOAD
from geodns.yamlsrc import (
    Problems,
    Where,
    YMap,
    YNode,
    YScalar,
    YSeq,
    as_float,
    as_int,
    as_str,
    expect_map,
    load_file,
    unknown_keys,
)

DEFAULT_PORT = 5300


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family_v6 else f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``1.2.3.4:53``, ``[::1]:53``, ``::1`` or ``1.2.3.4`` -> Address."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return Address(host, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port must be a number 0..65535")
    return int(text)


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
    workers: int = 1
    udp_payload: int = DEFAULT_UDP_PAYLOAD
    tcp: TcpConfig = field(default_factory=TcpConfig)
    reload_interval: float = 1.0
    log_level: str = "info"
    # CH-class TXT answers; an empty string refuses the question instead.
    identity: str = field(default_factory=socket.gethostname)
    version: str = f"geodns {__version__}"

    def chaos(self) -> dict[str, str]:
        """The CH TXT names answered, as Knot and NSD answer them."""
        out = {}
        if self.identity:
            out.update({"id.server.": self.identity, "hostname.bind.": self.identity})
        if self.version:
            out.update({"version.server.": self.version, "version.bind.": self.version})
        return out


_TOP_KEYS = {"listen", "zones", "admin", "workers", "edns", "tcp", "reload", "log", "chaos"}


def load_config(path: Path, problems: Problems) -> Config:
    """Read a configuration file.  Problems are collected; the returned
    config holds defaults wherever a value was wrong."""
    cfg = Config(path=path)
    base = path.parent
    root = load_file(path, problems)
    top = expect_map(root, "the configuration", problems) if root is not None else None
    cfg.zones_dir = base / "zones"
    if top is None:
        return cfg
    unknown_keys(top, _TOP_KEYS, "the configuration", problems)

    listen = top.get("listen")
    if listen is not None:
        items = listen.items if isinstance(listen, YSeq) else [listen]
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

    admin = top.get("admin")
    if admin is not None:
        text = as_str(admin, "admin", problems)
        if text is not None:
            try:
                cfg.admin = parse_address(text, 8053)
            except ValueError as exc:
                problems.add(admin.where, f"admin: {exc}")

    workers = top.get("workers")
    if workers is not None:
        cfg.workers = as_int(workers, "workers", problems, 1, 256) or 1

    _edns(top.get("edns"), cfg, problems)
    _chaos(top.get("chaos"), cfg, problems)
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
            unknown_keys(m, {"level"}, "log", problems)
            lv = m.get("level")
            if lv is not None:
                text = as_str(lv, "log level", problems)
                if text is not None and text.lower() not in ("debug", "info", "warning", "error"):
                    problems.add(lv.where, "log level must be debug, info, warning or error")
                elif text is not None:
                    cfg.log_level = text.lower()
    return cfg


def _edns(node: YNode | None, cfg: Config, problems: Problems) -> None:
    m = expect_map(node, "edns", problems)
    if m is None:
        return
    unknown_keys(m, {"udp_payload"}, "edns", problems)
    v = m.get("udp_payload")
    if v is not None:
        cfg.udp_payload = as_int(v, "edns udp_payload", problems, 512, 4096) or cfg.udp_payload


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
