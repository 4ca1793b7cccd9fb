"""Whether two trees answer alike, byte for byte: for a change of representation.

Answers a fixed corpus of queries in this tree and in another (its Python:
``--python``, whose editable install is the tree measured) and compares every
response.  The zones are the tests' (tests/test_dnssec.py, tests/test_steering.py:
plain, signed, steered, signed and steered; the first two with a name whose
answer fits in 512 bytes only without its additional section), answered by Python
(``Responder.respond``, over UDP and TCP) and by the C data plane where it
answers; each question without EDNS, with EDNS, with DO, with Client Subnet
options (IPv4, IPv6, source 0), with a client cookie and with a server cookie
(responders with and without cookies configured), advertising 512, 1232 and
4096 bytes (answers cut to fit), names in mixed case.  Signing keys and
signatures are made deterministic (ECDSA signatures are random), so the two
trees sign alike.  No sockets, no servers.

    .venv/bin/python bench/same_bytes.py --python /work/main/.venv/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
NOW = 1_800_000_000


def _deterministic_keys() -> None:
    """The same keys and signatures in every run and tree."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    seed = iter(range(1, 1000))
    ec.generate_private_key = lambda curve, *a: ec.derive_private_key(1000 + next(seed), curve)
    ed25519.Ed25519PrivateKey.generate = staticmethod(  # type: ignore[method-assign]
        lambda: ed25519.Ed25519PrivateKey.from_private_bytes(bytes([next(seed)]) * 32))
    from geodns.dnssec import keys

    keys.Key.sign = lambda self, data: hashlib.sha512(self.dnskey + data).digest()


def _queries(names: list[tuple[str, str]], rnd: random.Random) -> list[bytes]:
    import dns.edns
    import dns.flags
    import dns.message

    options: list[list[Any]] = [
        [], [dns.edns.ECSOption("198.51.100.0", 24, 0)], [dns.edns.ECSOption("2001:db8::", 0, 0)],
        [dns.edns.ECSOption("10.1.0.0", 16, 0)], [dns.edns.ECSOption("10.3.0.0", 20, 0)],
        [dns.edns.ECSOption("2001:db8:100::", 48, 0)], [dns.edns.GenericOption(10, b"12345678")],
        [dns.edns.GenericOption(10, b"12345678"), dns.edns.ECSOption("10.2.0.0", 16, 0)],
        [dns.edns.GenericOption(10, b"12345678" + bytes(16))]]
    out = []
    for name, rtype in names:
        for edns in (-1, 0):
            for do in (False, True):
                for payload in (512, 1232, 4096):
                    for opts in options:
                        if edns < 0 and (do or opts or payload != 1232):
                            continue
                        q = dns.message.make_query(name, rtype, use_edns=edns, want_dnssec=do,
                                                   options=opts, payload=payload)
                        if rnd.random() < 0.5:
                            q.flags &= ~dns.flags.RD
                        wire = bytearray(q.to_wire())
                        wire[:2] = rnd.randbytes(2)
                        for i in range(12, wire.index(0, 12)):
                            if rnd.random() < 0.3:
                                wire[i] = ord(chr(wire[i]).swapcase())
                        out.append(bytes(wire))
    return out


