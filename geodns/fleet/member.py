"""One node's session with the fleet store (etcd): the control plane only.

Theory of operation (etcd's contract): read everything under the prefix at
one revision, hand it over, then watch from the next revision, so every
change arrives once and in order.  A watch that falls behind compaction
reads everything again.  Anything that breaks (a dead member, a member cut
off from the others, a timeout) ends the session; the next one starts on the
next endpoint after a short back-off, and reads everything again.

A *voting* member (worker 0 of a node) also holds a lease: under it, it
writes what the node serves (``nodes/NODE``) and its own health verdicts
(``votes/NODE``), so both vanish when the node dies and the lease expires.
The lease is renewed on the endpoint the watch uses (a renewal goes through
the leader, so a member cut off from the others is noticed even when its
watch just goes quiet).  A node that has not heard from etcd for a lease
time stops counting the other nodes' votes (they may be stale, and its own
are no longer counted by them): :attr:`FleetMember.in_contact` turns False.

Nothing here touches the data plane: what changed is handed to callbacks,
and the server builds snapshots and health views from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from geodns.config import FleetConfig
from geodns.fleet.etcd import Compacted, Etcd, EtcdError
from geodns.fleet.keys import Drain, FleetState, Layout
from geodns.health.view import HealthView

log = logging.getLogger("geodns.fleet")

# Seconds between attempts while etcd cannot be reached (doubling up to this).
BACKOFF_MAX = 2.0
# What changed: a set of "docs", "votes", "nodes", "drains", "contact".
OnChange = Callable[[set[str]], None]


class FleetMember:
    def __init__(self, cfg: FleetConfig, on_change: OnChange, vote: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.layout = Layout(cfg.prefix)
        # One pass over the members per request (no retry_for): when none
        # answers, the session ends and _run starts another after its own
        # back-off, so a lease renewal never waits out an election past its TTL.
        self.etcd = Etcd(cfg.etcd, cfg.timeout, retry_for=0.0)
        self.state = FleetState(self.layout)
        self.on_change = on_change
        self.vote = vote
        self.clock = clock
        self.lease = 0
        self.loaded = asyncio.Event()  # the first read is done
        self.last_contact: float | None = None  # clock() of the last answer from etcd
        self.last_contact_wall: float | None = None
        self.error: str | None = None  # why the last session ended
        self.instance = secrets.token_hex(8)  # tells this process from a namesake
        self.sessions = 0  # sessions begun (each reads everything again)
        self.sessions_read = 0  # sessions that got as far as reading everything
        self._contact = False
        self._status: dict[str, Any] | None = None
        self._votes: HealthView | None = None
        self._dirty = asyncio.Event()  # status or votes to write
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # -- what the server reads and sets ----------------------------------------
    @property
    def in_contact(self) -> bool:
        """Whether etcd answered within the last lease time."""
        return self._contact

    def set_status(self, status: dict[str, Any]) -> None:
        self._status = status
        self._dirty.set()

    def set_votes(self, view: HealthView) -> None:
        """This node's own verdicts (its drains are not votes)."""
        votes = HealthView(view.states, view.penalties, {}, view.records)
        if votes != self._votes:
            self._votes = votes
            self._dirty.set()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        self._watchdog = asyncio.create_task(self._watch_contact())

    async def stop(self, revoke: bool = True) -> None:
        """End the session; a voting member revokes its lease, so its status
        and votes go at once instead of a lease time later.  Without
        ``revoke`` (a successor writes the same keys now) the lease is left
        to expire: revoking it could delete keys this process wrote last."""
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.lease and revoke:
            with contextlib.suppress(EtcdError, TimeoutError):
                await asyncio.wait_for(self.etcd.revoke(self.lease), self.cfg.timeout)
        self.lease = 0
        await self.etcd.close()

    def _heard(self) -> None:
        self.last_contact = self.clock()
        self.last_contact_wall = time.time()
        if not self._contact:
            self._contact = True
            self.on_change({"contact"})

    def counted(self) -> set[str]:
        """The nodes whose votes count now: those heard from (through etcd)
        within a lease time."""
        silent = self.state.silent(self.clock(), self.cfg.lease_ttl)
        return {n for n in self.state.votes if n not in silent}

    async def _watch_contact(self) -> None:
        silent: set[str] = set()
        while True:
            await asyncio.sleep(0.2)
            now_silent = self.state.silent(self.clock(), self.cfg.lease_ttl)
            if now_silent != silent:
                for node in sorted(now_silent - silent):
                    log.info("node %s has not written to etcd for %d s: its votes no longer "
                             "count", node, self.cfg.lease_ttl,
                             extra={"event": "fleet-node-silent", "node": node})
                silent = now_silent
                self.on_change({"votes"})
            if self._contact and self.last_contact is not None and \
                    self.clock() - self.last_contact > self.cfg.lease_ttl:
                self._contact = False
                log.warning("no answer from etcd for %d s: using this node's own health "
                            "verdicts until it answers", self.cfg.lease_ttl,
                            extra={"event": "fleet-lost"})
                self.on_change({"contact"})

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            sessions = self.sessions_read
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Compacted as exc:
                log.info("fleet watch fell behind compaction (%s): reading everything again",
                         exc)
                continue
            except EtcdError as exc:
                if self.error != str(exc):
                    log.warning("fleet store: %s (serving what was applied last; retrying)",
                                exc, extra={"event": "fleet-error"})
                self.error = str(exc)
            except Exception as exc:  # a bug must not end the session for good
                log.exception("fleet session failed")
                self.error = f"{exc.__class__.__name__}: {exc}"
            self.etcd.next_endpoint()
            if self.sessions_read != sessions:
                backoff = 0.1  # that session worked: try the next member at once
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        self.sessions += 1
        read = await self.etcd.range_prefix(self.layout.root)
        self._heard()
        endpoint = self.etcd.endpoint
        if self.error is not None:
            log.info("fleet store answers again (%s)", endpoint, extra={"event": "fleet-back"})
            self.error = None
        changed = self.state.load(read, self.clock())
        self.sessions_read += 1
        self.loaded.set()
        self.on_change(changed)
        tasks = [asyncio.create_task(self._watch(read.revision + 1)),
                 asyncio.create_task(self._keep(endpoint))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended the session
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _watch(self, start: int) -> None:
        async for revision, events in self.etcd.watch(self.layout.root, start):
            self._heard()
            changed = self.state.apply(revision, events, self.clock())
            if changed:
                self.on_change(changed)

    async def _keep(self, endpoint: str) -> None:
        """Renew the lease (or, without one, read one key through the leader)
        every third of a lease time, and write status and votes when they
        change.  Ends (so the session starts over) when the endpoint the
        watch uses stops answering."""
        every = self.cfg.lease_ttl / 3
        next_renewal = 0.0
        while True:
            now = self.clock()
            if now >= next_renewal:
                if self.vote:
                    renewed = bool(self.lease) and await self.etcd.keepalive(self.lease) > 0
                    if not renewed:
                        self.lease = await self.etcd.grant(self.cfg.lease_ttl)
                        self._dirty.set()  # the keys went with the old lease
                else:
                    await self.etcd.get(self.layout.published)
                if self.etcd.endpoint != endpoint:
                    raise EtcdError(f"{endpoint} stopped answering; moving to "
                                    f"{self.etcd.endpoint}")
                self._heard()
                next_renewal = now + every
                if self.vote and self._status is not None:
                    self._dirty.set()  # "heard from etcd" is part of the status
            if self.vote and self._dirty.is_set():
                self._dirty.clear()
                await self._write()
                self._heard()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(),
                                       max(0.01, next_renewal - self.clock()))

    async def _write(self) -> None:
        node = self.cfg.node
        if self._status is not None:
            status = dict(self._status, heard_at=time.time(), lease_ttl=self.cfg.lease_ttl)
            await self.etcd.put(self.layout.node(node), json.dumps(status).encode(),
                                self.lease)
        if self._votes is not None:
            body = {"at": time.time(), "view": self._votes.to_json()}
            await self.etcd.put(self.layout.votes(node), json.dumps(body).encode(), self.lease)

    # -- fleet-wide drains -------------------------------------------------------
    async def set_drain(self, pop: str, drain: Drain | None) -> None:
        await write_drain(self.etcd, self.layout, pop, drain)


async def write_drain(etcd: Etcd, layout: Layout, pop: str, drain: Drain | None) -> None:
    """Set (None: remove) a fleet-wide drain: every node sees it through its watch."""
    if drain is None:
        await etcd.delete(layout.drain(pop))
    else:
        await etcd.put(layout.drain(pop), json.dumps(drain.to_json()).encode())


__all__ = ["FleetMember", "write_drain"]
