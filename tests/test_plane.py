"""The C data plane (geodns/_plane.c) against the Python responder.

Whatever the plane answers by itself must be the bytes
:meth:`geodns.wire.Responder.respond` gives, counted under the same key;
whatever it cannot, it leaves to Python (None).  Static and signed zones
here; steered answers from compiled maps are in tests/test_steermap.py.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dnssec import NOW, QUESTIONS, RECORDS, plain_zone, signed_zone

from geodns.compile import compile_zones
from geodns.cookies import Cookies
from geodns.server.transport import DatagramHandler
from geodns.wire import Responder, _udpbatch

pytestmark = pytest.mark.skipif(_udpbatch is None, reason="the C helper is not built")

PEER = socket.AF_INET.to_bytes(2, "little") + struct.pack("!H", 5353) + bytes((192, 0, 2, 7)) \
    + bytes(8)


# A name whose answer fits in 512 bytes only without its additional section.
_EXCHANGES = ", ".join(f'"{k}0 m{k}"' for k in range(1, 9))
MANY = f"  many: {{MX: [{_EXCHANGES}]}}\n" + "".join(
    f'  m{k}: {{A: 192.0.2.{100 + k}, AAAA: "2001:db8::{100 + k}"}}\n' for k in range(1, 9))


@pytest.fixture(scope="module")
def signed() -> Responder:
    return Responder(compile_zones([signed_zone(records=RECORDS + MANY)], now=NOW))


@pytest.fixture(scope="module")
def plain() -> Responder:
    return Responder(compile_zones([plain_zone(RECORDS + MANY)]))


def queries(rnd: random.Random) -> list[bytes]:
    """Every question of the zone in every shape the fast path takes, and a
    few it does not (other options, a malformed Client Subnet option), with
    our payload size and with 512 bytes (answers cut to fit)."""
    out = []
    for name, rtype in [*QUESTIONS, ("many.s.example.", "MX")]:
        for edns in (-1, 0):
            for do in (False, True):
                for rd in (False, True):
                    for options in ([], [dns.edns.ECSOption("198.51.100.0", 24, 0)],
                                    [dns.edns.ECSOption("2001:db8::", 0, 0)],
                                    [dns.edns.GenericOption(10, b"12345678")],
                                    [dns.edns.GenericOption(10, b"12345678"),
                                     dns.edns.ECSOption("198.51.100.0", 24, 0)]):
                        for payload in (1232, 512):
                            if edns < 0 and (do or options or payload != 1232):
                                continue
                            q = dns.message.make_query(name, rtype, use_edns=edns,
                                                       want_dnssec=do, options=options,
                                                       payload=payload)
                            if not rd:
                                q.flags &= ~dns.flags.RD
                            wire = bytearray(q.to_wire())
                            for i in range(12, wire.index(0, 12)):
                                if rnd.random() < 0.3:
                                    wire[i] = ord(chr(wire[i]).swapcase())
                            out.append(bytes(wire))
    # A Client Subnet option with bits beyond its prefix (FORMERR), and a scope in a query.
    bad = dns.message.make_query("www.s.example.", "A", use_edns=0).to_wire()
    for option in (b"\x00\x08\x00\x07\x00\x01\x17\x00\xc6\x33\x65",
                   b"\x00\x08\x00\x07\x00\x01\x18\x05\xc6\x33\x64"):
        out.append(bad[:-2] + struct.pack("!H", len(option)) + option)
    return out


@pytest.mark.parametrize("which", ["signed", "plain", "signed+cookies", "plain+cookies"])
def test_what_the_plane_answers_is_what_python_answers(which: str, signed: Responder,
                                                       plain: Responder) -> None:
    """Every shape of what follows the question (compile.Tails, read by
    the plane in two pieces): without EDNS, with our OPT, with DO (the
    signed form), with a Client Subnet echo, with a COOKIE option (with
    cookies configured) and cut to fit 512 bytes, the last two Python's."""
    responder = signed if which.startswith("signed") else plain
    cookies = Cookies([bytes(range(16))]) if which.endswith("cookies") else None
    c = Responder(responder.tables, cookies=cookies)  # counters of its own
    oracle = Responder(responder.tables, cookies=cookies)
    c.now = oracle.now = int(NOW)
    assert c.plane is not None
    counts: dict[int, int] = {}
    answered = denials = 0
    shapes: set[str] = set()
    asked = queries(random.Random(3))
    for data in asked:
        want = oracle.respond(data, True, PEER)
        got = c.plane.answer(data, PEER, counts)
        if got is None:
            got = c.respond(data, True, PEER)
            assert got is not None
            if b"\x00\x0a\x00\x18" + data[-8:] in got:
                shapes.add("cookie")
        else:
            answered += 1
            # NXDOMAIN from the closest encloser; signed, with the proof
            # Python made for the name's cover the first time
            denials += got[3] & 0xF == 3 and (which.startswith("plain")
                                              or b"\x00\x2f\x00\x01" in got)
            if data[11]:
                opt = got.rindex(b"\x00\x00\x29\x04\xd0")
                do = got[opt + 7] & 0x80
                shapes.add(("with DO" if do else "with EDNS") + (" and ECS" if got[opt + 9:opt + 11]
                                                                  != b"\x00\x00" else ""))
            else:
                shapes.add("plain")
        assert got == want, data.hex()
        _opt_as_asked(data, got, cookies is not None)
    # The plane answers all four shapes; cookies and cuts are Python's.
    assert shapes >= {"plain", "with EDNS", "with DO", "with EDNS and ECS", "with DO and ECS"}, \
        shapes
    assert c.events[("truncated", "additional")], c.events
    if which.startswith("signed"):  # (the plain zone's answers fit without additional)
        assert c.events[("truncated", "tc")], c.events
    if cookies is not None:
        assert "cookie" in shapes, shapes
    for k, v in counts.items():
        c.counts[k] += v
    assert dict(c.counts) == dict(oracle.counts)
    # The plane takes every name in the exact table and the names below a
    # closest encloser; the rest is Python's (NODATA, wildcards, proofs not
    # made yet, other options).
    assert answered > len(asked) // 3, (answered, len(asked))
    assert denials >= 20, denials


