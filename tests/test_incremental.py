"""A change costs what it changed: a reload compiles again only the zones
whose documents changed, reuses every other zone as it was compiled, and
those answer byte for byte as before, nested zones included."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from geodns import names
from geodns.compile import Answer, Steered, ZoneTables
from geodns.config import Config
from geodns.health.view import HealthView
from geodns.snapshot import Built, Document, Documents, GeoipStatus, build, new_responder


def zone(origin: str, serial: int, extra: str = "") -> str:
    return (f"origin: {origin}\nsoa: {{mname: ns1, rname: h, serial: {serial}}}\n"
            "records:\n  \"@\": {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n"
            f"  www: {{A: 192.0.2.{serial % 250}}}\n  mail: {{TXT: \"v=spf1 -all\"}}\n" + extra)


PARENT = "example."
CHILD = "child.example."
DELEGATION = "  child: {NS: [ns.child]}\n  ns.child: {A: 192.0.2.99}\n"


def documents(texts: dict[str, str], revision: str) -> Documents:
    return Documents(revision, None, {f"{o}yaml": Document(f"{o}yaml", t.encode())
                                      for o, t in texts.items()})


def built(texts: dict[str, str], revision: str, previous: Built | None = None) -> Built:
    return build(documents(texts, revision), Config(path=None, zones_dir=Path("zones")),
                 previous.snapshot if previous is not None else None, (None, GeoipStatus()),
                 HealthView(), new_responder, 0.0)


QUESTIONS = [(f"{n}{o}", t) for o in ("a.test.", "b.test.", "c.test.", PARENT, CHILD)
             for n in ("", "www.", "mail.", "ns1.", "nothere.") for t in ("A", "TXT", "SOA")]
QUESTIONS += [("host.child.example.", "A"), ("ns.child.example.", "A")]


def answers(b: Built) -> dict[tuple[str, str], bytes]:
    out = {}
    for name, rtype in QUESTIONS:
        q = dns.message.make_query(name, rtype)
        q.id = 1
        wire = b.snapshot.responder.respond(q.to_wire())
        assert wire is not None
        out[(name, rtype)] = wire
    return out


def test_an_edit_compiles_that_zone_again_and_no_other() -> None:
    texts = {"a.test.": zone("a.test.", 1), "b.test.": zone("b.test.", 1),
             "c.test.": zone("c.test.", 1), PARENT: zone(PARENT, 1, DELEGATION),
             CHILD: zone(CHILD, 1, "  host: {A: 192.0.2.7}\n")}
    first = built(texts, "r1")
    before = answers(first)
    texts["b.test."] = zone("b.test.", 2, "  new: {A: 192.0.2.200}\n")
    second = built(texts, "r2", first)
    after = answers(second)
    parts1, parts2 = first.snapshot.tables.parts, second.snapshot.tables.parts
    edited = names.from_text("b.test.").lower()
    for origin, part in parts2.items():
        assert (part is parts1[origin]) == (origin != edited), names.to_text(origin)
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(name.endswith("b.test.") for name, _ in changed), changed
    q = dns.message.make_query("new.b.test.", "A")
    got = dns.message.from_wire(second.snapshot.responder.respond(q.to_wire()) or b"")
    assert got.answer[0][0].address == "192.0.2.200"


def test_a_parent_edited_keeps_its_child_zone_answering_below_the_cut() -> None:
    """The child's names stay the child's when only the parent is compiled
    again, even a name the parent now also holds below the cut."""
    texts = {PARENT: zone(PARENT, 1, DELEGATION),
             CHILD: zone(CHILD, 1, "  host: {A: 192.0.2.7}\n")}
    first = built(texts, "r1")
    texts[PARENT] = zone(PARENT, 2, DELEGATION + "  host.child: {A: 203.0.113.1}\n")
    second = built(texts, "r2", first)
    assert second.snapshot.tables.parts[names.from_text(CHILD).lower()] is \
        first.snapshot.tables.parts[names.from_text(CHILD).lower()]
    q = dns.message.make_query("host.child.example.", "A")
    got = dns.message.from_wire(second.snapshot.responder.respond(q.to_wire()) or b"")
    assert got.rcode() == dns.rcode.NOERROR and got.flags & dns.flags.AA
    assert [r.address for r in got.answer[0]] == ["192.0.2.7"]
    q = dns.message.make_query("child.example.", "SOA")
    got = dns.message.from_wire(second.snapshot.responder.respond(q.to_wire()) or b"")
    assert got.answer and got.answer[0].rdtype == dns.rdatatype.SOA
    assert str(got.answer[0].name) == CHILD
    # Glue the parent holds below the cut is not the child's data: the child
    # answers that it does not exist.
    q = dns.message.make_query("ns.child.example.", "A")
    got = dns.message.from_wire(second.snapshot.responder.respond(q.to_wire()) or b"")
    assert got.rcode() == dns.rcode.NXDOMAIN and got.flags & dns.flags.AA
    assert str(got.authority[0].name) == CHILD


def test_the_collector_is_paused_while_building_and_given_back() -> None:
    import gc
    import threading

    from geodns.collector import collector_paused

    assert gc.isenabled()
    inside = threading.Event()
    leave = threading.Event()

    def other_build() -> None:
        with collector_paused():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=other_build)
    t.start()
    assert inside.wait(5)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "another build is still under way"
    leave.set()
    t.join(5)
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled(), "left off as it was"
    finally:
        gc.enable()


def test_zones_checked_before_serving_are_not_loaded_again(tmp_path: Path) -> None:
    """geodns serve checks every zone before it starts; the first snapshot
    takes those zones as they are (the same text and settings), and loads a
    file that changed in between."""
    from geodns.problems import Problems
    from geodns.zones import loader

    path = tmp_path / "a.test.yaml"
    path.write_text(zone("a.test.", 1))
    other = tmp_path / "b.test.yaml"
    other.write_text(zone("b.test.", 1))
    checked = loader.load_zone_file(path, Problems(), keep=True)
    loader.load_zone_file(other, Problems(), keep=True)
    other.write_text(zone("b.test.", 2))  # changed after the check
    try:
        again = loader.load_zone_text(path.read_text(), str(path), "a.test.", Problems())
        assert again is checked
        changed = loader.load_zone_text(other.read_text(), str(other), "b.test.", Problems())
        assert changed is not None and changed.serial == 2
        assert loader.load_zone_text(path.read_text(), str(path), "a.test.", Problems()) \
            is not checked, "handed over once"
    finally:
        loader.forget_kept()


def test_a_zone_keeps_its_documents_bytes_as_its_source() -> None:
    """The text a zone keeps for its next version is the document's own
    bytes object (which the source of documents holds anyway), not a copy,
    when it is ASCII; else its text."""
    docs = documents({"a.test.": zone("a.test.", 1),
                      "b.test.": zone("b.test.", 1, "  t: {TXT: é}\n")}, "r1")
    b = build(docs, Config(path=None, zones_dir=Path("zones")), None, (None, GeoipStatus()),
              HealthView(), new_responder, 0.0)
    ascii_zone, other = (b.snapshot.zones[f"{o}yaml"].zone for o in ("a.test.", "b.test."))
    assert ascii_zone is not None and ascii_zone.source is not None
    assert ascii_zone.source.data is docs.zones["a.test.yaml"].text
    assert ascii_zone.source.text == zone("a.test.", 1)
    assert other is not None and other.source is not None
    assert other.source.data == zone("b.test.", 1, "  t: {TXT: é}\n")  # (a str)
    second = built({"a.test.": zone("a.test.", 2)}, "r2", b)  # (an edit reads the bytes again)
    edited = second.snapshot.zones["a.test.yaml"].zone
    assert edited is not None and edited.serial == 2 and edited.source is not None
    assert edited.source.base is not None and edited.source.base() is ascii_zone


# -- one zone edited: its unchanged names reused --------------------------------------
BASE = {
    "www": "{A: 192.0.2.1, AAAA: \"2001:db8::1\"}",
    "mail": "{A: 192.0.2.25}",
    "mx": "{MX: [{preference: 10, exchange: mail}], TXT: \"v=spf1 mx -all\"}",
    "alias": "{CNAME: www}",
    "chain": "{CNAME: alias}",
    "dangling": "{CNAME: later}",
    "srv": "{SRV: [{priority: 1, weight: 1, port: 443, target: www}]}",
    "w": "{TXT: \"w\"}",
    "\"*.w\"": "{A: 192.0.2.80}",
    "a.b.c": "{A: 192.0.2.3}",
    "sub": "{NS: [ns.sub]}",
    "ns.sub": "{A: 192.0.2.99}",
    "h1": "{A: 192.0.2.101}",
    "h2": "{A: 192.0.2.102}",
}
EDITS = {
    "an unrelated name": {"h1": "{A: 192.0.2.111}"},
    "an MX target's address": {"mail": "{A: 192.0.2.26}"},
    "an MX target removed": {"mail": None},
    "a CNAME target's address": {"www": "{A: 192.0.2.9, AAAA: \"2001:db8::1\"}"},
    "a chain's middle": {"alias": "{CNAME: h2}"},
    "a dangling CNAME's target added": {"later": "{A: 192.0.2.77}"},
    "the glue": {"ns.sub": "{A: 192.0.2.98}"},
    "a delegation added": {"sub2": "{NS: [ns1]}"},
    "a wildcard's records": {"\"*.w\"": "{A: 192.0.2.81}"},
    "a wildcard added": {"\"*.h2\"": "{TXT: wild}"},
    "an empty non-terminal filled": {"b.c": "{A: 192.0.2.4}"},
    "an owner's case": {"mail": None, "MAIL": "{A: 192.0.2.25}"},
    "a TTL": {"h2": "{A: {ttl: 60, value: 192.0.2.102}}"},
    "a line added above everything": {"aaa": "{A: 192.0.2.200}"},
}
ORIGIN = "edit.test."
ASKED = ["", "www.", "mail.", "MAIL.", "mx.", "alias.", "chain.", "dangling.", "later.", "srv.",
         "w.", "x.w.", "*.w.", "a.b.c.", "b.c.", "c.", "sub.", "ns.sub.", "x.sub.", "h1.",
         "h2.", "x.h2.", "aaa.", "sub2.", "nothere."]
TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "SRV", "DS", "ANY", "HINFO"]


def zone_text(serial: int, owners: dict[str, str | None], first: str | None = None) -> str:
    lines = [f"origin: {ORIGIN}", f"soa: {{mname: ns1, rname: h, serial: {serial}}}",
             "records:", '  "@": {NS: [ns1], MX: [{preference: 5, exchange: mail}]}',
             "  ns1: {A: 192.0.2.53}"]
    order = ([first] if first else []) + [o for o in owners if o != first]
    lines += [f"  {o}: {owners[o]}" for o in order if owners[o] is not None]
    return "\n".join(lines) + "\n"


def every_answer(b: Built) -> dict[tuple[str, str, bool], bytes]:
    out = {}
    for name in ASKED:
        for rtype in TYPES:
            for edns in (False, True):
                q = dns.message.make_query(name + ORIGIN, rtype, use_edns=edns)
                q.id = 7
                wire = b.snapshot.responder.respond(q.to_wire())
                assert wire is not None
                out[(name, rtype, edns)] = wire
    return out


@pytest.mark.parametrize("what", sorted(EDITS))
def test_an_edit_in_a_zone_answers_as_the_zone_loaded_afresh(what: str) -> None:
    """Every name and type (first use included) answers byte for byte as a
    fresh load of the edited zone, whatever the reused names depend on."""
    first = built({ORIGIN: zone_text(1, BASE)}, "r1")
    every_answer(first)  # first-use memos made in the old version are not carried over
    owners = {**BASE, **EDITS[what]}
    text = zone_text(2, owners, first="aaa" if "aaa" in EDITS[what] else None)
    edited = built({ORIGIN: text}, "r2", first)
    fresh = built({ORIGIN: text}, "r2")
    assert not edited.snapshot.errors()
    assert every_answer(edited) == every_answer(fresh)


def test_an_edit_reuses_the_answers_of_the_names_it_did_not_touch() -> None:
    origin = names.from_text(ORIGIN).lower()
    first = built({ORIGIN: zone_text(1, BASE)}, "r1")
    second = built({ORIGIN: zone_text(2, {**BASE, "mail": "{A: 192.0.2.26}"})}, "r2", first)
    old, new = first.snapshot.tables.parts[origin], second.snapshot.tables.parts[origin]

    def by_type(part: ZoneTables, owner: str) -> dict[int, Answer | Steered]:
        name = names.from_text(f"{owner}.{ORIGIN}").lower()
        return part.nodes()[name].by_type(name, part.exact())

    for owner in ("www", "srv", "h1", "h2", "a.b.c"):
        assert all(new_ans is by_type(old, owner)[t]
                   for t, new_ans in by_type(new, owner).items()), owner
    # Changed, or pointing at what changed; or never reused (apex, CNAME,
    # a wildcard's parent, at or below a delegation).
    for owner in ("mail", "mx", "alias", "w", "sub", "ns.sub"):
        assert all(new_ans is not by_type(old, owner)[t]
                   for t, new_ans in by_type(new, owner).items()), owner
    q = dns.message.make_query("mx." + ORIGIN, "MX")
    got = dns.message.from_wire(second.snapshot.responder.respond(q.to_wire()) or b"")
    assert [r.address for r in got.additional[0]] == ["192.0.2.26"]
