"""A change costs what it changed: a reload compiles again only the zones
whose documents changed, reuses every other zone as it was compiled, and
those answer byte for byte as before, nested zones included."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from geodns import names
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
