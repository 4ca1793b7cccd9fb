"""YAML with positions, built from the parser's events: every value as
written with its line and column, anchors and aliases, and every YAML-level
mistake as a problem with its place, never a traceback."""

from __future__ import annotations

import random

import pytest
import yaml

from geodns.problems import Problems
from geodns.yamlsrc import YMap, YNode, YScalar, YSeq, flow_entry, load_text


def plain(node: YNode | None) -> object:
    """The tree as Python values, each scalar with its place."""
    if isinstance(node, YScalar):
        return (node.text, node.quoted, node.where.line, node.where.column)
    if isinstance(node, YSeq):
        return [plain(n) for n in node.items]
    assert isinstance(node, YMap)
    return {k.text: plain(v) for k, v in node.items}


def test_values_as_written_with_their_places() -> None:
    problems = Problems()
    tree = load_text('a: on\nb: "1:20"\nc:\n  - 2001:1:2:3:4:5:6:7\n  - {x: 1}\nd: ~\n',
                     "f.yaml", problems)
    assert not problems
    assert plain(tree) == {"a": ("on", False, 1, 4), "b": ("1:20", True, 2, 4),
                           "c": [("2001:1:2:3:4:5:6:7", False, 4, 5), {"x": ("1", False, 5, 9)}],
                           "d": ("~", False, 6, 4)}
    assert isinstance(tree, YMap) and tree.where.line == 1


def test_the_same_tree_as_composing() -> None:
    """The events give what PyYAML's composer gives, place for place."""
    text = ("origin: x.\nrecords:\n  '@': {NS: [ns1, ns2]}\n  www:\n    A: [192.0.2.1]\n"
            "    TXT: |\n      two\n      lines\n  m: &anchor {MX: [{preference: 1}]}\n"
            "  n: *anchor\n")
    composed = yaml.compose(text, Loader=yaml.SafeLoader)
    assert composed is not None

    def from_node(node: yaml.Node) -> object:
        if isinstance(node, yaml.ScalarNode):
            return (node.value, node.style in ("'", '"'), node.start_mark.line + 1,
                    node.start_mark.column + 1)
        if isinstance(node, yaml.SequenceNode):
            return [from_node(n) for n in node.value]
        return {k.value: from_node(v) for k, v in node.value}

    assert plain(load_text(text, "f", Problems())) == from_node(composed)


def test_an_alias_is_the_anchored_value() -> None:
    tree = load_text("a: &x [1, 2]\nb: *x\n", "f", Problems())
    assert isinstance(tree, YMap)
    assert tree.get("b") is tree.get("a")


def test_an_explicit_tag_is_kept() -> None:
    tree = load_text("a: !!binary AAEC\n", "f", Problems())
    assert isinstance(tree, YMap)
    node = tree.get("a")
    assert isinstance(node, YScalar) and node.tag == "tag:yaml.org,2002:binary"


@pytest.mark.parametrize(("text", "where", "message"), [
    ("a: *nothere\n", "f:1:4", "found undefined alias 'nothere'"),
    ("a: &x 1\nb: &x 2\n", "f:2:4", "found duplicate anchor 'x'"),
    ("a: 1\n---\nb: 2\n", "f:2:1", "but found another document"),
    ("a: [1, 2\n", "f:2:1", "YAML syntax: did not find expected ',' or ']'"),
    ("[" * 5000 + "]" * 5000, "f:1:1001", "YAML syntax: exceeded maximum nesting depth"),
    ("a: 1\na: 2\n", "f:2:1", "duplicate key 'a' (first at line 1)"),
    ("<<: {a: 1}\n", "f:1:1", "YAML merge keys ('<<') are not supported"),
    ("? [a]\n: 1\n", "f:1:3", "mapping keys must be plain text"),
    ("", "f:1:1", "file is empty"),
])
def test_mistakes_are_problems_with_their_place(text: str, where: str, message: str) -> None:
    problems = Problems()
    load_text(text, "f", problems)
    assert any(str(p).startswith(where) and message in str(p) for p in problems), \
        [str(p) for p in problems]


def test_deep_nesting_is_no_recursion_error() -> None:
    problems = Problems()
    tree = load_text("[" * 900 + "]" * 900, "f", problems)
    assert not problems and isinstance(tree, YSeq)


# -- one entry's line read without the parser ------------------------------------------
def exact(node: YNode | None) -> object:
    """The tree with every node's kind, text, style, tag and place."""
    if isinstance(node, YScalar):
        return ("scalar", node.text, node.tag, node.quoted, tuple(node.where))
    if isinstance(node, YSeq):
        return ("seq", tuple(node.where), [exact(n) for n in node.items])
    assert isinstance(node, YMap)
    return ("map", tuple(node.where), [(exact(k), exact(v)) for k, v in node.items])


def parsed_entry(line: str, number: int) -> object:
    """What the parser makes of ``line`` as an entry at line ``number``."""
    problems = Problems()
    root = load_text("records:\n" + "\n" * (number - 2) + line + "\n", "z.yaml", problems)
    if problems or not isinstance(root, YMap) or len(root.items) != 1:
        return None
    records = root.items[0][1]
    if not isinstance(records, YMap) or len(records.items) != 1:
        return None
    key, value = records.items[0]
    return exact(key), exact(value)


