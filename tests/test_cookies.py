"""DNS cookies (RFC 7873, with the interoperable server cookies of RFC 9018):
the RFC 9018 test vectors, the option's edge cases, every kind of answer
carrying the option, the configuration, real servers on loopback (one node,
two nodes with one secret) and interop with Knot's mod-cookies, both ways."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from refservers import knot_server, require_binary

from geodns.compile import compile_zones
from geodns.config import Address, Config, CookiesConfig, load_config_text, load_shared_config
from geodns.cookies import CODE, Cookies, Verdict, age, parse_secret, well_formed
from geodns.problems import Problems
from geodns.server.app import Server
from geodns.wire import Responder, Vouched
from tests.conftest import REF_ZONES, TEST_ZONE, load_test_zone

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
OLD = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")
NEW = bytes.fromhex("445536bcd2513298075a5d379663c962")
CLIENT = bytes.fromhex("0102030405060708")
LOOPBACK = bytes([127, 0, 0, 1])
NOW = 1_700_000_000


def packed(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed


# -- RFC 9018 Appendix A --------------------------------------------------------------

# (secret, client cookie, client address, time, the server cookie made then)
MINTED = [
    # A.1: a client learning a new server cookie
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559731985,
     "010000005cf79f111f8130c3eee29480"),
    # A.2: the same client, a renewed one
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559734385,
     "010000005cf7a871d4a564a1442aca77"),
    # A.3: another client
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "fc93fc62807ddb86", "203.0.113.203", 1559734700,
     "010000005cf7a9acf73a7810aca2381e"),
    # A.4: an IPv6 client, after the secret rolled over
    ("445536bcd2513298075a5d379663c962", "22681ab97d52c298", "2001:db8:220:1:59de:d0f4:8769:82b8",
     1559741961, "010000005cf7c609a6bb79d16625507a"),
]


@pytest.mark.parametrize(("secret", "client", "ip", "at", "server"), MINTED)
def test_rfc9018_vectors_minted(secret: str, client: str, ip: str, at: int, server: str) -> None:
    cookies = Cookies([bytes.fromhex(secret)])
    assert cookies.server_cookie(bytes.fromhex(client), packed(ip), at).hex() == server


def test_rfc9018_a2_a_cookie_over_half_an_hour_old_is_valid_and_renewed() -> None:
    query = bytes.fromhex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    verdict, option = Cookies([SECRET]).check(query, packed("198.51.100.100"), 1559734385)
    assert verdict is Verdict.VALID
    assert option == struct.pack("!HH", CODE, 24) + bytes.fromhex(
        "2464c4abcf10c957010000005cf7a871d4a564a1442aca77")


def test_rfc9018_a3_reserved_bytes_are_hashed_as_sent() -> None:
    # The client's cookie carries reserved bytes 01abcdef: they are part of
    # the hash.  The example answers it 1 h 52 min after it was made, past the
    # one-hour lifetime of section 4.3: expired here, with the RFC's fresh one.
    query = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    cookies = Cookies([SECRET])
    made = 0x5CF78F71
    verdict, option = cookies.check(query, packed("203.0.113.203"), 1559734700)
    assert verdict is Verdict.EXPIRED
    assert option[4:].hex() == "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"
    assert cookies.check(query, packed("203.0.113.203"), made + 60)[0] is Verdict.VALID
    assert cookies.check(query, packed("203.0.113.204"), made + 60)[0] is Verdict.INVALID


def test_rfc9018_a4_rollover_old_secret_verifies_new_one_mints() -> None:
    query = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    ip = packed("2001:db8:220:1:59de:d0f4:8769:82b8")
    verdict, option = Cookies([NEW, OLD]).check(query, ip, 1559741961)
    assert verdict is Verdict.VALID
    assert option[4:].hex() == "22681ab97d52c298010000005cf7c609a6bb79d16625507a"
    assert Cookies([NEW]).check(query, ip, 1559741961)[0] is Verdict.INVALID
    # With the old secret first the cookie is echoed as it came (2.4 min old).
    assert Cookies([OLD, NEW]).check(query, ip, 1559741961)[1][4:] == query


# -- the option ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(42))
def test_option_lengths(n: int) -> None:
    """RFC 7873 5.2.2: 8 bytes (a client cookie), or 16 to 40 (with a server
    cookie of 8 to 32); anything else is FORMERR."""
    ok = n == 8 or 16 <= n <= 40
    assert well_formed(bytes(n)) is ok
    verdict, option = Cookies([SECRET]).check(bytes(n), LOOPBACK, NOW)
    if not ok:
        assert (verdict, option) == (Verdict.MALFORMED, b"")
    else:
        # Only 24 bytes can be ours (RFC 9018); every well-formed cookie gets a fresh one.
        assert verdict is (Verdict.CLIENT_ONLY if n == 8 else Verdict.INVALID)
        assert option[4:12] == bytes(8) and len(option) == 4 + 24


def test_age_in_serial_arithmetic() -> None:
    assert age(NOW, NOW) == 0
    assert age(NOW - 3600, NOW) == 3600
    assert age(NOW + 300, NOW) == -300
    assert age(0xFFFFFFFF - 99, 1000) == 1100  # across the wrap of 32 bits
    assert age(1000, 0xFFFFFFFF - 99) == -1100


@pytest.mark.parametrize(("made", "verdict", "echoed"), [
    (NOW, Verdict.VALID, True),
    (NOW - 1800, Verdict.VALID, True),
    (NOW - 1801, Verdict.VALID, False),  # renewed: over half an hour old
    (NOW - 3600, Verdict.VALID, False),
    (NOW - 3601, Verdict.EXPIRED, False),
    (NOW + 300, Verdict.VALID, True),
    (NOW + 301, Verdict.EXPIRED, False),
])
def test_lifetime(made: int, verdict: Verdict, echoed: bool) -> None:
    cookies = Cookies([SECRET])
    sent = CLIENT + cookies.server_cookie(CLIENT, LOOPBACK, made)
    got, option = cookies.check(sent, LOOPBACK, NOW)
    assert got is verdict
    assert (option[4:] == sent) is echoed
    if not echoed:
        assert option[4:] == CLIENT + cookies.server_cookie(CLIENT, LOOPBACK, NOW)


def test_version_other_than_1_is_not_ours() -> None:
    cookies = Cookies([SECRET])
    server = bytearray(cookies.server_cookie(CLIENT, LOOPBACK, NOW))
    server[0] = 2
    assert cookies.check(CLIENT + bytes(server), LOOPBACK, NOW)[0] is Verdict.INVALID


@pytest.mark.parametrize(("text", "error"), [
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", None),
    ("0xE5E973E5A6B2A43F48E7DC849E37BFCF", None),
    ("e5e973e5a6b2a43f48e7dc849e37bf", "30 characters"),
    ("e5e973e5a6b2a43f48e7dc849e37bfcf00", "34 characters"),
    ("g5e973e5a6b2a43f48e7dc849e37bfcf", "not hexadecimal"),
    ("e5e973e5 6b2a43f48e7dc849e37bfcf", "not hexadecimal"),
])
def test_parse_secret(text: str, error: str | None) -> None:
    if error is None:
        assert parse_secret(text) == SECRET
    else:
        with pytest.raises(ValueError, match=error):
            parse_secret(text)


# -- the configuration --------------------------------------------------------------------

def config(text: str, shared: bool = False) -> tuple[Config, list[str]]:
    problems = Problems()
    if shared:
        cfg = load_shared_config(text, "shared.yaml", Config(path=None), problems)
    else:
        cfg = load_config_text(text, "geodns.yaml", Path("."), problems)
    return cfg, [str(p) for p in problems]


def test_config_secrets() -> None:
    cfg, problems = config("cookies:\n  secrets:\n    - 445536bcd2513298075a5d379663c962\n"
                           "    - 0xdd3bdf9344b678b185a6f5cb60fca715\n")
    assert problems == []
    assert cfg.cookies == CookiesConfig((NEW, OLD))
    assert "445536" not in repr(cfg)  # secrets stay out of logs
    assert config("cookies: null\n")[0].cookies is None
    assert config("listen: [127.0.0.1:5300]\n")[0].cookies is None
    # With a fleet, the shared configuration carries them.
    shared, problems = config("cookies: {secrets: [445536bcd2513298075a5d379663c962]}\n", True)
    assert problems == [] and shared.cookies == CookiesConfig((NEW,))


@pytest.mark.parametrize(("text", "problem"), [
    ("cookies:\n  secrets: []\n", "geodns.yaml:2:12: cookies: give at least one secret"),
    ("cookies: {}\n", "geodns.yaml:1:10: cookies: give at least one secret"),
    ("cookies:\n  secrets:\n    - e5e973e5a6b2a43f48e7dc849e37bf\n",
     "geodns.yaml:3:7: cookies secret: 30 characters"),
    ("cookies:\n  secrets:\n    - 'e5e973e5a6b2a43f48e7dc849e37bfcz'\n",
     "geodns.yaml:3:7: cookies secret: not hexadecimal"),
    ("cookies:\n  secrets:\n    - e5e973e5a6b2a43f48e7dc849e37bfcf\n"
     "    - 0xE5E973E5A6B2A43F48E7DC849E37BFCF\n",
     "geodns.yaml:4:7: cookies secret: the same secret twice"),
    ("cookies:\n  secret: e5e973e5a6b2a43f48e7dc849e37bfcf\n", "unknown key 'secret'"),
    ("cookies: e5e973e5a6b2a43f48e7dc849e37bfcf\n", "geodns.yaml:1:10: cookies"),
    ("fleet: {etcd: [http://127.0.0.1:2379], node: a}\n"
     "cookies: {secrets: [e5e973e5a6b2a43f48e7dc849e37bfcf]}\n",
     "geodns.yaml:2:1: cookies: with 'fleet' set, it comes from the fleet store"),
])
def test_config_problems(text: str, problem: str) -> None:
    cfg, problems = config(text)
    assert any(problem in p for p in problems), problems
    if "fleet" not in text:
        assert cfg.cookies is None


# -- every kind of answer carries the option ----------------------------------------------

@pytest.fixture(scope="module")
def cookied() -> Responder:
    r = Responder(compile_zones([load_test_zone()]), cookies=Cookies([SECRET]))
    r.now = NOW
    return r


def ask(r: Responder, name: str, rtype: str = "A", cookie: bytes = CLIENT, udp: bool = True,
        payload: int = 1232, options: tuple[dns.edns.Option, ...] = (),
        peer: tuple[str, int] = ("127.0.0.1", 5353), do: bool = False,
        edns: int = 0) -> tuple[dns.message.Message, bytes]:
    q = dns.message.make_query(name, rtype, use_edns=edns, payload=payload, want_dnssec=do,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie), *options])
    wire = r.respond(q.to_wire(), udp, peer)
    assert wire is not None
    return dns.message.from_wire(wire), wire


def cookie_of(msg: dns.message.Message) -> bytes:
    found = [o for o in msg.options if o.otype == CODE]
    assert len(found) == 1, msg.options
    option = found[0]
    assert isinstance(option, dns.edns.CookieOption)
    return option.client + option.server


def fresh(at: int = NOW, secret: bytes = SECRET, client: bytes = CLIENT) -> bytes:
    return client + Cookies([secret]).server_cookie(client, LOOPBACK, at)


@pytest.mark.parametrize(("name", "rtype", "rcode"), [
    ("www.test.example.", "A", "NOERROR"),
    ("nothere.test.example.", "A", "NXDOMAIN"),
    ("www.test.example.", "MX", "NOERROR"),  # NODATA
    ("example.org.", "A", "REFUSED"),
])
def test_answers_carry_the_cookie(cookied: Responder, name: str, rtype: str,
                                  rcode: str) -> None:
    msg, wire = ask(cookied, name, rtype)
    assert dns.rcode.to_text(msg.rcode()) == rcode
    assert cookie_of(msg) == fresh()
    assert type(wire) is bytes  # a client cookie alone proves nothing
    msg, wire = ask(cookied, name, rtype, cookie=fresh(NOW - 10))
    assert dns.rcode.to_text(msg.rcode()) == rcode
    assert cookie_of(msg) == fresh(NOW - 10)  # echoed
    assert type(wire) is Vouched


def test_with_a_client_subnet_echo(cookied: Responder) -> None:
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    msg, _ = ask(cookied, "www.test.example.", options=(ecs,))
    assert cookie_of(msg) == fresh()
    assert [o for o in msg.options if o.otype == dns.edns.ECS]
    assert msg.answer


_NS = [f"ns{i}" for i in range(12)]
BIG_ZONE = "\n".join([
    "origin: big.example.",
    "soa: {mname: ns1, rname: hostmaster, serial: 1}",
    "records:",
    f'  "@": {{NS: [{", ".join(_NS)}]}}',
    *(f"  {ns}: {{A: 192.0.2.{i}, AAAA: '2001:db8::{i}'}}" for i, ns in enumerate(_NS)),
    "  many: {TXT: [" + ", ".join(f"{i:03d}-" + "x" * 200 for i in range(20)) + "]}",
    ""])


@pytest.fixture(scope="module")
def big() -> Responder:
    from geodns.zones.loader import load_zone_text

    problems = Problems()
    loaded = load_zone_text(BIG_ZONE, "big.example.yaml", "big.example.", problems)
    assert loaded is not None, [str(p) for p in problems]
    r = Responder(compile_zones([loaded]), cookies=Cookies([SECRET]))
    r.now = NOW
    return r


def test_truncated_answers_keep_the_cookie(big: Responder) -> None:
    msg, wire = ask(big, "many.big.example.", "TXT", payload=1232)
    assert msg.flags & dns.flags.TC and not msg.answer
    assert cookie_of(msg) == fresh() and len(wire) <= 1232
    assert big.events[("truncated", "tc")] == 1
    msg, wire = ask(big, "many.big.example.", "TXT", udp=False)
    assert not msg.flags & dns.flags.TC and msg.answer
    assert cookie_of(msg) == fresh()


def test_additional_section_dropped_keeps_the_cookie(big: Responder) -> None:
    msg, wire = ask(big, "big.example.", "NS", udp=False)
    assert len(msg.additional) == 24 and len(wire) > 600
    msg, wire = ask(big, "big.example.", "NS", payload=600)
    assert msg.answer and not msg.additional and not msg.flags & dns.flags.TC
    assert cookie_of(msg) == fresh() and len(wire) <= 600
    assert big.events[("truncated", "additional")] == 1


def test_error_answers_carry_the_cookie(cookied: Responder) -> None:
    # FORMERR for a bad Client Subnet option, BADVERS for EDNS version 1.
    bad_ecs = dns.edns.GenericOption(dns.edns.ECS, bytes([0, 1, 24, 5, 192, 0, 2]))
    msg, _ = ask(cookied, "www.test.example.", options=(bad_ecs,))
    assert msg.rcode() == dns.rcode.FORMERR
    assert cookie_of(msg) == fresh()
    msg, _ = ask(cookied, "www.test.example.", edns=1)
    assert msg.rcode() == dns.rcode.BADVERS
    assert cookie_of(msg) == fresh()


def test_badcookie_over_udp_answer_over_tcp(cookied: Responder) -> None:
    forged = fresh()[:16] + bytes(8)
    before = dict(cookied.events)
    msg, wire = ask(cookied, "www.test.example.", cookie=forged)
    assert msg.rcode() == dns.rcode.BADCOOKIE
    assert not msg.answer and cookie_of(msg) == fresh()
    assert type(wire) is bytes
    msg, wire = ask(cookied, "www.test.example.", cookie=forged, udp=False)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert cookie_of(msg) == fresh() and type(wire) is bytes
    # From another address the cookie is not this client's.
    msg, _ = ask(cookied, "www.test.example.", cookie=fresh(), peer=("127.0.0.2", 53))
    assert msg.rcode() == dns.rcode.BADCOOKIE
    key = ("cookie", "invalid")
    assert cookied.events.get(key, 0) - before.get(key, 0) == 3


@pytest.mark.parametrize("n", [0, 1, 7, 9, 15, 41])
def test_malformed_option_is_formerr(cookied: Responder, n: int) -> None:
    before = cookied.events.get(("malformed", "cookie"), 0)
    msg, _ = ask(cookied, "www.test.example.", cookie=bytes(n))
    assert msg.rcode() == dns.rcode.FORMERR
    assert not [o for o in msg.options if o.otype == CODE]
    assert cookied.events[("malformed", "cookie")] == before + 1


def test_the_first_of_two_options_counts(cookied: Responder) -> None:
    """RFC 7873 5.2: of several COOKIE options only the first is considered."""
    msg, _ = ask(cookied, "www.test.example.",
                 options=(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, bytes(9)),))
    assert msg.rcode() == dns.rcode.NOERROR and cookie_of(msg) == fresh()
    msg, _ = ask(cookied, "www.test.example.", cookie=bytes(9),
                 options=(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, CLIENT),))
    assert msg.rcode() == dns.rcode.FORMERR


def test_without_cookies_configured_the_option_is_ignored() -> None:
    r = Responder(compile_zones([load_test_zone()]))
    for cookie in (CLIENT, bytes(9), fresh()[:16] + bytes(8)):
        msg, wire = ask(r, "www.test.example.", cookie=cookie)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer
        assert not [o for o in msg.options if o.otype == CODE]
        assert type(wire) is bytes
    assert not [k for k in r.events if k[0] == "cookie"]


# -- real servers on loopback --------------------------------------------------------------

def zones(tmp: Path) -> Path:
    d = tmp / "zones"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEST_ZONE, d / TEST_ZONE.name)
    return d


async def start(tmp: Path, *secrets: bytes) -> Server:
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones(tmp),
                 cookies=CookiesConfig(secrets))
    srv = Server(cfg)
    await srv.start()
    return srv


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start(tmp_path, SECRET)
    yield srv
    await srv.shutdown()


async def query(srv: Server, cookie: bytes | None, tcp: bool = False,
                name: str = "www.test.example.") -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if cookie is not None:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie))
    q = dns.message.make_query(name, "A", use_edns=0, options=options)
    host, port = srv.bound[0].host, srv.bound[0].port
    if tcp:
        return await dns.asyncquery.tcp(q, host, port=port, timeout=2)
    return await dns.asyncquery.udp(q, host, port=port, timeout=2)


def minted_at(cookie: bytes) -> int:
    return int.from_bytes(cookie[12:16], "big")


async def test_node(node: Server) -> None:
    now = int(time.time())
    # No cookie: answered as ever, no option back.
    msg = await query(node, None)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer and not msg.options
    # A client cookie alone: the answer, and a server cookie made now.
    msg = await query(node, CLIENT)
    got = cookie_of(msg)
    assert msg.answer and got[:8] == CLIENT and abs(minted_at(got) - now) <= 2
    assert got == fresh(minted_at(got))
    # That server cookie sent back: valid, echoed.
    msg = await query(node, got)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer and cookie_of(msg) == got
    # Forged: BADCOOKIE over UDP with a fresh cookie, the answer over TCP.
    forged = got[:16] + bytes(8)
    msg = await query(node, forged)
    assert msg.rcode() == dns.rcode.BADCOOKIE and not msg.answer
    assert cookie_of(msg)[16:] != bytes(8) and cookie_of(msg)[:8] == CLIENT
    msg = await query(node, forged, tcp=True)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer and cookie_of(msg)[:8] == CLIENT
    # Expired (over an hour old) and from the future (over five minutes ahead).
    for at in (now - 3700, now + 400):
        msg = await query(node, fresh(at))
        assert msg.rcode() == dns.rcode.BADCOOKIE and not msg.answer
        assert abs(minted_at(cookie_of(msg)) - now) <= 2
        msg = await query(node, fresh(at), tcp=True)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    # Over half an hour old: valid, and renewed.
    msg = await query(node, fresh(now - 2000))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert abs(minted_at(cookie_of(msg)) - now) <= 2
    # Malformed: FORMERR.
    msg = await query(node, bytes(12))
    assert msg.rcode() == dns.rcode.FORMERR
    events = node.responder.events
    assert events[("cookie", "client-only")] == 1
    assert events[("cookie", "valid")] == 2
    assert events[("cookie", "invalid")] == 2
    assert events[("cookie", "expired")] == 4
    assert events[("cookie", "malformed")] == 1
    assert events[("malformed", "cookie")] == 1


async def test_rollover(tmp_path: Path) -> None:
    """The new secret first, the old one second: a cookie the old one made
    still passes, and the answer carries one made with the new secret."""
    srv = await start(tmp_path, NEW, OLD)
    try:
        now = int(time.time())
        old = fresh(now - 5, OLD)
        msg = await query(srv, old)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer
        got = cookie_of(msg)
        assert got != old and got == fresh(minted_at(got), NEW)
        assert srv.responder.events[("cookie", "valid")] == 1
        # Once the old secret is gone, the old cookie is not ours any more.
        msg = await query(srv, fresh(now - 5, SECRET))
        assert msg.rcode() == dns.rcode.BADCOOKIE
    finally:
        await srv.shutdown()


async def test_two_nodes_one_secret(tmp_path: Path) -> None:
    a = await start(tmp_path / "a", SECRET)
    b = await start(tmp_path / "b", SECRET)
    other = await start(tmp_path / "c", NEW)
    try:
        got = cookie_of(await query(a, CLIENT))
        msg = await query(b, got)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer and cookie_of(msg) == got
        assert b.responder.events[("cookie", "valid")] == 1
        got = cookie_of(await query(b, CLIENT))
        assert cookie_of(await query(a, got)) == got
        # A node with another secret does not take it.
        assert (await query(other, got)).rcode() == dns.rcode.BADCOOKIE
    finally:
        for srv in (a, b, other):
            await srv.shutdown()


# -- interop with Knot's mod-cookies, both ways ------------------------------------------------

@pytest.fixture(scope="module")
def knot_cookies() -> Iterator[tuple[str, int]]:
    require_binary("knotd")
    modules = f"mod-cookies:\n  - id: shared\n    secret: 0x{SECRET.hex()}\n"
    with knot_server(REF_ZONES, modules=modules, global_modules=["mod-cookies/shared"]) as addr:
        yield addr


async def ask_knot(addr: tuple[str, int], cookie: bytes) -> dns.message.Message:
    q = dns.message.make_query("example.test.", "SOA", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie)])
    return await dns.asyncquery.udp(q, addr[0], port=addr[1], timeout=2)


async def test_knot_interop(node: Server, knot_cookies: tuple[str, int]) -> None:
    # Knot answers a client cookie alone with BADCOOKIE and a server cookie
    # (mod-cookies' default, badcookie-slip 1); a forged one gets the same.
    msg = await ask_knot(knot_cookies, CLIENT)
    assert msg.rcode() == dns.rcode.BADCOOKIE
    from_knot = cookie_of(msg)
    forged = from_knot[:16] + bytes(8)
    assert (await ask_knot(knot_cookies, forged)).rcode() == dns.rcode.BADCOOKIE
    # Knot's cookie at geodns: valid (and not renewed: seconds old).
    msg = await query(node, from_knot)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert cookie_of(msg) == from_knot
    assert node.responder.events[("cookie", "valid")] == 1
    # geodns's cookie at Knot: a normal answer, the cookie echoed.
    from_geodns = cookie_of(await query(node, bytes.fromhex("1122334455667788")))
    msg = await ask_knot(knot_cookies, from_geodns)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert cookie_of(msg) == from_geodns


@pytest.mark.parametrize(("peer", "address"), [
    (("192.0.2.7", 53), "192.0.2.7"),
    (("2001:db8::7", 53, 0, 0), "2001:db8::7"),
    (("fe80::7%lo", 53, 0, 1), "fe80::7"),  # a scoped address: the scope is not hashed
    (bytes([2, 0, 0, 53, 192, 0, 2, 7]) + bytes(8), "192.0.2.7"),  # raw sockaddr_in (recvmmsg)
])
def test_the_cookie_is_for_the_peer_address(cookied: Responder, peer: tuple[str, int] | bytes,
                                            address: str) -> None:
    q = dns.message.make_query("www.test.example.", "A", use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE,
                                                               CLIENT)])
    wire = cookied.respond(q.to_wire(), True, peer)
    assert wire is not None
    expected = Cookies([SECRET]).server_cookie(CLIENT, packed(address), NOW)
    assert cookie_of(dns.message.from_wire(wire)) == CLIENT + expected
