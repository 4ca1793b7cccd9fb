"""The command line: --version, --help, finding the configuration, check,
import-zone, serve with workers."""

from __future__ import annotations

import importlib.metadata
import shutil
import signal
import socket
from pathlib import Path

import dns.message
import dns.query
import pytest

from geodns import __version__
from geodns.cli import COMMANDS, build_parser, main
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_text
from tests.conftest import TEST_ZONE, section
from tests.serveproc import Served

ROOT = Path(__file__).parent.parent
Capsys = pytest.CaptureFixture[str]
DATA = Path(__file__).parent / "data"


def test_check_example_configuration_is_clean(capsys: Capsys) -> None:
    assert main(["check", "--config", str(ROOT / "geodns.yaml")]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_check_lists_every_problem_with_location(tmp_path: Path, capsys: Capsys) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "a.example.yaml").write_text(
        "soa: {mname: ns1, rname: h}\nrecords:\n  '@': {NS: [ns1]}\n  ns1: {A: 1.2.3.4.5}\n")
    (zones / "b.example.yaml").write_text("records: [\n")
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text("listen: [127.0.0.1:99999]\nworkers: 0\nzones: zones\nbogus: 1\n")
    assert main(["check", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{cfg}:1:10: listen:") for line in err), err
    assert any(line.startswith(f"{cfg}:2:10: workers 0 is out of range") for line in err), err
    assert any(line.startswith(f"{cfg}:4:1: unknown key 'bogus'") for line in err), err
    assert any(line.startswith(f"{zones}/a.example.yaml:4:12: A:") for line in err), err
    assert any(line.startswith(f"{zones}/b.example.yaml:2:1: YAML syntax") for line in err), err
    assert err[-1] == "5 problem(s) found"


def test_check_missing_zones_directory(tmp_path: Path, capsys: Capsys) -> None:
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text("zones: nowhere\n")
    assert main(["check", "--config", str(cfg)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_import_zone_round_trips(capsys: Capsys) -> None:
    assert main(["import-zone", str(DATA / "ref-basic.zone"), "--origin", "example.test."]) == 0
    text = capsys.readouterr().out
    problems = Problems()
    zone = load_zone_text(text, "imported", "example.test.", problems)
    assert zone is not None, list(map(str, problems))
    assert zone.serial == 2024060101


def test_import_zone_rejects_unsupported_types_unless_asked(tmp_path: Path,
                                                            capsys: Capsys) -> None:
    src = tmp_path / "db.x"
    src.write_text("$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n"
                   "al DNAME y.\n@ NSEC3PARAM 1 0 0 -\n")
    assert main(["import-zone", str(src), "--origin", "x."]) == 1
    err = capsys.readouterr().err
    assert f"{src}:5: DNAME is not supported" in err and f"{src}:6: NSEC3PARAM" in err
    assert main(["import-zone", str(src), "--origin", "x.", "--skip-unsupported"]) == 0
    out, err = capsys.readouterr()
    assert "left out" in err and "DNAME" not in out and "NSEC3PARAM" not in out


def test_import_zone_reports_broken_master_file(tmp_path: Path, capsys: Capsys) -> None:
    src = tmp_path / "db.x"
    src.write_text("$TTL 300\n@ SOA ns1 h 1 2 3 4 5\nwww A 999.1.1.1\n")
    assert main(["import-zone", str(src), "--origin", "x."]) == 1
    assert "db.x" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_two_workers(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    shutil.copy(TEST_ZONE, zones)
    port = _free_port()
    node = Served(["--listen", f"127.0.0.1:{port}", "--zones", str(zones), "--workers", "2"])
    try:
        # The first worker starts alone, the second once it serves.
        for w in (0, 1):
            def serving(x: dict[str, object], w: int = w) -> bool:
                return x.get("worker") == f"worker{w}" and \
                    str(x.get("message")).startswith("serving zones")
            node.wait_for(serving)
        q = dns.message.make_query("www.test.example.", "A")
        for _ in range(50):
            # A fresh socket (source port) each time spreads over the workers.
            resp = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
            assert len(section(resp.answer)) == 2
        resp = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
        assert len(section(resp.answer)) == 2
        node.proc.send_signal(signal.SIGTERM)
        assert node.exit_code(15) == 0
        assert any("started 2 workers" in m for m in node.messages())
        assert sum(m.startswith("listening on 127.0.0.1") for m in node.messages()) == 2
    finally:
        node.stop()


@pytest.mark.parametrize("argv", [["serve", "--listen", "nonsense"],
                                  ["serve", "--zones", "/nonexistent/zones"]])
def test_serve_refuses_bad_arguments(argv: list[str]) -> None:
    assert main(argv) == 2


@pytest.mark.parametrize("listen,message", [
    ("::1:5300", "'::1:5300': IPv6 addresses go in brackets: [::1] or [::1]:5300"),
    ("::1", "'::1': IPv6 addresses go in brackets"),
])
def test_check_rejects_unbracketed_ipv6_listen_argument(tmp_path: Path, capsys: Capsys,
                                                        listen: str, message: str) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    shutil.copy(TEST_ZONE, zones)
    assert main(["check", "--listen", listen, "--zones", str(zones)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("--listen:1:1: ") and message in line for line in err), err


def test_version_is_the_package_version(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"geodns {__version__}\n"
    # One source of truth: the installed metadata carries the same version.
    assert importlib.metadata.version("geodns") == __version__


def _help(argv: list[str], capsys: Capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out: str = capsys.readouterr().out
    return out


def test_help_is_plain_text_with_every_command(capsys: Capsys) -> None:
    text = _help(["--help"], capsys)
    lines = text.splitlines()
    assert lines[0] == "usage: geodns [--version] [--help] COMMAND [ARGS]"
    # A paragraph that says what geodns is, before anything else.
    assert lines[1] == "" and lines[2].startswith("geodns is an authoritative DNS server")
    assert "{" not in text and "}" not in text, text  # no argparse choice blobs
    assert max(map(len, lines)) <= 79, text
    # Every command the parser knows, on a line of its own with a summary.
    sub = next(a for a in build_parser()._actions if isinstance(a.choices, dict))
    assert isinstance(sub.choices, dict)
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines
              if line.startswith("  ") and not line.startswith("   ")
              and not line.lstrip().startswith("-")}
    assert set(listed) == set(sub.choices), listed
    assert all(len(summary) > 15 for summary in listed.values()), listed
    assert {t for t, _ in COMMANDS} <= {line.rstrip(":") for line in lines}
    assert "geodns COMMAND --help" in text and "docs/configuration.md" in text


@pytest.mark.parametrize("command", [name for _, group in COMMANDS for name, _ in group])
def test_every_command_has_its_own_help(command: str, capsys: Capsys) -> None:
    text = _help([command, "--help"], capsys)
    assert text.startswith(f"usage: geodns {command} ")
    summary = dict(s for _, group in COMMANDS for s in group)[command]
    assert summary[1:] in " ".join(text.split()), text


@pytest.mark.parametrize("argv,instead", [
    (["serve"], "--zones DIR"),
    (["check"], "--zones DIR"),
    (["explain", "www.example.com", "--client", "192.0.2.1"], "--zones DIR"),
    (["drain", "fra"], "--admin URL"),
    (["undrain", "fra"], "--etcd URL"),
    (["node", "drain"], "--admin URL"),
    (["restart"], "--control PATH"),
    (["anycast-exabgp"], "--control PATH"),
    (["dnssec", "keygen", "k.pem"], "--keys DIR"),
    (["dnssec", "ds", "example.com"], "--zones DIR"),
])
def test_no_configuration_says_where_it_looked(argv: list[str], instead: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: Capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no configuration: there is no geodns.yaml in " + str(tmp_path) in err, err
    assert "give --config FILE" in err and instead in err, err


def test_commands_read_geodns_yaml_in_the_current_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: Capsys) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    shutil.copy(TEST_ZONE, zones)
    admin = _free_port()
    (tmp_path / "geodns.yaml").write_text(f"admin: {{listen: 127.0.0.1:{admin}, "
                                          "token: a-token-for-this-test}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert capsys.readouterr().out == "configuration OK: 1 zone(s) in zones\n"
    # Nothing listens there: each says so, naming the address or socket it read.
    for argv in (["drain", "fra"], ["undrain", "fra"], ["node", "drain"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"cannot reach the admin API at http://127.0.0.1:{admin}" in err, err
    assert main(["restart"]) == 1
    assert "no node answers on .geodns.sock" in capsys.readouterr().err
