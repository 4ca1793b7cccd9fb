"""Network namespaces for "split view" tests: a process inside one sees the
machine through its own veth pair, so one client can lose a service address
(a blackhole route in its namespace) while the others still reach it.

Traffic never leaves the machine.  A namespace has a veth pair and nothing
else: its default route points at the root side of the pair, and a packet
for a root-namespace address (the veth's root side, or a /32 added to ``lo``
by :func:`add_local_address`) is delivered locally.  Anything else would need
forwarding on the host (net.ipv4.ip_forward), which these helpers never turn on.

Addresses come from ``10.OCTET.X.0/24``, one /24 per namespace (a /30 of it is
used: ``.1`` root side, ``.2`` inside), X chosen at random among the /24s no
address or route of the root namespace touches yet, under a file lock so that
parallel runs do not pick the same one.  ``10.OCTET.255.0/24`` is kept for
service addresses.  Needs root and ``ip``: :func:`require_netns` skips (or
fails, with GEODNS_REQUIRE_REFERENCE=1) when they are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from refservers import find_binary, skip_or_fail

__all__ = [
    "Netns",
    "NetnsError",
    "add_local_address",
    "netns_available",
    "require_netns",
]

OCTET = 213  # 10.OCTET.0.0/16; pass another to Netns / add_local_address to keep runs apart
SERVICE_SUBNET = 255  # 10.OCTET.255.0/24: service addresses on lo, never a namespace's
LOCK_FILE = Path(tempfile.gettempdir()) / "gdns-netns.lock"
LOCK_TIMEOUT = 10.0
IP_TIMEOUT = 10.0
IP = find_binary("ip") or "ip"  # often in /usr/sbin, which a test's PATH may lack

# Run inside a namespace by Netns.try_connect: one TCP connect, its outcome on stdout.
_CONNECT = """
import errno, socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((host, port), timeout=timeout).close()
    print("ok")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno or 0, str(e)))
