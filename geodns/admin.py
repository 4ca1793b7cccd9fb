"""The admin HTTP API (aiohttp, in the server's event loop).

* ``GET /``: the status page (one self-contained HTML file that polls
  ``/status``).
* ``GET /metrics``: Prometheus text format (see :mod:`geodns.metrics`).
* ``GET /healthz``: the process is alive (200).
* ``GET /readyz``: listeners up, a zone served and (with PoPs) the GeoIP
  database loaded: 200, else 503 with the reasons.
* ``GET /status``: PoPs, records, zones, GeoIP, recent events, answers per
  PoP over the last minutes (see :mod:`geodns.status`).
* ``GET /explain?name=&type=&client=&ecs=``: ``geodns explain`` as JSON.
* ``POST /pops/{id}/drain``, ``POST /pops/{id}/undrain`` and
  ``POST /pops/{id}/state`` with ``{"state": "up|down|draining|unknown"}``:
  set a PoP's administrative state, on this node or, with ``?scope=fleet``
  (and ``{"who": ..., "why": ...}``), on every node of the fleet;
  ``POST /reload``: re-read every zone
  file and the GeoIP database now.  They need ``Authorization: Bearer
  TOKEN`` with the configured ``admin.token``; with no token configured
  they are disabled (403); a wrong token gets 401 and a log line.

A state change is published to the node's health store at once (with
several workers, the first one relays it to the others within
milliseconds) and written to the state file (``admin.state_file``), so it
survives a restart.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import time
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from geodns.errors import GeodnsError
from geodns.explain import ExplainError, explain
from geodns.health.states import DRAINING, STATES, State, parse_state
from geodns.metrics import Metrics
from geodns.node import NodeControl
from geodns.status import RELOAD, status

log = logging.getLogger("geodns.admin")


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or {} (no body, or not an object)."""
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


