"""The zone store: the last good version of every zone file, and the
snapshot (compiled tables + responder) built from them.

Theory of operation: :meth:`ZoneStore.refresh` looks at the zone directory,
loads every file whose (mtime, size, inode) changed, and keeps, per file,
the last version that validated.  A file with problems is reported and its
previous version keeps serving; a new file with problems is simply not
served yet.  When anything changed, a complete new :class:`Snapshot` is
compiled and returned; the server swaps it in with one assignment, so a
query sees either the old snapshot or the new one, never a mix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from geodns.compile import DEFAULT_UDP_PAYLOAD, Tables, compile_zones
from geodns.geo import Locator, MaxMindLocator
from geodns.status import RELOAD, RELOAD_ERROR, EventLog
from geodns.steering import StaticHealth, Steering
from geodns.wire import Responder
from geodns.yamlsrc import Problem, Problems, Where
from geodns.zones.loader import ZONE_SUFFIXES, load_zone_file
from geodns.zones.model import Zone

log = logging.getLogger("geodns.zones")

Signature = tuple[int, int, int]
# A file modified less than this long ago is left for the next look.
SETTLE_NS = 100_000_000


def file_signature(path: str) -> Signature | None:
    """(mtime, size, inode) of a file, or None when it cannot be read: what
    tells the pollers that a file changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class ZoneState:
    zone: Zone | None  # the version being served (None: never loaded)
    signature: Signature | None  # of the file version last *read*
    loaded_at: float | None = None
    errors: list[Problem] = field(default_factory=list)


@dataclass
class Snapshot:
    responder: Responder
    zones: dict[str, Zone]  # file -> zone served
    built_at: float


