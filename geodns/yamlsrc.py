"""YAML with positions: every value remembers its file, line and column.

PyYAML's parser (libyaml's, when PyYAML has it) gives events with marks; we
build from them small ``Y*`` objects that keep the raw scalar text (so ``on``, ``1:20`` or
``2001:1:2:3:4:5:6:7`` stay the strings the operator wrote until a
validator asks for an int or a bool) and a :class:`Where` for error
messages.  Validation code collects every problem in a :class:`Problems`
list instead of stopping at the first one, so ``geodns check`` can print
them all as ``file:line:column: message``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from geodns.problems import Problem, Problems, Where

__all__ = ["Problem", "Problems", "Where"]  # re-exported: they began here


class YNode:
    where: Where


class YScalar(YNode):
    __slots__ = ("quoted", "tag", "text", "where")

    def __init__(self, text: str, tag: str, quoted: bool, where: Where) -> None:
        self.text = text
        self.tag = tag
        self.quoted = quoted
        self.where = where

    @property
    def is_null(self) -> bool:
        return not self.quoted and self.text in ("", "~", "null", "Null", "NULL")

    def __repr__(self) -> str:
        return f"YScalar({self.text!r})"


class YSeq(YNode):
    __slots__ = ("items", "where")

    def __init__(self, items: list[YNode], where: Where) -> None:
        self.items = items
        self.where = where


class YMap(YNode):
    __slots__ = ("items", "where")

    def __init__(self, items: list[tuple[YScalar, YNode]], where: Where) -> None:
        self.items = items
        self.where = where

    def get(self, key: str) -> YNode | None:
        for k, v in self.items:
            if k.text == key:
                return v
        return None

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.items]


# libyaml's parser when PyYAML was built with it (Debian's and the wheels
# are): about ten times faster, with the same marks (line and column).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# A Where made without the named tuple's own __new__ (a call in Python): one
# per value of a zone.
_new = tuple.__new__


def _where(file: str, mark: yaml.Mark) -> Where:
    return _new(Where, (file, mark.line + 1, mark.column + 1))


def _mapping(pairs: list[YNode], where: Where, problems: Problems) -> YMap:
    items: list[tuple[YScalar, YNode]] = []
    seen: dict[str, Where] = {}
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if not isinstance(key, YScalar):
            problems.add(key.where, "mapping keys must be plain text")
            continue
        if key.text == "<<":
            problems.add(key.where, "YAML merge keys ('<<') are not supported")
            continue
        if key.text in seen:
            problems.add(
                key.where, f"duplicate key {key.text!r} (first at line {seen[key.text].line})"
            )
            continue
        seen[key.text] = key.where
        items.append((key, value))
    return YMap(items, where)


def _tree(text: str, file: str, problems: Problems,
          anchored: list[str] | None = None) -> YNode | None:
    """Our tree straight from the parser's events: no composer and no tag
    resolution (we keep the text as written), so about twice as fast as
    composing.  Raises :class:`yaml.MarkedYAMLError` as composing does.
    ``anchored``, when given, gets the name of every anchor (a node an
    alias may use in another place)."""
    root: YNode | None = None
    first_doc: Any = None
    anchors: dict[str, YNode] = {}
    # Open collections: (is a mapping, their items so far, where, anchor).
    stack: list[tuple[bool, list[YNode], Where, str | None]] = []
    events: Iterator[Any] = yaml.parse(text, Loader=_Loader)  # (libyaml's marks are untyped)
    for ev in events:
        kind = type(ev)
        node: YNode
        if kind is yaml.ScalarEvent:
            node = YScalar(ev.value, ev.tag or "", ev.style in ("'", '"'),
                           _new(Where, (file, ev.start_mark.line + 1, ev.start_mark.column + 1)))
            anchor = ev.anchor
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            stack.append((kind is yaml.MappingStartEvent, [], _where(file, ev.start_mark),
                          ev.anchor))
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            is_map, items, where, anchor = stack.pop()
            node = _mapping(items, where, problems) if is_map else YSeq(items, where)
        elif kind is yaml.AliasEvent:
            found = anchors.get(ev.anchor)
            if found is None:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias "
                                                  f"{ev.anchor!r}", ev.start_mark)
            node, anchor = found, None
        elif kind is yaml.DocumentStartEvent:
            if first_doc is not None:
                raise yaml.composer.ComposerError("expected a single document in the stream",
                                                  first_doc, "but found another document",
                                                  ev.start_mark)
            first_doc = ev.start_mark
            continue
        else:
            continue
        if anchor is not None:
            if anchor in anchors:
                raise yaml.composer.ComposerError(None, None, f"found duplicate anchor "
                                                  f"{anchor!r}", ev.start_mark)
            anchors[anchor] = node
            if anchored is not None:
                anchored.append(anchor)
        if stack:
            stack[-1][1].append(node)
        else:
            root = node
    return root


def load_text(text: str, file: str, problems: Problems,
              anchored: list[str] | None = None) -> YNode | None:
    """Parse YAML text.  Syntax errors become problems; returns None then.
    ``anchored``: see :func:`_tree`."""
    try:
        node = _tree(text, file, problems, anchored)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _where(file, mark) if mark else Where(file, 1, 1)
        problems.add(where, f"YAML syntax: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        problems.add(Where(file, 1, 1), f"YAML: {exc}")
        return None
    if node is None:
        problems.add(Where(file, 1, 1), "file is empty")
        return None
    return node


# -- one line of a block mapping, read without the parser -----------------------
# What libyaml makes of a line such as ``  www: {A: [192.0.2.1], TXT: "x"}``,
# for the few shapes whose reading is certain: plain scalars of letters,
# digits and ``_ . - / + = @`` (words one space apart, not starting with an
# indicator), quoted scalars of printable ASCII without escapes or quotes
# inside, and flow collections of them (nested at most three deep), with no
# comment, tab, anchor, tag, alias, empty mapping or trailing comma.  For
# anything else :func:`flow_entry` says None and the parser reads the line.
_SAFE = r"A-Za-z0-9_.+=@/\-"
_ENTRY_KEY = re.compile(r"( *)(?:([A-Za-z0-9_][A-Za-z0-9_./\-]*)|\"([ !#-\[\]-~]*)\"): +\{")
_FLOW_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_\-]*): +")
_PLAIN = re.compile(rf"[A-Za-z0-9_.][{_SAFE}]*(?: [{_SAFE}]+)*")
_DQ = re.compile(r"\"([ !#-\[\]-~]*)\"")
_SQ = re.compile(r"'([ -&(-~]*)'")
_SPACES = re.compile(r" *")
_MAX_DEPTH = 3
# The most common line, one type and one scalar (``  www: {A: 192.0.2.1}``),
# in one match.
_ONE = re.compile(r"( *)(?:([A-Za-z0-9_][A-Za-z0-9_./\-]*)|\"([ !#-\[\]-~]*)\"): +(\{) *"
                  rf"([A-Za-z][A-Za-z0-9_\-]*): +(?:([A-Za-z0-9_.][{_SAFE}]*(?: [{_SAFE}]+)*)"
                  r"|\"([ !#-\[\]-~]*)\"|'([ -&(-~]*)') *\} *")


def flow_entry(line: str, number: int, file: str) -> tuple[YScalar, YMap] | None:
    """The key and value of a block mapping's entry written on one line as
    ``KEY: {FLOW MAPPING}``, as the parser gives them (the same text, style
    and positions); None when the line is not certainly read so (the
    parser must read it)."""
    m = _ONE.fullmatch(line)
    if m is not None:
        plain, value = m.group(2), m.group(6)
        if value is not None:
            at, quote = m.start(6) + 1, False
        else:  # quoted: where its opening quote is
            g = 7 if m.group(7) is not None else 8
            value, at, quote = m.group(g), m.start(g), True
        return (YScalar(m.group(3) if plain is None else plain, "", plain is None,
                        _new(Where, (file, number, len(m.group(1)) + 1))),
                YMap([(YScalar(m.group(5), "", False, _new(Where, (file, number, m.start(5) + 1))),
                       YScalar(value, "", quote, _new(Where, (file, number, at))))],
                     _new(Where, (file, number, m.start(4) + 1))))
    m = _ENTRY_KEY.match(line)
    if m is None:
        return None
    plain = m.group(2)
    key = YScalar(m.group(3) if plain is None else plain, "", plain is None,
                  _new(Where, (file, number, len(m.group(1)) + 1)))
    got = _flow_map(line, m.end() - 1, number, file, 1)
    if got is None:
        return None
    value, end = got
    if end != len(line) and line[end:].strip(" "):
        return None
    return key, value


def _flow_map(line: str, at: int, number: int, file: str,
              depth: int) -> tuple[YMap, int] | None:
    """The flow mapping whose ``{`` is at ``at``, and where it ends."""
    items: list[tuple[YScalar, YNode]] = []
    seen: set[str] = set()
    i = _SPACES.match(line, at + 1).end()  # type: ignore[union-attr]
    while True:
        m = _FLOW_KEY.match(line, i)
        if m is None:
            return None
        text = m.group(1)
        if text in seen:
            return None  # (the parser's problem to report)
        seen.add(text)
        key = YScalar(text, "", False, _new(Where, (file, number, i + 1)))
        got = _flow_value(line, m.end(), number, file, depth)
        if got is None:
            return None
        value, i = got
        items.append((key, value))
        after = _after_item(line, i, "}")
        if after is None:
            return None
        closed, i = after
        if closed:
            return YMap(items, _new(Where, (file, number, at + 1))), i


def _flow_value(line: str, at: int, number: int, file: str,
                depth: int) -> tuple[YNode, int] | None:
    c = line[at:at + 1]
    if c == "[":
        return _flow_seq(line, at, number, file, depth + 1) if depth < _MAX_DEPTH else None
    if c == "{":
        return _flow_map(line, at, number, file, depth + 1) if depth < _MAX_DEPTH else None
    where = _new(Where, (file, number, at + 1))
    if c == '"':
        m = _DQ.match(line, at)
    elif c == "'":
        m = _SQ.match(line, at)
    else:
        m = _PLAIN.match(line, at)
        if m is None:
            return None
        return YScalar(m.group(), "", False, where), m.end()
    if m is None:
        return None
    return YScalar(m.group(1), "", True, where), m.end()


def _flow_seq(line: str, at: int, number: int, file: str,
              depth: int) -> tuple[YSeq, int] | None:
    items: list[YNode] = []
    i = _SPACES.match(line, at + 1).end()  # type: ignore[union-attr]
    if line[i:i + 1] == "]":
        return YSeq(items, _new(Where, (file, number, at + 1))), i + 1
    while True:
        got = _flow_value(line, i, number, file, depth)
        if got is None:
            return None
        value, i = got
        items.append(value)
        after = _after_item(line, i, "]")
        if after is None:
            return None
        closed, i = after
        if closed:
            return YSeq(items, _new(Where, (file, number, at + 1))), i


def _after_item(line: str, i: int, close: str) -> tuple[bool, int] | None:
    """What follows an item of a flow collection that ends at ``i``:
    (True, just past ``close``), (False, the next item's start, past the
    comma), or None (anything else: the parser reads the line)."""
    i = _SPACES.match(line, i).end()  # type: ignore[union-attr]
    c = line[i:i + 1]
    if c == close:
        return True, i + 1
    if c != ",":
        return None
    return False, _SPACES.match(line, i + 1).end()  # type: ignore[union-attr]


def load_file(path: Path, problems: Problems, display: str | None = None) -> YNode | None:
    file = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(Where(file, 1, 1), f"cannot read: {exc}")
        return None
    return load_text(text, file, problems)


# --- typed accessors: each returns None after recording a problem -------------


def as_list(node: YNode | None) -> list[YNode]:
    """One value or a list of them, as a list (nothing: an empty list)."""
    if node is None:
        return []
    return node.items if isinstance(node, YSeq) else [node]


def expect_map(node: YNode | None, what: str, problems: Problems) -> YMap | None:
    if isinstance(node, YMap):
        return node
    if node is not None:
        problems.add(node.where, f"{what} must be a mapping")
    return None


def as_str(node: YNode, what: str, problems: Problems) -> str | None:
    if isinstance(node, YScalar) and not node.is_null:
        return node.text
    problems.add(node.where, f"{what} must be a string")
    return None


def as_int(node: YNode, what: str, problems: Problems, lo: int, hi: int) -> int | None:
    if isinstance(node, YScalar) and not node.quoted:
        try:
            value = int(node.text.replace("_", ""), 10)
        except ValueError:
            value = None
        if value is not None:
            if lo <= value <= hi:
                return value
            problems.add(node.where, f"{what} {value} is out of range ({lo}..{hi})")
            return None
    problems.add(node.where, f"{what} must be an integer ({lo}..{hi})")
    return None


def as_float(node: YNode, what: str, problems: Problems, lo: float, hi: float) -> float | None:
    if isinstance(node, YScalar) and not node.quoted:
        try:
            value = float(node.text)
        except ValueError:
            value = None
        if value is not None:
            if lo <= value <= hi:
                return value
            problems.add(node.where, f"{what} {value} is out of range ({lo}..{hi})")
            return None
    problems.add(node.where, f"{what} must be a number ({lo}..{hi})")
    return None


def as_bool(node: YNode, what: str, problems: Problems) -> bool | None:
    if isinstance(node, YScalar) and not node.quoted:
        low = node.text.lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
    problems.add(node.where, f"{what} must be true or false")
    return None


def unknown_keys(m: YMap, allowed: set[str], what: str, problems: Problems) -> None:
    for key, _ in m.items:
        if key.text not in allowed:
            problems.add(
                key.where, f"unknown key {key.text!r} in {what} (expected one of: "
                + ", ".join(sorted(allowed)) + ")"
            )
