"""The fault-injection helpers themselves (tests/etcdcluster.py, tests/netns.py):
later tests trust that a killed etcd leader is replaced, that a restarted
member rejoins, that a blackhole route cuts one namespace off a service
address and that nothing is left behind.  If those broke, failures elsewhere
would blame geodns for the harness."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcdcluster import EtcdCluster, etcd_cluster, gateway_call
from netns import Netns, add_local_address, require_netns


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with etcd_cluster(tmp_path, members=3) as c:
        yield c


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_netns()
    with Netns() as n:
        yield n


def listener(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen()
    s.settimeout(2.0)
    return s


# -- etcd ------------------------------------------------------------------------------


def test_three_members_elect_a_leader_and_share_writes(cluster: EtcdCluster) -> None:
    assert cluster.leader() in range(3)
    assert len(set(cluster.endpoints)) == 3
    cluster.put("/geodns/test", "written via 0", i=0)
    assert cluster.get("/geodns/test", i=2) == "written via 0"
    assert cluster.get("/geodns/absent", i=1) is None


def test_a_killed_leader_is_replaced_and_a_restart_rejoins(cluster: EtcdCluster) -> None:
    old = cluster.leader()
    cluster.put("k", "before", i=old)
    killed_at = time.monotonic()
    cluster.kill(old)
    assert not cluster.alive(old)
    new = cluster.leader(timeout=5.0)
    assert new != old
    assert time.monotonic() - killed_at < 5.0
    others = [i for i in range(3) if i != old]
    cluster.put("k", "while down", i=others[0])
    for i in others:
        assert cluster.get("k", i=i) == "while down"
    with pytest.raises(OSError):
        gateway_call(cluster.endpoints[old], "/v3/maintenance/status")

    cluster.restart(old)
    assert cluster.alive(old)
    assert cluster.get("k", i=old) == "while down"  # caught up with the write it missed
    assert cluster.leader() in range(3)


# -- namespaces -------------------------------------------------------------------------


def test_a_namespace_reaches_a_root_address_until_blackholed(ns: Netns) -> None:
    with add_local_address() as service, listener(service) as server:
        port = int(server.getsockname()[1])
        assert ns.try_connect(service, port) == "ok"
        conn, peer = server.accept()
        conn.close()
        assert peer[0] == ns.ns_ip  # came over the veth, not from the root namespace

        ns.blackhole(service)
        started = time.monotonic()
        assert ns.try_connect(service, port, timeout=3.0) in ("EINVAL", "ENETUNREACH",
                                                             "EHOSTUNREACH")
        assert time.monotonic() - started < 2.5  # fails at once, not by timing out
        with socket.create_connection((service, port), timeout=2.0):
            pass  # the root namespace itself still reaches it
        server.accept()[0].close()

        ns.unblackhole(service)
        assert ns.try_connect(service, port) == "ok"


def test_a_namespace_reaches_etcd_on_the_veth_address(ns: Netns, tmp_path: Path) -> None:
    with etcd_cluster(tmp_path, members=1, listen_hosts=[ns.host_ip]) as c:
        [endpoint] = c.endpoints_on(ns.host_ip)
        port = int(endpoint.rsplit(":", 1)[1])
        assert ns.try_connect(ns.host_ip, port) == "ok"
        ns.blackhole(ns.host_ip)
        assert ns.try_connect(ns.host_ip, port) != "ok"


def test_closing_leaves_nothing_behind() -> None:
    require_netns()
    with Netns() as n, add_local_address() as service:
        sleeper = n.popen(["sleep", "60"])
        assert n.exists()
    assert sleeper.poll() is not None  # killed, or the namespace would live on unnamed
    assert not n.exists()
    assert subprocess.run(["ip", "link", "show", n.host_dev], capture_output=True,
                          check=False).returncode != 0
    addresses = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                               text=True, check=True).stdout
    assert f" {n.host_ip}/" not in addresses
    assert f" {service}/" not in addresses


def test_a_failed_setup_is_undone() -> None:
    require_netns()
    n = Netns()
    n.ns_dev = "x" * 20  # longer than an interface name may be: the veth cannot be made
    with pytest.raises(Exception, match="ip link add"), n:
        pass
    assert not n.exists()
