"""Response rate limiting (issue 15), modelled on Knot's own RRL tests.

Two depths.  The C limiter (geodns._udpbatch.RateLimiter) is driven with
answers the responder or dnspython made, synthetic addresses and a clock
given to it, so its counts are exact.  A real node on loopback is then sent
bursts from several source addresses (all of 127/8 is loopback on Linux):
replied, truncated and dropped are counted against the configuration and
against the node's counters and metrics.  Counts, not timing: a rate of 5 a
second and bursts of 50 sent in milliseconds, with the few tokens a slow
machine could refill during a burst allowed for from the time it took.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import time
import tracemalloc
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from prometheus_client.parser import text_string_to_metric_families
from refservers import knot_server, require_binary, skip_or_fail

from geodns import ratelimit
from geodns.compile import compile_zones
from geodns.config import Address, Config, CookiesConfig, RateLimitConfig, load_config_text
from geodns.errors import StartupError
from geodns.metrics import Metrics
from geodns.ratelimit import CLASSES, Limiting
from geodns.server.app import Server
from geodns.status import status
from geodns.wire import Responder, Vouched
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_file

if not ratelimit.available():
    skip_or_fail("the C helper geodns._udpbatch is not built (no C compiler at install?)")

from geodns._udpbatch import CLASSES as C_CLASSES
from geodns._udpbatch import RateLimiter

ZONE = """\
origin: rrl.example.
soa: {mname: ns1, rname: hostmaster, serial: 1}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.1}
  www2: {A: 192.0.2.2}
  sub: {NS: [ns.sub]}
  ns.sub: {A: 192.0.2.54}
  big:
    TXT:
""" + "".join(f'      - "{i:02d}{"x" * 200}"\n' for i in range(5))  # about 1,100 bytes
T0 = 1000.0  # the limiter's clock in the unit tests, seconds


def rl(rate: int = 5, slip: int = 2, table_size: int = 1024, exempt: tuple[str, ...] = (),
       v4: int = 24, v6: int = 56, rates: tuple[int, ...] | None = None) -> RateLimiter:
    return RateLimiter(rate, slip, v4, v6, table_size, exempt, rates)


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("zones")
    (d / "rrl.example.yaml").write_text(ZONE)
    return d


@pytest.fixture(scope="module")
def responder(zones: Path) -> Responder:
    problems = Problems()
    zone = load_zone_file(zones / "rrl.example.yaml", problems)
    assert zone is not None, list(problems)
    return Responder(compile_zones([zone]))


def query(name: str, qtype: str = "A", edns: bool = False) -> bytes:
    q = dns.message.make_query(name, qtype, use_edns=0 if edns else False, payload=4096)
    q.flags &= ~dns.flags.RD
    return q.to_wire()


def answer(responder: Responder, name: str, qtype: str = "A", edns: bool = False) -> bytes:
    wire = responder.respond(query(name, qtype, edns), True)
    assert wire is not None
    return wire


def sockaddr_in(host: str, port: int = 5353) -> bytes:
    """A struct sockaddr_in as recvmmsg gives it (family in host order)."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
        socket.inet_aton(host) + bytes(8)


def sockaddr_in6(host: str, port: int = 5353) -> bytes:
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + \
        socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0)


def limited(r: RateLimiter) -> dict[tuple[str, str], int]:
    return {k: n for k, n in r.counters().items() if n}


# -- the limiter, with a clock of its own ----------------------------------------------------


def test_classes_agree_with_the_helper() -> None:
    assert C_CLASSES == CLASSES == ratelimit.CLASSES


