"""Every value an operator writes is used as written or rejected with file:line.

Three tables: zone values checked in the served answer (parsed by dnspython,
not our code); configuration values checked in the Config; and values that
are not legal, each rejected by ``geodns check`` as ``file:line:column:
message`` at the value itself.  Only long-standing APIs are used (the zone
loader, the compiler, the CLI), so the same file runs against older trees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from geodns.cli import main
from geodns.compile import compile_zones
from geodns.config import Config, load_config
from geodns.geo import StaticLocator
from geodns.health.view import HealthView
from geodns.steering import Pop, Steering
from geodns.wire import Responder
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_text

POPS = {"fra": Pop("fra", 50.11, 8.68, order=0), "iad": Pop("iad", 38.95, -77.45, order=1)}
APEX = '  "@": {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n'


# --- zone values, as served ---------------------------------------------------

@dataclass(frozen=True)
class Served:
    """``top`` (origin, ttl, soa) and ``records`` make a zone; the answer to
    ``qname qtype`` must have ``ttl`` (in the answer, or for a negative
    answer in the authority section) and, if given, ``rdata``."""

    top: str
    records: str
    qname: str
    qtype: str
    ttl: int
    rdata: str | None = None


SOA = "soa: {mname: ns1, rname: hostmaster, serial: 1}\n"
SERVED = {
    "zone default ttl 0": Served(
        "ttl: 0\n" + SOA, "  www: {A: 192.0.2.1}\n", "www.v.example.", "A", 0, "192.0.2.1"),
    "per-RRset ttl 0": Served(
        "ttl: 600\n" + SOA, "  www: {A: {ttl: 0, value: 192.0.2.1}}\n",
        "www.v.example.", "A", 0, "192.0.2.1"),
    "SOA ttl 0": Served(
        "ttl: 600\nsoa: {mname: ns1, rname: hostmaster, serial: 1, ttl: 0}\n", "",
        "v.example.", "SOA", 0),
    "SOA ttl from a zone ttl 0": Served("ttl: 0\n" + SOA, "", "v.example.", "SOA", 0),
    "SOA minimum 0 (negative TTL)": Served(
        "ttl: 600\nsoa: {mname: ns1, rname: hostmaster, serial: 1, minimum: 0}\n", "",
        "nowhere.v.example.", "A", 0),
    "SOA serial, refresh, retry, expire 0": Served(
        "soa: {mname: ns1, rname: hostmaster, serial: 0, refresh: 0, retry: 0, expire: 0, "
        "minimum: 0}\n", "", "v.example.", "SOA", 3600,
        "ns1.v.example. hostmaster.v.example. 0 0 0 0 0"),
    "SOA rname as an e-mail address": Served(
        'soa: {mname: ns1, rname: "hostmaster@example.com", serial: 1}\n', "",
        "v.example.", "SOA", 3600, "ns1.v.example. hostmaster.example.com. 1 7200 3600 1209600 300"),
    "SOA rname e-mail with dots and a final dot": Served(
        'soa: {mname: ns1, rname: "john.doe@example.net.", serial: 1}\n', "",
        "v.example.", "SOA", 3600,
        "ns1.v.example. john\\.doe.example.net. 1 7200 3600 1209600 300"),
    "MX preference 0": Served(
        SOA, "  www: {MX: {preference: 0, exchange: mail}}\n", "www.v.example.", "MX", 3600,
        "0 mail.v.example."),
    "SRV priority, weight and port 0": Served(
        SOA, "  _x._tcp: {SRV: {priority: 0, weight: 0, port: 0, target: www}}\n",
        "_x._tcp.v.example.", "SRV", 3600, "0 0 0 www.v.example."),
    "steered ttl 0": Served(
        "ttl: 600\n" + SOA, "  www: {A: {ttl: 0, steer: {pops: {fra: 192.0.2.1}}}}\n",
        "www.v.example.", "A", 0, "192.0.2.1"),
    "steered ttl from a zone ttl 0 stays the steered default": Served(
        "ttl: 0\n" + SOA, "  www: {A: {steer: {pops: {fra: 192.0.2.1}}}}\n",
        "www.v.example.", "A", 30, "192.0.2.1"),
}


def _respond(top: str, records: str, qname: str, qtype: str) -> dns.message.Message:
    problems = Problems()
    text = "origin: v.example.\n" + top + "records:\n" + APEX + records
    zone = load_zone_text(text, "z.yaml", "v.example.", problems, pops=POPS)
    assert zone is not None, list(map(str, problems))
    specs = {(o, t): s for o, types in zone.steered.items() for t, s in types.items()}
    responder = Responder(compile_zones([zone]), Steering(POPS, ("fra", "iad"), (), specs),
                          StaticLocator({}), HealthView())
    query = dns.message.make_query(qname, qtype)
    wire = responder.respond(query.to_wire(), True, ("192.0.2.200", 5353))
    assert wire is not None
    return dns.message.from_wire(wire)


@pytest.mark.parametrize("case", SERVED.values(), ids=SERVED.keys())
def test_zone_value_is_served_as_written(case: Served) -> None:
    msg = _respond(case.top, case.records, case.qname, case.qtype)
    rdtype = dns.rdatatype.from_text(case.qtype)
    answer = [r for r in msg.answer if r.rdtype == rdtype]
    if answer:
        (rrset,) = answer
    else:  # a negative answer: the SOA in the authority section
        assert msg.rcode() == dns.rcode.NXDOMAIN, msg
        (rrset,) = [r for r in msg.authority if r.rdtype == dns.rdatatype.SOA]
    assert rrset.ttl == case.ttl, msg
    if case.rdata is not None:
        assert [rd.to_text() for rd in rrset] == [case.rdata]


def test_imported_zone_with_ttl_0_is_served_with_ttl_0(tmp_path: Path, capsys) -> None:
    src = tmp_path / "db.v"
    src.write_text("$TTL 0\n@ SOA ns1 hostmaster 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.53\n"
                   "www A 192.0.2.1\n")
    assert main(["import-zone", str(src), "--origin", "v.example."]) == 0
    problems = Problems()
    zone = load_zone_text(capsys.readouterr().out, "imported", "v.example.", problems)
    assert zone is not None, list(map(str, problems))
    responder = Responder(compile_zones([zone]))
    wire = responder.respond(dns.message.make_query("www.v.example.", "A").to_wire(), True)
    assert wire is not None
    assert [r.ttl for r in dns.message.from_wire(wire).answer] == [0]


# --- configuration values, as loaded ---------------------------------------------

def _config(tmp_path: Path, text: str) -> Config:
    (tmp_path / "zones").mkdir(exist_ok=True)
    path = tmp_path / "geodns.yaml"
    path.write_text(text)
    problems = Problems()
    cfg = load_config(path, problems)
    assert not problems, list(map(str, problems))
    return cfg


POP = "pops:\n  fra:\n    location: [50.11, 8.68]\n"
CONFIG: dict[str, tuple[str, Callable[[Config], object], object]] = {
    "health slow_ms 0": ("health: {slow_ms: 0}\n", lambda c: c.health.slow_ms, 0),
    "health grace 0": ("health: {grace: 0}\n", lambda c: c.health.grace, 0),
    "health flap_window 0": ("health: {flap_window: 0}\n", lambda c: c.health.flap_window, 0),
    "health jitter 0": ("health: {jitter: 0}\n", lambda c: c.check_defaults["jitter"], 0),
    "check jitter 0": (POP + "    checks: [{type: tcp, address: '192.0.2.1:80', jitter: 0}]\n",
                       lambda c: c.checks["fra"][0].jitter, 0),
    "PoP bias 0": (POP + "    bias: 0\n", lambda c: c.pops["fra"].bias, 0),
    "PoP at latitude and longitude 0": ("pops:\n  nul: {location: [0, 0]}\n",
                                        lambda c: (c.pops["nul"].latitude,
                                                   c.pops["nul"].longitude), (0, 0)),
    "latency 0 ms": (POP + "latency: [{network: 192.0.2.0/24, pops: {fra: 0}}]\n",
                     lambda c: c.latency[0].latencies["fra"], 0),
    "log query_sample 0": ("log: {query_sample: 0}\n", lambda c: c.query_sample, 0),
    "listen without a port is port 53": ("listen: [192.0.2.53]\n",
                                         lambda c: [str(a) for a in c.listen],
                                         ["192.0.2.53:53"]),
    "IPv6 listen without a port is port 53": ('listen: ["[::1]"]\n',
                                              lambda c: [str(a) for a in c.listen],
                                              ["[::1]:53"]),
    "listen port 0 (any free port)": ("listen: [127.0.0.1:0]\n",
                                      lambda c: [str(a) for a in c.listen], ["127.0.0.1:0"]),
    "no listen key: the built-in default": ("workers: 1\n", lambda c: [str(a) for a in c.listen],
                                            ["127.0.0.1:5300"]),
    "dns check server without a port is port 53": (
        POP + "    checks: [{type: dns, server: 192.0.2.1, name: example.com}]\n",
        lambda c: c.checks["fra"][0].target, "192.0.2.1:53"),
    "dns check rcode as a number means its name": (
        POP + "    checks: [{type: dns, server: '[::1]:53', name: x., rcode: 3}]\n",
        lambda c: (c.checks["fra"][0].target, c.checks["fra"][0].rcode),
        ("[::1]:53", "NXDOMAIN")),
}


@pytest.mark.parametrize("text,get,expected", CONFIG.values(), ids=CONFIG.keys())
def test_config_value_is_used_as_written(tmp_path: Path, text: str,
                                         get: Callable[[Config], object],
                                         expected: object) -> None:
    assert get(_config(tmp_path, text)) == expected


def test_load_config_text_matches_load_config(tmp_path: Path) -> None:
    from geodns.config import load_config_text

    text = "health: {slow_ms: 0}\nzones: z\nlisten: ['[::1]']\n"
    problems = Problems()
    cfg = load_config_text(text, "etcd:/geodns/config", tmp_path, problems)
    assert not problems
    assert (cfg.health.slow_ms, cfg.zones_dir, [str(a) for a in cfg.listen]) == \
        (0, tmp_path / "z", ["[::1]:53"])
    assert cfg.path is None
    problems = Problems()
    load_config_text("listen: ['::1:5300']\n", "etcd:/geodns/config", tmp_path, problems)
    assert [str(p) for p in problems] == [
        "etcd:/geodns/config:1:10: listen: '::1:5300': IPv6 addresses go in brackets: "
        "[::1] or [::1]:5300"]


# --- rejected values: `geodns check` names the file, line and column -------------

GOOD_ZONE = "soa: {mname: ns1, rname: hostmaster}\nrecords:\n" + APEX


def _where(text: str, needle: str) -> tuple[int, int]:
    """Line and column (1-based) of the first ``needle`` in ``text``."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _check(tmp_path: Path, capsys, config: str, zone: str = GOOD_ZONE) -> tuple[Path, Path,
                                                                               list[str]]:
    zones = tmp_path / "zones"
    zones.mkdir()
    zone_file = zones / "v.example.yaml"
    zone_file.write_text(zone)
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(config)
    code = main(["check", "--config", str(cfg)])
    err = capsys.readouterr().err.splitlines()
    assert code == 1, err
    return cfg, zone_file, err


