"""Health-gated anycast without BGP: the announcer's decisions (pure), the
``geodns anycast-exabgp`` helper following a real node over its control
socket (what it tells ExaBGP), node drains kept in the state file, and the
configuration's checks.  The routes a router sees are in test_anycast_bgp.py.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from geodns.anycast import Action, Announcer, fitness
from geodns.config import load_config, load_config_text
from geodns.exabgp import follow
from geodns.problems import Problems
from geodns.server.app import Server
from tests.serveproc import Served, free_port

FIT = fitness((), None, None, False)


@pytest.mark.parametrize(("readiness", "check", "drained", "stopping", "reasons"), [
    ((), None, None, False, ()),
    (("no zone is served from zones",), None, None, False, ("no zone is served from zones",)),
    ((), "127.0.0.1:53: no answer within 0.5 s", None, False,
     ("self-check failed: 127.0.0.1:53: no answer within 0.5 s",)),
    ((), None, "maintenance", False, ("node drained: maintenance",)),
    ((), None, "", False, ("node drained",)),
    ((), None, None, True, ("stopping (lameduck)",)),
    (("stopping",), "x", "y", True, ("stopping", "self-check failed: x", "node drained: y",
                                     "stopping (lameduck)")),
])
def test_fitness(readiness: tuple[str, ...], check: str | None, drained: str | None,
                 stopping: bool, reasons: tuple[str, ...]) -> None:
    f = fitness(readiness, check, drained, stopping)
    assert f.reasons == reasons and f.fit == (not reasons)


def test_announce_at_once_first_then_only_after_the_hold_down() -> None:
    unfit = fitness((), "down", None, False)
    a = Announcer(hold_down=10)
    assert a.update(unfit, 0) is None and not a.announced  # never announced: nothing to do
    assert a.update(FIT, 1) == Action.ANNOUNCE  # the first: no hold-down
    assert a.update(FIT, 2) is None
    assert a.update(unfit, 3) == Action.WITHDRAW  # at once
    assert a.update(FIT, 4) is None and a.why[0].startswith("hold-down")
    assert a.update(unfit, 8) is None  # the run of fitness is broken
    assert a.update(FIT, 9) is None
    assert a.update(FIT, 18.9) is None
    assert a.update(FIT, 19) == Action.ANNOUNCE  # 10 s fit without a break
    assert a.changes == {"announce": 2, "withdraw": 1}


def test_a_flapping_node_does_not_flap_its_routes() -> None:
    a = Announcer(hold_down=5)
    a.update(FIT, 0)
    actions = []
    for t in range(1, 60):  # healthy and sick every other second
        f = FIT if t % 2 else fitness((), "flap", None, False)
        actions.append(a.update(f, t))
    assert [x for x in actions if x is not None] == [Action.WITHDRAW]


def test_configuration(tmp_path: Path) -> None:
    problems = Problems()
    cfg = load_config_text("anycast:\n  prefixes: [192.0.2.53/32, '2001:db8::53/128']\n"
                           "  speaker: bird\n  hold_down: 0\n"
                           "  bird: {socket: bird.ctl, protocols: [a4, a6]}\n"
                           "  check: {name: example.com., type: soa, interval: 0.2}\n",
                           str(tmp_path / "g.yaml"), tmp_path, problems)
    assert not problems
    assert cfg.anycast is not None
    assert cfg.anycast.prefixes == ("192.0.2.53/32", "2001:db8::53/128")
    assert cfg.anycast.hold_down == 0 and cfg.anycast.check_type == "SOA"
    assert cfg.anycast.bird_socket == tmp_path / "bird.ctl"
    assert cfg.anycast.bird_protocols == ("a4", "a6")
    problems = Problems()
    load_config_text("anycast:\n  prefixes: [192.0.2.53/24]\n  speaker: gobgp\n"
                     "  bird: {protocols: ['no way']}\n", "g.yaml", tmp_path, problems)
    text = [str(p) for p in problems]
    assert any("g.yaml:2:" in p and "host bits" in p for p in text), text
    assert any("g.yaml:3:" in p and "exabgp or bird" in p for p in text), text
    assert any("g.yaml:4:" in p and "BIRD protocol name" in p for p in text), text


ZONE = """\
origin: anycast.example.
soa: {mname: ns1, rname: h, serial: 1}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
"""


def node_setup(tmp_path: Path, hold_down: float = 0.5, workers: int = 1) -> tuple[Path, int]:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "anycast.example.yaml").write_text(ZONE)
    port, admin = free_port(), free_port()
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(f"listen: [127.0.0.1:{port}]\nzones: zones\n"
                   f"admin: {{listen: 127.0.0.1:{admin}, token: anycast-token-0123456789, "
                   "state_file: state.json}\n"
                   "anycast:\n  prefixes: [192.0.2.53/32]\n"
                   f"  hold_down: {hold_down}\n  check: {{interval: 0.2, timeout: 0.3}}\n"
                   f"workers: {workers}\n")
    return cfg, admin


class Helper:
    """geodns anycast-exabgp in a thread, writing to a buffer."""

    def __init__(self, control: Path, grace: float = 1.0) -> None:
        self.out = io.StringIO()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=follow, args=(control, ["192.0.2.53/32"]),
                                       kwargs={"grace": grace, "out": self.out,
                                               "stop": self.stop}, daemon=True)
        self.thread.start()

    def lines(self) -> list[str]:
        return [line for line in self.out.getvalue().splitlines() if line]

    def wait_lines(self, n: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.lines()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def post(admin: int, path: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer anycast-token-0123456789"})
    urllib.request.urlopen(req, timeout=5).close()


ANNOUNCE = "announce route 192.0.2.53/32 next-hop self"
WITHDRAW = "withdraw route 192.0.2.53/32"


@pytest.mark.parametrize("workers", [1, 2])
def test_the_exabgp_helper_follows_drains_restarts_and_a_dead_node(tmp_path: Path,
                                                                   workers: int) -> None:
    cfg, admin = node_setup(tmp_path, workers=workers)
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    helper = None
    try:
        node.dns_port()
        helper = Helper(tmp_path / ".geodns.sock")
        assert helper.wait_lines(1) == [ANNOUNCE]
        post(admin, "/node/drain")
        assert helper.wait_lines(2)[1] == WITHDRAW
        assert '"node"' in (tmp_path / "state.json").read_text()
        post(admin, "/node/undrain")
        assert helper.wait_lines(3)[2] == ANNOUNCE  # after the 0.5 s hold-down
        # A restart: the successor takes the control socket; nothing is withdrawn.
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "geodns", "restart", "--config",
                               str(cfg)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        time.sleep(1.5)
        assert helper.lines() == [ANNOUNCE, WITHDRAW, ANNOUNCE]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        # The successor's counts go on from its predecessor's (two announces, one withdraw).
        assert 'geodns_anycast_route_changes_total{action="withdraw"} 1.0' in metrics
        # The node dies: the helper withdraws by itself after its grace time.
        node.kill_group()
        began = time.monotonic()
        assert helper.wait_lines(4)[3] == WITHDRAW
        assert time.monotonic() - began < 3.0
    finally:
        if helper is not None:
            helper.close()
        node.stop()


def test_a_drained_node_stays_drained_after_a_restart_of_the_process(tmp_path: Path) -> None:
    cfg, admin = node_setup(tmp_path)
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    try:
        node.dns_port()
        post(admin, "/node/drain")
    finally:
        node.stop()
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    helper = None
    try:
        node.dns_port()
        helper = Helper(tmp_path / ".geodns.sock")
        time.sleep(1.0)
        assert ANNOUNCE not in helper.lines()
        post(admin, "/node/undrain")
        assert helper.wait_lines(1) == [ANNOUNCE]
    finally:
        if helper is not None:
            helper.close()
        node.stop()


def test_a_failing_self_check_withdraws(tmp_path: Path) -> None:
    """The self-check asks for a name the node does not serve: REFUSED, so
    the node is not fit, and it never announces; the reason is in /status."""
    cfg, admin = node_setup(tmp_path)
    cfg.write_text(cfg.read_text() + "  # asks the wrong zone\n")
    text = cfg.read_text().replace("check: {interval: 0.2, timeout: 0.3}",
                                   "check: {interval: 0.2, timeout: 0.3, name: other.example.}")
    cfg.write_text(text)
    node = Served(["--config", str(cfg)], cwd=tmp_path)
    helper = None
    try:
        node.dns_port()
        helper = Helper(tmp_path / ".geodns.sock")
        time.sleep(1.0)
        assert helper.lines() == []
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as resp:
            anycast = json.loads(resp.read())["anycast"]
        assert not anycast["announced"] and "REFUSED" in anycast["self_check"]["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert "geodns_anycast_announced 0.0" in metrics
    finally:
        if helper is not None:
            helper.close()
        node.stop()


@pytest.mark.parametrize(("state", "withdrawn"), [
    ("serving", 1), ("taking over", 0), ("taken over", 1)])
def test_a_node_still_taking_over_withdraws_nothing_when_it_stops(tmp_path: Path, state: str,
                                                                   withdrawn: int) -> None:
    """A worker of a node that is taking over from another (``workers`` > 1)
    and is stopped before the whole node serves (another worker failed to
    start, the running node gave up waiting) must not withdraw the routes the
    running node still announces.  Once its supervisor confirms, a stop
    withdraws as usual."""
    cfg_path, _ = node_setup(tmp_path)
    problems = Problems()
    config = load_config(cfg_path, problems)
    assert not problems

    async def run() -> dict[str, int]:
        server = Server(config, inherited={"provisional": state != "serving"})
        await server.start()
        assert server.anycast is not None
        for _ in range(100):
            if server.anycast.announcer.announced:
                break
            await asyncio.sleep(0.05)
        assert server.anycast.announcer.announced
        if state == "taken over":
            server._link_message({"confirmed": True})  # as the supervisor says it
        server.request_stop()
        await server.serve_forever()
        return dict(server.anycast.announcer.changes)

    changes = asyncio.run(run())
    assert changes == {"announce": 1, "withdraw": withdrawn}
