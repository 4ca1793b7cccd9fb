"""YAML with positions, built from the parser's events: every value as
written with its line and column, anchors and aliases, and every YAML-level
mistake as a problem with its place, never a traceback."""

from __future__ import annotations

import pytest
import yaml

from geodns.problems import Problems
from geodns.yamlsrc import YMap, YNode, YScalar, YSeq, load_text


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
