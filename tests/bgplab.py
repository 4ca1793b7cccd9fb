"""A BGP lab in network namespaces, for "health-gated anycast": a geodns node
drives a BGP speaker so that an anycast prefix is announced only while the
node is fit, and a test checks what the upstream router sees and where a
client's packets for the anycast address go.

Topology (every address lives inside the lab's own namespaces, none in the
root namespace, so parallel labs cannot collide and nothing leaves the
machine; forwarding is turned on inside the router namespace only)::

                      client  10.O.9.2/30  fd00:O:9::2/64   default via router
                        |
    node1 --- up0 === r-node1 --- router --- r-client
    10.O.1.2/30         10.O.1.1/30       (BIRD 2, AS 65000, passive BGP,
    fd00:O:1::2/64      fd00:O:1::1/64     kernel protocols with ECMP)
    lo: 10.O.255.53/32, fd00:O:ff::53/128  (the anycast addresses)
    AS 65001, BGP speaker: ExaBGP or BIRD

    node2 likewise on 10.O.2.0/30, fd00:O:2::/64, AS 65002 (node N: 10.O.N.0/30)

Each node has two BGP sessions with the router, one over IPv4 carrying IPv4
unicast and one over IPv6 carrying IPv6 unicast, so that ``next-hop self``
means the node's own address on the link for both families.  (ExaBGP 4.2
cannot do ``next-hop self`` for an IPv6 route over an IPv4 session: it still
answers ``done`` but sends a NEXT_HOP of 0.0.0.0, which BIRD rejects as
"mismatched address family" and treats as a withdraw.  An explicit
``next-hop fd00:O:1::2`` over the IPv4 session works.)

The router's BIRD imports everything and exports nothing to the nodes; its
kernel protocols put the routes in the router namespace's table with
``merge paths on``, so two nodes announcing the same prefix give one ECMP
route with a next hop per node (the client's flow is hashed to one of them).
With ``bfd=True`` the router runs BFD (50 ms x 3) with the BIRD nodes
(ExaBGP has no BFD, so its sessions rely on the 3 s hold timer).

Speakers on a node:

* ``"exabgp"``: ExaBGP 4.2 with one API ``process``.  By default it is the
  lab's relay, which copies command lines written to a FIFO to ExaBGP and
  logs ExaBGP's answer (``done``/``error``) to each, so :meth:`BgpLab.announce`
  and :meth:`BgpLab.withdraw` can wait for it.  Any other argv can be given
  (the future geodns driver): it runs inside the node's namespace as ExaBGP's
  child, its stdout lines are API commands.
* ``"bird"``: BIRD 2 with two static protocols, ``anycast4`` and ``anycast6``
  (each holds one ``unreachable`` route for the anycast prefix, exported to
  the router with next hop self), disabled at start and toggled with
  ``birdc enable|disable anycast4`` (or ``"anycast*"`` for both).

Nothing is announced until a test asks.  Needs root, ``ip``, BIRD 2
(``bird``, ``birdc``) and ExaBGP 4.2: :func:`require_bgplab` skips (or fails
with GEODNS_REQUIRE_REFERENCE=1) when they are missing.

Worth knowing when building on it (seen with ExaBGP 4.2.21, BIRD 2.0.12):

* Announce and withdraw reach the router's kernel table in 3 to 40 ms; a
  killed speaker's routes go as fast (the kernel closes its TCP sessions).
  Only a hung speaker waits for the hold timer (2 to 3 s after its last
  keepalive, and BIRD sometimes took 1.5 s more to remove the routes), or
  for BFD (~150 ms), which only BIRD speaks.
* When ExaBGP's API process dies, ExaBGP keeps announcing what it said
  (respawn on or off, exabgp.api.terminate or not): whatever drives the
  health gate must withdraw before it goes, or take ExaBGP with it.
* ExaBGP backs off before dialling again after each session reset (0, 1,
  2, 3, ... s, up to 60 s) and forgets the count only when a session comes
  in or it restarts: after many flaps a node comes back slowly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from netns import require_netns
from refservers import find_binary, skip_or_fail

__all__ = [
    "BFD_INTERVAL_MS",
    "BFD_MULTIPLIER",
    "HOLD_TIME",
    "KEEPALIVE_TIME",
    "ROUTER_ASN",
    "BgpLab",
    "BgpLabError",
    "LabNode",
    "Speaker",
    "exabgp_config",
    "exabgp_env",
    "node_bird_config",
    "require_bgplab",
    "router_bird_config",
]

Speaker = Literal["exabgp", "bird"]

OCTET = 77  # 10.OCTET.0.0/16 and fd00:OCTET::/32, inside the lab's namespaces only
CLIENT_INDEX = 9  # the client's link is 10.OCTET.9.0/30
MAX_NODES = 8  # node N's link is 10.OCTET.N.0/30, below the client's
ROUTER_ASN = 65000  # node N is AS 65000 + N
HOLD_TIME = 3  # seconds; the least BGP (and BIRD, and ExaBGP) allows
KEEPALIVE_TIME = 1
BFD_INTERVAL_MS = 50
BFD_MULTIPLIER = 3  # a silent BFD peer is down after 150 ms
START_TIMEOUT = 15.0  # speakers up and sessions Established
CMD_TIMEOUT = 10.0  # one ip / birdc / sysctl command
STOP_TIMEOUT = 5.0
POLL = 0.002  # between two looks at the router's table: a look itself takes ~2 ms

IP = find_binary("ip") or "ip"
BIRD = find_binary("bird") or "bird"
BIRDC = find_binary("birdc") or "birdc"
EXABGP = find_binary("exabgp") or "exabgp"
SYSCTL = find_binary("sysctl")

# The default ExaBGP API process: relays lines written to a FIFO to ExaBGP
# (its stdout) and logs ExaBGP's answer to each (read from its stdin).  The
# FIFO is opened read-write, so that a writer closing it is no end of file;
# the end of stdin is ExaBGP gone, and the relay goes too (ExaBGP puts it in
# a process group of its own, so nothing else would end it).  With
# exabgp.api.ack=true ExaBGP writes "done" or "error" to the process's stdin
# after every command and blocks (its whole reactor, keepalives included) on a
# full pipe: an API process must read its stdin, or run with ack off.
_RELAY = """\
import os, select, sys
commands = os.open(sys.argv[1], os.O_RDWR)
answers = sys.stdin.fileno()
pending = []  # commands sent, not answered yet: ExaBGP answers in order
buffered = {commands: b"", answers: b""}
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        for fd in select.select([commands, answers], [], [])[0]:
            data = os.read(fd, 65536)
            if not data:
                sys.exit(0)  # stdin closed: ExaBGP is gone
            *lines, buffered[fd] = (buffered[fd] + data).split(b"\\n")
            for raw in lines:
                line = raw.decode().strip()
                if not line:
                    continue
                if fd == commands:
                    os.write(1, (line + "\\n").encode())
                    pending.append(line)
                else:
                    log.write(line + "\\t" + (pending.pop(0) if pending else "") + "\\n")