"""


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise NetnsError with its stderr if it fails and ``check``."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


@functools.cache
def netns_available() -> bool:
    """Can this process make namespaces (root, ``ip`` installed, and
    ``ip netns add`` works here, e.g. not in a container without CAP_SYS_ADMIN)?"""
    if os.geteuid() != 0 or find_binary("ip") is None:
        return False
    name = f"gdns-chk{secrets.token_hex(3)}"
    try:
        if _ip("netns", "add", name, check=False).returncode != 0:
            return False
        return _ip("netns", "del", name, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_netns() -> None:
    """Skip the calling test unless namespaces can be made here (fail instead
    with GEODNS_REQUIRE_REFERENCE=1)."""
    if not netns_available():
        skip_or_fail("network namespaces need root and a working `ip netns add`")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Held from choosing a /24 until its address is on the veth, so that two
    runs (or two namespaces of one run) never choose the same one."""
    with open(LOCK_FILE, "a") as f:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise NetnsError(f"{LOCK_FILE} still locked after {LOCK_TIMEOUT} s") \
                        from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address in or a route to."""
    found: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        for word in words[:2]:  # "10.1.2.0/24 dev ..." or "blackhole 10.1.2.3 ..."
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(word, strict=False))
    return found


def _free_subnet(octet: int) -> ipaddress.IPv4Network:
    """A random 10.OCTET.X.0/24 (X in 1..254) nothing in the root namespace uses.
    Networks wider than a /16 (a default route, a VPN's 10.0.0.0/8) do not
    count: our /30 is more specific, so it wins for the addresses it has."""
    used = _networks_in_use()
    candidates = list(range(1, SERVICE_SUBNET))
    random.shuffle(candidates)
    for x in candidates:
        net = ipaddress.IPv4Network(f"10.{octet}.{x}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen >= 16):
            return net
    raise NetnsError(f"no free /24 left in 10.{octet}.0.0/16")


class Netns:
    """A network namespace joined to the root one by a veth pair.

    ``host_ip`` is the root side (``10.OCTET.X.1``), ``ns_ip`` the inside
    (``.2``); the namespace's default route goes through ``host_ip``.  As a
    context manager it sets everything up on entry and on exit kills the
    processes started by :meth:`popen`, then deletes the veth and the
    namespace, whatever part of the set-up happened."""

    def __init__(self, octet: int = OCTET) -> None:
        self.octet = octet
        tag = secrets.token_hex(3)
        self.name = f"gdns-{tag}"
        self.host_dev = f"gdh-{tag}"  # interface names: at most 15 characters
        self.ns_dev = f"gdn-{tag}"
        self.host_ip = ""
        self.ns_ip = ""
        self._procs: list[subprocess.Popen[Any]] = []
        # What set-up made, so that close() removes only that: a name taken
        # already (another run's) must survive our failed attempt to take it.
        self._made_ns = False
        self._made_link = False

    def __enter__(self) -> Netns:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _setup(self) -> None:
        _ip("netns", "add", self.name)
        self._made_ns = True
        _ip("link", "add", self.host_dev, "type", "veth",
            "peer", "name", self.ns_dev, "netns", self.name)
        self._made_link = True
        with _allocation_lock():
            net = _free_subnet(self.octet)
            self.host_ip = str(net.network_address + 1)
            self.ns_ip = str(net.network_address + 2)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
        _ip("link", "set", self.host_dev, "up")
        _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "link", "set", self.ns_dev, "up")
        _ip("-n", self.name, "route", "add", "default", "via", self.host_ip)

    def close(self) -> None:
        """Kill what :meth:`popen` started, delete the veth, delete the
        namespace.  Every step is tried even if an earlier one failed: a
        process left inside would keep the namespace (and the veth) alive after
        its name is gone, so they go first."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._procs.clear()
        if self._made_link:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _ip("link", "del", self.host_dev, check=False)  # takes the peer with it
            self._made_link = False
        if self._made_ns:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _ip("netns", "del", self.name, check=False)
            self._made_ns = False

    def exists(self) -> bool:
        """Is the namespace's name still there (``ip netns list``)?"""
        listed = _ip("netns", "list").stdout.split()
        return self.name in listed

    # -- processes inside -----------------------------------------------------
    def exec_args(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return [IP, "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace in a session of its own (killed,
        with its group, when the namespace closes)."""
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.exec_args(argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace to the end; its output as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.exec_args(argv), timeout=timeout, text=True,
                              check=False, **kw)

    def try_connect(self, host: str, port: int, timeout: float = 2.0) -> str:
        """One TCP connect from inside: ``"ok"``, ``"timeout"`` or the errno
        name (e.g. ``"EINVAL"`` for a blackhole route, ``"ECONNREFUSED"``)."""
        done = self.run([sys.executable, "-c", _CONNECT, host, str(port), str(timeout)],
                        timeout=timeout + 10)
        if done.returncode != 0:
            raise NetnsError(f"connect probe failed: {done.stderr.strip()}")
        return done.stdout.strip()

    # -- faults ---------------------------------------------------------------
    def blackhole(self, ip: str) -> None:
        """Make ``ip`` unreachable from inside only (a blackhole /32 route in the
        namespace): a connect there fails at once, with EINVAL, not a timeout."""
        _ip("-n", self.name, "route", "add", "blackhole", f"{ip}/32")

    def unblackhole(self, ip: str) -> None:
        """Undo :meth:`blackhole`."""
        _ip("-n", self.name, "route", "del", "blackhole", f"{ip}/32")


@contextlib.contextmanager
def add_local_address(ip: str | None = None, octet: int = OCTET) -> Iterator[str]:
    """A /32 on the root namespace's ``lo`` (a service address every namespace
    reaches through its veth), removed afterwards.  Without ``ip``, a random
    one of 10.OCTET.255.0/24 not yet assigned.  An ``ip`` already assigned is
    an error: deleting it afterwards would take it from whoever put it there."""
    chosen = ip
    for _ in range(20 if ip is None else 1):
        if ip is None:
            chosen = f"10.{octet}.{SERVICE_SUBNET}.{random.randint(1, 254)}"
        assert chosen is not None
        done = _ip("addr", "add", f"{chosen}/32", "dev", "lo", check=False)
        if done.returncode == 0:
            break
        if ip is not None or "already assigned" not in done.stderr:
            raise NetnsError(f"ip addr add {chosen}/32 dev lo: {done.stderr.strip()}")
    else:
        raise NetnsError(f"no free address in 10.{octet}.{SERVICE_SUBNET}.0/24")
    try:
        yield chosen
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _ip("addr", "del", f"{chosen}/32", "dev", "lo", check=False)
