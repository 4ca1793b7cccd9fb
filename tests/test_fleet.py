"""A fleet on loopback: 3 etcd members and 3 geodns nodes, each a real
process.  Published changes reach every node, under load, with nothing lost;
etcd members die (the leader, then all of them) and the nodes keep serving;
an invalid revision is served by no node; drains reach every node; a node
that dies stops counting within its lease time."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest
from etcdcluster import EtcdCluster, etcd_cluster, gateway_call
from fleetkit import (
    FRA,
    IAD,
    TOKEN,
    ZONE,
    Fleet,
    Health,
    address,
    percentile,
    query,
    shared_config,
    txt_rev,
    wait_until,
)
from refservers import skip_or_fail

NODES = ("n1", "n2", "n3")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    c = etcd_cluster(tmp_path / "etcd", members=3)
    yield c
    c.stop_all()


@pytest.fixture
def fleet(tmp_path: Path, cluster: EtcdCluster) -> Iterator[Fleet]:
    f = Fleet(tmp_path, cluster.endpoints)
    yield f
    f.stop_all()


def start_fleet(fleet: Fleet, rev: int = 1) -> int:
    fleet.write(shared_config(), rev)
    revision = fleet.published("-m", "first")
    for name in NODES:
        fleet.start(name)
    for name in NODES:
        fleet.ready(name)
    fleet.wait_serving(revision)
    return revision


class Checker(threading.Thread):
    """Asks one node, in a loop, for the revision TXT and the steered name:
    every answer must come, revisions must never go back, and www must be
    fra's address."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = self.lost = 0
        self.wrong: list[str] = []
        self.seen: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        last = 0
        while not self.stop.is_set():
            self.sent += 2
            rev = txt_rev(query(self.port, ZONE, "TXT", timeout=2))
            www = query(self.port, "www." + ZONE, timeout=2)
            if rev is None:
                self.lost += 1
            elif rev < last:
                self.wrong.append(f"rev {rev} after {last}")
            else:
                last = rev
                self.seen.append(rev)
            if www is None:
                self.lost += 1
            elif address(www) != FRA:
                self.wrong.append(f"www {address(www)}")
            self.stop.wait(0.005)