@pytest.mark.parametrize("slip, truncated", [(0, 0), (1, 45), (2, 22), (3, 15)])
def test_burst_against_rate_and_slip(responder: Responder, slip: int, truncated: int) -> None:
    """50 identical answers at one instant, rate 5: 5 go, 45 are limited, and
    every slip-th limited one is sent truncated: TC, the question, nothing
    else, never longer than the query."""
    r = rl(rate=5, slip=slip)
    q = query("www.rrl.example.")
    wire = answer(responder, "www.rrl.example.")
    out = r.filter([(wire, ("127.0.0.2", 1000 + i)) for i in range(50)], T0)
    full = [d for d, _ in out if d == wire]
    cut = [d for d, _ in out if d != wire]
    assert (len(full), len(cut)) == (5, truncated)
    assert limited(r) == {k: n for k, n in {("positive", "dropped"): 45 - truncated,
                                             ("positive", "truncated"): truncated}.items() if n}
    for d in cut:
        m = dns.message.from_wire(d)
        assert m.flags & dns.flags.TC and m.flags & dns.flags.QR
        assert (m.rcode(), len(m.answer), len(m.authority), len(m.additional)) == (0, 0, 0, 0)
        assert m.question[0].name.to_text() == "www.rrl.example." and m.edns < 0
        assert len(d) <= len(q)
    # The first five went whole, each to its own address; the others after them.
    assert [(d == wire, a[1]) for d, a in out[:5]] == [(True, 1000 + i) for i in range(5)]


def test_tokens_refill_at_the_rate(responder: Responder) -> None:
    r = rl(rate=5, slip=0)
    pairs = [(answer(responder, "www.rrl.example."), sockaddr_in("192.0.2.7"))]
    assert sum(len(r.filter(pairs, T0)) for _ in range(10)) == 5
    assert len(r.filter(pairs, T0 + 0.19)) == 0  # 0.95 of a token
    assert len(r.filter(pairs, T0 + 0.2)) == 1  # one a fifth of a second
    assert sum(len(r.filter(pairs, T0 + 0.3)) for _ in range(10)) == 0  # half a token
    assert sum(len(r.filter(pairs, T0 + 60)) for _ in range(10)) == 5  # never more than rate
    # A clock far ahead (or wrapped around): a full bucket, never a negative one.
    assert sum(len(r.filter(pairs, T0 + 2**33)) for _ in range(10)) == 5


def test_classes_and_keys(responder: Responder) -> None:
    """Each class is counted apart; positive, NODATA and large answers per
    name (case-blind), NXDOMAIN, errors and referrals per network whatever
    the name: random names do not escape the limit."""
    r = rl(rate=1, slip=0)
    peer = ("127.0.3.9", 53)

    def limited_of(*wires: bytes) -> int:
        return sum(1 for w in wires if not r.filter([(w, peer)], T0))

    kinds = {
        "positive": [answer(responder, n) for n in ("www.rrl.example.", "WwW.rrl.EXAMPLE.")],
        "nodata": [answer(responder, n, "AAAA") for n in ("www.rrl.example.", "WWW.rrl.example.")],
        "nxdomain": [answer(responder, f"nx{i}.rrl.example.") for i in range(2)],
        "referral": [answer(responder, f"h{i}.sub.rrl.example.") for i in range(2)],
        "error": [answer(responder, f"x{i}.elsewhere.example.") for i in range(2)],  # REFUSED
        "large": [answer(responder, "www.rrl.example.", "ANY"),
                  answer(responder, "WWW.rrl.example.", "ANY")],
    }
    for cls, (first, second) in kinds.items():
        msg = dns.message.from_wire(first)
        assert limited_of(first) == 0, cls
        assert limited_of(second) == 1, (cls, msg)
    assert limited(r) == {(cls, "dropped"): 1 for cls in CLASSES}
    # Other names of the name-keyed classes are other keys.
    assert limited_of(answer(responder, "www2.rrl.example.")) == 0
    assert limited_of(answer(responder, "big.rrl.example.", "TXT", edns=True)) == 0  # large
    assert limited_of(answer(responder, "big.rrl.example.", "TXT", edns=True)) == 1
    assert len(answer(responder, "big.rrl.example.", "TXT", edns=True)) > 1024
    # SERVFAIL and FORMERR are errors like REFUSED: the same key.
    formerr = bytes.fromhex("1234 8101 0001 0000 0000 0000 ff".replace(" ", ""))
    assert limited_of(formerr) == 1
    assert r.counters()[("error", "dropped")] == 2


