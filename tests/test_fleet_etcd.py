"""The fleet's etcd side against one real etcd member: the JSON-gateway
client (key-value, transactions, watches, compaction, leases, endpoint
failover), a FleetMember's session, and ``geodns publish`` / ``geodns fleet``.

One etcd process serves the whole module; every test works under its own
key prefix.  Every wait is bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from etcdcluster import EtcdCluster, etcd_cluster, gateway_call

from geodns import cli
from geodns.config import FleetConfig
from geodns.fleet import publish as pub
from geodns.fleet.etcd import (
    Compacted,
    Etcd,
    EtcdError,
    EtcdUnavailable,
    WatchEvent,
    delete_op,
    put_op,
    same_mod,
)
from geodns.fleet.keys import FleetState, Layout
from geodns.fleet.member import FleetMember
from geodns.health.states import DOWN, UP
from geodns.health.view import HealthView
from geodns.problems import Problems

SHARED = """\
health: {up_votes: 2}
pops:
  fra: {location: [50.11, 8.68]}
  iad: {location: [38.95, -77.45]}
"""


def zone_text(serial: int, origin: str = "example.com.", www: str = "192.0.2.1") -> str:
    return (f"origin: {origin}\nsoa: {{mname: ns1, rname: hostmaster, serial: {serial}}}\n"
            "records:\n  '@': {NS: [ns1]}\n  ns1: {A: 192.0.2.53}\n"
            f"  www: {{A: {{steer: {{pops: {{fra: {www}, iad: 198.51.100.1}}}}}}}}\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = etcd_cluster(tmp_path_factory.mktemp("etcd"), members=1)
    yield c
    c.stop_all()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return "/t-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-") + "/"


@pytest.fixture
async def etcd(cluster: EtcdCluster) -> AsyncIterator[Etcd]:
    client = Etcd(cluster.endpoints, timeout=2.0)
    yield client
    await client.close()


def dead_endpoint() -> str:
    """An address nothing listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.02)


async def watched(etcd: Etcd, prefix: bytes, start: int, count: int,
                  limit: float = 5.0) -> list[tuple[int, list[WatchEvent]]]:
    """The first batches of a watch holding ``count`` events in all."""
    batches: list[tuple[int, list[WatchEvent]]] = []

    async def take() -> None:
        async with contextlib.aclosing(etcd.watch(prefix, start)) as stream:
            async for batch in stream:
                batches.append(batch)
                if sum(len(b[1]) for b in batches) >= count:
                    return

    await asyncio.wait_for(take(), limit)
    return batches


def compact(cluster: EtcdCluster, revision: int) -> None:
    gateway_call(cluster.endpoints[0], "/v3/kv/compaction",
                 {"revision": str(revision), "physical": True}, timeout=5)


def keys_under(cluster: EtcdCluster, prefix: str) -> dict[str, bytes]:
    p = prefix.encode()
    end = p[:-1] + bytes([p[-1] + 1])
    doc = gateway_call(cluster.endpoints[0], "/v3/kv/range",
                       {"key": base64.b64encode(p).decode(),
                        "range_end": base64.b64encode(end).decode()}, timeout=5)
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in doc.get("kvs", [])}


# -- the client ----------------------------------------------------------------------------

async def test_range_put_get_delete(etcd: Etcd, prefix: str) -> None:
    p = prefix.encode()
    r1 = await etcd.put(p + b"a", b"one")
    r2 = await etcd.put(p + b"b", b"\x00\xff two")
    r3 = await etcd.put(p + b"a", b"one again")
    await etcd.put(prefix[:-1].encode() + b"-outside", b"not under the prefix")
    assert r1 < r2 < r3

    read = await etcd.range_prefix(p)
    assert read.revision >= r3
    assert [(kv.key, kv.value, kv.mod_revision) for kv in read.kvs] == [
        (p + b"a", b"one again", r3), (p + b"b", b"\x00\xff two", r2)]
    assert read.kvs[0].create_revision == r1
    # an older revision, read whole
    old = await etcd.range_prefix(p, revision=r2)
    assert old.revision == r2  # what a watch must start after, not the newest revision
    assert [(kv.key, kv.value) for kv in old.kvs] == [(p + b"a", b"one"),
                                                      (p + b"b", b"\x00\xff two")]

    got, rev = await etcd.get(p + b"b")
    assert got is not None and got.value == b"\x00\xff two" and rev >= r3
    r4 = await etcd.delete(p + b"b")
    assert r4 > r3
    assert await etcd.get(p + b"b") == (None, r4)
    assert [kv.key for kv in (await etcd.range_prefix(p)).kvs] == [p + b"a"]
    assert (await etcd.range_prefix(p + b"nothing/")).kvs == ()


