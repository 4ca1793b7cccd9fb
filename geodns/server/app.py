"""One serving process: its listeners, the snapshot it serves, reloads,
health, and an orderly stop.

Theory of operation (the control plane of one process):

* **Snapshots.**  ``self.snapshot`` is everything a query needs; the data
  plane reads only ``self.responder`` (the snapshot's).  A reload (every
  ``reload.interval``, on SIGHUP, on ``POST /reload``) asks the source for
  documents and the GeoIP source for a reader in a worker thread, builds a
  new snapshot there with :func:`geodns.snapshot.build`, and swaps it in here,
  on the event loop's thread, in one step.  What only the old snapshot used
  (a GeoIP reader) is retired after the swap.
* **Health.**  Probes (:class:`~geodns.health.checker.HealthChecker`) and
  drains (:class:`~geodns.server.overrides.AdminOverrides`) write the health
  store; each view it publishes is handed to the serving responder (which
  forgets its cached decisions) and, with several workers, to the others
  (:mod:`geodns.server.link`).  Only worker 0 probes; the others apply views.
* **Observers** (admin API, metrics, status) read :meth:`view`, an immutable
  :class:`~geodns.node.NodeView`, and change things through the few methods
  of :class:`~geodns.node.NodeControl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geodns import state as state_file
from geodns import steermap
from geodns.address import Address
from geodns.config import Config
from geodns.errors import GeodnsError, StartupError
from geodns.fleet.keys import Drain, Layout
from geodns.fleet.member import FleetMember
from geodns.fleet.source import CacheError, EtcdSource, load_cache, save_cache
from geodns.geo import MaxMindLocator
from geodns.health.checker import HealthChecker
from geodns.health.states import State
from geodns.health.store import LocalHealthStore
from geodns.health.view import HealthView
from geodns.health.votes import fleet_view, tallies
from geodns.metrics import Metrics
from geodns.node import CheckStatus, Counters, FleetView, NodeView, ProbeStatus
from geodns.ratelimit import Limiting
from geodns.server import shared
from geodns.server.anycast import AnycastControl, NodeState
from geodns.server.control import ControlSocket
from geodns.server.handover import HandoverError, SocketSet, hand_over, make_offer
from geodns.server.link import WorkerLink
from geodns.server.listeners import Listeners
from geodns.server.overrides import AdminOverrides
from geodns.server.sockets import GivenSockets
from geodns.server.transport import HAVE_UDPBATCH, TCPConnections
from geodns.snapshot import (
    Built,
    Documents,
    FileSource,
    GeoipSource,
    Snapshot,
    Source,
    build,
    new_responder,
    read_config,
)
from geodns.status import (
    ADMIN,
    RELOAD,
    RELOAD_ERROR,
    START,
    STATE_CHANGE,
    AnswerHistory,
    EventLog,
    answers_per_pop,
)
from geodns.wire import Responder
from geodns.zones.loader import forget_kept

if TYPE_CHECKING:
    from geodns._udpbatch import RateLimiter
    from geodns.admin import Admin

log = logging.getLogger("geodns.server")

SHUTDOWN_GRACE = 5.0
QUIET = 0.5  # seconds without a query after which a connection handed over is finished
HANDOVER_OVERLAP = 0.3  # seconds both processes read after the successor says it is ready
# How UDP is read: "batch" (recvmmsg/sendmmsg through the optional C helper),
# "reader" (recvfrom/sendto per readiness event) or "protocol" (asyncio
# DatagramProtocol).  Chosen by measurement; see bench/README.md.
UDP_MODE = os.environ.get("GEODNS_UDP_MODE", "batch" if HAVE_UDPBATCH else "reader")
NO_UDPBATCH = ("the C helper for batched UDP (geodns._udpbatch) is not built: it needs a C "
               "compiler and the Python headers when geodns is installed (apt install gcc "
               "python3-dev, then install geodns again); UDP goes through recvfrom/sendto, "
               "one system call per packet, which answers fewer queries a second (README.md)")


class Server:
    """One process serving DNS (a worker, when there are several)."""

    def __init__(self, config: Config, reuse_port: bool = False,
                 udp_mode: str | None = None, admin: bool = True, worker_index: int = 0,
                 runtime_dir: Path | None = None, source: Source | None = None,
                 link: socket.socket | None = None,
                 handover: HealthView | None = None, given: GivenSockets | None = None,
                 inherited: Mapping[str, Any] | None = None) -> None:
        self.given = config  # as started: its restart-only settings stay in force
        # Listening sockets to take instead of binding (from the process this
        # one replaces, or systemd), and what that process handed over.
        self.given_sockets = given
        self.inherited = dict(inherited or {})
        # Started by a node that is taking over from another (workers > 1):
        # until the whole node has taken over, a stop must not withdraw the
        # routes or revoke the fleet lease the running node still uses.
        self.provisional = bool(self.inherited.get("provisional"))
        if handover is None and "health" in self.inherited:
            handover = HealthView.from_json(self.inherited["health"])
        # Counters of the processes this one replaces: /metrics goes on from them.
        self.counted_before = Counters.from_json(json.dumps(self.inherited["counters"]).encode()) \
            if "counters" in self.inherited else None
        self.reuse_port = reuse_port
        self.worker_index = worker_index
        self.runtime_dir = runtime_dir  # where workers leave counters (geodns.server.shared)
        self.admin_enabled = admin and config.admin is not None
        self.probing = worker_index == 0  # one node, one set of probes
        self.udp_mode = udp_mode or UDP_MODE
        wanted = udp_mode or os.environ.get("GEODNS_UDP_MODE") or "batch"
        if wanted == "batch" and not HAVE_UDPBATCH:
            self.udp_mode = "reader"
            if worker_index == 0:  # once per node
                log.warning("%s", NO_UDPBATCH, extra={"event": "udp-helper-missing"})
        config_path = config.path if config.path is not None and config.path.is_file() \
            else None
        self.source: Source = source or FileSource(config_path, config.zones_dir,
                                                         config.keys_dir)
        self.geoip = GeoipSource()
        self.events = EventLog()
        self.history = AnswerHistory()
        # ``store``: this node's own verdicts and drains (probes and the admin
        # API write it); ``served``: the view steering uses.  They are one
        # store, unless the node belongs to a fleet: then ``served`` is the
        # fleet's verdict from every node's votes (geodns.health.votes).
        self.store = LocalHealthStore(handover)
        self.served = self.store
        self.overrides = AdminOverrides(self.store, config.state_file, self._admin_changed)
        self.fleet: FleetMember | None = None
        self.fleet_source: EtcdSource | None = None
        self.fleet_drains: dict[str, Drain] = {}  # as etcd (or the cache) has them
        self.fleet_cache_saved: float | None = None  # when the cache served at start was saved
        self._cached_revision: str | None = None
        self._namesakes: set[str] = set()  # other processes seen using this node's name
        self._fleet_docs = asyncio.Event()
        if config.fleet is not None and source is None:
            self.fleet_source = EtcdSource(Layout(config.fleet.prefix))
            self.source = self.fleet_source
            self.fleet = FleetMember(config.fleet, self._fleet_changed, vote=self.probing)
            if "fleet_instance" in self.inherited:  # the same node, not a namesake
                self.fleet.instance = str(self.inherited["fleet_instance"])
            if self.probing:
                self.served = LocalHealthStore(handover)
                self.store.subscribe(self._own_published)
        self.served.subscribe(self._health_published)
        self.link = WorkerLink(link, self._view_received, self.request_stop,
                               self._link_message) if link is not None else None
        self.tcp = TCPConnections(config.tcp)
        self.listeners = Listeners(self, self.tcp, self.udp_mode, reuse_port)
        self.snapshot: Snapshot
        self.responder: Responder  # the data plane reads only this
        # Response rate limiting (rate_limit): kept across reloads while its
        # configuration is the same; the UDP loops read ``limiter``.
        self.rate_limit = Limiting()
        self.limiter: RateLimiter | None = None
        self.admin: Admin | None = None
        self.checker: HealthChecker | None = None
        self.metrics: Metrics | None = None  # made once there is something to view
        self.started_at: float | None = None
        self.pop_since: dict[str, float] = {}
        self._seen_states: dict[str, State] = {}
        self._docs: Documents | None = None  # what the source handed over last
        self.ready = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self._saves: list[asyncio.Future[None]] = []
        self.control: ControlSocket | None = None
        self._lameduck: asyncio.TimerHandle | None = None
        self.handed_over_to: int | None = None  # the successor's pid, once it serves
        self._restarting = False
        self._restart_answer: asyncio.Future[int] | None = None  # from the supervisor
        # The node's own drain from anycast (who, when, why), kept in the state file.
        self.node_drain: dict[str, Any] | None = \
            state_file.load_node(config.state_file) if config.state_file is not None else None
        self.anycast: AnycastControl | None = None
        if config.anycast is not None and self.probing:
            self.anycast = AnycastControl(config.anycast, NodeState(
                readiness=self.readiness, stopping=lambda: self._stopping,
                addresses=lambda: list(self.listeners.bound),
                check_name=self._check_name, drained=lambda: self.node_drain))
            self.anycast.handed_over = self.provisional  # no withdraw before it serves
            before = self.inherited.get("anycast_changes")
            if isinstance(before, dict):  # the counts go on across a restart, as /metrics's do
                for action, n in before.items():
                    if action in self.anycast.announcer.changes and isinstance(n, int):
                        self.anycast.announcer.changes[action] = n

    @property
    def config(self) -> Config:
        """The configuration being served."""
        return self.snapshot.config

    @property
    def bound(self) -> list[Address]:
        return self.listeners.bound

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Load everything, then listen.  Raises :class:`StartupError`
        (naming the file or address) when the node cannot serve as
        configured; nothing is left listening then."""
        self.started_at = time.time()
        self.events.add(START, f"{self.given.version} starting on "
                               f"{self.given.identity or 'this node'}")
        self.overrides.load(self.given.pops, force=True)
        if self.fleet is not None:
            await self._start_fleet()
        loop = asyncio.get_running_loop()
        built = await loop.run_in_executor(None, self._prepare, True, None)
        assert built is not None
        snap = built.snapshot
        if snap.config_errors and snap.config_digest is not None and \
                snap.config is self.given:
            if self.runtime_dir is None or self.worker_index == 0:
                raise StartupError("; ".join(str(p) for p in snap.config_errors))
            # A worker started while worker 0 serves (at the start, or again
            # after a crash) and the file is being rewritten or is broken
            # now: it serves with the configuration the node started with
            # (valid: checked before worker 0 started) rather than stop a
            # serving node; the next reload reads the file again.
            log.warning("worker %d starts with the configuration the node started with: %s",
                        self.worker_index, "; ".join(str(p) for p in snap.config_errors),
                        extra={"event": "config-kept"})
        if snap.config.pops and snap.locator is None:
            raise StartupError(f"PoPs are configured but the GeoIP database cannot be used: "
                               f"{snap.geoip.error}")
        self._swap(built, first=True)
        forget_kept()  # what geodns serve checked is served now, or was not the same
        self._note_states(self.served.view())
        self.metrics = Metrics(self.view)
        if self.link is not None:
            await self.link.start()
        # The admin API before DNS: a node that cannot serve it must not
        # have answered a query.  (A failure stops both: run_worker's shutdown.)
        if self.admin_enabled and self.given.admin is not None:
            from geodns.admin import Admin  # (aiohttp: imported only for an admin API)

            self.admin = Admin(self, self.metrics)
            # Handed over by the process this one replaces, or (systemd) among
            # the given sockets by its address.
            admin_sock = self.inherited.pop("admin_sock", None)
            if admin_sock is None and self.given_sockets:
                admin_sock = self.given_sockets.take(self.given.admin.host,
                                                     self.given.admin.port, socket.SOCK_STREAM)
            try:
                await self.admin.start(self.given.admin.host, self.given.admin.port, admin_sock)
            except OSError as exc:
                raise StartupError(f"cannot serve the admin API on {self.given.admin}: "
                                   f"{exc.strerror or exc}") from None
        await self.listeners.open(self.given.listen, self.given_sockets)
        self.given_sockets = None
        if self.fleet is not None and self.probing:
            self.fleet.set_status(self._fleet_status(snap))  # with the addresses bound
        if self.probing and snap.config.pops:
            cfg = snap.config
            self.checker = HealthChecker(cfg.checks, cfg.require, self.store, cfg.health,
                                         observe=self._observe_probe,
                                         on_state=self._state_changed)
            self._record_checks(snap)
            self.checker.start()
        self.ready = True
        if self.anycast is not None:
            await self.anycast.start()  # checked and decided before a helper asks
        if self.probing:
            self.control = ControlSocket(self, self.given.control_socket,
                                         self.inherited.pop("control_sock", None))
            if self.runtime_dir is not None:
                self.control.pid = os.getppid()  # the node is its supervising process
            await self.control.start()
        self._tasks.append(asyncio.create_task(self._poll()))
        if self.fleet is not None:
            self._tasks.append(asyncio.create_task(self._follow_fleet()))
            self._refresh_fleet_health()
        self._tasks.append(asyncio.create_task(self._sweep_tcp()))
        if self.admin is not None:  # the status page is served here
            self._tasks.append(asyncio.create_task(self._sample_answers()))
        if self.runtime_dir is not None and self.worker_index > 0:
            self._tasks.append(asyncio.create_task(self._publish_counters()))
        zones = ", ".join(sorted(z.name for z in snap.served())) or "none"
        log.info("serving zones: %s", zones)
        if self._reload_pending:  # a SIGHUP came while starting
            self.request_reload()

    def install_signals(self) -> None:
        """SIGHUP reloads, SIGTERM and SIGINT stop (installed before
        :meth:`start`, so a signal during start-up is not fatal)."""
        import signal

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGUSR2, self.request_restart)

    async def serve_forever(self) -> None:
        await self._stopped.wait()
        await self.shutdown()

    def request_stop(self, lameduck: bool = True) -> None:
        """Stop: at once, or (SIGTERM, with ``lifecycle.lameduck``) after
        answering for the lameduck time while /readyz says 503 and routes are
        withdrawn, so that load balancers and routers move away first.  A
        second request during the lameduck time stops at once."""
        if self._stopping:
            self._stop_now()
            return
        self._stopping = True
        self.ready = False  # /readyz turns 503 at once, so load balancers move away
        seconds = self.snapshot.config.lameduck if hasattr(self, "snapshot") else 0.0
        if self.anycast is not None and self.handed_over_to is None and not self.provisional:
            self._tasks.append(asyncio.get_running_loop().create_task(self.anycast.update()))
        if not lameduck or seconds <= 0 or self.started_at is None or self.provisional:
            self._stop_now()
            return
        log.info("stopping: lameduck for %g s (not ready, answering until then; SIGTERM "
                 "again to stop at once)", seconds, extra={"event": "lameduck",
                                                          "seconds": seconds})
        self.events.add(ADMIN, f"lameduck: stopping in {seconds:g} s")
        self._lameduck = asyncio.get_running_loop().call_later(seconds, self._stop_now)

    def _stop_now(self) -> None:
        if self._lameduck is not None:
            self._lameduck.cancel()
        if not self._stopped.is_set():
            log.info("stopping", extra={"event": "stop"})
        self._stopping = True
        self.ready = False
        self._stopped.set()

    def request_restart(self) -> None:
        """SIGUSR2: start a successor and hand it the sockets (see restart)."""
        task = asyncio.get_running_loop().create_task(self._restart_logged())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _restart_logged(self) -> None:
        with contextlib.suppress(HandoverError):  # restart() has logged it
            await self.restart()

    async def restart(self) -> int:
        """Start a node that replaces this one (the same command line: a
        newer geodns installed since is what runs), hand it the listening
        sockets, the health view, drains and counters, and once it serves,
        stop reading and exit.  With several workers the supervising process
        starts it and hands it every worker's sockets; this worker (0) gives
        it the node's state.  The successor's pid; :class:`HandoverError`
        (logged) when it did not take over: this node goes on serving."""
        if self._restarting or self._stopping:
            raise HandoverError("a restart or a stop is already under way")
        if not self.probing:
            raise HandoverError("only worker 0 restarts the node: send SIGUSR2 to the "
                                "supervising process")
        if (os.getpid() if self.link is None else os.getppid()) == 1:
            # The successor would be left without the process it replaces,
            # and a container (or a namespace) ends with its first process.
            raise HandoverError("this node is process 1 (a container's main process): it "
                                "cannot hand over to a successor; stop and start it (drain "
                                "it first if it announces anycast routes)")
        self._restarting = True
        try:
            log.info("restart: starting the node that replaces this one",
                     extra={"event": "restart"})
            timeout = self.snapshot.config.restart_timeout
            try:
                if self.link is None:
                    offer = make_offer([self.listening_set()], self._handover_state())
                    pid = await hand_over(offer, timeout)
                else:
                    pid = await self._restart_through_supervisor(timeout)
            except HandoverError as exc:
                log.error("restart failed: %s; this node goes on serving", exc,
                          extra={"event": "restart-failed"})
                self.events.add(RELOAD_ERROR, f"restart failed: {exc}; still serving")
                raise
        finally:
            self._restarting = False
        await self._handed_over(pid)
        return pid

    async def _restart_through_supervisor(self, timeout: float) -> int:
        assert self.link is not None
        answer = self._restart_answer = asyncio.get_running_loop().create_future()
        self.link.send({"restart": self._handover_state(), "timeout": timeout})
        try:
            return await asyncio.wait_for(answer, timeout + 15)
        except TimeoutError:
            raise HandoverError("the supervising process did not answer") from None
        finally:
            self._restart_answer = None

    def _link_message(self, message: dict[str, Any]) -> None:
        """A restart's steps, from the supervising process."""
        answer = self._restart_answer
        if "handed_over" in message:
            pid = int(message["handed_over"])
            if answer is not None and not answer.done():
                answer.set_result(pid)  # worker 0: restart() goes on from here
            elif self.handed_over_to is None:
                self._tasks.append(asyncio.get_running_loop().create_task(
                    self._handed_over(pid)))
        elif "restart_failed" in message:
            if answer is not None and not answer.done():
                answer.set_exception(HandoverError(str(message["restart_failed"])))
        elif "confirmed" in message:
            self.provisional = False  # the node serves: a stop withdraws again
            if self.anycast is not None:
                self.anycast.handed_over = False
        elif "restart" in message:
            self.request_restart()  # SIGUSR2 to the supervising process

    async def _handed_over(self, pid: int) -> None:
        """The successor serves: stop reading and exit, without withdrawing
        routes or revoking the fleet lease (it goes on with both)."""
        self.handed_over_to = pid
        # Both nodes read the sockets for a moment more: a successor that
        # stalls in its first instants (a collection, a page fault storm) is
        # covered by this one.
        await asyncio.sleep(HANDOVER_OVERLAP)
        if self.anycast is not None:
            self.anycast.handed_over = True  # the successor announces: no withdraw
        if self.fleet is not None:
            await self.fleet.stop(revoke=False)  # the successor writes this node's keys now
        log.info("restart: process %d serves now; this one stops reading and exits", pid,
                 extra={"event": "handed-over", "pid": pid})
        self.request_stop(lameduck=False)

    def listening_set(self) -> SocketSet:
        """This process's listening sockets (what a successor is given)."""
        return SocketSet(list(self.listeners.sockets),
                         self.admin.listening if self.admin is not None else None,
                         self.control.listening if self.control is not None else None)

    def _handover_state(self) -> dict[str, Any]:
        """The node's state a successor is given."""
        state: dict[str, Any] = {
            "health": self.store.view().to_json(),
            "counters": json.loads(self.view().counters.to_json()),
            "from_pid": os.getpid(),
        }
        if self.fleet is not None:
            state["fleet_instance"] = self.fleet.instance
        if self.anycast is not None:
            state["anycast_changes"] = dict(self.anycast.announcer.changes)
        return state

    def request_reload(self) -> None:
        if not self.ready:
            self._reload_pending = True  # done once start-up has finished
            return
        log.info("reload requested (SIGHUP)")
        task = asyncio.get_running_loop().create_task(self._forced_reload())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _forced_reload(self) -> None:
        await self.reload(force=True)

    async def shutdown(self) -> None:
        """Stop listening, let written TCP answers drain, close everything."""
        if self.anycast is not None:
            await self.anycast.stop()  # withdrawn before the sockets close
        for t in self._tasks:
            t.cancel()
        if self.control is not None:
            self.control.close(unlink=self.handed_over_to is None)
            self.control = None
        if self.runtime_dir is not None and self.worker_index > 0:
            shared.publish(self._own_counters(), self.runtime_dir, self.worker_index)
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if self.checker is not None:
            await self.checker.stop()
            self.checker = None
        if self.fleet is not None:
            # Its lease goes: the fleet stops counting this node (not when
            # the node it was to replace goes on serving).
            await self.fleet.stop(revoke=not self.provisional)
        if self.link is not None:
            await self.link.close()
        self.listeners.close_sockets()
        if self.handed_over_to is not None:
            # The successor takes new connections; open ones here are served
            # until they go quiet (pipelined queries sent across the restart
            # are answered), then finished.
            await self._quiet_connections(self.snapshot.config.tcp.idle_timeout)
        # Answers are written as soon as a query is read, so what is in flight
        # is what sits in write buffers: each connection delivers it, then ends
        # its stream; the client closes once it has read everything.
        conns = list(self.tcp.open)
        for conn in conns:
            conn.finish()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while not all(c.finished for c in conns) and loop.time() < deadline:
            await asyncio.sleep(0.02)
            for conn in conns:
                conn.end_when_flushed()
        for conn in conns:
            conn.abort()  # a client that did not read its answers in time
        await self.listeners.wait_closed()
        log.info("stopped")

    async def _quiet_connections(self, at_most: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + at_most
        while self.tcp.open and loop.time() < deadline:
            quiet = time.monotonic() - QUIET
            for conn, last in list(self.tcp.open.items()):
                if last < quiet:
                    conn.finish()
            await asyncio.sleep(0.05)

    # -- the read-only view and the admin's controls ----------------------------
    def readiness(self) -> tuple[str, ...]:
        """Why this node should not get traffic yet (empty: it is ready)."""
        if not self.ready:
            return ("stopping" if self._stopping else "starting",)
        snap = self.snapshot
        problems = []
        if not snap.served():
            if self.fleet is not None and snap.version.revision == "etcd:none":
                problems.append("no zone is served: etcd has not answered yet and there is "
                                "no cached copy of the fleet's revision")
            else:
                where = f"fleet revision {snap.version.revision}" if self.fleet is not None \
                    else str(self.given.zones_dir)
                problems.append(f"no zone is served from {where}")
        if snap.config.pops and snap.locator is None:
            problems.append(f"GeoIP database not loaded: {snap.geoip.error or 'none'}")
        return tuple(problems)

    def view(self) -> NodeView:
        probes: dict[str, ProbeStatus] = {}
        checker = self.checker
        if checker is not None:
            for pop, unit in checker.pops.items():
                checks = tuple(
                    CheckStatus(spec.describe(), cs.state, cs.last.ok if cs.last else None,
                                cs.last.detail if cs.last else None)
                    for spec, cs in checker.check_states.items() if pop in checker.users[spec])
                probes[pop] = ProbeStatus(checks, unit.rtt_ms, dict(unit.failures),
                                          unit.changes)
        counters = shared.node_counters(self._own_counters(), self.runtime_dir,
                                        self.worker_index)
        return NodeView(
            now=time.time(), started_at=self.started_at, snapshot=self.snapshot,
            health=self.served.view(), probes=probes, pop_since=dict(self.pop_since),
            events=self.events.newest_first(),
            history=self.history.as_json(self.snapshot.config.pops), counters=counters,
            readiness=self.readiness(),
            admin_requests=dict(self.admin.requests) if self.admin is not None else {},
            fleet=self._fleet_view(),
            anycast=self.anycast.view() if self.anycast is not None else None)

    def _own_counters(self) -> Counters:
        counters = shared.worker_counters(self.responder, self.tcp, self.rate_limit)
        if self.counted_before is not None:
            top = counters.limited_top  # what is limited now, not before the restart
            counters.add(self.counted_before)
            counters.workers -= self.counted_before.workers
            counters.limited_top = top
        return counters

    def set_admin_state(self, pop: str, state: State | None, why: str) -> None:
        self.overrides.set(pop, state, self.snapshot.config.pops, why)

    def add_event(self, kind: str, message: str, pop: str | None = None) -> None:
        self.events.add(kind, message, pop)

    async def set_node_drain(self, drain: dict[str, Any] | None) -> None:
        """Drain (None: undrain) this node from anycast: its routes are
        withdrawn while it goes on answering; kept in the state file."""
        if self.anycast is None:
            raise GeodnsError("this node announces no anycast route (no 'anycast' in its "
                              "configuration)")
        self.node_drain = drain
        if self.given.state_file is not None:
            try:
                state_file.save_node(self.given.state_file, drain)
            except OSError as exc:
                log.error("state file %s not written: %s (the node drain holds in this "
                          "process only)", self.given.state_file, exc)
        what = "drained from anycast" if drain else "undrained: anycast routes follow health"
        log.info("node %s%s", what, f" by {drain.get('who')}: {drain.get('why')}" if drain
                 else "", extra={"event": "node-drain", "drained": drain is not None})
        self.events.add(ADMIN, f"node {what}")
        await self.anycast.update()

    async def anycast_follow(self, writer: asyncio.StreamWriter) -> None:
        if self.anycast is not None:
            await self.anycast.follow(writer)

    def _check_name(self) -> str | None:
        served = sorted(z.name for z in self.snapshot.served())
        return served[0] if served else None

    # -- health ------------------------------------------------------------------
    def _health_published(self, view: HealthView) -> None:
        if hasattr(self, "responder"):
            self.responder.use_health(view)
        self._note_states(view)
        if self.link is not None and self.probing:
            self.link.send_view(view)

    def _view_received(self, view: HealthView) -> None:
        """A view from worker 0 (or, at start, the node's last one)."""
        if not self.probing:
            self.served.replace(view)

    def _admin_changed(self, pop: str, message: str) -> None:
        self.events.add(ADMIN, message, pop)

    def _state_changed(self, pop: str, message: str) -> None:
        self.events.add(STATE_CHANGE, message, pop)

    def _note_states(self, view: HealthView) -> None:
        """Remember when each PoP's effective state last changed."""
        now = time.time()
        pops = self.snapshot.config.pops if hasattr(self, "snapshot") else self.given.pops
        for pop in pops:
            state = view.state(pop)
            if self._seen_states.get(pop) != state:
                self._seen_states[pop] = state
                self.pop_since[pop] = now

    def _observe_probe(self, pop: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.probe_duration.labels(pop).observe(seconds)

    def _record_checks(self, snap: Snapshot) -> None:
        """Steered records' own checks, as the zones now say."""
        if self.checker is None:
            return
        records = {spec.key: dict(spec.checks)
                   for zone in snap.served() for types in zone.steered.values()
                   for spec in types.values() if spec.checks}
        self.checker.set_record_checks(records)

    # -- the fleet ---------------------------------------------------------------
    async def _start_fleet(self) -> None:
        """The documents to start with: etcd's, if it answers soon; else the
        copy this node saved when it last applied a revision."""
        assert self.fleet is not None and self.fleet_source is not None
        cfg = self.fleet.cfg
        cached = None
        if cfg.cache is not None:
            try:
                cached, self.fleet_drains, self.fleet_cache_saved = load_cache(cfg.cache)
            except FileNotFoundError:
                pass
            except (OSError, CacheError) as exc:
                log.error("fleet cache not used: %s", exc, extra={"event": "fleet-error"})
        if cached is not None:
            self.fleet_source.offer(cached)
            self._cached_revision = cached.revision
        self.fleet.start()
        try:
            await asyncio.wait_for(self.fleet.loaded.wait(), cfg.timeout + 0.5)
            return
        except TimeoutError:
            pass
        why = self.fleet.error or "no answer yet"
        if cached is not None:
            saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.fleet_cache_saved))
            log.warning("etcd did not answer at start (%s): serving the copy saved at %s "
                        "(revision %s) until it does", why, saved, cached.revision,
                        extra={"event": "fleet-cache", "revision": cached.revision})
            self.events.add(RELOAD_ERROR, f"etcd unreachable at start: serving the cached "
                                          f"revision {cached.revision} (saved {saved})")
        else:
            log.error("etcd did not answer at start (%s) and there is no cached copy: "
                      "serving no zone until it answers", why, extra={"event": "fleet-error"})

    def _fleet_changed(self, kinds: set[str]) -> None:
        """What the fleet member saw change (on the event loop's thread)."""
        fleet = self.fleet
        assert fleet is not None and self.fleet_source is not None
        if "docs" in kinds:
            self.fleet_source.offer_state(fleet.state)
            self._fleet_docs.set()
        if fleet.loaded.is_set():
            before, self.fleet_drains = self.fleet_drains, dict(fleet.state.drains)
            if self.probing:
                self._note_drains(before, self.fleet_drains)
        if "nodes" in kinds and self.probing:
            self._check_namesake(fleet)
        if "contact" in kinds and self.probing:
            what = "etcd answers: health is the fleet's verdict" if fleet.in_contact else \
                "etcd unreachable: health is this node's own verdicts"
            self.events.add(RELOAD if fleet.in_contact else RELOAD_ERROR, what)
            if hasattr(self, "snapshot"):
                fleet.set_status(self._fleet_status(self.snapshot))
        if self.probing and kinds & {"votes", "drains", "contact"}:
            self._refresh_fleet_health()

    def _note_drains(self, before: dict[str, Drain], after: dict[str, Drain]) -> None:
        """Log fleet-wide drains as they come and go (whoever set them)."""
        for pop in sorted(set(before) | set(after)):
            old, new = before.get(pop), after.get(pop)
            if old == new:
                continue
            if new is None:
                message = f"fleet-wide {old.state if old else 'state'} of {pop} removed"
            else:
                message = f"fleet-wide {new.state} of {pop} by {new.who}" + \
                    (f": {new.why}" if new.why else "")
            log.info("%s", message, extra={"event": "fleet-drain", "pop": pop,
                                           "state": str(new.state) if new else None,
                                           "who": new.who if new else None})
            self.events.add(ADMIN, message, pop)

    def _check_namesake(self, fleet: FleetMember) -> None:
        """Another process writing this node's keys (a copied configuration)
        would make both nodes' votes and status flap: say so, once per
        intruder."""
        doc = fleet.state.nodes.get(fleet.cfg.node) or {}
        other = doc.get("instance")
        if other is None or other == fleet.instance or other in self._namesakes:
            return
        heard = doc.get("heard_at")
        if not isinstance(heard, (int, float)) or self.started_at is None or \
                heard <= self.started_at:
            return  # the status of this node's previous run, waiting for its lease to end
        self._namesakes.add(str(other))
        message = (f"another node calls itself {fleet.cfg.node!r} in the fleet (pid "
                   f"{doc.get('pid')}, DNS {', '.join(map(str, doc.get('dns') or [])) or '?'}): "
                   "its status and votes overwrite this node's; give each node its own "
                   "fleet.node")
        log.error("%s", message, extra={"event": "fleet-error"})
        self.events.add(RELOAD_ERROR, message)

    def _own_published(self, view: HealthView) -> None:
        """This node's probes or drains changed: vote, and recount."""
        if self.fleet is not None:
            self.fleet.set_votes(view)
        self._refresh_fleet_health()

    def _fleet_votes(self) -> dict[str, HealthView]:
        """The votes counted now: every node's while etcd answers, else only
        this node's own (the others' may be stale)."""
        assert self.fleet is not None
        me = self.fleet.cfg.node
        counted = self.fleet.counted()
        votes = {n: v for n, v in self.fleet.state.votes.items() if n != me and n in counted} \
            if self.fleet.in_contact else {}
        votes[me] = self.store.view()
        return votes

    def _refresh_fleet_health(self) -> None:
        if self.fleet is None or not self.probing:
            return
        cfg = self.snapshot.config if hasattr(self, "snapshot") else self.given
        drains = {pop: d.state for pop, d in self.fleet_drains.items()}
        self.served.replace(fleet_view(self._fleet_votes(), cfg.health.up_votes, drains,
                                       self.store.view().admin))

    async def _follow_fleet(self) -> None:
        """Build and swap in every revision the fleet member hands over (a
        revision that arrives during a build is taken by the next one)."""
        while True:
            await self._fleet_docs.wait()
            self._fleet_docs.clear()
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - reload() already logs
                log.exception("fleet reload failed")

    def _fleet_status(self, snap: Snapshot) -> dict[str, object]:
        assert self.fleet is not None
        errors = snap.errors()
        return {
            "node": self.fleet.cfg.node, "identity": self.given.identity,
            "software": self.given.version, "revision": snap.version.revision,
            "serials": dict(snap.version.serials), "error_count": len(errors),
            "errors": [str(p) for p in errors[:5]],
            "refused": snap.refused.revision if snap.refused is not None else None,
            "health": "fleet" if self.fleet.in_contact else "own",
            "started_at": self.started_at, "pid": os.getpid(),
            "instance": self.fleet.instance,
            "dns": [str(a) for a in self.listeners.bound],
        }

    def _fleet_swapped(self, snap: Snapshot) -> None:
        """After a swap: tell the fleet what is served, keep a copy of it."""
        assert self.fleet is not None
        if not self.probing:
            return
        self.fleet.set_status(self._fleet_status(snap))
        self._refresh_fleet_health()  # the policy may have changed
        docs, path = self._docs, self.fleet.cfg.cache
        if docs is None or path is None or snap.refused is not None or \
                docs.revision != snap.version.revision or docs.revision == self._cached_revision \
                or not docs.revision.startswith("etcd:"):
            return
        self._cached_revision = docs.revision
        drains = dict(self.fleet_drains)
        task = asyncio.get_running_loop().run_in_executor(None, self._save_cache, path, docs,
                                                          drains)
        self._saves.append(task)
        task.add_done_callback(self._saves.remove)

    @staticmethod
    def _save_cache(path: Path, docs: Documents, drains: dict[str, Drain]) -> None:
        try:
            save_cache(path, docs, drains)
        except OSError as exc:
            log.error("fleet cache %s not written: %s (a restart without etcd would serve an "
                      "older copy)", path, exc, extra={"event": "fleet-error"})

    def _fleet_view(self) -> FleetView | None:
        fleet = self.fleet
        if fleet is None:
            return None
        cfg = self.snapshot.config
        state = fleet.state
        votes = self._fleet_votes() if self.probing else dict(state.votes)
        origin = "etcd" if fleet.loaded.is_set() else \
            "cache" if self._cached_revision is not None else "none"
        return FleetView(
            node=fleet.cfg.node, endpoints=tuple(fleet.etcd.endpoints),
            endpoint=fleet.etcd.endpoint, in_contact=fleet.in_contact,
            last_contact=fleet.last_contact_wall, error=fleet.error,
            health="fleet" if fleet.in_contact else "own", policy=str(cfg.health.up_votes),
            published=state.published(), newest=state.newest if fleet.loaded.is_set() else None,
            nodes={n: dict(d) for n, d in state.nodes.items()},
            votes=tallies(votes, cfg.health.up_votes), drains=dict(self.fleet_drains),
            origin=origin, cache_saved_at=self.fleet_cache_saved,
            lease_ttl=fleet.cfg.lease_ttl)

    async def set_fleet_drain(self, pop: str, state: State | None, who: str, why: str) -> None:
        """Set (None: remove) a fleet-wide administrative state; every node
        sees it through its watch, this one included."""
        if self.fleet is None:
            raise GeodnsError("this node is not part of a fleet (no 'fleet' in its "
                              "configuration)")
        drain = Drain.now(state, who, why) if state is not None else None
        await self.fleet.set_drain(pop, drain)

    # -- reloads ---------------------------------------------------------------
    def _prepare(self, force: bool, previous: Snapshot | None) -> Built | None:
        """Read the sources and build a snapshot (in a worker thread); None
        when nothing changed."""
        docs = self.source.poll(force)
        config_read = read_config(docs, self.given, previous) if docs is not None else None
        # The GeoIP database the configuration about to be served names.
        base = previous.config if previous is not None else self.given
        if config_read is not None and config_read.candidate is not None:
            base = config_read.candidate
        geo_changed = self.geoip.poll(base, force)
        if docs is None:
            # Nothing read changed: a build only for a new database, or for
            # a signed zone whose signatures are due for a refresh.
            due = previous is not None and previous.tables.due <= time.time()
            if not (geo_changed or due) or self._docs is None:
                return None
            docs = self._docs
        self._docs = docs
        built = build(docs, self.given, previous, (self.geoip.locator, self.geoip.status),
                      self.served.view(), new_responder, time.time(), running=self.given,
                      config_read=config_read, whole=self.fleet is not None)
        # Served with its steering maps: meanwhile the snapshot before answers.
        steermap.wait_built(built.snapshot.steering)
        return built

    async def reload(self, force: bool = False) -> bool:
        """Read configuration, zones and GeoIP again; swap in a new snapshot if
        anything changed.  The build runs in a thread so the loop keeps
        answering."""
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                built = await loop.run_in_executor(None, self._prepare, force, self.snapshot)
            except Exception:
                log.exception("reload failed; the previous snapshot stays in service")
                self.events.add(RELOAD_ERROR, "reload failed (see the log); the previous "
                                              "snapshot stays in service")
                return False
            if built is None:
                return False
            self._swap(built)
            return True

    def _swap(self, built: Built, first: bool = False) -> None:
        new = built.snapshot
        old = getattr(self, "snapshot", None)
        if old is not None and new.responder is not old.responder:
            new.responder.adopt_counters(old.responder)
        new.responder.use_health(self.served.view())  # the newest, not the build's
        self._use_rate_limit(new.config, first)
        self.snapshot = new
        self.responder = new.responder
        for change in built.changes:
            level = logging.WARNING if change.warning else \
                logging.ERROR if change.kind == RELOAD_ERROR else logging.INFO
            log.log(level, "%s", change.message, extra=dict(change.extra))
            self.events.add(change.kind, change.message)
        if old is not None:
            if old.steering is not new.steering:
                steermap.retire(old.steering)  # its map build, if still running, stops
            self._apply_settings(old, new)
            if old.locator is not None and old.locator is not new.locator and \
                    isinstance(old.locator, MaxMindLocator):
                old.locator.close()  # retired: nothing serves from it now
        if old is None or new.version != old.version:
            log.info("serving %s", new.version,
                     extra={"event": "serving", "revision": new.version.revision})
        if self.fleet is not None:
            self._fleet_swapped(new)

    def _use_rate_limit(self, cfg: Config, first: bool) -> None:
        """Keep the limiter while ``rate_limit`` is the same; make a new one
        (an empty table) when it changed."""
        try:
            changed = self.rate_limit.use(cfg.rate_limit)
        except (RuntimeError, MemoryError) as exc:  # no C helper (geodns check says so), no memory
            if first:
                raise StartupError(f"rate_limit: {exc or 'not enough memory for the table'}") \
                    from None
            log.error("rate_limit not changed: %s; the previous one stays in force",
                      exc or "not enough memory for the table", extra={"event": "rate-limit"})
            return
        self.limiter = self.rate_limit.limiter
        if not changed or (first and cfg.rate_limit is None):
            return
        rl = cfg.rate_limit
        what = "off" if rl is None else \
            f"{rl.rate}/s per network, slip {rl.slip}, /{rl.ipv4_prefix} and /{rl.ipv6_prefix}, " \
            f"{rl.table_size} entries" + (f", {len(rl.exempt)} exempt networks"
                                          if rl.exempt else "")
        if self.probing:
            log.info("rate limiting: %s", what, extra={"event": "rate-limit"})

    def _apply_settings(self, old: Snapshot, new: Snapshot) -> None:
        """What a new configuration changes in a running process."""
        cfg = new.config
        if old.config is cfg:
            if self.checker is not None:
                self._record_checks(new)
            return
        self.tcp.configure(cfg.tcp)
        logging.getLogger("geodns").setLevel(cfg.log_level.upper())
        self.store.keep_pops(cfg.pops)
        if self.checker is not None:
            self.checker.set_pop_checks(cfg.checks, cfg.require, cfg.health)
            self._record_checks(new)
        elif self.probing and cfg.pops and self.ready:
            self.checker = HealthChecker(cfg.checks, cfg.require, self.store, cfg.health,
                                         observe=self._observe_probe,
                                         on_state=self._state_changed)
            self._record_checks(new)
            self.checker.start()
        self.store.publish()
        if self.fleet is not None and old.config.health.up_votes != cfg.health.up_votes:
            self._refresh_fleet_health()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot.config.reload_interval)
            try:
                if self.probing:
                    self.overrides.load(self.snapshot.config.pops)
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception:  # pragma: no cover - reload() already logs
                log.exception("poll failed")

    async def _sample_answers(self) -> None:
        """Steered answers per PoP, every history interval, for the status page."""
        while True:
            counts = shared.node_counters(self._own_counters(), self.runtime_dir,
                                          self.worker_index).counts
            self.history.sample(answers_per_pop(counts), time.time())
            await asyncio.sleep(self.history.interval)

    async def _publish_counters(self) -> None:
        assert self.runtime_dir is not None
        while True:
            await asyncio.sleep(shared.PUBLISH_INTERVAL)
            shared.publish(self._own_counters(), self.runtime_dir, self.worker_index)

    async def _sweep_tcp(self) -> None:
        while True:
            await asyncio.sleep(self.tcp.sweep_interval())
            self.tcp.sweep(time.monotonic())