def test_networks_prefixes_and_address_forms(responder: Responder) -> None:
    """One /24 (one /56) is one key, whatever form the address comes in;
    the next network has keys of its own."""
    wire = answer(responder, "www.rrl.example.")
    r = rl(rate=2, slip=0)
    same: list[Any] = [("10.1.2.3", 1), sockaddr_in("10.1.2.200"), ("10.1.2.77", 9, 0, 0)]
    assert len(r.filter([(wire, a) for a in same], T0)) == 2
    other: list[Any] = [(wire, ("10.1.3.1", 1)), (wire, sockaddr_in("10.1.3.2"))]
    assert len(r.filter(other, T0)) == 2
    v6: list[Any] = [("2001:db8:0:ff::1", 1, 0, 0), sockaddr_in6("2001:db8:0:ff:ffff::9"),
                     ("2001:db8:0:ab::1%lo", 1, 0, 1)]
    assert len(r.filter([(wire, a) for a in v6], T0)) == 2  # one /56
    assert len(r.filter([(wire, ("2001:db8:0:100::1", 1, 0, 0))], T0)) == 1  # the next /56
    # An IPv4-mapped address is its IPv4 client.
    assert len(r.filter([(wire, ("::ffff:10.1.3.9", 1, 0, 0))], T0)) == 0
    # Narrower networks when configured: /25.
    r = rl(rate=1, slip=0, v4=25)
    assert len(r.filter([(wire, ("10.9.9.1", 1)), (wire, ("10.9.9.130", 1))], T0)) == 2
    assert len(r.filter([(wire, ("10.9.9.127", 1))], T0)) == 0


def test_exempt_networks(responder: Responder) -> None:
    wire = answer(responder, "www.rrl.example.")
    r = rl(rate=1, slip=0, exempt=("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"))
    pairs: list[Any] = [(wire, ("10.200.1.1", 1)), (wire, ("2001:db8:1::1", 1, 0, 0)),
                        (wire, sockaddr_in("192.0.2.7"))] * 20
    assert r.filter(pairs, T0) is pairs  # nothing limited: the batch itself
    assert len(r.filter([(wire, sockaddr_in("192.0.2.8"))] * 3, T0)) == 1
    assert r.used() == 1


def test_answers_not_exactly_bytes_pass(responder: Responder) -> None:
    """A Vouched answer (the query had a valid server cookie) and anything
    not a (bytes, address) pair pass untouched and uncounted."""
    wire = answer(responder, "www.rrl.example.")
    r = rl(rate=1, slip=0)
    vouched: list[tuple[bytes, Any]] = [(Vouched(wire), ("127.0.0.2", 1))] * 10
    out = r.filter(vouched, T0)
    assert out is vouched and all(type(d) is Vouched for d, _ in out)
    odd: list[Any] = [(wire, None), (wire, ("not an address", 1)), (wire, b"\x01"), (wire,),
                      "junk", (wire, ("127.0.0.2",))]
    assert r.filter(odd, T0) is odd
    assert limited(r) == {} and r.used() == 0
    assert len(r.filter([(wire, ("127.0.0.2", 1))] * 3, T0)) == 1


def test_odd_answers_do_not_crash() -> None:
    """Short answers, questions running off the end, compression in the
    question: classified as errors, truncated to what there is."""
    r = rl(rate=1, slip=1)
    peer = ("127.0.0.9", 1)
    header = bytes.fromhex("abcd 8400 0001 0001 0000 0000".replace(" ", ""))
    cases = [b"", b"\x00", header[:11], header, header + b"\x03www", header + b"\x3f" + b"a" * 10,
             header + b"\xc0\x0c\x00\x01\x00\x01", header + b"\x01a" * 200 + b"\x00\x00\x01\x00\x01",
             header + b"\x00\x00\x01"]
    for wire in cases:
        out = r.filter([(wire, peer)] * 3, T0)
        for d, _ in out:
            assert len(d) <= max(len(wire), 0)
    assert set(limited(r)) == {("error", "truncated")}
    # A root question ("." IN A) is a question: positive.
    root = header + b"\x00\x00\x01\x00\x01"
    r.filter([(root, ("127.7.7.7", 1))] * 2, T0)
    assert r.counters()[("positive", "truncated")] == 1