def _opt_as_asked(query: bytes, got: bytes, cookies: bool) -> None:
    """The OPT of an answer (not an error) as dnspython reads it: there
    when the query had one, with its DO bit, the Client Subnet option
    echoed (not with TC: as before) and, with cookies configured, a COOKIE
    option."""
    if got[3] & 0xF not in (0, 3):
        return
    q, r = dns.message.from_wire(query), dns.message.from_wire(got)
    assert r.edns == q.edns
    if q.edns >= 0:
        assert r.ednsflags & dns.flags.DO == q.ednsflags & dns.flags.DO
        echoed = ({10} if cookies else set()) | (set() if got[2] & 2 else {8})
        sent = {int(o.otype) for o in q.options} & echoed
        assert {int(o.otype) for o in r.options} == sent, (query.hex(), got.hex())


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def mutate(edits: list[tuple[int, int]], cut: int) -> bytes:
        b = bytearray(seed)
        for at, value in edits:
            b[at % len(b)] = value
        return bytes(b[:cut])
    return st.builds(mutate, st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)),
                                      max_size=4),
                     st.integers(0, len(seed) + 4))


SEEDS = [dns.message.make_query("www.s.example.", "A", use_edns=0, want_dnssec=True,
                                options=[dns.edns.ECSOption("198.51.100.0", 24, 0)]).to_wire(),
         dns.message.make_query("www.s.example.", "AAAA").to_wire()]


@settings(max_examples=400, deadline=None)
@given(st.one_of(*(_mutations(s) for s in SEEDS)))
def test_a_mangled_query_is_answered_as_python_does_or_left_to_it(data: bytes) -> None:
    responder = _signed()
    assert responder.plane is not None
    got = responder.plane.answer(data, PEER, {})
    if got is not None:
        assert got == responder.respond(data, True, PEER)


@functools.cache
def _signed() -> Responder:
    return Responder(compile_zones([signed_zone()], now=NOW))


class _Source:
    limiter = None

    def __init__(self, responder: Responder) -> None:
        self.responder = responder