CHECK = "    checks: [{type: %s}]\n"
REJECTED_CONFIG = {
    "unbracketed IPv6 listen with a port": ('listen: ["::1:5300"]\n', '"::1:5300"',
                                            "IPv6 addresses go in brackets: [::1] or [::1]:5300"),
    "unbracketed IPv6 listen": ('listen: ["2001:db8::53"]\n', '"2001:db8::53"',
                                "IPv6 addresses go in brackets"),
    "IPv4 address in brackets": ('listen: ["[192.0.2.1]:53"]\n', '"[192.0.2.1]:53"',
                                 "brackets hold an IPv6 address"),
    "admin address without a port": ("admin: 127.0.0.1\n", "127.0.0.1",
                                     "needs a port: there is no standard admin port"),
    "unbracketed IPv6 admin address": ('admin: {listen: "::1:8053"}\n', '"::1:8053"',
                                       "IPv6 addresses go in brackets"),
    "PoP weight 0": (POP + "    weight: 0\n", "weight",
                     "weight is not supported (steering does not use PoP weights)"),
    "PoP weight 1": (POP + "    weight: 1\n", "weight", "weight is not supported"),
    "empty require": (POP + "    require: ''\n", "''", "require must be all, any"),
    "empty latency country": (POP + "latency: [{country: '', pops: {fra: 10}}]\n", "''",
                              "two-letter country code"),
    "empty zones directory": ("zones: ''\n", "''", "zones is empty"),
    "empty state_file": ("admin: {listen: '127.0.0.1:8053', state_file: ''}\n", "''",
                         "state_file is empty"),
    "tcp check address without a port": (
        POP + CHECK % "tcp, address: 192.0.2.1", "192.0.2.1", "needs a port"),
    "unbracketed IPv6 tcp check address": (
        POP + CHECK % "tcp, address: '2001:db8::1:80'", "'2001:db8::1:80'",
        "IPv6 addresses go in brackets"),
    "unbracketed IPv6 dns check server": (
        POP + CHECK % "dns, server: '::1', name: x.", "'::1'", "IPv6 addresses go in brackets"),
    "empty http method": (POP + CHECK % "http, url: 'http://192.0.2.1/', method: ''", "''",
                          "method is empty"),
    "empty http host": (POP + CHECK % "http, url: 'http://192.0.2.1/', host: ''", "''",
                        "host is empty"),
    "empty expect list": (POP + CHECK % "http, url: 'http://192.0.2.1/', expect: []", "[]",
                          "expect needs at least one status code"),
    "unknown dns qtype": (POP + CHECK % "dns, server: 192.0.2.1, name: x., qtype: AAAAA",
                          "AAAAA", "qtype 'AAAAA' is not a record type"),
    "empty dns rcode": (POP + CHECK % "dns, server: 192.0.2.1, name: x., rcode: ''", "''",
                        "is not an rcode"),
    "empty dns answer": (POP + CHECK % "dns, server: 192.0.2.1, name: x., answer: ''", "''",
                         "answer is empty"),
}