def test_fuzzed_answers(responder: Responder) -> None:
    """Random bytes and answers with random bytes changed or cut: every
    answer is passed, dropped or truncated, never longer than it was."""
    rng = random.Random(15)
    real = [answer(responder, n, t) for n, t in (("www.rrl.example.", "A"), ("nx.rrl.example.", "A"),
                                                 ("h.sub.rrl.example.", "A"), ("big.rrl.example.", "TXT"))]
    r = rl(rate=1, slip=1, table_size=64)
    for _ in range(20_000):
        wire = bytearray(rng.choice(real))
        for _ in range(rng.randrange(4)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        data = bytes(wire[:rng.randrange(len(wire) + 1)]) if rng.random() < 0.5 else \
            rng.randbytes(rng.randrange(40))
        for d, _ in r.filter([(data, ("127.0.0.3", 1))], T0):
            assert len(d) <= len(data)
    assert sum(r.counters().values()) > 0
    for bad in (-1.0, float("nan"), 1e300):
        with pytest.raises(ValueError):
            r.filter([(real[0], ("127.0.0.3", 1))], bad)


def test_table_stays_at_its_size() -> None:
    """100,000 networks through a table of 4,096 entries: it never holds
    more, and no memory is taken per network (tracemalloc sees the table,
    allocated with PyMem)."""
    wire = dns.message.make_response(dns.message.make_query("a.example.", "A")).to_wire()
    tracemalloc.start()
    try:
        r = rl(rate=1, slip=0, table_size=4096)
        assert (r.size, r.entry_size) == (4096, 16)
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, 100_000, 500):
            batch = [(wire, sockaddr_in(socket.inet_ntoa(struct.pack("!I", (10 << 24) + (n << 8)))))
                     for n in range(start, start + 500)]
            r.filter(batch, T0)
            del batch
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert r.used() == 4096
    assert grown < 64 * 1024, grown


def test_top_networks(responder: Responder) -> None:
    wire = answer(responder, "www.rrl.example.")
    r = rl(rate=1, slip=0)
    for net, n in (("127.0.9.", 40), ("127.0.8.", 10), ("2001:db8:1:", 5)):
        for i in range(n):
            host = f"{net}{i % 200}" if "." in net else f"{net}:{i}"
            r.filter([(wire, (host, 1, 0, 0) if ":" in host else (host, 1))], T0)
    assert r.top(10, T0) == [("127.0.9.0/24", 39), ("127.0.8.0/24", 9), ("2001:db8:1::/56", 4)]
    assert r.top(1, T0) == [("127.0.9.0/24", 39)]
    assert r.top(10, T0 + 45)[0] == ("127.0.9.0/24", 39)  # the generation before still counts
    assert r.top(10, T0 + 200) == []  # "lately" is the last minute or so


def test_per_class_rates(responder: Responder) -> None:
    rates = tuple(50 if c == "nxdomain" else 1 for c in CLASSES)
    r = rl(slip=0, rates=rates)
    nx = [(answer(responder, f"nx{i}.rrl.example."), ("127.0.0.2", 1)) for i in range(60)]
    assert len(r.filter(nx, T0)) == 50
    pos = [(answer(responder, "www.rrl.example."), ("127.0.0.2", 1))] * 3
    assert len(r.filter(pos, T0)) == 1


def test_bad_arguments() -> None:
    for args in ((0, 2, 24, 56, 1024, ()), (5, 11, 24, 56, 1024, ()), (5, 2, 33, 56, 1024, ()),
                 (5, 2, 24, 129, 1024, ()), (5, 2, 24, 56, 1022, ()), (5, 2, 24, 56, 0, ()),
                 (5, 2, 24, 56, 1024, ("10.0.0.0/33",)), (5, 2, 24, 56, 1024, ("nonsense",))):
        with pytest.raises(ValueError):
            RateLimiter(*args)
    with pytest.raises(ValueError):
        RateLimiter(5, 2, 24, 56, 1024, (), (1, 2))
    with pytest.raises(TypeError):
        rl().filter((), T0)  # type: ignore[arg-type]


