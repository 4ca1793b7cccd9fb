"""The running server: sockets, the current snapshot, reloads and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from geodns import logs
from geodns import state as state_file
from geodns.admin import Admin
from geodns.config import Address, Config
from geodns.geo import bundled_database
from geodns.health.checker import HealthChecker
from geodns.metrics import Metrics
from geodns.querylog import SampledQueryLog
from geodns.server import shared
from geodns.server.transport import (
    HAVE_UDPBATCH,
    TCPConnection,
    TCPConnections,
    UDPBatchReader,
    UDPReader,
    UDPServer,
    bind_pair,
)
from geodns.snapshot import Snapshot, ZoneStore, file_signature
from geodns.status import ADMIN, START, STATE_CHANGE, AnswerHistory, EventLog, answers_per_pop
from geodns.steering import StaticHealth, Steering
from geodns.wire import Responder

log = logging.getLogger("geodns.server")

SHUTDOWN_GRACE = 5.0
# How UDP is read: "batch" (recvmmsg/sendmmsg through the optional C helper),
# "reader" (recvfrom/sendto per readiness event) or "protocol" (asyncio
# DatagramProtocol).  Chosen by measurement; see bench/README.md.
UDP_MODE = os.environ.get("GEODNS_UDP_MODE", "batch" if HAVE_UDPBATCH else "reader")


class Server:
    """One worker: listens, answers from ``self.responder``, reloads zones.

    ``responder`` is the only thing the data plane reads; a reload replaces
    it with one assignment.
    """

    def __init__(self, config: Config, reuse_port: bool = False,
                 udp_mode: str | None = None, admin: bool = True, worker_index: int = 0,
                 runtime_dir: Path | None = None) -> None:
        self.config = config
        self.reuse_port = reuse_port
        # With several workers: where they leave their counters for the
        # first one's /metrics (see geodns.server.shared).
        self.worker_index = worker_index
        self.runtime_dir = runtime_dir
        self.admin_enabled = admin and config.admin is not None
        self.admin: Admin | None = None
        self.ready = False
        self.checker: HealthChecker | None = None
        self.metrics: Metrics | None = None
        self._state_signature: tuple[int, int, int] | None = None
        self.udp_mode = udp_mode or UDP_MODE
        if self.udp_mode == "batch" and not HAVE_UDPBATCH:
            log.warning("the batched UDP helper is not built; using recvfrom/sendto")
            self.udp_mode = "reader"
        self.health = StaticHealth(dict(config.pop_states))
        self.events = EventLog()
        self.history = AnswerHistory()
        self.started_at: float | None = None
        self.pop_since: dict[str, float] = {}  # wall clock of each PoP's last state change
        self._seen_states: dict[str, str] = {}
        self.store = store_for(config, self.health, self.events)
        self.responder: Responder
        self.tcp = TCPConnections(config.tcp.max_connections, config.tcp.idle_timeout)
        self.bound: list[Address] = []
        self._udp_transports: list[asyncio.BaseTransport] = []
        self._udp_readers: list[socket.socket] = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self.started_at = time.time()
        self.events.add(START, f"{self.config.version} starting on "
                               f"{self.config.identity or 'this node'}")
        self._load_state_file(force=True)
        self._note_states()
        snap = self.store.refresh(force=True)
        assert snap is not None
        self.responder = snap.responder
        loop = asyncio.get_running_loop()
        for addr in self.config.listen:
            udp_sock, tcp_sock = bind_pair(addr.host, addr.port, self.reuse_port)
            if self.udp_mode in ("batch", "reader"):
                reader: UDPBatchReader | UDPReader
                if self.udp_mode == "batch":
                    reader = UDPBatchReader(self, udp_sock)
                else:
                    reader = UDPReader(self, udp_sock)
                loop.add_reader(udp_sock.fileno(), reader.on_readable)
                self._udp_readers.append(udp_sock)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: UDPServer(self), sock=udp_sock)
                self._udp_transports.append(transport)
            server = await loop.create_server(
                lambda: TCPConnection(self, self.tcp), sock=tcp_sock)
            self._tcp_servers.append(server)
            bound = Address(addr.host, udp_sock.getsockname()[1])
            self.bound.append(bound)
            log.info("listening on %s (UDP and TCP)", bound,
                     extra={"event": "listening", "address": str(bound)})
        if self.admin_enabled and self.config.admin is not None:
            self.admin = Admin(self)
            try:
                await self.admin.start(self.config.admin.host, self.config.admin.port)
            except OSError as exc:
                log.error("admin API not started on %s: %s", self.config.admin, exc)
                self.admin = None
        self.metrics = Metrics(self)
        if self.config.pops:
            self.checker = HealthChecker(self.config.checks, self.config.require, self.health,
                                         self.config.health, self._health_changed,
                                         observe=self._observe_probe,
                                         on_state=self._state_changed)
            self._record_checks(snap)
            self.checker.start()
        self.ready = True
        self._tasks.append(asyncio.create_task(self._poll_zones()))
        self._tasks.append(asyncio.create_task(self._sweep_tcp()))
        if self.admin is not None:  # the status page is served here
            self._tasks.append(asyncio.create_task(self._sample_answers()))
        if self.runtime_dir is not None and self.worker_index > 0:
            self._tasks.append(asyncio.create_task(self._publish_counters()))
        zones = ", ".join(sorted(z.name for z in snap.zones.values())) or "none"
        log.info("serving zones: %s", zones)

    async def serve_forever(self, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        if install_signals:
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
        await self._stopped.wait()
        await self.shutdown()

    def request_stop(self) -> None:
        if not self._stopped.is_set():
            log.info("stopping", extra={"event": "stop"})
        self.ready = False  # /readyz turns 503 at once, so load balancers move away
        self._stopped.set()

    def readiness(self) -> list[str]:
        """Why this node should not get traffic yet (empty: it is ready)."""
        if not self.ready:
            return ["stopping" if self._stopped.is_set() else "starting"]
        problems = []
        if not any(s.zone is not None for s in self.store.files.values()):
            problems.append(f"no zone is served from {self.config.zones_dir}")
        if self.config.pops and self.store.locator is None:
            problems.append(f"GeoIP database not loaded: {self.store.geoip_error or 'none'}")
        return problems

    def request_reload(self) -> None:
        log.info("reload requested (SIGHUP)")
        task = asyncio.get_running_loop().create_task(self._forced_reload())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _record_checks(self, snap: Snapshot) -> None:
        """Steered records' own checks, as the zones now say."""
        if self.checker is None:
            return
        records = {spec.key: dict(spec.checks)
                   for zone in snap.zones.values() for types in zone.steered.values()
                   for spec in types.values() if spec.checks}
        self.checker.set_record_checks(records)

    def _observe_probe(self, pop: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.probe_duration.labels(pop).observe(seconds)

    def _health_changed(self) -> None:
        self.responder.forget_decisions()

    def _state_changed(self, pop: str, message: str) -> None:
        self._note_states()
        self.events.add(STATE_CHANGE, message, pop)

    def admin_changed(self, pop: str, message: str) -> None:
        """An administrative state change, for the event log and ``since``."""
        self._note_states()
        self.events.add(ADMIN, message, pop)

    def _note_states(self) -> None:
        """Remember when each PoP's effective state (what steering sees) last
        changed."""
        now = time.time()
        for pop in self.config.pops:
            state = self.health.state(pop)
            if self._seen_states.get(pop) != state:
                self._seen_states[pop] = state
                self.pop_since[pop] = now

    def set_admin_state(self, pop: str, state: str | None) -> None:
        """An administrative override (None removes it), kept in the state
        file so that every worker and the next start see it."""
        overrides = dict(self.health.admin)
        if state is None:
            overrides.pop(pop, None)
        else:
            overrides[pop] = state
        if self.health.set_admin(overrides):
            self.responder.forget_decisions()
        if self.config.state_file is not None:
            try:
                state_file.save(self.config.state_file, overrides)
                self._state_signature = file_signature(str(self.config.state_file))
            except OSError as exc:
                log.error("state file %s not written: %s (the change holds in this "
                          "process only)", self.config.state_file, exc)

    def _load_state_file(self, force: bool = False) -> bool:
        path = self.config.state_file
        if path is None:
            return False
        sig = file_signature(str(path))
        if sig == self._state_signature and not force:
            return False
        self._state_signature = sig
        before = {p: self.health.state(p) for p in self.config.pops}
        changed = self.health.set_admin(state_file.load(path))
        if changed:
            text = ", ".join(f"{p} {s}" for p, s in sorted(self.health.admin.items())) or "none"
            log.info("administrative PoP states: %s", text,
                     extra={"event": "admin", "states": dict(self.health.admin)})
            for pop, old in before.items():
                new = self.health.state(pop)
                if new != old:
                    self.admin_changed(pop, f"{pop} {old} -> {new} (state file {path})")
        return changed

    async def _forced_reload(self) -> None:
        await self.reload(force=True)

    async def shutdown(self) -> None:
        """Stop listening, let written TCP answers drain, close everything."""
        for t in self._tasks:
            t.cancel()
        if self.runtime_dir is not None and self.worker_index > 0:
            shared.publish(self, self.runtime_dir, self.worker_index)
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if self.checker is not None:
            await self.checker.stop()
            self.checker = None
        for server in self._tcp_servers:
            server.close()
        for transport in self._udp_transports:
            transport.close()
        for sock in self._udp_readers:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self._udp_readers.clear()
        self._udp_transports.clear()
        # Answers are written as soon as a query is read, so what is in flight
        # is what sits in write buffers: close() sends it, then closes.
        conns = list(self.tcp.open)
        for conn in conns:
            conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while not all(c.finished for c in conns) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        log.info("stopped")

    # -- reloads ---------------------------------------------------------------
    async def reload(self, force: bool = False) -> bool:
        """Re-read the zone directory; swap in a new snapshot if anything
        changed.  Compiling runs in a thread so the loop keeps answering."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                snap = await loop.run_in_executor(None, self.store.refresh, force)
            except Exception:
                log.exception("reload failed; the previous zones stay in service")
                return False
            if snap is not None:
                snap.responder.adopt_counters(self.responder)
                self.responder = snap.responder
                self._record_checks(snap)
                return True
            return False

    async def _poll_zones(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                if self._load_state_file():
                    self.responder.forget_decisions()
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - reload() already logs
                log.exception("zone poll failed")

    async def _sample_answers(self) -> None:
        """Steered answers per PoP, every history interval, for the status page."""
        while True:
            counts = shared.node_counters(self)[0].counts
            self.history.sample(answers_per_pop(counts), time.time())
            await asyncio.sleep(self.history.interval)

    async def _publish_counters(self) -> None:
        assert self.runtime_dir is not None
        while True:
            await asyncio.sleep(shared.PUBLISH_INTERVAL)
            shared.publish(self, self.runtime_dir, self.worker_index)

    async def _sweep_tcp(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.tcp.idle_timeout / 2))
            self.tcp.sweep()


def store_for(config: Config, health: StaticHealth, events: EventLog | None = None
              ) -> ZoneStore:
    """The zone store a configuration describes (also used by explain)."""
    steering = Steering(config.pops, config.default_order, config.latency)
    geoip = config.geoip_database or bundled_database()
    make: Callable[..., Responder] = Responder
    if config.query_sample > 0:
        every = max(1, round(1 / config.query_sample))
        make = functools.partial(SampledQueryLog, every=every)
    return ZoneStore(config.zones_dir, config.udp_payload, config.chaos(), steering, geoip,
                     health, config.geoip_asn_database, config.check_defaults, events, make)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_worker(config: Config, reuse_port: bool, on_ready: Callable[[Server], None] | None
               = None, admin: bool = True, index: int = 0,
               runtime_dir: Path | None = None) -> int:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    server = Server(config, reuse_port=reuse_port, admin=admin, worker_index=index,
                    runtime_dir=runtime_dir)
    try:
        loop.run_until_complete(server.start())
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 1
    if on_ready is not None:
        on_ready(server)
    try:
        loop.run_until_complete(server.serve_forever())
    finally:
        loop.close()
    return 0


def run(config: Config) -> int:
    """Run the server in the foreground; with ``workers > 1``, as that many
    processes sharing the listen addresses through SO_REUSEPORT."""
    if config.workers <= 1:
        return run_worker(config, reuse_port=False)
    # Resolve port 0 once so that every worker binds the same ports.
    fixed = []
    for addr in config.listen:
        if addr.port == 0:
            udp, tcp = bind_pair(addr.host, 0, reuse_port=True)
            fixed.append(Address(addr.host, udp.getsockname()[1]))
            udp.close()
            tcp.close()
        else:
            fixed.append(addr)
    config.listen = fixed
    runtime_dir = Path(tempfile.mkdtemp(prefix="geodns-workers-"))
    children: list[int] = []
    for i in range(config.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised in a subprocess test
            code = 1
            try:
                logs.set_worker(i, config.log_format)
                code = run_worker(config, reuse_port=True, admin=(i == 0), index=i,
                                  runtime_dir=runtime_dir)
            finally:
                os._exit(code)
        children.append(pid)
    log.info("started %d workers: %s", len(children), " ".join(map(str, children)))

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    status = 0
    for pid in children:
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                break
            except ChildProcessError:
                st = 0
                break
            except InterruptedError:  # pragma: no cover
                continue
        status = status or os.waitstatus_to_exitcode(st)
    shutil.rmtree(runtime_dir, ignore_errors=True)
    return status


__all__ = ["Server", "run"]
