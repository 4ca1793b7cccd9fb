"""The ``fleet:`` section of a node's configuration, the fleet's shared
configuration (load_shared_config), and ``geodns check`` for a fleet node.
Every problem is reported with file and line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from geodns import cli
from geodns.config import (
    SHARED_KEYS,
    Config,
    FleetConfig,
    load_config,
    load_config_text,
    load_shared_config,
)
from geodns.health.spec import HealthSettings
from geodns.health.votes import DEFAULT_POLICY, Policy
from geodns.problems import Problems

BASE = Path("/srv/geodns")
NODE = "node.yaml"
SHARED = "etcd:/geodns/config"


def parse(text: str) -> tuple[Config, list[str]]:
    problems = Problems()
    cfg = load_config_text(text, NODE, BASE, problems)
    return cfg, [str(p) for p in problems]


def node_config(fleet: str) -> str:
    """A node's own configuration; ``fleet`` is the body of its ``fleet:``
    section (from line 3 on, indented by two)."""
    return "listen: ['127.0.0.1:0']\nfleet:\n" + "".join(f"  {line}\n"
                                                          for line in fleet.splitlines())


def only(problems: list[str], line: int, *fragments: str) -> None:
    """Exactly one problem, on ``line`` of the node's file, saying ``fragments``."""
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{NODE}:{line}:"), problems
    for fragment in fragments:
        assert fragment in problems[0], problems


# -- fleet: ----------------------------------------------------------------------------

def test_fleet_section_parses() -> None:
    cfg, problems = parse(node_config(
        "etcd: [http://10.0.0.1:2379, 'https://etcd-2.example:2379/', 'http://[::1]:2379']\n"
        "node: fra-1.example_a\n"
        "prefix: /dns/prod/\n"
        "lease_ttl: 5\n"
        "timeout: 0.5\n"
        "cache: state/fleet.json\n"))
    assert problems == []
    assert cfg.fleet == FleetConfig(
        ("http://10.0.0.1:2379", "https://etcd-2.example:2379", "http://[::1]:2379"),
        "fra-1.example_a", "/dns/prod/", 5, 0.5, BASE / "state" / "fleet.json")


@pytest.mark.parametrize("cache,expected", [
    (None, BASE / ".geodns-fleet-n1.json"),  # the default: next to the configuration
    ("null", None),  # no cache: a start without etcd serves nothing
    ("~", None),
    ("/var/cache/geodns.json", Path("/var/cache/geodns.json")),
    ("cache.json", BASE / "cache.json"),
])
def test_fleet_cache(cache: str | None, expected: Path | None) -> None:
    body = "etcd: http://127.0.0.1:2379\nnode: n1\n" + (f"cache: {cache}\n" if cache else "")
    cfg, problems = parse(node_config(body))
    assert problems == []
    assert cfg.fleet is not None
    assert cfg.fleet.cache == expected
    assert cfg.fleet.etcd == ("http://127.0.0.1:2379",)  # one URL without a list
    assert (cfg.fleet.prefix, cfg.fleet.lease_ttl, cfg.fleet.timeout) == ("/geodns/", 10, 2.0)


GOOD = {"etcd": "etcd: [http://127.0.0.1:2379]", "node": "node: n1"}


@pytest.mark.parametrize("lines,line,fragments", [
    # line 3 is the first line of the fleet section
    ({"etcd": "etcd: [ftp://127.0.0.1:2379]"}, 3, ("'ftp://127.0.0.1:2379'",
                                                  "not an etcd client URL")),
    ({"etcd": "etcd: [http://127.0.0.1:2379/v3]"}, 3, ("not an etcd client URL",)),
    ({"etcd": "etcd: ['127.0.0.1:2379']"}, 3, ("not an etcd client URL",)),
    ({"etcd": "etcd: []"}, 3, ("give the etcd client URLs",)),
    ({"etcd": "etcd: [{host: a}]"}, 3, ("fleet etcd endpoint must be a string",)),
    ({"etcd": ""}, 3, ("give the etcd client URLs",)),  # missing: the section's line
    ({"node": ""}, 3, ("give this node's name",)),
    ({"node": "node: 'fra 1'"}, 4, ("'fra 1'", "letters, digits")),
    ({"node": "node: -fra"}, 4, ("'-fra'", "letters, digits")),
    ({"node": "node: fra/1"}, 4, ("letters, digits",)),
    ({"node": "node: " + "n" * 64}, 4, ("at most 63",)),
    ({"node": "node: [a, b]"}, 4, ("fleet node must be a string",)),
    ({"prefix": "prefix: geodns/"}, 5, ("'geodns/'", "start and end with '/'")),
    ({"prefix": "prefix: /geodns"}, 5, ("start and end with '/'",)),
    ({"lease_ttl": "lease_ttl: 1"}, 5, ("lease_ttl 1 is out of range (2..3600)",)),
    ({"lease_ttl": "lease_ttl: 3601"}, 5, ("out of range (2..3600)",)),
    ({"lease_ttl": "lease_ttl: ten"}, 5, ("lease_ttl must be an integer",)),
    ({"timeout": "timeout: 0"}, 5, ("fleet timeout 0.0 is out of range",)),
    ({"cache": "cache: ''"}, 5, ("fleet cache is empty",)),
    ({"peers": "peers: 3"}, 5, ("unknown key 'peers' in fleet",)),
])
def test_fleet_problems_have_their_line(lines: dict[str, str], line: int,
                                        fragments: tuple[str, ...]) -> None:
    body = "\n".join(x for x in {**GOOD, **lines}.values() if x)
    _, problems = parse(node_config(body))
    only(problems, line, *fragments)