def test_limiting_kept_while_unchanged() -> None:
    limiting = Limiting()
    assert limiting.use(None) is False and limiting.limiter is None
    cfg = RateLimitConfig(rate=1, slip=0)
    assert limiting.use(cfg) is True
    first = limiting.limiter
    assert first is not None
    wire = dns.message.make_response(dns.message.make_query("a.example.", "A")).to_wire()
    first.filter([(wire, ("127.0.0.2", 1))] * 3)
    assert limiting.use(RateLimitConfig(rate=1, slip=0)) is False and limiting.limiter is first
    assert limiting.use(RateLimitConfig(rate=2, slip=0)) is True and limiting.limiter is not first
    assert sum(limiting.counters().values()) == 2  # kept across the change
    assert limiting.use(None) is True and limiting.limiter is None
    assert sum(limiting.counters().values()) == 2 and limiting.top() == []


# -- the configuration ------------------------------------------------------------------------


def test_configuration_refused_without_the_helper(monkeypatch: pytest.MonkeyPatch,
                                                  zones: Path) -> None:
    problems = Problems()
    cfg = load_config_text("rate_limit: {rate: 10}\n", "geodns.yaml", Path("."), problems)
    assert not list(problems) and cfg.rate_limit == RateLimitConfig(rate=10)
    monkeypatch.setattr(ratelimit, "_udpbatch", None)
    problems = Problems()
    load_config_text("listen: [127.0.0.1:5300]\nrate_limit:\n  rate: 10\n", "geodns.yaml",
                     Path("."), problems)
    (problem,) = list(problems)
    assert str(problem).startswith("geodns.yaml:3:3: rate_limit needs the C helper")
    problems = Problems()
    load_config_text("rate_limit: null\n", "geodns.yaml", Path("."), problems)
    assert not list(problems)
    srv = Server(Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                        rate_limit=RateLimitConfig()))
    with pytest.raises(StartupError, match="C helper"):
        asyncio.run(srv.start())


# -- a real node on loopback ------------------------------------------------------------------


def burst(port: int, source: str, wires: list[bytes], quiet: float = 0.4
          ) -> tuple[list[bytes], float]:
    """Send every query from ``source`` at once, then read answers until
    none comes for ``quiet`` seconds: (answers, seconds from the first send
    to the last answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((source, 0))
        start = time.monotonic()
        for w in wires:
            s.sendto(w, ("127.0.0.1", port))
        got: list[bytes] = []
        last = start
        s.settimeout(quiet)
        while True:
            try:
                got.append(s.recv(65535))
            except TimeoutError:
                break
            last = time.monotonic()
        return got, last - start


async def send(port: int, source: str, wires: list[bytes]) -> tuple[list[bytes], float]:
    return await asyncio.to_thread(burst, port, source, wires)


def allowed(rate: int, seconds: float) -> int:
    """At most how many a rate lets through in a burst that took ``seconds``."""
    return rate + math.ceil(rate * seconds)


def metric_counts(srv: Server) -> dict[tuple[str, str], float]:
    text = Metrics(srv.view).render().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "geodns_rate_limited_answers":
            for sample in family.samples:
                out[(sample.labels["class"], sample.labels["action"])] = sample.value
    return out


@pytest.fixture
async def node(zones: Path, request: pytest.FixtureRequest) -> Any:
    """A node with the rate_limit and UDP mode the test's parameters say."""
    rate_limit, mode = getattr(request, "param", (RateLimitConfig(rate=5, slip=2), "batch"))
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 rate_limit=rate_limit)
    srv = Server(cfg, udp_mode=mode)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.shutdown()


@pytest.mark.parametrize("node", [(RateLimitConfig(rate=5, slip=s), m)
                                  for s, m in ((0, "batch"), (1, "reader"), (2, "batch"),
                                               (2, "protocol"))],
                         indirect=True, ids=["slip0-batch", "slip1-reader", "slip2-batch",
                                             "slip2-protocol"])
