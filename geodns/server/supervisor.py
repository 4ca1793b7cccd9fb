"""Process supervision: one serving process in the foreground, or N workers
sharing the listen addresses (SO_REUSEPORT) under a supervising process.

The supervisor does no DNS.  It forks the workers (worker 0, which serves
the admin API and runs the probes, first and alone; the others once it
serves, so that a node that cannot start fails before any worker answered a
query), relays health views between them (:mod:`geodns.server.link`),
forwards SIGHUP, SIGTERM and SIGINT to them, and starts a worker again when
one dies unexpectedly (handing it the node's current health view, so it does
not start from "unknown"; on the same ports, port 0 having been resolved
once).  If a worker fails while the node is starting, the node does not
start: every worker is stopped and the exit status says so.  A worker that
keeps dying soon after it starts stops the node too, rather than looping
forever.

Signals cannot kill a process that is still starting: a SIGHUP that arrives
before the event loop's handlers exist is remembered and acted on once the
start is done (:mod:`geodns.early`, installed first thing by the
``geodns`` command), and a worker's event loop runs once from start
to stop, so that no signal falls between two runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from geodns import early, logs
from geodns.config import Address, Config
from geodns.errors import StartupError
from geodns.health.view import HealthView
from geodns.server.app import Server
from geodns.server.handover import (
    HandoverError,
    Offer,
    SocketSet,
    Successor,
    forget,
    make_offer,
    receive,
    recv_set,
    say_ready,
    send_set,
    sets_of,
)
from geodns.server.link import Relay
from geodns.server.sdnotify import notify as sd_notify
from geodns.server.sockets import GivenSockets, from_systemd
from geodns.server.transport import bind_pair

log = logging.getLogger("geodns.server")

# A worker that dies this soon after starting, this many times in a row,
# stops the node.
CRASH_WINDOW = 10.0
CRASH_LIMIT = 3



def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_worker(config: Config, reuse_port: bool,
               on_ready: Callable[[Server], None] | None = None, admin: bool = True,
               index: int = 0, runtime_dir: Path | None = None,
               link: socket.socket | None = None,
               handover: HealthView | None = None, takeover_fd: int | None = None,
               given_set: SocketSet | None = None,
               inherited: dict[str, Any] | None = None,
               fdchan: socket.socket | None = None) -> int:
    """Run one serving process until it is told to stop.  Exit status 1 when
    it cannot start (the reason is logged, naming the file or address).
    With ``takeover_fd`` it replaces a running process, which hands it its
    sockets and state there (:mod:`geodns.server.handover`); a worker is
    given them by its supervisor (``given_set``, ``inherited``) and gives
    copies of its own back on ``fdchan`` once it listens."""
    early.install()
    given: GivenSockets | None = None
    inherited = dict(inherited or {})
    if takeover_fd is not None:
        offer = _offer_received(takeover_fd)
        if offer is None:
            return 1
        inherited.update(offer.state)
        sets = sets_of(offer)
        given_set = SocketSet([s for one in sets for s in one.dns])
        if sets:
            given_set.admin, given_set.control = sets[0].admin, sets[0].control
        for one in sets[1:]:
            SocketSet([], one.admin, one.control).close()
        log.info("taking over from process %s: %d listening socket(s)",
                 inherited.get("from_pid"), len(given_set.dns),
                 extra={"event": "takeover", "pid": inherited.get("from_pid")})
    elif runtime_dir is None:
        given = from_systemd()
    if given_set is not None:
        given = GivenSockets(given_set.dns, "the node this one replaces")
        inherited["admin_sock"], inherited["control_sock"] = given_set.admin, given_set.control
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = Server(config, reuse_port=reuse_port, admin=admin, worker_index=index,
                    runtime_dir=runtime_dir, link=link, handover=handover, given=given,
                    inherited=inherited)

    async def lifetime() -> int:
        # One run of the loop from start to stop: uvloop keeps a signal that
        # arrives between two runs until the next signal comes, so a SIGTERM
        # just after the start would be lost.
        server.install_signals()
        if early.reload_requested:
            early.reload_requested = False
            server.request_reload()  # remembered until the start is done
        try:
            await server.start()
        except StartupError as exc:
            log.error("cannot start: %s", exc, extra={"event": "start-failed"})
            await server.shutdown()
            return exc.exit_status
        if on_ready is not None:
            on_ready(server)
        if fdchan is not None:
            try:  # copies for the supervisor, to hand to a successor
                send_set(fdchan, server.listening_set())
            except OSError as exc:
                log.warning("could not give the supervising process this worker's sockets: "
                            "%s (a restart cannot hand them over)", exc)
            fdchan.close()
        if server.link is not None:
            server.link.send({"ready": index})  # the supervisor may now restart it
        if early.restart_requested and runtime_dir is None:
            early.restart_requested = False
            server.request_restart()  # SIGUSR2 came while starting
        if takeover_fd is not None:
            # A full collection now, while the old process still answers,
            # rather than a long pause in the first seconds of serving alone.
            gc.collect()
            say_ready(takeover_fd)  # the old process stops reading and exits
            sd_notify("READY=1", f"MAINPID={os.getpid()}")
        elif runtime_dir is None:
            sd_notify("READY=1")
        await server.serve_forever()
        return 0

    try:
        return loop.run_until_complete(lifetime())
    finally:
        # Stopped: the process is on its way out.  Closing the loop gives
        # SIGTERM and SIGINT back their default action, and a second SIGTERM
        # (a service manager, an impatient operator) would then turn a clean
        # exit into "killed by signal".
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        loop.close()


def _offer_received(fd: int) -> Offer | None:
    """What the running node hands over on ``fd`` (None, logged, if nothing)."""
    try:
        return receive(fd)
    except (OSError, ValueError, HandoverError) as exc:
        log.error("cannot take over from the running node: %s", exc,
                  extra={"event": "start-failed"})
        return None


def run(config: Config, takeover_fd: int | None = None) -> int:
    """Run the server in the foreground; with ``workers > 1``, as that many
    processes under a supervising one."""
    if config.workers <= 1:
        return run_worker(config, reuse_port=False, takeover_fd=takeover_fd)
    offered: list[SocketSet] = []
    inherited: dict[str, Any] = {}
    if takeover_fd is not None:
        offer = _offer_received(takeover_fd)
        if offer is None:
            return 1
        inherited = dict(offer.state)
        offered = sets_of(offer)
        log.info("taking over from process %s: %d worker(s)' listening sockets",
                 inherited.get("from_pid"), len(offered),
                 extra={"event": "takeover", "pid": inherited.get("from_pid")})
        if offered and len(offered) != config.workers:
            log.info("the running node has %d worker(s), this one %d: %s", len(offered),
                     config.workers, "some workers share their sockets"
                     if len(offered) < config.workers else "some workers read the sockets "
                     "of more than one")
    _fix_ports(config, offered[0] if offered else None)
    runtime_dir = Path(tempfile.mkdtemp(prefix="geodns-workers-"))
    try:
        return Supervisor(config, runtime_dir, offered, inherited, takeover_fd).run()
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _fix_ports(config: Config, given: SocketSet | None) -> None:
    """Resolve port 0 once (to the port handed over, or a free one), so that
    every worker, and a worker started again, binds the same ports (and
    keeps them: the file's "port 0" is not a change that needs a restart)."""
    def handed(host: str, kind: socket.SocketKind, socks: list[socket.socket]) -> int | None:
        for sock in socks:
            if sock.type == kind and sock.getsockname()[0] == host:
                return int(sock.getsockname()[1])
        return None

    if any(addr.port == 0 for addr in config.listen):
        fixed = []
        for addr in config.listen:
            port = addr.port or handed(addr.host, socket.SOCK_DGRAM, given.dns if given else [])
            if not port:
                udp, tcp = bind_pair(addr.host, 0, reuse_port=True)
                port = udp.getsockname()[1]
                udp.close()
                tcp.close()
            fixed.append(Address(addr.host, port))
        config.listen = config.overrides["listen"] = fixed
    # The admin API too: worker 0, started again, must serve it where it was.
    if config.admin is not None and config.admin.port == 0:
        port = handed(config.admin.host, socket.SOCK_STREAM,
                      [given.admin] if given is not None and given.admin is not None else [])
        if not port:
            family = socket.AF_INET6 if ":" in config.admin.host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((config.admin.host, 0))
                port = probe.getsockname()[1]
        config.admin = config.overrides["admin"] = Address(config.admin.host, port)


class Supervisor:
    """The process over the workers.  Besides starting them and relaying
    their health views, it keeps a copy of each worker's listening sockets
    (given back once the worker listens; closed when it dies, so that the
    kernel sends its share to the others), and with them restarts the node:
    worker 0 asks, with the node's state, and the supervisor starts its
    successor (a supervisor too), hands it every worker's sockets, and once
    all of the successor's workers serve, tells its own to stop."""

    def __init__(self, config: Config, runtime_dir: Path, offered: list[SocketSet] | None = None,
                 inherited: dict[str, Any] | None = None,
                 takeover_fd: int | None = None) -> None:
        self.config = config
        self.runtime_dir = runtime_dir
        self.relay = Relay()
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it was (re)started
        self.crashes: dict[int, int] = {}  # worker index -> quick deaths in a row
        self.ready: set[int] = set()  # workers that have started serving
        self.pending: list[int] = []  # signals caught, to act on in the loop
        self.stopping = False
        self.status = 0
        self._wake_r, self._wake_w = os.pipe()
        # Taking over: the running node's sockets (worker i gets set i) and
        # state (worker 0), until every worker here serves.
        self.offered = offered or []
        self.inherited = inherited or {}
        self.takeover_fd = takeover_fd
        self.held: dict[int, SocketSet] = {}  # each worker's sockets, once it listens
        self.fdchans: dict[int, socket.socket] = {}  # where a worker gives them
        self.successor: Successor | None = None  # a restart under way
        self.restart_asked = False  # SIGUSR2 before every worker served
        self.announced = False  # told the service manager this node serves

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)

    def run(self) -> int:
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD,
                    signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        if early.restart_requested:
            early.restart_requested = False
            self.restart_asked = True
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        # Worker 0 (the admin API, the probes) starts alone; the others once
        # it serves.  A node that cannot start then fails before any worker
        # has answered a query, and every worker starts from its health view.
        self.spawn(0)
        early.reload_requested = False  # worker 0 has it; workers started later read files anew
        while self.children:
            busy = self.relay.flush() or self.successor is not None
            for key, _ in self.selector.select(0.05 if busy else 1.0):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        while os.read(self._wake_r, 4096):
                            pass
                elif key.data == "successor":
                    self._successor_readable()
                else:
                    self._worker_readable(key)
            self._check_successor()
            self._signals()
            self._reap()
        if self.successor is not None:
            self.successor.abort()
        signal.set_wakeup_fd(-1)
        return self.status

    def _worker_readable(self, key: selectors.SelectorKey) -> None:
        index = key.data
        messages = self.relay.readable(index)
        if messages is None:  # the worker closed its end: it is exiting
            self.selector.unregister(key.fileobj)
            return
        for message in messages:
            if "ready" in message:
                self._worker_ready(index)
            elif "restart" in message and index == 0:
                timeout = message.get("timeout")
                self._begin_restart(message["restart"], float(timeout) if isinstance(
                    timeout, (int, float)) else self.config.restart_timeout)

    def _worker_ready(self, index: int) -> None:
        chan = self.fdchans.pop(index, None)
        if chan is not None:
            try:
                chan.settimeout(2)
                got = recv_set(chan)  # sent before "ready": already there
            except (OSError, ValueError) as exc:
                log.warning("worker %d did not give its sockets to the supervisor: %s (a "
                            "restart cannot hand them over)", index, exc)
            else:
                old = self.held.pop(index, None)
                if old is not None:
                    old.close()
                self.held[index] = got
            finally:
                chan.close()
        self.ready.add(index)
        if index == 0 and not self.stopping and len(self.started) < self.config.workers:
            self._spawn_the_rest()
        if len(self.ready) == self.config.workers and not self.stopping:
            self._all_serve()

    def _all_serve(self) -> None:
        """Every worker serves (the first time, or again after a crash)."""
        if self.takeover_fd is not None:
            say_ready(self.takeover_fd)  # the running node stops reading and exits
            sd_notify("READY=1", f"MAINPID={os.getpid()}")
            self.takeover_fd = None
            for index in list(self.relay.peers):
                self.relay.send(index, {"confirmed": True})
            for one in self.offered:
                one.close()  # every worker here has them: ours are not needed
            self.offered = []
        elif not self.announced:
            sd_notify("READY=1")
        self.announced = True
        if self.restart_asked:
            self.restart_asked = False
            self.relay.send(0, {"restart": True})

    def _spawn_the_rest(self) -> None:
        for i in range(1, self.config.workers):
            self.spawn(i)
        log.info("started %d workers: %s", len(self.children),
                 " ".join(map(str, self.children)))

    def spawn(self, index: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd_ours, fd_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handover = None
        if self.relay.latest is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                handover = HealthView.from_json(json.loads(self.relay.latest[4:])["health"])
        given: SocketSet | None = None
        inherited: dict[str, Any] = {}
        if self.takeover_fd is not None and self.offered:
            # Worker i reads the sockets of the running node's worker i (and
            # i + N, ...: none is left unread while it holds queries), or,
            # with more workers than it had, shares some.
            m = len(self.offered)
            mine = range(index, m, self.config.workers) if m > index else [index % m]
            given = SocketSet([s for j in mine for s in self.offered[j].dns])
            if index == 0:  # the admin API and the control socket are worker 0's
                given.admin, given.control = self.offered[0].admin, self.offered[0].control
            inherited = {**(self.inherited if index == 0 else {}), "provisional": True}
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                early.install()
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(self._wake_r)
                os.close(self._wake_w)
                parent.close()
                fd_ours.close()
                self._close_in_child(given)
                logs.set_worker(index, self.config.log_format)
                code = run_worker(self.config, reuse_port=True, admin=(index == 0),
                                  index=index, runtime_dir=self.runtime_dir, link=child,
                                  handover=handover, given_set=given, inherited=inherited,
                                  fdchan=fd_theirs)
            finally:
                os._exit(code)
        child.close()
        fd_theirs.close()
        old = self.fdchans.pop(index, None)
        if old is not None:
            old.close()
        self.fdchans[index] = fd_ours
        self.relay.add(index, parent)
        self.selector.register(parent, selectors.EVENT_READ, index)
        self.children[pid] = index
        self.started[index] = time.monotonic()

    def _close_in_child(self, given: SocketSet | None) -> None:  # pragma: no cover - child
        """A worker holds its own sockets only: another worker's, kept open
        here, would keep receiving that worker's share after it died."""
        keep = {id(s) for s in given.all()} if given is not None else set()
        for peer in self.relay.peers.values():
            peer.sock.close()
        for chan in self.fdchans.values():
            chan.close()
        for one in [*self.held.values(), *self.offered]:
            for sock in one.all():
                if id(sock) not in keep:
                    sock.close()
        if self.successor is not None:
            self.successor.close()
        if self.takeover_fd is not None:
            forget(self.takeover_fd)

    # -- restarting the node ---------------------------------------------------------
    def _begin_restart(self, state: object, timeout: float) -> None:
        """Worker 0 asks, with the node's state: start the successor."""
        missing = [i for i in range(self.config.workers) if i not in self.held]
        if self.successor is not None or self.stopping:
            why = "a restart or a stop is already under way"
        elif missing:
            why = (f"worker(s) {', '.join(map(str, missing))} have not given the supervisor "
                   "their sockets (starting, or failed to)")
        elif not isinstance(state, dict):
            why = "worker 0 sent no state"
        else:
            why = ""
            offer = make_offer([self.held[i] for i in range(self.config.workers)],
                               {**state, "from_pid": os.getpid()})
            try:
                self.successor = Successor(offer, timeout)
            except HandoverError as exc:
                why = str(exc)
            else:
                self.selector.register(self.successor.fileno(), selectors.EVENT_READ,
                                       "successor")
                log.info("restart: started process %d, handing it %d worker(s)' sockets",
                         self.successor.proc.pid, self.config.workers)
        if why:
            self.relay.send(0, {"restart_failed": why})

    def _successor_readable(self) -> None:
        assert self.successor is not None
        try:
            pid = self.successor.readable()
        except (HandoverError, OSError, ValueError) as exc:
            self._restart_failed(exc)
            return
        if pid is None:
            if self.successor.closed_at is not None:
                self.selector.unregister(self.successor.fileno())  # check() says why
            return
        self._end_restart()
        # Every worker here stops reading and exits (after a moment reading
        # beside the successor's), without withdrawing routes.
        self.stopping = True
        for index in list(self.relay.peers):
            self.relay.send(index, {"handed_over": pid})

    def _check_successor(self) -> None:
        if self.successor is not None:
            try:
                self.successor.check()
            except HandoverError as exc:
                self._restart_failed(exc)

    def _restart_failed(self, exc: Exception) -> None:
        successor = self._end_restart()
        successor.abort()
        self.relay.send(0, {"restart_failed": str(exc)})

    def _end_restart(self) -> Successor:
        successor = self.successor
        assert successor is not None
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(successor.fileno())
        self.successor = None
        successor.close()
        return successor

    # -- signals and exits -----------------------------------------------------------
    def _signals(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reaped below
            if signum == signal.SIGUSR2:  # a restart: worker 0 has the node's state
                if self.announced and 0 in self.ready:
                    self.relay.send(0, {"restart": True})
                else:
                    self.restart_asked = True  # once every worker serves
                continue
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def _reap(self) -> None:
        for pid in list(self.children):  # not waitpid(-1): a successor is reaped by its Popen
            try:
                done, st = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, st = pid, 0
            if done == 0:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(st)
            peer = self.relay.peers.get(index)
            if peer is not None:
                with contextlib.suppress(KeyError):
                    self.selector.unregister(peer.sock)
            self.relay.remove(index)
            held = self.held.pop(index, None)
            if held is not None:
                held.close()  # the kernel sends its share to the other workers
            if self.stopping:
                self.status = self.status or (code if code > 0 else 0)
                continue
            how = f"exit status {code}" if code >= 0 else f"signal {-code}"
            if index not in self.ready:
                log.error("worker %d (pid %d) failed while starting (%s); stopping the node",
                          index, pid, how)
                self.status = code if code > 0 else 1
                self._stop_all()
                continue
            quick = time.monotonic() - self.started.get(index, 0.0) < CRASH_WINDOW
            self.crashes[index] = self.crashes.get(index, 0) + 1 if quick else 1
            if self.crashes[index] >= CRASH_LIMIT:
                log.error("worker %d (pid %d) died %d times within %g s of starting (%s); "
                          "stopping the node", index, pid, self.crashes[index], CRASH_WINDOW,
                          how)
                self.status = 1
                self._stop_all()
                continue
            log.error("worker %d (pid %d) died (%s); starting it again", index, pid, how,
                      extra={"event": "worker-restart", "worker": index})
            self.ready.discard(index)
            self.spawn(index)
            self.ready.add(index)  # it served before: a failed restart counts as a crash

    def _stop_all(self) -> None:
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


__all__ = ["new_event_loop", "run", "run_worker"]
