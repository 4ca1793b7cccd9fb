"""Snapshots: everything a query needs, built whole and swapped in one step.

Theory of operation.  A *source* hands over documents: the server
configuration and the zone files, as bytes, with a revision that names that
set of documents (:class:`FileSource` reads them from disk today; a watched
key-value store can hand over the same thing).  :func:`build` turns documents
into a :class:`Snapshot` (the configuration, the zones, the compiled tables,
the GeoIP locator, the responder that serves them, and a :class:`Version`:
the source's revision and every zone's serial).  :func:`build` does no I/O
and keeps nothing: whatever it needs from before comes from the previous
snapshot, which it never changes.  The server swaps the new snapshot in with
one assignment, so a query, a scrape or an admin call sees either the old
snapshot or the new one, never a mix; and it retires what only the old one
used (a GeoIP reader) after the swap, never before.

The last good version of everything keeps serving:

* a zone document with problems is reported with file and line, and the
  zone's previous version stays in service (a new zone with problems is not
  served yet);
* a configuration document with problems is reported and the previous
  configuration stays in service, whole; so does one that would make a
  served zone invalid (a PoP a zone still uses, say);
* a GeoIP database that cannot be opened is reported and the previous
  reader stays in use.

Settings that cannot change in a running process (listen addresses, workers,
the admin address, the zones directory) are reported as needing a restart;
the running values stay.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from geodns import steermap
from geodns.collector import collector_paused
from geodns.compile import Tables, compile_zones
from geodns.config import Config, load_config_text, load_shared_config
from geodns.cookies import Cookies
from geodns.dnssec import policy as dnssec_policy
from geodns.dnssec.zonesign import with_keys
from geodns.geo import Locator, MaxMindLocator, bundled_database
from geodns.health.view import HealthView
from geodns.problems import Problem, Problems, Where
from geodns.querylog import SampledQueryLog
from geodns.steering import Steering
from geodns.wire import Responder
from geodns.zones.loader import ZONE_SUFFIXES, load_zone_text, origin_from_filename
from geodns.zones.model import Zone

log = logging.getLogger("geodns.zones")

Signature = tuple[int, int, int, int]  # mtime, size, inode, ctime (ns)
# A file modified less than this long ago may still be being written: it is
# left for the next look (unless a reload is forced), and a version read that
# young is read again once it has settled, so that two rewrites within one
# timestamp tick cannot hide the second.
SETTLE_NS = 100_000_000
# Builds the serving responder: (config, tables, steering, locator, health).
MakeResponder = Callable[[Config, Tables, Steering, Locator | None, HealthView], Responder]


def new_responder(config: Config, tables: Tables, steering: Steering, locator: Locator | None,
                  health: HealthView) -> Responder:
    """The responder a configuration asks for: with the sampled query log
    when ``log.query_sample`` is set (so that without it nothing is paid)."""
    cookies = None if config.cookies is None else Cookies(config.cookies.secrets)
    if config.query_sample > 0:
        return SampledQueryLog(tables, steering, locator, health,
                               every=max(1, round(1 / config.query_sample)), cookies=cookies)
    return Responder(tables, steering, locator, health, cookies)


def file_signature(path: str) -> Signature | None:
    """(mtime, size, inode, ctime) of a file, or None when it cannot be read:
    what tells the pollers that a file changed.  The ctime is there because
    anyone can set the mtime back (``touch -r``, ``cp -p``, rsync), but not
    the ctime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- sources -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Document:
    name: str  # a file path, or a key
    text: bytes
    digest: bytes = field(init=False, repr=False, compare=False)  # of the text, once

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", _digest(self.text))


@dataclass(frozen=True, slots=True)
class Documents:
    """One consistent set of documents from a source."""

    revision: str
    config: Document | None  # None: the configuration given at start stays
    zones: Mapping[str, Document]
    problems: tuple[Problem, ...] = ()  # documents that could not be read at all
    # DNSSEC private keys by file name (the keys directory), for zones with dnssec:.
    keys: Mapping[str, Document] = field(default_factory=dict)

    def keys_digest(self) -> bytes:
        return _digest(b"".join(n.encode() + b"\0" + self.keys[n].digest
                                for n in sorted(self.keys)))


class Source(Protocol):
    """Where configuration and zones come from."""

    def poll(self, force: bool = False) -> Documents | None:
        """The documents, or None when nothing changed since the last poll.
        With ``force`` every document is read again now."""
        ...