def read_entry(line: str, number: int) -> object:
    got = flow_entry(line, number, "z.yaml")
    return None if got is None else (exact(got[0]), exact(got[1]))


READ = [
    "  www: {A: 192.0.2.1}",
    '  "@": {NS: [ns1, ns2], MX: [{preference: 10, exchange: mail}]}',
    '  h2: {TXT: "v=spf1 include:_spf2.example.net ~all"}',
    "  h1: {AAAA: '2001:db8::1'}",
    "    deep: {A: [192.0.2.1, 192.0.2.2 ], TXT: [[one, two], three]}",
    '  "*.w": { A:   192.0.2.5 ,TXT: ""}   ',
    "  x-y_z.q/1: {MX: 10 mail.example.net., TTL: [], CAA: {flags: 0, tag: issue, value: ca}}",
    "  on: {A: Null, B: null, C: yes, D: .inf, E: 1_000, F: a=b+c@d}",
    "  t: {TYPE65400: {ttl: 60, values: ['\\# 0']}}",
]
LEFT = [  # lines the parser must read (or that are not an entry of this shape)
    "  www: {A: 192.0.2.1}  # a comment",
    "  www: {A: 192.0.2.1,}",
    "  www: {}",
    "  www: &a {A: 192.0.2.1}",
    "  www: {A: *a}",
    "  www: {A: !!binary aGk=}",
    "  www: {A: 2001:db8::1}",
    "  www: {A: \"a\\tb\"}",
    "  www: {A: 'it''s'}",
    "  www: {A: [a, b,]}",
    "  www: {A: a  b}",
    "  www: {A: -1}",
    "  www: {A: x, A: y}",
    "  www: {A: {B: {C: {D: x}}}}",
    "  www: {A: x} y",
    "  *.w: {A: x}",
    "  'q': {A: x}",
    "  www: {A: x",
    "  www:",
    "  www: [A]",
    "  www: {A: [x]: y}",
    "  www: {A: \"x\": y}",
    "  www: {A: ?x}",
    "  www: {\"A\": x}",
    "  www: {A: x#y}",
    "  www: {A: é}",
]


@pytest.mark.parametrize("line", READ)
def test_an_entry_line_reads_as_the_parser_reads_it(line: str) -> None:
    got = read_entry(line, 7)
    assert got is not None
    assert got == parsed_entry(line, 7)


@pytest.mark.parametrize("line", LEFT)
def test_anything_unusual_is_left_to_the_parser(line: str) -> None:
    assert read_entry(line, 7) is None


def _random_line(rnd: random.Random) -> str:
    """An entry line, each part usually of the shape the reader takes and
    sometimes one it must leave to the parser."""
    def pick(usual: list[str], odd: list[str]) -> str:
        return rnd.choice(odd if rnd.random() < 0.04 else usual)

    def scalar() -> str:
        atom = pick(SAFE, ODD)
        return rnd.choice([atom, atom, f'"{atom}"', f"'{atom}'"])

    def value(depth: int) -> str:
        kind = rnd.random()
        if depth >= 3 or kind < 0.6:
            return scalar()
        if kind < 0.85:
            items = [value(depth + 1) for _ in range(rnd.randint(0, 3))]
            sp = pick(["", " "], ["  "])
            return "[" + sp + pick([", ", ","], [" , "]).join(items) + pick([""], [","]) + sp + "]"
        return mapping(depth + 1)

    def mapping(depth: int) -> str:
        pairs = [pick(["A", "MX", "TXT", "ttl", "values", "preference", "exchange", "TYPE65400",
                       "a-b", "A_1"], ["1A", '"A"', "A:", "? A", "A ", "é"])
                 + pick([": ", ":  "], [":", " : "]) + value(depth)
                 for _ in range(rnd.randint(1, 3))]
        sp = pick(["", " "], ["  "])
        return "{" + sp + pick([", ", ","], [" ,  "]).join(pairs) + pick([""], [","]) + sp + "}"

    return (rnd.choice(["  ", "    ", " "])
            + pick(["www", "h1", '"@"', '"*"', '"*.w"', "on", "x.y-z_1/2", "1"],
                   ["'q'", "a b", "-a", '"a\\"b"', "é", "*.w", "a:b"])
            + pick([": ", ":  "], [":", " : "]) + mapping(1)
            + pick(["", " "], ["  ", " # c", "#c", " x"]))


SAFE = ["a", "A", "10", "0", "192.0.2.1", "mail.example.net.", "x-y", "_s", "a=b", "a@b",
        "a/b", "a+b", "null", "yes", ".", ".inf", "1_0", "a b", "10 mail", "v=spf1 -all", ""]
ODD = ["~", "a  b", "a:b", "a: b", "-a", "?a", "a #b", "a#b", "*a", "&a", "!a", "%a", "@a",
       "`a", "|", ">", "'", '"', "[", "]", "{", "}", ",", "é", "\\", "\\x41", 'a"b', "a'b",
       "a ", " a", "a,b", "a]", "a}"]


def test_random_lines_read_as_the_parser_reads_them() -> None:
    rnd = random.Random(12)
    taken = 0
    for n in range(20_000):
        line = _random_line(rnd)
        got = read_entry(line, 2 + n % 40)
        if got is not None:
            taken += 1
            assert got == parsed_entry(line, 2 + n % 40), line
    assert taken > 4_000  # (the test means something)