@pytest.mark.parametrize("lines", [{"etcd": "etcd: [ftp://x]"}, {"etcd": ""},
                                   {"node": ""}, {"node": "node: 'a b'"}])
def test_no_fleet_without_endpoints_and_a_name(lines: dict[str, str]) -> None:
    cfg, problems = parse(node_config("\n".join(x for x in {**GOOD, **lines}.values() if x)))
    assert problems and cfg.fleet is None


def test_fleet_and_anycast_null_are_off_as_the_documentation_writes_them() -> None:
    cfg, problems = parse("fleet: null\nanycast: ~\n")
    assert not problems
    assert cfg.fleet is None and cfg.anycast is None


def test_fleet_must_be_a_mapping() -> None:
    cfg, problems = parse("fleet: http://127.0.0.1:2379\n")
    only(problems, 1, "fleet must be a mapping")
    assert cfg.fleet is None


def test_shared_keys_in_a_fleet_nodes_own_file_are_reported_each_with_its_line() -> None:
    cfg, problems = parse("""\
listen: ['127.0.0.1:0']
zones: zones
fleet: {etcd: [http://127.0.0.1:2379], node: n1}
health: {interval: 2}
pops:
  fra: {location: [50.11, 8.68]}
default_order: [fra]
latency:
  - {country: DE, pops: {fra: 10}}
keys: keys
""")
    assert cfg.fleet is not None
    assert len(problems) == 6, problems
    for line, key in ((2, "zones"), (4, "health"), (5, "pops"), (7, "default_order"),
                      (8, "latency"), (10, "keys")):
        [p] = [p for p in problems if p.startswith(f"{NODE}:{line}:1: {key}:")]
        assert "comes from the fleet store" in p and "geodns publish" in p


def test_without_fleet_the_same_keys_are_fine() -> None:
    cfg, problems = parse("zones: zones\nhealth: {up_votes: 2}\n"
                          "pops: {fra: {location: [50.11, 8.68]}}\ndefault_order: [fra]\n"
                          "keys: secrets\n")
    assert problems == [] and cfg.fleet is None and cfg.keys_dir == BASE / "secrets"
    assert cfg.health.up_votes == Policy("count", 2)


@pytest.mark.parametrize("value,line,policy", [
    ("2", None, Policy("count", 2)),
    ("'18%'", None, Policy("percent", 18)),
    ("18%", None, Policy("percent", 18)),
    ("any", None, Policy("any")),
    ("0", 2, None),
    ("100%", 2, None),
    ("-1", 2, None),
    ("abc", 2, None),
    ("[2]", 2, None),
])
def test_health_up_votes(value: str, line: int | None, policy: Policy | None) -> None:
    text = f"health:\n  up_votes: {value}\n"
    for name, (cfg, problems) in ((NODE, parse(text)), (SHARED, shared(text))):
        if line is None:
            assert problems == [] and cfg.health.up_votes == policy
        else:
            assert len(problems) == 1 and problems[0].startswith(f"{name}:{line}:13: ")
            assert "up_votes" in problems[0]
            assert cfg.health.up_votes == DEFAULT_POLICY


# -- the fleet's shared configuration -------------------------------------------------

def fleet_node(extra: str = "") -> Config:
    cfg, problems = parse("listen: ['127.0.0.1:5353']\nadmin: {listen: '127.0.0.1:8053', "
                          "token: a-token-of-sixteen-chars}\nworkers: 2\n"
                          "fleet: {etcd: [http://127.0.0.1:2379], node: n1}\n" + extra)
    assert problems == []
    cfg.overrides["workers"] = 2
    return cfg


def shared(text: str, onto: Config | None = None) -> tuple[Config, list[str]]:
    problems = Problems()
    cfg = load_shared_config(text, SHARED, onto if onto is not None else fleet_node(), problems)
    return cfg, [str(p) for p in problems]


SHARED_TEXT = """\
health: {up_votes: 2, grace: 3, interval: 4}
pops:
  fra: {location: [50.11, 8.68], checks: [{type: tcp, address: '192.0.2.1:80'}]}
  iad: {location: [38.95, -77.45]}
default_order: [iad]
latency:
  - {country: DE, pops: {fra: 10, iad: 90}}
"""


