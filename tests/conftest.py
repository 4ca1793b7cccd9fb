"""Shared fixtures: a compiled responder over the test zone, and a way to ask it
questions that dnspython (not our code) builds and parses."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rdatatype
import pytest

from geodns.compile import compile_zones
from geodns.wire import Responder
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_file

# Compiled steering maps (geodns.steermap) are built by default after every
# snapshot: seconds of CPU for the bundled City database, in every node a test
# starts.  Tests that are not about them decide without (the same answers,
# tests/test_steermap.py); those that are turn them on themselves.
os.environ.setdefault("GEODNS_STEER_MAPS", "0")

@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """The root logger's handlers and level as each test found them: a test
    that runs a command which sets up logging (``geodns.logs.setup``, bound
    to that test's captured stderr, and removing pytest's own handlers)
    must not send a later test's log lines to a stream closed since."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


HERE = Path(__file__).parent
TEST_ZONE = HERE / "zones" / "test.example.yaml"
# BIND zones served by the reference servers (and, imported, by geodns).
REF_ZONES = {
    "example.test.": HERE / "data" / "ref-basic.zone",
    "second.test.": HERE / "data" / "ref-second.zone",
}


def load_test_zone(path: Path = TEST_ZONE):
    problems = Problems()
    zone = load_zone_file(path, problems)
    assert zone is not None, "\n".join(map(str, problems))
    return zone


@pytest.fixture(scope="session")
def knot() -> Iterator[tuple[str, int]]:
    """Knot serving REF_ZONES, once per test run."""
    from refservers import knot_server, require_binary

    require_binary("knotd")
    with knot_server(REF_ZONES) as address:
        yield address


@pytest.fixture(scope="session")
def nsd() -> Iterator[tuple[str, int]]:
    """NSD serving REF_ZONES, once per test run."""
    from refservers import nsd_server, require_binary

    require_binary("nsd")
    with nsd_server(REF_ZONES) as address:
        yield address


@pytest.fixture(scope="session")
def responder() -> Responder:
    return Responder(compile_zones([load_test_zone()]))


def ask(responder: Responder, qname: str, qtype: str = "A", *, edns: int | None = None,
        payload: int = 1232, udp: bool = True, rd: bool = False, cd: bool = False,
        do: bool = False) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, use_edns=edns if edns is not None else False,
                               payload=payload, want_dnssec=do)
    if not rd:
        q.flags &= ~dns.flags.RD
    if cd:
        q.flags |= dns.flags.CD
    wire = responder.respond(q.to_wire(), udp)
    assert wire is not None
    resp = dns.message.from_wire(wire)
    assert resp.id == q.id
    return resp


def section(rrsets) -> list[str]:
    """Records as sorted 'owner ttl TYPE rdata' strings, owners lower-cased."""
    out = []
    for rrset in rrsets:
        for rd in rrset:
            out.append(f"{rrset.name.to_text().lower()} {rrset.ttl} "
                       f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}")
    return sorted(out)
