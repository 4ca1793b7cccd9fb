"""DNSSEC in a fleet, against a real etcd and real nodes: ``geodns publish
--keys`` carries the keys directory to etcd (``keys/NAME.pem``) with the
zones, so every node signs with the same keys.  dnspython validates every
signed answer of every node against the DNSKEY set of each (they are
byte-identical); a ZSK rollover published step by step reaches every node;
a publish whose zone names a missing or broken key is refused and writes
nothing; the node's local copy holds the keys, readable by its owner only,
and a node restarted while etcd is down signs with them.  The key files'
contents never appear in what publish prints."""

from __future__ import annotations

import base64
import functools
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from etcdcluster import EtcdCluster, etcd_cluster, gateway_call
from fleetkit import ZONE, Fleet, shared_config, wait_until, zone_text

from geodns.dnssec.keys import ECDSAP256SHA256, generate
from geodns.fleet.source import load_cache

NODES = ("n1", "n2")
ORIGIN = dns.name.from_text(ZONE)
KSK, ZSK, ZSK2 = "fleet.test.ksk.pem", "fleet.test.zsk.pem", "fleet.test.zsk2.pem"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = etcd_cluster(tmp_path / "etcd", members=1)
    yield c
    c.stop_all()


@pytest.fixture
def fleet(tmp_path: Path, cluster: EtcdCluster) -> Iterator[Fleet]:
    f = Fleet(tmp_path, cluster.endpoints)
    (f.repo / "keys").mkdir(mode=0o700)
    yield f
    f.stop_all()


# -- the fleet's repository ---------------------------------------------------------------

def new_key(fleet: Fleet, name: str) -> bytes:
    pem = generate(ECDSAP256SHA256)
    path = fleet.repo / "keys" / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return pem


def write_signed(fleet: Fleet, rev: int, keys: list[tuple[str, str, bool]]) -> None:
    """The test zone at revision ``rev``, signed with ``keys``: (file, role, signs)."""
    lines = "".join(f"    - {{file: {f}, role: {r}{'' if s else ', sign: false'}}}\n"
                    for f, r, s in keys)
    (fleet.repo / "zones" / "fleet.test.yaml").write_text(
        zone_text(rev) + "dnssec:\n  keys:\n" + lines)


def publish(fleet: Fleet, *extra: str) -> tuple[int, str, str]:
    return fleet.publish("--keys", str(fleet.repo / "keys"), *extra)


def published(fleet: Fleet, *extra: str) -> int:
    return fleet.published("--keys", str(fleet.repo / "keys"), *extra)


def stored(cluster: EtcdCluster) -> dict[str, tuple[bytes, int]]:
    """Every key under /geodns/: its value and mod revision."""
    doc = gateway_call(cluster.endpoints[0], "/v3/kv/range",
                       {"key": base64.b64encode(b"/geodns/").decode(),
                        "range_end": base64.b64encode(b"/geodns0").decode()}, timeout=5)
    return {base64.b64decode(kv["key"]).decode(): (base64.b64decode(kv.get("value", "")),
                                                   int(kv["mod_revision"]))
            for kv in doc.get("kvs", [])}


def documents(cluster: EtcdCluster) -> dict[str, tuple[bytes, int]]:
    """What publish writes (not the nodes' status and votes)."""
    return {k: v for k, v in stored(cluster).items()
            if not k.startswith(("/geodns/nodes/", "/geodns/votes/"))}


def no_key_material(fleet: Fleet, *texts: str) -> None:
    """No line of any key file in ``texts`` (publish prints names and sizes)."""
    for path in (fleet.repo / "keys").glob("*.pem"):
        for line in path.read_text().splitlines():
            if "-----" not in line:
                for text in texts:
                    assert line not in text, f"{path.name}'s contents were printed"
    for text in texts:
        assert "PRIVATE KEY" not in text


# -- asking the nodes ---------------------------------------------------------------------

def ask(port: int, name: str, rtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rtype, want_dnssec=True)
    return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)


def dnskey_set(port: int) -> dns.rrset.RRset:
    m = ask(port, ZONE, "DNSKEY")
    return m.find_rrset(m.answer, ORIGIN, dns.rdataclass.IN, dns.rdatatype.DNSKEY)


def wire(rrset: dns.rrset.RRset) -> list[bytes]:
    """The set's records in DNSSEC's canonical form, in canonical order."""
    return sorted(rd.to_digestable(ORIGIN) for rd in rrset)


