"""Start-up: what ``geodns check`` rejects, ``geodns serve`` refuses to start
with, naming the file or the address, and without ever answering a query.

Each case runs the real command in a child process (tests/serveproc.py) and
checks that it exits non-zero by itself within a deadline, that its log names
the culprit, and that a prober sending UDP and TCP queries to the address it
was given never got an answer.
"""

from __future__ import annotations

import contextlib
import io
import socket
from pathlib import Path

import pytest

from geodns.address import Address
from geodns.cli import _config_from_args, build_parser, main
from geodns.problems import Problems
from tests.serveproc import Prober, Served, busy_pair, free_port

EXIT_DEADLINE = 15.0  # a loaded machine starts Python slowly; a node that runs never exits

ZONE = """\
origin: start.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}}
"""
PLAIN_ZONE = """\
origin: start.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
"""
POPS = """\
pops:
  fra: {location: [50.11, 8.68]}
  iad: {location: [38.95, -77.45]}
default_order: [fra, iad]
"""


def setup(tmp_path: Path, config: str, zone: str = PLAIN_ZONE) -> Path:
    zones = tmp_path / "zones"
    zones.mkdir(exist_ok=True)
    (zones / "start.example.yaml").write_text(zone)
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(config + "zones: zones\n")
    return cfg


def check(args: list[str]) -> tuple[int, list[str]]:
    """``geodns check``: exit status and the problem lines it prints."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["check", *args])
    return code, err.getvalue().splitlines()


def refused(args: list[str], port: int | None, cwd: Path | None = None) -> Served:
    """Run ``geodns serve``; it must exit non-zero by itself, and nothing
    may ever answer on ``port`` (UDP or TCP) meanwhile."""
    node = Served(args, cwd)
    try:
        if port is None:
            code = node.exit_code(EXIT_DEADLINE)
            answers = 0
        else:
            with Prober(port) as prober:
                code = node.exit_code(EXIT_DEADLINE)
            answers = prober.answers
            assert prober.sent > 0
    finally:
        node.stop()
    assert code != 0, node.text()
    assert answers == 0, f"{answers} answers from a node that refused to start"
    assert not node.find(lambda x: x.get("event") == "listening"), node.text()
    assert not node.group_alive(), "a process of the node was left behind"
    return node


def errors(node: Served) -> list[str]:
    return [str(x["message"]) for x in node.find(lambda x: x.get("level") == "error")]


def problems(node: Served) -> list[str]:
    return [str(x["message"]) for x in node.find(lambda x: x.get("event") == "config-error")]


def test_corrupt_geoip_database(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(bytes(range(256)) * 40)
    port = free_port()
    cfg = setup(tmp_path, f"listen: [127.0.0.1:{port}]\ngeoip: {{database: garbage.mmdb}}\n"
                + POPS, ZONE)
    code, lines = check(["--config", str(cfg)])
    assert code == 1 and any(str(garbage) in line for line in lines), lines
    node = refused(["--config", str(cfg)], port)
    assert any(str(garbage) in e for e in errors(node)), node.text()
    # The same problem, reported the same way.
    assert problems(node) == [line for line in lines if str(garbage) in line]


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_admin_port(tmp_path: Path, workers: int) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        admin = occupant.getsockname()[1]
        port = free_port()
        cfg = setup(tmp_path, f"listen: [127.0.0.1:{port}]\nworkers: {workers}\n"
                    f"admin: {{listen: 127.0.0.1:{admin}}}\n")
        node = refused(["--config", str(cfg)], port)
    assert any(f"127.0.0.1:{admin}" in e for e in errors(node)), node.text()


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_dns_port(tmp_path: Path, workers: int) -> None:
    udp, tcp = busy_pair()
    try:
        busy = udp.getsockname()[1]
        free = free_port()
        # The free address comes first: it is bound, then let go of unanswered.
        cfg = setup(tmp_path, f"listen: [127.0.0.1:{free}, 127.0.0.1:{busy}]\n"
                    f"workers: {workers}\n")
        node = refused(["--config", str(cfg)], free)
    finally:
        udp.close()
        tcp.close()
    assert any(f"127.0.0.1:{busy}" in e for e in errors(node)), node.text()


def test_unbracketed_ipv6_listen_address(tmp_path: Path) -> None:
    cfg = setup(tmp_path, 'listen: ["::1:5300"]\n')
    code, lines = check(["--config", str(cfg)])
    assert code == 1
    expected = f"{cfg}:1:10: listen: '::1:5300': IPv6 addresses go in brackets: [::1] or " \
               "[::1]:5300"
    assert expected in lines, lines
    node = refused(["--config", str(cfg)], None)
    assert problems(node) == [expected]
    # On the command line too: check and serve say the same.
    args = ["--listen", "::1:5300", "--zones", str(tmp_path / "zones")]
    code, lines = check(args)
    assert code == 1
    node = refused(args, None)
    assert problems(node) == [line for line in lines if line.startswith("--listen:")]
    assert problems(node) == ["--listen:1:1: '::1:5300': IPv6 addresses go in brackets: "
                              "[::1] or [::1]:5300"]


def test_zone_problem_is_reported_by_check_and_serve_alike(tmp_path: Path) -> None:
    """A zone problem and a configuration problem at once: both commands
    list both, with file:line, in the same words."""
    port = free_port()
    broken = PLAIN_ZONE.replace("192.0.2.53", "192.0.2.300")
    cfg = setup(tmp_path, f"listen: [127.0.0.1:{port}]\nworkers: 0\n", broken)
    zone = tmp_path / "zones" / "start.example.yaml"
    code, lines = check(["--config", str(cfg)])
    assert code == 1 and lines[-1] == "2 problem(s) found", lines
    listed = lines[:-1]
    assert listed[0].startswith(f"{cfg}:2:10: workers 0 is out of range"), lines
    assert listed[1].startswith(f"{zone}:5:12: A: '192.0.2.300'"), lines
    node = refused(["--config", str(cfg)], port)
    assert problems(node) == listed


def test_no_configuration_refuses_to_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    node = refused([], None, cwd=empty)
    assert any("no configuration" in e and "--config" in e for e in errors(node)), node.text()
    # The default file is used when it is there.
    port = free_port()
    (empty / "zones").mkdir()
    (empty / "zones" / "start.example.yaml").write_text(PLAIN_ZONE.replace("53}", "300}"))
    (empty / "geodns.yaml").write_text(f"listen: [127.0.0.1:{port}]\nzones: zones\n")
    node = refused([], port, cwd=empty)  # it reads ./geodns.yaml: the broken zone stops it
    assert any("start.example.yaml:5:" in p for p in problems(node)), node.text()


def test_listen_without_a_port_means_port_53(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "start.example.yaml").write_text(PLAIN_ZONE)
    for command in ("serve", "check"):
        args = build_parser().parse_args([command, "--listen", "127.0.0.1", "--listen", "[::1]",
                                          "--zones", str(zones)])
        found = Problems()
        cfg = _config_from_args(args, found)
        assert not list(found)
        assert cfg.listen == [Address("127.0.0.1", 53), Address("::1", 53)]
    code, lines = check(["--listen", "127.0.0.1", "--zones", str(zones)])
    assert code == 0, lines
    cfg_file = setup(tmp_path, "listen: [127.0.0.1, '[::1]']\n")
    code, lines = check(["--config", str(cfg_file)])
    assert code == 0, lines
