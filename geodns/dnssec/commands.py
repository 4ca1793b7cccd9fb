"""What ``geodns dnssec keygen`` and ``geodns dnssec ds`` do, apart from the
command line: a new private key written into the keys directory, and the
records a signed zone's parent needs for its key-signing keys (DS, or
DNSKEY for a parent that takes those).

The zone is found and loaded with the checks ``geodns check`` makes, and
its keys are loaded as a snapshot loads them (:func:`policy.resolve`), so
the DS printed is the DS of the DNSKEY the node serves.  Problems come back
as ``file:line:column`` :class:`~geodns.problems.Problems`; anything else
this module refuses raises a :class:`DnssecCommandError` that knows its
exit status.  geodns/cli.py prints either.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from geodns import names
from geodns.config import Config, check_zones_dir
from geodns.dnssec.keys import Key, KeyError_, Role, generate, load
from geodns.dnssec.policy import ZoneKey, read_keys, resolve
from geodns.dnssec.zonesign import dnskey_text, ds_rdata, ds_text
from geodns.errors import GeodnsError
from geodns.problems import Problems
from geodns.zones.loader import ZONE_SUFFIXES, load_zone_file, origin_from_filename
from geodns.zones.model import Zone

DIGEST_TYPES = {"sha256": 2, "sha384": 4}  # --digest: DS digest types (RFC 4509, RFC 6605)
_ATTEMPTS = 100  # new keys tried for a key tag no key in the directory has


class DnssecCommandError(GeodnsError):
    """The command cannot do what it was asked (the message says why)."""

    exit_status = 1


class UsageError(DnssecCommandError):
    """The command line itself is wrong: nothing was read or written."""

    exit_status = 2


# -- keygen ------------------------------------------------------------------------------------

def role_from_name(file: str) -> Role | None:
    """The role a file name gives, when one of its dot-separated parts is
    ``ksk``, ``zsk`` or ``csk`` (``example.com.ksk.pem``); else None."""
    found = {Role(part) for part in file.lower().split(".") if part in ("ksk", "zsk", "csk")}
    return found.pop() if len(found) == 1 else None


def check_file_name(file: str) -> None:
    """A key file is named by the zone's ``dnssec: keys:`` as a bare file
    name, and the keys directory is read for ``*.pem`` files only."""
    if "/" in file or file.startswith(".") or not file.endswith(".pem") or "\0" in file:
        raise UsageError(f"{file!r}: give a file name ending in .pem, without a path and not "
                         "starting with a dot: it is written into the keys directory, and the "
                         "zone's dnssec: keys: name it so")


def keygen(keys_dir: Path, file: str, algorithm: int, role: Role) -> Key:
    """Write a new private key for ``algorithm`` into ``keys_dir`` as
    ``file`` (mode 0600; the directory is made with mode 0700 when it does
    not exist) and return it as the zone will load it in ``role``.  An
    existing file is never overwritten.  The key's tag differs from every
    key tag already in the directory, so that no zone ends up with two keys
    of one tag (:func:`policy.resolve` refuses those)."""
    check_file_name(file)
    path = keys_dir / file
    if path.exists() or path.is_symlink():
        raise _exists(path)
    taken = set(_tags(read_keys(keys_dir).values()))
    for _ in range(_ATTEMPTS):
        pem = generate(algorithm)
        key = load(pem, role)
        if taken.isdisjoint(_tags([pem])):
            break
    else:  # pragma: no cover - 100 draws against at most 65,536 tags
        raise DnssecCommandError(f"no key with a tag unlike those in {keys_dir} after "
                                 f"{_ATTEMPTS} tries")
    try:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DnssecCommandError(f"cannot make the keys directory {keys_dir}: "
                                 f"{exc.strerror or exc}") from None
    try:
        # O_EXCL: a file (or a symbolic link) made there meanwhile is not replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise DnssecCommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise DnssecCommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    return key


def _exists(path: Path) -> DnssecCommandError:
    return DnssecCommandError(f"{path} already exists: not overwritten (remove it first if no "
                              "zone uses it; a key in use is replaced by a rollover)")


def _tags(pems: Iterable[bytes]) -> Iterable[int]:
    """The tags these keys have in any role (the SEP flag is in the tag)."""
    for pem in pems:
        for role in (Role.KSK, Role.ZSK):
            try:
                yield load(pem, role).tag
            except KeyError_:
                break


def loose_permissions(keys_dir: Path) -> int | None:
    """The keys directory's mode when others than its owner may enter it."""
    try:
        mode = keys_dir.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o077 else None


