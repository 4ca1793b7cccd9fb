"""geodns answers as Knot and NSD do, on zones imported from BIND files.

The BIND files in tests/data/ are served as they are by Knot and NSD, and
through ``geodns import-zone`` by a real ``geodns serve`` process.  Every
(name, type) of the agreement table in test_reference_agree.py is asked of
all three over UDP and TCP, with and without EDNS, and every crafted packet
is sent to all three.  Where Knot and NSD agree, geodns must agree with
both; where they differ, geodns matches the one named in ``WE_FOLLOW``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import dnscompare as dc
import pytest
from refservers import free_port
from test_reference_agree import (
    CASES,
    NORMALIZE,
    PROBES,
    TRANSPORTS,
    ZONES,
    check_silence,
    expects_reply,
    probe_reply,
)

pytestmark = pytest.mark.reference

# Where Knot and NSD differ, the one geodns answers like, and why.
WE_FOLLOW: dict[str, str] = {
    "example.test ANY": "knot",  # the A RRset: the most useful one for ANY callers
    "b.ext.second.test A": "knot",  # CNAMEs are followed within their own zone
    "www.second.test A": "knot",
    "www.second.test MX": "knot",
    "probe:edns-version-1-do": "knot",  # DO copied into the BADVERS OPT, as in every answer
    "probe:edns-two-opt": "knot",  # FORMERR that keeps the question
    "probe:edns-opt-owner-not-root": "nsd:rcode",  # FORMERR: an OPT is owned by the root
    "probe:flags-rcode-in-query": "knot",  # bits that mean nothing in a query are ignored
    "probe:qdcount-0-edns": "knot",  # QDCOUNT 0 is FORMERR
    "probe:qdcount-2": "nsd",  # FORMERR, as the issue asks, rather than silence
    "probe:ancount-1": "knot",  # records in a query's other sections are ignored
    "probe:ancount-1-missing": "knot",  # FORMERR that keeps the question
    "probe:trailing-garbage": "nsd",  # bytes after the counted sections are ignored
    "probe:qname-pointer": "nsd",  # FORMERR for a question that cannot be read
    "probe:qname-pointer-loop": "nsd",
    "probe:opcode-status": "knot",  # NOTIMP that keeps the question
    "probe:hesiod-version.bind": "knot",  # REFUSED that keeps the question
    "probe:qclass-any": "knot",  # the IN data, authoritative
    "probe:qtype-0": "nsd",  # NODATA: nothing special about type 0 here
    "probe:edns-nsid": "nsd",  # no NSID option: geodns has no setting for one
    "probe:axfr-tcp": "nsd",  # transfers REFUSED
    "probe:ixfr-udp": "nsd",
    "probe:ixfr-tcp": "nsd",
}
# Probes where geodns deliberately answers like neither.
OWN_WAY: dict[str, str] = {
    "probe:opcode-notify": "NOTIMP: geodns has no secondaries to be notified",
    "probe:opcode-update": "NOTIMP: dynamic updates are not offered",
}


def _ready(host: str, port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"geodns exited: {proc.communicate()[1]}")
        try:
            dc.query(host, port, "example.test", "SOA", timeout=0.3)
            dc.query(host, port, "second.test", "SOA", timeout=0.3)
            return
        except (TimeoutError, OSError):
            time.sleep(0.05)
    raise RuntimeError("geodns did not answer within 15 s")


@pytest.fixture(scope="module")
def geodns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    zones = tmp_path_factory.mktemp("imported")
    for origin, path in ZONES.items():
        out = subprocess.run([sys.executable, "-m", "geodns", "import-zone", str(path),
                              "--origin", origin], capture_output=True, text=True, check=True)
        (zones / f"{origin}yaml").write_text(out.stdout)
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--listen",
                             f"127.0.0.1:{port}", "--zones", str(zones), "--log-level",
                             "warning"], stderr=subprocess.PIPE, text=True)
    try:
        _ready("127.0.0.1", port, proc)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _ask(address: tuple[str, int], qname: str, qtype: str, tcp: bool, edns: int | None,
         **norm: Any) -> dict[str, Any]:
    return dc.normalize(dc.query(*address, qname, qtype, tcp=tcp, edns=edns), **norm)


def _check(ours: Any, refs: dict[str, Any], key: str) -> None:
    follow = WE_FOLLOW.get(key)
    if key in OWN_WAY:
        return
    if follow and follow.endswith(":rcode"):
        # Same rcode and flags; we keep the question where that one does not.
        other = refs[follow.split(":")[0]]
        assert ours is not None and other is not None, (ours, other)
        assert (ours["rcode"], ours["flags"]) == (other["rcode"], other["flags"]), key
        return
    targets = [follow] if follow else ["knot", "nsd"]
    for name in targets:
        if ours != refs[name]:
            if ours is None or refs[name] is None:
                detail = f"geodns={ours} {name}={refs[name]}"
            else:
                detail = "\n".join(dc.diff(ours, refs[name], ("geodns", name)))
            raise AssertionError(f"{key}: geodns differs from {name}:\n{detail}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("qname", "qtype", "expected"), CASES,
                         ids=[f"{n} {t}" for n, t, _ in CASES])
def test_same_answers(geodns, knot, nsd, qname: str, qtype: str, expected: str,
                      transport: str) -> None:
    tcp, edns = TRANSPORTS[transport]
    key = f"{qname} {qtype}"
    ours = _ask(geodns, qname, qtype, tcp, edns, **NORMALIZE)
    refs = {"knot": _ask(knot, qname, qtype, tcp, edns, **NORMALIZE),
            "nsd": _ask(nsd, qname, qtype, tcp, edns, **NORMALIZE)}
    _check(ours, refs, key)
    # Knot adds nothing NSD-specific, so against Knot the comparison is exact.
    if WE_FOLLOW.get(key, "knot") == "knot":
        assert _ask(geodns, qname, qtype, tcp, edns) == _ask(knot, qname, qtype, tcp, edns)


@pytest.mark.parametrize("probe", PROBES)
def test_same_answers_to_crafted_packets(geodns, knot, nsd, probe: str) -> None:
    build, tcp = PROBES[probe]
    wire = build()
    key = f"probe:{probe}"
    follow = WE_FOLLOW.get(key)
    # geodns is silent exactly where every server it follows is silent.
    targets = [follow.split(":")[0]] if follow and key not in OWN_WAY else ["knot", "nsd"]
    ours_expected = key in OWN_WAY or any(expects_reply(probe, t) for t in targets)
    replies = {"geodns": probe_reply(geodns, wire, tcp, ours_expected),
               "knot": probe_reply(knot, wire, tcp, expects_reply(probe, "knot")),
               "nsd": probe_reply(nsd, wire, tcp, expects_reply(probe, "nsd"))}
    check_silence(replies, probe)
    _check(replies["geodns"], replies, key)


def test_nsid_is_not_offered(geodns, knot, nsd) -> None:
    """An empty NSID option asks for the server's identity (RFC 5001): Knot
    sends its host name by default, NSD only when configured; geodns has no
    setting for it and answers as NSD does: the usual answer, with an OPT that
    carries no NSID option."""
    build, tcp = PROBES["edns-nsid"]
    ours, theirs = probe_reply(geodns, build(), tcp), probe_reply(knot, build(), tcp)
    assert ours is not None and theirs is not None
    assert ours["rcode"] == "NOERROR" and ours["flags"] == ["AA"]
    assert ours["answer"] == ["www.example.test. 3600 IN A 192.0.2.80",
                              "www.example.test. 3600 IN A 192.0.2.81"]
    assert ours["edns"] is not None and ours["edns"]["options"] == []
    assert any(o.startswith("3:") for o in theirs["edns"]["options"])  # Knot's NSID
    # Apart from that option, the same answer as Knot's.
    theirs["edns"]["options"] = [o for o in theirs["edns"]["options"] if not o.startswith("3:")]
    assert ours == theirs
    assert ours == probe_reply(nsd, build(), tcp)


def test_own_way_probes_answer_as_documented(geodns) -> None:
    for probe, rcode in (("opcode-notify", "NOTIMP"), ("opcode-update", "NOTIMP")):
        build, tcp = PROBES[probe]
        reply = dc.raw_exchange(*geodns, build(), tcp=tcp, timeout=1)
        assert reply is not None
        assert dc.normalize(dc.parse(reply))["rcode"] == rcode


def test_random_names_match_knot(geodns, knot) -> None:
    """Names nobody picked: labels added to, or taken from, the zones' names,
    random case, random types; compared exactly with Knot."""
    rnd = random.Random(20261122)
    bases = sorted({n for n, _, _ in CASES if n.endswith(".test") or n.endswith(".test.")})
    types = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "PTR", "CAA", "DS",
             "TYPE65", "HINFO"]
    for _ in range(300):
        name = rnd.choice(bases)
        if rnd.random() < 0.5:
            name = "".join(rnd.choice("abcxyz0-") for _ in range(rnd.randint(1, 6))) \
                .strip("-") or "q"
            name = f"{name}.{rnd.choice(bases)}"
        name = "".join(c.upper() if rnd.random() < 0.3 else c for c in name)
        qtype = rnd.choice(types)
        tcp = rnd.random() < 0.3
        edns = None if rnd.random() < 0.3 else 0
        key = f"{name.lower()} {qtype}"
        if key in WE_FOLLOW and WE_FOLLOW[key] != "knot":
            continue
        if name.lower().rstrip(".") in ("www.second.test", "b.ext.second.test"):
            continue  # cross-zone CNAMEs: covered above
        ours = _ask(geodns, name, qtype, tcp, edns)
        theirs = _ask(knot, name, qtype, tcp, edns)
        assert ours == theirs, f"{name} {qtype} tcp={tcp} edns={edns}:\n" + "\n".join(
            dc.diff(ours, theirs, ("geodns", "knot")))
