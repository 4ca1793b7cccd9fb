"""Domain names: presentation text <-> uncompressed wire format.

Inside geodns a name is its uncompressed wire form (``bytes``, labels with
length prefixes, ending in the root label ``b"\\x00"``).  Look-ups use the
lower-cased wire form: label lengths are at most 63, below ``ord("A")``, so
``bytes.lower()`` on a whole wire name only ever touches label characters,
which is what makes the hot path's case folding one C call.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from geodns.errors import GeodnsError

MAX_LABEL = 63
MAX_NAME = 255
ROOT = b"\x00"


class NameError_(GeodnsError, ValueError):
    """A name that is not a valid domain name; the message says why."""


def _split_text(text: str) -> list[bytes]:
    """Split presentation text into raw labels, honouring \\. and \\DDD escapes."""
    if "\\" not in text and text.isascii():  # the usual name: no escapes
        parts = text.split(".")
        if parts[-1] == "":
            parts.pop()  # absolute: the trailing dot
        if all(parts):
            return [part.encode("ascii") for part in parts]
        # an empty label: the loop says which
    return _split_escaped(text)


def _split_escaped(text: str) -> list[bytes]:
    """:func:`_split_text` character by character."""
    labels: list[bytes] = []
    cur = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                raise NameError_("name ends with a lone backslash")
            nxt = text[i + 1]
            if nxt.isdigit():
                digits = text[i + 1 : i + 4]
                if len(digits) != 3 or not digits.isdigit() or int(digits) > 255:
                    raise NameError_(f"bad escape \\{digits} (\\DDD needs three digits up to 255)")
                cur.append(int(digits))
                i += 4
                continue
            cur.extend(nxt.encode("utf-8"))
            i += 2
            continue
        if ch == ".":
            if not cur:
                raise NameError_("empty label (two dots in a row, or a leading dot)")
            labels.append(bytes(cur))
            cur = bytearray()
            i += 1
            continue
        try:
            cur.extend(ch.encode("ascii"))
        except UnicodeEncodeError:
            raise NameError_(
                f"non-ASCII character {ch!r}: write internationalised names in their xn-- form"
            ) from None
        i += 1
    if cur:
        labels.append(bytes(cur))
    return labels


# A name of labels of letters, digits and - _ * / (1 to 63 each), made in one join.
_PLAIN = re.compile(r"[A-Za-z0-9_\-*/]{1,63}(?:\.[A-Za-z0-9_\-*/]{1,63})*\.?")
_LENGTH = [bytes((n,)) for n in range(64)]


def from_text(text: str, origin: bytes | None = None) -> bytes:
    """Turn presentation text into a wire name.

    A name ending in a dot is absolute.  Otherwise it is relative to
    ``origin`` (a wire name); ``@`` is the origin itself.  Raises
    :class:`NameError_` with a reason an operator can act on.
    """
    if _PLAIN.fullmatch(text):
        raw = text.encode("ascii")
        absolute = raw[-1] == 0x2E
        tail = b"\x00" if absolute else origin
        if tail is not None:
            made = b"".join([_LENGTH[len(label)] + label
                             for label in (raw[:-1] if absolute else raw).split(b".")]) + tail
            if len(made) <= MAX_NAME:
                return made
    text = text.strip()
    if not text:
        raise NameError_("empty name")
    if text == "@":
        if origin is None:
            raise NameError_("'@' needs an origin")
        return origin
    if text == ".":
        return ROOT
    absolute = text.endswith(".") and not text.endswith("\\.")
    labels = _split_text(text)
    wire = bytearray()
    for label in labels:
        if len(label) > MAX_LABEL:
            raise NameError_(
                f"label {label[:20].decode('ascii', 'replace')!r}... is {len(label)} bytes, over 63"
            )
        wire.append(len(label))
        wire.extend(label)
    if absolute:
        wire.append(0)
    else:
        if origin is None:
            raise NameError_(f"relative name {text!r} needs an origin (end it with a dot)")
        wire.extend(origin)
    if len(wire) > MAX_NAME:
        raise NameError_(f"name is {len(wire)} bytes in wire form, over 255")
    return bytes(wire)


def labels(wire: bytes) -> list[bytes]:
    """The labels of a wire name, root excluded."""
    out = []
    i = 0
    while wire[i]:
        n = wire[i]
        out.append(wire[i + 1 : i + 1 + n])
        i += n + 1
    return out


def label_count(wire: bytes) -> int:
    """How many labels a wire name has, root excluded."""
    n = i = 0
    while wire[i]:
        i += wire[i] + 1
        n += 1
    return n


def _canonical_key(wire: bytes) -> bytes:
    """A byte string that sorts as DNSSEC's canonical order sorts names
    (RFC 4034 6.1: label by label from the root, each label's bytes as
    unsigned numbers, a name before its descendants), for ``wire``
    lower-cased: its labels from the root, a zero byte in a label written
    00 02, and 00 01 between labels.  What follows the name's root label
    in ``wire`` is ignored."""
    parts = []
    i = 0
    n = wire[0]
    while n:
        parts.append(wire[i + 1:i + 1 + n])
        i += n + 1
        n = wire[i]
    parts.reverse()
    if i != wire.find(b"\x00"):  # a zero byte inside a label (rare)
        parts = [p.replace(b"\x00", b"\x00\x02") for p in parts]
    return b"\x00\x01".join(parts)


T = TypeVar("T")


class _CanonicalIndex:
    """Names' canonical keys (:func:`canonical_key`), sorted: :meth:`cover`
    finds where a name falls among them.  In C (geodns/_udpbatch.c) when
    the optional helper is built, as the sign stage calls it per query."""

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = list(keys)
        if any(a > b for a, b in itertools.pairwise(self.keys)):
            raise ValueError("CanonicalIndex() keys must be sorted")

    def __len__(self) -> int:
        return len(self.keys)

    def cover(self, wire: bytes) -> int:
        """The position of the last key at or before the name's (-1: none):
        the chain entry whose NSEC covers or matches it.  What follows the
        name in ``wire`` (a look-up key's type and class) is ignored."""
        return bisect.bisect_right(self.keys, _canonical_key(wire)) - 1

    def finder(self, kept: dict[int, T]) -> _Finder[T]:
        """What finds ``kept.get(self.cover(wire))`` in one call (``get``)."""
        return _Finder(self, kept)


class _Finder(Generic[T]):
    __slots__ = ("index", "kept")

    def __init__(self, index: _CanonicalIndex, kept: dict[int, T]) -> None:
        self.index = index
        self.kept = kept

    def get(self, wire: bytes) -> T | None:
        return self.kept.get(self.index.cover(wire))


canonical_key: Callable[[bytes], bytes] = _canonical_key
CanonicalIndex: Callable[[Sequence[bytes]], _CanonicalIndex] = _CanonicalIndex
# The same in C (geodns/_udpbatch.c), when the optional helper is built: per query.
with contextlib.suppress(ImportError):
    from geodns._udpbatch import CanonicalIndex as CanonicalIndex  # type: ignore[assignment]
    from geodns._udpbatch import canonical_key as canonical_key


# Label bytes shown as they are (0x21-0x7E but for . \ " ( ) ; @ $).
_AS_IS = re.compile(rb"[!#%&'*+,\-/0-9:<=>?A-Z\[\]^_`a-z{|}~]*")


def to_text(wire: bytes) -> str:
    """Presentation form of a wire name, always absolute."""
    if wire == ROOT:
        return "."
    found = labels(wire)
    if _AS_IS.fullmatch(b"".join(found)):  # the usual name: no escapes
        return b".".join(found).decode("ascii") + "."
    parts = []
    for label in found:
        s = []
        for b in label:
            c = chr(b)
            if c in ".\\\"();@$ ":
                s.append("\\" + c)
            elif 0x21 <= b <= 0x7E:
                s.append(c)
            else:
                s.append(f"\\{b:03d}")
        parts.append("".join(s))
    return ".".join(parts) + "."


def parent(wire: bytes) -> bytes:
    """The name one label up; the root's parent is the root."""
    if wire == ROOT:
        return ROOT
    return wire[wire[0] + 1 :]


def is_subdomain(name: bytes, ancestor: bytes) -> bool:
    """True if ``name`` is ``ancestor`` or below it (both lower-cased wire names)."""
    if ancestor == ROOT:
        return True
    if not name.endswith(ancestor):
        return False
    # The match must start on a label boundary.
    cut = len(name) - len(ancestor)
    i = 0
    while i < cut:
        i += name[i] + 1
    return i == cut


def suffixes(wire: bytes) -> list[bytes]:
    """``wire`` and each ancestor up to and including the root, deepest first."""
    out = []
    i = 0
    while True:
        out.append(wire[i:])
        if wire[i] == 0:
            return out
        i += wire[i] + 1

