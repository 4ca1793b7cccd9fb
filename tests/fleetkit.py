"""A fleet on one machine for tests: a git-like directory with the fleet's
shared configuration and zones, ``geodns publish`` run in-process, and
``geodns serve`` nodes (child processes, :class:`serveproc.Served`) that
read it from a real etcd cluster (:mod:`etcdcluster`).

The test zone ``fleet.test.`` carries its revision number in a TXT record
(``rev N``) and in its serial, so a test can tell which published change
each answer comes from; ``www.fleet.test.`` is steered between two PoPs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
from etcdcluster import EtcdCluster, gateway_call
from serveproc import Served

from geodns import cli

TOKEN = "fleet-test-token-0123456789"
ZONE = "fleet.test."
FRA, IAD = "192.0.2.11", "198.51.100.11"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def shared_config(checks: dict[str, str] | None = None, up_votes: str = "2",
                  interval: float = 0.3) -> str:
    """Two PoPs (fra first for clients nobody can place); ``checks`` maps a
    PoP to the URL of its HTTP health check."""
    checks = checks or {}

    def pop(name: str, loc: str) -> str:
        check = f", checks: [{{type: http, url: {json.dumps(checks[name])}}}]" \
            if name in checks else ""
        return f"  {name}: {{location: {loc}{check}}}\n"

    return (f"health: {{interval: {interval}, timeout: 0.25, rise: 2, fall: 2, grace: 2, "
            f"flap_window: 0, up_votes: {json.dumps(up_votes)}}}\n"
            "pops:\n" + pop("fra", "[50.11, 8.68]") + pop("iad", "[38.95, -77.45]")
            + "default_order: [fra, iad]\n")


def zone_text(rev: int) -> str:
    return f"""origin: {ZONE}
ttl: 60
soa: {{mname: ns1, rname: hostmaster, serial: {rev}, refresh: 7200, retry: 3600,
      expire: 1209600, minimum: 60}}
records:
  "@": {{NS: [ns1], TXT: "rev {rev}"}}
  ns1: {{A: 192.0.2.53}}
  www:
    A:
      ttl: 30
      steer:
        pops: {{fra: {FRA}, iad: {IAD}}}
"""


class Health(ThreadingHTTPServer):
    """A PoP's health endpoint: 200 while ``up``, 503 when not."""

    daemon_threads = True

    def __init__(self, ip: str) -> None:
        self.up = True

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if server.up else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__((ip, 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/health"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Fleet:
    """The fleet's repository, its publisher, and its nodes."""

    def __init__(self, tmp: Path, endpoints: Sequence[str], lease_ttl: int = 3) -> None:
        self.tmp = tmp
        self.endpoints = list(endpoints)
        self.lease_ttl = lease_ttl
        self.repo = tmp / "repo"
        (self.repo / "zones").mkdir(parents=True)
        self.nodes: dict[str, Served] = {}
        self.ports: dict[str, tuple[int, int]] = {}  # node -> (dns, admin)

    # -- publishing ---------------------------------------------------------------
    def write(self, config: str | None = None, rev: int | None = None) -> None:
        if config is not None:
            (self.repo / "geodns.yaml").write_text(config)
        if rev is not None:
            (self.repo / "zones" / "fleet.test.yaml").write_text(zone_text(rev))

    def publish(self, *extra: str, endpoints: Sequence[str] | None = None
                ) -> tuple[int, str, str]:
        """``geodns publish`` of the repository: (exit status, stdout, stderr)."""
        argv = ["publish", "--config", str(self.repo / "geodns.yaml"), str(self.repo / "zones")]
        for e in endpoints or self.endpoints:
            argv += ["--etcd", e]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*argv, *extra])
        return code, out.getvalue(), err.getvalue()

    def published(self, *extra: str) -> int:
        """Publish; the revision it made (the test fails otherwise)."""
        code, out, err = self.publish(*extra)
        assert code == 0, (code, out, err)
        m = re.search(r"published etcd:(\d+)", out)
        assert m, out
        return int(m.group(1))

    def published_revision(self, cluster: EtcdCluster) -> int:
        """The revision of the last publish, as etcd has it."""
        key = base64.b64encode(b"/geodns/published").decode()
        for i, endpoint in enumerate(cluster.endpoints):
            if cluster.alive(i):
                doc = gateway_call(endpoint, "/v3/kv/range", {"key": key})
                return int(doc["kvs"][0]["mod_revision"])
        raise AssertionError("no etcd member is running")

    # -- nodes --------------------------------------------------------------------
    def node_config(self, name: str, endpoints: Sequence[str] | None = None,
                    host: str = "127.0.0.1") -> Path:
        home = self.tmp / name
        home.mkdir(exist_ok=True)
        path = home / "geodns.yaml"
        etcd = ", ".join(endpoints or self.endpoints)
        path.write_text(f"""listen: ["{host}:0"]
admin: {{listen: "{host}:0", token: {TOKEN}}}
chaos: {{identity: {name}}}
reload: {{interval: 1}}
fleet:
  etcd: [{etcd}]
  node: {name}
  lease_ttl: {self.lease_ttl}
  timeout: 1
  cache: {home / 'cache.json'}
""")
        return path

    def start(self, name: str, endpoints: Sequence[str] | None = None,
              wrap: Sequence[str] = (), host: str = "127.0.0.1") -> Served:
        config = self.node_config(name, endpoints, host)
        node = Served(["--config", str(config)], cwd=config.parent, wrap=wrap)
        self.nodes[name] = node
        return node

    def ready(self, name: str) -> tuple[int, int]:
        node = self.nodes[name]
        ports = (node.dns_port(), node.admin_port())
        self.ports[name] = ports
        return ports

    def stop(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.stop()

    def stop_all(self) -> None:
        for name in list(self.nodes):
            self.stop(name)

    def wait_serving(self, revision: int, names: Sequence[str] | None = None,
                     timeout: float = 10.0, start: dict[str, int] | None = None
                     ) -> dict[str, float]:
        """When (monotonic) each node logged that it serves ``revision``."""
        out = {}
        for name in names or list(self.nodes):
            node = self.nodes[name]
            mark = (start or {}).get(name, 0)
            line = node.wait_for(lambda x: x.get("event") == "serving" and
                                 x.get("revision") == f"etcd:{revision}", timeout, mark)
            out[name] = node.arrived[node.lines.index(line)]
        return out

    def status(self, name: str, host: str = "127.0.0.1") -> dict[str, Any]:
        with _OPENER.open(f"http://{host}:{self.ports[name][1]}/status", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc


def query(port: int, name: str, rtype: str = "A", host: str = "127.0.0.1",
          timeout: float = 1.0) -> dns.message.Message | None:
    q = dns.message.make_query(name, rtype)
    try:
        return dns.query.udp(q, host, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None


def txt_rev(resp: dns.message.Message | None) -> int | None:
    """N of the ``rev N`` TXT record in an answer."""
    if resp is None:
        return None
    for rrset in resp.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            text = b"".join(rrset[0].strings).decode()
            return int(text.split()[1])
    return None


def address(resp: dns.message.Message | None) -> str | None:
    if resp is None:
        return None
    for rrset in resp.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return str(rrset[0])
    return None


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def wait_until(check: Any, timeout: float, every: float = 0.02) -> float:
    """Seconds until ``check()`` is true (the test fails after ``timeout``)."""
    began = time.monotonic()
    while True:
        if check():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(every)


__all__ = ["FRA", "IAD", "TOKEN", "ZONE", "Fleet", "Health", "address", "percentile", "query",
           "shared_config", "txt_rev", "wait_until", "zone_text"]
