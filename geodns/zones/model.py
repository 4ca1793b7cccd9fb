"""The zone model: what an operator's file says, validated, before compiling."""

from __future__ import annotations

import weakref
from array import array
from dataclasses import dataclass, field
from functools import cached_property

from geodns import names
from geodns.dnssec.settings import DnssecSettings, ZoneKey
from geodns.problems import Where
from geodns.rdata import NS, SOA, RData
from geodns.steering import SteerSpec


@dataclass(frozen=True, slots=True)
class RRset:
    owner: bytes  # wire name as written (case kept); nodes are keyed lower-cased
    rtype: int
    ttl: int
    rdatas: tuple[RData, ...]
    where: Where | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ZoneSource:
    """The text a zone was loaded from and where each entry of its
    ``records`` mapping is in it: entry ``i`` is ``owners[i]`` (lower-cased
    wire name) and spans lines ``starts[i]`` to ``starts[i + 1] - 1`` (1-based;
    one more start than owners).  The loader of the zone's next version
    takes an owner whose entry has the same text as it was (its lines moved,
    maybe) without parsing it again (``geodns.zones.loader``)."""

    text: str
    owners: tuple[bytes, ...]
    starts: array[int]
    # The version whose records the others were taken from (while it
    # lives), and the owners whose entries were read anew: every other
    # owner holds the records it held there (the compiler's diff).
    base: weakref.ref[Zone] | None = None
    fresh: frozenset[bytes] = frozenset()


@dataclass
class Zone:
    """One validated zone.  ``nodes`` maps lower-cased wire owner names to
    their RRsets by type; it holds only names with data (empty non-terminals
    are derived by the compiler)."""

    origin: bytes  # lower-cased wire name
    file: str
    default_ttl: int
    nodes: dict[bytes, dict[int, RRset]] = field(default_factory=dict)
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
