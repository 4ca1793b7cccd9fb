"""``geodns explain`` on the command line shows what the node serves now
(issue 9, defect 5): it asks the running node, with its live health and
drains; when the node cannot be reached it says plainly that it shows the
configuration without live health, and it still applies the drains in the
state file."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from geodns.cli import main
from geodns.config import load_config
from geodns.problems import Problems
from geodns.server.app import Server

TOKEN = "token-for-explain-cli-tests"
ZONE = """\
origin: exp.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, lhr: 192.0.2.2, iad: 192.0.2.3}}
"""
# 77.88.8.8 (Moscow in the bundled GeoLite2 City): fra first, lhr second.
CLIENT = "77.88.8.8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "exp.example.yaml").write_text(ZONE)
    (tmp_path / "geodns.yaml").write_text(
        f"listen: ['127.0.0.1:0']\nzones: zones\n"
        f"admin: {{listen: '127.0.0.1:{free_port()}', token: {TOKEN}, "
        f"state_file: state.json}}\n"
        "pops:\n  fra: {location: [50.11, 8.68]}\n  lhr: {location: [51.47, -0.45]}\n"
        "  iad: {location: [38.95, -77.45]}\n")
    return tmp_path


def explain(tree: Path, capsys: pytest.CaptureFixture[str], *extra: str
            ) -> tuple[int, dict[str, object]]:
    code = main(["explain", "www.exp.example", "--config", str(tree / "geodns.yaml"),
                 "--client", CLIENT, "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else {}


async def test_explain_asks_the_running_node(tree: Path, capsys) -> None:
    problems = Problems()
    srv = Server(load_config(tree / "geodns.yaml", problems))
    assert not problems
    await srv.start()
    try:
        code, doc = await asyncio.to_thread(explain, tree, capsys)
        assert code == 0 and doc["live"] is True
        assert doc["steering"]["chosen"] == ["fra"]  # type: ignore[index]
        # fra drained on the node (not in any file the command could read first).
        srv.set_admin_state("fra", "draining", "test")  # type: ignore[arg-type]
        code, doc = await asyncio.to_thread(explain, tree, capsys)
        assert doc["steering"]["chosen"] == ["lhr"]  # type: ignore[index]
        assert doc["answer"]["answer"][0].endswith("192.0.2.2")  # type: ignore[index]
        # And the text says where it comes from.
        code = await asyncio.to_thread(
            main, ["explain", "www.exp.example", "--config", str(tree / "geodns.yaml"),
                   "--client", CLIENT])
        out = capsys.readouterr().out
        assert code == 0 and "as served now by the node at http://127.0.0.1:" in out
        assert "chosen: lhr" in out
    finally:
        await srv.shutdown()


def test_explain_without_a_node_says_so_and_applies_the_state_file(tree: Path,
                                                                   capsys) -> None:
    (tree / "state.json").write_text(json.dumps({"version": 1, "pops": {"fra": "draining"}}))
    code, doc = explain(tree, capsys)
    assert code == 0 and doc["live"] is False
    assert "WITHOUT live health" in str(doc["note"]) and "did not answer" in str(doc["note"])
    assert doc["steering"]["chosen"] == ["lhr"]  # type: ignore[index]
    code = main(["explain", "www.exp.example", "--config", str(tree / "geodns.yaml"),
                 "--client", CLIENT, "--offline"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("(showing what this configuration would serve")
    assert "WITHOUT live health" in out and "chosen: lhr" in out
