"""Round trip of every record type: a BIND zone that uses them all the way real
zones do (tests/data/ref-types.zone) is served as it is by Knot and NSD and,
through ``geodns import-zone``, by a real ``geodns serve``; every name and
type of the zone (and DS at both delegations, types a name lacks, names
below a cut) gets the same answer from all three, over UDP and TCP.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.zone
import dnscompare as dc
import pytest
from refservers import free_port, knot_server, nsd_server, require_binary

pytestmark = pytest.mark.reference

ZONE = Path(__file__).parent / "data" / "ref-types.zone"
ORIGIN = "types.test."
NORMALIZE: dict[str, Any] = {"authority_ns": False}
# For SVCB and HTTPS, Knot sends the target's addresses (and, for an alias, its
# own set of the type) in the additional section, as RFC 9460 4.2 asks; NSD
# 4.6 sends none.  geodns answers as Knot does; against NSD the additional
# section is left out of the comparison for these.
ADDITIONAL_AS_KNOT = ("SVCB", "HTTPS")


def _zone_cases() -> list[tuple[str, str]]:
    """Every (name, type) the zone holds, and questions around them."""
    zone = dns.zone.from_file(str(ZONE), origin=ORIGIN, relativize=False)
    cases = []
    for name, node in sorted(zone.nodes.items()):
        for rds in node.rdatasets:
            cases.append((name.to_text(), dns.rdatatype.to_text(rds.rdtype)))
    cases += [
        ("secure.types.test.", "DS"),  # the parent side of a signed cut: the DS set, AA
        ("insecure.types.test.", "DS"),  # no DS: NODATA from the parent side
        ("secure.types.test.", "DNSKEY"),  # a referral
        ("host.secure.types.test.", "DS"),  # below the cut: a referral
        ("www.types.test.", "TLSA"),  # types the name lacks: NODATA
        ("www.types.test.", "TYPE65400"),
        ("generic.types.test.", "TYPE65403"),
        ("generic.types.test.", "A"),
        ("nothere.types.test.", "HTTPS"),  # NXDOMAIN
        ("nothere.types.test.", "TYPE65400"),
        ("svc.types.test.", "HTTPS"),
        ("WwW.TyPeS.tEsT.", "HTTPS"),  # the question's case in the answer
        ("host.types.test.", "ANY"),
    ]
    return cases


CASES = _zone_cases()
TRANSPORTS = {"udp-edns": (False, 0), "tcp-plain": (True, None)}


@pytest.fixture(scope="module")
def knot_types() -> Iterator[tuple[str, int]]:
    require_binary("knotd")
    with knot_server({ORIGIN: ZONE}) as address:
        yield address


@pytest.fixture(scope="module")
def nsd_types() -> Iterator[tuple[str, int]]:
    require_binary("nsd")
    with nsd_server({ORIGIN: ZONE}) as address:
        yield address


@pytest.fixture(scope="module")
def geodns_types(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    zones = tmp_path_factory.mktemp("types")
    # No --origin: the file's $ORIGIN says it.
    out = subprocess.run([sys.executable, "-m", "geodns", "import-zone", str(ZONE)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # nothing left out, nothing to warn about
    (zones / f"{ORIGIN}yaml").write_text(out.stdout)
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0",
                             "--listen", f"127.0.0.1:{port}", "--zones", str(zones),
                             "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"geodns exited: {proc.communicate()[1]}")
            try:
                dc.query("127.0.0.1", port, ORIGIN, "SOA", timeout=0.3)
                break
            except (TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _ask(address: tuple[str, int], qname: str, qtype: str, tcp: bool,
         edns: int | None, **norm: Any) -> dict[str, Any]:
    return dc.normalize(dc.query(*address, qname, qtype, tcp=tcp, edns=edns),
                        **(NORMALIZE | norm))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("qname", "qtype"), CASES, ids=[f"{n} {t}" for n, t in CASES])
def test_same_answers_for_every_type(geodns_types: tuple[str, int], knot_types: tuple[str, int],
                                     nsd_types: tuple[str, int], qname: str,
                                     qtype: str, transport: str) -> None:
    tcp, edns = TRANSPORTS[transport]
    for server, address in (("knot", knot_types), ("nsd", nsd_types)):
        norm = {"additional": False} if server == "nsd" and qtype in ADDITIONAL_AS_KNOT else {}
        ours = _ask(geodns_types, qname, qtype, tcp, edns, **norm)
        theirs = _ask(address, qname, qtype, tcp, edns, **norm)
        assert ours == theirs, f"{qname} {qtype}: geodns differs from {server}:\n" + "\n".join(
            dc.diff(ours, theirs, ("geodns", server)))


def test_the_zone_uses_every_type_geodns_names() -> None:
    """The round trip covers every type geodns serves by name (so a type
    added later comes with its reference case)."""
    from geodns import rdata

    written = {dns.rdatatype.RdataType.make(t) for _, t in CASES}
    missing = {rdata.type_name(t) for t in rdata.SERVED_TYPES if t not in written}
    assert missing <= {"CNAME", "PTR", "MX", "SRV"}, missing  # in ref-basic.zone


def test_ds_at_a_signed_delegation_is_the_parents_answer(geodns_types: tuple[str, int]) -> None:
    reply = dc.query(*geodns_types, "secure.types.test.", "DS", edns=0)
    summary = dc.normalize(reply)
    assert summary["rcode"] == "NOERROR" and "AA" in summary["flags"]
    assert len(summary["answer"]) == 2 and summary["authority"] == []