def validated(m: dns.message.Message, keys: dns.rrset.RRset) -> list[int]:
    """Every authoritative RRset of the answer validated against ``keys``;
    the key tags that signed them."""
    tags = []
    for section in (m.answer, m.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sigs = [s for s in section if s.rdtype == dns.rdatatype.RRSIG and
                    s.name == rrset.name and s[0].type_covered == rrset.rdtype]
            assert sigs, f"unsigned: {rrset}"
            dns.dnssec.validate(rrset, sigs[0], {ORIGIN: keys})
            tags += [s.key_tag for s in sigs[0]]
    assert tags, m
    return tags


def tag(pem: bytes, flags: int) -> int:
    """The key tag dnspython computes for a key file (257: KSK, 256: ZSK)."""
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    return dns.dnssec.key_id(dns.dnssec.make_dnskey(private.public_key(),
                                                    dns.dnssec.Algorithm.ECDSAP256SHA256,
                                                    flags=flags))


def saved(cache: Path, revision: int) -> bool:
    """Whether the node's copy of ``revision`` is written (after its swap)."""
    return cache.exists() and load_cache(cache)[0].revision == f"etcd:{revision}"


def start(fleet: Fleet, revision: int) -> dict[str, int]:
    """Every node started and serving ``revision``; their DNS ports."""
    for name in NODES:
        fleet.start(name)
    ports = {name: fleet.ready(name)[0] for name in NODES}
    fleet.wait_serving(revision)
    return ports


def rolled(fleet: Fleet, message: str) -> str:
    """Publish, then wait until every node serves what was published; what
    publish printed."""
    marks = {n: fleet.nodes[n].mark() for n in fleet.nodes}  # before: a node may be quick
    code, out, err = publish(fleet, "-m", message)
    assert code == 0, err
    no_key_material(fleet, out, err)
    fleet.wait_serving(int(out.split("published etcd:")[1]), start=marks)
    return out


def same_keys_everywhere(ports: dict[str, int], count: int) -> dns.rrset.RRset:
    """Every node's DNSKEY set, validated against every other's: one set of
    ``count`` keys, byte for byte."""
    sets = {name: dnskey_set(port) for name, port in ports.items()}
    first = next(iter(sets.values()))
    assert len(first) == count
    for name, keys in sets.items():
        assert wire(keys) == wire(first), f"{name} serves other keys"
        for port in ports.values():
            validated(ask(port, ZONE, "DNSKEY"), keys)
    return first


# -- the tests ----------------------------------------------------------------------------

def test_every_node_signs_with_the_keys_published(fleet: Fleet, cluster: EtcdCluster) -> None:
    began = time.monotonic()
    ksk, zsk = new_key(fleet, KSK), new_key(fleet, ZSK)
    (fleet.repo / "keys" / "README").write_text("not a key: not published\n")
    fleet.write(shared_config())
    write_signed(fleet, 1, [(KSK, "ksk", True), (ZSK, "zsk", True)])
    code, out, err = publish(fleet, "--dry-run")
    assert (code, err) == (0, ""), err
    assert f"add    /geodns/keys/{KSK} ({len(ksk)} bytes)" in out.splitlines()
    assert f"add    /geodns/keys/{ZSK} ({len(zsk)} bytes)" in out.splitlines()
    assert "README" not in out
    no_key_material(fleet, out)
    assert documents(cluster) == {}

    revision = published(fleet, "-m", "signed")
    docs = documents(cluster)
    assert docs[f"/geodns/keys/{KSK}"][0] == ksk and docs[f"/geodns/keys/{ZSK}"][0] == zsk
    assert sorted(k for k in docs if k.startswith("/geodns/keys/")) == \
        [f"/geodns/keys/{KSK}", f"/geodns/keys/{ZSK}"]
    no_key_material(fleet, docs["/geodns/published"][0].decode())

    ports = start(fleet, revision)
    keys = same_keys_everywhere(ports, 2)
    assert sorted(dns.dnssec.key_id(k) for k in keys) == sorted([tag(ksk, 257), tag(zsk, 256)])
    for port in ports.values():
        for name, rtype in ((ZONE, "TXT"), ("www." + ZONE, "A"), ("nope." + ZONE, "A"),
                            ("ns1." + ZONE, "AAAA")):
            assert set(validated(ask(port, name, rtype), keys)) == {tag(zsk, 256)}

    # Each node's copy holds the keys, readable by its owner only.
    for name in NODES:
        cache = fleet.tmp / name / "cache.json"
        wait_until(functools.partial(saved, cache, revision), 5)
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        copy = load_cache(cache)[0]
        assert {n: d.text for n, d in copy.keys.items()} == {KSK: ksk, ZSK: zsk}

    # etcd gone, a node restarted: it signs with the keys of its copy.
    cluster.stop_all()
    fleet.stop("n1")
    node = fleet.start("n1")
    ports["n1"] = fleet.ready("n1")[0]
    node.wait_for(lambda x: x.get("event") == "fleet-cache")
    node.wait_for(lambda x: x.get("event") == "serving" and
                  x.get("revision") == f"etcd:{revision}")
    assert same_keys_everywhere(ports, 2) == keys
    assert set(validated(ask(ports["n1"], "www." + ZONE, "A"), keys)) == {tag(zsk, 256)}
    print(f"signed fleet of two, cache and restart: {time.monotonic() - began:.1f} s")


def test_a_zsk_rollover_reaches_every_node(fleet: Fleet) -> None:
    began = time.monotonic()
    ksk, zsk = new_key(fleet, KSK), new_key(fleet, ZSK)
    fleet.write(shared_config())
    write_signed(fleet, 1, [(KSK, "ksk", True), (ZSK, "zsk", True)])
    ports = start(fleet, published(fleet))
    old, new = tag(zsk, 256), 0

    def signers() -> set[int]:
        keys = same_keys_everywhere(ports, len(keys_now))
        return {t for p in ports.values() for t in validated(ask(p, ZONE, "TXT"), keys)}

    keys_now = [KSK, ZSK]
    assert signers() == {old}

    # 1. the new ZSK pre-published: in every node's DNSKEY set, signing nothing
    zsk2 = new_key(fleet, ZSK2)
    new = tag(zsk2, 256)
    write_signed(fleet, 2, [(KSK, "ksk", True), (ZSK, "zsk", True), (ZSK2, "zsk", False)])
    out = rolled(fleet, "pre-publish")
    assert f"add    /geodns/keys/{ZSK2} ({len(zsk2)} bytes)" in out
    assert "change /geodns/zones/fleet.test.yaml" in out
    keys_now = [KSK, ZSK, ZSK2]
    assert signers() == {old}

    # 2. swapped: the new key signs everything on every node, the old one stays published
    write_signed(fleet, 3, [(KSK, "ksk", True), (ZSK, "zsk", False), (ZSK2, "zsk", True)])
    rolled(fleet, "swap")
    assert signers() == {new}

    # 3. the old key retired: gone from the zone, the directory and etcd
    (fleet.repo / "keys" / ZSK).unlink()
    write_signed(fleet, 4, [(KSK, "ksk", True), (ZSK2, "zsk", True)])
    assert f"delete /geodns/keys/{ZSK}" in rolled(fleet, "retire")
    keys_now = [KSK, ZSK2]
    assert signers() == {new}
    assert sorted(dns.dnssec.key_id(k) for k in dnskey_set(ports["n2"])) == \
        sorted([tag(ksk, 257), new])
    print(f"ZSK rollover on two nodes: {time.monotonic() - began:.1f} s")


def test_a_publish_naming_a_missing_or_broken_key_changes_nothing(
        fleet: Fleet, cluster: EtcdCluster) -> None:
    new_key(fleet, KSK)
    zsk = new_key(fleet, ZSK)
    fleet.write(shared_config())
    write_signed(fleet, 1, [(KSK, "ksk", True), (ZSK, "zsk", True)])
    published(fleet)
    before = documents(cluster)
    zone = fleet.repo / "zones" / "fleet.test.yaml"
    # "    - {file: fleet.test.zsk2.pem, ...}": line 17 of the zone, column 14
    at = f"{zone}:17:14: "

    def refused(*extra: str, keys: bool = True) -> str:
        code, out, err = publish(fleet, *extra) if keys else fleet.publish(*extra)
        assert (code, out) == (2, ""), (code, out, err)
        assert err.splitlines()[-1].endswith("problem(s): nothing published"), err
        assert documents(cluster) == before
        no_key_material(fleet, err)
        return err

    # a key the zone names that is not in the keys directory
    write_signed(fleet, 2, [(KSK, "ksk", True), (ZSK, "zsk", True), (ZSK2, "zsk", False)])
    err = refused()
    assert err.startswith(f"{at}key file {ZSK2} is not in the keys directory"), err
    # not a private key
    (fleet.repo / "keys" / ZSK2).write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    err = refused()
    assert err.startswith(f"{at}key file {ZSK2}: not a PEM private key"), err
    # the zones alone are checked against the keys etcd holds (which lack it)
    new_key(fleet, ZSK2)
    err = refused(keys=False)
    assert err.startswith(f"{at}key file {ZSK2} is not in the keys directory"), err
    # a keys directory that is not there is not "no keys" (that would delete them all)
    err = refused("--keys", str(fleet.tmp / "nowhere"))
    assert f"{fleet.tmp / 'nowhere'}:1:1: cannot read the keys directory" in err, err
    # keys removed that the zone still needs
    (fleet.repo / "keys" / ZSK).unlink()
    err = refused()
    assert "key file fleet.test.zsk.pem is not in the keys directory" in err, err
    # fixed: published, the zone and its new key in one transaction
    (fleet.repo / "keys" / ZSK).write_bytes(zsk)
    code, out, err = publish(fleet)
    assert code == 0, err
    assert f"add    /geodns/keys/{ZSK2}" in out
    after = documents(cluster)
    assert after[f"/geodns/keys/{ZSK2}"][1] == after["/geodns/zones/fleet.test.yaml"][1] == \
        after["/geodns/published"][1]
