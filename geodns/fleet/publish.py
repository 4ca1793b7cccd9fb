"""Publishing to the fleet, and looking at it: ``geodns publish``,
``geodns fleet`` and fleet-wide drains from the command line.

Publishing validates every document first (as ``geodns check`` does), then
writes the whole change in one etcd transaction guarded by compare-and-swap:
it compares every document key it read (and ``published``) with the
revision it read it at, so two publishers cannot interleave and a publisher
working from a stale read is told so and writes nothing.  Every publish
rewrites ``published`` (who, when, why), whose revision then names the set
the nodes serve.

A publish rides through an etcd leader election: its client tries every
member again for :data:`RETRY_FOR` seconds while they fail transiently
(:mod:`geodns.fleet.etcd`).  The transaction is sent again only as it was:
if an earlier attempt was applied but its answer lost, the comparisons of
the next one fail (``published`` changed), so it cannot apply twice; and
``published`` carries an id of this publish, which the transaction reads
when its comparisons fail, so that a publish that landed is reported as
published, not as stale.

The keys directory's DNSSEC private keys are documents like the zones
(``keys/NAME.pem``), so that every node signs with the same keys.  What
publish prints and records (the plan's lines, ``published``) names them and
gives their sizes, never their contents.
"""

from __future__ import annotations

import getpass
import json
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodns.config import Config, load_shared_config
from geodns.dnssec.policy import resolve
from geodns.fleet.etcd import (
    Etcd,
    KeyValue,
    decode_kv,
    delete_op,
    put_op,
    range_op,
    same_mod,
)
from geodns.fleet.keys import FleetState, Layout, behind, is_key_name
from geodns.health.states import State
from geodns.problems import Problems, Where
from geodns.zones.loader import ZONE_SUFFIXES, load_zone_text, origin_from_filename

# etcd's defaults (--max-txn-ops, --max-request-bytes): a change beyond them
# is refused by etcd; we say so before sending it.
ETCD_MAX_TXN_OPS = 128
ETCD_MAX_REQUEST_BYTES = 1_572_864
# Seconds a publish (and geodns fleet, a fleet drain from the command line)
# keeps trying etcd's members while they fail transiently, as during a leader
# election (1-3 s with etcd's defaults; a member that stops, a timeout inside
# etcd): long enough for an election or two, short enough for a CI job to say
# soon that etcd is down.  Each attempt on one member may take up to
# CLIENT_TIMEOUT on top, and a pass over the members is always made whole.
RETRY_FOR = 10.0
CLIENT_TIMEOUT = 5.0


def who_am_i() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class LocalDocs:
    config: bytes | None  # the shared configuration (None: leave etcd's as it is)
    zones: dict[str, bytes] | None  # by file name (None: leave etcd's as they are)
    keys: dict[str, bytes] | None = None  # private keys by file name (None: etcd's stay)


def read_local(config_path: Path | None, zones_dir: Path | None, problems: Problems,
               keys_dir: Path | None = None) -> LocalDocs:
    config = None
    if config_path is not None:
        try:
            config = config_path.read_bytes()
        except OSError as exc:
            problems.add(Where(str(config_path), 1, 1), f"cannot read: {exc}")
    zones: dict[str, bytes] | None = None
    if zones_dir is not None:
        zones = {}
        try:
            entries = sorted(zones_dir.iterdir())
        except OSError as exc:
            problems.add(Where(str(zones_dir), 1, 1), f"cannot read the zones directory: {exc}")
            entries = []
        for path in entries:
            if path.name.startswith(".") or not path.name.endswith(ZONE_SUFFIXES) or \
                    not path.is_file():
                continue
            try:
                zones[path.name] = path.read_bytes()
            except OSError as exc:
                problems.add(Where(str(path), 1, 1), f"cannot read: {exc}")
    keys: dict[str, bytes] | None = None
    if keys_dir is not None:
        keys = {}
        try:
            entries = sorted(keys_dir.iterdir())
        except OSError as exc:
            # Not "no keys": a mistyped directory would delete every key in etcd.
            problems.add(Where(str(keys_dir), 1, 1), f"cannot read the keys directory: "
                                                     f"{exc.strerror or exc}")
            entries = []
        for path in entries:
            if not is_key_name(path.name) or not path.is_file():
                continue
            try:
                keys[path.name] = path.read_bytes()
            except OSError as exc:
                problems.add(Where(str(path), 1, 1), f"cannot read: {exc.strerror or exc}")
    return LocalDocs(config, zones, keys)


