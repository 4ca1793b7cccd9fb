"""The fleet's documents as a :class:`geodns.snapshot.Source`, and the local
copy of the last set applied.

:class:`EtcdSource` hands the server the documents of the newest revision
the fleet member (:mod:`geodns.fleet.member`) has seen; nothing here does
I/O on etcd.  The *cache* is the last set of documents the node applied,
written after every swap: a node restarted while etcd is down serves it,
and says so.  It holds the fleet's DNSSEC private keys, so it is written
readable by its owner only (0600), as the keys directory's files are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from geodns.fleet.keys import Drain, FleetState, Layout
from geodns.snapshot import Document, Documents

log = logging.getLogger("geodns.fleet")

CACHE_FORMAT = 1


class EtcdSource:
    """Documents from the fleet store (the server polls this like files)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # Nothing yet: no configuration document, no zone, no key.
        self._latest: Documents = Documents("etcd:none", None, {})
        self._handed: str | None = None
        self._memo: dict[bytes, tuple[int, Document]] = {}

    @property
    def latest(self) -> Documents:
        return self._latest

    def offer(self, docs: Documents) -> None:
        """The newest documents (from etcd, or at start from the cache)."""
        self._latest = docs

    def offer_state(self, state: FleetState) -> Documents:
        docs = self.documents(state)
        self.offer(docs)
        return docs

    def poll(self, force: bool = False) -> Documents | None:
        docs = self._latest  # one read: the member may offer a newer set meanwhile
        if not force and docs.revision == self._handed:
            return None
        self._handed = docs.revision
        return docs

    def documents(self, state: FleetState) -> Documents:
        """The documents of ``state``, reusing the ones whose key has not
        been written since (their digests are not computed again)."""
        memo: dict[bytes, tuple[int, Document]] = {}

        def doc(key: bytes, text: bytes) -> Document:
            kv = state.docs[key]
            old = self._memo.get(key)
            made = old[1] if old is not None and old[0] == kv.mod_revision else \
                Document(self.layout.document_name(key), text)
            memo[key] = (kv.mod_revision, made)
            return made

        text = state.config_text()
        config = doc(self.layout.config, text) if text is not None else None
        zones = {}
        for name, body in sorted(state.zone_texts().items()):
            d = doc(self.layout.zone(name), body)
            zones[d.name] = d
        # By file name, as a keys directory's: the zones' dnssec: keys: name them so.
        keys = {name: doc(self.layout.key(name), body)
                for name, body in sorted(state.key_texts().items())}
        self._memo = memo
        return Documents(f"etcd:{state.docs_revision}", config, zones, keys=keys)


# -- the local copy --------------------------------------------------------------
def _b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def save_cache(path: Path, docs: Documents, drains: dict[str, Drain]) -> None:
    """Write the documents applied last, atomically (a crash leaves the old
    copy or the new one, never half of one), readable by the node's user
    only: it holds the private keys."""
    body: dict[str, Any] = {
        "format": CACHE_FORMAT, "revision": docs.revision, "saved_at": time.time(),
        "config": None if docs.config is None else
        {"name": docs.config.name, "text": _b64(docs.config.text)},
        "zones": {name: _b64(d.text) for name, d in docs.zones.items()},
        "keys": {name: {"name": d.name, "text": _b64(d.text)} for name, d in docs.keys.items()},
        "drains": {pop: d.to_json() for pop, d in drains.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        # mkstemp makes the file 0600 today; said here, not left to its
        # implementation, since the keys must never be readable by others.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class CacheError(Exception):
    pass


def load_cache(path: Path) -> tuple[Documents, dict[str, Drain], float]:
    """The documents a node applied last, its fleet drains, and when they
    were saved.  :class:`CacheError` says why a copy cannot be used;
    FileNotFoundError when there is none."""
    raw = path.read_bytes()
    try:
        body = json.loads(raw)
        if body.get("format") != CACHE_FORMAT:
            raise CacheError(f"{path}: format {body.get('format')!r}, expected {CACHE_FORMAT}")
        cfg = body.get("config")
        config = None if cfg is None else \
            Document(str(cfg["name"]), base64.b64decode(cfg["text"], validate=True))
        zones = {str(n): Document(str(n), base64.b64decode(t, validate=True))
                 for n, t in dict(body["zones"]).items()}
        # A copy saved before the fleet carried keys has none (and needed none).
        keys = {str(n): Document(str(k["name"]), base64.b64decode(k["text"], validate=True))
                for n, k in dict(body.get("keys") or {}).items()}
        drains = {}
        for pop, d in dict(body.get("drains") or {}).items():
            drain = Drain.from_json(d)
            if drain is not None:
                drains[str(pop)] = drain
        return (Documents(str(body["revision"]), config, zones, keys=keys), drains,
                float(body.get("saved_at", 0)))
    except CacheError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CacheError(f"{path}: not a geodns fleet cache: {exc}") from None


__all__ = ["CacheError", "EtcdSource", "load_cache", "save_cache"]
