"""Zone files: every problem is reported at once, as file:line:column."""

from __future__ import annotations

import pytest

from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_text

HEAD = """\
origin: v.example.
soa: {mname: ns1, rname: hostmaster, serial: 1}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.1}
"""


def problems_for(body: str, head: str = HEAD) -> list[str]:
    problems = Problems()
    zone = load_zone_text(head + body, "z.yaml", "v.example.", problems)
    assert (zone is None) == bool(problems)
    return [str(p) for p in problems]


def test_valid_zone_has_no_problems() -> None:
    assert problems_for("  www: {A: 192.0.2.2}\n") == []


@pytest.mark.parametrize("body,line,col,fragment", [
    ("  www: {A: 192.0.2.300}\n", 6, 12, "not an IPv4 address"),
    ("  www: {AAAA: '2001:db8::zz'}\n", 6, 15, "not an IPv6 address"),
    ("  www: {CNAME: x, A: 192.0.2.2}\n", 6, 9, "CNAME beside other data (A)"),
    ("  www: {TXT: hi, CNAME: x}\n", 6, 18, "CNAME beside other data (TXT)"),
    (f"  {'a' * 64}: {{A: 192.0.2.2}}\n", 6, 3, "over 63"),
    ("  www.other.example.: {A: 192.0.2.2}\n", 6, 3, "out-of-zone data"),
    ("  www: {A: {ttl: 2147483648, value: 192.0.2.2}}\n", 6, 18, "out of range"),
    ("  www: {A: {ttl: -1, value: 192.0.2.2}}\n", 6, 18, "out of range"),
    ("  www: {A: [192.0.2.2, 192.0.2.2]}\n", 6, 24, "duplicate A record"),
    ("  www: {MX: ['10 mail', '10 MAIL']}\n", 6, 25, "duplicate MX record"),
    ("  www: {WKS: x}\n", 6, 9, "unknown record type 'WKS'"),
    ("  www: {a: 192.0.2.2}\n", 6, 9, "write record types in capitals"),
    ("  'bad name': {A: 192.0.2.2}\n", 6, 3, "character ' ' is not allowed"),
    ("  'a..b': {A: 192.0.2.2}\n", 6, 3, "empty label"),
    ("  'x.*': {A: 192.0.2.2}\n", 6, 3, "only allowed as the whole leftmost label"),
    ("  sub: {NS: [ns.sub]}\n", 6, 9, "needs glue"),
    ("  www: {MX: 'ten mail'}\n", 6, 13, "not a number"),
    ("  www: {SRV: {priority: 1, weight: 2, port: 70000, target: x}}\n", 6, 45, "out of range"),
    ("  www: {CAA: '0 is-sue x'}\n", 6, 14, "letters and digits"),
    ("  www: {CNAME: [a, b]}\n", 6, 16, "only one CNAME"),
    ("  www: {A: 192.0.2.2}\n  WWW: {AAAA: '::1'}\n", 7, 3, "appears twice"),
    ("  www: {A: 192.0.2.2}\n  www: {AAAA: '::1'}\n", 7, 3, "duplicate key 'www'"),
    ("  www: {A: [}\n", 6, 13, "YAML syntax"),
    ("  www: {A: {ttl: 60}}\n", 6, 12, "no 'value' or 'values'"),
    ("  www: {A: {ttl: 60, steer: {pops: {fra: 192.0.2.1}}}}\n", 6, 12, "defines no PoPs"),
    (f"  {'.'.join(['abcdefghij'] * 24)}: {{A: 192.0.2.2}}\n", 6, 3, "over 255"),
])
def test_problem_is_located(body: str, line: int, col: int, fragment: str) -> None:
    found = problems_for(body)
    assert any(p.startswith(f"z.yaml:{line}:{col}: ") and fragment in p for p in found), found