def _responders() -> Iterator[tuple[str, Callable[[], Any], list[tuple[str, str]]]]:
    import test_dnssec as td
    import test_steering as ts

    from geodns.compile import compile_zones
    from geodns.cookies import Cookies
    from geodns.problems import Problems
    from geodns.wire import Responder
    from geodns.zones.loader import load_zone_text

    # and a name whose answer fits in 512 bytes only without its additional section
    exchanges = ", ".join(f'"{k}0 m{k}"' for k in range(1, 9))
    records = td.RECORDS + f"  many: {{MX: [{exchanges}]}}\n" + "".join(
        f'  m{k}: {{A: 192.0.2.{100 + k}, AAAA: "2001:db8::{100 + k}"}}\n' for k in range(1, 9))
    questions = [*td.QUESTIONS, ("many.s.example.", "MX")]
    zone = load_zone_text(td.HEAD + records, "s.yaml", "s.example.", Problems())
    assert zone is not None
    plain = compile_zones([zone])
    signed = compile_zones([td.signed_zone(records=records)], now=td.NOW)
    steered = ts.make()
    d = steered.steer.__self__  # its Decisions: steering, locator, health
    chain = td.steered_responder()
    dc = chain.steer.__self__
    cookies = Cookies([bytes(range(16))])
    steer_q = [("www.steer.example.", t) for t in ("A", "AAAA", "TXT", "MX")] + [
        (f"{n}.steer.example.", "A") for n in ("two", "ruled", "closed", "empty", "fixed",
                                               "chained", "backup", "open", "cdn", "x.wild",
                                               "nope")] + [
        ("cdn.steer.example.", "CNAME"), ("cdn.steer.example.", "AAAA")]
    chain_q = [(f"{n}.chain.example.", t) for n in (
        "www", "www-fra", "www-sin", "cdn", "eu.cdn", "alias", "alias-a", "loop", "dangling",
        "to-sub", "x.wild", "to-wild", "closed", "empty", "to-closed", "to-empty", "nope",
        "a.b.nope") for t in ("A", "AAAA", "TXT")]
    for label, c in (("", None), ("+cookies", cookies)):
        yield "plain" + label, lambda c=c: Responder(plain, cookies=c), questions
        yield "signed" + label, lambda c=c: Responder(signed, cookies=c), questions
        yield "steered" + label, lambda c=c: Responder(
            steered.tables, d.steering, d.locator, d.health, c), steer_q
    yield "signed-steered", lambda: Responder(chain.tables, dc.steering, dc.locator, dc.health), \
        chain_q


def child() -> None:
    """Every response, one line each: label, path, query, response."""
    sys.path.insert(0, str(TESTS))
    _deterministic_keys()
    peers: list[Any] = [
        socket.AF_INET.to_bytes(2, "little") + struct.pack("!H", 5353) + bytes(a) + bytes(8)
        for a in ((192, 0, 2, 7), (10, 1, 2, 3), (10, 2, 9, 9), (10, 3, 1, 1))]
    peers += [("192.0.2.200", 5353), ("10.5.0.9", 53), ("2001:db8:100::5", 53, 0, 0)]
    for label, make, names in _responders():
        asked = _queries(names, random.Random(7))
        for mode in ("python", "plane"):
            r = make()
            r.now = NOW
            for i, data in enumerate(asked):
                for udp in (True, False):
                    peer = peers[i % len(peers)]
                    got, via = None, "python"
                    if mode == "plane" and udp and isinstance(peer, bytes) and r.plane is not None:
                        got = r.plane.answer(data, peer, {})
                        via = "python" if got is None else "c"
                    if got is None:
                        got = r.respond(data, udp, peer)
                    print(label, via, "udp" if udp else "tcp", data.hex(),
                          got.hex() if got is not None else None)


def _run(python: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([python, __file__, "--child"], capture_output=True, text=True,
                              cwd=tmp, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode:
        raise SystemExit(f"{python}: failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.splitlines()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", help="the other tree's Python (its venv)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
        return 0
    if not args.python:
        ap.error("--python: the other tree's Python is needed")
    ours, theirs = _run(sys.executable), _run(args.python)
    via = sum(1 for line in ours if line.split()[1] == "c")
    digests = [hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
               for lines in (ours, theirs)]
    print(f"{len(ours):,} responses here ({via:,} from the C data plane), {len(theirs):,} there; "
          f"digests {digests[0]} and {digests[1]}")
    differ = [(a, b) for a, b in zip(ours, theirs, strict=False) if a != b]
    for a, b in differ[:5]:
        print(f"differ:\n  here:  {a}\n  there: {b}")
    if differ or len(ours) != len(theirs):
        print(f"{len(differ):,} responses differ")
        return 1
    print("the same bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
