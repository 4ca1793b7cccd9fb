"""The path an operator takes to a machine without this checkout: build a
wheel with ``python -m build --wheel`` (from a copy of this tree, so nothing
built here leaks in), install it into a fresh venv (the dependencies come from
PyPI through the machine's pip configuration), and run geodns from there:
``--version``, ``check`` on the example configuration, and ``serve`` on
loopback, answering dnspython and serving the status page.

The wheel must hold the C helper for batched UDP (built as an optional
extension) and the status page (package data).  Building or installing must
print no deprecation warning: those become errors in a later setuptools or
pip.  It runs in ``make test`` and in CI like any other test; without a C
compiler or the ``build`` package it skips here and fails in CI
(GEODNS_REQUIRE_REFERENCE=1)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from refservers import free_port, skip_or_fail

from geodns import __version__

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.wheel, pytest.mark.timeout(600)]
# What a fresh clone does not have: what this checkout built, ran or cached.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".*_cache",
    ".hypothesis", "out", "*.bin", ".geodns-state.json", "*.sock")
DEPRECATION = re.compile(r"deprecat", re.IGNORECASE)


def run(argv: list[str | Path], cwd: Path, timeout: float = 300) -> str:
    """Run a step; its output (stdout and stderr together) when it succeeds."""
    done = subprocess.run([str(a) for a in argv], cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}"
    return done.stdout


def no_deprecations(step: str, output: str) -> None:
    lines = [line for line in output.splitlines() if DEPRECATION.search(line)]
    assert not lines, f"{step} warns of deprecations:\n" + "\n".join(lines)


def serve_config(src: Path, port: int, admin: int) -> Path:
    """The example configuration, on ports of its own (IPv4 loopback only)."""
    text = (src / "geodns.yaml").read_text()
    assert "127.0.0.1:5300" in text and "127.0.0.1:8053" in text
    text = text.replace("127.0.0.1:5300", f"127.0.0.1:{port}")
    text = text.replace("127.0.0.1:8053", f"127.0.0.1:{admin}")
    text = "\n".join(line for line in text.splitlines() if "[::1]:5300" not in line)
    path = src / "serve.yaml"
    path.write_text(text + "\n")
    return path


def answer(port: int, name: str, subnet: tuple[str, int] | None = None) -> dns.message.Message:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(*subnet)] if subnet else []
    q = dns.message.make_query(name, "A", use_edns=0, options=options)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=2)


def test_wheel_builds_installs_and_serves(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None:
        skip_or_fail("the build package is not installed (make test installs it)")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        skip_or_fail(f"no C compiler ({cc}): the wheel would lack geodns._udpbatch")

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    dist = tmp_path / "dist"
    out = run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], cwd=tmp_path)
    no_deprecations("python -m build --wheel", out)
    wheels = list(dist.glob("geodns-*.whl"))
    assert [w.name.split("-")[1] for w in wheels] == [__version__], wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    assert any(re.fullmatch(r"geodns/_udpbatch\..*\.so", n) for n in names), names
    assert any(re.fullmatch(r"geodns/_mmdbtree\..*\.so", n) for n in names), names
    assert any(re.fullmatch(r"geodns/_zonetext\..*\.so", n) for n in names), names
    assert "geodns/static/status.html" in names
    assert not [n for n in names if not n.startswith(("geodns/", "geodns-"))], names
    assert "geodns/_udpbatch.c" not in names and "geodns/_mmdbtree.c" not in names
    assert "geodns/_zonetext.c" not in names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    bin_ = venv / "bin"
    out = run([bin_ / "python", "-m", "pip", "install", "--disable-pip-version-check",
               wheels[0]], cwd=tmp_path, timeout=480)
    no_deprecations("pip install of the wheel", out)

    assert run([bin_ / "geodns", "--version"], cwd=tmp_path) == f"geodns {__version__}\n"
    # Imported from the venv, not this tree; the helper and the page are there.
    probe = ("import geodns, geodns._udpbatch, importlib.resources as r, json; "
             "print(json.dumps([geodns.__file__, geodns._udpbatch.__file__, "
             "r.files('geodns').joinpath('static/status.html').is_file()]))")
    module, helper, page = json.loads(run([bin_ / "python", "-c", probe], cwd=tmp_path))
    assert Path(module).is_relative_to(venv) and Path(helper).is_relative_to(venv), module
    assert page is True

    # The example configuration, found as ./geodns.yaml.
    assert run([bin_ / "geodns", "check"], cwd=src).startswith("configuration OK: 1 zone(s)")

    port, admin = free_port(), free_port()
    config = serve_config(src, port, admin)
    node = subprocess.Popen([bin_ / "geodns", "serve", "--config", config, "--lameduck", "0",
                             "--log-format", "json"], cwd=src, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                static = answer(port, "static.example.com.")
                break
            except (OSError, dns.exception.Timeout):
                assert node.poll() is None, "geodns serve exited"
                assert time.monotonic() < deadline, "geodns serve did not answer in 30 s"
                time.sleep(0.2)
        assert static.rcode() == dns.rcode.NOERROR
        assert sorted(str(r) for rrset in static.answer for r in rrset) == \
            ["192.0.2.10", "192.0.2.11"]
        # Steered with the GeoLite2 database that came from PyPI: Brazil -> gru.
        steered = answer(port, "www.example.com.", ("200.160.0.0", 24))
        assert [str(r) for rrset in steered.answer for r in rrset] == ["203.0.113.11"]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/", timeout=5) as page_:
            assert page_.status == 200 and b"<html" in page_.read(4096).lower()
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        assert node.stderr is not None
        log = node.stderr.read()
        node.stderr.close()
    messages = [json.loads(line).get("message", "") for line in log.splitlines()
                if line.startswith("{")]
    assert any(m.startswith("serving zones") for m in messages), log
    assert not [m for m in messages if "_udpbatch" in m], log  # the helper is in use