def validate(config: tuple[str, bytes] | None, zones: Mapping[str, tuple[str, bytes]],
             problems: Problems, keys: Mapping[str, bytes] | None = None) -> Config:
    """Every problem of a fleet's documents, as a node would find them:
    ``config`` is (name, text) of the shared configuration, ``zones`` maps a
    zone document's key name to (name shown in problems, text), ``keys``
    the private keys by file name (a signed zone's keys are loaded as a
    node loads them: a missing or broken one is a problem at its line)."""
    # The settings each node keeps for itself are not known here; a latency
    # entry by ASN is checked by each node against its own geoip.asn_database.
    onto = Config(path=None, geoip_asn_database=Path("<each node's geoip.asn_database>"))
    cfg = onto
    if config is not None:
        name, text = config
        try:
            cfg = load_shared_config(text.decode("utf-8"), name, onto, problems)
        except UnicodeDecodeError as exc:
            problems.add(Where(name, 1, 1), f"cannot read: {exc}")
    origins: dict[bytes, str] = {}
    for key_name, (shown, body) in sorted(zones.items()):
        try:
            zone_text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(Where(shown, 1, 1), f"cannot read: {exc}")
            continue
        zone = load_zone_text(zone_text, shown, origin_from_filename(Path(key_name)), problems,
                              pops=cfg.pops, check_defaults=cfg.check_defaults)
        if zone is None:
            continue
        if zone.dnssec is not None:
            resolve(zone.dnssec, keys or {}, problems)
        if zone.origin in origins:
            problems.add(Where(shown, 1, 1), f"zone {zone.name} is also defined in "
                         f"{origins[zone.origin]}")
        origins[zone.origin] = shown
    return cfg


@dataclass
class Plan:
    revision: int  # the store revision everything was read at
    puts: dict[bytes, bytes] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    compare: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # what would change, for people
    published: dict[str, Any] = field(default_factory=dict)  # the last publish

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes


async def plan(etcd: Etcd, layout: Layout, local: LocalDocs) -> tuple[Plan, FleetState]:
    """What publishing ``local`` would change, from one read of etcd."""
    state = FleetState(layout)
    state.load(await etcd.range_prefix(layout.root))
    out = Plan(state.revision, published=state.published())
    docs: dict[bytes, KeyValue] = dict(state.docs)
    wanted: dict[bytes, bytes] = {}
    if local.config is not None:
        wanted[layout.config] = local.config
    # Zones and keys alike: a file no longer in its directory is deleted.
    for kind, files, where in (("zone", local.zones, layout.zone),
                               ("key", local.keys, layout.key)):
        if files is None:
            continue
        current = {k for k in docs if layout.split(k)[0] == kind}
        for name, body in files.items():
            wanted[where(name)] = body
        for key in sorted(current - {where(n) for n in files}):
            out.deletes.append(key)
            out.lines.append(f"delete {key.decode()}")
    # Names and sizes only: these lines are printed and kept in ``published``.
    for key, body in sorted(wanted.items()):
        old = docs.get(key)
        if old is None:
            out.lines.append(f"add    {key.decode()} ({len(body)} bytes)")
        elif old.value != body:
            out.lines.append(f"change {key.decode()} ({len(old.value)} -> {len(body)} bytes)")
        else:
            continue
        out.puts[key] = body
    for key in sorted(set(wanted) | set(docs) | {layout.published}):
        kv = docs.get(key)
        out.compare.append(same_mod(key, kv.mod_revision if kv is not None else 0))
    return out, state


class Stale(Exception):
    """etcd changed between the read and the write.  ``doubtful``: an
    earlier attempt of this write went unanswered, and whether it was
    applied before that change cannot be told."""

    def __init__(self, doubtful: bool = False) -> None:
        super().__init__()
        self.doubtful = doubtful


