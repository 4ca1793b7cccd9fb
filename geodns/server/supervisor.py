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

from geodns import early, logs
from geodns.config import Address, Config
from geodns.errors import StartupError
from geodns.health.view import HealthView
from geodns.server.app import Server
from geodns.server.handover import HandoverError, receive, say_ready
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
               handover: HealthView | None = None, takeover_fd: int | None = None) -> int:
    """Run one serving process until it is told to stop.  Exit status 1 when
    it cannot start (the reason is logged, naming the file or address).
    With ``takeover_fd`` it replaces a running process, which hands it its
    sockets and state there (:mod:`geodns.server.handover`)."""
    early.install()
    given: GivenSockets | None = None
    inherited: dict[str, object] = {}
    if takeover_fd is not None:
        try:
            offer = receive(takeover_fd)
        except (OSError, ValueError, HandoverError) as exc:
            log.error("cannot take over from the running process: %s", exc,
                      extra={"event": "start-failed"})
            return 1
        inherited = dict(offer.state)
        sockets = list(offer.sockets)
        # The control and admin sockets by their place in the offer (popped
        # from the end first, so that the other place stays right).
        roles: list[tuple[int, str]] = []
        for key in ("control_fd", "admin_fd"):
            value = inherited.get(key)
            if isinstance(value, int):
                roles.append((value, key))
        for place, key in sorted(roles, reverse=True):
            if 0 <= place < len(sockets):
                inherited["admin_sock" if key == "admin_fd" else key] = sockets.pop(place)
        given = GivenSockets(sockets, "the process this one replaces")
        log.info("taking over from process %s: %d listening socket(s)",
                 inherited.get("from_pid"), len(sockets),
                 extra={"event": "takeover", "pid": inherited.get("from_pid")})
    elif runtime_dir is None:
        given = from_systemd()
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


def run(config: Config, takeover_fd: int | None = None) -> int:
    """Run the server in the foreground; with ``workers > 1``, as that many
    processes under a supervising one."""
    if config.workers <= 1 or takeover_fd is not None:
        return run_worker(config, reuse_port=False, takeover_fd=takeover_fd)
    # Resolve port 0 once so that every worker binds the same ports (and
    # keeps them: the file's "port 0" is not a change that needs a restart).
    if any(addr.port == 0 for addr in config.listen):
        fixed = []
        for addr in config.listen:
            if addr.port == 0:
                udp, tcp = bind_pair(addr.host, 0, reuse_port=True)
                fixed.append(Address(addr.host, udp.getsockname()[1]))
                udp.close()
                tcp.close()
            else:
                fixed.append(addr)
        config.listen = config.overrides["listen"] = fixed
    # The admin API too: worker 0, started again, must serve it where it was.
    if config.admin is not None and config.admin.port == 0:
        family = socket.AF_INET6 if ":" in config.admin.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((config.admin.host, 0))
            port = probe.getsockname()[1]
        config.admin = config.overrides["admin"] = Address(config.admin.host, port)
    runtime_dir = Path(tempfile.mkdtemp(prefix="geodns-workers-"))
    try:
        return Supervisor(config, runtime_dir).run()
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


class Supervisor:
    def __init__(self, config: Config, runtime_dir: Path) -> None:
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

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.pending.append(signum)

    def run(self) -> int:
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        # Worker 0 (the admin API, the probes) starts alone; the others once
        # it serves.  A node that cannot start then fails before any worker
        # has answered a query, and every worker starts from its health view.
        self.spawn(0)
        early.reload_requested = False  # worker 0 has it; workers started later read files anew
        while self.children:
            timeout = 0.05 if self.relay.flush() else 1.0
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        while os.read(self._wake_r, 4096):
                            pass
                    continue
                messages = self.relay.readable(key.data)
                if messages is None:  # the worker closed its end: it is exiting
                    self.selector.unregister(key.fileobj)
                    continue
                for message in messages:
                    if "ready" in message:
                        self.ready.add(key.data)
                        if key.data == 0 and not self.stopping and \
                                len(self.started) < self.config.workers:
                            self._spawn_the_rest()
            self._signals()
            self._reap()
        signal.set_wakeup_fd(-1)
        return self.status

    def _spawn_the_rest(self) -> None:
        for i in range(1, self.config.workers):
            self.spawn(i)
        log.info("started %d workers: %s", len(self.children),
                 " ".join(map(str, self.children)))

    def spawn(self, index: int) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        handover = None
        if self.relay.latest is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                handover = HealthView.from_json(json.loads(self.relay.latest[4:])["health"])
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
                for peer in self.relay.peers.values():
                    peer.sock.close()
                logs.set_worker(index, self.config.log_format)
                code = run_worker(self.config, reuse_port=True, admin=(index == 0),
                                  index=index, runtime_dir=self.runtime_dir, link=child,
                                  handover=handover)
            finally:
                os._exit(code)
        child.close()
        self.relay.add(index, parent)
        self.selector.register(parent, selectors.EVENT_READ, index)
        self.children[pid] = index
        self.started[index] = time.monotonic()

    def _signals(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reaped below
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(st)
            peer = self.relay.peers.get(index)
            if peer is not None:
                with contextlib.suppress(KeyError):
                    self.selector.unregister(peer.sock)
            self.relay.remove(index)
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
