"""packaging/systemd/geodns.service and the configuration shipped with it.

systemd's own tools judge the unit: ``systemd-analyze verify`` (no warning at
all, with ExecStart pointed at this venv's geodns) and ``systemd-analyze
security --offline`` (the exposure score, printed, must stay in the "OK"
band or better: below 5.0 on systemd's 0-10 scale, where MEDIUM starts).

Two of its settings are known to break programs that did not expect them,
and no systemd runs the unit here, so the node is run under the same
restrictions without it:

* ``MemoryDenyWriteExecute=yes``: the kernel's own form of it,
  ``prctl(PR_SET_MDWE)`` (Linux 6.3+), which every process started after it
  inherits, the successor of a restart included;
* ``SystemCallFilter=``: every system call a node makes (start, UDP, TCP,
  the admin API, HTTP, TCP and DNS health checks, a reload, workers, a
  restart, a stop), as strace sees them, must be allowed by the unit's
  filter as ``systemd-analyze syscall-filter`` expands its groups.

As root the node runs as the user nobody with CAP_NET_BIND_SERVICE on a
privileged port, as the unit starts it (tests/privkit.py).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from privkit import (
    AS_ROOT,
    answers,
    as_nobody,
    children,
    node_config,
    privileged_port,
    public_dir,
    shim_python,
)
from refservers import free_port, require_binary, skip_or_fail

from geodns.config import load_config_text
from geodns.yamlsrc import Problems
from tests.serveproc import Served

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "geodns.service"
EXAMPLE = ROOT / "packaging" / "systemd" / "geodns.yaml"
DEADLINE = 30.0
# systemd-analyze security's bands: OK below 5.0 (then MEDIUM, EXPOSED, UNSAFE, DANGEROUS).
GOOD_BANDS = ("PERFECT", "SAFE", "OK")


def settings(text: str) -> list[tuple[str, str]]:
    """The unit's ``key=value`` lines of [Service], in order (a key may repeat)."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def setting(key: str) -> str:
    values = [v for k, v in settings(UNIT.read_text()) if k == key]
    assert len(values) == 1, (key, values)
    return values[0]


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("systemd-analyze"), *args], capture_output=True,
                          text=True, timeout=60)


# -- systemd's verdicts --------------------------------------------------------------------
def test_unit_verifies(tmp_path: Path) -> None:
    geodns = Path(sys.executable).parent / "geodns"
    if not geodns.is_file():
        skip_or_fail(f"no geodns command beside {sys.executable} (pip install -e .)")
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/geodns serve " in text
    here = tmp_path / "geodns.service"  # verify wants ExecStart's program to exist
    here.write_text(text.replace("ExecStart=/usr/bin/geodns ", f"ExecStart={geodns} "))
    done = analyze("verify", "--man=no", str(here))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")

    # It would say so: a misspelt key and a wrong value (warnings, exit status 0).
    broken = tmp_path / "broken" / "geodns.service"
    broken.parent.mkdir()
    broken.write_text(here.read_text().replace("ProtectSystem=", "ProtectSytem=")
                      .replace("RestrictNamespaces=yes", "RestrictNamespaces=maybe"))
    done = analyze("verify", "--man=no", str(broken))
    assert "Unknown key 'ProtectSytem'" in done.stderr, done.stderr
    assert "maybe" in done.stderr, done.stderr


def test_security_exposure() -> None:
    done = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    found = re.search(r"Overall exposure level for geodns\.service: (\d+\.\d+) (\w+)",
                      done.stdout)
    assert done.returncode == 0 and found, done.stdout + done.stderr
    score, band = float(found[1]), found[2]
    print(f"systemd-analyze security --offline=yes {UNIT.name}: {score} {band}")
    assert score < 5.0 and band in GOOD_BANDS, done.stdout
    # The same limit, as systemd applies it (tenths): 4.9 passes, 5.0 does not.
    assert analyze("security", "--offline=yes", "--threshold=49", str(UNIT)).returncode == 0