async def apply(etcd: Etcd, layout: Layout, p: Plan, who: str, message: str) -> int:
    """Write the plan in one transaction; the revision it made.  Raises
    :class:`Stale` when something it read has changed since (not when that
    change is this transaction itself, applied by an attempt whose answer
    was lost)."""
    publish_id = secrets.token_hex(8)
    meta = {"who": who, "when": time.time(), "message": message,
            "changes": p.lines, "based_on": p.revision, "id": publish_id}
    ops = [put_op(k, v) for k, v in p.puts.items()] + [delete_op(k) for k in p.deletes]
    ops.append(put_op(layout.published, json.dumps(meta).encode()))
    size = sum(len(k) + len(v) for k, v in p.puts.items()) * 4 // 3 + 4096
    if len(ops) > ETCD_MAX_TXN_OPS or size > ETCD_MAX_REQUEST_BYTES:
        raise ValueError(
            f"this change is {len(ops)} operations and about {size} bytes; etcd's default "
            f"limits are {ETCD_MAX_TXN_OPS} operations (--max-txn-ops) and "
            f"{ETCD_MAX_REQUEST_BYTES} bytes (--max-request-bytes) per transaction: raise "
            "them on every etcd member (docs/fleet.md)")
    # When the comparisons fail, read ``published``: is it this publish's?
    out = await etcd.txn_outcome(p.compare, ops, [range_op(layout.published)])
    if out.succeeded:
        return out.revision
    kvs = (out.responses[0].get("response_range") or {}).get("kvs") if out.responses else None
    if kvs:
        landed = decode_kv(kvs[0])
        try:
            theirs = json.loads(landed.value).get("id")
        except (ValueError, AttributeError):
            theirs = None
        if theirs == publish_id:  # an attempt whose answer was lost was applied
            return landed.mod_revision
    raise Stale(out.doubtful)


# -- looking at the fleet -----------------------------------------------------------
def describe(state: FleetState, now: float) -> tuple[list[str], int]:
    """``geodns fleet`` as lines of text, and how many nodes need attention
    (behind, refusing the newest revision, or with errors)."""
    lines = []
    newest = state.newest
    pub = state.published()
    if pub:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(pub.get("when", 0))))
        lines.append(f"published {newest} by {pub.get('who', '?')} at {when}"
                     + (f": {pub['message']}" if pub.get("message") else ""))
    else:
        lines.append("nothing published yet" if newest is None else f"newest {newest} "
                     "(written without geodns publish)")
    flagged = 0
    lines.append("")
    lines.append(f"{'NODE':<16} {'SERVING':<14} {'HEARD':>7} {'HEALTH':<7} NOTE")
    for name, doc in sorted(state.nodes.items()):
        heard = doc.get("heard_at")
        ago = f"{now - float(heard):.0f}s" if isinstance(heard, (int, float)) else "?"
        notes = []
        if behind(doc, newest):
            notes.append(f"BEHIND {newest}")
        if doc.get("refused"):
            notes.append(f"REFUSED {doc['refused']}")
        if doc.get("error_count"):
            notes.append(f"{doc['error_count']} error(s): {(doc.get('errors') or ['?'])[0]}")
        flagged += bool(notes)
        lines.append(f"{name:<16} {doc.get('revision')!s:<14} {ago:>7} "
                     f"{doc.get('health')!s:<7} {'; '.join(notes)}".rstrip())
    if not state.nodes:
        lines.append("(no node is connected)")
    if state.drains:
        lines.append("")
        for pop, d in sorted(state.drains.items()):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.when))
            lines.append(f"drain {pop}: {d.state} by {d.who} at {when}"
                         + (f": {d.why}" if d.why else ""))
    pops = sorted({p for v in state.votes.values() for p in v.states})
    split = []
    for pop in pops:
        votes = {n: v.probed(pop) for n, v in state.votes.items()}
        if len({s for s in votes.values() if s in (State.UP, State.DOWN)}) > 1:
            split.append(f"{pop}: " + ", ".join(f"{n} {s}" for n, s in sorted(votes.items())))
    if split:
        lines.append("")
        lines.append("nodes disagree on:")
        lines += [f"  {s}" for s in split]
    return lines, flagged


__all__ = ["CLIENT_TIMEOUT", "RETRY_FOR", "LocalDocs", "Plan", "Stale", "apply", "describe",
           "plan", "read_local", "validate", "who_am_i"]