# -- ds ----------------------------------------------------------------------------------------

def zone_origin(text: str) -> bytes:
    """The zone a command line names, ``example.com`` or ``example.com.``."""
    text = text.strip()
    try:
        return names.from_text(text if text.endswith(".") else text + ".").lower()
    except names.NameError_ as exc:
        raise UsageError(f"{text!r} is not a zone name: {exc}") from None


def find_zone(cfg: Config, origin: bytes, problems: Problems) -> Zone | None:
    """The zone ``origin`` of the zones directory, loaded and checked as
    ``geodns check`` loads it.  None when it cannot be used, with its
    problems added (or a :class:`DnssecCommandError` when no file holds
    it).  Other zones' problems are not reported: they are not this zone's
    DS; ``geodns check`` lists them."""
    check_zones_dir(cfg, problems)
    if problems:
        return None
    found: list[Zone] = []
    broken: list[tuple[Path, Problems]] = []
    for path in _zone_files(cfg.zones_dir):
        mine = Problems()
        zone = load_zone_file(path, mine, pops=cfg.pops, check_defaults=cfg.check_defaults)
        if zone is None:
            broken.append((path, mine))
        elif zone.origin == origin:
            found.append(zone)
    text = names.to_text(origin)
    if len(found) > 1:
        raise DnssecCommandError(f"zone {text} is defined in more than one file: "
                                 f"{', '.join(z.file for z in found)}")
    if found:
        return found[0]
    named = [p for path, p in broken if _named_for(path) == origin]
    for p in named:  # most likely the zone itself, which cannot be loaded
        problems.extend(p)
    if named:
        return None
    more = (f"; {len(broken)} zone file(s) there cannot be loaded (geodns check says why)"
            if broken else "")
    raise DnssecCommandError(f"no zone {text} in {cfg.zones_dir}{more}")


def _zone_files(directory: Path) -> list[Path]:
    try:
        paths = sorted(directory.iterdir())
    except OSError:
        return []  # check_zones_dir has said why
    return [p for p in paths if p.name.endswith(ZONE_SUFFIXES) and not p.name.startswith(".")
            and p.is_file()]


def _named_for(path: Path) -> bytes | None:
    try:
        return names.from_text(origin_from_filename(path)).lower()
    except names.NameError_:
        return None


def zone_keys(cfg: Config, zone: Zone, problems: Problems) -> tuple[ZoneKey, ...] | None:
    """The zone's keys, loaded from the keys directory as a snapshot loads
    them; None with problems at the lines of ``dnssec: keys:``."""
    if zone.dnssec is None:
        raise DnssecCommandError(f"zone {names.to_text(zone.origin)} ({zone.file}) has no "
                                 "dnssec: setting: it is not signed, and its parent needs no "
                                 "DS for it")
    return resolve(zone.dnssec, read_keys(cfg.keys_dir), problems)


def parent_records(origin: bytes, keys: Sequence[ZoneKey], digest_type: int = 2,
                   dnskey: bool = False) -> list[str]:
    """The DS records (presentation form, without a TTL: the parent sets
    its own) of every key-signing key (role ksk or csk, signing or only
    published), then with ``dnskey`` their DNSKEY records."""
    owner = names.to_text(origin)
    ksks = [k.key for k in keys if k.key.signs_keys]
    lines = [f"{owner} IN DS {ds_text(ds_rdata(origin, k.dnskey, digest_type))}" for k in ksks]
    if dnskey:
        lines += [f"{owner} IN DNSKEY {dnskey_text(k.dnskey)}" for k in ksks]
    return lines


__all__ = ["DIGEST_TYPES", "DnssecCommandError", "UsageError", "check_file_name", "find_zone",
           "keygen", "loose_permissions", "parent_records", "role_from_name", "zone_keys",
           "zone_origin"]