def test_missing_soa_and_ns() -> None:
    found = problems_for("records:\n  www: {A: 192.0.2.2}\n", head="origin: v.example.\n")
    assert any("missing 'soa'" in p for p in found)
    assert any("has no NS records" in p for p in found)


def test_cname_at_apex() -> None:
    head = 'origin: v.example.\nsoa: {mname: ns1, rname: h}\nrecords:\n  "@": {CNAME: x}\n'
    found = problems_for("", head=head)
    assert any("CNAME is not allowed at the zone apex" in p for p in found)


def test_all_problems_reported_at_once() -> None:
    body = ("  a: {A: 1.2.3}\n"
            "  b: {AAAA: nope}\n"
            "  c: {MX: '10'}\n"
            "  d: {CNAME: x, TXT: y}\n")
    found = problems_for(body)
    assert [p.split(":")[1] for p in found] == ["6", "7", "8", "9"], found


def test_numbers_in_yaml_stay_text_where_text_is_meant() -> None:
    # YAML 1.1 would read these as a sexagesimal int and a bool.
    problems = Problems()
    zone = load_zone_text(HEAD + "  v6: {AAAA: 2001:1:2:3:4:5:6:7}\n  t: {TXT: yes}\n",
                          "z.yaml", "v.example.", problems)
    assert zone is not None, list(map(str, problems))
    t = zone.nodes[b"\x01t\x01v\x07example\x00"]
    assert t[16].rdatas[0].wire == b"\x03yes"


def test_origin_defaults_to_file_name(tmp_path) -> None:
    from geodns.zones.loader import load_zone_file

    path = tmp_path / "named.example.yaml"
    path.write_text(HEAD.replace("origin: v.example.\n", ""))
    problems = Problems()
    zone = load_zone_file(path, problems)
    assert zone is not None and zone.name == "named.example."


@pytest.mark.parametrize("head,line,col,fragment", [
    ("origin: ''\nsoa: {mname: ns1, rname: h}\n", 1, 9, "origin is empty"),
    ("origin: v.example.\nsoa: {mname: ns1, rname: 'h@'}\n", 2, 26, "LOCAL@DOMAIN"),
    ("origin: v.example.\nsoa: {mname: ns1, rname: 'a@b@example.com'}\n", 2, 26,
     "LOCAL@DOMAIN"),
])
def test_problem_in_the_zone_head_is_located_and_the_rest_still_checked(
        head: str, line: int, col: int, fragment: str) -> None:
    body = 'records:\n  "@": {NS: [ns1]}\n  ns1: {A: 192.0.2.1}\n  www: {A: 192.0.2.300}\n'
    found = problems_for(body, head=head)
    assert any(p.startswith(f"z.yaml:{line}:{col}: ") and fragment in p for p in found), found
    assert any(p.startswith("z.yaml:6:12: ") and "not an IPv4 address" in p for p in found), found


@pytest.mark.parametrize("rname,served", [
    ("hostmaster", "hostmaster.v.example."),
    ("hostmaster.example.net.", "hostmaster.example.net."),
    ("hostmaster@example.net", "hostmaster.example.net."),
    ("hostmaster@example.net.", "hostmaster.example.net."),
    ("john.doe@example.net", "john\\.doe.example.net."),
])
def test_soa_rname_forms(rname: str, served: str) -> None:
    import dns.message
    import dns.rdatatype

    from geodns.compile import compile_zones
    from geodns.wire import Responder

    problems = Problems()
    zone = load_zone_text(HEAD.replace("rname: hostmaster", f"rname: '{rname}'"), "z.yaml",
                          "v.example.", problems)
    assert zone is not None, list(map(str, problems))
    wire = Responder(compile_zones([zone])).respond(
        dns.message.make_query("v.example.", "SOA").to_wire(), True)
    assert wire is not None
    (rrset,) = dns.message.from_wire(wire).answer
    assert rrset.rdtype == dns.rdatatype.SOA
    assert rrset[0].rname.to_text() == served
