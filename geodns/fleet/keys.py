"""What a fleet keeps in etcd, and one node's picture of it.  Pure.

Under the fleet's prefix (``/geodns/`` unless configured)::

    config                 the shared configuration (YAML: health, pops, default_order, latency)
    zones/NAME.yaml        one zone document per key
    keys/NAME.pem          a DNSSEC private key (PEM) that signed zones name
                           in their dnssec: keys: (a secret: docs/fleet.md)
    published              who published last, when, why, and an id of that
                           publish (JSON); every publish rewrites it, so its
                           revision names the set
    drains/POP             a fleet-wide drain: state, who, when, why (JSON)
    nodes/NODE             what NODE serves and when it last heard from etcd
                           (JSON, under NODE's lease)
    votes/NODE             NODE's own verdict on every PoP and record (JSON,
                           under NODE's lease: a node that dies stops voting)

:class:`FleetState` is a node's copy of all of it, loaded from one read at
one revision and then changed by watch events in order.  The *documents
revision* (``etcd:N``) is the revision of the last change to the
configuration, the zones, the keys or ``published``: the same on every node
that has seen the same documents, whatever else (votes, status) changed
since.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from geodns.fleet.etcd import KeyValue, Range, WatchEvent
from geodns.health.states import State, parse_state
from geodns.health.view import HealthView

CONFIG_NAME = "config"
ZONES_DIR = "zones/"
KEYS_DIR = "keys/"
KEY_SUFFIX = ".pem"
# The kinds of key that are documents: what a node serves, named together by
# the documents revision.
DOCUMENT_KINDS = ("config", "zone", "key", "published")


def is_key_name(name: str) -> bool:
    """A key file's name as the keys directory holds it (``NAME.pem``, no
    path, not hidden): what ``geodns publish`` writes under ``keys/`` and
    what a node reads from there."""
    return name.endswith(KEY_SUFFIX) and len(name) > len(KEY_SUFFIX) and \
        not name.startswith(".") and "/" not in name


@dataclass(frozen=True, slots=True)
class Layout:
    prefix: str

    @property
    def root(self) -> bytes:
        return self.prefix.encode()

    @property
    def config(self) -> bytes:
        return (self.prefix + CONFIG_NAME).encode()

    def zone(self, name: str) -> bytes:
        return (self.prefix + ZONES_DIR + name).encode()

    def key(self, name: str) -> bytes:
        return (self.prefix + KEYS_DIR + name).encode()

    @property
    def published(self) -> bytes:
        return (self.prefix + "published").encode()

    def node(self, name: str) -> bytes:
        return (self.prefix + "nodes/" + name).encode()

    def votes(self, name: str) -> bytes:
        return (self.prefix + "votes/" + name).encode()

    def drain(self, pop: str) -> bytes:
        return (self.prefix + "drains/" + pop).encode()

    def split(self, key: bytes) -> tuple[str, str]:
        """(kind, name) of a key under the prefix: kind is config, zone,
        key (a ``keys/NAME.pem``), published, node, votes, drain or "" for
        a key we do not know."""
        text = key.decode("utf-8", "replace")
        if not text.startswith(self.prefix):
            return "", text
        rest = text[len(self.prefix):]
        if rest in (CONFIG_NAME, "published"):
            return rest, rest
        for kind, sub in (("zone", ZONES_DIR), ("key", KEYS_DIR), ("node", "nodes/"),
                          ("votes", "votes/"), ("drain", "drains/")):
            if rest.startswith(sub) and len(rest) > len(sub) and "/" not in rest[len(sub):]:
                name = rest[len(sub):]
                if kind == "key" and not is_key_name(name):
                    break  # the keys directory is read for *.pem files only
                return kind, name
        return "", rest

    def document_name(self, key: bytes) -> str:
        """How a document is named in problems and in /status."""
        return "etcd:" + key.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Drain:
    """A fleet-wide administrative state of one PoP."""

    state: State
    who: str
    when: float
    why: str

    @classmethod
    def now(cls, state: State, who: str, why: str) -> Drain:
        """A drain set now."""
        return cls(state, who, time.time(), why)

    def to_json(self) -> dict[str, Any]:
        return {"state": str(self.state), "who": self.who, "when": self.when, "why": self.why}

    @classmethod
    def from_json(cls, doc: Any) -> Drain | None:
        if not isinstance(doc, dict):
            return None
        state = parse_state(doc.get("state"))
        if state is None:
            return None
        try:
            when = float(doc.get("when", 0))
        except (TypeError, ValueError):
            when = 0.0
        return cls(state, str(doc.get("who", "?")), when, str(doc.get("why", "")))


def _json(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class FleetState:
    """Everything under the prefix, as of :attr:`revision`."""

    layout: Layout
    revision: int = 0  # the store revision seen last
    docs_revision: int = 0  # the last change to config, zones, keys or published
    docs: dict[bytes, KeyValue] = field(default_factory=dict)  # of DOCUMENT_KINDS
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    votes: dict[str, HealthView] = field(default_factory=dict)
    drains: dict[str, Drain] = field(default_factory=dict)
    vote_times: dict[str, float] = field(default_factory=dict)
    _now: float = field(default=0.0, repr=False, compare=False)
    # When this reader last saw each node write its status or votes (the
    # reader's own monotonic clock, given to load and apply).  A live node
    # rewrites its status every third of its lease time.
    seen: dict[str, float] = field(default_factory=dict)

    def load(self, read: Range, now: float = 0.0) -> set[str]:
        """Replace everything with one read; the kinds that changed (the
        documents always count as changed: the reader compares revisions)."""
        old_votes, old_drains = self.votes, self.drains
        self.seen = {}
        self._now = now
        old_docs, old_revision = self.docs, self.docs_revision
        self.docs, self.nodes, self.votes, self.drains = {}, {}, {}, {}
        self.docs_revision = 0
        for kv in read.kvs:
            self._put(kv)
        same = {k: v.mod_revision for k, v in old_docs.items()} == \
            {k: v.mod_revision for k, v in self.docs.items()}
        if same:
            self.docs_revision = max(self.docs_revision, old_revision)  # the name it had
        elif self.docs_revision <= old_revision:
            # A document deleted without a publish (which would have rewritten
            # ``published``) leaves no trace in a fresh read: name the new set
            # by the revision it was read at, never by one named before.
            self.docs_revision = read.revision
        self.revision = read.revision
        changed = {"nodes", "docs"}
        if old_votes != self.votes:
            changed.add("votes")
        if old_drains != self.drains:
            changed.add("drains")
        return changed

    def apply(self, revision: int, events: Iterable[WatchEvent], now: float = 0.0) -> set[str]:
        """Watch events, in order; the kinds that changed."""
        self._now = now
        changed = set()
        for event in events:
            kind = self._delete(event.kv.key) if event.deleted else self._put(event.kv)
            if kind in DOCUMENT_KINDS:
                self.docs_revision = max(self.docs_revision, event.kv.mod_revision)
                changed.add("docs")
            elif kind == "node":
                changed.add("nodes")
            elif kind == "votes":
                changed.add("votes")
            elif kind == "drain":
                changed.add("drains")
        self.revision = max(self.revision, revision)
        return changed

    def _put(self, kv: KeyValue) -> str:
        kind, name = self.layout.split(kv.key)
        if kind in DOCUMENT_KINDS:
            self.docs[kv.key] = kv
            self.docs_revision = max(self.docs_revision, kv.mod_revision)
        elif kind == "node":
            doc = _json(kv.value)
            self.seen[name] = self._now
            if isinstance(doc, dict):
                self.nodes[name] = doc
            else:  # unreadable: as a node reading everything again would see it
                self.nodes.pop(name, None)
        elif kind == "votes":
            doc = _json(kv.value)
            self.seen[name] = self._now
            try:
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                view = HealthView.from_json(doc.get("view") or {})
                at = float(doc.get("at", 0))
            except (TypeError, ValueError, AttributeError):
                # Unreadable votes are no votes (not the previous ones: a node
                # reading everything again would not have those).
                self.votes.pop(name, None)
                self.vote_times.pop(name, None)
            else:
                self.votes[name], self.vote_times[name] = view, at
        elif kind == "drain":
            drain = Drain.from_json(_json(kv.value))
            if drain is not None:
                self.drains[name] = drain
            else:
                self.drains.pop(name, None)
        return kind

    def _delete(self, key: bytes) -> str:
        kind, name = self.layout.split(key)
        if kind in DOCUMENT_KINDS:
            self.docs.pop(key, None)
        elif kind == "node":
            self.nodes.pop(name, None)
            self.seen.pop(name, None)
        elif kind == "votes":
            self.votes.pop(name, None)
            self.vote_times.pop(name, None)
        elif kind == "drain":
            self.drains.pop(name, None)
        return kind

    def silent(self, now: float, lease_ttl: float) -> set[str]:
        """Nodes this reader has not seen write for a lease time: dead, or
        cut off from etcd, even if etcd has not expired their lease yet (it
        checks expiries only every half second or so, and only after the
        whole lease time since the last renewal).  Their votes stop counting."""
        return {n for n, t in self.seen.items() if now - t > lease_ttl}

    # -- what the rest of geodns reads ------------------------------------------
    @property
    def newest(self) -> str | None:
        """The documents revision (``etcd:N``), None before anything was read."""
        return f"etcd:{self.docs_revision}" if self.docs_revision else None

    def config_text(self) -> bytes | None:
        kv = self.docs.get(self.layout.config)
        return kv.value if kv is not None else None

    def zone_texts(self) -> dict[str, bytes]:
        """Zone documents by name (``example.com.yaml``)."""
        return self._texts("zone")

    def key_texts(self) -> dict[str, bytes]:
        """DNSSEC private keys by file name (``example.com.ksk.pem``), as a
        keys directory holds them."""
        return self._texts("key")

    def _texts(self, wanted: str) -> dict[str, bytes]:
        out = {}
        for key, kv in self.docs.items():
            kind, name = self.layout.split(key)
            if kind == wanted:
                out[name] = kv.value
        return out

    def published(self) -> dict[str, Any]:
        kv = self.docs.get(self.layout.published)
        doc = _json(kv.value) if kv is not None else None
        return doc if isinstance(doc, dict) else {}

    def drain_states(self) -> Mapping[str, State]:
        return {pop: d.state for pop, d in self.drains.items()}


def behind(node: Mapping[str, Any], newest: str | None) -> bool:
    """Whether a node serves an older revision than the newest published
    (one that refused the newest is not behind: it says why)."""
    if newest is None:
        return False
    rev = revision_number(node.get("revision"))
    top = revision_number(newest)
    return rev is not None and top is not None and rev < top and \
        node.get("refused") != newest


def revision_number(text: object) -> int | None:
    if isinstance(text, str) and text.startswith("etcd:") and text[5:].isdigit():
        return int(text[5:])
    return None


__all__ = ["CONFIG_NAME", "DOCUMENT_KINDS", "Drain", "FleetState", "Layout", "behind",
           "is_key_name", "revision_number"]