async def test_txn_compare_and_swap(etcd: Etcd, prefix: str) -> None:
    p = prefix.encode()
    # created only if absent
    ok, r1 = await etcd.txn([same_mod(p + b"k", 0)], [put_op(p + b"k", b"v1")])
    assert ok
    ok, r = await etcd.txn([same_mod(p + b"k", 0)], [put_op(p + b"k", b"lost")])
    assert not ok and r == r1  # nothing written
    # changed only if unchanged since it was read
    ok, r2 = await etcd.txn([same_mod(p + b"k", r1)],
                            [put_op(p + b"k", b"v2"), put_op(p + b"other", b"x")])
    assert ok and r2 == r1 + 1  # one transaction, one revision
    ok, _ = await etcd.txn([same_mod(p + b"k", r1)], [delete_op(p + b"k")],
                           [put_op(p + b"failure", b"ran")])
    assert not ok
    values = {kv.key: (kv.value, kv.mod_revision) for kv in (await etcd.range_prefix(p)).kvs}
    assert values == {p + b"k": (b"v2", r2), p + b"other": (b"x", r2),
                      p + b"failure": (b"ran", r2 + 1)}
    ok, _ = await etcd.txn([same_mod(p + b"k", r2), same_mod(p + b"absent", 0)],
                           [delete_op(p + b"k"), delete_op(p + b"other")])
    assert ok
    assert [kv.key for kv in (await etcd.range_prefix(p)).kvs] == [p + b"failure"]


async def test_a_request_etcd_refuses_is_an_error(etcd: Etcd) -> None:
    with pytest.raises(EtcdError) as exc:
        await etcd.txn([{"key": "!!", "target": "NOPE"}], [])
    assert not isinstance(exc.value, EtcdUnavailable)


