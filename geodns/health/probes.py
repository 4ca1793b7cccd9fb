"""Probes: one attempt each, bounded by its timeout, never raising.

HTTP(S) through aiohttp (method, path, Host header, expected status codes,
text the body must contain, TLS verification on or off); TCP connect; DNS
(a query to a server, an expected rcode and optionally an expected answer,
through dnspython's asyncio client).  A hanging target costs one timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from geodns.errors import GeodnsError
from geodns.health.spec import CheckSpec
from geodns.health.state import Result

if TYPE_CHECKING:
    import aiohttp
# aiohttp and dns.asyncquery are imported when a probe first runs: a node
# without health checks never needs them, and they are much of its start.

__all__ = ["CheckSpec", "Prober"]

MAX_BODY = 65536


def _split(hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]:")
        return host, int(port)
    host, _, port = hostport.rpartition(":")
    return host, int(port)


class Prober:
    """Runs probes; owns the HTTP client session."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def run(self, spec: CheckSpec) -> Result:
        import aiohttp

        start = time.monotonic()
        try:
            async with asyncio.timeout(spec.timeout):
                if spec.kind == "http":
                    detail = await self._http(spec)
                elif spec.kind == "tcp":
                    detail = await self._tcp(spec)
                else:
                    detail = await self._dns(spec)
        except TimeoutError:
            return Result(False, None, f"timeout after {spec.timeout:g} s", "timeout")
        except _Failed as exc:
            return Result(False, None, str(exc), exc.reason)
        except (OSError, aiohttp.ClientError, dns.exception.DNSException) as exc:
            return Result(False, None, *_describe(exc))
        rtt = (time.monotonic() - start) * 1000
        return Result(True, rtt, f"{detail} in {rtt:.1f} ms")

    async def _http(self, spec: CheckSpec) -> str:
        import aiohttp

        if self.session is None:
            # No connection reuse: each probe sees what a new client would.
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=0),
                headers={"User-Agent": "geodns-health"})
        headers = {"Host": spec.host} if spec.host else None
        async with self.session.request(spec.method, spec.target, headers=headers,
                                        ssl=bool(spec.verify_tls),
                                        allow_redirects=False) as resp:
            if resp.status not in spec.expect:
                raise _Failed(f"status {resp.status}, expected "
                              f"{', '.join(map(str, spec.expect))}", "status")
            if spec.contains is not None:
                body = await resp.content.read(MAX_BODY)
                if spec.contains.encode() not in body:
                    raise _Failed(f"status {resp.status} but the body lacks {spec.contains!r}",
                                  "body")
            return f"status {resp.status}"

    async def _tcp(self, spec: CheckSpec) -> str:
        host, port = _split(spec.target)
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return "connected"

    async def _dns(self, spec: CheckSpec) -> str:
        host, port = _split(spec.target)
        import dns.asyncquery

        q = dns.message.make_query(spec.name or ".", spec.qtype)
        resp = await dns.asyncquery.udp(q, host, port=port, timeout=spec.timeout)
        rcode = dns.rcode.to_text(resp.rcode())
        if rcode != spec.rcode.upper():
            raise _Failed(f"rcode {rcode}, expected {spec.rcode.upper()}", "rcode")
        if spec.answer is not None:
            texts = {rd.to_text() for rrset in resp.answer for rd in rrset}
            if spec.answer not in texts:
                raise _Failed(f"answer lacks {spec.answer}", "answer")
        return f"rcode {rcode}"


class _Failed(GeodnsError):
    """The target answered, but not as the check expects."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _describe(exc: BaseException) -> tuple[str, str]:
    """(detail for people, reason for the failure counter)."""
    import aiohttp

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", "refused"
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused", "refused"
        return f"cannot connect: {inner.strerror or inner}", "connect"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}", "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected", "error"
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), "error"
