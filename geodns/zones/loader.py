"""YAML zone files -> :class:`Zone`, with every problem reported at once.

The format is documented in ``docs/zones.md``.  In short::

    origin: example.com.          # optional, defaults to the file name
    ttl: 3600                     # default TTL
    soa: {mname: ns1, rname: hostmaster, serial: 1, ...}
    records:
      "@":  {NS: [ns1, ns2], MX: ["10 mail"]}
      www:  {A: [192.0.2.1], AAAA: {ttl: 300, values: ["2001:db8::1"]}}

A record type maps to one value, a list of values, or a mapping with
``ttl`` and ``value``/``values``.  The mapping form is where a record's
own options live, which is also where a steered record's options go.

This module builds the zone; one value becomes RDATA in
:mod:`geodns.zones.values`, steered record sets are read by
:mod:`geodns.zones.steer`, and :mod:`geodns.zones.checks` checks the zone
as a whole.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from array import array
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from geodns import names, rdata
from geodns.dnssec import policy as dnssec_policy
from geodns.health.parse import CHECK_DEFAULTS
from geodns.rdata import CNAME, SOA, RData, RDataError
from geodns.yamlsrc import (
    Problems,
    Where,
    YMap,
    YNode,
    YScalar,
    as_int,
    as_list,
    as_str,
    expect_map,
    flow_entry,
    load_text,
    unknown_keys,
)
from geodns.zones.checks import check_zone, where_of
from geodns.zones.model import One, Packed, RRset, Types, Zone, ZoneSource, compact, editable
from geodns.zones.steer import steer_spec
from geodns.zones.values import is_structured, parse_value

try:  # the usual entries of records read in C (optional: else in Python)
    from geodns import _zonetext
except ImportError:  # pragma: no cover - a tree without the C helper built
    _zonetext = None  # type: ignore[assignment]

ZONE_SUFFIXES = (".yaml", ".yml")
_LABEL_OK = re.compile(r"^[A-Za-z0-9_\-/\\*]+$")  # "\\" stands for an escape here
# A name of such labels without a wildcard or an escape: nothing to check.
_PLAIN_OWNER = re.compile(r"[A-Za-z0-9_\-/]+(?:\.[A-Za-z0-9_\-/]+)*\.?")
DEFAULT_TTL = 3600
SOA_DEFAULTS = {"refresh": 7200, "retry": 3600, "expire": 1209600, "minimum": 300}


def origin_from_filename(path: Path) -> str:
    stem = path.name
    for suffix in ZONE_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem.rstrip(".") + "."


def load_zone_file(path: Path, problems: Problems, display: str | None = None,
                   pops: Collection[str] = (),
                   check_defaults: dict[str, float] | None = None,
                   keep: bool = False) -> Zone | None:
    """Load and validate one zone file.  Returns None (with problems added)
    when the zone cannot be served.  With ``keep``, a good zone is kept for
    :func:`load_zone_text` to hand over (see :data:`_kept`)."""
    file = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(Where(file, 1, 1), f"cannot read: {exc}")
        return None
    zone = load_zone_text(text, file, origin_from_filename(path), problems, pops,
                          check_defaults)
    if keep and zone is not None:
        _kept[_kept_key(text, file, origin_from_filename(path), pops, check_defaults)] = zone
    return zone


# Zones ``geodns serve`` has checked before it starts, by what they were
# loaded from: the first snapshot takes them instead of loading every file a
# second time (and so does every worker, forked after the check).
_kept: dict[tuple[object, ...], Zone] = {}


def _kept_key(text: str, file: str, default_origin: str, pops: Collection[str],
              check_defaults: dict[str, float] | None) -> tuple[object, ...]:
    return (hashlib.sha256(text.encode()).digest(), file, default_origin,
            tuple(sorted(pops)), None if check_defaults is None
            else tuple(sorted(check_defaults.items())))


def forget_kept() -> None:
    """The first snapshot is built: what was kept for it is not needed."""
    _kept.clear()


def load_zone_text(text: str, file: str, default_origin: str, problems: Problems,
                   pops: Collection[str] = (),
                   check_defaults: dict[str, float] | None = None,
                   previous: Zone | None = None, raw: bytes | None = None) -> Zone | None:
    """Load and validate a zone from its text.  ``previous``: the zone's
    version loaded before from the same file, whose records the entries
    with the same text as then are taken from (see :class:`_Reuse`).
    ``raw``: the document's bytes, whose decoding ``text`` is: the zone's
    :class:`ZoneSource` keeps them rather than a copy when they are ASCII."""
    zone = None
    if _kept:
        zone = _kept.pop(_kept_key(text, file, default_origin, pops, check_defaults), None)
        # (a zone kept is the same text, checked with the same settings: no problems)
    if zone is None and (previous is None or previous.source is not None):
        zone = _spliced(text, file, default_origin, pops, check_defaults, previous)
    if zone is None:
        zone = _parsed(text, file, default_origin, problems, pops, check_defaults, previous)
    if zone is not None and zone.source is not None and raw is not None and \
            isinstance(zone.source.data, str) and len(raw) == len(zone.source.data):
        zone.source = replace(zone.source, data=raw)  # (UTF-8: as long as its text when ASCII)
    return zone


def _parsed(text: str, file: str, default_origin: str, problems: Problems,
            pops: Collection[str] = (), check_defaults: dict[str, float] | None = None,
            previous: Zone | None = None) -> Zone | None:
    """The zone from its whole text parsed (every problem reported)."""
    before = len(problems)
    anchored: list[str] = []
    root = load_text(text, file, problems, anchored)
    if root is None:
        return None
    zone = _build(root, file, default_origin, problems, pops, check_defaults,
                  None if anchored else _Text(text, previous))
    return zone if len(problems) == before else None


def _by_lines(text: str) -> bool:
    """Whether a text's lines are its LF-separated parts (YAML counts CR,
    NEL, LS and PS as line breaks too) and it has no directive (a %TAG
    changes what a tag in any entry means)."""
    return not ("\r" in text or "\x85" in text or "\u2028" in text or "\u2029" in text
                or text.startswith("%") or "\n%" in text)


class _Text:
    """A zone's text, for keeping its :class:`ZoneSource` and for taking
    records from the version loaded before.  Only a text without anchors
    (an alias elsewhere could change what an entry holds) comes here."""

    def __init__(self, text: str, previous: Zone | None,
                 lines: list[str] | None = None) -> None:
        self.text = text
        self.previous = previous
        self.by_lines = lines is not None or _by_lines(text)
        # Counted, not split, when nothing is taken from before: a first
        # load makes no string per line.
        self.line_count = len(lines) if lines is not None else text.count("\n") + 1
        self._lines = lines

    @property
    def lines(self) -> list[str] | None:
        if self._lines is None and self.by_lines:
            self._lines = self.text.split("\n")
        return self._lines


class _Reuse:
    """Takes, for an entry of ``records``, the record sets of the previous
    version's entry with the same text (lines moved up or down by the
    edit: their ``where`` moves with them).  An entry's text is its lines,
    from its key's to the line before the next entry's key: in a block
    mapping, where every key starts a line at the same column, that text
    alone (with the origin, the default TTL and the file name, which must
    be the same) decides what the entry holds.  Steered record sets are
    read again (their checks look at the configuration)."""

    def __init__(self, old: Zone, source: ZoneSource, lines: list[str],
                 starts: list[int], zone: Zone) -> None:
        self.old = old
        self.source = source
        self.old_lines = source.text.split("\n")
        self.lines = lines
        self.starts = starts
        self.zone = zone
        self.guess = 0  # the old entry that the next one probably is
        self.by_key_line: dict[str, int] | None = None
        # How many lines of the entries are the same from the first entry
        # on, and from the end back (an edit is mostly one place): an entry
        # within them at the same place in both is the same without
        # comparing its lines.
        old_starts = source.starts
        new = lines[starts[0] - 1:starts[-1] - 1]
        was = self.old_lines[old_starts[0] - 1:old_starts[-1] - 1]
        self.head = self.tail = 0
        for a, b in zip(new, was, strict=False):
            if a != b:
                break
            self.head += 1
        if self.head < min(len(new), len(was)):
            for a, b in zip(reversed(new), reversed(was), strict=False):
                if a != b:
                    break
                self.tail += 1

    def _old_span(self, j: int) -> list[str]:
        starts = self.source.starts
        return self.old_lines[starts[j] - 1:starts[j + 1] - 1]

    def _same_place(self, i: int, j: int) -> bool:
        """Whether new entry ``i`` and old entry ``j`` have the same lines
        because they are at the same place in the lines the same from the
        start or from the end."""
        new, old = self.starts, self.source.starts
        first, after = new[i] - new[0], new[i + 1] - new[0]
        if after <= self.head and old[j] - old[0] == first and old[j + 1] - old[0] == after:
            return True
        last, before = new[-1] - new[i + 1], new[-1] - new[i]
        return before <= self.tail and old[-1] - old[j + 1] == last and \
            old[-1] - old[j] == before

    def take(self, i: int) -> bytes | None:
        """Entry ``i``'s records put in the zone, taken from before, and
        its owner; None: not taken (parse the entry)."""
        j = self.guess
        if j >= len(self.source.owners) or (not self._same_place(i, j) and self._old_span(j)
                                            != self.lines[self.starts[i] - 1:self.starts[i + 1] - 1]):
            span = self.lines[self.starts[i] - 1:self.starts[i + 1] - 1]
            if self.by_key_line is None:
                starts = self.source.starts
                self.by_key_line = {}
                for k in range(len(self.source.owners)):
                    self.by_key_line.setdefault(self.old_lines[starts[k] - 1], k)
            found = self.by_key_line.get(span[0]) if span else None
            if found is None or self._old_span(found) != span:
                return None
            j = found
        self.guess = j + 1
        owner = self.source.owners[j]
        if owner in self.old.steered:
            return None
        zone = self.zone
        node = zone.nodes.get(owner)
        if node is not None and any(t != SOA for t in node):
            return None  # two entries for one name: the parser says so
        data = self.old.nodes.get(owner)
        if not data:
            return owner
        shift = self.starts[i] - self.source.starts[j]
        if node is None and (isinstance(data, Packed) or (isinstance(data, One) and (
                not shift or data.rrset.where is None))):
            zone.nodes[owner] = data  # (read only, and where it is comes from the source)
            return owner
        if node is None and not shift and SOA not in data:
            zone.nodes[owner] = dict(data)  # (the zone's own: the loader fills it in place)
            return owner
        node = editable(zone.nodes, owner)
        for rtype, rrset in data.items():
            if rtype == SOA:
                continue  # the apex's, from the soa key
            where = rrset.where
            if shift and where is not None:
                rrset = RRset(rrset.owner, rtype, rrset.ttl, rrset.rdatas,
                              Where(where.file, where.line + shift, where.column))
            node[rtype] = rrset
        return owner


def _check_owner_text(text: str) -> str | None:
    """Reason why an owner name is malformed, or None.  Letters, digits,
    ``-``, ``_`` and ``/`` are written as they are; any other byte as an
    escape (``\\.``, ``\\ `` or ``\\000``, as zone files write them)."""
    if text == "@" or _PLAIN_OWNER.fullmatch(text):
        return None
    if "\\" not in text:
        plain = _split_plain(text)
        return plain if isinstance(plain, str) else _check_labels(plain)
    labels: list[str] = []  # each label's unescaped characters; escapes as "\\"
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            digits = text[i + 1:i + 4]
            if digits[:1].isdigit():
                if not (len(digits) == 3 and digits.isdigit() and int(digits) <= 255):
                    return "a backslash starts an escape: \\X, or \\DDD with three digits " \
                        "up to 255"
                i += 4
            elif i + 1 < len(text):
                i += 2
            else:
                return "name ends with a lone backslash"
            cur.append("\\")
            continue
        if c == ".":
            labels.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur or not labels:
        labels.append("".join(cur))  # else the name ended with a dot: absolute
    return _check_labels(labels)


def _split_plain(text: str) -> list[str] | str:
    """The labels of a name written without escapes (the usual case, split
    in C), or the reason it is malformed."""
    body = text[:-1] if text.endswith(".") else text
    if not body:
        return "empty name"
    return body.split(".")


def _check_labels(labels: list[str]) -> str | None:
    if labels == [""]:
        return "empty name"
    for i, label in enumerate(labels):
        if not label:
            return "empty label (two dots in a row)"
        if "*" in label and (label != "*" or i != 0):
            return "'*' is only allowed as the whole leftmost label (a wildcard)"
        if _LABEL_OK.match(label):
            continue
        bad = next((c for c in label
                    if not (c.isascii() and c.isalnum()) and c not in "_-*/\\"), None)
        if bad is not None:
            return f"character {bad!r} is not allowed in a name (write it as an escape)"
    return None


def _build(root: YNode, file: str, default_origin: str, problems: Problems,
           pops: Collection[str] = (),
           check_defaults: dict[str, float] | None = None,
           text: _Text | None = None, spliced: _Splice | None = None) -> Zone | None:
    """The zone a parsed text holds.  ``text``: the text itself (for its
    :class:`ZoneSource`, and the version before).  ``spliced``: ``root``
    has no ``records`` value, whose entries ``spliced`` puts in instead."""
    top = expect_map(root, "a zone file", problems)
    if top is None:
        return None
    unknown_keys(top, {"origin", "ttl", "soa", "records", "dnssec"}, "the zone", problems)

    origin_text = default_origin
    onode = top.get("origin")
    if onode is not None:
        written = as_str(onode, "origin", problems)
        if written is not None and not written.strip():
            problems.add(onode.where, "origin is empty (leave it out and the file name "
                         "gives it)")
        elif written is not None:
            origin_text = written
            if not origin_text.endswith("."):
                problems.add(onode.where,
                             f"origin {origin_text!r} must be absolute (end with '.')")
                origin_text += "."
    try:
        origin = names.from_text(origin_text).lower()
    except names.NameError_ as exc:
        problems.add(onode.where if onode else Where(file, 1, 1), f"origin: {exc}")
        return None

    default_ttl = DEFAULT_TTL
    tnode = top.get("ttl")
    if tnode is not None:
        ttl = as_int(tnode, "ttl", problems, 0, rdata.MAX_TTL)
        if ttl is not None:  # else the zone is rejected for it
            default_ttl = ttl

    zone = Zone(origin=origin, file=file, default_ttl=default_ttl)
    builder = _ZoneBuilder(zone, problems, pops, check_defaults)

    snode = top.get("soa")
    if snode is None:
        problems.add(top.where, "missing 'soa': every zone needs an SOA record")
    else:
        builder.soa(snode)

    rnode = top.get("records")
    if spliced is not None:
        spliced.fill(builder)
    elif rnode is None:
        problems.add(top.where, "missing 'records' (at least the apex NS records)")
    else:
        records = expect_map(rnode, "records", problems)
        if records is not None:
            starts = _entry_starts(top, records, text)
            reuse = None
            if starts is not None and text is not None and text.previous is not None:
                reuse = _reuse(text, text.previous, zone, starts)
            owners: list[bytes | None] = []
            fresh: set[bytes | None] = set()
            for i, (key, value) in enumerate(records.items):
                owner = reuse.take(i) if reuse is not None else None
                if owner is None:
                    owner = builder.owner(key, value)
                    if reuse is not None:
                        fresh.add(owner)
                owners.append(owner)
            if starts is not None and text is not None and top.get("dnssec") is None and \
                    None not in owners:
                zone.source = ZoneSource(
                    text.text, tuple(o for o in owners if o is not None), array("I", starts))
                if reuse is not None:  # (a first load reads every owner anew: no set of them)
                    zone.source = replace(zone.source, base=weakref.ref(reuse.old),
                                          fresh=frozenset(o for o in fresh if o is not None))

    dnode = top.get("dnssec")
    if dnode is not None:
        zone.dnssec = dnssec_policy.parse(dnode, problems)
        keyset = where_of(zone, zone.origin, rdata.DNSKEY)
        if keyset is not None:
            problems.add(keyset, "DNSKEY records of a zone with dnssec come from its "
                                        "keys: leave them out (a published-only key is a key "
                                        "with 'sign: false')")

    nodes = zone.nodes
    for owner, types in nodes.items():  # (most names hold one record set)
        if len(types) == 1 and isinstance(types, dict):
            nodes[owner] = compact(types)
    check_zone(zone, problems, top.where)
    return zone


# Entries parsed on their own by the YAML parser at most (more: the whole
# text is parsed, which then costs less).  An entry on one line in the
# usual shape is read without it (``yamlsrc.flow_entry``) and not counted.
MAX_SPLICED = 64


def _spliced(text: str, file: str, default_origin: str, pops: Collection[str],
             check_defaults: dict[str, float] | None, previous: Zone | None) -> Zone | None:
    """The zone without parsing the whole text: only what is not an entry
    of ``records`` (the head and the tail, the entries' lines blanked) and
    the entries whose text is not the same as in ``previous`` (each on its
    own, at its own lines); the others' record sets are taken from
    ``previous`` (:class:`_Reuse`).  An entry on one line of the usual shape
    (``  www: {A: [192.0.2.1]}``) is read by ``yamlsrc.flow_entry``, which
    gives what the parser gives for it, at a fraction of the cost: so a
    first load (no ``previous``) comes here too.  None when that cannot be
    done or the result has any problem: then the whole text is parsed, so
    that the zone, or every problem, is exactly what a fresh load gives.

    This rests on what a block mapping is: where the ``records:`` line is
    followed by lines indented by ``n`` spaces, each line that starts with
    ``n`` spaces and a key starts an entry, which ends where the next one
    starts, or at the first line indented less than ``n`` (not a comment);
    a line at that indent that may be something else (``-``, ``?``, a flow
    collection, an anchor or a tag) gives up, and so does an entry that
    does not parse on its own as exactly one key at that line and column
    (a quoted scalar or a flow collection left open into the next
    entry)."""
    if "\t" in text or not _by_lines(text) or (
            previous is not None and not isinstance(previous.source, ZoneSource)):
        return None
    lines = text.split("\n")
    try:
        at = lines.index("records:")
    except ValueError:
        return None
    first = at + 1
    while first < len(lines) and (not lines[first].strip()
                                  or lines[first].lstrip(" ").startswith("#")):
        first += 1
    if first == len(lines):
        return None
    indent = len(lines[first]) - len(lines[first].lstrip(" "))
    if indent == 0:
        return None
    pad = " " * indent
    starts: list[int] = []
    end = len(lines)
    for k in range(first, len(lines)):
        line = lines[k]
        if not line.startswith(pad):
            rest = line.lstrip(" ")
            if rest and rest[0] != "#":
                end = k
                break
            continue
        c = line[indent:indent + 1]
        if c in (" ", "", "#"):
            continue
        if c in "-?:[]{},*&!|>%@`":
            return None
        starts.append(k + 1)
    starts.append(end + 1)
    skeleton = "\n".join(lines[:first] + [""] * (end - first) + lines[end:])
    problems = Problems()
    anchored: list[str] = []
    root = load_text(skeleton, file, problems, anchored)
    if problems or anchored or not isinstance(root, YMap):
        return None
    keys = [k for k, _ in root.items if k.text == "records"]
    rnode = root.get("records")
    if len(keys) != 1 or keys[0].where != Where(file, at + 1, 1) or \
            not isinstance(rnode, YScalar) or not rnode.is_null or \
            root.get("dnssec") is not None:
        return None
    splice = _Splice(_Text(text, previous, lines), lines, starts, indent, file)
    zone = _build(root, file, default_origin, problems, pops, check_defaults, spliced=splice)
    if zone is None or problems or splice.failed:
        return None
    return zone


class _Splice:
    """The entries of ``records`` of an edited text (:func:`_spliced`)."""

    def __init__(self, text: _Text, lines: list[str], starts: list[int], indent: int,
                 file: str) -> None:
        self.text = text
        self.lines = lines
        self.starts = starts
        self.indent = indent
        self.file = file
        self.failed = False

    def fill(self, builder: _ZoneBuilder) -> None:
        zone = builder.zone
        previous = self.text.previous
        reuse = None
        if previous is not None:
            reuse = _reuse(self.text, previous, zone, self.starts)
            if reuse is None:
                self.failed = True
                return
        owners: list[bytes] = []
        seen: set[bytes] = set()
        fresh: set[bytes] = set()
        parsed = 0
        count = len(self.starts) - 1
        nodes = zone.nodes
        # Entries of the usual shapes read in C, straight to their record
        # sets (geodns/_zonetext.c): all at once on a first load, else each
        # entry not taken from before.  None: read here as before (every
        # problem is reported by that reading).
        fast = self._fast(zone, 0, count) if reuse is None else None
        for i in range(count):
            owner = reuse.take(i) if reuse is not None else None
            if owner is None:
                got = fast[i] if fast is not None else self._fast(zone, i, i + 1)[0]
                if got is not None and got[0] not in nodes:
                    owner = got[0]
                    nodes[owner] = got[1]
                    if reuse is not None:
                        fresh.add(owner)
                    if owner in seen:
                        self.failed = True
                        return
                    seen.add(owner)
                    owners.append(owner)
                    continue
                entry = self._line(i)
                if entry is None and parsed < MAX_SPLICED:
                    entry = self._entry(i)
                    parsed += 1
                owner = builder.owner(*entry) if entry is not None else None
                if owner is not None and reuse is not None:
                    fresh.add(owner)  # (a first load reads every owner anew: no set of them)
            if owner is None or owner in seen:
                self.failed = True  # the whole text says what is wrong
                return
            seen.add(owner)
            owners.append(owner)
        zone.source = ZoneSource(self.text.text, tuple(owners), array("I", self.starts),
                                 None if previous is None else weakref.ref(previous),
                                 frozenset(fresh))

    def _fast(self, zone: Zone, lo: int, hi: int) -> Sequence[tuple[bytes, Types] | None]:
        """Entries ``lo`` to ``hi - 1`` read in C when they are of the usual
        shapes and certainly valid (each: its owner, lower-cased, and its
        record sets, as :meth:`_ZoneBuilder.owner` makes them), else None."""
        if _zonetext is None:
            return [None] * (hi - lo)
        return _zonetext.entries(self.lines, self.starts, lo, hi, zone.origin,
                                 zone.default_ttl)

    def _line(self, i: int) -> tuple[YScalar, YNode] | None:
        """Entry ``i`` read without the parser, when it is one line of the
        usual shape (any lines after it blank or comments)."""
        line, after = self.starts[i], self.starts[i + 1]
        lines = self.lines
        for k in range(line, after - 1):
            rest = lines[k].lstrip(" ")
            if rest and rest[0] != "#":
                return None
        return flow_entry(lines[line - 1], line, self.file)

    def _entry(self, i: int) -> tuple[YScalar, YNode] | None:
        """Entry ``i`` parsed on its own (at its own lines)."""
        line, after = self.starts[i], self.starts[i + 1]
        # Its last line break, as the whole text has it (a block scalar keeps it).
        text = "\n" * (line - 1) + "\n".join(self.lines[line - 1:after - 1]) + \
            ("\n" if after <= len(self.lines) else "")
        problems = Problems()
        anchored: list[str] = []
        root = load_text(text, self.file, problems, anchored)
        if problems or anchored or not isinstance(root, YMap) or len(root.items) != 1:
            return None
        key, value = root.items[0]
        if key.where != Where(self.file, line, self.indent + 1):
            return None
        return key, value


def _entry_starts(top: YMap, records: YMap, text: _Text | None) -> list[int] | None:
    """The line of each entry of ``records`` and the line after the last
    one (that of the next key at the top, or past the end), when it is a
    block mapping whose keys each start a line at the same column."""
    if text is None or not text.by_lines or not records.items:
        return None
    first = records.items[0][0].where
    if records.where != first:  # a flow mapping starts at its brace
        return None
    starts = []
    last = 0
    for key, _ in records.items:
        where = key.where
        if where.line <= last or where.column != first.column:
            return None
        starts.append(where.line)
        last = where.line
    end = text.line_count + 1
    after = False
    for key, _ in top.items:
        if after:
            end = key.where.line
            break
        after = key.text == "records"
    if end <= last:
        return None
    starts.append(end)
    return starts


def _reuse(text: _Text, previous: Zone, zone: Zone, starts: list[int]) -> _Reuse | None:
    source = previous.source
    if not isinstance(source, ZoneSource) or not text.by_lines or \
            previous.file != zone.file or previous.origin != zone.origin or \
            previous.default_ttl != zone.default_ttl or previous.dnssec is not None:
        return None
    lines = text.lines
    assert lines is not None
    return _Reuse(previous, source, lines, starts, zone)


class _ZoneBuilder:
    def __init__(self, zone: Zone, problems: Problems, pops: Collection[str] = (),
                 check_defaults: dict[str, float] | None = None) -> None:
        self.zone = zone
        self.problems = problems
        self.pops = set(pops)
        self.check_defaults = dict(CHECK_DEFAULTS) if check_defaults is None else check_defaults

    # -- SOA --------------------------------------------------------------
    def soa(self, node: YNode) -> None:
        p = self.problems
        m = expect_map(node, "soa", p)
        if m is None:
            return
        unknown_keys(m, {"mname", "rname", "serial", "refresh", "retry", "expire",
                         "minimum", "ttl"}, "soa", p)
        text: dict[str, str] = {}
        for key in ("mname", "rname"):
            v = m.get(key)
            if v is None:
                p.add(m.where, f"soa: missing {key!r}")
                return
            s = as_str(v, f"soa {key}", p)
            if s is None:
                return
            if key == "rname" and "@" in s:
                s = _mailbox_name(s)
                if s is None:
                    p.add(v.where, "soa rname: an e-mail address is LOCAL@DOMAIN, "
                          "with one '@' and something on each side of it")
                    return
            text[key] = s
        nums: dict[str, int] = {}
        for key in ("serial", "refresh", "retry", "expire", "minimum"):
            v = m.get(key)
            if v is None:
                nums[key] = SOA_DEFAULTS.get(key, 1)
                continue
            n = as_int(v, f"soa {key}", p, 0, 2**32 - 1)
            if n is None:
                return
            nums[key] = n
        ttl = self.zone.default_ttl
        tn = m.get("ttl")
        if tn is not None:
            written = as_int(tn, "soa ttl", p, 0, rdata.MAX_TTL)
            if written is not None:  # else the zone is rejected for it
                ttl = written
        try:
            rd = rdata.soa(text["mname"], text["rname"], nums["serial"], nums["refresh"],
                           nums["retry"], nums["expire"], nums["minimum"], self.zone.origin)
        except RDataError as exc:
            p.add(m.where, f"soa: {exc}")
            return
        editable(self.zone.nodes, self.zone.origin)[SOA] = RRset(
            self.zone.origin, SOA, ttl, (rd,), m.where)

    # -- owners -----------------------------------------------------------
    def owner(self, key: YScalar, value: YNode) -> bytes | None:
        """An entry of ``records`` put in the zone; its owner (lower-cased),
        or None when it has problems."""
        p = self.problems
        reason = _check_owner_text(key.text)
        if reason:
            p.add(key.where, f"malformed name {key.text!r}: {reason}")
            return None
        try:
            owner = names.from_text(key.text, self.zone.origin)
        except names.NameError_ as exc:
            p.add(key.where, f"malformed name {key.text!r}: {exc}")
            return None
        low = owner.lower()
        if low == owner:
            low = owner  # one object for the name, not two alike
        if not names.is_subdomain(low, self.zone.origin):
            p.add(key.where, f"{names.to_text(owner)} is outside the zone {self.zone.name} "
                  "(out-of-zone data)")
            return None
        types = value if isinstance(value, YMap) else \
            expect_map(value, f"records for {key.text!r}", p)
        if types is None:
            return None
        node = self.zone.nodes.get(low)
        if node is not None and any(t != SOA for t in node):
            p.add(key.where, f"{names.to_text(owner)} appears twice (as {key.text!r}); "
                  "merge its records under one key")
        for tkey, tval in types.items:
            self.rrset(owner, tkey, tval, low)
        return low

    def rrset(self, owner: bytes, tkey: YScalar, tval: YNode, low: bytes | None = None) -> None:
        """One record type of an owner (``low``: lower-cased, the one bytes
        object the zone and its source key the name by)."""
        if low is None:
            low = owner.lower()
        p = self.problems
        rtype = record_type(tkey, p)
        if rtype is None:
            return
        if rtype == SOA:
            p.add(tkey.where, "the SOA record goes in the top-level 'soa' key")
            return
        ttl = self.zone.default_ttl
        values: YNode | None = tval
        if isinstance(tval, YMap) and tval.get("steer") is not None:
            spec = steer_spec(owner, rtype, tkey, tval, origin=self.zone.origin, pops=self.pops,
                              check_defaults=self.check_defaults, p=p)
            if spec is not None:
                self.zone.steered.setdefault(low, {})[rtype] = spec
                self.zone.nodes.setdefault(low, {})
            return
        if isinstance(tval, YMap):
            if is_structured(rtype, tval):
                values = tval  # a single structured value such as {preference: 10, ...}
            else:
                unknown_keys(tval, {"ttl", "value", "values"}, f"{tkey.text} record", p)
                if tval.get("value") is not None and tval.get("values") is not None:
                    p.add(tval.where, "give either 'value' or 'values', not both")
                tn = tval.get("ttl")
                if tn is not None:
                    t = as_int(tn, "ttl", p, 0, rdata.MAX_TTL)
                    if t is None:
                        return
                    ttl = t
                values = tval.get("values") or tval.get("value")
                if values is None:
                    p.add(tval.where, f"{tkey.text} record has no 'value' or 'values'")
                    return
        assert values is not None
        items = as_list(values)
        if not items:
            p.add(tval.where, f"{tkey.text} has an empty list of values")
            return
        if len(items) == 1:  # (the usual record set: nothing to compare)
            rd = parse_value(rtype, items[0], self.zone.origin, p)
            if rd is not None:
                editable(self.zone.nodes, low)[rtype] = RRset(owner, rtype, ttl, (rd,),
                                                              tkey.where)
            return
        parsed: list[RData] = []
        seen: dict[bytes, Where] = {}
        for item in items:
            rd = parse_value(rtype, item, self.zone.origin, p)
            if rd is None:
                continue
            key = rd.canonical()
            if key in seen:
                shown = f" {item.text!r}" if isinstance(item, YScalar) else ""
                p.add(item.where, f"duplicate {tkey.text} record{shown} "
                      f"(first at line {seen[key].line})")
                continue
            seen[key] = item.where
            parsed.append(rd)
        if not parsed:
            return
        if rtype == CNAME and len(parsed) > 1:
            p.add(tval.where, "a name can have only one CNAME record")
            return
        editable(self.zone.nodes, low)[rtype] = RRset(owner, rtype, ttl, tuple(parsed),
                                                      tkey.where)


_GENERIC_TYPE = re.compile(r"^TYPE([0-9]{1,5})$")


def record_type(tkey: YScalar, p: Problems) -> int | None:
    """The record type a key names: a type geodns knows by name, in
    capitals, or ``TYPE65400`` for any other (RFC 3597 section 5)."""
    text = tkey.text
    known = rdata.TYPE_BY_NAME.get(text)  # (written in capitals: nothing more to check)
    if known is not None:
        return known
    up = text.upper()
    rtype = rdata.TYPE_BY_NAME.get(up)
    generic = _GENERIC_TYPE.match(up)
    if rtype is None and generic is not None and int(generic.group(1)) < 65536:
        rtype = int(generic.group(1))
        if rtype in rdata.NAME_BY_TYPE and rdata.not_data(rtype) is None:
            p.add(tkey.where, f"write {rdata.type_name(rtype)}, not {text}")
            return None
    elif rtype is None:
        rtype = rdata.type_from_text(up)
        if rtype is None or rdata.not_data(rtype) is None:
            p.add(tkey.where, f"unknown record type {text!r} (geodns serves "
                  + ", ".join(sorted(rdata.TYPE_BY_NAME))
                  + ", and any other type as TYPE<number> in the generic form of RFC 3597)")
            return None
    reason = rdata.not_data(rtype)
    if reason is not None:
        p.add(tkey.where, reason)
        return None
    if text != up:
        p.add(tkey.where, f"write record types in capitals: {up!r}")
        return None
    return rtype


def _mailbox_name(address: str) -> str | None:
    """``hostmaster@example.com`` as an SOA RNAME (RFC 1035 section 8):
    dots in the local part escaped, the domain always absolute.  None if it
    is not LOCAL@DOMAIN."""
    local, _, domain = address.partition("@")
    domain = domain.rstrip(".")
    if not local or not domain or "@" in domain:
        return None
    return local.replace(".", "\\.") + "." + domain + "."


def load_zone_dir(directory: Path, problems: Problems) -> dict[str, Zone]:
    """Every zone file in a directory, keyed by file path.  Files with
    problems are left out (the problems say why)."""
    zones: dict[str, Zone] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in ZONE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            zone = load_zone_file(path, problems)
            if zone is not None:
                zones[str(path)] = zone
    return zones

