"""RRSIG records for a zone's record sets, made when a snapshot is built.

Theory of operation.  A :class:`Signer` belongs to one zone and one build.
:meth:`Signer.rrsigs` signs a record set (owner, type, TTL, RDATAs) with
every key of the zone that signs it (key-signing keys sign DNSKEY, CDS and
CDNSKEY; zone-signing keys everything else; a combined key both), and
remembers the result under the set's canonical form.  The next build of the
zone (an edit, a key change, a refresh) is given the previous signer's
memory and takes every signature from it that is still valid for longer
than ``refresh``: an edit re-signs the record sets it changed, not the zone.

Validity (RFC 4034 3.1.5): the inception is an hour before the build (for
resolvers whose clocks are behind); the expiration is ``validity`` after the
build, less a part of ``jitter`` taken from a hash of the owner and type, so
that signatures made together do not all expire together.  The zone is due
for a refresh (:attr:`Signer.due`) when the first signature reaches
``refresh`` before its expiration; the server then builds again, and only the
signatures that are due are made again.

The data plane never signs: it picks pre-built bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from geodns import names
from geodns.dnssec.keys import Key
from geodns.rdata import CDNSKEY, CDS, DNSKEY, RData, Wire

CLASS_IN = 1
INCEPTION_SKEW = 3600  # seconds before the build
KEY_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})  # signed by key-signing keys


@dataclass(frozen=True)
class Validity:
    """How long signatures hold (seconds)."""

    validity: int
    refresh: int
    jitter: int


# What a signature is remembered under: owner (lower-cased, as signed), type,
# TTL, a digest of the canonical RDATAs in order, and the tags of the keys
# that signed.
SetKey = tuple[bytes, int, int, bytes, tuple[int, ...]]


class Signer:
    """Signs one zone's record sets for one build (see the module's text)."""

    def __init__(self, origin: bytes, keys: Sequence[Key], validity: Validity, now: float,
                 previous: Signer | None = None) -> None:
        self.origin = origin.lower()
        self.keys = tuple(keys)
        self.validity = validity
        self.now = int(now)
        self.zone_keys = tuple(k for k in self.keys if k.signs_zone)
        self.key_keys = tuple(k for k in self.keys if k.signs_keys)
        self.memo: dict[SetKey, tuple[tuple[RData, ...], int]] = {}
        self._old = previous.memo if previous is not None and \
            previous.origin == self.origin else {}
        self.made = 0  # signatures made by this build (the others were reused)

    @property
    def due(self) -> float:
        """When this zone must be signed again: the first signature's
        expiration less ``refresh`` (never while nothing is signed)."""
        if not self.memo:
            return float("inf")
        return min(exp for _, exp in self.memo.values()) - self.validity.refresh

    @property
    def earliest_expiration(self) -> float | None:
        """When the first signature served expires (None: none made)."""
        return min((exp for _, exp in self.memo.values()), default=None)

    def rrsigs(self, owner: bytes, rtype: int, ttl: int, rdatas: Sequence[RData]) -> tuple[
            RData, ...]:
        """The RRSIG RDATAs for a record set.  ``owner`` is the name as
        signed: for a set made from a wildcard, the wildcard's name."""
        keys = self.key_keys if rtype in KEY_TYPES else self.zone_keys
        if not keys:
            return ()
        low = owner.lower()
        canon = sorted(set(rd.canonical() for rd in rdatas))
        digest = hashlib.blake2b(b"".join(len(c).to_bytes(2, "big") + c for c in canon),
                                 digest_size=16).digest()
        key: SetKey = (low, rtype, ttl, digest, tuple(k.tag for k in keys))
        got = self.memo.get(key)
        if got is None:
            old = self._old.get(key)
            if old is not None and old[1] - self.validity.refresh > self.now:
                got = old
            else:
                got = self._sign(low, rtype, ttl, canon, keys)
            self.memo[key] = got
        return got[0]

    def _sign(self, owner: bytes, rtype: int, ttl: int, canon: Sequence[bytes],
              keys: Sequence[Key]) -> tuple[tuple[RData, ...], int]:
        v = self.validity
        labels = names.label_count(owner)
        if owner.startswith(b"\x01*"):
            labels -= 1  # RFC 4034 3.1.3: the wildcard label is not counted
        spread = int.from_bytes(hashlib.blake2b(owner + rtype.to_bytes(2, "big"),
                                                digest_size=4).digest(), "big")
        expiration = self.now + v.validity - (spread % v.jitter if v.jitter else 0)
        inception = self.now - INCEPTION_SKEW
        rrs = b"".join(owner + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rd)) + rd
                       for rd in canon)
        sigs = []
        for k in keys:
            head = struct.pack("!HBBIIIH", rtype, k.algorithm, labels, ttl,
                               expiration & 0xFFFFFFFF, inception & 0xFFFFFFFF, k.tag)
            signed = head + self.origin  # the signer's name: lower-cased, never compressed
            # One part: an RRSIG is never canonicalised again nor compressed,
            # and never shown as text (hundreds of thousands in a large zone).
            sigs.append(Wire(signed + k.sign(signed + rrs)))
            self.made += 1
        return tuple(sigs), expiration


__all__ = ["KEY_TYPES", "SetKey", "Signer", "Validity"]
