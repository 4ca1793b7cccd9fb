"""The usual names' answers encoded without resolving
(``compile._own_answer``) against the resolved and encoded ones: random
zones of every shape around them (CNAMEs, wildcards, in-zone targets whose
addresses go in the additional section, delegations, names in other case),
compiled both ways, must give the same tables byte for byte."""

from __future__ import annotations

import random

import pytest

from geodns import compile as compiler
from geodns.compile import Answer, Node, Steered, compile_zones
from geodns.problems import Problems
from geodns.zones.checks import where_of
from geodns.zones.loader import load_zone_text
from geodns.zones.model import Packed
from tests.refservers import skip_or_fail

VALUES = {
    "A": ['"192.0.2.1"', "[192.0.2.1, 192.0.2.2]", "192.0.2.3"],
    "AAAA": ['"2001:db8::1"', '["2001:db8::1", "2001:db8::2"]'],
    "TXT": ['"v=spf1 -all"', "[a, b]", '"' + "x" * 300 + '"', "[[a, b]]"],
    "MX": ["[{preference: 10, exchange: mail.example.net.}]", '"10 h1"', '["5 H2", "10 h3.x"]',
           '"20 h0"', '"10 mail.com."', '"10 MAIL.Com."', '"10 com."', '"10 a.b.c.com."',
           '["1 x.com.", "2 y.com."]'],
    "NS": ["[ns1.example.net.]", "[h1, ns2.example.net.]", "[ns.com.]"],
    "CNAME": ["h1", "out.example.net.", "h0", "other.com."],
    "PTR": ["h2", "x.example.net.", "x.COM.", "com."],
    "SRV": ['"0 0 53 h1"', '"1 2 3 srv.example.net."'],
    "CAA": ['"0 issue ca.example.net"'],
    "HTTPS": ['"1 h1"', '"1 . alpn=h2"'],
}


def _zone(rnd: random.Random) -> str:
    lines = ["origin: example.com.", "ttl: 300", "soa: {mname: ns1, rname: hostmaster, serial: 1}",
             "records:", '  "@": {NS: [ns1], MX: ["10 h1"]}', "  ns1: {A: 192.0.2.53}"]
    owners = [f"h{k}" for k in range(12)] + ["H5.Up", '"*.h1"', '"*"', "a.b.h2", "x"]
    delegate = rnd.random() < 0.2
    for owner in rnd.sample(owners, rnd.randint(3, len(owners))):
        if owner == "x" and delegate:
            lines.append('  x: {NS: [ns.x], }'.replace(", }", "}"))
            lines.append("  ns.x: {A: 192.0.2.9}")
            continue
        types = rnd.sample([t for t in VALUES if t not in ("NS", "CNAME")], rnd.randint(1, 3))
        if rnd.random() < 0.1:
            types = ["CNAME"]
        if rnd.random() < 0.05 and "*" not in owner:
            types.append("NS")
        pairs = ", ".join(f"{t}: {rnd.choice(VALUES[t])}" for t in types)
        lines.append(f"  {owner}: {{{pairs}}}")
    return "\n".join(lines) + "\n"


def _answer(a: Answer | Steered | None) -> object:
    if a is None or isinstance(a, Steered):
        return a
    return (a.rcode, a.aa, a.kind, a.zone, a.cid, a.heads, a.tails, _answer(a.smaller),
            _answer(a.signed) if isinstance(a.signed, Answer) else a.signed)


def _node(name: bytes, n: Node) -> object:
    """A node as it answers for ``name`` (a usual name's node is shared: no name of its own)."""
    return (name if n.name is None else n.name, sorted(n.types), _answer(n.nodata), _answer(n.referral),
            None if n.wild is None else {t: _answer(a) for t, a in n.wild.items()},
            _answer(n.nodata_wild), _answer(n.below_answer), n.memo)


@pytest.mark.parametrize("in_c", [True, False])
def test_own_answers_are_the_resolved_answers(monkeypatch: pytest.MonkeyPatch,
                                              in_c: bool) -> None:
    """With the C helper (geodns/_zonetext.c, own()) and without it."""
    if in_c and compiler._zonetext is None:
        skip_or_fail("the C helper geodns._zonetext is not built (no C compiler at install?)")
    rnd = random.Random(5)
    compiled = 0
    for n in range(150):
        text = _zone(rnd)
        problems = Problems()
        zone = load_zone_text(text, f"z{n}.yaml", "example.com.", problems)
        if zone is None:
            continue
        compiled += 1
        tables = []
        for own in (True, False):
            if not in_c:
                monkeypatch.setattr(compiler, "_zonetext", None)
            monkeypatch.setattr(compiler, "_OWN_ANSWERS", own)
            t = compile_zones([zone])
            tables.append(({k: _answer(a) for k, a in t.exact.items()},
                           {k: _node(k, v) for k, v in t.nodes.items()},
                           [list(t.exact), list(t.nodes)]))
        monkeypatch.undo()
        assert tables[0] == tables[1], text
    assert compiled > 60  # (the test means something)


