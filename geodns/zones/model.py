"""The zone model: what an operator's file says, validated, before compiling."""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from geodns import names
from geodns.dnssec.settings import DnssecSettings, ZoneKey
from geodns.problems import Where
from geodns.rdata import MX, NS, PTR, SOA, CompressibleName, Parts, RData, Wire
from geodns.steering import SteerSpec


@dataclass(frozen=True, slots=True)
class RRset:
    owner: bytes  # wire name as written (case kept); nodes are keyed lower-cased
    rtype: int
    ttl: int
    rdatas: tuple[RData, ...]
    # Where it is written (not part of what it is); None for an entry the
    # loader read in C, whose place is found when asked (checks.where_of).
    where: Where | None = field(default=None, compare=False)


# A name's record sets, by type: a dict while the zone is read, a
# :class:`One` once read if the name holds one (most names do).
Types = Mapping[int, RRset]


class _Single(Mapping[int, RRset]):
    """The record sets of a name that holds one, as a mapping from its type
    (read only: the loader makes a dict of it to add to it, :func:`editable`)."""

    __slots__ = ()

    def _type(self) -> int:
        raise NotImplementedError

    def _set(self) -> RRset:
        raise NotImplementedError

    def __getitem__(self, rtype: int) -> RRset:
        if rtype == self._type():
            return self._set()
        raise KeyError(rtype)

    def get(self, rtype: int, default: RRset | None = None) -> RRset | None:  # type: ignore[override]
        return self._set() if rtype == self._type() else default

    def __contains__(self, rtype: object) -> bool:
        return rtype == self._type()

    def __iter__(self) -> Iterator[int]:
        return iter((self._type(),))

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._set()!r})"


class One(_Single):
    """A name's one record set: what a dict of one item is, in a fifth of the
    memory (an object of one slot against 232 bytes; a large zone holds one
    per name)."""

    __slots__ = ("rrset",)

    def __init__(self, rrset: RRset) -> None:
        self.rrset = rrset

    def _type(self) -> int:
        return self.rrset.rtype

    def _set(self) -> RRset:
        return self.rrset


# The types whose RDATA ends in one domain name the encoder may compress,
# after this many bytes: what a packed record set may hold besides records
# with no name inside (the name written whole in the answer).
_NAMED = {MX: 2, NS: 0, PTR: 0}


class Packed(_Single):
    """A name's only record set (its owner written as it is kept, no
    position kept) as the body of the name's own answer, where its records
    are in wire form anyway: ``C0 0C``, type, class, TTL, RDATA length and
    RDATA for each.  The C reader makes one for an entry whose records have
    no name inside, the compiler answers with its body as it is, and puts
    one in place of a :class:`One` whose answer holds its records as written
    (one name written whole: :func:`packable`).  Read back into the same
    :class:`RRset` when asked (its place is found in the source, as an
    entry read in C keeps none): the same mapping as a :class:`One`, in a
    fraction of the memory of it and of what it holds."""

    __slots__ = ("body", "owner")

    def __init__(self, owner: bytes, body: bytes) -> None:
        self.owner = owner
        self.body = body

    def _type(self) -> int:
        body = self.body
        return (body[2] << 8) | body[3]

    def _set(self) -> RRset:
        body = self.body
        rtype = self._type()
        named = _NAMED.get(rtype)
        rdatas: list[RData] = []
        at = 0
        while at < len(body):
            length = (body[at + 10] << 8) | body[at + 11]
            wire = body[at + 12:at + 12 + length]
            if named is None:
                rdatas.append(Wire(wire))
            else:
                name = CompressibleName(wire[named:])
                rdatas.append(Parts((wire[:named], name) if named else (name,), name.lower()))
            at += 12 + length
        return RRset(self.owner, rtype, int.from_bytes(body[6:10], "big"), tuple(rdatas))