async def test_node_limits_a_burst(node: Server) -> None:
    assert node.config.rate_limit is not None
    slip = node.config.rate_limit.slip
    port = node.bound[0].port
    got, took = await send(port, "127.0.0.2", [query("www.rrl.example.")] * 50)
    msgs = [dns.message.from_wire(w) for w in got]
    full = [m for m in msgs if not m.flags & dns.flags.TC]
    cut = [m for m in msgs if m.flags & dns.flags.TC]
    assert all(len(m.answer) == 1 for m in full) and all(not m.answer for m in cut)
    replied = len(full)
    assert 5 <= replied <= allowed(5, took), (replied, took)
    limited_n = 50 - replied
    assert len(cut) == (limited_n // slip if slip else 0)
    counts = node.view().counters.limited
    assert counts.get(("positive", "truncated"), 0) == len(cut)
    assert counts.get(("positive", "dropped"), 0) == limited_n - len(cut)
    metrics = metric_counts(node)
    assert metrics[("positive", "truncated")] == len(cut)
    assert metrics[("positive", "dropped")] == limited_n - len(cut)
    assert sum(metrics.values()) == limited_n


@pytest.mark.parametrize("node", [(None, "batch")], indirect=True)
async def test_node_without_rate_limit_answers_all(node: Server) -> None:
    got, _ = await send(node.bound[0].port, "127.0.0.2", [query("www.rrl.example.")] * 50)
    assert len(got) == 50
    assert not any(dns.message.from_wire(w).flags & dns.flags.TC for w in got)
    assert sum(metric_counts(node).values()) == 0
    assert status(node.view())["rate_limit"] is None


@pytest.mark.parametrize("node", [(RateLimitConfig(rate=5, slip=0, exempt=("127.0.2.0/24",)),
                                   "batch")], indirect=True)
async def test_exempt_network_and_other_networks(node: Server) -> None:
    port = node.bound[0].port
    www = query("www.rrl.example.")
    got, _ = await send(port, "127.0.2.1", [www] * 50)
    assert len(got) == 50  # exempt
    # A flood from 127.0.9.0/24 (several addresses) ...
    flood = await asyncio.gather(*(send(port, f"127.0.9.{i}", [www] * 20) for i in range(1, 5)))
    took = max(t for _, t in flood)
    assert 5 <= sum(len(g) for g, _ in flood) <= allowed(5, took)
    # ... leaves 127.0.1.0/24 alone: its whole burst allowance is answered.
    got, _ = await send(port, "127.0.1.5", [www] * 5)
    assert len(got) == 5 and all(dns.message.from_wire(w).answer for w in got)
    # TCP is never limited, even from the flooded network.
    for _ in range(20):
        resp = await asyncio.to_thread(dns.query.tcp, dns.message.from_wire(www), "127.0.0.1",
                                       timeout=2, port=port, source="127.0.9.1")
        assert resp.answer
    # The status page's view: the flooded network first.
    doc = status(node.view())["rate_limit"]
    assert doc["rate"] == 5 and doc["exempt"] == ["127.0.2.0/24"]
    assert doc["top"][0]["network"] == "127.0.9.0/24"
    assert doc["top"][0]["limited"] == 80 - sum(len(g) for g, _ in flood)
    assert doc["limited"]["positive"]["dropped"] == doc["top"][0]["limited"]


@pytest.mark.parametrize("node", [(RateLimitConfig(rate=5, slip=2), "batch")], indirect=True)
async def test_spoofed_flood_is_not_amplified(node: Server) -> None:
    """A burst of ANY and large-answer queries 'from' 127.0.9.x: fewer bytes
    go out to that network than came in from it."""
    port = node.bound[0].port
    wires = [query("www.rrl.example.", "ANY", edns=True), query("big.rrl.example.", "TXT",
                                                                edns=True)] * 100
    assert len(dns.message.from_wire(node.responder.respond(wires[1], True) or b"").to_wire()) \
        > 1024
    results = await asyncio.gather(*(send(port, f"127.0.9.{i}", wires) for i in range(1, 5)))
    bytes_in = 4 * sum(len(w) for w in wires)
    bytes_out = sum(len(a) for got, _ in results for a in got)
    assert 0 < bytes_out <= bytes_in, (bytes_out, bytes_in)
    counts = node.view().counters.limited
    assert counts[("large", "truncated")] > 0 and counts[("large", "dropped")] > 0


def test_metric_documented() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "observability.md").read_text()
    assert "`geodns_rate_limited_answers_total`" in docs