@pytest.mark.parametrize("how", ["own in C", "own in Python", "resolved", "signed"])
def test_an_answer_keeps_its_body_once_and_shares_its_opts(monkeypatch: pytest.MonkeyPatch,
                                                           how: str) -> None:
    """compile.Tails: ``(body, opt, do_body, do_opt)``, with ``do_body is
    body`` and the two OPTs objects every answer of the zone shares, so a
    pre-built answer holds no bytes of its own but its body (issue #12:
    memory per record).  A signed form (only sent with DO) has the DO OPT
    in both places."""
    from test_dnssec import NOW, signed_zone

    if how == "own in C" and compiler._zonetext is None:
        skip_or_fail("the C helper geodns._zonetext is not built (no C compiler at install?)")
    if how == "own in Python":
        monkeypatch.setattr(compiler, "_zonetext", None)
    monkeypatch.setattr(compiler, "_OWN_ANSWERS", how != "resolved")
    if how == "signed":
        tables = compile_zones([signed_zone()], now=NOW)
    else:
        problems = Problems()
        zone = load_zone_text(_zone(random.Random(8)), "z.yaml", "example.com.", problems)
        assert zone is not None, problems
        tables = compile_zones([zone])
    answers: list[Answer] = []
    signed: list[Answer] = []
    for entry in [*tables.exact.values(), *(n.nodata for n in tables.nodes.values()),
                  *(n.below_answer for n in tables.nodes.values())]:
        while isinstance(entry, Answer):
            answers.append(entry)
            if isinstance(entry.signed, Answer):
                signed.append(entry.signed)
            entry = entry.smaller
    signed += [s.smaller for s in signed if s.smaller is not None]
    assert len(answers) > 20 and (signed or how != "signed")
    opt, do_opt = compiler.opt_record(tables.payload, False), compiler.opt_record(
        tables.payload, True)
    for ans in answers:
        body = ans.tails[0]
        assert len(ans.tails) == 4 and ans.tails[2] is body
        assert ans.tails[1] is answers[0].tails[1] and ans.tails[1] == opt
        assert ans.tails[3] is answers[0].tails[3] and ans.tails[3] == do_opt
    for ans in signed:
        assert ans.tails[2] is ans.tails[0]
        assert ans.tails[1] is ans.tails[3] is answers[0].tails[3]


@pytest.mark.parametrize("in_c", [True, False])
def test_a_compiled_zone_holds_the_records_it_was_loaded_with(monkeypatch: pytest.MonkeyPatch,
                                                              in_c: bool) -> None:
    """A usual name's record set kept in its answer's body (``model.Packed``,
    issue #12: memory per record) reads back as the record set it was, and
    is found where it was written; a set the body does not hold as written
    (a name compressed into the question, an owner in other case) stays."""
    if in_c and compiler._zonetext is None:
        skip_or_fail("the C helper geodns._zonetext is not built (no C compiler at install?)")
    if not in_c:
        monkeypatch.setattr(compiler, "_zonetext", None)
    rnd = random.Random(11)
    packed = kept = 0
    for n in range(120):
        problems = Problems()
        zone = load_zone_text(_zone(rnd), f"z{n}.yaml", "example.com.", problems)
        if zone is None:
            continue
        before = {o: dict(types) for o, types in zone.nodes.items()}
        places = {(o, t): where_of(zone, o, t) for o, types in before.items() for t in types}
        compile_zones([zone])
        assert {o: dict(types) for o, types in zone.nodes.items()} == before
        assert {(o, t): where_of(zone, o, t) for o, t in places} == places
        for owner, types in zone.nodes.items():
            if isinstance(types, Packed):
                packed += 1
                assert types.owner is owner and len(types) == 1
                (rtype, rrset), = before[owner].items()
                assert list(types) == [rtype] and types.get(rtype) == rrset
                assert types.get(rtype + 1) is None and rtype + 1 not in types
            elif len(types) == 1:
                kept += 1
    assert packed > 80 and kept > 80  # (both kinds, many times)