def test_serve_answers_a_batch_over_a_socket(signed: Responder) -> None:
    """serve(): one recvmmsg, C's answers and Python's (a name that does
    not exist, an answer cut to fit 512 bytes, a datagram too long to read)
    sent together; each arrives with its ID."""
    responder = Responder(signed.tables)
    handler = DatagramHandler(_Source(responder))
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
        asked = {}
        for i, (name, rtype, do) in enumerate([
                ("www.s.example.", "A", False), ("WWW.s.example.", "AAAA", True),
                ("nope.s.example.", "A", True), ("s.example.", "DNSKEY", True),
                ("s.example.", "NS", False)]):
            # A denial with DO is over 512 bytes: cut to fit.
            q = dns.message.make_query(name, rtype, use_edns=0, want_dnssec=do, id=100 + i,
                                       payload=512 if name == "nope.s.example." else 1232)
            asked[100 + i] = q.to_wire()
            client.sendto(q.to_wire(), server.getsockname())
        client.sendto(b"\x00" * 5000, server.getsockname())  # too long: dropped
        got, unsent = responder.plane.serve(server.fileno(), responder.counts,
                                            handler.answer_all)
        assert (got, unsent) == (6, 0)
        answers = {}
        for _ in asked:
            data = client.recv(65535)
            answers[struct.unpack("!H", data[:2])[0]] = data
        oracle = Responder(signed.tables)
        addr = client.getsockname()
        for qid, data in asked.items():
            assert answers[qid] == oracle.respond(data, True, addr), qid
        assert responder.plane.serve(server.fileno(), responder.counts,
                                     handler.answer_all) == (0, 0)
    assert sum(responder.counts.values()) == 5
    assert responder.events[("truncated", "tc")] == 1, responder.events


def _pair(wait: float = 0) -> tuple[socket.socket, socket.socket]:
    """A server socket, non-blocking or (wait) blocking with that receive
    timeout, as UDPPlaneThread.start makes it; and a client."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (server, client):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # (200 datagrams wait)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    if wait:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                          struct.pack("@ll", int(wait), int(wait % 1 * 1e6)))
        os.set_blocking(server.fileno(), True)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    return server, client


def _ask(client: socket.socket, server: socket.socket, count: int) -> None:
    for i in range(count):
        client.sendto(dns.message.make_query("www.s.example.", "A", id=i).to_wire(),
                      server.getsockname())


def _ids(client: socket.socket, count: int) -> set[int]:
    return {struct.unpack("!H", client.recv(512)[:2])[0] for _ in range(count)}


def _run_in_thread(responder: Responder, source: _Source, server: socket.socket, wake: int,
                   kept: list[tuple[bytes, bytes]], rounds: int = 8
                   ) -> tuple[threading.Thread, list[object]]:
    """Plane.run in a thread, as the socket's reader calls it; what it
    returned (or raised) ends up in the list."""
    out: list[object] = []

    def keep(packets: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept.extend(packets)
        return []

    def go() -> None:
        assert responder.plane is not None
        try:
            out.append(responder.plane.run(server.fileno(), wake, responder.counts, keep,
                                           source.limiter, source, responder, rounds))
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def wake() -> Iterator[tuple[int, int]]:
    pipe = os.pipe()
    yield pipe
    for fd in pipe:
        os.close(fd)


def test_run_serves_batch_after_batch_until_the_socket_is_empty(
        signed: Responder, wake: tuple[int, int]) -> None:
    """run() on a non-blocking socket: batch after batch (more than rounds
    of them) without returning, until a read finds nothing; a byte on the
    wake pipe ends it at the next look (every rounds batches)."""
    responder = Responder(signed.tables)
    source = _Source(responder)
    server, client = _pair()
    plane = responder.plane
    assert plane is not None
    with server, client:
        _ask(client, server, 200)  # 4 batches, with rounds=1
        assert plane.run(server.fileno(), wake[0], responder.counts, list, None, source,
                         responder, 1) == (200, 0)
        assert _ids(client, 200) == set(range(200))
        _ask(client, server, 200)
        os.write(wake[1], b"x")
        assert plane.run(server.fileno(), wake[0], responder.counts, list, None, source,
                         responder, 2) == (128, 0)
        assert plane.run(server.fileno(), wake[0], responder.counts, list, None, source,
                         responder, 8) == (72, 0)
        assert sum(responder.counts.values()) == 400


def test_run_waits_in_recvmmsg_on_a_blocking_socket(signed: Responder,
                                                     wake: tuple[int, int]) -> None:
    """On a blocking socket run() waits for each batch in recvmmsg, without
    Python's lock (this thread asks and reads meanwhile), and returns once
    the socket has been silent for its receive timeout."""
    responder = Responder(signed.tables)
    server, client = _pair(wait=0.3)
    kept: list[tuple[bytes, bytes]] = []
    with server, client:
        thread, out = _run_in_thread(responder, _Source(responder), server, wake[0], kept)
        for _ in range(3):
            _ask(client, server, 5)
            assert _ids(client, 5) == set(range(5))
            time.sleep(0.05)
            assert thread.is_alive()
        thread.join(5)
        assert not thread.is_alive() and out == [(15, 0)] and not kept


def test_run_returns_what_python_must_answer(signed: Responder, wake: tuple[int, int]) -> None:
    """What the plane leaves to Python ends run() after the batch it came
    in: the reader hands it to the event loop's thread before it reads on."""
    responder = Responder(signed.tables)
    server, client = _pair(wait=2)
    kept: list[tuple[bytes, bytes]] = []
    with server, client:
        _ask(client, server, 2)
        q = dns.message.make_query("www.s.example.", "A", id=7)
        q.use_edns(0, options=[dns.edns.GenericOption(65001, b"x")])  # an option: Python's
        client.sendto(q.to_wire(), server.getsockname())
        thread, out = _run_in_thread(responder, _Source(responder), server, wake[0], kept)
        thread.join(5)
        assert out == [(3, 0)] and len(kept) == 1
        assert dns.message.from_wire(kept[0][0]).id == 7
        assert _ids(client, 2) == {0, 1}


