"""The C reader of a zone's usual entries (geodns/_zonetext.c) against the
Python reading it stands in for (``yamlsrc.flow_entry`` and
``loader._ZoneBuilder.owner``): on any line it reads, the same owner and
record sets (every bytes type, text, target, TTL and place alike); on any
other, None, so that the Python reading reports what is wrong.  Random lines,
most of the shapes it reads and some just outside them, and whole zones
loaded both ways."""

from __future__ import annotations

import random
from array import array

import pytest

from geodns import names
from geodns.problems import Problems
from geodns.rdata import Wire
from geodns.yamlsrc import flow_entry
from geodns.zones import loader
from geodns.zones.checks import where_of
from geodns.zones.loader import _ZoneBuilder, load_zone_text
from geodns.zones.model import One, Packed, Zone, ZoneSource, compact
from tests.refservers import skip_or_fail

if loader._zonetext is None:
    skip_or_fail("the C helper geodns._zonetext is not built (no C compiler at install?)")
_zonetext = loader._zonetext

FILE = "z.yaml"


def shape(zone: Zone, owner: bytes) -> object:
    """A name's record sets with every object's type and value, and where
    each is written (kept with it, or found in the source: ``where_of``)."""
    node = zone.nodes[owner]
    return [(rtype, type(rr.owner), rr.owner, rr.rtype, rr.ttl,
             type(where_of(zone, owner, rtype)), tuple(where_of(zone, owner, rtype) or ()),
             [(rd.target, type(rd.target), [(type(p), p) for p in rd.parts])
              for rd in rr.rdatas])
            for rtype, rr in node.items()]


def python_entry(line: str, number: int, origin: bytes, ttl: int) -> object:
    """What the loader makes of the line without the C reader; None when
    the line is not read so or has any problem."""
    got = flow_entry(line, number, FILE)
    if got is None:
        return None
    zone = Zone(origin=origin, file=FILE, default_ttl=ttl)
    problems = Problems()
    low = _ZoneBuilder(zone, problems).owner(*got)
    if problems or low is None:
        return None
    zone.nodes[low] = compact(zone.nodes[low])  # (as the loader keeps it once read)
    return low, shape(zone, low)


def c_entry(line: str, number: int, origin: bytes, ttl: int) -> object:
    lines = [""] * (number - 1) + [line]
    got = _zonetext.entries(lines, [number, number + 1], 0, 1, origin, ttl)[0]
    if got is None:
        return None
    owner, node = got
    assert all(rr.where is None for rr in node.values())  # (no position kept: found when asked)
    # One record set: kept in its answer's body when its records have no name inside.
    wire = len(node) == 1 and all(type(rd) is Wire and rr.owner == owner
                                  for rr in node.values() for rd in rr.rdatas)
    # (or one of MX, NS or PTR written whole in it, its target out of the zone)
    assert isinstance(node, Packed if wire else (One, Packed) if len(node) == 1 else dict), line
    zone = Zone(origin=origin, file=FILE, default_ttl=ttl, nodes={owner: node},
                source=ZoneSource("\n".join(lines), (owner,), array("I", [number, number + 1])))
    return owner, shape(zone, owner)


OWNERS = ["www", "h1", "WwW", "a.b", "x-y_z/1", "_srv._tcp", "1", "on", "null", "a" * 63,
          ".".join(["abcdefghij"] * 22), "A.B.C"]
ODD_OWNERS = ["a..b", "a.", ".a", "-a", "a" * 64, ".".join(["abcdefghij"] * 24), '"@"', '"q"',
              "'q'", "*", '"*.w"', "a*b", "é", "a b", "a:b", "a\\.b"]
NAMES = ["mail", "mail.example.net.", "MAIL.Example.NET.", "a-b_c/d", "x.y", "ns1", "A" * 63]
ODD_NAMES = [".", "@", "a..b", "a" * 64, "a b", "*.w", "a.b..", ".".join(["abcdefghij"] * 24)
             + ".", "null", "Null", "~", "", "é", "a\\046b", "-x"]