@pytest.mark.parametrize("config,needle,message", REJECTED_CONFIG.values(),
                         ids=REJECTED_CONFIG.keys())
def test_check_rejects_config_value_at_its_position(tmp_path: Path, capsys, config: str,
                                                    needle: str, message: str) -> None:
    cfg, _, err = _check(tmp_path, capsys, config)
    line, col = _where(config, needle)
    assert any(e.startswith(f"{cfg}:{line}:{col}: ") and message in e for e in err), err


STEERED = "  www: {A: {steer: {pops: {fra: 192.0.2.1}, all_down: {answer: []}}}}\n"
REJECTED_ZONE = {
    "empty origin": ("origin: ''\n" + GOOD_ZONE, "''", "origin is empty"),
    "rname e-mail without a domain": (
        "soa: {mname: ns1, rname: 'hostmaster@'}\nrecords:\n" + APEX, "'hostmaster@'",
        "an e-mail address is LOCAL@DOMAIN"),
    "rname e-mail with two @": (
        "soa: {mname: ns1, rname: 'a@b@example.com'}\nrecords:\n" + APEX, "'a@b@example.com'",
        "an e-mail address is LOCAL@DOMAIN"),
    "all_down answer with no values": (GOOD_ZONE + STEERED, "[]",
                                       "all_down answer needs at least one value"),
}


@pytest.mark.parametrize("zone,needle,message", REJECTED_ZONE.values(), ids=REJECTED_ZONE.keys())
def test_check_rejects_zone_value_at_its_position(tmp_path: Path, capsys, zone: str,
                                                  needle: str, message: str) -> None:
    _, zone_file, err = _check(tmp_path, capsys, POP, zone)
    line, col = _where(zone, needle)
    assert any(e.startswith(f"{zone_file}:{line}:{col}: ") and message in e for e in err), err