"""

# A UDP echo server for data-path checks: answers "NAME PAYLOAD" on every
# address given, prints "ready" once bound.
_ECHO = """\
import select, socket, sys
name, port, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
socks = []
for a in addrs:
    s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a, port))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(2048)
        s.sendto(name.encode() + b" " + data, peer)
"""

# One UDP exchange from inside a namespace: the answer, or "timeout" / an errno name.
_UDP_ASK = """\
import errno, socket, sys
addr, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
# IP(V6)_RECVERR: a net or host unreachable is a "soft" ICMP error, which
# Linux reports to a UDP socket only with it (a port unreachable always).
s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, 25 if v6 else 11, 1)
s.settimeout(timeout)
try:
    s.connect((addr, port))
    s.send(payload.encode())
    print("answer " + s.recv(2048).decode())
except socket.timeout:
    print("timeout")
except OSError as e:
    print(errno.errorcode.get(e.errno or 0, str(e)))
"""


class BgpLabError(RuntimeError):
    """Setting up or driving the lab failed (with what the daemons said)."""


def require_bgplab() -> None:
    """Skip the calling test unless namespaces, BIRD 2 and ExaBGP 4 are here
    (fail instead with GEODNS_REQUIRE_REFERENCE=1): the configurations are
    written for those (BIRD 1.x and ExaBGP 3 or 5 read other ones)."""
    require_netns()
    for name, package in (("bird", "bird2"), ("birdc", "bird2"), ("exabgp", "exabgp")):
        if find_binary(name) is None:
            skip_or_fail(f"{name} not installed (Debian package {package})")
    bird, exabgp = _versions()
    if not bird.startswith("2."):
        skip_or_fail(f"BIRD 2 needed, {BIRD} is {bird or 'of no known version'} "
                     "(Debian package bird2)")
    if not exabgp.startswith("4."):
        skip_or_fail(f"ExaBGP 4 needed, {EXABGP} is {exabgp or 'of no known version'}")


@functools.cache
def _versions() -> tuple[str, str]:
    """BIRD's and ExaBGP's versions ("2.0.12", "4.2.21"), "" if not found."""
    found = []
    for argv, pattern in (([BIRD, "--version"], r"BIRD version (\S+)"),
                          ([EXABGP, "--version"], r"ExaBGP\s*:\s*(\S+)")):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
            match = re.search(pattern, done.stdout + done.stderr)
        except (OSError, subprocess.TimeoutExpired):
            match = None
        found.append(match.group(1) if match else "")
    return found[0], found[1]


@dataclass(frozen=True)
class LabNode:
    """One node: its namespace, AS, and both ends of its link to the router."""

    name: str
    index: int
    ns: str
    asn: int
    ip4: str  # the node's side of the link
    ip6: str
    router_ip4: str  # the router's side
    router_ip6: str
    router_dev: str  # the link's name in the router namespace
    dev: str = "up0"  # and in the node's


# -- configurations ----------------------------------------------------------------


def _quote(value: str | Path) -> str:
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"cannot put {text!r} into a BIRD config")
    return f'"{text}"'


def router_bird_config(router_id: str, nodes: Sequence[LabNode], bfd_nodes: Iterable[str],
                       log: Path, ecmp: bool = True) -> str:
    """bird.conf for the upstream router: a passive eBGP neighbor per node
    and family (``NODE_4`` over IPv4, ``NODE_6`` over IPv6), import all and
    export none, routes into the namespace's kernel table (ECMP with
    ``merge paths`` when ``ecmp``), BFD with the nodes in ``bfd_nodes``."""
    bfd_nodes = set(bfd_nodes)
    lines = [
        f"router id {router_id};",
        f"log {_quote(log)} all;",
        "timeformat protocol iso long ms;",
        "timeformat route iso long ms;",
        "timeformat log iso long ms;",
        "debug protocols { states };",  # session ups and downs in the log, with ms
        "protocol device { scan time 10; }",
    ]
    merge = " merge paths on;" if ecmp else ""
    lines += [
        f"protocol kernel kernel4 {{ ipv4 {{ import none; export all; }};{merge} }}",
        f"protocol kernel kernel6 {{ ipv6 {{ import none; export all; }};{merge} }}",
    ]
    if bfd_nodes:
        lines.append(
            'protocol bfd { interface "r-*" { '
            f"min rx interval {BFD_INTERVAL_MS} ms; min tx interval {BFD_INTERVAL_MS} ms; "
            f"multiplier {BFD_MULTIPLIER}; }}; }}"
        )
    lines += [
        "template bgp nodes {",
        "    passive on;",  # the nodes dial: a restarted speaker is back at once
        f"    hold time {HOLD_TIME}; keepalive time {KEEPALIVE_TIME};",
        "    connect delay time 1; connect retry time 1; error wait time 1, 2;",
        "}",
    ]
    for node in nodes:
        bfd = " bfd on;" if node.name in bfd_nodes else ""
        for family, local, peer in (("4", node.router_ip4, node.ip4),
                                    ("6", node.router_ip6, node.ip6)):
            lines.append(
                f"protocol bgp {node.name}_{family} from nodes {{ local {local} as {ROUTER_ASN}; "
                f"neighbor {peer} as {node.asn};{bfd} "
                f"ipv{family} {{ import all; export none; }}; }}"
            )
    return "\n".join(lines) + "\n"


def node_bird_config(node: LabNode, anycast4: str, anycast6: str, log: Path,
                     bfd: bool = True) -> str:
    """bird.conf for a node whose speaker is BIRD: static protocols
    ``anycast4`` and ``anycast6`` (disabled until enabled with birdc), each
    exported to the router over the session of its family with next hop self
    (eBGP's default), nothing imported."""
    lines = [
        f"router id {node.ip4};",
        f"log {_quote(log)} all;",
        "timeformat protocol iso long ms;",
        "timeformat log iso long ms;",
        "debug protocols { states };",
        "protocol device { scan time 10; }",
    ]
    if bfd:
        lines.append(
            f"protocol bfd {{ interface {_quote(node.dev)} {{ "
            f"min rx interval {BFD_INTERVAL_MS} ms; min tx interval {BFD_INTERVAL_MS} ms; "
            f"multiplier {BFD_MULTIPLIER}; }}; }}"
        )
    lines += [
        f"protocol static anycast4 {{ disabled; ipv4; route {anycast4}/32 unreachable; }}",
        f"protocol static anycast6 {{ disabled; ipv6; route {anycast6}/128 unreachable; }}",
        "template bgp upstream {",
        f"    hold time {HOLD_TIME}; keepalive time {KEEPALIVE_TIME};",
        "    connect delay time 1; connect retry time 1; error wait time 1, 2;",
        f"    {'bfd on;' if bfd else ''}",
        "}",
    ]
    for family, local, peer in (("4", node.ip4, node.router_ip4), ("6", node.ip6, node.router_ip6)):
        lines.append(
            f"protocol bgp router{family} from upstream {{ local {local} as {node.asn}; "
            f"neighbor {peer} as {ROUTER_ASN}; "
            f'ipv{family} {{ import none; export where proto = "anycast{family}"; }}; }}'
        )
    return "\n".join(lines) + "\n"


def exabgp_config(node: LabNode, process: Path) -> str:
    """exabgp.conf (4.2) for a node: one API process (``process``, an
    executable without arguments: ExaBGP splits ``run`` on spaces), a neighbor
    per family, each with only its own family, so that ``announce route PREFIX
    next-hop self`` goes to the session it fits (ExaBGP logs "the route
    family is not configured on neighbor" for the other one, and answers
    ``done``)."""
    if any(c.isspace() or c in ';{}"\'' for c in str(process)):
        raise ValueError(f"cannot put {process} into an ExaBGP config")
    return f"""\
process control {{
    run {process};
    encoder text;
}}

template {{
    neighbor router {{
        router-id {node.ip4};
        local-as {node.asn};
        peer-as {ROUTER_ASN};
        hold-time {HOLD_TIME};
        api {{
            processes [ control ];
        }}
    }}
}}

neighbor {node.router_ip4} {{
    inherit router;
    local-address {node.ip4};
    family {{
        ipv4 unicast;
    }}
}}

neighbor {node.router_ip6} {{
    inherit router;
    local-address {node.ip6};
    family {{
        ipv6 unicast;
    }}
}}
"""


def exabgp_env(log_destination: str = "stdout", **overrides: str) -> dict[str, str]:
    """The environment ExaBGP runs with: this process's, less any exabgp
    setting it has, plus these (ExaBGP reads them before its exabgp.env)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
    env.update({
        # As root, ExaBGP drops to user "exabgp" by default; it and its API
        # process could then not read the lab's 0700 temporary directory.
        "exabgp_daemon_user": "root",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": "",
        # No exabgpcli: it would look for named pipes in /run/exabgp and
        # share them with every other ExaBGP on the machine.
        "exabgp_api_cli": "false",
        # "done"/"error" on the API process's stdin after every command.
        "exabgp_api_ack": "true",
        "exabgp_log_destination": log_destination,
        "exabgp_log_level": "INFO",
    })
    env.update({k if k.startswith("exabgp_") else f"exabgp_{k}": v for k, v in overrides.items()})
    return env


# -- the lab -----------------------------------------------------------------------


class BgpLab:
    """Router, nodes and client in namespaces of their own (see the module
    docstring).  As a context manager it builds the namespaces and links on
    entry; :meth:`start` starts the router and the nodes' speakers; on exit
    every process in the lab's namespaces is killed, then the namespaces
    (and with them the links) are deleted and the working directory removed,
    whatever part of the set-up happened.  (The working directory is made
    at construction: use it as a context manager, or call :meth:`close`.)"""

    def __init__(self, nodes: Sequence[str] = ("node1", "node2"), *, octet: int = OCTET,
                 bfd: bool = True, ecmp: bool = True, keep_workdir: bool = False,
                 exabgp_settings: dict[str, str] | None = None) -> None:
        if not 1 <= len(nodes) <= MAX_NODES or len(set(nodes)) != len(nodes):
            raise ValueError(f"1 to {MAX_NODES} distinct node names, not {nodes!r}")
        for name in nodes:
            # the router's side of the link is "r-NAME": at most 15 characters
            if not (name.isascii() and name.isalnum() and name.islower() and len(name) <= 12):
                raise ValueError(f"node name {name!r}: lower-case letters and digits, <= 12")
            if name in ("router", "client"):
                raise ValueError(f"node name {name!r} is taken")
        self.octet = octet
        self.bfd = bfd
        self.ecmp = ecmp
        self.keep_workdir = keep_workdir
        self.exabgp_settings = dict(exabgp_settings or {})
        self.tag = secrets.token_hex(3)
        self.router_ns = f"gbl{self.tag}-router"
        self.client_ns = f"gbl{self.tag}-client"
        self.router_id = f"10.{octet}.0.1"
        self.anycast4 = f"10.{octet}.255.53"
        self.anycast6 = f"fd00:{octet}:ff::53"
        self.prefix4 = f"{self.anycast4}/32"
        self.prefix6 = f"{self.anycast6}/128"
        self.client_ip4 = f"10.{octet}.{CLIENT_INDEX}.2"
        self.client_ip6 = f"fd00:{octet}:{CLIENT_INDEX}::2"
        self.router_client_ip4 = f"10.{octet}.{CLIENT_INDEX}.1"
        self.router_client_ip6 = f"fd00:{octet}:{CLIENT_INDEX}::1"
        self.nodes: dict[str, LabNode] = {
            name: LabNode(
                name=name, index=i, ns=f"gbl{self.tag}-{name}", asn=ROUTER_ASN + i,
                ip4=f"10.{octet}.{i}.2", ip6=f"fd00:{octet}:{i}::2",
                router_ip4=f"10.{octet}.{i}.1", router_ip6=f"fd00:{octet}:{i}::1",
                router_dev=f"r-{name}",
            )
            for i, name in enumerate(nodes, start=1)
        }
        self.speakers: dict[str, Speaker] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="geodns-bgplab-"))
        self.router_sock = self.workdir / "router.ctl"
        self._made_ns: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._router: subprocess.Popen[Any] | None = None
        self._speaker_procs: dict[str, subprocess.Popen[Any]] = {}
        self._relays: set[str] = set()  # nodes whose ExaBGP runs the lab's relay
        self._closed = False

    # -- life cycle -------------------------------------------------------------------
    def __enter__(self) -> BgpLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        for ns in (self.router_ns, self.client_ns, *(n.ns for n in self.nodes.values())):
            _ip("netns", "add", ns)
            self._made_ns.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        links = [(n.router_dev, n.ns, n.index) for n in self.nodes.values()]
        links.append(("r-client", self.client_ns, CLIENT_INDEX))
        for router_dev, ns, index in links:
            # Made in the router namespace, the peer straight into the other
            # one: the root namespace never sees either end.
            _ip("-n", self.router_ns, "link", "add", router_dev, "type", "veth",
                "peer", "name", "up0", "netns", ns)
            # nodad: a tentative IPv6 address cannot be bound (BGP, BFD) for
            # the second or so duplicate address detection takes.
            for where, dev, host in ((self.router_ns, router_dev, 1), (ns, "up0", 2)):
                _ip("-n", where, "addr", "add", f"10.{self.octet}.{index}.{host}/30", "dev", dev)
                _ip("-n", where, "addr", "add", f"fd00:{self.octet}:{index}::{host}/64",
                    "dev", dev, "nodad")
                _ip("-n", where, "link", "set", dev, "up")
            _ip("-n", ns, "route", "add", "default", "via", f"10.{self.octet}.{index}.1")
            _ip("-n", ns, "-6", "route", "add", "default", "via", f"fd00:{self.octet}:{index}::1")
        for node in self.nodes.values():
            _ip("-n", node.ns, "addr", "add", self.prefix4, "dev", "lo")
            _ip("-n", node.ns, "addr", "add", self.prefix6, "dev", "lo")
        # Forwarding in the router namespace only (a new namespace starts
        # with it off, whatever the root namespace has).
        settings = ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        if SYSCTL:
            self._check(self.router_exec([SYSCTL, "-q", "-w", *settings]), "sysctl")
        else:
            script = " && ".join(
                f"echo {value} > /proc/sys/{key.replace('.', '/')}"
                for key, value in (s.split("=") for s in settings))
            self._check(self.router_exec(["sh", "-c", script]), "sysctl")

    def close(self) -> None:
        """Kill every process in the lab's namespaces (the ones started here
        and whatever they started, such as ExaBGP's API process, which ExaBGP
        puts in a process group of its own), delete the namespaces, remove
        the working directory.  Every step is tried even if one fails; safe
        to call twice."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for ns in self._made_ns:
            for pid in _ns_pids(ns):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        deadline = time.monotonic() + STOP_TIMEOUT
        for ns in self._made_ns:
            # a process left inside would keep the namespace alive, nameless
            while _ns_pids(ns) and time.monotonic() < deadline:
                time.sleep(0.02)
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _ip("netns", "del", ns, check=False)
        self._made_ns.clear()
        self._procs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- starting the daemons -----------------------------------------------------------
    def start(self, speakers: dict[str, Speaker],
              exabgp_process: dict[str, list[str]] | None = None, *,
              wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start the router's BIRD, then a speaker on each node named in
        ``speakers``; nodes not named get none (and no session).
        ``exabgp_process[node]`` is the argv of the API process of that
        node's ExaBGP, instead of the lab's relay.  With ``wait``, return once
        every session is Established (and every relay reads its FIFO)."""
        if self.speakers:
            raise BgpLabError("this lab is started already (start_speaker restarts one)")
        exabgp_process = exabgp_process or {}
        for name, kind in speakers.items():
            if name not in self.nodes:
                raise ValueError(f"no node {name!r} in this lab")
            if kind not in ("exabgp", "bird"):
                raise ValueError(f"speaker {kind!r} for {name}: 'exabgp' or 'bird'")
            if name in exabgp_process and kind != "exabgp":
                raise ValueError(f"{name} runs BIRD: an ExaBGP process makes no sense there")
        self.speakers = dict(speakers)
        bfd_nodes = [n for n, k in speakers.items() if k == "bird"] if self.bfd else []
        conf = self.workdir / "router.conf"
        conf.write_text(router_bird_config(
            self.router_id, [self.nodes[n] for n in speakers], bfd_nodes,
            self.workdir / "router.log", self.ecmp))
        self._router = self._start_bird(self.router_ns, "router", conf, self.router_sock)
        for name, kind in speakers.items():
            node = self.nodes[name]
            if kind == "bird":
                conf = self.workdir / f"{name}.conf"
                conf.write_text(node_bird_config(node, self.anycast4, self.anycast6,
                                                 self.workdir / f"{name}.log", self.bfd))
            else:
                self._write_exabgp(node, exabgp_process.get(name))
            self.start_speaker(name)
        if wait:
            deadline = time.monotonic() + timeout
            for name in speakers:
                self.wait_established(name, max(0.1, deadline - time.monotonic()))
                if name in self._relays:  # ready for announce() too
                    os.close(self._open_relay(name, deadline))

    def _write_exabgp(self, node: LabNode, argv: list[str] | None) -> None:
        if argv is None:
            fifo = self.workdir / f"{node.name}.fifo"
            os.mkfifo(fifo, 0o600)
            relay = self.workdir / "relay.py"
            relay.write_text(_RELAY)
            argv = [sys.executable, "-u", str(relay), str(fifo),
                    str(self.workdir / f"{node.name}.answers")]
            self._relays.add(node.name)
        # ExaBGP's `run` is split on spaces, with no quoting: a script of
        # our own takes any argv.
        wrapper = self.workdir / f"{node.name}-process.sh"
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.join(argv)}\n")
        wrapper.chmod(0o700)
        (self.workdir / f"{node.name}.exabgp.conf").write_text(exabgp_config(node, wrapper))

    def start_speaker(self, name: str) -> None:
        """Start (again, e.g. after :meth:`kill_speaker`) ``name``'s speaker,
        with the configuration :meth:`start` wrote; does not wait."""
        node = self.nodes[name]
        old = self._speaker_procs.get(name)
        if old is not None and old.poll() is None:
            raise BgpLabError(f"{name}'s speaker is still running (pid {old.pid})")
        if self.speakers.get(name) == "bird":
            self._speaker_procs[name] = self._start_bird(
                node.ns, name, self.workdir / f"{name}.conf", self._sock(name))
            return
        if self.speakers.get(name) != "exabgp":
            raise BgpLabError(f"{name} has no speaker in this lab")
        with open(self.workdir / f"{name}.exabgp.out", "ab") as out:
            self._speaker_procs[name] = self._popen(
                node.ns, [EXABGP, str(self.workdir / f"{name}.exabgp.conf")],
                env=exabgp_env(**self.exabgp_settings), stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir)

    def _sock(self, name: str) -> Path:
        return self.router_sock if name == "router" else self.workdir / f"{name}.ctl"

    def _start_bird(self, ns: str, name: str, conf: Path, sock: Path) -> subprocess.Popen[Any]:
        """``bird -f`` in ``ns``; returns once its control socket answers."""
        with open(self.workdir / f"{name}.out", "ab") as out:
            proc = self._popen(ns, [BIRD, "-f", "-c", str(conf), "-s", str(sock),
                                    "-P", str(self.workdir / f"{name}.pid")],
                               stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + CMD_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise BgpLabError(f"bird for {name} exited with {proc.returncode}:\n"
                                  f"{_tail(self.workdir / f'{name}.out')}\n{conf.read_text()}")
            if sock.exists() and _birdc(sock, "show", "status", check=False).returncode == 0:
                return proc
            if time.monotonic() > deadline:
                raise BgpLabError(f"bird for {name}: no control socket after {CMD_TIMEOUT} s")
            time.sleep(0.02)

    # -- sessions ---------------------------------------------------------------------
    def sessions(self, name: str) -> dict[str, str]:
        """The router's BGP protocols with node ``name`` and their state:
        ``{"node1_4": "Established", "node1_6": "Active"}``; BIRD's Info
        column (BGP state, or the protocol state if it has none)."""
        out = self.birdc("router", "show", "protocols")
        found: dict[str, str] = {}
        for line in out.splitlines():
            words = line.split()
            if words and words[0] in (f"{name}_4", f"{name}_6"):
                # Name Proto Table State Since(date time) Info...
                found[words[0]] = words[6] if len(words) > 6 else words[3]
        return found

    def wait_established(self, name: str, timeout: float = START_TIMEOUT) -> float:
        """Wait until both of ``name``'s sessions are Established; seconds waited."""
        start = time.monotonic()
        while True:
            states = self.sessions(name)
            if states and all(s == "Established" for s in states.values()):
                return time.monotonic() - start
            proc = self._speaker_procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise BgpLabError(f"{name}'s speaker exited with {proc.returncode}\n"
                                  + self.diagnostics())
            if time.monotonic() - start > timeout:
                raise BgpLabError(f"{name}: sessions {states} after {timeout:g} s\n"
                                  + self.diagnostics())
            time.sleep(0.05)

    # -- announcing ---------------------------------------------------------------------
    def announce(self, name: str, prefixes: Iterable[str] | None = None) -> None:
        """Have node ``name`` announce ``prefixes`` (both anycast prefixes by
        default): ``announce route P next-hop self`` through the relay for
        ExaBGP (waits for ExaBGP's ``done``), ``birdc enable anycastN`` for
        BIRD (anycast prefixes only)."""
        self._toggle(name, True, prefixes)

    def withdraw(self, name: str, prefixes: Iterable[str] | None = None) -> None:
        """Undo :meth:`announce`: ``withdraw route P`` / ``birdc disable anycastN``."""
        self._toggle(name, False, prefixes)

    def _toggle(self, name: str, up: bool, prefixes: Iterable[str] | None) -> None:
        chosen = [self.prefix4, self.prefix6] if prefixes is None else list(prefixes)
        kind = self.speakers.get(name)
        if kind == "exabgp":
            for prefix in chosen:
                self.exabgp_command(name, f"announce route {prefix} next-hop self" if up
                                    else f"withdraw route {prefix}")
        elif kind == "bird":
            protocols = {self.prefix4: "anycast4", self.prefix6: "anycast6"}
            for prefix in chosen:
                if prefix not in protocols:
                    raise ValueError(f"BIRD nodes announce {sorted(protocols)} only, not {prefix}")
                out = self.birdc(name, "enable" if up else "disable", protocols[prefix])
                if "enabled" not in out and "disabled" not in out:
                    raise BgpLabError(f"birdc on {name}: {out}")
        else:
            raise BgpLabError(f"{name} has no speaker in this lab")

    def exabgp_command(self, name: str, line: str, timeout: float = CMD_TIMEOUT) -> str:
        """Send one API command to node ``name``'s ExaBGP through the lab's
        relay; ExaBGP's answer (``done``).  Raises BgpLabError on ``error``,
        on no answer within ``timeout``, or if the relay is gone."""
        if name not in self._relays:
            raise BgpLabError(f"{name}'s ExaBGP does not run the lab's relay")
        answers = self.workdir / f"{name}.answers"
        seen = len(_lines(answers))
        deadline = time.monotonic() + timeout
        fd = self._open_relay(name, deadline)
        try:
            os.write(fd, (line.strip() + "\n").encode())
        finally:
            os.close(fd)
        while True:
            got = _lines(answers)
            if len(got) > seen:
                answer = got[seen].split("\t", 1)[0]
                if answer != "done":
                    raise BgpLabError(f"ExaBGP on {name} answered {answer!r} to {line!r}\n"
                                      + _tail(self.workdir / f"{name}.exabgp.out"))
                return answer
            if time.monotonic() > deadline:
                raise BgpLabError(f"ExaBGP on {name}: no answer to {line!r} in {timeout:g} s\n"
                                  + _tail(self.workdir / f"{name}.exabgp.out"))
            time.sleep(0.001)

    def _open_relay(self, name: str, deadline: float) -> int:
        """The write end of ``name``'s relay FIFO, once the relay has it open
        (ExaBGP starts it; sessions can be up before it is)."""
        while True:
            try:
                return os.open(self.workdir / f"{name}.fifo", os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody reads the FIFO (yet, or any more)
                proc = self._speaker_procs.get(name)
                if time.monotonic() > deadline or proc is None or proc.poll() is not None:
                    raise BgpLabError(f"{name}'s relay is not there ({exc})\n"
                                      + _tail(self.workdir / f"{name}.exabgp.out")) from exc
                time.sleep(0.005)

    # -- what the router sees -----------------------------------------------------------
    def router_routes(self, prefix: str, source: Literal["kernel", "bird"] = "kernel") -> list[str]:
        """Next hops the router has for exactly ``prefix`` (sorted; empty if
        no route): from its kernel table (what forwarding uses: one per ECMP
        path) or from BIRD (every BGP route it holds, best or not)."""
        if source == "bird":
            out = self.birdc("router", "show", "route", prefix)
            hops = {line.split()[1] for line in out.splitlines()
                    if line.strip().startswith("via ")}
            return sorted(hops)
        family = "-6" if ":" in prefix else "-4"
        out = _ip("-n", self.router_ns, family, "-j", "route", "show", prefix).stdout
        hops = set()
        for route in json.loads(out or "[]"):
            if "gateway" in route:
                hops.add(route["gateway"])
            for hop in route.get("nexthops", []):
                if "gateway" in hop:
                    hops.add(hop["gateway"])
        return sorted(hops)

    def wait_route(self, prefix: str, via: set[str], timeout: float = 5.0,
                   since: float | None = None,
                   source: Literal["kernel", "bird"] = "kernel") -> float:
        """Wait until the router's next hops for ``prefix`` are exactly ``via``
        (an empty set: no route); seconds from ``since`` (a time.monotonic(),
        e.g. taken just before a withdraw) or from the call.  The router's
        table is looked at every few ms (each look runs ``ip``, ~2 ms)."""
        start = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            hops = set(self.router_routes(prefix, source))
            if hops == via:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise BgpLabError(f"router: {prefix} via {sorted(hops)}, not {sorted(via)}, "
                                  f"after {timeout:g} s\n" + self.diagnostics())
            time.sleep(POLL)

    # -- speakers' processes ------------------------------------------------------------
    def speaker_pid(self, name: str) -> int:
        """Pid of ``name``'s BIRD or ExaBGP (the daemon itself)."""
        proc = self._speaker_procs.get(name)
        if proc is None:
            raise BgpLabError(f"{name} has no speaker running")
        return proc.pid

    def signal_speaker(self, name: str, sig: int) -> None:
        """Send ``sig`` to ``name``'s speaker (the daemon only, not its API process)."""
        os.kill(self.speaker_pid(name), sig)

    def kill_speaker(self, name: str) -> None:
        """SIGKILL ``name``'s speaker and reap it.  Its TCP sessions are
        closed by the kernel at once (a FIN to the router): the router drops
        the routes in milliseconds, not after the hold time.  ExaBGP's API
        process (in a process group of its own) sees its stdin end; if it has
        not left a second later it is killed too, so that a restarted ExaBGP's
        new one is alone on the relay's FIFO."""
        proc = self._speaker_procs[name]
        children = _children(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + 1.0
        while children and time.monotonic() < deadline:
            children = [pid for pid in children if _running(pid)]
            time.sleep(0.01)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def freeze_speaker(self, name: str) -> None:
        """SIGSTOP ``name``'s speaker: a hung daemon with its sessions open,
        which only the hold timer (or BFD) can tell from a quiet one."""
        self.signal_speaker(name, signal.SIGSTOP)

    def thaw_speaker(self, name: str) -> None:
        """SIGCONT after :meth:`freeze_speaker`."""
        self.signal_speaker(name, signal.SIGCONT)

    # -- commands in the namespaces -------------------------------------------------------
    def namespace(self, where: str) -> str:
        """The namespace of ``"router"``, ``"client"`` or a node."""
        if where == "router":
            return self.router_ns
        if where == "client":
            return self.client_ns
        return self.nodes[where].ns

    def pids(self, where: str) -> list[int]:
        """Pids of every process in the namespace of ``where`` (``"router"``,
        ``"client"`` or a node), whoever started them."""
        return _ns_pids(self.namespace(where))

    def birdc(self, name: str, *command: str) -> str:
        """``birdc`` on ``"router"`` or a BIRD node (by its control socket,
        which is a file: no need to enter the namespace); its output."""
        return _birdc(self._sock(name), *command).stdout

    def _popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen([IP, "netns", "exec", ns, *argv], **kw)
        self._procs.append(proc)
        return proc

    def _run(self, ns: str, argv: Sequence[str], timeout: float,
             **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([IP, "netns", "exec", ns, *argv], timeout=timeout, text=True,
                              check=False, **kw)

    def node_exec(self, name: str, argv: Sequence[str], timeout: float = 30.0,
                  **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to the end in node ``name``'s namespace; output as text."""
        return self._run(self.nodes[name].ns, argv, timeout, **kw)

    def node_popen(self, name: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in node ``name``'s namespace (killed when the lab closes)."""
        return self._popen(self.nodes[name].ns, argv, **kw)

    def client_exec(self, argv: Sequence[str], timeout: float = 30.0,
                    **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to the end in the client's namespace; output as text."""
        return self._run(self.client_ns, argv, timeout, **kw)

    def client_popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the client's namespace (killed when the lab closes)."""
        return self._popen(self.client_ns, argv, **kw)

    def router_exec(self, argv: Sequence[str], timeout: float = CMD_TIMEOUT,
                    **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to the end in the router's namespace."""
        return self._run(self.router_ns, argv, timeout, **kw)

    @staticmethod
    def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            raise BgpLabError(f"{what}: {done.stderr.strip() or done.returncode}")

    # -- data path ----------------------------------------------------------------------
    def start_udp_echo(self, name: str, port: int = 5353,
                       addresses: Sequence[str] | None = None) -> subprocess.Popen[Any]:
        """A UDP echo server in node ``name`` on the anycast addresses (or
        ``addresses``) that answers ``"NAME PAYLOAD"``; returns once bound."""
        addrs = list(addresses) if addresses is not None else [self.anycast4, self.anycast6]
        proc = self.node_popen(name, [sys.executable, "-u", "-c", _ECHO, name, str(port), *addrs],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], CMD_TIMEOUT)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            proc.kill()
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise BgpLabError(f"UDP echo on {name}: {line or 'no answer'} {err}")
        return proc

    def client_udp(self, addr: str, port: int = 5353, payload: str = "ping",
                   timeout: float = 1.0) -> str:
        """One UDP exchange from the client: ``"answer TEXT"``, ``"timeout"``
        or an errno name (e.g. ``ENETUNREACH`` when the router has no route
        and says so with an ICMP unreachable)."""
        done = self.client_exec([sys.executable, "-c", _UDP_ASK, addr, str(port), payload,
                                 str(timeout)], timeout=timeout + 10)
        if done.returncode != 0:
            raise BgpLabError(f"UDP probe failed: {done.stderr.strip()}")
        return done.stdout.strip()

    # -- diagnostics --------------------------------------------------------------------
    def diagnostics(self) -> str:
        """What the router thinks, and the tail of every daemon's log: for
        the message of a failed wait."""
        parts = []
        for command in (("show", "protocols"), ("show", "route", "all")):
            try:
                parts.append(f"--- router birdc {' '.join(command)}\n{self.birdc('router', *command)}")
            except (BgpLabError, OSError, subprocess.SubprocessError) as exc:
                parts.append(f"--- router birdc {' '.join(command)}: {exc}")
        for path in sorted(self.workdir.glob("*.log")) + sorted(self.workdir.glob("*.out")) \
                + sorted(self.workdir.glob("*.answers")):
            parts.append(f"--- {path.name}\n{_tail(path, 2500)}")
        return "\n".join(parts)


# -- helpers -------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip ARGS``; BgpLabError with its stderr if it fails and ``check``."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=CMD_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise BgpLabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _birdc(sock: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([BIRDC, "-s", str(sock), *command], capture_output=True, text=True,
                          timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise BgpLabError(f"birdc {' '.join(command)}: {done.stderr.strip() or done.stdout}")
    return done


def _ns_pids(ns: str) -> list[int]:
    """Pids of the processes in namespace ``ns`` (``ip netns pids``)."""
    try:
        out = _ip("netns", "pids", ns, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(word) for word in out.split() if word.isdigit()]


def _children(pid: int) -> list[int]:
    """Pids of the live children of ``pid`` (from /proc: their parent pid)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """Is ``pid`` a live process (not gone, not a zombie)?"""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no {path.name}: {exc})"
    return text if len(text) <= limit else "...\n" + text[-limit:]
