"""Announcing the anycast routes while this node is fit to serve (the
decisions are :mod:`geodns.anycast`'s; this module observes and acts).

Every ``check.interval`` the node sends a self-check query (by default the
SOA of the first zone it serves) to each of its own listening addresses,
through the real sockets, and expects an authoritative answer.  With the
node's readiness, its operator drain and whether it is stopping, that says
whether it is fit; the announcer says whether to announce.

Two BGP speakers:

* **ExaBGP** runs ``geodns anycast-exabgp`` as its process: that helper
  follows the node's decisions over the control socket and writes
  ``announce route``/``withdraw route`` lines for ExaBGP.  When the node dies
  or hangs, the helper loses it and withdraws by itself, so a dead node
  never keeps attracting traffic.
* **BIRD 2**: the node runs ``birdc enable|disable PROTOCOL`` for a static
  protocol holding the prefixes (docs/anycast.md).  BIRD does not notice a
  dead geodns by itself: use BFD and a service manager's stop hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from geodns.address import Address
from geodns.anycast import Action, Announcer, AnycastView, Fitness, fitness
from geodns.config import AnycastConfig

log = logging.getLogger("geodns.anycast")

HEARTBEAT = 0.25  # seconds between the decisions sent to ExaBGP helpers when nothing changes


@dataclass
class NodeState:
    """What the anycast control reads from the node (callables: always now)."""

    readiness: Callable[[], tuple[str, ...]]
    stopping: Callable[[], bool]
    addresses: Callable[[], list[Address]]
    check_name: Callable[[], str | None]  # the default self-check name
    drained: Callable[[], dict[str, Any] | None]


@dataclass(eq=False)  # one per helper, kept in a set by identity
class _Watcher:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


class AnycastControl:
    def __init__(self, cfg: AnycastConfig, node: NodeState) -> None:
        self.cfg = cfg
        self.node = node
        self.announcer = Announcer(cfg.hold_down)
        self.self_check: str | None = "not checked yet"
        self.self_check_failures = 0
        self._fails = 0
        self.since_wall: float | None = None
        self.speaker_error: str | None = None
        self._bird_state: bool | None = None  # what BIRD was last told
        self._watchers: set[_Watcher] = set()
        self._task: asyncio.Task[None] | None = None
        self.handed_over = False

    # -- deciding -------------------------------------------------------------------
    def fitness(self) -> Fitness:
        drained = self.node.drained()
        return fitness(self.node.readiness(), self.self_check,
                       None if drained is None else str(drained.get("why") or ""),
                       self.node.stopping())

    async def update(self) -> None:
        """Decide now (after a check, a drain, a stop) and act on the decision."""
        action = self.announcer.update(self.fitness(), time.monotonic())
        if action is not None:
            self.since_wall = time.time()
            reasons = "; ".join(self.announcer.why) if action == Action.WITHDRAW else ""
            log.log(logging.INFO if action == Action.ANNOUNCE else logging.WARNING,
                    "anycast: %s %s%s", action, ", ".join(self.cfg.prefixes),
                    f" ({reasons})" if reasons else "",
                    extra={"event": f"anycast-{action}", "prefixes": list(self.cfg.prefixes),
                           "reason": reasons})
            self._tell_watchers()
        await self._apply_bird()

    def view(self) -> AnycastView:
        return AnycastView(self.cfg.speaker, self.cfg.prefixes, self.announcer.announced,
                           self.since_wall, self.announcer.why, dict(self.announcer.changes),
                           self.self_check, self.self_check_failures, self.node.drained(),
                           self.speaker_error, len(self._watchers))

    # -- the self-check -------------------------------------------------------------
    async def check(self) -> None:
        """One self-check of every listening address."""
        error = None
        addresses = self.node.addresses()
        name = self.cfg.check_name or self.node.check_name()
        if not addresses:
            error = "no listening address"
        elif name is None:
            error = "no zone served to ask for"
        else:
            for addr in addresses:
                error = await self._ask(addr, name)
                if error is not None:
                    error = f"{addr}: {error}"
                    break
        if error is None:
            self._fails = 0
            self.self_check = None
        else:
            self._fails += 1
            self.self_check_failures += 1
            if self._fails >= self.cfg.check_fall or self.self_check == "not checked yet":
                self.self_check = error

    async def _ask(self, addr: Address, name: str) -> str | None:
        host = "127.0.0.1" if addr.host == "0.0.0.0" else "::1" if addr.host == "::" \
            else addr.host
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        q = dns.message.make_query(name, self.cfg.check_type)
        loop = asyncio.get_running_loop()
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (host, addr.port))
                await loop.sock_sendall(sock, q.to_wire())
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535),
                                              self.cfg.check_timeout)
            except TimeoutError:
                return f"no answer within {self.cfg.check_timeout:g} s"
            except OSError as exc:
                return str(exc.strerror or exc)
        try:
            answer = dns.message.from_wire(data)
        except Exception as exc:  # dnspython raises many kinds
            return f"unreadable answer: {exc}"
        if answer.id != q.id:
            return "an answer to another query"
        if answer.rcode() != dns.rcode.NOERROR:
            return f"{dns.rcode.to_text(answer.rcode())} for {name} {self.cfg.check_type}"
        if not answer.flags & dns.flags.AA:
            return f"not authoritative for {name}"
        want = dns.rdatatype.from_text(self.cfg.check_type)
        if not any(rrset.rdtype == want for rrset in answer.answer):
            return f"no {self.cfg.check_type} record in the answer for {name}"
        return None

    # -- running ----------------------------------------------------------------------
    async def start(self) -> None:
        """The first check and decision (before anyone follows them), then
        one every interval."""
        await self.check()
        await self.update()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.check_interval)
            try:
                await self.check()
                await self.update()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die: the routes depend on it
                log.exception("anycast check failed")

    async def stop(self) -> None:
        """The node stops: withdraw (unless a successor took the sockets and
        goes on announcing), and let the helpers go."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.handed_over:
            await self.update()  # stopping: withdraws
        for w in list(self._watchers):
            w.queue.put_nowait({"bye": True})

    # -- ExaBGP: helpers follow the decisions over the control socket ---------------
    def _message(self) -> dict[str, Any]:
        return {"announce": self.announcer.announced, "prefixes": list(self.cfg.prefixes),
                "why": list(self.announcer.why)}

    def _tell_watchers(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(self._message())

    async def follow(self, writer: asyncio.StreamWriter) -> None:
        """Stream the decisions to one helper (a line now, one per change,
        and one every HEARTBEAT seconds so that it notices a hung node)."""
        w = _Watcher()
        self._watchers.add(w)
        try:
            w.queue.put_nowait(self._message())
            while True:
                try:
                    msg = await asyncio.wait_for(w.queue.get(), HEARTBEAT)
                except TimeoutError:
                    msg = self._message()
                writer.write(json.dumps(msg).encode() + b"\n")
                await writer.drain()
                if msg.get("bye"):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._watchers.discard(w)

    # -- BIRD: birdc enable/disable ---------------------------------------------------
    async def _apply_bird(self) -> None:
        if self.cfg.speaker != "bird":
            return
        want = self.announcer.announced
        if want == self._bird_state:
            return
        errors = []
        for protocol in self.cfg.bird_protocols:
            argv = [self.cfg.birdc]
            if self.cfg.bird_socket is not None:
                argv += ["-s", str(self.cfg.bird_socket)]
            argv += ["enable" if want else "disable", protocol]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT)
                out, _ = await asyncio.wait_for(proc.communicate(), 5)
                text = out.decode(errors="replace").strip()
                ok = proc.returncode == 0 and ("enabled" in text or "disabled" in text)
            except (OSError, TimeoutError) as exc:
                ok, text = False, str(exc)
            if not ok:
                errors.append(f"{' '.join(argv)}: {text or 'failed'}")
        if not errors:
            self._bird_state = want
            self.speaker_error = None
            return
        error = "; ".join(errors)
        if self.speaker_error != error:
            log.error("anycast: BIRD not told (tried again every check): %s", error,
                      extra={"event": "anycast-speaker-error"})
        self.speaker_error = error


__all__ = ["AnycastControl", "AnycastView", "NodeState"]
