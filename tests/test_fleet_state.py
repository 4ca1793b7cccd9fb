"""A node's picture of the fleet store, without etcd: the key layout,
FleetState (one read, then watch events in order), EtcdSource (documents
handed to the server once per revision), the local cache, and snapshots
built whole (a fleet revision is served whole or not at all)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from geodns.config import Config, load_config_text
from geodns.fleet.etcd import KeyValue, Range, WatchEvent
from geodns.fleet.keys import Drain, FleetState, Layout
from geodns.fleet.source import CacheError, EtcdSource, load_cache, save_cache
from geodns.health.states import DOWN, DRAINING, UP
from geodns.health.view import HealthView
from geodns.problems import Problems
from geodns.snapshot import Document, Documents, GeoipStatus, Snapshot, build, new_responder

L = Layout("/geodns/")


def kv(key: bytes, value: bytes | str, rev: int, lease: int = 0) -> KeyValue:
    return KeyValue(key, value.encode() if isinstance(value, str) else value, rev, rev, lease)


def put(key: bytes, value: bytes | str, rev: int) -> WatchEvent:
    return WatchEvent(False, kv(key, value, rev))


def delete(key: bytes, rev: int) -> WatchEvent:
    # etcd gives a DELETE event the key and the revision of the delete, no value
    return WatchEvent(True, KeyValue(key, b"", rev))


def votes_doc(states: dict[str, str], at: float = 1.0) -> str:
    return json.dumps({"at": at, "view": {"states": states}})


def drain_doc(state: str = "draining", who: str = "ops@a", why: str = "maintenance") -> str:
    return json.dumps({"state": state, "who": who, "when": 1700000000.0, "why": why})


# -- Layout --------------------------------------------------------------------------------

@pytest.mark.parametrize("key,kind,name", [
    (b"/geodns/config", "config", "config"),
    (b"/geodns/published", "published", "published"),
    (b"/geodns/zones/example.com.yaml", "zone", "example.com.yaml"),
    (b"/geodns/keys/example.com.ksk.pem", "key", "example.com.ksk.pem"),
    (b"/geodns/nodes/fra-1", "node", "fra-1"),
    (b"/geodns/votes/fra-1", "votes", "fra-1"),
    (b"/geodns/drains/fra", "drain", "fra"),
    # keys that are not ours, under the prefix or not
    (b"/geodns/", "", ""),
    (b"/geodns/configs", "", "configs"),
    (b"/geodns/config/x", "", "config/x"),
    (b"/geodns/zones/", "", "zones/"),
    (b"/geodns/zones", "", "zones"),
    (b"/geodns/zones/sub/a.yaml", "", "zones/sub/a.yaml"),
    (b"/geodns/nodes/", "", "nodes/"),
    (b"/geodns/votes/a/b", "", "votes/a/b"),
    (b"/geodns/lock", "", "lock"),
    # the keys directory is read for *.pem files only, as a node's own is
    (b"/geodns/keys/", "", "keys/"),
    (b"/geodns/keys/readme.txt", "", "keys/readme.txt"),
    (b"/geodns/keys/.pem", "", "keys/.pem"),
    (b"/geodns/keys/.hidden.pem", "", "keys/.hidden.pem"),
    (b"/geodns/keys/a/b.pem", "", "keys/a/b.pem"),
    (b"/geodnsconfig", "", "/geodnsconfig"),
    (b"/other/config", "", "/other/config"),
    (b"config", "", "config"),
])
def test_layout_split(key: bytes, kind: str, name: str) -> None:
    assert L.split(key) == (kind, name)


def test_layout_keys_split_back() -> None:
    for layout in (L, Layout("/dns/prod/")):
        assert layout.split(layout.config) == ("config", "config")
        assert layout.split(layout.published) == ("published", "published")
        assert layout.split(layout.zone("a.example.yaml")) == ("zone", "a.example.yaml")
        assert layout.split(layout.key("a.example.zsk.pem")) == ("key", "a.example.zsk.pem")
        assert layout.split(layout.node("n1")) == ("node", "n1")
        assert layout.split(layout.votes("n1")) == ("votes", "n1")
        assert layout.split(layout.drain("fra")) == ("drain", "fra")
        assert layout.root == layout.prefix.encode()
    assert Layout("/dns/prod/").split(b"/geodns/config") == ("", "/geodns/config")
    assert L.document_name(L.zone("a.yaml")) == "etcd:/geodns/zones/a.yaml"


# -- FleetState -------------------------------------------------------------------------

def loaded() -> FleetState:
    state = FleetState(L)
    changed = state.load(Range(10, (
        kv(L.config, "pops: {}\n", 5),
        kv(L.zone("a.example.yaml"), "zone a", 7),
        kv(L.published, json.dumps({"who": "ops@a", "when": 1.0}), 7),
        kv(L.drain("fra"), drain_doc(), 8),
        kv(L.node("n1"), json.dumps({"revision": "etcd:7"}), 9, lease=42),
        kv(L.votes("n1"), votes_doc({"fra": "up", "iad": "down"}, at=12.5), 9, lease=42),
        kv(b"/geodns/something-else", "x", 9),
    )))
    assert changed == {"docs", "nodes", "votes", "drains"}
    return state


def test_load_reads_everything_at_one_revision() -> None:
    state = loaded()
    assert state.revision == 10
    assert state.docs_revision == 7  # the last document change, not the store's revision
    assert state.config_text() == b"pops: {}\n"
    assert state.zone_texts() == {"a.example.yaml": b"zone a"}
    assert state.published() == {"who": "ops@a", "when": 1.0}
    assert state.nodes == {"n1": {"revision": "etcd:7"}}
    assert state.votes["n1"] == HealthView({"fra": UP, "iad": DOWN})
    assert state.vote_times == {"n1": 12.5}
    assert state.drains == {"fra": Drain(DRAINING, "ops@a", 1700000000.0, "maintenance")}
    assert state.drain_states() == {"fra": DRAINING}


def test_load_again_says_what_changed() -> None:
    state = loaded()
    same = Range(11, (kv(L.drain("fra"), drain_doc(), 8),
                      kv(L.votes("n1"), votes_doc({"fra": "up", "iad": "down"}), 9)))
    # the documents always count as changed (the reader compares revisions)
    assert state.load(same) == {"docs", "nodes"}
    # Every document is gone (deleted without a publish): the empty set is
    # named by the revision it was read at, never by one a fuller set had.
    assert state.docs == {} and state.docs_revision == 11 and state.nodes == {}
    assert state.load(Range(12, ())) == {"docs", "nodes", "votes", "drains"}
    assert state.revision == 12


# (event, what changed, docs_revision after it)
EVENTS = [
    (put(L.votes("n2"), votes_doc({"fra": "down"}), 11), {"votes"}, 7),
    (put(L.node("n2"), json.dumps({"revision": "etcd:7"}), 12), {"nodes"}, 7),
    (put(L.drain("iad"), drain_doc(), 13), {"drains"}, 7),
    (delete(L.drain("fra"), 14), {"drains"}, 7),
    (put(L.zone("b.example.yaml"), "zone b", 15), {"docs"}, 15),
    (delete(L.zone("a.example.yaml"), 16), {"docs"}, 16),
    (put(L.published, json.dumps({"who": "ops@b"}), 17), {"docs"}, 17),
    (put(L.config, "pops: {fra: {}}\n", 18), {"docs"}, 18),
    (delete(L.votes("n1"), 19), {"votes"}, 18),
    (delete(L.node("n1"), 19), {"nodes"}, 18),
    (put(b"/geodns/lock", "x", 20), set(), 18),
    (put(b"/elsewhere/config", "x", 21), set(), 18),
]


def test_watch_events_in_order() -> None:
    state = loaded()
    for event, changed, docs_revision in EVENTS:
        assert state.apply(event.kv.mod_revision, [event]) == changed, event
        assert state.docs_revision == docs_revision, event
        assert state.revision == event.kv.mod_revision
    assert state.zone_texts() == {"b.example.yaml": b"zone b"}
    assert state.config_text() == b"pops: {fra: {}}\n"
    assert state.published() == {"who": "ops@b"}
    assert state.nodes == {"n2": {"revision": "etcd:7"}}
    assert list(state.votes) == ["n2"] and state.vote_times == {"n2": 1.0}
    assert state.drain_states() == {"iad": DRAINING}


def test_one_batch_of_several_kinds() -> None:
    state = loaded()
    changed = state.apply(20, [put(L.zone("c.example.yaml"), "zone c", 20),
                               put(L.published, "{}", 20),
                               put(L.votes("n1"), votes_doc({"fra": "down"}), 20)])
    assert changed == {"docs", "votes"}
    assert state.docs_revision == 20 and state.revision == 20
    # a batch never takes the revision back
    assert state.apply(15, []) == set() and state.revision == 20


def test_watching_and_reading_again_agree_on_the_documents_revision() -> None:
    """What a node that watched computes and what one that read everything
    afresh computes are the same (a publish rewrites ``published`` in the
    transaction that deletes a zone)."""
    watched = loaded()
    watched.apply(15, [delete(L.zone("a.example.yaml"), 15),
                       put(L.zone("b.example.yaml"), "zone b", 15),
                       put(L.published, "{}", 15)])
    watched.apply(16, [put(L.votes("n1"), votes_doc({}), 16)])
    fresh = FleetState(L)
    fresh.load(Range(16, tuple(watched.docs.values())))
    assert fresh.docs_revision == watched.docs_revision == 15
    assert fresh.docs == watched.docs


@pytest.mark.parametrize("value", [
    b"not json", b"[1, 2]", b"\xff\xfe", b'"up"', b"null",
    json.dumps({"at": 1, "view": {"states": "up"}}).encode(),
    json.dumps({"at": 1, "view": {"states": {"fra": "up"}, "penalties": {"fra": "x"}}}).encode(),
    json.dumps({"at": 1, "view": {"records": [["zz", 1, {}]]}}).encode(),
    json.dumps({"at": "soon", "view": {"states": {"fra": "up"}}}).encode(),
    json.dumps({"at": 1, "view": [1]}).encode(),
])
def test_malformed_votes_are_not_counted(value: bytes) -> None:
    state = loaded()
    assert state.apply(11, [put(L.votes("n2"), value, 11)]) == {"votes"}
    assert "n2" not in state.votes and "n2" not in state.vote_times
    # a node whose votes turn malformed stops being counted, as it would be
    # by a node reading everything again
    state.apply(12, [put(L.votes("n1"), value, 12)])
    assert state.votes == {} and state.vote_times == {}
    fresh = FleetState(L)
    fresh.load(Range(12, (kv(L.votes("n1"), value, 12),)))
    assert fresh.votes == state.votes
    assert state.docs_revision == 7  # votes are not documents


def test_unknown_state_words_in_votes_are_left_out() -> None:
    state = loaded()
    state.apply(11, [put(L.votes("n2"), votes_doc({"fra": "up", "iad": "sideways"}), 11)])
    assert state.votes["n2"] == HealthView({"fra": UP})


def test_malformed_node_status_is_dropped() -> None:
    state = loaded()
    state.apply(11, [put(L.node("n1"), b"{broken", 11)])
    assert state.nodes == {}


@pytest.mark.parametrize("value,expected", [
    (drain_doc(), Drain(DRAINING, "ops@a", 1700000000.0, "maintenance")),
    (json.dumps({"state": "down"}), Drain(DOWN, "?", 0.0, "")),
    (json.dumps({"state": "draining", "when": "later"}), Drain(DRAINING, "?", 0.0, "")),
    (json.dumps({"state": "sideways"}), None),
    (json.dumps(["draining"]), None),
    ("draining", None),
])
def test_drains(value: str, expected: Drain | None) -> None:
    state = loaded()
    assert state.apply(11, [put(L.drain("fra"), value, 11)]) == {"drains"}
    assert state.drains.get("fra") == expected  # an unreadable drain is no drain
    if expected is not None:
        assert Drain.from_json(expected.to_json()) == expected


# -- EtcdSource -------------------------------------------------------------------------

def test_source_hands_documents_once_per_revision() -> None:
    source = EtcdSource(L)
    first = source.poll()
    assert first is not None and first.revision == "etcd:none"
    assert first.config is None and first.zones == {}
    assert source.poll() is None

    state = loaded()
    docs = source.offer_state(state)
    assert source.latest is docs
    assert source.poll() is docs
    assert source.poll() is None
    assert source.poll(force=True) is docs  # again when forced
    assert source.poll() is None

    assert docs.revision == "etcd:7"
    assert docs.config is not None and docs.config.name == "etcd:/geodns/config"
    assert docs.config.text == b"pops: {}\n"
    assert list(docs.zones) == ["etcd:/geodns/zones/a.example.yaml"]

    # votes, status and drains are not documents: the same revision, nothing to hand
    state.apply(11, [put(L.votes("n2"), votes_doc({"fra": "up"}), 11),
                     put(L.drain("iad"), drain_doc(), 11)])
    assert source.offer_state(state).revision == "etcd:7"
    assert source.poll() is None


def test_source_reuses_unchanged_documents() -> None:
    source = EtcdSource(L)
    state = loaded()
    state.apply(8, [put(L.zone("b.example.yaml"), "zone b", 8)])
    before = source.offer_state(state)
    state.apply(12, [put(L.zone("b.example.yaml"), "zone b, changed", 12),
                     put(L.published, "{}", 12)])
    after = source.offer_state(state)
    assert after.revision == "etcd:12"
    a, b = "etcd:/geodns/zones/a.example.yaml", "etcd:/geodns/zones/b.example.yaml"
    assert after.config is before.config
    assert after.zones[a] is before.zones[a]
    assert after.zones[a].digest is before.zones[a].digest  # not computed again
    assert after.zones[b] is not before.zones[b]
    assert after.zones[b].text == b"zone b, changed"

    # a document rewritten with the same text is a new write: a new Document
    state.apply(13, [put(L.zone("a.example.yaml"), "zone a", 13)])
    again = source.offer_state(state)
    assert again.zones[a] is not after.zones[a] and again.zones[a] == after.zones[a]
    assert again.zones[b] is after.zones[b]
    # a zone deleted is forgotten
    state.apply(14, [delete(L.zone("b.example.yaml"), 14)])
    assert list(source.offer_state(state).zones) == [a]


def test_keys_are_documents_handed_by_file_name() -> None:
    """A key written or deleted is a new documents revision (its zones are
    signed again), handed to the snapshot by file name as a keys directory
    names it; a key rewritten later keeps the Document of the others."""
    source = EtcdSource(L)
    state = loaded()
    assert state.apply(12, [put(L.key("a.ksk.pem"), "ksk", 12), put(L.key("a.zsk.pem"), "zsk",
                                                                    12)]) == {"docs"}
    assert state.docs_revision == 12 and state.key_texts() == {"a.ksk.pem": b"ksk",
                                                                "a.zsk.pem": b"zsk"}
    docs = source.offer_state(state)
    assert docs.revision == "etcd:12"
    assert list(docs.keys) == ["a.ksk.pem", "a.zsk.pem"]
    assert docs.keys["a.zsk.pem"].name == "etcd:/geodns/keys/a.zsk.pem"
    assert docs.keys["a.zsk.pem"].text == b"zsk"
    assert list(docs.zones) == ["etcd:/geodns/zones/a.example.yaml"]  # keys are not zones
    digest = docs.keys_digest()

    state.apply(13, [put(L.key("a.zsk.pem"), "zsk 2", 13), put(L.published, "{}", 13)])
    after = source.offer_state(state)
    assert after.revision == "etcd:13" and after.keys_digest() != digest
    assert after.keys["a.ksk.pem"] is docs.keys["a.ksk.pem"]
    assert after.keys["a.zsk.pem"].text == b"zsk 2"
    # a key deleted is gone from the documents; a key not named *.pem is none
    state.apply(14, [delete(L.key("a.ksk.pem"), 14), put(b"/geodns/keys/notes.txt", "x", 14)])
    assert list(source.offer_state(state).keys) == ["a.zsk.pem"]
    assert state.docs_revision == 14
    # a fresh read agrees with what the watch made of it
    fresh = FleetState(L)
    fresh.load(Range(14, tuple(state.docs.values())))
    assert fresh.key_texts() == {"a.zsk.pem": b"zsk 2"}


# -- the cache --------------------------------------------------------------------------

def test_cache_round_trip(tmp_path: Path) -> None:
    state = loaded()
    docs = EtcdSource(L).documents(state)
    drains = dict(state.drains)
    path = tmp_path / "sub" / "cache.json"
    save_cache(path, docs, drains)
    assert os.listdir(path.parent) == ["cache.json"]  # no temporary file left
    got, got_drains, saved_at = load_cache(path)
    assert got.revision == "etcd:7"
    assert got.config == docs.config and got.zones == docs.zones
    assert got_drains == drains
    assert saved_at > 1e9
    # written again over the old copy
    state.apply(20, [put(L.zone("b.example.yaml"), b"\x00\xffbinary", 20)])
    docs = EtcdSource(L).documents(state)
    save_cache(path, docs, {})
    got, got_drains, _ = load_cache(path)
    assert got.revision == "etcd:20" and got.zones == docs.zones and got_drains == {}
    assert os.listdir(path.parent) == ["cache.json"]


def test_cache_keeps_the_keys_readable_by_its_owner_only(tmp_path: Path) -> None:
    state = loaded()
    state.apply(12, [put(L.key("a.ksk.pem"), b"-----BEGIN PRIVATE KEY-----\n", 12)])
    docs = EtcdSource(L).documents(state)
    path = tmp_path / "cache.json"
    for umask in (0o022, 0o000):  # whatever the umask: 0600
        old = os.umask(umask)
        try:
            save_cache(path, docs, {})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got, _, _ = load_cache(path)
    assert got.keys == docs.keys and got.keys_digest() == docs.keys_digest()
    assert got.keys["a.ksk.pem"].name == "etcd:/geodns/keys/a.ksk.pem"
    # a copy saved before the fleet carried keys is read, with none
    body = json.loads(path.read_text())
    del body["keys"]
    path.write_text(json.dumps(body))
    got, _, _ = load_cache(path)
    assert got.keys == {} and got.zones == docs.zones


def test_cache_without_a_configuration_document(tmp_path: Path) -> None:
    docs = Documents("etcd:3", None, {"etcd:/geodns/zones/a.yaml":
                                      Document("etcd:/geodns/zones/a.yaml", b"a")})
    save_cache(tmp_path / "c.json", docs, {})
    got, _, _ = load_cache(tmp_path / "c.json")
    assert got.config is None and got.zones == docs.zones


def valid_cache() -> dict[str, object]:
    return {"format": 1, "revision": "etcd:3", "saved_at": 1.0, "config": None,
            "zones": {"z": "YQ=="}, "drains": {}}


@pytest.mark.parametrize("body,message", [
    (b"", "not a geodns fleet cache"),
    (b"{not json", "not a geodns fleet cache"),
    (b"\xff\xfe", "not a geodns fleet cache"),
    (b"[1, 2]", "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "format": 2}).encode(), "format 2, expected 1"),
    (json.dumps({"revision": "etcd:3"}).encode(), "format None, expected 1"),
    (json.dumps({k: v for k, v in valid_cache().items() if k != "zones"}).encode(),
     "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "zones": {"z": "!!not base64"}}).encode(),
     "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "config": {"name": "c"}}).encode(),
     "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "zones": [1]}).encode(), "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "keys": {"k.pem": "YQ=="}}).encode(),
     "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "keys": {"k.pem": {"name": "k", "text": "!!"}}}).encode(),
     "not a geodns fleet cache"),
    (json.dumps({**valid_cache(), "keys": [1]}).encode(), "not a geodns fleet cache"),
])
def test_cache_that_cannot_be_used(tmp_path: Path, body: bytes, message: str) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(body)
    with pytest.raises(CacheError) as exc:
        load_cache(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)


def test_no_cache(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_cache(tmp_path / "none.json")


def test_cache_drops_unreadable_drains(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({**valid_cache(), "drains": {
        "fra": {"state": "draining", "who": "a", "when": 1, "why": ""},
        "iad": {"state": "sideways"}, "sin": "draining"}}))
    docs, drains, _ = load_cache(path)
    assert drains == {"fra": Drain(DRAINING, "a", 1.0, "")}
    assert docs.zones == {"z": Document("z", b"a")}


# -- snapshots built whole ------------------------------------------------------------

SHARED = "pops:\n  fra: {location: [50.11, 8.68]}\n  iad: {location: [38.95, -77.45]}\n"
ZONE_NAME = "etcd:/geodns/zones/example.com.yaml"
OTHER_NAME = "etcd:/geodns/zones/other.example.yaml"


def zone(serial: int, www: str = "192.0.2.1", origin: str = "example.com.") -> bytes:
    return (f"origin: {origin}\nsoa: {{mname: ns1, rname: hostmaster, serial: {serial}}}\n"
            "records:\n  '@': {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n"
            f"  www: {{A: {{steer: {{pops: {{fra: {www}, iad: 198.51.100.1}}}}}}}}\n"
            ).encode()


def node() -> Config:
    problems = Problems()
    cfg = load_config_text("listen: ['127.0.0.1:0']\n"
                           "fleet: {etcd: [http://127.0.0.1:2379], node: n1, cache: null}\n",
                           "node.yaml", Path("/srv"), problems)
    assert not problems and cfg.fleet is not None
    return cfg


def documents(revision: int, zones: dict[str, bytes], config: str = SHARED) -> Documents:
    return Documents(f"etcd:{revision}", Document("etcd:/geodns/config", config.encode()),
                     {name: Document(name, text) for name, text in zones.items()})


def built(docs: Documents, previous: Snapshot | None, now: float = 1.0
          ) -> tuple[Snapshot, list[str]]:
    b = build(docs, node(), previous, (None, GeoipStatus()), HealthView(), new_responder, now,
              whole=True)
    return b.snapshot, [c.message for c in b.changes]


def test_a_revision_with_a_bad_zone_is_refused_whole() -> None:
    snap1, _ = built(documents(1, {ZONE_NAME: zone(1), OTHER_NAME: zone(1, origin="other.example.")}),
                     None)
    assert snap1.refused is None and snap1.version.revision == "etcd:1"
    assert snap1.version.serials == {"example.com.": 1, "other.example.": 1}

    # revision 2 changes one zone well and breaks the other: none of it is served
    bad = documents(2, {ZONE_NAME: zone(2, www="999.0.0.1"),
                        OTHER_NAME: zone(2, origin="other.example.")})
    snap2, changes = built(bad, snap1, now=2.0)
    assert snap2.refused is not None
    assert snap2.refused.revision == "etcd:2" and snap2.refused.at == 2.0
    assert [str(p).split(": ")[0] for p in snap2.refused.problems] == [f"{ZONE_NAME}:6:33"]
    assert snap2.version == snap1.version  # still etcd:1, both zones at serial 1
    assert snap2.tables is snap1.tables and snap2.responder is snap1.responder
    assert snap2.zones == snap1.zones and snap2.config is snap1.config
    assert len(changes) == 1
    assert changes[0].startswith(f"revision etcd:2 not served: {ZONE_NAME}:6:33: ")
    assert changes[0].endswith("; still serving etcd:1")
    assert [str(p) for p in snap2.errors()] == [str(p) for p in snap2.refused.problems]

    # the same revision again (a forced reload): still refused, not reported twice
    snap2b, changes = built(bad, snap2, now=3.0)
    assert snap2b.refused is not None and snap2b.refused.revision == "etcd:2"
    assert snap2b.version == snap1.version and changes == []

    # the next good revision is served whole and clears the refusal
    snap3, changes = built(documents(3, {ZONE_NAME: zone(3),
                                         OTHER_NAME: zone(2, origin="other.example.")}),
                           snap2b, now=4.0)
    assert snap3.refused is None and snap3.errors() == []
    assert snap3.version.revision == "etcd:3"
    assert snap3.version.serials == {"example.com.": 3, "other.example.": 2}
    assert any("loaded zone example.com. " in c and "(serial 3)" in c for c in changes)


def test_a_revision_with_a_bad_shared_configuration_is_refused() -> None:
    snap1, _ = built(documents(1, {ZONE_NAME: zone(1)}), None)
    # a node's own key in the shared configuration, and a zone change with it
    snap2, changes = built(documents(2, {ZONE_NAME: zone(2)},
                                     config=SHARED + "listen: ['0.0.0.0:53']\n"), snap1)
    assert snap2.refused is not None
    assert [str(p).split(": ")[0] for p in snap2.refused.problems] == \
        ["etcd:/geodns/config:4:1"]
    assert snap2.version.serials == {"example.com.": 1}
    assert snap2.config is snap1.config
    assert len(changes) == 1 and changes[0].startswith(
        "revision etcd:2 not served: etcd:/geodns/config:4:1: listen is a node's own")
    # a configuration that would stop a served zone (its PoP iad removed)
    snap3, _ = built(documents(3, {ZONE_NAME: zone(1)},
                               config="pops:\n  fra: {location: [50.11, 8.68]}\n"), snap2)
    assert snap3.refused is not None and snap3.refused.revision == "etcd:3"
    assert "iad" in str(snap3.refused.problems[0])
    assert list(snap3.config.pops) == ["fra", "iad"]
    snap4, _ = built(documents(4, {ZONE_NAME: zone(4)}), snap3)
    assert snap4.refused is None and snap4.version.serials == {"example.com.": 4}


def test_a_first_revision_with_problems_serves_what_is_valid() -> None:
    """Nothing to keep serving yet: the valid zones are served, the others
    are reported."""
    snap, changes = built(documents(1, {ZONE_NAME: zone(1, www="999.0.0.1"),
                                        OTHER_NAME: zone(1, origin="other.example.")}), None)
    assert snap.refused is None
    assert snap.version.revision == "etcd:1"
    assert snap.version.serials == {"other.example.": 1}
    assert snap.zones[ZONE_NAME].zone is None and snap.zones[ZONE_NAME].errors
    assert [str(p).split(": ")[0] for p in snap.errors()] == [f"{ZONE_NAME}:6:33"]
    assert any(c.startswith(f"zone not loaded: {ZONE_NAME}:6:33") for c in changes)
    # and the next good revision serves everything
    snap2, _ = built(documents(2, {ZONE_NAME: zone(2),
                                   OTHER_NAME: zone(1, origin="other.example.")}), snap)
    assert snap2.refused is None and snap2.errors() == []
    assert snap2.version.serials == {"example.com.": 2, "other.example.": 1}


def test_a_document_deleted_without_a_publish_gets_a_new_revision() -> None:
    """A watcher saw the delete at revision 30; a node that reads everything
    again afterwards must not name the smaller set by an older revision."""
    state = FleetState(L)
    state.load(Range(20, (kv(L.config, b"pops: {}\n", 5), kv(L.zone("a.test.yaml"), b"x", 10),
                          kv(L.zone("b.test.yaml"), b"y", 20))))
    assert state.docs_revision == 20
    state.load(Range(31, (kv(L.config, b"pops: {}\n", 5), kv(L.zone("a.test.yaml"), b"x", 10))))
    assert state.docs_revision == 31
    # The same set read again keeps its name.
    state.load(Range(40, (kv(L.config, b"pops: {}\n", 5), kv(L.zone("a.test.yaml"), b"x", 10))))
    assert state.docs_revision == 31


def test_a_node_not_seen_writing_for_a_lease_time_is_silent() -> None:
    state = FleetState(L)
    state.load(Range(5, (kv(L.node("n1"), b'{"node": "n1"}', 3),
                         kv(L.votes("n2"), votes_doc({"fra": "up"}), 4))), now=100.0)
    assert state.silent(103.0, 3) == set()
    state.apply(6, [WatchEvent(False, kv(L.node("n1"), b'{"node": "n1"}', 6))], now=102.5)
    assert state.silent(103.5, 3) == {"n2"}  # n2 last wrote at 100
    assert state.silent(106.0, 3) == {"n1", "n2"}
    state.apply(7, [WatchEvent(True, kv(L.node("n1"), b"", 7))], now=106.0)
    assert "n1" not in state.seen  # gone from etcd: nothing left to be silent about


SIGNED = ("dnssec:\n  keys:\n    - {file: example.com.ksk.pem, role: ksk}\n"
          "    - {file: example.com.zsk.pem, role: zsk}\n")


def test_a_signed_zone_is_signed_with_the_fleets_keys_or_not_served() -> None:
    """The keys come with the documents (from etcd, not a keys directory):
    a revision whose zone names a key it lacks is refused whole."""
    import dns.message
    import dns.rdatatype

    from geodns.dnssec.keys import ECDSAP256SHA256, generate

    pems = {n: generate(ECDSAP256SHA256) for n in ("example.com.ksk.pem",
                                                   "example.com.zsk.pem")}

    def signed(revision: int, keys: dict[str, bytes]) -> Documents:
        docs = documents(revision, {ZONE_NAME: zone(revision) + SIGNED.encode()})
        return Documents(docs.revision, docs.config, docs.zones,
                         keys={n: Document(f"etcd:/geodns/keys/{n}", t) for n, t in keys.items()})

    def dnskeys(snap: Snapshot) -> int:
        q = dns.message.make_query("example.com.", "DNSKEY", want_dnssec=True)
        wire = snap.responder.respond(q.to_wire(), udp=False)
        assert wire is not None
        answer = dns.message.from_wire(wire).answer
        return sum(len(r) for r in answer if r.rdtype == dns.rdatatype.DNSKEY)

    snap1, _ = built(signed(1, pems), None)
    assert snap1.refused is None and snap1.version.serials == {"example.com.": 1}
    assert dnskeys(snap1) == 2
    snap2, changes = built(signed(2, {"example.com.ksk.pem": pems["example.com.ksk.pem"]}),
                           snap1, now=2.0)
    assert snap2.refused is not None and snap2.version == snap1.version
    assert len(changes) == 1 and changes[0].startswith(f"revision etcd:2 not served: "
                                                       f"{ZONE_NAME}:10:14: ")
    assert "key file example.com.zsk.pem is not in the keys directory" in changes[0]
    assert dnskeys(snap2) == 2