def test_workers_add_up(tmp_path: Path, zones: Path) -> None:
    """With ``workers: 2`` each worker limits on its own and /metrics adds
    both workers' limited answers: 40 addresses of one /24, spread over the
    workers by the kernel, 5 queries each."""
    import urllib.request

    from tests.serveproc import free_port, served

    admin = free_port()
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(f"listen: ['127.0.0.1:{free_port()}']\nzones: {zones}\nworkers: 2\n"
                   f"admin: 127.0.0.1:{admin}\nrate_limit: {{rate: 1, slip: 0}}\n")
    with served(["--config", str(cfg)]) as node:
        port = node.dns_port()
        node.wait_for(lambda x: x.get("worker") == "worker1" and
                      str(x.get("message")).startswith("serving zones"), 20)
        www = query("www.rrl.example.")
        answered = sum(len(burst(port, f"127.0.9.{i}", [www] * 5, quiet=0.1)[0])
                       for i in range(1, 41))
        assert answered < 200
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
            workers = families["geodns_workers"].samples[0].value
            total = sum(s.value for s in families["geodns_rate_limited_answers"].samples)
            if (workers, total) == (2, 200 - answered) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert (workers, total) == (2, 200 - answered)


async def test_reload_keeps_or_replaces_the_limiter(tmp_path: Path, zones: Path) -> None:
    """A reload that leaves rate_limit as it was keeps the limiter (and its
    table); one that changes it makes a new one; the counters only grow."""
    from geodns.config import load_config

    path = tmp_path / "geodns.yaml"
    head = f"listen: ['127.0.0.1:0']\nzones: {zones}\n"
    path.write_text(head + "rate_limit: {rate: 1, slip: 0}\n")
    problems = Problems()
    srv = Server(load_config(path, problems))
    assert not list(problems)
    await srv.start()
    try:
        first = srv.limiter
        assert first is not None
        got, _ = await send(srv.bound[0].port, "127.0.0.2", [query("www.rrl.example.")] * 4)
        assert len(got) == 1
        path.write_text(head + "log: {level: debug}\nrate_limit: {rate: 1, slip: 0}\n")
        assert await srv.reload(force=True)
        assert srv.config.log_level == "debug" and srv.limiter is first
        path.write_text(head + "rate_limit: {rate: 2, slip: 0}\n")
        assert await srv.reload(force=True)
        assert srv.limiter is not None and srv.limiter is not first
        assert sum(srv.view().counters.limited.values()) == 3
        path.write_text(head)
        assert await srv.reload(force=True)
        assert srv.limiter is None and sum(srv.view().counters.limited.values()) == 3
        got, _ = await send(srv.bound[0].port, "127.0.0.2", [query("www.rrl.example.")] * 4)
        assert len(got) == 4
    finally:
        await srv.shutdown()


# -- with DNS cookies: a resolver that proves its address keeps its answers ------------------

COOKIE_SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
CLIENT_COOKIE = bytes.fromhex("0102030405060708")


def cookie_query(name: str, cookie: bytes) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0, options=[
        dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie)])
    q.flags &= ~dns.flags.RD
    return q.to_wire()


def cookie_in(msg: dns.message.Message) -> bytes:
    found = [o for o in msg.options if o.otype == dns.edns.OptionType.COOKIE]
    assert len(found) == 1 and isinstance(found[0], dns.edns.CookieOption), msg.options
    return found[0].client + found[0].server


