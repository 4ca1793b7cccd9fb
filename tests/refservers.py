"""Run reference authoritative servers (Knot DNS, NSD) on BIND zone files.

The tests compare geodns's answers with what mature authoritative servers
say for the same data.  This module starts those servers on loopback, in a
throw-away directory, and stops them again::

    with knot_server({"example.test.": Path("tests/data/ref-basic.zone")}) as (host, port):
        ...  # send queries to host:port over UDP or TCP

Both context managers:

* copy the zone files and write a config into a fresh temporary directory
  (pid file, control socket, databases, logs all live there), so they work
  as root and as an ordinary user and never write back to the zone files;
* listen on 127.0.0.1 on one port (UDP and TCP) found by :func:`free_port`;
* wait (at most ``ready_timeout`` seconds) until every zone answers an
  authoritative SOA query over UDP and TCP, and raise
  :class:`ReferenceServerError` with the server's log if it does not;
* on exit send SIGTERM, wait, then SIGKILL (the server's own process group,
  which only holds the processes started here).

Only ``skip_or_fail`` (and ``require_binary``, which uses it) knows about
pytest: it skips when something a test needs is missing here, and fails
instead with ``GEODNS_REQUIRE_REFERENCE=1`` (set by .ci/run), so that CI cannot
lose tests silently.  Every test that skips for a missing tool, package or
helper goes through it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

__all__ = [
    "HOST",
    "ReferenceServerError",
    "find_binary",
    "free_port",
    "knot_config",
    "knot_server",
    "nsd_config",
    "nsd_server",
    "require_binary",
    "skip_or_fail",
]

HOST = "127.0.0.1"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = {
    "knotd": "apt install knot",
    "knotc": "apt install knot",
    "nsd": "apt install nsd",
    "nsd-checkconf": "apt install nsd",
    "delv": "apt install bind9-dnsutils",
    "unbound": "apt install unbound",
}
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


class ReferenceServerError(RuntimeError):
    """A reference server did not start, or did not serve its zones."""


# -- helpers ---------------------------------------------------------------------------


def find_binary(name: str) -> str | None:
    """Path of ``name`` on PATH or in the usual sbin directories, else None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(name, path=path)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test (or module) because ``reason``: something it needs
    is missing on this machine.  With GEODNS_REQUIRE_REFERENCE=1 fail instead:
    there the tool, package or helper must be present."""
    import pytest

    if os.environ.get("GEODNS_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"{reason}, and GEODNS_REQUIRE_REFERENCE=1 says it must be there",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_binary(name: str) -> str:
    """Path of ``name``; skip the test if missing (fail with GEODNS_REQUIRE_REFERENCE=1)."""
    found = find_binary(name)
    if found:
        return found
    skip_or_fail(f"{name} not installed ({INSTALL_HINT.get(name, 'install it')})")


def free_port(host: str = HOST) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port
    raise ReferenceServerError(f"no port free for both UDP and TCP on {host}")


def _origin(text: str) -> str:
    return dns.name.from_text(text).to_text()  # absolute, with the trailing dot


def _quote(value: str | Path) -> str:
    """A double-quoted string for knot.conf / nsd.conf (neither has escapes)."""
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"cannot put {text!r} into a server config")
    return f'"{text}"'


def _copy_zones(zones: dict[str, Path], workdir: Path) -> dict[str, Path]:
    copied: dict[str, Path] = {}
    for i, (origin, source) in enumerate(zones.items()):
        source = Path(source)
        if not source.is_file():
            raise ReferenceServerError(f"zone file {source} for {origin} does not exist")
        target = workdir / f"zone{i}.{_origin(origin).rstrip('.') or 'root'}.zone"
        shutil.copyfile(source, target)
        copied[_origin(origin)] = target
    return copied


def _log_tail(log: Path, limit: int = 6000) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _answers_soa(host: str, port: int, origin: str, tcp: bool) -> bool:
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    try:
        if tcp:
            reply = dns.query.tcp(query, host, port=port, timeout=0.5)
        else:
            reply = dns.query.udp(query, host, port=port, timeout=0.3)
    except (OSError, EOFError, dns.exception.DNSException):
        return False
    return (
        reply.rcode() == dns.rcode.NOERROR
        and bool(reply.flags & dns.flags.AA)
        and any(rrset.rdtype == dns.rdatatype.SOA for rrset in reply.answer)
    )


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in process group ``pgid``.

    Zombies are ignored: orphans are reparented to PID 1, which in a
    container does not always reap them, and a zombie holds no port.
    """
    proc_dir = Path("/proc")
    if not (proc_dir / "self" / "stat").exists():  # not Linux: ask the kernel
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state ppid pgrp ...
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, bounded wait, SIGKILL.

    The server was started in its own session, so its process group id is its
    pid and the group holds only the processes it started (NSD forks a
    transfer daemon and server children); leftovers are killed with the group.
    """
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
        deadline = time.monotonic() + 2.0  # let forked helpers finish shutting down
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None or _group_alive(proc.pid):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)


@contextmanager
def _run_server(
    kind: str,
    argv_for: Callable[[Path], list[str]],
    write_config: Callable[[Path, str, int, dict[str, Path]], Path],
    zones: dict[str, Path],
    host: str,
    ready_timeout: float,
    fatal_log: re.Pattern[str],
) -> Iterator[tuple[str, int]]:
    if not zones:
        raise ValueError("at least one zone is needed")
    workdir = Path(tempfile.mkdtemp(prefix=f"geodns-{kind}-"))
    try:
        copied = _copy_zones(zones, workdir)
        failures: list[str] = []
        for attempt in range(START_ATTEMPTS):
            port = free_port(host)
            rundir = workdir / f"run{attempt}"
            rundir.mkdir()
            conf = write_config(rundir, host, port, copied)
            log = rundir / "server.log"
            with open(log, "wb") as logf:
                proc = subprocess.Popen(
                    argv_for(conf),
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    cwd=rundir,
                    start_new_session=True,
                )
            try:
                problem = _wait_ready(proc, host, port, list(copied), ready_timeout, log, fatal_log)
                if problem is None:
                    yield host, port
                    return
                text = _log_tail(log)
                failures.append(
                    f"attempt {attempt + 1} on port {port}: {problem}\n--- {kind} log ---\n{text}"
                )
                if "in use" not in text.lower():
                    break  # not a lost race for the port: retrying would not help
            finally:
                _stop(proc)
        raise ReferenceServerError(f"{kind} did not become ready:\n" + "\n".join(failures))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(
    proc: subprocess.Popen[bytes],
    host: str,
    port: int,
    origins: list[str],
    timeout: float,
    log: Path,
    fatal_log: re.Pattern[str],
) -> str | None:
    """None once every origin answers SOA over UDP and TCP, else what went wrong.

    Gives up early when the server exits or logs a line matching
    ``fatal_log`` (a zone that failed to load: the server keeps running).
    """
    deadline = time.monotonic() + timeout
    pending = [(origin, tcp) for origin in origins for tcp in (False, True)]
    while pending:
        if proc.poll() is not None:
            return f"server exited with status {proc.returncode}"
        fatal = fatal_log.search(_log_tail(log, limit=1 << 20))
        if fatal:
            return f"server logged {fatal.group(0)!r}"
        origin, tcp = pending[0]
        if _answers_soa(host, port, origin, tcp):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            missing = ", ".join(f"{o} over {'TCP' if t else 'UDP'}" for o, t in pending)
            return f"no authoritative SOA answer within {timeout:g} s for {missing}"
        time.sleep(0.05)
    return None


# -- Knot DNS --------------------------------------------------------------------------


KNOT_FATAL = re.compile(r"zone event 'load' failed|failed to load zone|failed to parse zone")


def knot_config(rundir: Path, host: str, port: int, zones: dict[str, Path],
                modules: str = "", global_modules: Sequence[str] = (),
                zone_options: Mapping[str, Sequence[str]] | None = None) -> str:
    """knot.conf text (knot.conf(5), Knot 3.x) for serving ``zones`` from ``rundir``.
    ``modules`` is knot.conf text of module sections (``mod-cookies:`` ...,
    or ``policy:``), ``global_modules`` the ones every zone uses
    (``mod-cookies/ID``), and ``zone_options`` more lines of a zone's
    section by origin (``dnssec-signing: on``)."""
    lines = [
        "server:",
        f"    rundir: {_quote(rundir)}",
        f"    pidfile: {_quote(rundir / 'knot.pid')}",
        f"    listen: {host}@{port}",
        "    udp-workers: 1",
        "    tcp-workers: 1",
        "    background-workers: 1",
        "control:",
        f"    listen: {_quote(rundir / 'knot.sock')}",
        "database:",
        f"    storage: {_quote(rundir / 'db')}",
        "log:",
        "  - target: stderr",
        "    any: info",
        *modules.splitlines(),
        "template:",
        "  - id: default",
        *(f"    global-module: {m}" for m in global_modules),
        f"    storage: {_quote(rundir)}",
        "    semantic-checks: on",
        "    zonefile-load: whole",
        "    zonefile-sync: -1",
        "    journal-content: none",
        "zone:",
    ]
    for origin, path in zones.items():
        lines += [f"  - domain: {_quote(origin)}", f"    file: {_quote(path)}"]
        lines += [f"    {line}" for line in (zone_options or {}).get(origin, ())]
    return "\n".join(lines) + "\n"


@contextmanager
def knot_server(
    zones: dict[str, Path], *, host: str = HOST, ready_timeout: float = READY_TIMEOUT,
    modules: str = "", global_modules: Sequence[str] = (),
    zone_options: Mapping[str, Sequence[str]] | None = None
) -> Iterator[tuple[str, int]]:
    """Serve ``{origin: BIND zone file}`` with knotd; yields ``(host, port)``.
    ``modules``, ``global_modules`` and ``zone_options``: see :func:`knot_config`."""
    knotd = find_binary("knotd")
    if knotd is None:
        raise ReferenceServerError("knotd not installed (apt install knot)")
    knotc = find_binary("knotc")

    def write(rundir: Path, host: str, port: int, copied: dict[str, Path]) -> Path:
        (rundir / "db").mkdir()
        conf = rundir / "knot.conf"
        options = {_origin(o): v for o, v in (zone_options or {}).items()}
        conf.write_text(knot_config(rundir, host, port, copied, modules, global_modules,
                                    options))
        if knotc:
            check = subprocess.run(
                [knotc, "-c", str(conf), "conf-check"], capture_output=True, text=True, timeout=10
            )
            if check.returncode != 0:
                raise ReferenceServerError(
                    f"knotc conf-check rejected {conf}:\n{check.stdout}{check.stderr}\n{conf.read_text()}"
                )
        return conf

    with _run_server(
        "knot", lambda conf: [knotd, "-c", str(conf)], write, zones, host, ready_timeout, KNOT_FATAL
    ) as address:
        yield address


# -- NSD -------------------------------------------------------------------------------


NSD_FATAL = re.compile(r"read with [1-9][0-9]* errors|error: .*(zone|zonefile).*")


def nsd_config(rundir: Path, host: str, port: int, zones: dict[str, Path]) -> str:
    """nsd.conf text (nsd.conf(5), NSD 4.x) for serving ``zones`` from ``rundir``."""
    lines = [
        "server:",
        '    chroot: ""',
        '    username: ""',
        f"    zonesdir: {_quote(rundir)}",
        '    database: ""',
        "    zonefiles-write: 0",
        f"    zonelistfile: {_quote(rundir / 'zone.list')}",
        f"    pidfile: {_quote(rundir / 'nsd.pid')}",
        f"    xfrdfile: {_quote(rundir / 'xfrd.state')}",
        f"    xfrdir: {_quote(rundir)}",
        f"    cookie-secret-file: {_quote(rundir / 'cookiesecrets.txt')}",
        f"    ip-address: {host}",
        f"    port: {port}",
        f"    do-ip4: {'no' if ':' in host else 'yes'}",
        f"    do-ip6: {'yes' if ':' in host else 'no'}",
        "    server-count: 1",
        "    verbosity: 1",
        # rate limiting is on by default (200 qps per /24) when compiled in; a test
        # run sends bursts from 127.0.0.1, which would get dropped or TC=1 slips
        "    rrl-ratelimit: 0",
        "    rrl-whitelist-ratelimit: 0",
        "remote-control:",
        "    control-enable: no",
    ]
    for origin, path in zones.items():
        lines += ["zone:", f"    name: {_quote(origin)}", f"    zonefile: {_quote(path)}"]
    return "\n".join(lines) + "\n"


@contextmanager
def nsd_server(
    zones: dict[str, Path], *, host: str = HOST, ready_timeout: float = READY_TIMEOUT
) -> Iterator[tuple[str, int]]:
    """Serve ``{origin: BIND zone file}`` with ``nsd -d``; yields ``(host, port)``."""
    nsd = find_binary("nsd")
    if nsd is None:
        raise ReferenceServerError("nsd not installed (apt install nsd)")
    checkconf = find_binary("nsd-checkconf")

    def write(rundir: Path, host: str, port: int, copied: dict[str, Path]) -> Path:
        conf = rundir / "nsd.conf"
        conf.write_text(nsd_config(rundir, host, port, copied))
        if checkconf:
            check = subprocess.run(
                [checkconf, str(conf)], capture_output=True, text=True, timeout=10
            )
            if check.returncode != 0 or check.stdout.strip() or check.stderr.strip():
                raise ReferenceServerError(
                    f"nsd-checkconf rejected {conf}:\n{check.stdout}{check.stderr}\n{conf.read_text()}"
                )
        return conf

    with _run_server(
        "nsd",
        lambda conf: [nsd, "-d", "-c", str(conf)],
        write,
        zones,
        host,
        ready_timeout,
        NSD_FATAL,
    ) as address:
        yield address