V4 = ["192.0.2.1", "10.0.0.0", "255.255.255.255", "0.0.0.0"]
ODD_V4 = ["192.0.2.01", "192.0.2", "256.1.1.1", " 192.0.2.1", "192.0.2.1 ", "1.2.3.4.5",
          "0x1.2.3.4", "null", "2001:db8::1", "", "1.2.3.-4"]
V6 = ["2001:db8::1", "::1", "2001:db8:0:1:2:3:4:5", "fe80::", "::"]
ODD_V6 = ["2001:DB8::1", "2001:db8:0:0:0:0:0:1", "::ffff:192.0.2.1", "::192.0.2.1", "2001:db8::1 ",
          "2001:db8:::1", "g::1", "", "0:0:0:0:0:0:0:0"]
TXT = ["v=spf1 include:_spf.example.net ~all", "hello", "", "a\"b", "x" * 300, "y" * 255,
       "z" * 256, "1_0", "yes", "a=b+c@d/e"]
ODD_TXT = ["null", "Null", "~", "x" * 70000, "a\\b", "é", "a  b", "a: b", "a#b"]
PREFS = ["10", "0", "65535", "010", "00010"]
ODD_PREFS = ["65536", "-1", "+1", "1_0", "999999", "", "x", "1 0"]


def _quote(rnd: random.Random, text: str) -> str:
    style = rnd.random()
    if style < 0.4 and "'" not in text:
        return f"'{text}'"
    if style < 0.8 and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return text


def _random_line(rnd: random.Random, owner: str | None = None, indent: str | None = None) -> str:
    def pick(usual: list[str], odd: list[str]) -> str:
        return rnd.choice(odd if rnd.random() < 0.05 else usual)

    def scalar_of(rtype: str) -> str:
        if rtype == "A":
            return _quote(rnd, pick(V4, ODD_V4))
        if rtype == "AAAA":
            return _quote(rnd, pick(V6, ODD_V6))
        if rtype == "TXT":
            return _quote(rnd, pick(TXT, ODD_TXT))
        if rtype == "MX":
            if rnd.random() < 0.5:
                body = (pick(["preference: " + pick(PREFS, ODD_PREFS)], ["preference: '10'",
                                                                          'preference: "10"'])
                        + pick([", "], [" , ", ","])
                        + "exchange: " + _quote(rnd, pick(NAMES, ODD_NAMES)))
                if rnd.random() < 0.3:
                    body = ", ".join(reversed(body.split(", ")))
                if rnd.random() < 0.04:
                    body += pick([", weight: 1", ", preference: 1"], [", exchange: x"])
                if rnd.random() < 0.03:
                    body = "preference: 10"
                return "{" + pick(["", " "], ["  "]) + body + pick(["", " "], ["  "]) + "}"
            return _quote(rnd, pick(PREFS, ODD_PREFS) + pick([" "], ["  ", ""])
                          + pick(NAMES, ODD_NAMES))
        return _quote(rnd, pick(NAMES, ODD_NAMES))

    def value(rtype: str) -> str:
        if rnd.random() < 0.3:
            items = [scalar_of(rtype) for _ in range(rnd.randint(1, 4))]
            if rnd.random() < 0.1 and items:
                items.append(items[0])  # a duplicate
            if rnd.random() < 0.03:
                items = []
            if rnd.random() < 0.03:
                items = ["[" + items[0] + "]"] if items else ["[]"]
            sp = pick(["", " "], ["  "])
            return "[" + sp + pick([", ", ","], [" , "]).join(items) + pick([""], [","]) + sp + "]"
        return scalar_of(rtype)

    types = rnd.sample(["A", "AAAA", "TXT", "MX", "NS", "CNAME", "PTR"], rnd.randint(1, 3))
    if rnd.random() < 0.05:
        types.append(rnd.choice(["SRV", "a", "TYPE1", "SOA", "A", "Mx", "ttl"]))
    pairs = [t + pick([": "], [":", ":  ", " : "]) + value(t) for t in types]
    sp = pick(["", " "], ["  "])
    return ((indent if indent is not None else rnd.choice(["  ", "    "]))
            + (owner if owner is not None else pick(OWNERS, ODD_OWNERS)) + pick([": "], [":", ":  "])
            + "{" + sp + pick([", ", ","], [" , "]).join(pairs) + sp + "}"
            + pick(["", " "], ["  ", " # c", "#c", " x", ","]))