async def test_a_definite_error_is_not_tried_again(cluster: EtcdCluster, prefix: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that rides through elections (retry_for) still fails at once,
    after one attempt, when etcd refuses a request definitely; and a
    transaction whose comparisons fail is an answer, sent once."""
    client = Etcd(cluster.endpoints, timeout=2.0, retry_for=10.0)
    attempts = count_attempts(monkeypatch)
    try:
        began = time.monotonic()
        with pytest.raises(EtcdError) as exc:
            await client.txn([{"key": "!!", "target": "NOPE"}], [])
        assert not isinstance(exc.value, EtcdUnavailable)
        assert len(attempts) == 1 and time.monotonic() - began < 1.0
        p = prefix.encode()
        rev = await client.put(p + b"k", b"v")
        attempts.clear()
        assert await client.txn([same_mod(p + b"k", rev - 1)], [put_op(p + b"k", b"w")]) == \
            (False, rev)
        assert len(attempts) == 1
    finally:
        await client.close()


def count_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every attempt any Etcd client makes from now on."""
    attempts: list[str] = []
    real = Etcd._post_one

    async def counted(self: Etcd, endpoint: str, path: str, body: dict[str, Any],
                      timeout: float) -> dict[str, Any]:
        attempts.append(path)
        return await real(self, endpoint, path, body, timeout)

    monkeypatch.setattr(Etcd, "_post_one", counted)
    return attempts


async def test_watch_sees_puts_and_deletes_in_order(etcd: Etcd, prefix: str) -> None:
    p = prefix.encode()
    before = await etcd.put(p + b"x", b"before the watch")
    r1 = await etcd.put(p + b"a", b"1")
    r2 = await etcd.put(p + b"b", b"2")
    r3 = await etcd.delete(p + b"a")
    await etcd.put(b"/elsewhere/" + p, b"not watched")
    r4 = await etcd.put(p + b"b", b"3")
    batches = await watched(etcd, p, r1, 4)
    events = [e for _, es in batches for e in es]
    assert [(e.deleted, e.kv.key, e.kv.value, e.kv.mod_revision) for e in events] == [
        (False, p + b"a", b"1", r1), (False, p + b"b", b"2", r2),
        (True, p + b"a", b"", r3), (False, p + b"b", b"3", r4)]
    for revision, es in batches:  # a batch's revision is its newest event's
        assert revision == max(e.kv.mod_revision for e in es)
    assert before < r1

    # and what happens after the watch started arrives too
    async def later() -> None:
        await asyncio.sleep(0.2)
        await etcd.put(p + b"c", b"later")

    task = asyncio.create_task(later())
    batches = await watched(etcd, p, r4 + 1, 1)
    await task
    assert [(e.kv.key, e.kv.value) for _, es in batches for e in es] == [(p + b"c", b"later")]


async def test_watch_from_a_compacted_revision(etcd: Etcd, cluster: EtcdCluster,
                                               prefix: str) -> None:
    p = prefix.encode()
    r1 = await etcd.put(p + b"a", b"1")
    r2 = await etcd.put(p + b"a", b"2")
    compact(cluster, r2)
    with pytest.raises(Compacted) as exc:
        await watched(etcd, p, r1, 1)
    assert exc.value.revision == r2
    assert "compacted" in str(exc.value)
    # from the oldest revision kept, it works
    batches = await watched(etcd, p, r2, 1)
    assert batches[0][1][0].kv.value == b"2"
    # and a state read again after it is whole
    state = FleetState(Layout(prefix))
    state.load(await etcd.range_prefix(p))
    assert state.revision >= r2


async def test_an_expired_lease_takes_its_keys(etcd: Etcd, prefix: str) -> None:
    p = prefix.encode()
    lease = await etcd.grant(2)
    assert lease > 0
    await etcd.put(p + b"leased", b"x", lease)
    await etcd.put(p + b"kept", b"y")
    got, _ = await etcd.get(p + b"leased")
    assert got is not None and got.lease == lease
    assert await etcd.keepalive(lease) == 2  # renewed while alive

    began = time.monotonic()
    await until(lambda: _absent(etcd, p + b"leased"), "the leased key expires", 6.0)
    assert 1.0 < time.monotonic() - began < 6.0
    assert await etcd.keepalive(lease) == 0  # gone: renewing says so
    await etcd.revoke(lease)  # revoking a lease already gone is not an error
    assert [kv.key for kv in (await etcd.range_prefix(p)).kvs] == [p + b"kept"]


async def _absent(etcd: Etcd, key: bytes) -> bool:
    return (await etcd.get(key))[0] is None


async def test_revoke_takes_the_keys_at_once(etcd: Etcd, prefix: str) -> None:
    p = prefix.encode()
    lease = await etcd.grant(30)
    await etcd.put(p + b"leased", b"x", lease)
    await etcd.revoke(lease)
    assert await _absent(etcd, p + b"leased")


async def test_failover_to_the_next_endpoint(cluster: EtcdCluster, prefix: str) -> None:
    p = prefix.encode()
    dead = dead_endpoint()
    client = Etcd([dead, cluster.endpoints[0]], timeout=1.0)
    try:
        began = time.monotonic()
        rev = await client.put(p + b"k", b"v")
        assert client.endpoint == cluster.endpoints[0]  # moved on, and stays there
        got, _ = await client.get(p + b"k")
        assert got is not None and got.value == b"v" and got.mod_revision == rev
        assert (await client.range_prefix(p)).kvs[0].value == b"v"
        assert time.monotonic() - began < 3.0
    finally:
        await client.close()
    # a watch uses the current endpoint; the session moves it on when it breaks
    client = Etcd([dead, cluster.endpoints[0]], timeout=1.0)
    try:
        with pytest.raises(EtcdUnavailable, match="watch broke"):
            await watched(client, p, rev, 1)
        client.next_endpoint()
        assert (await watched(client, p, rev, 1))[0][1][0].kv.value == b"v"
    finally:
        await client.close()


async def test_no_endpoint_answers() -> None:
    client = Etcd([dead_endpoint(), dead_endpoint()], timeout=1.0)
    try:
        began = time.monotonic()
        with pytest.raises(EtcdUnavailable) as exc:
            await client.put(b"/k", b"v")
        assert time.monotonic() - began < 1.0  # refused, not timed out
        message = str(exc.value)
        assert message.startswith("no etcd endpoint answered: ")
        assert all(e in message for e in client.endpoints)
        with pytest.raises(EtcdUnavailable):
            await client.range_prefix(b"/")
    finally:
        await client.close()
    with pytest.raises(ValueError):
        Etcd([])


async def test_endpoints_that_refuse_are_tried_again_until_the_deadline() -> None:
    """retry_for: every endpoint again after a back-off (0.1 s, 0.2 s, ...),
    then one error naming each endpoint and why; a refused connection never
    carried the request, so nothing is in doubt."""
    client = Etcd([dead_endpoint(), dead_endpoint()], timeout=1.0, retry_for=1.0)
    try:
        began = time.monotonic()
        with pytest.raises(EtcdUnavailable) as exc:
            await client.put(b"/k", b"v")
        took = time.monotonic() - began
        assert 0.9 < took < 1.5
        message = str(exc.value)
        assert re.match(r"no etcd endpoint answered in 1\.\d s \((\d+) attempts\); the last "
                        r"from each: ", message), message
        assert all(f"{e}: ClientConnectorError" in message for e in client.endpoints)
        assert not exc.value.doubtful and "may have applied" not in message
    finally:
        await client.close()


# -- FleetMember ---------------------------------------------------------------------------

def member_config(cluster: EtcdCluster, prefix: str, node: str = "n1",
                  endpoints: list[str] | None = None) -> FleetConfig:
    return FleetConfig(tuple(endpoints or cluster.endpoints), node, prefix, lease_ttl=2,
                       timeout=1.0, cache=None)


@contextlib.asynccontextmanager
async def running(member: FleetMember) -> AsyncIterator[FleetMember]:
    member.start()
    try:
        await asyncio.wait_for(member.loaded.wait(), 5)
        yield member
    finally:
        await member.stop()


async def test_member_reads_then_follows(etcd: Etcd, cluster: EtcdCluster,
                                         prefix: str) -> None:
    layout = Layout(prefix)
    await etcd.put(layout.config, SHARED.encode())
    first = await etcd.put(layout.zone("example.com.yaml"), zone_text(1).encode())
    changes: list[set[str]] = []
    member = FleetMember(member_config(cluster, prefix), changes.append, vote=False)
    async with running(member):
        assert member.state.docs_revision == first
        assert member.state.config_text() == SHARED.encode()
        assert member.state.zone_texts() == {"example.com.yaml": zone_text(1).encode()}
        assert {"docs", "contact"} <= set().union(*changes)
        assert member.in_contact and member.error is None and member.sessions == 1
        assert member.etcd.retry_for == 0  # one pass: the session starts over by itself

        changes.clear()
        second = await etcd.put(layout.zone("example.com.yaml"), zone_text(2).encode())
        await until(lambda: member.state.docs_revision == second, "the change arrives")
        assert member.state.zone_texts() == {"example.com.yaml": zone_text(2).encode()}
        await etcd.put(layout.drain("fra"), json.dumps({"state": "draining"}).encode())
        await until(lambda: "fra" in member.state.drains, "the drain arrives")
        assert {"docs"} in changes and {"drains"} in changes
        assert member.state.docs_revision == second  # a drain is not a document
        assert member.sessions == 1  # all of it through one watch


async def test_member_that_falls_behind_compaction_reads_everything_again(
        etcd: Etcd, cluster: EtcdCluster, prefix: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first session's read is made at an old revision, which is then
    compacted away before the watch starts: the watch gets Compacted, and
    the member starts a new session that reads everything again."""
    layout = Layout(prefix)
    await etcd.put(layout.config, SHARED.encode())
    old = await etcd.put(layout.zone("example.com.yaml"), zone_text(1).encode())
    await etcd.delete(layout.config)
    await etcd.put(layout.zone("other.example.yaml"), zone_text(1, "other.example.").encode())
    newest = await etcd.put(layout.zone("example.com.yaml"), zone_text(2).encode())
    compact_at = await etcd.put(layout.published, b"{}")

    member = FleetMember(member_config(cluster, prefix), lambda kinds: None, vote=False)
    real = member.etcd.range_prefix
    reads: list[int] = []

    async def stale_then_real(key: bytes, revision: int = 0) -> Any:
        if not reads:  # the first session: a read at an old revision ...
            read = await real(key, revision=old)
            compact(cluster, compact_at)  # ... compacted away before the watch starts
        else:
            read = await real(key, revision)
        reads.append(read.revision)
        return read

    monkeypatch.setattr(member.etcd, "range_prefix", stale_then_real)
    caplog.set_level("INFO", "geodns.fleet")
    async with running(member):
        await until(lambda: member.sessions >= 2 and len(reads) >= 2,
                    "a second session reads again")
        await until(lambda: member.state.docs_revision == compact_at, "the state catches up")
        assert member.state.config_text() is None  # deleted after the old read
        assert member.state.zone_texts() == {
            "example.com.yaml": zone_text(2).encode(),
            "other.example.yaml": zone_text(1, "other.example.").encode()}
        assert member.error is None
        assert newest < compact_at
    assert any("fell behind compaction" in r.getMessage() for r in caplog.records)


async def test_member_writes_status_and_votes_under_its_lease(etcd: Etcd, cluster: EtcdCluster,
                                                              prefix: str) -> None:
    layout = Layout(prefix)
    member = FleetMember(member_config(cluster, prefix, "n1"), lambda kinds: None)
    member.set_status({"revision": "etcd:0"})
    member.set_votes(HealthView({"fra": UP, "iad": DOWN}, {"iad": 50.0}, {"fra": "draining"}))
    async with running(member):
        await until(lambda: "n1" in member.state.votes and "n1" in member.state.nodes,
                    "the member sees its own keys")
        node, _ = await etcd.get(layout.node("n1"))
        votes, _ = await etcd.get(layout.votes("n1"))
        assert node is not None and votes is not None
        assert node.lease == votes.lease == member.lease != 0
        status = json.loads(node.value)
        assert status["revision"] == "etcd:0" and status["lease_ttl"] == 2
        assert member.state.votes["n1"] == HealthView({"fra": UP, "iad": DOWN}, {"iad": 50.0})
    # stopping revokes the lease: the node is gone at once
    assert await _absent(etcd, layout.node("n1"))
    assert await _absent(etcd, layout.votes("n1"))


# -- geodns publish and geodns fleet ----------------------------------------------------

def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "geodns.yaml").write_text(SHARED)
    (tmp_path / "zones" / "example.com.yaml").write_text(zone_text(1))
    (tmp_path / "zones" / "other.example.yaml").write_text(zone_text(1, "other.example."))
    return tmp_path


def publish_argv(cluster: EtcdCluster, prefix: str, repo: Path, *extra: str) -> list[str]:
    return ["publish", "--etcd", ",".join(cluster.endpoints), "--prefix", prefix,
            "--config", str(repo / "geodns.yaml"), str(repo / "zones"), "--who", "tester",
            *extra]


def test_publish_dry_run_then_publish(cluster: EtcdCluster, prefix: str, repo: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo, "--dry-run"))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"add    {prefix}config ({len(SHARED)} bytes)",
        f"add    {prefix}zones/example.com.yaml ({len(zone_text(1))} bytes)",
        f"add    {prefix}zones/other.example.yaml ({len(zone_text(1, 'other.example.'))} "
        "bytes)",
        "dry run: 3 change(s) not written"]
    assert keys_under(cluster, prefix) == {}

    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo, "-m", "first"))
    assert code == 0, err
    m = re.search(r"^published etcd:(\d+)$", out, re.M)
    assert m, out
    stored = keys_under(cluster, prefix)
    assert stored[f"{prefix}config"] == SHARED.encode()
    assert stored[f"{prefix}zones/example.com.yaml"] == zone_text(1).encode()
    meta = json.loads(stored[f"{prefix}published"])
    assert meta["who"] == "tester" and meta["message"] == "first"
    assert len(meta["changes"]) == 3

    # the same again: nothing to write
    code, out, _ = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 0 and out.startswith(f"nothing to publish: etcd already holds this "
                                        f"(etcd:{m.group(1)})")

    # a zone file removed and one changed: one transaction
    (repo / "zones" / "other.example.yaml").unlink()
    (repo / "zones" / "example.com.yaml").write_text(zone_text(2))
    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 0, err
    assert f"delete {prefix}zones/other.example.yaml" in out
    assert f"change {prefix}zones/example.com.yaml" in out
    assert sorted(keys_under(cluster, prefix)) == [f"{prefix}config", f"{prefix}published",
                                                   f"{prefix}zones/example.com.yaml"]
    # geodns fleet says who published what
    code, out, _ = run_cli(capsys, "fleet", "--etcd", cluster.endpoints[0], "--prefix", prefix)
    assert code == 0
    assert re.match(r"published etcd:\d+ by tester at ", out)
    assert "(no node is connected)" in out


def test_publish_refuses_an_invalid_zone_and_writes_nothing(
        cluster: EtcdCluster, prefix: str, repo: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = repo / "zones" / "example.com.yaml"
    bad.write_text(zone_text(1, www="999.0.0.1"))
    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{bad}:6:33: ") and "999.0.0.1" in lines[0]
    assert lines[-1] == "1 problem(s): nothing published"
    assert keys_under(cluster, prefix) == {}
    # a bad shared configuration too (a node's own key in it), with its line
    bad.write_text(zone_text(1))
    (repo / "geodns.yaml").write_text(SHARED + "listen: ['0.0.0.0:53']\n")
    code, _, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 2
    assert err.startswith(f"{repo / 'geodns.yaml'}:5:1: listen is a node's own setting")
    assert keys_under(cluster, prefix) == {}


def test_publish_a_configuration_checked_against_the_zones_in_etcd(
        cluster: EtcdCluster, prefix: str, repo: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, *publish_argv(cluster, prefix, repo))[0] == 0
    before = keys_under(cluster, prefix)
    # only the configuration, without the PoP iad the zones in etcd use
    only_fra = repo / "fra-only.yaml"
    only_fra.write_text("pops:\n  fra: {location: [50.11, 8.68]}\n")
    code, _, err = run_cli(capsys, "publish", "--etcd", cluster.endpoints[0], "--prefix",
                           prefix, "--config", str(only_fra))
    assert code == 2
    assert f"etcd:{prefix}zones/example.com.yaml:6:" in err and "iad" in err
    assert keys_under(cluster, prefix) == before


async def test_a_stale_publisher_writes_nothing(etcd: Etcd, cluster: EtcdCluster, prefix: str,
                                                repo: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    layout = Layout(prefix)
    local = pub.read_local(repo / "geodns.yaml", repo / "zones", Problems())
    plan, _ = await pub.plan(etcd, layout, local)
    assert len(plan.puts) == 3 and not plan.deletes
    # someone else publishes meanwhile
    (repo / "zones" / "example.com.yaml").write_text(zone_text(5))
    code, _, err = await asyncio.to_thread(run_cli, capsys,
                                           *publish_argv(cluster, prefix, repo))
    assert code == 0, err
    theirs = keys_under(cluster, prefix)
    with pytest.raises(pub.Stale):
        await pub.apply(etcd, layout, plan, "late", "stale")
    assert keys_under(cluster, prefix) == theirs  # not a byte of the stale plan


def test_publish_says_when_it_was_stale(cluster: EtcdCluster, prefix: str, repo: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(capsys, *publish_argv(cluster, prefix, repo, "--who", "alice"))[0] == 0
    real_apply = pub.apply

    async def someone_else_first(etcd: Etcd, layout: Layout, p: pub.Plan, who: str,
                                 message: str) -> int:
        await etcd.put(layout.published, json.dumps({"who": "bob"}).encode())
        return await real_apply(etcd, layout, p, who, message)

    monkeypatch.setattr(pub, "apply", someone_else_first)
    (repo / "zones" / "example.com.yaml").write_text(zone_text(2))
    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 3
    assert f"change {prefix}zones/example.com.yaml" in out
    assert "etcd changed since it was read at revision" in err
    assert "last publish by alice" in err and "nothing was written" in err
    assert "run it again" in err
    assert keys_under(cluster, prefix)[f"{prefix}zones/example.com.yaml"] == \
        zone_text(1).encode()


def lose_answers(monkeypatch: pytest.MonkeyPatch, lost: int,
                 before: Callable[[], Any] | None = None, send: bool = True) -> list[str]:
    """The first ``lost`` transactions any client sends are sent (with
    ``send``) but their answers lost, as when the member that took one
    loses its leader; ``before`` runs before each.  Every attempt's path is
    listed."""
    from geodns.fleet import etcd as etcd_module

    attempts: list[str] = []
    real = Etcd._post_one

    async def lossy(self: Etcd, endpoint: str, path: str, body: dict[str, Any],
                    timeout: float) -> dict[str, Any]:
        attempts.append(path)
        if path == "/v3/kv/txn" and attempts.count(path) <= lost:
            if before is not None:
                before()
            if send:
                await real(self, endpoint, path, body, timeout)
            raise etcd_module._Transient(f"{endpoint}: etcdserver: leader changed", True)
        return await real(self, endpoint, path, body, timeout)

    monkeypatch.setattr(Etcd, "_post_one", lossy)
    return attempts


def test_a_publish_whose_answer_was_lost_is_published_once(
        cluster: EtcdCluster, prefix: str, repo: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction is applied but its answer lost: the publish sends it
    again, whose comparisons then fail (nothing written twice), sees its own
    ``published`` and reports the revision the first attempt made."""
    attempts = lose_answers(monkeypatch, 1)
    code, out, err = run_cli(capsys, *publish_argv(cluster, prefix, repo, "-m", "once"))
    assert code == 0, err
    assert attempts.count("/v3/kv/txn") == 2
    m = re.search(r"^published etcd:(\d+)$", out, re.M)
    assert m, out
    doc = gateway_call(cluster.endpoints[0], "/v3/kv/range",
                       {"key": base64.b64encode(f"{prefix}published".encode()).decode()})
    kv = doc["kvs"][0]
    assert int(kv["version"]) == 1 and int(kv["mod_revision"]) == int(m.group(1))
    assert json.loads(base64.b64decode(kv["value"]))["message"] == "once"
    assert keys_under(cluster, prefix)[f"{prefix}zones/example.com.yaml"] == \
        zone_text(1).encode()


def test_a_lost_answer_then_another_publish_is_reported_as_unknown(
        cluster: EtcdCluster, prefix: str, repo: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is lost and someone else publishes meanwhile: whether the
    lost attempt came first cannot be told, and publish says so (exit 3)
    instead of "nothing was written"."""
    assert run_cli(capsys, *publish_argv(cluster, prefix, repo, "--who", "alice"))[0] == 0
    other = base64.b64encode(f"{prefix}published".encode()).decode()
    lose_answers(monkeypatch, 1, send=False, before=lambda: gateway_call(
        cluster.endpoints[0], "/v3/kv/put",
        {"key": other, "value": base64.b64encode(b'{"who": "bob"}').decode()}))
    (repo / "zones" / "example.com.yaml").write_text(zone_text(2))
    code, _, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 3
    assert "went unanswered" in err and "cannot be told" in err and "geodns fleet" in err
    assert "nothing was written" not in err
    assert keys_under(cluster, prefix)[f"{prefix}zones/example.com.yaml"] == \
        zone_text(1).encode()


def test_publish_gives_up_on_lost_answers_and_says_it_may_have_written(
        cluster: EtcdCluster, prefix: str, repo: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pub, "RETRY_FOR", 0.5)
    lose_answers(monkeypatch, 1000, send=False)
    began = time.monotonic()
    code, _, err = run_cli(capsys, *publish_argv(cluster, prefix, repo))
    assert code == 1 and time.monotonic() - began < 2.0
    assert err.startswith("geodns publish: no etcd endpoint answered in 0.")
    assert f"{cluster.endpoints[0]}: etcdserver: leader changed" in err
    assert "may or may not have been applied" in err and "nothing was written" not in err


def test_publish_without_etcd(repo: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pub, "RETRY_FOR", 0.5)  # 10 s by default
    code, _, err = run_cli(capsys, "publish", "--etcd", dead_endpoint(), "--config",
                           str(repo / "geodns.yaml"))
    assert code == 1 and err.startswith("geodns publish: no etcd endpoint answered")
    code, _, err = run_cli(capsys, "publish", "--etcd", dead_endpoint())
    assert code == 2 and "give --config FILE" in err


async def test_fleet_json_lists_the_nodes_under_a_lease(
        etcd: Etcd, cluster: EtcdCluster, prefix: str, repo: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await asyncio.to_thread(run_cli, capsys,
                                             *publish_argv(cluster, prefix, repo))
    assert code == 0, err
    newest = re.search(r"published (etcd:\d+)", out)
    assert newest is not None
    fleet = ["fleet", "--etcd", cluster.endpoints[0], "--prefix", prefix]
    members = [FleetMember(member_config(cluster, prefix, n), lambda kinds: None)
               for n in ("n1", "n2")]
    members[0].set_status({"revision": newest.group(1), "health": "fleet"})
    members[1].set_status({"revision": "etcd:1", "health": "own"})
    for m, state in zip(members, (UP, DOWN), strict=True):
        m.set_votes(HealthView({"fra": state}))
    async with running(members[0]), running(members[1]):
        await until(lambda: len(members[0].state.nodes) == 2
                    and len(members[0].state.votes) == 2, "both nodes are written")
        code, out, _ = await asyncio.to_thread(run_cli, capsys, *fleet, "--json")
        assert code == 0
        doc = json.loads(out)
        assert doc["newest_revision"] == newest.group(1)
        assert doc["published"]["who"] == "tester"
        assert sorted(doc["nodes"]) == ["n1", "n2"]
        assert doc["nodes"]["n1"]["behind"] is False
        assert doc["nodes"]["n2"]["behind"] is True
        assert doc["nodes"]["n1"]["lease_ttl"] == 2
        assert doc["votes"]["n1"]["states"] == {"fra": "up"}
        assert doc["votes"]["n2"]["states"] == {"fra": "down"}
        leases = set()
        for n in ("n1", "n2"):
            kv, _ = await etcd.get(Layout(prefix).node(n))
            assert kv is not None
            leases.add(kv.lease)
        assert len(leases) == 2 and 0 not in leases  # each node under its own lease

        code, out, _ = await asyncio.to_thread(run_cli, capsys, *fleet, "--check")
        assert code == 1  # n2 is behind
        assert re.search(rf"^n2 +etcd:1 .* BEHIND {newest.group(1)}$", out, re.M)
        assert "nodes disagree on:" in out and "fra: n1 up, n2 down" in out
    # stopped: the leases are revoked and the nodes gone
    code, out, _ = await asyncio.to_thread(run_cli, capsys, *fleet, "--json")
    assert code == 0 and json.loads(out)["nodes"] == {} and json.loads(out)["votes"] == {}