class Admin:
    """The admin API of one node.  It reads the node's read-only view and
    asks for changes through :class:`~geodns.node.NodeControl`."""

    def __init__(self, node: NodeControl, metrics: Metrics) -> None:
        self.node = node
        self.metrics_registry = metrics
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.listening: socket.socket | None = None
        # Change requests by (action, result), for the metrics.
        self.requests: dict[tuple[str, str], int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/status", self.status)
        app.router.add_get("/explain", self.explain)
        app.router.add_post("/pops/{pop}/drain", self.drain)
        app.router.add_post("/pops/{pop}/undrain", self.undrain)
        app.router.add_post("/pops/{pop}/state", self.set_state)
        app.router.add_post("/reload", self.reload)
        app.router.add_post("/node/drain", self.node_drain)
        app.router.add_post("/node/undrain", self.node_undrain)
        return app

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> None:
        """Serve on ``host:port``, or on ``sock`` when the listening socket is
        given (by the process this one replaces, or by systemd)."""
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site: web.BaseSite = web.SockSite(self.runner, sock) if sock is not None else \
            web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        # What a process that replaces this one is given (fileno is enough).
        self.listening = sock if sock is not None else \
            (socket.socket(fileno=os.dup(sockets[0].fileno())) if sockets else None)
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("admin API on %s:%s", host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.listening is not None:
            self.listening.close()
            self.listening = None

    # -- read-only ---------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics_registry.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files("geodns").joinpath("static/status.html").read_bytes()
        return web.Response(body=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(status(self.node.view()),
                                 headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        problems = list(self.node.view().readiness)
        return web.json_response({"ready": not problems, "problems": problems},
                                 status=503 if problems else 200)

    async def explain(self, request: web.Request) -> web.Response:
        q = request.query
        if "name" not in q or "client" not in q:
            return web.json_response({"error": "name and client are required"}, status=400)
        try:
            result = explain(self.node.view().snapshot.responder, q["name"],
                             q.get("type", "A"), q["client"], q.get("ecs") or None)
        except ExplainError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    # -- changes ------------------------------------------------------------------
    def _count(self, action: str, result: str) -> None:
        key = (action, result)
        self.requests[key] = self.requests.get(key, 0) + 1

    def _authorized(self, request: web.Request, action: str) -> web.Response | None:
        # The token is read from the configuration being served, so a reload
        # can change it.
        token = self.node.view().snapshot.config.admin_token
        if not token:
            self._count(action, "disabled")
            return web.json_response(
                {"error": "admin changes are disabled: set admin.token in the configuration"},
                status=403)
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            why = "no token" if not given else "wrong token"
            log.warning("admin: refused %s %s from %s: %s", request.method, request.path,
                        request.remote, why,
                        extra={"event": "admin-refused", "action": action,
                               "remote": request.remote, "reason": why})
            self._count(action, "unauthorized")
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _change(self, request: web.Request, action: str, state: State | None,
                      body: Any = None) -> web.Response:
        denied = self._authorized(request, action)
        if denied is not None:
            return denied
        pop = request.match_info["pop"]
        if pop not in self.node.view().snapshot.config.pops:
            self._count(action, "invalid")
            return web.json_response({"error": f"unknown PoP {pop!r}"}, status=404)
        scope = request.query.get("scope", "node")
        if scope == "fleet":
            return await self._fleet_change(request, action, pop, state, body)
        if scope != "node":
            self._count(action, "invalid")
            return web.json_response({"error": "scope must be node (this node only, the "
                                      "default) or fleet (every node)"}, status=400)
        old = self.node.view().health.state(pop)
        how = f"set {state}" if state else "override removed"
        self.node.set_admin_state(pop, state, f"{action}: {how}, from {request.remote}")
        new = self.node.view().health.state(pop)
        log.info("admin: PoP %s %s -> %s (%s, from %s)", pop, old, new, how, request.remote,
                 extra={"event": "admin", "action": action, "pop": pop, "old": old,
                        "new": new, "remote": request.remote})
        self._count(action, "ok")
        return web.json_response({"pop": pop, "old": old, "state": new,
                                  "override": state})

    async def _fleet_change(self, request: web.Request, action: str, pop: str,
                            state: State | None, body: Any) -> web.Response:
        """A fleet-wide state, written to the fleet store with who and why."""
        if body is None:
            body = await _json_body(request)
        who = str(body.get("who") or f"admin API from {request.remote}")
        why = str(body.get("why") or "")
        try:
            await self.node.set_fleet_drain(pop, state, who, why)
        except GeodnsError as exc:
            self._count(action, "failed")
            return web.json_response({"error": str(exc)}, status=503)
        log.info("admin: fleet-wide %s of PoP %s by %s (%s), from %s", action, pop, who,
                 why or "no reason given", request.remote,
                 extra={"event": "admin", "action": action, "pop": pop, "scope": "fleet",
                        "who": who, "why": why, "remote": request.remote})
        # The event log has it when it comes back through the watch, as on every node.
        self._count(action, "ok")
        return web.json_response({"pop": pop, "scope": "fleet", "override": state,
                                  "who": who, "why": why})

    async def drain(self, request: web.Request) -> web.Response:
        return await self._change(request, "drain", DRAINING)

    async def undrain(self, request: web.Request) -> web.Response:
        return await self._change(request, "undrain", None)  # back to what probes say

    async def set_state(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        state = parse_state(body.get("state"))
        if state is None:
            denied = self._authorized(request, "state")
            if denied is not None:
                return denied
            self._count("state", "invalid")
            return web.json_response({"error": f"state must be one of {', '.join(STATES)}"},
                                     status=400)
        return await self._change(request, "state", state, body)

    async def node_drain(self, request: web.Request) -> web.Response:
        """Withdraw this node's anycast routes (it goes on answering), with
        who and why; kept in the state file."""
        return await self._node(request, "node-drain", drain=True)

    async def node_undrain(self, request: web.Request) -> web.Response:
        return await self._node(request, "node-undrain", drain=False)

    async def _node(self, request: web.Request, action: str, drain: bool) -> web.Response:
        denied = self._authorized(request, action)
        if denied is not None:
            return denied
        body = await _json_body(request)
        record = {"who": str(body.get("who") or f"admin API from {request.remote}"),
                  "why": str(body.get("why") or ""), "when": time.time()} if drain else None
        try:
            await self.node.set_node_drain(record)
        except GeodnsError as exc:
            self._count(action, "invalid")
            return web.json_response({"error": str(exc)}, status=409)
        self._count(action, "ok")
        anycast = self.node.view().anycast
        return web.json_response({"drained": drain, "announced":
                                  anycast.announced if anycast is not None else None})

    async def reload(self, request: web.Request) -> web.Response:
        """Re-read the configuration, every zone file and the GeoIP database
        now (as SIGHUP).  Answers 200 with what is served; documents that did
        not load are listed with their problems, and their previous versions
        keep serving."""
        denied = self._authorized(request, "reload")
        if denied is not None:
            return denied
        log.info("admin: reload requested from %s", request.remote,
                 extra={"event": "admin", "action": "reload", "remote": request.remote})
        self.node.add_event(RELOAD, f"reload requested from {request.remote}")
        swapped = await self.node.reload(force=True)
        snap = self.node.view().snapshot
        self._count("reload", "ok")
        zones = {name: {"zone": e.zone.name if e.zone else None,
                        "serial": e.zone.serial if e.zone else None,
                        "errors": [str(p) for p in e.errors]}
                 for name, e in sorted(snap.zones.items())}
        return web.json_response({"reloaded": swapped, "revision": snap.version.revision,
                                  "errors": [str(p) for p in snap.errors()],
                                  "configuration_errors": [str(p) for p in snap.config_errors],
                                  "restart_needed": list(snap.restart_needed),
                                  "zones": zones})