def dnsperf(port: int, seconds: int, rate: int, workdir: Path) -> subprocess.Popen[str]:
    binary = shutil.which("dnsperf")
    if binary is None:
        skip_or_fail("dnsperf is not installed (Debian package dnsperf)")
    queries = workdir / f"queries-{port}.txt"
    queries.write_text(f"{ZONE} TXT\nwww.{ZONE} A\nns1.{ZONE} A\n")
    return subprocess.Popen([binary, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                             "-Q", str(rate), "-l", str(seconds), "-t", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def perf_counts(output: str) -> dict[str, int]:
    out = {}
    for key in ("sent", "completed", "lost"):
        m = re.search(rf"Queries {key}:\s+(\d+)", output)
        assert m, output
        out[key] = int(m.group(1))
    return out


def test_changes_reach_every_node_within_a_second_under_load(fleet: Fleet,
                                                             tmp_path: Path) -> None:
    rev = start_fleet(fleet)
    perfs = [dnsperf(fleet.ports[n][0], 14, 300, tmp_path) for n in NODES]
    checkers = [Checker(fleet.ports[n][0]) for n in NODES]
    for c in checkers:
        c.start()
    delays: list[float] = []
    try:
        time.sleep(1)
        for change in range(2, 22):
            fleet.write(rev=change)
            marks = {n: fleet.nodes[n].mark() for n in NODES}
            began = time.monotonic()
            revision = fleet.published("-m", f"change {change}")
            served = fleet.wait_serving(revision, start=marks)
            delays += [t - began for t in served.values()]
            time.sleep(0.2)
    finally:
        for c in checkers:
            c.stop.set()
            c.join(5)
        outputs = [p.communicate(timeout=30)[0] for p in perfs]
    assert len(delays) == 60
    p95 = percentile(delays, 95)
    print(f"publish to served on 3 nodes: p50 {percentile(delays, 50) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    assert p95 < 1.0, sorted(delays)
    for c in checkers:
        assert c.lost == 0 and not c.wrong, (c.lost, c.wrong[:5])
        assert c.seen[-1] == 21 and c.seen[0] <= 2
    for output in outputs:
        counts = perf_counts(output)
        assert counts["lost"] == 0 and counts["completed"] == counts["sent"] > 3000, output
    del rev


def test_etcd_members_die_and_nodes_keep_serving(fleet: Fleet, cluster: EtcdCluster) -> None:
    start_fleet(fleet)
    ports = [fleet.ports[n][0] for n in NODES]
    # The leader dies: every node keeps answering, the next change arrives.
    cluster.kill(cluster.leader())
    assert all(txt_rev(query(p, ZONE, "TXT")) == 1 for p in ports)
    fleet.write(rev=2)
    marks = {n: fleet.nodes[n].mark() for n in NODES}
    began = time.monotonic()
    revision = fleet.published()
    served = fleet.wait_serving(revision, start=marks, timeout=10)
    slowest = max(served.values()) - began
    print(f"after the leader was killed, a change was served everywhere in {slowest:.2f} s")
    assert slowest < 3.0
    # Every member stopped: the nodes answer from what they applied.
    for i in range(3):
        if cluster.alive(i):
            cluster.kill(i)
    time.sleep(fleet.lease_ttl + 1)
    for p in ports:
        assert txt_rev(query(p, ZONE, "TXT")) == 2
        assert address(query(p, "www." + ZONE)) == FRA
    status = fleet.status("n1")
    assert status["fleet"]["etcd"]["in_contact"] is False
    assert status["fleet"]["health"] == "own"
    assert status["serving"]["revision"] == f"etcd:{revision}"
    # A node restarted while etcd is down serves the copy it kept.
    fleet.stop("n1")
    node = fleet.start("n1")
    port, _ = fleet.ready("n1")
    node.wait_for(lambda x: x.get("event") == "fleet-cache")
    assert txt_rev(query(port, ZONE, "TXT")) == 2
    assert fleet.status("n1")["fleet"]["documents_from"] == "cache"
    # explain without the node (or etcd) shows what the node's copy serves.
    offline = subprocess.run([*fleet_cmd(), "explain", "www." + ZONE, "--client", "10.0.0.1",
                              "--config", str(fleet.tmp / "n1" / "geodns.yaml"), "--offline",
                              "--json"], capture_output=True, text=True, timeout=30)
    assert offline.returncode == 0, offline.stderr
    assert FRA in offline.stdout
    # etcd comes back: the nodes follow it again.
    cluster.restart_all()
    fleet.write(rev=3)
    marks = {n: fleet.nodes[n].mark() for n in NODES}
    revision = fleet.published()
    fleet.wait_serving(revision, start=marks, timeout=10)
    wait_until(lambda: fleet.status("n1")["fleet"]["health"] == "fleet", 5)


def test_an_invalid_revision_is_served_by_no_node(fleet: Fleet, cluster: EtcdCluster) -> None:
    revision = start_fleet(fleet)
    ports = [fleet.ports[n][0] for n in NODES]
    zone = fleet.repo / "zones" / "fleet.test.yaml"
    good = zone.read_text()
    # publish refuses it, naming the file and line, and writes nothing.
    zone.write_text(good.replace("serial: 1,", "serial: 2,").replace(
        "fra: 192.0.2.11", "ams: 192.0.2.12"))
    code, out, err = fleet.publish()
    assert code == 2, (out, err)
    assert f"{zone}:" in err and "ams" in err and "nothing published" in err
    assert fleet.published_revision(cluster) == revision
    # Forced into etcd anyway: every node keeps serving the last good one.
    marks = {n: fleet.nodes[n].mark() for n in NODES}
    cluster.put("/geodns/zones/fleet.test.yaml", zone.read_text())
    for name in NODES:
        fleet.nodes[name].wait_for(lambda x: "not served" in str(x.get("message")),
                                   start=marks[name])
    for p in ports:
        assert txt_rev(query(p, ZONE, "TXT")) == 1
    status = fleet.status("n2")
    assert status["serving"]["revision"] == f"etcd:{revision}"
    assert status["serving"]["refused"]["problems"]
    listing = subprocess.run(
        [*fleet_cmd(), "fleet", "--check", *etcd_args(cluster)], capture_output=True,
        text=True, timeout=30)
    assert listing.returncode == 1 and listing.stdout.count("REFUSED") == 3, listing.stdout
    # The next good publish is served everywhere.
    zone.write_text(good.replace("serial: 1,", "serial: 3,").replace('"rev 1"', '"rev 3"'))
    marks = {n: fleet.nodes[n].mark() for n in NODES}
    fleet.wait_serving(fleet.published(), start=marks)
    assert all(txt_rev(query(p, ZONE, "TXT")) == 3 for p in ports)


def test_fleet_drains_and_dead_nodes(fleet: Fleet, cluster: EtcdCluster) -> None:
    health = Health("127.0.0.1")
    try:
        drains_and_dead_nodes(fleet, cluster, health)
    finally:
        health.close()


def drains_and_dead_nodes(fleet: Fleet, cluster: EtcdCluster, health: Health) -> None:
    fleet.write(shared_config({"fra": health.url, "iad": health.url}), 1)
    revision = fleet.published()
    for name in NODES:
        fleet.start(name)
    for name in NODES:
        fleet.ready(name)
    fleet.wait_serving(revision)
    ports = {n: fleet.ports[n][0] for n in NODES}
    drain = subprocess.run([*fleet_cmd(), "drain", "fra", *etcd_args(cluster), "--who",
                            "alice", "--why", "fibre cut"], capture_output=True, text=True,
                           timeout=30)
    assert drain.returncode == 0, drain.stderr
    took = wait_until(lambda: all(address(query(p, "www." + ZONE)) == IAD
                                  for p in ports.values()), 3)
    print(f"a fleet-wide drain reached 3 nodes in {took * 1000:.0f} ms")
    d = fleet.status("n3")["fleet"]["drains"]["fra"]
    assert (d["who"], d["why"], d["state"]) == ("alice", "fibre cut", "draining")
    events = [e["message"] for e in fleet.status("n3")["events"]]
    assert "fleet-wide draining of fra by alice: fibre cut" in events, events
    undrain = subprocess.run([*fleet_cmd(), "undrain", "fra", *etcd_args(cluster)],
                             capture_output=True, text=True, timeout=30)
    assert undrain.returncode == 0, undrain.stderr
    wait_until(lambda: all(address(query(p, "www." + ZONE)) == FRA for p in ports.values()), 3)
    # Through one node's admin API, with the token: every node.
    admin = fleet.ports["n2"][1]
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/pops/fra/drain?scope=fleet",
                                 data=json.dumps({"who": "bob", "why": "test"}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["scope"] == "fleet"
    wait_until(lambda: all(address(query(p, "www." + ZONE)) == IAD for p in ports.values()), 3)
    assert fleet.status("n1")["fleet"]["drains"]["fra"]["who"] == "bob"
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/pops/fra/undrain?scope=fleet",
                                 data=b"", headers={"Authorization": f"Bearer {TOKEN}"},
                                 method="POST")
    urllib.request.urlopen(req, timeout=5).close()
    wait_until(lambda: all(address(query(p, "www." + ZONE)) == FRA for p in ports.values()), 3)
    # A node that dies without a word stops counting within its lease time
    # (its votes), and leaves the fleet when etcd expires its lease.
    def voters() -> set[str]:
        return set(fleet.status("n1")["fleet"]["votes"].get("fra", {}).get("votes", {}))

    wait_until(lambda: voters() == set(NODES), 10)
    assert {n["name"] for n in fleet.status("n1")["fleet"]["nodes"]} == set(NODES)
    fleet.nodes["n3"].kill_group()
    began = time.monotonic()
    wait_until(lambda: "n3" not in voters(), fleet.lease_ttl + 2)
    silent = time.monotonic() - began
    wait_until(lambda: "n3" not in {n["name"] for n in fleet.status("n1")["fleet"]["nodes"]},
               fleet.lease_ttl + 3)
    gone = time.monotonic() - began
    print(f"a killed node's votes stopped counting after {silent:.1f} s, and it left the "
          f"fleet after {gone:.1f} s (lease {fleet.lease_ttl} s)")
    assert silent <= fleet.lease_ttl


def fleet_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "geodns"]


def etcd_args(cluster: EtcdCluster) -> list[str]:
    return ["--etcd", ",".join(cluster.endpoints)]


def test_the_documented_example_fleet_validates() -> None:
    """docs/fleet/: every node configuration and the shared configuration
    with its zones are what docs/fleet.md says they are."""
    from geodns.config import load_config
    from geodns.fleet.publish import read_local, validate
    from geodns.problems import Problems

    docs = Path(__file__).parent.parent / "docs" / "fleet"
    for name in ("node-a.yaml", "node-b.yaml", "node-c.yaml", "node-c-split.yaml"):
        problems = Problems()
        cfg = load_config(docs / name, problems)
        assert not problems, [str(p) for p in problems]
        assert cfg.fleet is not None and cfg.fleet.node == f"node-{name[5]}"
    problems = Problems()
    local = read_local(docs / "shared" / "geodns.yaml", docs / "shared" / "zones", problems)
    assert local.config is not None and local.zones
    cfg = validate(("shared/geodns.yaml", local.config),
                   {n: (n, b) for n, b in local.zones.items()}, problems)
    assert not problems, [str(p) for p in problems]
    assert cfg.health.up_votes.kind == "count" and set(cfg.checks) == {"fra", "iad"}


def test_two_nodes_with_one_name_are_told_apart(fleet: Fleet) -> None:
    """A copied configuration: the second process with the same fleet.node
    is reported (log and event log) instead of silently sharing its keys."""
    fleet.write(shared_config(), 1)
    fleet.published()
    fleet.start("n1")
    fleet.ready("n1")
    twin = fleet.tmp / "twin"
    twin.mkdir()
    config = twin / "geodns.yaml"
    config.write_text((fleet.tmp / "n1" / "geodns.yaml").read_text().replace(
        str(fleet.tmp / "n1"), str(twin)))
    from serveproc import Served

    node = Served(["--config", str(config)], cwd=twin)
    try:
        line = node.wait_for(lambda x: "another node calls itself" in str(x.get("message")),
                             timeout=fleet.lease_ttl + 5)
        assert "'n1'" in str(line["message"])
    finally:
        node.stop()


def ecs_query(subnet: str) -> dns.message.Message:
    option = dns.edns.ECSOption.from_text(subnet)
    return dns.message.make_query("www.example.com.", "A", use_edns=0, options=[option])


def clients(count: int, seed: int = 10) -> list[str]:
    """Public /24s, spread over the address space (the same every run)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        net = ipaddress.ip_network(f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                                   f"{rng.randrange(256)}.0/24")
        if net.is_global:
            out.append(str(net))
    return out


def test_every_node_answers_every_client_as_one_node_would(fleet: Fleet,
                                                           cluster: EtcdCluster) -> None:
    """The repository's example configuration and zone, published: for 1,000
    client networks (ECS) every node gives the answer a single node reading
    the same files gives, and the same again once fra is drained fleet-wide."""
    import yaml

    from geodns.config import load_config
    from geodns.health.states import DRAINING
    from geodns.health.view import HealthView
    from geodns.problems import Problems
    from geodns.server.app import offline_snapshot

    root = Path(__file__).parent.parent
    example = yaml.safe_load((root / "geodns.yaml").read_text())
    shared = {k: example[k] for k in ("health", "pops", "default_order") if k in example}
    fleet.write(yaml.safe_dump(shared))
    shutil.copy(root / "zones" / "example.com.yaml", fleet.repo / "zones")
    revision = fleet.published()
    for name in NODES:
        fleet.start(name)
    for name in NODES:
        fleet.ready(name)
    fleet.wait_serving(revision)
    problems = Problems()
    single = load_config(root / "geodns.yaml", problems)
    assert not problems
    nets = clients(1000)

    def compare(health: HealthView) -> int:
        responder = offline_snapshot(single, health).responder
        moved = 0
        for net in nets:
            q = ecs_query(net)
            wire = responder.respond(q.to_wire(), True)
            assert wire is not None
            want = sorted(str(r) for r in dns.message.from_wire(wire).answer[0])
            for name in NODES:
                got = dns.query.udp(q, "127.0.0.1", port=fleet.ports[name][0], timeout=2)
                assert sorted(str(r) for r in got.answer[0]) == want, (name, net)
            moved += "192.0.2.11" not in want
        return moved

    before = compare(HealthView())
    drain = subprocess.run([*fleet_cmd(), "drain", "fra", *etcd_args(cluster)],
                           capture_output=True, text=True, timeout=30)
    assert drain.returncode == 0, drain.stderr
    wait_until(lambda: all(fleet.status(n)["fleet"]["drains"] for n in NODES), 3)
    after = compare(HealthView(admin={"fra": DRAINING}))
    assert after == len(nets) > before  # nobody is sent to fra any more; some were before


def test_a_fleet_node_restarts_without_a_trace(fleet: Fleet) -> None:
    """geodns restart on a fleet node: the successor serves the same revision
    at once, keeps the node's name in the fleet (no namesake alarm, no gap in
    its votes), and the other nodes never see it leave."""
    start_fleet(fleet)
    config = fleet.tmp / "n1" / "geodns.yaml"
    mark = fleet.nodes["n1"].mark()
    done = subprocess.run([*fleet_cmd(), "restart", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    node = fleet.nodes["n1"]
    node.wait_for(lambda x: x.get("event") == "handed-over", 10, mark)
    assert txt_rev(query(fleet.ports["n1"][0], ZONE, "TXT")) == 1
    time.sleep(fleet.lease_ttl + 0.5)
    assert not node.find(lambda x: "another node calls itself" in str(x.get("message")), mark)
    names = [n["name"] for n in fleet.status("n2")["fleet"]["nodes"]]
    assert sorted(names) == sorted(NODES)
    status = fleet.status("n1")
    assert status["fleet"]["health"] == "fleet"
    assert status["serving"]["revision"] == status["fleet"]["newest_revision"]



def test_publish_rides_through_a_leader_election(tmp_path: Path, cluster: EtcdCluster,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The leader is killed and a publish begins at once, through the dead
    leader first (refused), then the followers while they elect a new one:
    the publish waits the election out and succeeds, and each change is
    written exactly once.

    Two rounds as it comes (the killed member restarted in between): the
    followers usually answer "leader changed" one at a time, and only
    sometimes both within one pass.  Then one round where that is certain:
    the follower asked first is killed with the leader and started again
    2.5 s later: it refuses, and the other one campaigns alone, so it
    answers ("leader changed") only once a leader is elected, after the first
    one is back."""
    repo = Fleet(tmp_path, cluster.endpoints)
    repo.write(shared_config(), 1)
    repo.published("-m", "first")
    caplog.set_level("WARNING", "geodns.fleet")
    rode, took = 0, []
    for change in (2, 3, 4):
        leader = cluster.leader()
        others = [i for i in range(3) if i != leader]
        order = [cluster.endpoints[i] for i in [leader, *others]]
        repo.write(rev=change)
        caplog.clear()
        cluster.kill(leader)
        back = None
        if change == 4:  # the follower asked first goes down too, until 2.5 s from now
            cluster.kill(others[0])
            back = threading.Timer(2.5, cluster.restart, (others[0],))
            back.start()
        began = time.monotonic()
        try:
            code, out, err = repo.publish("-m", f"change {change}", endpoints=order)
        finally:
            if back is not None:
                back.join(20)
        took.append(time.monotonic() - began)
        assert code == 0, (change, out, err)
        rode += any(getattr(r, "event", None) == "etcd-retry" for r in caplog.records)
        # Exactly once: one publish, one write of ``published`` and of the zone.
        m = re.search(r"published etcd:(\d+)", out)
        assert m, out
        published = cluster_kv(cluster, "/geodns/published")
        zone = cluster_kv(cluster, "/geodns/zones/fleet.test.yaml")
        assert int(published["version"]) == change  # 1 + one write per publish
        assert int(published["mod_revision"]) == int(zone["mod_revision"]) == int(m.group(1))
        assert json.loads(base64.b64decode(published["value"]))["message"] == f"change {change}"
        assert f"serial: {change}," in base64.b64decode(zone["value"]).decode()
        cluster.restart(leader)
    print(f"publish right after the leader was killed: {', '.join(f'{t:.2f}' for t in took)} s; "
          f"{rode} of 3 had to try every member again")
    assert rode >= 1  # the last round at least
    assert max(took) < 12

def cluster_kv(cluster: EtcdCluster, key: str) -> dict[str, Any]:
    """``key`` as etcd's gateway gives it, read (linearizably) from a live member."""
    for i, endpoint in enumerate(cluster.endpoints):
        if cluster.alive(i):
            doc = gateway_call(endpoint, "/v3/kv/range",
                               {"key": base64.b64encode(key.encode()).decode()}, timeout=10)
            kv: dict[str, Any] = doc["kvs"][0]
            return kv
    raise AssertionError("no etcd member is running")
