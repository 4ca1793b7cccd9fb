"""Loading a zone's next version takes the records of every entry whose
text did not change from the version before, and the result is the zone
(records, lines and problems) that loading the new text afresh gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from geodns import names
from geodns.problems import Problems
from geodns.zones.checks import where_of
from geodns.zones.loader import load_zone_text
from geodns.zones.model import RRset, Zone

FILE = "zones/reuse.test.yaml"
HEAD = "origin: reuse.test.\nttl: 300\nsoa: {mname: ns1, rname: h, serial: SERIAL}\nrecords:\n"
ENTRIES = [
    '  "@": {NS: [ns1, ns2], MX: [{preference: 10, exchange: mail}]}',
    "  ns1: {A: 192.0.2.53}",
    "  ns2: {A: 192.0.2.54}",
    "  www:",
    "    A: [192.0.2.1, 192.0.2.2]",
    "    AAAA: {ttl: 60, value: \"2001:db8::1\"}",
    "  # a comment between entries",
    "  mail: {A: 192.0.2.25, TXT: \"v=spf1 -all\"}",
    "  alias: {CNAME: www}",
    "  note:",
    "    TXT: |",
    "      a block scalar",
    "      on two lines",
    "  last: {A: 192.0.2.99}",
]


def text(serial: int = 1, entries: list[str] | None = None, head: str = HEAD,
         tail: str = "") -> str:
    return head.replace("SERIAL", str(serial)) + "\n".join(
        ENTRIES if entries is None else entries) + "\n" + tail


def load(t: str, previous: Zone | None = None) -> tuple[Zone | None, list[str]]:
    p = Problems()
    zone = load_zone_text(t, FILE, "reuse.test.", p, previous=previous)
    return zone, [str(x) for x in p]


def replaced(i: int, *lines: str) -> list[str]:
    return ENTRIES[:i] + list(lines) + ENTRIES[i + 1:]


def index(line: str) -> int:
    return ENTRIES.index(line)


CASES = {
    "one record changed": text(2, replaced(index("  ns2: {A: 192.0.2.54}"),
                                           "  ns2: {A: 192.0.2.55}")),
    "an entry added above the rest": text(2, ["  aaa: {A: 192.0.2.7}", *ENTRIES]),
    "an entry removed": text(2, [e for e in ENTRIES if "mail" not in e]),
    "entries reordered": text(2, [ENTRIES[0], ENTRIES[8], *ENTRIES[1:8], *ENTRIES[9:]]),
    "the head longer": text(2, head=HEAD.replace("ttl: 300\n", "# the TTL\nttl: 300\n")),
    "the default TTL": text(2, head=HEAD.replace("ttl: 300", "ttl: 600")),
    "the origin": text(2, head=HEAD.replace("reuse.test.", "other.test.")),
    "a comment after the records": text(2, tail="# end\n"),
    "an entry written twice": text(2, [*ENTRIES, "  ns1: {A: 192.0.2.53}"]),
    "a problem in a new entry": text(2, [*ENTRIES, "  bad: {A: 192.0.2.300}"]),
    "a problem in a changed entry": text(2, replaced(index("  ns1: {A: 192.0.2.53}"),
                                                     "  ns1: {A: 192.0.2.533}")),
    "an anchor and its alias": text(2, [*ENTRIES[:-1], "  last: &x {A: 192.0.2.99}",
                                        "  again: *x"]),
    "a flow mapping of records": text(2, ["  {", *[e + "," for e in ENTRIES[:3]],
                                          "  mail2: {A: 192.0.2.26}}"]),
    "indented deeper": text(2, ["  " + e for e in ENTRIES]),
    "CRLF line ends": text(2).replace("\n", "\r\n"),
    "a steered record": text(2, [*ENTRIES, "  geo:", "    A:", "      steer:",
                                 "        pops: {fra: 192.0.2.1}"]),
    "a block scalar's text": text(2, replaced(index("      on two lines"),
                                              "      on three", "      lines")),
    "the apex entry": text(2, replaced(0, '  "@": {NS: [ns1]}')),
    "an entry's case": text(2, replaced(index("  last: {A: 192.0.2.99}"),
                                        "  LAST: {A: 192.0.2.99}")),
    # What an entry parsed on its own must not be fooled by.
    "a quoted scalar continued at the entries' indent": text(2, [*ENTRIES, '  q: {TXT: "one',
                                                                  '  two"}']),
    "a flow mapping closed at the entries' indent": text(2, [*ENTRIES, "  m: {A: 192.0.2.1,",
                                                            "  }"]),
    "a sequence at the entries' indent": text(2, [*ENTRIES, "  s:", "    A:",
                                                  "    - 192.0.2.1"]),
    "a plain scalar on two lines": text(2, [*ENTRIES, "  p: {TXT: one", "     two}"]),
    "a comment at the first column": text(2, replaced(index("  ns1: {A: 192.0.2.53}"),
                                                      "  ns1: {A: 192.0.2.52}",
                                                      "# moved")),
    "a document end after the records": text(2, tail="...\n"),
    "a second document": text(2, tail="---\norigin: x.\n"),
    "a key after the records": text(2, tail="extra: 1\n"),
    "a comment on the records line": text(2, head=HEAD.replace("records:",
                                                                "records:  # all of them")),
    "no records": text(2, [], head=HEAD.replace("records:\n", "")),
    "the last entry without a line break": text(2, [*ENTRIES[:-1], "  last: {A: 192.0.2.98}"]
                                                ).rstrip("\n"),
    "a wildcard": text(2, [*ENTRIES, '  "*.w": {A: 192.0.2.5}']),
    "many entries changed": text(2, [*ENTRIES] + [f"  n{i}: {{A: 192.0.2.{i}}}"
                                                  for i in range(100)]),
    "a tab": text(2, [*ENTRIES, "  t: {TXT:\t\"tab\"}"]),
}


@pytest.mark.parametrize("what", sorted(CASES))
def test_the_next_version_is_the_zone_its_text_loads_afresh(what: str) -> None:
    first, problems = load(text())
    assert first is not None and not problems
    again, again_problems = load(CASES[what], previous=first)
    fresh, fresh_problems = load(CASES[what])
    assert again_problems == fresh_problems
    assert again == fresh  # records and TTLs
    if fresh is not None:  # and the place of every record set
        assert [(o, t, where_of(again, o, t)) for o, ts in again.nodes.items() for t in ts] == \
            [(o, t, where_of(fresh, o, t)) for o, ts in fresh.nodes.items() for t in ts]


def rrsets(zone: Zone) -> dict[tuple[bytes, int], RRset]:
    return {(o, t): r for o, ts in zone.nodes.items() for t, r in ts.items()}


def taken(new: Zone, old: Zone) -> set[tuple[bytes, int]]:
    """The record sets ``new`` holds as ``old`` held them: the same objects
    (a name's one set kept packed: the same mapping)."""
    out = set()
    for o, ts in new.nodes.items():
        was = old.nodes.get(o)
        if was is None:
            continue
        if ts is was and not isinstance(ts, dict):
            out |= {(o, t) for t in ts}
        elif isinstance(ts, dict) and isinstance(was, dict):
            out |= {(o, t) for t, r in ts.items() if was.get(t) is r}
    return out


def test_the_entries_not_changed_are_taken_as_they_were() -> None:
    first, _ = load(text())
    assert first is not None
    second, problems = load(CASES["one record changed"], previous=first)
    assert second is not None and not problems
    ns2 = names.from_text("ns2.reuse.test.")
    assert taken(second, first) == {k for k in rrsets(second) if k[0] != ns2 and k[1] != 6}
    # (all but ns2 and the SOA)
    # Lines moved: the same records, at their new lines.
    third, _ = load(CASES["an entry added above the rest"], previous=second)
    assert third is not None
    www = names.from_text("www.reuse.test.")
    moved = rrsets(third)[(www, 1)]
    assert moved.rdatas is rrsets(second)[(www, 1)].rdatas
    place = where_of(third, www, 1)
    assert place is not None and place.line == 10  # was 9


def test_the_source_kept_is_the_text_and_its_entries(tmp_path: Path) -> None:
    zone, _ = load(text())
    assert zone is not None and zone.source is not None
    assert zone.source.text == text()
    assert len(zone.source.owners) == len(zone.source.starts) - 1 == 8
    assert list(zone.source.starts)[:4] == [5, 6, 7, 8]
    flow, _ = load(CASES["a flow mapping of records"])
    assert flow is not None and flow.source is None


def _texts_parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the loader hands the YAML parser from now on."""
    from geodns.zones import loader

    parsed: list[str] = []
    real = loader.load_text

    def spy(t: str, *args: object, **kwargs: object) -> object:
        parsed.append(t)
        return real(t, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "load_text", spy)
    return parsed


def test_an_edit_parses_only_what_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-record edit in a large zone parses the head, the tail and the
    entry edited, never the whole text (then it costs what it changed)."""
    from geodns.zones import loader

    many = [*ENTRIES] + [f"  h{i}: {{A: 10.0.{i >> 8}.{i & 255}}}" for i in range(2000)]
    first, _ = load(text(1, many))
    parsed = _texts_parsed(monkeypatch)
    at = many.index("  h491: {A: 10.0.1.235}")
    # (A comment after it: the line is not one that flow_entry reads.)
    edited = text(2, [*many[:at], "  h491: {A: 192.0.2.1}  # edited", *many[at + 1:]])
    second, problems = load(edited, previous=first)
    assert second is not None and not problems
    assert len(parsed) == 2  # the head and tail; the one entry
    assert [line for line in parsed[1].split("\n") if line] == \
        ["  h491: {A: 192.0.2.1}  # edited"]
    # An entry of the usual shape is read without the parser.
    parsed.clear()
    usual = text(3, [*many[:at], "  h491: {A: 192.0.2.2}", *many[at + 1:]])
    third, problems = load(usual, previous=second)
    assert third is not None and not problems
    assert len(parsed) == 1  # the head and tail
    monkeypatch.undo()  # the parser itself again
    assert second == loader._parsed(edited, FILE, "reuse.test.", Problems())
    assert third == loader._parsed(usual, FILE, "reuse.test.", Problems())


def whole(t: str) -> tuple[Zone | None, list[str]]:
    """The zone from its whole text parsed by the YAML parser."""
    from geodns.zones import loader

    p = Problems()
    zone = loader._parsed(t, FILE, "reuse.test.", p)
    return zone, [str(x) for x in p]


@pytest.mark.parametrize("what", sorted(CASES))
def test_a_first_load_is_the_zone_the_parser_gives(what: str) -> None:
    """A first load reads entries of the usual shape without the parser
    (``yamlsrc.flow_entry``): the same zone, lines, problems and source."""
    for t in (text(), CASES[what]):
        zone, problems = load(t)
        fresh, fresh_problems = whole(t)
        assert problems == fresh_problems
        assert zone == fresh
        if fresh is not None:
            assert zone is not None
            assert [(o, t, where_of(zone, o, t)) for o, ts in zone.nodes.items() for t in ts] \
                == [(o, t, where_of(fresh, o, t)) for o, ts in fresh.nodes.items() for t in ts]
            assert (zone.source is None) == (fresh.source is None)
            if zone.source is not None and fresh.source is not None:
                assert zone.source.text == fresh.source.text
                assert zone.source.owners == fresh.source.owners
                # (The last entry's end: the line after it, or the parser's
                # next key or the end of the text, past a "..." line.)
                assert zone.source.starts[:-1] == fresh.source.starts[:-1]
                assert zone.source.starts[-1] <= fresh.source.starts[-1]
                assert zone.source.base is fresh.source.base is None
                assert zone.source.fresh == fresh.source.fresh


def test_a_first_load_reads_the_usual_lines_without_the_parser(
        monkeypatch: pytest.MonkeyPatch) -> None:
    many = [*ENTRIES] + [f"  h{i}: {{A: 10.0.{i >> 8}.{i & 255}}}" for i in range(2000)]
    parsed = _texts_parsed(monkeypatch)
    zone, problems = load(text(1, many))
    assert zone is not None and not problems
    # The head and tail, and the entries on several lines (www, note).
    assert len(parsed) == 3
    monkeypatch.undo()  # the parser itself again
    assert zone == whole(text(1, many))[0]


def test_the_next_version_says_what_it_read_anew() -> None:
    """What the compiler diffs: the owners read anew, from which version the
    others were taken (while that version lives)."""
    first, _ = load(text())
    assert first is not None and first.source is not None
    assert first.source.base is None
    second, _ = load(CASES["one record changed"], previous=first)
    assert second is not None and second.source is not None
    assert second.source.base is not None and second.source.base() is first
    assert second.source.fresh == {names.from_text("ns2.reuse.test.")}
    third, _ = load(CASES["an entry added above the rest"], previous=second)
    assert third is not None and third.source is not None
    # ns2 as it was first: read anew too (the version before had another).
    assert third.source.fresh == {names.from_text("aaa.reuse.test."),
                                  names.from_text("ns2.reuse.test.")}