def test_example_configuration_fits_the_unit() -> None:
    """What the shipped configuration makes the node write lies where the
    unit lets it write, and the unit runs it as installed."""
    assert f"--config /etc/geodns/{EXAMPLE.name}" in setting("ExecStart")
    problems = Problems()
    cfg = load_config_text(EXAMPLE.read_text(), str(EXAMPLE), Path("/etc/geodns"), problems)
    assert not problems, [str(p) for p in problems]
    assert cfg.user is None  # the unit's User= and AmbientCapabilities= do it
    writable = [Path("/run") / setting("RuntimeDirectory"),
                Path("/var/lib") / setting("StateDirectory"),
                *map(Path, setting("ReadWritePaths").split())]
    for what, path in (("lifecycle.control_socket", cfg.control_socket),
                       ("admin.state_file", cfg.state_file)):
        assert path is not None and any(path.is_relative_to(w) for w in writable), (what, path)
    fleet_cache = re.search(r"^#\s+cache: (\S+)", EXAMPLE.read_text(), re.MULTILINE)
    assert fleet_cache and any(Path(fleet_cache[1]).is_relative_to(w) for w in writable)
    assert {a.port for a in cfg.listen} == {53} and {a.host for a in cfg.listen} == {"0.0.0.0",
                                                                                      "::"}
    assert cfg.admin is not None and cfg.admin.host == "127.0.0.1"
    for key, value in (("Type", "notify"), ("NotifyAccess", "all"), ("User", "geodns"),
                       ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
                       ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
                       ("ExecReload", "/bin/kill -HUP $MAINPID"), ("KillMode", "mixed"),
                       ("MemoryDenyWriteExecute", "yes"), ("NoNewPrivileges", "yes")):
        assert setting(key) == value, key


# -- the unit's restrictions, without systemd ------------------------------------------------
@pytest.fixture(scope="module")
def python() -> Iterator[str]:
    """The interpreter the node runs on: as root one that nobody may run."""
    if not AS_ROOT:
        yield sys.executable
        return
    with shim_python() as found:
        yield found


@pytest.fixture
def public() -> Iterator[Path]:
    with public_dir() as where:
        yield where