class FileSource:
    """The configuration file and the zone files of one directory."""

    def __init__(self, config_path: Path | None, zones_dir: Path,
                 keys_dir: Path | None = None) -> None:
        self.config_path = config_path
        self.zones_dir = zones_dir
        self.keys_dir = keys_dir
        # Per file: the signature of the version read (None: read it again),
        # and that version.
        self._read: dict[str, tuple[Signature | None, Document]] = {}
        self._last: Documents | None = None

    def _scan(self) -> dict[str, Signature] | None:
        found: dict[str, Signature] = {}
        try:
            entries = list(os.scandir(self.zones_dir))
        except OSError as exc:
            log.error("cannot read zones directory %s: %s", self.zones_dir, exc)
            return None
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(ZONE_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:
                continue
            found[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
        return found

    def _read_file(self, path: str, sig: Signature | None, force: bool,
                   problems: list[Problem]) -> Document | None:
        """The file's current version, or the one read before when it has
        not changed, is still settling, or cannot be read now."""
        known = self._read.get(path)
        if known is not None and known[0] is not None and known[0] == sig and not force:
            return known[1]
        now = time.time_ns()
        if sig is not None and not force and now - sig[0] < SETTLE_NS:
            return known[1] if known else None  # still being written, most likely
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            problems.append(Problem(Where(path, 1, 1), f"cannot read: {exc}"))
            return known[1] if known else None
        after = file_signature(path)
        if after != sig and not force:
            return known[1] if known else None  # changed while we read it
        doc = Document(path, data)
        # A version read while young may be followed by a rewrite within the
        # same timestamp tick: read it again next time.
        settled = after is not None and now - after[0] >= SETTLE_NS
        self._read[path] = (after if settled else None, doc)
        return doc

    def poll(self, force: bool = False) -> Documents | None:
        problems: list[Problem] = []
        found = self._scan()
        zones: dict[str, Document] = {}
        if found is None:  # the directory cannot be read: keep what was read
            zones = dict(self._last.zones) if self._last else {}
        else:
            for path in sorted(found):
                doc = self._read_file(path, found[path], force, problems)
                if doc is not None:
                    zones[path] = doc
            key_paths = self._key_paths()
            for path in [p for p in self._read if p not in found and p not in key_paths
                         and p != str(self.config_path)]:
                del self._read[path]
        config = None
        if self.config_path is not None:
            path = str(self.config_path)
            config = self._read_file(path, file_signature(path), force, problems)
        keys = self._keys(force, problems)
        revision = _revision(config, {**zones, **{f"key:{n}": d for n, d in keys.items()}})
        docs = Documents(revision, config, zones, tuple(problems), keys)
        if not force and self._last is not None and self._last.revision == revision:
            return None
        self._last = docs
        return docs


    def _key_paths(self, problems: list[Problem] | None = None) -> set[str]:
        """The keys directory's private keys (``*.pem``); none when there is
        no such directory."""
        if self.keys_dir is None:
            return set()
        try:
            return {e.path for e in os.scandir(self.keys_dir)
                    if e.name.endswith(".pem") and not e.name.startswith(".")}
        except FileNotFoundError:
            return set()
        except OSError as exc:
            if problems is not None:
                problems.append(Problem(Where(str(self.keys_dir), 1, 1), f"cannot read: {exc}"))
            return set()

    def _keys(self, force: bool, problems: list[Problem]) -> dict[str, Document]:
        """The private keys by file name."""
        keys = {}
        for path in sorted(self._key_paths(problems)):
            doc = self._read_file(path, file_signature(path), force, problems)
            if doc is not None:
                keys[Path(path).name] = Document(Path(path).name, doc.text)
        return keys


def _revision(config: Document | None, zones: Mapping[str, Document]) -> str:
    h = hashlib.sha256()
    for doc in ([config] if config else []) + [zones[k] for k in sorted(zones)]:
        h.update(doc.name.encode() + b"\0" + doc.digest)
    return "files:" + h.hexdigest()[:12]


# -- GeoIP --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GeoipStatus:
    path: str | None = None
    description: str | None = None
    database_type: str | None = None
    build_epoch: int | None = None
    error: str | None = None


class GeoipSource:
    """Opens the GeoIP database when its file (or the configured path)
    changes.  Never closes a reader: the server retires the old one after
    the snapshot that used it has been swapped out."""

    def __init__(self) -> None:
        self.locator: Locator | None = None
        self.status = GeoipStatus()
        self._key: tuple[object, ...] | None = None

    def poll(self, config: Config, force: bool = False, wanted: bool | None = None) -> bool:
        """Open the database ``config`` names if it changed (and, unless
        ``wanted`` says otherwise, only when it has PoPs); True when that
        changed what a snapshot shows (a new reader, or a new error).  A
        database that cannot be opened is reported in :attr:`status` and
        the previous reader stays."""
        if not (config.pops if wanted is None else wanted):
            return False
        path = config.geoip_database or bundled_database()
        asn = config.geoip_asn_database
        key = (path, asn, file_signature(str(path)) if path else None,
               file_signature(str(asn)) if asn else None)
        if key == self._key and not force:
            return False
        self._key = key
        before = self.status
        if path is None:
            self.status = replace(self.status, error="no GeoIP database: set geoip.database "
                                  "or install maxminddb-geolite2")
            return self.status != before
        try:
            locator = MaxMindLocator(path, asn)
        except Exception as exc:  # maxminddb raises several kinds
            self.status = replace(self.status, error=f"{path}: {exc}")
            return self.status != before
        self.locator = locator
        self.status = GeoipStatus(str(path), locator.description, locator.database_type,
                                  locator.build_epoch, None)
        return True


def open_geoip(config: Config, wanted: bool | None = None) -> tuple[Locator | None, str | None]:
    """The database a configuration names, opened, or why it cannot be
    (``geodns check`` and start-up use this same test)."""
    source = GeoipSource()
    source.poll(config, wanted=wanted)
    return source.locator, source.status.error


# -- snapshots ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ZoneEntry:
    """One zone document and the version of it that is served."""

    name: str  # the document (file) name
    zone: Zone | None  # the version served (None: never loaded)
    digest: bytes | None  # of the document last read, served or not
    loaded_at: float | None = None
    errors: tuple[Problem, ...] = ()
    keys_digest: bytes | None = None  # of the keys a signed zone was loaded with


@dataclass(frozen=True, slots=True)
class Version:
    """What a snapshot serves: the source's revision and each zone's serial."""

    revision: str
    serials: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        zones = ", ".join(f"{z} {s}" for z, s in sorted(self.serials.items()))
        return f"{self.revision} ({zones or 'no zones'})"


@dataclass(frozen=True, slots=True)
class Refused:
    """A revision that was not served because a document of it has problems
    (a fleet serves a revision whole or not at all)."""

    revision: str
    problems: tuple[Problem, ...]
    at: float


@dataclass(frozen=True)
class Snapshot:
    version: Version
    config: Config  # never changed once built: a reload builds a new one
    config_digest: bytes | None
    config_errors: tuple[Problem, ...]  # the configuration document's, when not served
    restart_needed: tuple[str, ...]  # settings changed on disk that need a restart
    zones: Mapping[str, ZoneEntry]
    steering: Steering
    tables: Tables
    locator: Locator | None
    geoip: GeoipStatus
    responder: Responder
    built_at: float
    reloads_ok: int = 0  # zone documents loaded, since start
    reloads_failed: int = 0
    last_success: float | None = None  # wall clock of the last zone document loaded
    refused: Refused | None = None  # the newest revision, when it was not served

    def served(self) -> list[Zone]:
        return [e.zone for e in self.zones.values() if e.zone is not None]

    def errors(self) -> list[Problem]:
        refused = list(self.refused.problems) if self.refused is not None else []
        return refused + list(self.config_errors) + \
            [p for e in self.zones.values() for p in e.errors]


@dataclass(frozen=True, slots=True)
class Change:
    """Something a build did, for the log and the event log."""

    kind: str  # "reload" or "reload-error" (the status page's event kinds)
    message: str
    extra: Mapping[str, object] = field(default_factory=dict)
    warning: bool = False  # logged as a warning rather than as the kind says


@dataclass(frozen=True, slots=True)
class Built:
    snapshot: Snapshot
    changes: tuple[Change, ...]


# Settings a running process cannot take in place.
RESTART_ONLY = {"listen": "listen addresses", "workers": "workers",
                "admin": "the admin address", "zones_dir": "the zones directory",
                "keys_dir": "the keys directory",
                "state_file": "admin.state_file", "log_format": "log.format",
                "fleet": "fleet", "control_socket": "lifecycle.control_socket",
                "anycast": "anycast", "user": "user"}


def parse_config(doc: Document, given: Config) -> tuple[Config, Problems]:
    """A configuration document, with the command line's overrides (kept in
    ``given.overrides``) applied as they were at start.  For a node of a
    fleet the document is the fleet's shared configuration, applied to the
    node's own (``given``)."""
    problems = Problems()
    base = Path(doc.name).parent
    try:
        text = doc.text.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(Where(doc.name, 1, 1), f"cannot read: {exc}")
        return given, problems
    if given.fleet is not None:
        return load_shared_config(text, doc.name, given, problems), problems
    cfg = load_config_text(text, doc.name, base, problems)
    cfg.path = given.path
    for key, value in given.overrides.items():
        setattr(cfg, key, value)
    cfg.overrides = dict(given.overrides)
    return cfg, problems


@dataclass(frozen=True, slots=True)
class ConfigRead:
    """A configuration document read because it changed: the configuration
    it holds (None when it has problems, which are listed), not yet checked
    against the zones."""

    digest: bytes
    candidate: Config | None
    problems: tuple[Problem, ...]


def read_config(docs: Documents, given: Config, previous: Snapshot | None
                ) -> ConfigRead | None:
    """The configuration document of ``docs``, parsed if it changed since
    ``previous`` (None: no document, or the same as before)."""
    if docs.config is None or (previous is not None
                               and docs.config.digest == previous.config_digest):
        return None
    parsed, problems = parse_config(docs.config, given)
    return ConfigRead(docs.config.digest, None if problems else parsed, tuple(problems))


def restart_needed(running: Config, new: Config) -> tuple[str, ...]:
    return tuple(f"{what} changed in the configuration: needs a restart "
                 f"(still {_show(getattr(running, key))})"
                 for key, what in RESTART_ONLY.items()
                 if getattr(running, key) != getattr(new, key))


def _show(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


_UNREAD = ConfigRead(b"", None, ())


def build(docs: Documents, given: Config, previous: Snapshot | None,
          geoip: tuple[Locator | None, GeoipStatus], health: HealthView,
          make_responder: MakeResponder, now: float,
          running: Config | None = None, config_read: ConfigRead | None = _UNREAD,
          whole: bool = False) -> Built:
    """See :func:`_build` (the same, with the cyclic collector paused)."""
    with collector_paused():
        return _build(docs, given, previous, geoip, health, make_responder, now, running,
                      config_read, whole)


def _build(docs: Documents, given: Config, previous: Snapshot | None,
           geoip: tuple[Locator | None, GeoipStatus], health: HealthView,
           make_responder: MakeResponder, now: float,
           running: Config | None, config_read: ConfigRead | None,
           whole: bool) -> Built:
    """A new snapshot from documents.  ``given`` is the configuration the
    process started with (used when there is no configuration document, or
    none has been good yet); ``running`` the one whose restart-only settings
    are in effect; ``config_read`` what :func:`read_config` made of the
    configuration document, when the caller has read it already.  With
    ``whole`` (a fleet's revisions), a set of documents with any problem is
    not served at all: the previous snapshot stays, marked with the revision
    refused.  Pure: no I/O, nothing outside the result is changed."""
    changes: list[Change] = []
    running = running or given
    if config_read is _UNREAD:
        config_read = read_config(docs, given, previous)

    # The configuration: the document's if it changed and is good.
    config = previous.config if previous is not None else given
    digest = previous.config_digest if previous is not None else None
    config_errors = previous.config_errors if previous is not None else ()
    candidate: Config | None = None
    candidate_digest = b""
    if config_read is not None:
        candidate, candidate_digest = config_read.candidate, config_read.digest
        if candidate is None:
            config_errors = config_read.problems
            digest = config_read.digest
            _report(changes, config_errors, "configuration not applied",
                    "the previous configuration stays in service" if previous else "")
    for problem in docs.problems:
        changes.append(Change("reload-error", str(problem)))

    zones, counts = _zones(docs, candidate or config, previous, now,
                           rebuild_all=candidate is not None)
    if candidate is not None:
        # A configuration change must leave every served zone valid.
        # (A zone document that validated before and has not changed, but
        # does not validate against the new configuration.)
        broken = [p for name, entry in zones.items() if entry.errors
                  and previous is not None and name in previous.zones
                  and not previous.zones[name].errors
                  and previous.zones[name].digest == entry.digest
                  for p in entry.errors]
        if broken:
            config_errors = tuple(broken)
            digest = candidate_digest
            _report(changes, config_errors, "configuration not applied: it would stop a "
                    "served zone", "the previous configuration stays in service")
            zones, counts = _zones(docs, config, previous, now, rebuild_all=True)
        else:
            config, digest, config_errors = candidate, candidate_digest, ()
            changes.append(Change("reload", f"configuration loaded from "
                                  f"{docs.config.name if docs.config else '?'}",
                                  {"event": "config-loaded"}))
    for entry in zones.values():
        if entry.errors and (previous is None or entry.errors
                             != previous.zones.get(entry.name, _NO_ENTRY).errors
                             or entry.digest != previous.zones[entry.name].digest):
            kept = "" if entry.zone is None else f"serial {entry.zone.serial} stays in service"
            _report(changes, entry.errors, "zone not loaded", kept)
    _zone_changes(changes, previous, zones)

    served = [e.zone for e in zones.values() if e.zone is not None]
    specs = {(owner, rtype): spec for z in served
             for owner, types in z.steered.items() for rtype, spec in types.items()}
    steering = Steering(config.pops, config.default_order, config.latency, specs)
    tables = compile_zones(served, config.udp_payload, config.chaos(),
                           previous.tables if previous is not None else None, now)
    _signing_changes(changes, previous, tables)
    locator, geo_status = geoip
    steermap.attach(steering, locator, previous.steering if previous is not None else None)
    _geoip_changes(changes, previous.geoip if previous is not None else GeoipStatus(),
                   geo_status, locator is not None)
    restart = restart_needed(running, config)
    if restart != (previous.restart_needed if previous is not None else ()):
        changes += [Change("reload-error", m, {"event": "restart-needed"}, warning=True)
                     for m in restart]
    if whole and previous is not None:
        problems = tuple(config_read.problems if config_read is not None else ()) + \
            tuple(config_errors if config is not candidate and candidate is not None else ()) + \
            tuple(p for e in zones.values() for p in e.errors)
        if problems:
            return _refuse(docs, previous, problems, now)
    responder = make_responder(config, tables, steering, locator, health)
    serials = {z.name: z.serial for z in served}
    ok, failed = counts
    snap = Snapshot(
        version=Version(docs.revision, serials), config=config, config_digest=digest,
        config_errors=config_errors, restart_needed=restart,
        zones=zones, steering=steering, tables=tables, locator=locator, geoip=geo_status,
        responder=responder, built_at=now,
        reloads_ok=(previous.reloads_ok if previous else 0) + ok,
        reloads_failed=(previous.reloads_failed if previous else 0) + failed,
        last_success=now if ok else (previous.last_success if previous else None))
    return Built(snap, tuple(changes))


_NO_ENTRY = ZoneEntry("", None, None)


def _refuse(docs: Documents, previous: Snapshot, problems: tuple[Problem, ...],
            now: float) -> Built:
    changes: list[Change] = []
    _report(changes, problems, f"revision {docs.revision} not served",
            f"still serving {previous.version.revision}")
    known = previous.refused
    if known is not None and known.revision == docs.revision and known.problems == problems:
        changes = []  # reported already
    return Built(replace(previous, refused=Refused(docs.revision, problems, now)),
                 tuple(changes))


def _zones(docs: Documents, config: Config, previous: Snapshot | None, now: float,
           rebuild_all: bool) -> tuple[dict[str, ZoneEntry], tuple[int, int]]:
    """Every zone document checked against ``config``: a document read
    before and unchanged keeps its entry, unless the configuration it is
    checked against changed (``rebuild_all``)."""
    out: dict[str, ZoneEntry] = {}
    ok = failed = 0
    origins: dict[bytes, str] = {}
    keys_digest = docs.keys_digest()
    for name in sorted(docs.zones):
        doc = docs.zones[name]
        old = previous.zones.get(name) if previous is not None else None
        if old is not None and old.digest == doc.digest and not rebuild_all and (
                old.keys_digest is None or old.keys_digest == keys_digest):
            entry = old
        else:
            problems = Problems()
            zone = _load_zone(doc, config, problems, old.zone if old is not None else None)
            if zone is not None and zone.dnssec is not None:
                keys = dnssec_policy.resolve(zone.dnssec, {n: d.text for n, d in
                                                           docs.keys.items()}, problems)
                zone = None if keys is None else with_keys(zone, keys)
            if zone is None:
                failed += 1
                entry = ZoneEntry(name, old.zone if old else None, doc.digest,
                                  old.loaded_at if old else None, tuple(problems))
            else:
                ok += 1
                kept = old.zone if old is not None and old.zone == zone else zone
                entry = ZoneEntry(name, kept, doc.digest,
                                  old.loaded_at if old is not None and old.zone == zone
                                  else now, keys_digest=keys_digest if zone.dnssec else None)
        served = entry.zone
        if served is not None:
            clash = origins.get(served.origin)
            if clash is not None:
                problem = Problem(Where(name, 1, 1), f"zone {served.name} is already "
                                  f"served from {clash}; one file per zone")
                entry = replace(entry, zone=None, errors=(*entry.errors, problem))
            else:
                origins[served.origin] = name
        out[name] = entry
    return out, (ok, failed)


def _load_zone(doc: Document, config: Config, problems: Problems,
               previous: Zone | None = None) -> Zone | None:
    """A zone document loaded and checked; ``previous``, the version of it
    served now, lends the records of the entries that did not change."""
    try:
        text = doc.text.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(Where(doc.name, 1, 1), f"cannot read: {exc}")
        return None
    return load_zone_text(text, doc.name, origin_from_filename(Path(doc.name)), problems,
                          pops=config.pops, check_defaults=config.check_defaults,
                          previous=previous, raw=doc.text)


def _signing_changes(changes: list[Change], previous: Snapshot | None, tables: Tables) -> None:
    """Signed zones compiled by this build: how many signatures were made
    (the others were still good and kept), and when they are due again."""
    for origin, part in tables.parts.items():
        old = previous.tables.parts.get(origin) if previous is not None else None
        if part.signer is None or part is old:
            continue
        what = "signed" if old is None or old.zone is not part.zone else "signatures refreshed"
        changes.append(Change("reload", f"{what}: {part.zone.name} ({part.signer.made} "
                              f"signatures made, {len(part.signer.memo)} record sets signed; "
                              f"due again {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(part.due))})",
                              {"event": "signed", "zone": part.zone.name,
                               "made": part.signer.made}))


def _report(changes: list[Change], problems: tuple[Problem, ...], what: str, kept: str) -> None:
    first = str(problems[0]) if problems else what
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    changes.append(Change("reload-error", f"{what}: {first}{more}" + (f"; {kept}" if kept
                                                                        else ""),
                          {"event": "reload-error", "problems": [str(p) for p in problems]}))


def _geoip_changes(changes: list[Change], old: GeoipStatus, new: GeoipStatus,
                   serving: bool) -> None:
    if new.error is not None and new.error != old.error:
        kept = "; keeping the previous one" if serving else ""
        changes.append(Change("reload-error", f"GeoIP database not loaded: {new.error}{kept}",
                              {"event": "geoip-error"}))
    elif new.error is None and new.description is not None and (
            old.error is not None or new.description != old.description):
        changes.append(Change("reload", f"GeoIP database loaded: {new.description}",
                              {"event": "geoip-loaded", "file": new.path}))


def _zone_changes(changes: list[Change], previous: Snapshot | None,
                  zones: Mapping[str, ZoneEntry]) -> None:
    before = previous.zones if previous is not None else {}
    for name, entry in zones.items():
        old = before.get(name)
        if entry.zone is not None and (old is None or old.zone is not entry.zone):
            changes.append(Change("reload", f"loaded zone {entry.zone.name} from {name} "
                                  f"(serial {entry.zone.serial})",
                                  {"event": "zone-loaded", "zone": entry.zone.name,
                                   "file": name, "serial": entry.zone.serial}))
    for name, old in before.items():
        if name not in zones and old.zone is not None:
            changes.append(Change("reload", f"zone file {name} removed: no longer serving "
                                  f"{old.zone.name}", {"event": "zone-removed",
                                                       "zone": old.zone.name, "file": name}))


__all__ = [
    "Built",
    "Change",
    "ConfigRead",
    "Document",
    "Documents",
    "FileSource",
    "GeoipSource",
    "GeoipStatus",
    "Snapshot",
    "Source",
    "Version",
    "ZoneEntry",
    "build",
    "file_signature",
    "new_responder",
    "open_geoip",
    "parse_config",
    "read_config",
]