def packable(rrset: RRset, owner: bytes, body: bytes) -> bool:
    """Whether a name's only record set can be kept :class:`Packed` in its
    own answer's ``body``: no position kept (read in C), its owner
    ``owner`` as kept, and read back from the body as it is."""
    if rrset.where is not None or rrset.owner != owner:
        return False
    if all(type(rd) is Wire for rd in rrset.rdatas):
        return True  # (the body holds each as it is)
    return rrset.rtype in _NAMED and Packed(owner, body)[rrset.rtype] == rrset


def compact(types: dict[int, RRset]) -> Types:
    """A name's record sets as the zone keeps them once read."""
    return One(next(iter(types.values()))) if len(types) == 1 else types


def editable(nodes: dict[bytes, Types], owner: bytes) -> dict[int, RRset]:
    """``owner``'s record sets as a dict the loader adds to (made if need be)."""
    types = nodes.get(owner)
    if isinstance(types, dict):
        return types
    made: dict[int, RRset] = {} if types is None else dict(types)
    nodes[owner] = made
    return made


@dataclass(frozen=True, slots=True, eq=False)
class ZoneSource:
    """The text a zone was loaded from and where each entry of its
    ``records`` mapping is in it: entry ``i`` is ``owners[i]`` (lower-cased
    wire name) and spans lines ``starts[i]`` to ``starts[i + 1] - 1`` (1-based;
    one more start than owners).  The loader of the zone's next version
    takes an owner whose entry has the same text as it was (its lines moved,
    maybe) without parsing it again (``geodns.zones.loader``)."""

    # The text: the zone document's own bytes when they are ASCII (the object
    # the source of documents holds anyway: a large zone's text is not kept
    # twice), else the str (:attr:`text` either way).
    data: str | bytes
    owners: tuple[bytes, ...]
    starts: array[int]
    # The version whose records the others were taken from (while it
    # lives), and the owners whose entries were read anew: every other
    # owner holds the records it held there (the compiler's diff).
    base: weakref.ref[Zone] | None = None
    fresh: frozenset[bytes] = frozenset()

    @property
    def text(self) -> str:
        data = self.data
        return data if isinstance(data, str) else data.decode("ascii")


@dataclass
class Zone:
    """One validated zone.  ``nodes`` maps lower-cased wire owner names to
    their RRsets by type (:data:`Types`); it holds only names with data (empty
    non-terminals are derived by the compiler)."""

    origin: bytes  # lower-cased wire name
    file: str
    default_ttl: int
    nodes: dict[bytes, Types] = field(default_factory=dict)
    # Steered record sets: lower-cased owner -> type -> spec.  Their owners
    # are also in ``nodes`` (with their static types, if any).
    steered: dict[bytes, dict[int, SteerSpec]] = field(default_factory=dict)
    dnssec: DnssecSettings | None = None  # signed when set
    keys: tuple[ZoneKey, ...] = ()  # its keys, loaded from the keys directory
    # What it was loaded from, when the next version may reuse its records;
    # not part of what the zone is.
    source: ZoneSource | None = field(default=None, compare=False, repr=False)

    @property
    def soa(self) -> RRset:
        return self.nodes[self.origin][SOA]

    @property
    def serial(self) -> int:
        return int.from_bytes(self.soa.rdatas[0].parts[2][:4], "big")

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 section 5: the SOA's TTL or its MINIMUM, whichever is lower."""
        minimum = int.from_bytes(self.soa.rdatas[0].parts[2][16:20], "big")
        return min(self.soa.ttl, minimum)

    @cached_property
    def name(self) -> str:
        return names.to_text(self.origin)

    def delegations(self) -> set[bytes]:
        return {o for o, types in self.nodes.items() if NS in types and o != self.origin}


try:  # the C reader of usual entries and maker of their answers makes these classes' objects
    from geodns import _zonetext
except ImportError:  # pragma: no cover - a tree without the C helper built
    pass
else:
    _zonetext.setup(Parts, Wire, RRset, CompressibleName, One, Packed)