class ZoneStore:
    def __init__(self, directory: Path, payload: int = DEFAULT_UDP_PAYLOAD,
                 chaos: dict[str, str] | None = None, steering: Steering | None = None,
                 geoip: Path | None = None, health: StaticHealth | None = None,
                 geoip_asn: Path | None = None,
                 check_defaults: dict[str, float] | None = None,
                 events: EventLog | None = None,
                 make_responder: Callable[[Tables, Steering, Locator | None, StaticHealth],
                                          Responder] = Responder) -> None:
        self.directory = directory
        self.payload = payload
        self.chaos = chaos or {}
        self.steering = steering or Steering({})
        self.health = health or StaticHealth()
        self.geoip_path = geoip
        self.geoip_asn_path = geoip_asn
        self.check_defaults = check_defaults
        self.geoip_signature: tuple[Signature | None, Signature | None] | None = None
        self.locator: Locator | None = None
        self.geoip_error: str | None = None
        self.files: dict[str, ZoneState] = {}
        self.snapshot: Snapshot | None = None
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_success: float | None = None  # wall clock of the last file loaded
        self.events = events or EventLog()
        self.make_responder = make_responder  # Responder, or one that also logs queries

    def _scan(self) -> dict[str, Signature]:
        found: dict[str, Signature] = {}
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.error("cannot read zones directory %s: %s", self.directory, exc)
            return {k: v.signature for k, v in self.files.items() if v.signature}
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(ZONE_SUFFIXES):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if entry.is_file():
                found[entry.path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    def _refresh_geoip(self, force: bool) -> bool:
        """Open the GeoIP database if its file changed.  A file that cannot be
        opened is reported and the previous reader stays in use."""
        if self.geoip_path is None or not self.steering.pops:
            return False
        sig = (file_signature(str(self.geoip_path)),
               file_signature(str(self.geoip_asn_path)) if self.geoip_asn_path else None)
        if sig == self.geoip_signature and not force:
            return False
        self.geoip_signature = sig
        try:
            locator = MaxMindLocator(self.geoip_path, self.geoip_asn_path)
        except Exception as exc:  # maxminddb raises several kinds
            self.geoip_error = f"{self.geoip_path}: {exc}"
            log.error("GeoIP database not loaded: %s%s", self.geoip_error,
                      "; keeping the previous one" if self.locator else
                      "; clients will get the default PoP order")
            self.events.add(RELOAD_ERROR, f"GeoIP database not loaded: {self.geoip_error}")
            return False
        old = self.locator
        self.locator = locator
        self.geoip_error = None
        log.info("GeoIP database loaded: %s", locator.description,
                 extra={"event": "geoip-loaded", "file": str(self.geoip_path)})
        self.events.add(RELOAD, f"GeoIP database loaded: {locator.description}")
        if isinstance(old, MaxMindLocator):
            old.close()
        return True

    def refresh(self, force: bool = False) -> Snapshot | None:
        """Re-read changed zone files (and the GeoIP database).  Returns a new
        snapshot when what is served changed, else None.  Never raises for
        bad zone content."""
        found = self._scan()
        changed = self._refresh_geoip(force)
        for path in sorted(found):
            sig = found[path]
            state = self.files.get(path)
            if state is not None and state.signature == sig and not force:
                continue
            if not force and time.time_ns() - sig[0] < SETTLE_NS:
                continue  # still being written, most likely: look again next time
            problems = Problems()
            zone = load_zone_file(Path(path), problems, pops=self.steering.pops,
                                  check_defaults=self.check_defaults)
            if file_signature(path) != sig:
                continue  # changed while we read it: read it again next time
            if zone is not None:
                clash = self._origin_clash(path, zone)
                if clash:
                    problems.add(Where(path, 1, 1), f"zone {zone.name} is already served from "
                                 f"{clash}; one file per zone")
                    zone = None
            if state is None:
                state = self.files[path] = ZoneState(None, None)
            state.signature = sig
            if zone is None:
                state.errors = list(problems)
                self.reloads_failed += 1
                for p in problems:
                    log.error("zone not loaded: %s", p,
                              extra={"event": "reload-error", "file": p.where.file,
                                     "line": p.where.line, "column": p.where.column,
                                     "problem": p.message})
                kept = ""
                if state.zone is not None:
                    log.warning("%s: keeping the previous version (serial %d) in service",
                                path, state.zone.serial)
                    kept = f"; serial {state.zone.serial} stays in service"
                first = str(state.errors[0]) if state.errors else path
                more = f" (and {len(state.errors) - 1} more)" if len(state.errors) > 1 else ""
                self.events.add(RELOAD_ERROR, f"{first}{more}{kept}")
                continue
            state.errors = []
            if state.zone is None or state.zone != zone:
                log.info("loaded zone %s from %s (serial %d)", zone.name, path, zone.serial,
                         extra={"event": "zone-loaded", "zone": zone.name, "file": path,
                                "serial": zone.serial})
                self.events.add(RELOAD, f"loaded zone {zone.name} from {path} "
                                        f"(serial {zone.serial})")
            state.zone = zone
            state.loaded_at = self.last_success = time.time()
            self.reloads_ok += 1
            changed = True
        for path in [p for p in self.files if p not in found]:
            state = self.files.pop(path)
            if state.zone is not None:
                log.info("zone file %s removed: no longer serving %s", path, state.zone.name)
                self.events.add(RELOAD, f"zone file {path} removed: no longer serving "
                                        f"{state.zone.name}")
                changed = True
        if not changed and self.snapshot is not None and not force:
            return None
        zones = {p: s.zone for p, s in self.files.items() if s.zone is not None}
        specs = {(owner, rtype): spec for z in zones.values()
                 for owner, types in z.steered.items() for rtype, spec in types.items()}
        steering = replace(self.steering, specs=specs)
        tables = compile_zones(zones.values(), self.payload, self.chaos)
        snap = Snapshot(self.make_responder(tables, steering, self.locator, self.health), zones,
                        time.time())
        self.snapshot = snap
        return snap

    def _origin_clash(self, path: str, zone: Zone) -> str | None:
        for other, state in self.files.items():
            if other != path and state.zone is not None and state.zone.origin == zone.origin:
                return other
        return None

    def errors(self) -> list[Problem]:
        return [p for s in self.files.values() for p in s.errors]
