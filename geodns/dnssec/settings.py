"""A zone's DNSSEC settings as data (parsed by :mod:`geodns.dnssec.policy`;
kept apart so that the data plane, which holds zones, never imports YAML)."""

from __future__ import annotations

from dataclasses import dataclass

from geodns.dnssec.keys import Key, Role
from geodns.dnssec.signer import Validity
from geodns.problems import Where


@dataclass(frozen=True)
class KeyRef:
    """A key as the zone names it."""

    file: str
    role: Role
    sign: bool
    cds: bool
    where: Where


@dataclass(frozen=True)
class DnssecSettings:
    keys: tuple[KeyRef, ...]
    validity: Validity
    algorithm: int | None  # when written: every key must be of it
    where: Where


@dataclass(frozen=True)
class ZoneKey:
    """A key loaded, with what the zone does with it."""

    key: Key
    sign: bool
    cds: bool


__all__ = ["DnssecSettings", "KeyRef", "ZoneKey"]