def offline_snapshot(config: Config, health: HealthView | None = None,
                     make: Callable[..., Responder] | None = None) -> Snapshot:
    """What a node with this configuration would serve, built without
    serving (``geodns explain`` without a running node, tests).  A node of a
    fleet would serve the copy it keeps of the last revision it applied,
    with the fleet's drains."""
    docs: Documents | None
    if config.fleet is not None:
        docs = Documents("etcd:none", None, {})
        drains: dict[str, State] = {}
        if config.fleet.cache is not None:
            try:
                docs, kept, _ = load_cache(config.fleet.cache)
                drains = {pop: d.state for pop, d in kept.items()}
            except (OSError, CacheError):
                pass
        base = health or HealthView()
        health = HealthView(base.states, base.penalties, {**drains, **base.admin}, base.records)
    else:
        docs = FileSource(None, config.zones_dir, config.keys_dir).poll(True)
    assert docs is not None
    config_read = read_config(docs, config, None)
    geoip = GeoipSource()
    geoip.poll(config_read.candidate if config_read is not None and config_read.candidate
               is not None else config)
    built = build(docs, config, None, (geoip.locator, geoip.status), health or HealthView(),
                  make or new_responder, time.time(), config_read=config_read)
    return built.snapshot


__all__ = ["Server", "offline_snapshot"]