# PR_SET_MDWE (65) with PR_MDWE_REFUSE_EXEC_GAIN (1), then the node.
MDWE = """\
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("PR_SET_MDWE did not refuse writable executable memory")
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_memory_deny_write_execute(python: str, public: Path) -> None:
    """Python, uvloop and (changing user) ctypes run without writable
    executable memory: two workers, queries, a restart, queries."""
    probe = subprocess.run([python, "-c", MDWE, "/bin/true"], capture_output=True, text=True)
    if "Invalid argument" in probe.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert probe.returncode == 0, probe.stderr
    port = privileged_port() if AS_ROOT else free_port()
    cfg = node_config(public, port, user="nobody" if AS_ROOT else None, workers=2)
    node = Served(["--config", str(cfg)], cwd=cfg.parent, python=python, wrap=[python, "-c", MDWE])
    try:
        assert len(node.worker_pids(DEADLINE)) == 2
        node.wait_for(lambda x: str(x.get("message")).startswith("serving zones"), DEADLINE)
        answers(port)
        restart = subprocess.run([sys.executable, "-m", "geodns", "restart", "--config",
                                  str(cfg)], capture_output=True, text=True, timeout=120)
        assert restart.returncode == 0, restart.stderr + node.text()
        answers(port)
        assert node.proc.wait(DEADLINE) == 0, node.text()
    finally:
        node.stop()
    assert not node.find(lambda x: x.get("level") == "error"), node.text()


@functools.cache
def syscalls(group: str) -> frozenset[str]:
    """The system calls of a ``@group`` of systemd, nested groups expanded."""
    done = analyze("syscall-filter", group)
    assert done.returncode == 0, done.stderr
    names: set[str] = set()
    for line in done.stdout.splitlines()[1:]:
        if not line.startswith("    "):
            break
        item = line.strip()
        if item and not item.startswith("#"):
            names |= syscalls(item) if item.startswith("@") else {item}
    return frozenset(names)


def allowed_by_the_unit() -> frozenset[str]:
    """What the unit's SystemCallFilter= lines allow: the first allow list,
    then every ``~`` line taking its calls away."""
    allowed: set[str] = set()
    for key, value in settings(UNIT.read_text()):
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        items = value.lstrip("~").split()
        names = set().union(*(syscalls(i) if i.startswith("@") else {i} for i in items))
        allowed = allowed - names if deny else allowed | names
    assert len(allowed) > 100, allowed
    return frozenset(allowed)


class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def check_targets() -> Iterator[tuple[int, int]]:
    """An HTTP server answering 200 and a listening TCP socket: (their ports)."""
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(64)
        try:
            yield web.server_address[1], tcp.getsockname()[1]
        finally:
            web.shutdown()
            web.server_close()


STRACED = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)")


def test_system_calls_within_the_filter(python: str, public: Path) -> None:
    strace = require_binary("strace")
    allowed = allowed_by_the_unit()
    port = privileged_port() if AS_ROOT else free_port()
    trace = public / "run" / "strace.out"
    with check_targets() as (web, tcp):
        extra = ("health: {interval: 0.5, timeout: 0.4}\n"
                 "pops:\n  fra:\n    location: [50.11, 8.68]\n    checks:\n"
                 f"      - {{type: http, url: 'http://127.0.0.1:{web}/health'}}\n"
                 f"      - {{type: tcp, address: '127.0.0.1:{tcp}'}}\n"
                 f"      - {{type: dns, server: '127.0.0.1:{port}', name: ns1.priv.example}}\n")
        cfg = node_config(public, port, user=None, workers=2, extra=extra)
        wrap = [*as_nobody("net_bind_service")] if AS_ROOT else []
        node = Served(["--config", str(cfg)], cwd=cfg.parent, python=python,
                      wrap=[*wrap, strace, "-f", "-qq", "-o", str(trace)])
        try:
            assert len(node.worker_pids(DEADLINE)) == 2
            node.wait_for(lambda x: str(x.get("message")).startswith("serving zones"),
                          DEADLINE)
            answers(port)
            admin = node.admin_port(DEADLINE)
            for path in ("/", "/metrics", "/status", "/readyz",
                         "/explain?name=ns1.priv.example&client=192.0.2.1"):
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as r:
                    assert r.status == 200 and r.read(), path
            node.wait_for(lambda x: x.get("event") == "state-change" and x.get("pop") == "fra",
                          DEADLINE)  # every check has answered
            zone = public / "zones" / "priv.example.yaml"
            mark = node.mark()
            zone.write_text(zone.read_text() + "  www: {A: 192.0.2.80}\n")
            node.wait_for(lambda x: "loaded zone" in str(x.get("message")), DEADLINE, mark)
            main = children(node.proc.pid)[0]  # strace's child: the node
            mark = node.mark()
            os.kill(main, signal.SIGHUP)  # systemctl reload
            node.wait_for(lambda x: "reload requested" in str(x.get("message")), DEADLINE,
                          mark)
            restart = subprocess.run([sys.executable, "-m", "geodns", "restart", "--config",
                                      str(cfg)], capture_output=True, text=True, timeout=120)
            assert restart.returncode == 0, restart.stderr + node.text()
            successor = int(re.findall(r"process (\d+) serves now", restart.stdout)[0])
            answers(port)
            # A stop as systemd makes it (KillMode=mixed): SIGTERM to the main process.
            os.kill(successor, signal.SIGTERM)
            assert node.proc.wait(DEADLINE) == 0, node.text()  # strace ends with the node
        finally:
            node.stop()
    used = {m[1] for m in map(STRACED.match, trace.read_text().splitlines()) if m}
    assert {"recvmmsg", "sendmmsg", "accept4", "connect", "execve", "clone"} <= used | {
        "clone3"}, sorted(used)  # the trace saw the node at work
    refused = sorted(used - allowed)
    assert not refused, f"the unit's SystemCallFilter= refuses {', '.join(refused)}"
    print(f"{len(used)} system calls used, all allowed by the unit's SystemCallFilter=: "
          f"{' '.join(sorted(used))}")
    shutil.rmtree(trace.parent, ignore_errors=True)