async def test_a_resolver_with_cookies_keeps_every_answer_in_a_flooded_network(
        zones: Path) -> None:
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 rate_limit=RateLimitConfig(rate=5, slip=2),
                 cookies=CookiesConfig((COOKIE_SECRET,)))
    srv = Server(cfg)
    await srv.start()
    try:
        port = srv.bound[0].port
        resolver = "127.0.9.200"
        # It learns its server cookie over TCP, which is never limited.
        first = await asyncio.to_thread(
            dns.query.tcp, dns.message.from_wire(cookie_query("www.rrl.example.", CLIENT_COOKIE)),
            "127.0.0.1", timeout=2, port=port, source=resolver)
        cookie = cookie_in(first)
        assert len(cookie) == 24
        www = query("www.rrl.example.")
        mine, *flood = await asyncio.gather(
            send(port, resolver, [cookie_query("www.rrl.example.", cookie)] * 50),
            *(send(port, f"127.0.9.{i}", [www] * 100) for i in range(1, 5)))
        took = max(t for _, t in flood)
        replied = [w for got, _ in flood for w in got
                   if not dns.message.from_wire(w).flags & dns.flags.TC]
        assert 5 <= len(replied) <= allowed(5, took)  # the network is limited ...
        answers = [dns.message.from_wire(w) for w in mine[0]]
        assert len(answers) == 50  # ... but not the resolver that proved its address
        assert all(not m.flags & dns.flags.TC and m.answer and cookie_in(m) == cookie
                   for m in answers)
        # A forged server cookie from the same network proves nothing: limited
        # like the flood (over UDP a bad cookie is BADCOOKIE, also limited).
        forged = cookie[:16] + bytes(8)
        got, _ = await send(port, "127.0.9.201", [cookie_query("www.rrl.example.", forged)] * 50)
        assert len(got) < 50
    finally:
        await srv.shutdown()


# -- next to Knot's mod-rrl, the anchor ---------------------------------------------------

KNOT_ZONE = """\
$ORIGIN rrl.example.
$TTL 3600
@ SOA ns1 hostmaster 1 7200 3600 1209600 3600
@ NS ns1
ns1 A 192.0.2.53
www A 192.0.2.1
"""


def counted(wires: list[bytes], sent: int) -> tuple[int, int, int]:
    """(replied, truncated, dropped) of a burst of ``sent`` queries."""
    cut = sum(1 for w in wires if dns.message.from_wire(w).flags & dns.flags.TC)
    return len(wires) - cut, cut, sent - len(wires)


@pytest.mark.parametrize("slip", [1, 2])
async def test_same_burst_as_knot_mod_rrl(zones: Path, tmp_path: Path, slip: int) -> None:
    """Rate 5 a second, the same burst of 50 from one address to geodns and
    to Knot configured alike: geodns replies to no more than Knot does (Knot
    lets a 4-second burst through, rate x 4; geodns one second's worth),
    sends no more bytes back, and truncates every slip-th limited answer."""
    require_binary("knotd")
    (tmp_path / "rrl.zone").write_text(KNOT_ZONE)
    modules = f"mod-rrl:\n  - id: default\n    rate-limit: 5\n    slip: {slip}\n"
    www = query("www.rrl.example.")
    with knot_server({"rrl.example.": tmp_path / "rrl.zone"}, modules=modules,
                     global_modules=["mod-rrl/default"]) as (host, kport):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.12.1", 0))
            s.settimeout(2)
            s.sendto(www, (host, kport))
            assert s.recv(65535)  # Knot is up and answers the zone (the one answer counted)
        assert host == "127.0.0.1"
        knot_got, knot_took = await send(kport, "127.0.13.1", [www] * 50)
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 rate_limit=RateLimitConfig(rate=5, slip=slip))
    srv = Server(cfg)
    await srv.start()
    try:
        ours_got, ours_took = await send(srv.bound[0].port, "127.0.13.1", [www] * 50)
    finally:
        await srv.shutdown()
    knot = counted(knot_got, 50)
    ours = counted(ours_got, 50)
    print(f"\nslip {slip}: replied/truncated/dropped: geodns {ours}, Knot {knot}")
    assert 5 <= knot[0] <= 4 * 5 + math.ceil(5 * knot_took)
    assert 5 <= ours[0] <= allowed(5, ours_took)
    assert ours[0] <= knot[0]
    assert ours[1] == (50 - ours[0]) // slip
    if slip == 1:
        assert knot[1] == 50 - knot[0] and knot[2] == 0  # Knot truncates every one too
    assert sum(map(len, ours_got)) <= sum(map(len, knot_got))