def test_run_leaves_a_batch_read_after_a_reload_to_python(signed: Responder,
                                                           wake: tuple[int, int]) -> None:
    """A reload swaps the responder (or the rate limiter) while run() waits
    for a datagram: the batch it then reads all goes to Python, which
    answers it from what is served now, and run() returns so that the
    reader takes the new snapshot's plane."""
    responder = Responder(signed.tables)
    source = _Source(responder)
    server, client = _pair(wait=2)
    with server, client:
        for swap in ("responder", "limiter"):
            kept: list[tuple[bytes, bytes]] = []
            thread, out = _run_in_thread(responder, source, server, wake[0], kept)
            _ask(client, server, 1)
            assert _ids(client, 1) == {0}  # (C's: served before the swap)
            setattr(source, swap, Responder(signed.tables) if swap == "responder" else object())
            _ask(client, server, 1)
            thread.join(5)
            assert not thread.is_alive()
            assert out == [(2, 0)] and [q[:2] for q, _ in kept] == [b"\x00\x00"], swap
            source.responder, source.limiter = responder, None


def test_run_on_a_closed_descriptor_raises(signed: Responder) -> None:
    responder = Responder(signed.tables)
    plane = responder.plane
    assert plane is not None
    wake_r, wake_w = os.pipe()
    closed = os.dup(0)
    os.close(closed)
    try:
        with pytest.raises(OSError) as err:
            plane.run(closed, wake_r, responder.counts, list, None, _Source(responder),
                      responder, 8)
        assert err.value.errno == errno.EBADF
        with pytest.raises(ValueError, match="rounds"):
            plane.run(wake_r, wake_r, responder.counts, list, None, _Source(responder),
                      responder, 0)
        with pytest.raises(TypeError, match="RateLimiter"):
            plane.run(wake_r, wake_r, responder.counts, list, object(), _Source(responder),
                      responder, 8)
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_names_asked_again_among_many_are_answered_as_python_does() -> None:
    """The plane keeps the exact table's entries asked lately in 1,024
    slots: with 5,000 names asked in random order and case, three times
    each, slots are taken over and over by other names, and every answer
    must still be the one Python gives for that name."""
    from geodns.problems import Problems
    from geodns.zones.loader import load_zone_text

    text = "origin: many.example.\nsoa: {mname: ns1, rname: hostmaster, serial: 1}\n" \
        "records:\n  \"@\": {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n" + \
        "".join(f"  h{i}: {{A: 10.0.{i >> 8}.{i & 255}, TXT: \"t{i}\"}}\n" for i in range(5000))
    problems = Problems()
    zone = load_zone_text(text, "many.yaml", "many.example.", problems)
    assert zone is not None, problems
    tables = compile_zones([zone])
    c, oracle = Responder(tables), Responder(tables)
    assert c.plane is not None
    rnd = random.Random(12)
    asked = [(i, t) for i in range(5000) for t in ("A", "TXT")] * 3
    rnd.shuffle(asked)
    counts: dict[int, int] = {}
    for i, rtype in asked:
        name = "".join(ch.upper() if rnd.random() < 0.3 else ch for ch in f"h{i}.many.example.")
        data = dns.message.make_query(name, rtype, use_edns=rnd.choice([-1, 0])).to_wire()
        got = c.plane.answer(data, PEER, counts)
        assert got is not None and got == oracle.respond(data, True, PEER), (name, rtype)
