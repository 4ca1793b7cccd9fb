"""A zone's ``dnssec:`` setting: which keys, what they do, how long
signatures hold.

```yaml
dnssec:
  keys:
    - {file: example.com.ksk.pem, role: ksk, cds: true}
    - {file: example.com.zsk.pem, role: zsk}
    - {file: example.com.zsk-next.pem, role: zsk, sign: false}   # pre-published
  validity: 14d      # how long a signature holds
  refresh: 7d        # signed again when this much is left
  jitter: 1d         # expirations spread over this much
```

``file`` names a private key in the keys directory (``keys:`` in the
configuration).  Roles: ``ksk`` signs the DNSKEY set (its DS goes to the
parent), ``zsk`` signs the rest, ``csk`` both.  A key with ``sign: false``
is published in the DNSKEY set without signing (a ZSK before and after a
rollover); ``cds: true`` publishes CDS and CDNSKEY records for a key-signing
key (RFC 7344), for a parent that reads them.  Parsed here with file:line
positions; the key files themselves are read with the zone's other
documents and loaded by :func:`resolve`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from geodns.dnssec.keys import ALGORITHMS, KeyError_, Role, load
from geodns.dnssec.settings import DnssecSettings, KeyRef, ZoneKey
from geodns.dnssec.signer import Validity
from geodns.problems import Problems, Where
from geodns.yamlsrc import YMap, YNode, YScalar, as_bool, as_list, as_str, expect_map, unknown_keys

DEFAULT_VALIDITY = 14 * 86400  # Knot's rrsig-lifetime
DEFAULT_REFRESH = 7 * 86400
DEFAULT_JITTER = 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")


def duration(node: YNode, what: str, problems: Problems, lo: int, hi: int) -> int | None:
    """Seconds: an integer, or a number with s, m, h, d or w after it."""
    if isinstance(node, YScalar) and not node.is_null:
        m = _DURATION.match(node.text.strip())
        if m:
            value = int(m.group(1)) * _UNITS[m.group(2) or "s"]
            if lo <= value <= hi:
                return value
            problems.add(node.where, f"{what} {node.text} is out of range ({lo} to {hi} "
                                     "seconds)")
            return None
    problems.add(node.where, f"{what} must be a duration: seconds, or a number with s, m, h, "
                             "d or w (14d)")
    return None


def parse(node: YNode, problems: Problems) -> DnssecSettings | None:
    """The ``dnssec:`` mapping of a zone file; None (with problems) when it
    cannot be used."""
    before = len(problems)
    m = expect_map(node, "dnssec", problems)
    if m is None:
        return None
    unknown_keys(m, {"keys", "validity", "refresh", "jitter", "algorithm"}, "dnssec",
                 problems)
    algorithm = None
    anode = m.get("algorithm")
    if anode is not None:
        text = as_str(anode, "dnssec algorithm", problems)
        if text is not None:
            algorithm = ALGORITHMS.get(text.lower().replace("-", ""))
            if algorithm is None:
                problems.add(anode.where, f"unknown algorithm {text!r} (expected one of: "
                                          f"{', '.join(ALGORITHMS)})")
    validity = _duration(m, "validity", DEFAULT_VALIDITY, 3600, 10 * 365 * 86400, problems)
    refresh = _duration(m, "refresh", DEFAULT_REFRESH, 60, 10 * 365 * 86400, problems)
    jitter = _duration(m, "jitter", DEFAULT_JITTER, 0, 10 * 365 * 86400, problems)
    if len(problems) == before and refresh + jitter >= validity:
        problems.add(m.where, f"dnssec: refresh ({refresh} s) and jitter ({jitter} s) must "
                              f"add up to less than validity ({validity} s): a signature "
                              "would be due as soon as it is made")
    keys = []
    knode = m.get("keys")
    if knode is None:
        problems.add(m.where, "dnssec needs 'keys': a combined signing key (role: csk) or a "
                              "key-signing and a zone-signing key (ksk and zsk)")
    for item in as_list(knode):
        ref = _key_ref(item, problems)
        if ref is not None:
            keys.append(ref)
    if len(problems) == before:
        seen: set[str] = set()
        for ref in keys:
            if ref.file in seen:
                problems.add(ref.where, f"key {ref.file} is listed twice")
            seen.add(ref.file)
        signing = [r for r in keys if r.sign]
        if not any(r.role is not Role.KSK for r in signing):
            problems.add(m.where, "dnssec: no key signs the zone (a zsk or csk without "
                                  "'sign: false')")
        if not any(r.role is not Role.ZSK for r in signing):
            problems.add(m.where, "dnssec: no key signs the DNSKEY set (a ksk or csk "
                                  "without 'sign: false')")
        for ref in keys:
            if ref.cds and ref.role is Role.ZSK:
                problems.add(ref.where, "cds: true is for a key-signing key (ksk or csk): "
                                        "the parent's DS names it")
    if len(problems) != before:
        return None
    return DnssecSettings(tuple(keys), Validity(validity, refresh, jitter), algorithm, m.where)


def _duration(m: YMap, key: str, default: int, lo: int, hi: int, problems: Problems) -> int:
    node = m.get(key)
    if node is None:
        return default
    value = duration(node, f"dnssec {key}", problems, lo, hi)
    return default if value is None else value  # None: the problem rejects the zone


def _key_ref(node: YNode, problems: Problems) -> KeyRef | None:
    m = expect_map(node, "a dnssec key", problems)
    if m is None:
        return None
    unknown_keys(m, {"file", "role", "sign", "cds"}, "a dnssec key", problems)
    fnode, rnode = m.get("file"), m.get("role")
    if fnode is None or rnode is None:
        problems.add(m.where, "a dnssec key needs 'file' (in the keys directory) and 'role' "
                              "(ksk, zsk or csk)")
        return None
    file = as_str(fnode, "key file", problems)
    role_text = as_str(rnode, "key role", problems)
    if file is None or role_text is None:
        return None
    if "/" in file or file.startswith("."):
        problems.add(fnode.where, f"key file {file!r}: a file name in the keys directory, "
                                  "without a path")
        return None
    try:
        role = Role(role_text.lower())
    except ValueError:
        problems.add(rnode.where, f"unknown key role {role_text!r} (expected ksk, zsk or csk)")
        return None
    sign = cds = None
    snode, cnode = m.get("sign"), m.get("cds")
    sign = True if snode is None else as_bool(snode, "sign", problems)
    cds = False if cnode is None else as_bool(cnode, "cds", problems)
    if sign is None or cds is None:
        return None
    return KeyRef(file, role, sign, cds, fnode.where)


def read_keys(directory: Path, problems: Problems | None = None) -> dict[str, bytes]:
    """The keys directory's ``*.pem`` files by name: none when it does not
    exist (each signed zone then says which key it misses); a problem when
    it or a key in it cannot be read (the node's user may not)."""
    try:
        return {p.name: p.read_bytes() for p in directory.iterdir()
                if p.name.endswith(".pem") and not p.name.startswith(".") and p.is_file()}
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if problems is not None:
            problems.add(Where(str(directory), 1, 1), f"keys directory: cannot read: "
                                                      f"{exc.strerror or exc}")
        return {}


def resolve(settings: DnssecSettings, files: Mapping[str, bytes],
            problems: Problems) -> tuple[ZoneKey, ...] | None:
    """The zone's keys loaded from the keys directory's files (by name);
    None (with problems at each key's line) when one cannot be used."""
    before = len(problems)
    out = []
    for ref in settings.keys:
        pem = files.get(ref.file)
        if pem is None:
            problems.add(ref.where, f"key file {ref.file} is not in the keys directory")
            continue
        try:
            key = load(pem, ref.role)
        except KeyError_ as exc:
            problems.add(ref.where, f"key file {ref.file}: {exc}")
            continue
        if settings.algorithm is not None and key.algorithm != settings.algorithm:
            problems.add(ref.where, f"key file {ref.file} is algorithm {key.algorithm}, not "
                                    f"{settings.algorithm} as 'algorithm' says")
            continue
        out.append(ZoneKey(key, ref.sign, ref.cds))
    tags = [z.key.tag for z in out]
    if len(problems) == before and len(set(tags)) != len(tags):
        problems.add(settings.where, "two keys have the same key tag: make a new key for one")
    return tuple(out) if len(problems) == before else None


__all__ = ["DnssecSettings", "KeyRef", "ZoneKey", "duration", "parse", "read_keys", "resolve"]
