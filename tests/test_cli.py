"""The command line: check, import-zone, serve with workers."""

from __future__ import annotations

import shutil
import signal
import socket
from pathlib import Path

import dns.message
import dns.query
import pytest

from geodns.cli import main
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_text
from tests.conftest import TEST_ZONE, section
from tests.serveproc import Served

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"


def test_check_example_configuration_is_clean(capsys) -> None:
    assert main(["check", "--config", str(ROOT / "geodns.yaml")]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_check_lists_every_problem_with_location(tmp_path: Path, capsys) -> None:
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


def test_check_missing_zones_directory(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text("zones: nowhere\n")
    assert main(["check", "--config", str(cfg)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_import_zone_round_trips(capsys) -> None:
    assert main(["import-zone", str(DATA / "ref-basic.zone"), "--origin", "example.test."]) == 0
    text = capsys.readouterr().out
    problems = Problems()
    zone = load_zone_text(text, "imported", "example.test.", problems)
    assert zone is not None, list(map(str, problems))
    assert zone.serial == 2024060101


def test_import_zone_rejects_unsupported_types_unless_asked(tmp_path: Path, capsys) -> None:
    src = tmp_path / "db.x"
    src.write_text("$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n"
                   "ns1 HINFO cpu os\n@ SSHFP 1 1 " + "ab" * 20 + "\n")
    assert main(["import-zone", str(src), "--origin", "x."]) == 1
    assert "1 HINFO, 1 SSHFP" in capsys.readouterr().err
    assert main(["import-zone", str(src), "--origin", "x.", "--skip-unsupported"]) == 0
    out, err = capsys.readouterr()
    assert "left out" in err and "HINFO" not in out


def test_import_zone_reports_broken_master_file(tmp_path: Path, capsys) -> None:
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
            node.wait_for(lambda x, w=w: x.get("worker") == f"worker{w}" and
                          str(x.get("message")).startswith("serving zones"))
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
def test_check_rejects_unbracketed_ipv6_listen_argument(tmp_path: Path, capsys, listen: str,
                                                        message: str) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    shutil.copy(TEST_ZONE, zones)
    assert main(["check", "--listen", listen, "--zones", str(zones)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("--listen:1:1: ") and message in line for line in err), err