ORIGINS = [b"\x07example\x03com\x00", b"\x03big\x07example\x00",
           names.from_text("a.b-c_d.example.") , b"\x00"]


def test_random_lines_read_as_the_loader_reads_them() -> None:
    rnd = random.Random(2026)
    taken = 0
    for n in range(30_000):
        line = _random_line(rnd)
        origin = ORIGINS[n % len(ORIGINS)]
        number = 2 + n % 50
        ttl = rnd.choice([3600, 0, 2**31 - 1])
        got = c_entry(line, number, origin, ttl)
        if got is not None:
            taken += 1
            assert got == python_entry(line, number, origin, ttl), (line, origin)
    assert taken > 5_000  # (the test means something)


READ = [
    '  h1: {A: "192.0.2.1"}',
    "  h3: {MX: [{preference: 10, exchange: mail3.example.net.}]}",
    '  Mx: {MX: "10 Mail", TXT: [a, "b c", \'d"e\'], NS: [ns1, ns2.example.net.]}',
    "  h2: {TXT: " + '"' + "x" * 600 + '"}',
    "  a.b/c: {AAAA: [2001:db8::1]}".replace("2001:db8::1", '"2001:db8::1"'),
    "  c: {CNAME: www}  ",
]
LEFT = [
    '  h1: {A: "192.0.2.01"}',
    '  h1: {A: ["192.0.2.1", "192.0.2.1"]}',  # a duplicate: the loader reports it
    "  h1: {NS: [Mail, mail]}",  # the same name (DNSSEC's canonical form)
    "  h1: {CNAME: [a, b]}",
    "  h1: {A: {ttl: 60, value: 192.0.2.1}}",
    "  h1: {SRV: 0 0 1 x}",
    "  h1.: {A: 192.0.2.1}",
    '  "@": {NS: ns1}',
    "  h1: {TXT: null}",
    "  h1: {MX: {preference: '10', exchange: x}}",
    "  h1: {A: 192.0.2.1} # c",
    "  " + "a" * 64 + ": {A: 192.0.2.1}",
]


@pytest.mark.parametrize("line", READ)
def test_usual_lines_are_read(line: str) -> None:
    origin = b"\x07example\x03com\x00"
    got = c_entry(line, 9, origin, 300)
    assert got is not None
    assert got == python_entry(line, 9, origin, 300)


@pytest.mark.parametrize("line", LEFT)
def test_anything_else_is_left_to_the_loader(line: str) -> None:
    assert c_entry(line, 9, b"\x07example\x03com\x00", 300) is None


def _zone_text(rnd: random.Random, lines: int, usual: bool) -> str:
    head = ("origin: example.com.\nttl: 300\n"
            "soa: {mname: ns1, rname: hostmaster, serial: 1}\nrecords:\n"
            '  "@": {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n')
    body = []
    for k in range(lines):
        # (usual: names of their own, in one column, and only lines the C reader takes)
        line = _random_line(rnd, f"h{k}" if usual or rnd.random() < 0.8 else None, "  ")
        while usual and c_entry(line, 1, b"\x07example\x03com\x00", 300) is None:
            line = _random_line(rnd, f"h{k}", "  ")
        body.append(line)
        if rnd.random() < 0.05:
            body.append(rnd.choice(["", "  # note", "    "]))
    return head + "\n".join(body) + "\n"


def test_zones_load_alike_with_and_without_the_c_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole zones (a problem in one line: the whole text's problems, every
    one at its place), loaded with the C reader and without it."""
    rnd = random.Random(7)
    good = 0
    for n in range(300):
        text = _zone_text(rnd, rnd.choice([3, 10, 40]), n % 3 == 0)
        results = []
        for c in (True, False):
            if not c:
                monkeypatch.setattr(loader, "_zonetext", None)
            problems = Problems()
            zone = load_zone_text(text, FILE, "example.com.", problems)
            results.append((None if zone is None else
                            [(o, shape(zone, o)) for o in zone.nodes],
                            [str(p) for p in problems]))
            monkeypatch.undo()
        assert results[0] == results[1], text
        good += results[0][0] is not None
    assert good > 20