def test_shared_configuration_applies_onto_the_nodes_own() -> None:
    node = fleet_node()
    before = copy.deepcopy(node)
    cfg, problems = shared(SHARED_TEXT, node)
    assert problems == []
    # the shared keys come from the fleet ...
    assert list(cfg.pops) == ["fra", "iad"]
    assert cfg.default_order == ("iad", "fra")
    assert cfg.health.up_votes == Policy("count", 2) and cfg.health.grace == 3
    assert cfg.check_defaults["interval"] == 4
    assert [c.target for c in cfg.checks["fra"]] == ["192.0.2.1:80"]
    assert len(cfg.latency) == 1 and cfg.latency[0].country == "DE"
    # ... everything else is the node's own
    assert cfg.listen == node.listen and cfg.admin == node.admin
    assert cfg.admin_token == node.admin_token and cfg.workers == 2
    assert cfg.fleet == node.fleet and cfg.path == node.path
    assert cfg.overrides == {"workers": 2} and cfg.overrides is not node.overrides
    # and the node's config object is not changed
    assert node == before
    assert node.pops == {} and node.health == HealthSettings() and node.latency == ()


def test_shared_configuration_replaces_and_does_not_merge() -> None:
    """Each shared document is applied to the node's own configuration, not
    on top of the previous shared one: a PoP removed is gone."""
    first, _ = shared(SHARED_TEXT)
    second, problems = shared("pops:\n  iad: {location: [38.95, -77.45]}\n", first)
    assert problems == []
    assert list(second.pops) == ["iad"] and second.default_order == ("iad",)
    assert second.health == HealthSettings() and second.latency == () and second.checks == {}
    assert list(first.pops) == ["fra", "iad"]  # not changed either


@pytest.mark.parametrize("key,value", [
    ("listen", "['0.0.0.0:53']"), ("admin", "127.0.0.1:8053"), ("workers", "4"),
    ("zones", "zones"), ("fleet", "{node: x}"), ("geoip", "{database: a.mmdb}"),
    ("log", "{level: debug}"), ("chaos", "{identity: x}"), ("tcp", "{idle_timeout: 3}"),
    ("edns", "{udp_payload: 1232}"), ("reload", "{interval: 1}"),
])
def test_shared_configuration_rejects_a_nodes_own_keys(key: str, value: str) -> None:
    cfg, problems = shared(f"health: {{up_votes: any}}\n{key}: {value}\n"
                           "pops: {fra: {location: [50.11, 8.68]}}\n")
    assert problems == [f"{SHARED}:2:1: {key} is a node's own setting: it goes in each "
                        "node's configuration file, not in the fleet's"]
    assert list(cfg.pops) == ["fra"]  # the rest is still read (every problem at once)


def test_shared_configuration_reports_every_problem_with_its_line() -> None:
    _, problems = shared("""\
health: {up_votes: most}
listen: ['0.0.0.0:53']
colour: blue
pops:
  fra: {location: [50.11, 8.68]}
default_order: [fra, ams]
admin: 127.0.0.1:8053
latency:
  - {asn: 3320, pops: {fra: 5}}
""")
    assert [p.split(": ", 1)[0] for p in problems] == [
        f"{SHARED}:2:1", f"{SHARED}:3:1", f"{SHARED}:7:1", f"{SHARED}:1:20",
        f"{SHARED}:6:22", f"{SHARED}:9:11"]
    assert "unknown key 'colour' in the fleet configuration (expected: " \
        + ", ".join(SHARED_KEYS) + ")" in problems[1]
    assert "'most'" in problems[3]
    assert "unknown PoP 'ams'" in problems[4]
    # a latency entry by ASN needs the node's own geoip.asn_database
    assert "geoip.asn_database" in problems[5]


@pytest.mark.parametrize("text,message", [
    ("", f"{SHARED}:1:1: file is empty"),
    ("- pops\n", f"{SHARED}:1:1: the fleet configuration must be a mapping"),
    ("pops: [\n", f"{SHARED}:2:1: YAML syntax"),
])
def test_shared_configuration_that_is_not_a_mapping(text: str, message: str) -> None:
    node = fleet_node()
    cfg, problems = shared(text, node)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert cfg.pops == {} and cfg.listen == node.listen


# -- geodns check ------------------------------------------------------------------------

def test_check_a_fleet_node_needs_no_zones_directory(tmp_path: Path, capsys) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("listen: ['127.0.0.1:5353']\n"
                    "fleet: {etcd: [http://127.0.0.1:1], node: n1, cache: null}\n")
    assert not (tmp_path / "zones").exists()
    assert cli.main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "configuration OK" in out and err == ""
    problems = Problems()
    assert load_config(path, problems).fleet is not None and not problems


def test_check_a_fleet_node_reports_problems_with_lines(tmp_path: Path, capsys) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("listen: ['127.0.0.1:5353']\n"
                    "zones: zones\n"
                    "fleet:\n"
                    "  etcd: [http://127.0.0.1:2379, etcd-2:2379]\n"
                    "  node: n1\n"
                    "  lease_ttl: 0\n")
    assert cli.main(["check", "--config", str(path)]) == 1
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}:2:1: zones: with 'fleet' set")
    assert lines[1].startswith(f"{path}:4:33: fleet etcd: 'etcd-2:2379' is not an etcd")
    assert lines[2].startswith(f"{path}:6:14: fleet lease_ttl 0 is out of range")
    assert lines[3] == "3 problem(s) found"
