"""A small etcd v3 client over etcd's JSON gateway (aiohttp).

Theory of operation.  etcd serves its v3 API as JSON on the client port
(``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``, ``/v3/lease/*``): keys and
values are base64, 64-bit integers are strings.  :class:`Etcd` talks to one
endpoint at a time and moves to the next when one does not answer (a dead
member, a member without a leader), so a client given every member's address
keeps working while a majority is up.  Nothing here knows what geodns keeps
in etcd (:mod:`geodns.fleet.keys` does).

Riding through an election.  While etcd elects a new leader (1-3 s with its
defaults) every member may refuse at once ("leader changed", "no leader", a
timeout inside etcd) and the dead leader's port refuses connections.  With
``retry_for`` (a client-wide default, or per call) :meth:`Etcd.post` tries
every endpoint again after a short back-off (0.1 s doubling to 1 s) until
that many seconds have passed, and only then raises :class:`EtcdUnavailable`
with every endpoint's last reason.  Only those transient failures are tried
again: an error etcd answers definitely (a bad request, no permission, no
space) is raised at once, and a failed transaction compare is an answer, not
an error.  A request sent without an answer (a timeout, a connection that
broke, a write etcd gave up waiting for) may still have been applied: the
error (and :attr:`TxnOutcome.doubtful`) says so, so that the caller can find
out instead of assuming; a compare-and-swap transaction tried again can only
apply once.  ``retry_for`` is 0 unless given (one pass over the endpoints, as
a node's fleet session wants: it starts a new session itself).

A watch is a long HTTP response: one JSON message per line, each a batch of
events at one revision.  etcd may cancel it because the revision asked for
has been compacted away: :class:`Compacted` tells the caller to read
everything again.  A watch on a member that dies ends with a broken
connection (:class:`EtcdUnavailable`); one on a member cut off from the rest
may just go quiet, which is why the fleet's session also renews its lease on
the same endpoint and starts over when that fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geodns.errors import GeodnsError

if TYPE_CHECKING:
    import aiohttp
# aiohttp is imported when a request is first made: a node outside a fleet
# never needs it.

log = logging.getLogger("geodns.fleet")


class EtcdError(GeodnsError):
    """etcd refused a request (the message is etcd's).  ``doubtful``: an
    earlier attempt of the same request went unanswered, and may have been
    applied."""

    doubtful = False


class EtcdUnavailable(EtcdError):
    """No endpoint answered (in time).  ``doubtful``: a request may have
    reached etcd and been applied although no answer came back."""

    def __init__(self, message: str, doubtful: bool = False) -> None:
        super().__init__(message)
        self.doubtful = doubtful


class Compacted(EtcdError):
    """The revision a watch asked for is gone: read everything again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {revision})")
        self.revision = revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class TxnOutcome:
    succeeded: bool  # every comparison held and ``success`` was applied
    revision: int  # the store's revision after it
    responses: tuple[dict[str, Any], ...]  # one per operation of the branch that ran
    doubtful: bool  # an earlier attempt went unanswered: it may have been applied


@dataclass(frozen=True, slots=True)
class Range:
    revision: int  # the store's revision the range was read at
    kvs: tuple[KeyValue, ...]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def decode_kv(doc: dict[str, Any]) -> KeyValue:
    """A key-value as the gateway gives it (in a range, a watch event, or a
    transaction's responses)."""
    return KeyValue(_unb64(doc.get("key")), _unb64(doc.get("value")),
                    int(doc.get("mod_revision", 0)), int(doc.get("create_revision", 0)),
                    int(doc.get("lease", 0)))


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


# -- transaction parts ------------------------------------------------------------
def same_mod(key: bytes, revision: int) -> dict[str, Any]:
    """Compare: ``key`` was last written at ``revision`` (0: it does not exist)."""
    if revision == 0:
        return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def put_op(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def delete_op(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def range_op(key: bytes) -> dict[str, Any]:
    """Read ``key`` (its answer is in :attr:`TxnOutcome.responses`)."""
    return {"request_range": {"key": _b64(key)}}


# Errors that mean "this member cannot serve now; another may, or this one in
# a moment": no leader, leader changed, the member is stopping, a timeout
# inside etcd.  Every other code etcd answers is definite (not tried again).
_RETRY_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
# The back-off between passes over the endpoints (doubling up to the second).
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
# The answers to a request that was never received, so cannot have been applied.
_NOT_SENT = ("etcdserver: no leader",)


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(self, reason: str, doubtful: bool) -> None:
        super().__init__(reason)
        self.doubtful = doubtful


class Etcd:
    """One client for a list of endpoints (``http://host:port``)."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0,
                 retry_for: float = 0.0) -> None:
        """``timeout``: seconds per attempt on one endpoint; ``retry_for``:
        how long a request keeps trying every endpoint again while they fail
        transiently (0: one pass)."""
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.retry_for = retry_for
        self.current = 0  # the endpoint tried first
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout),
                connector=aiohttp.TCPConnector(limit=16, force_close=False))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def next_endpoint(self) -> None:
        self.current = (self.current + 1) % len(self.endpoints)

    async def _post_one(self, endpoint: str, path: str, body: dict[str, Any],
                        timeout: float) -> dict[str, Any]:
        """One attempt: etcd's answer, :class:`EtcdError` for a definite
        refusal, :class:`_Transient` for anything another attempt may fix."""
        import aiohttp

        try:
            async with self._http().post(endpoint + path, json=body,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                doc = await resp.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
            raise _Transient(f"{endpoint}: {exc.__class__.__name__} {exc}".strip(), False
                             ) from None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            what = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else \
                f"{exc.__class__.__name__} {exc}".strip()
            # Sent, or maybe sent (aiohttp does not say whether a timeout
            # came while connecting): etcd may have applied it.
            raise _Transient(f"{endpoint}: {what}", True) from None
        if not isinstance(doc, dict):
            raise _Transient(f"{endpoint}: not a JSON object", True)
        error = doc.get("error") or doc.get("message")
        if error and ("header" not in doc and "result" not in doc):
            if doc.get("code") in _RETRY_CODES:
                raise _Transient(f"{endpoint}: {error}", str(error) not in _NOT_SENT)
            raise EtcdError(str(error))
        return doc

    async def post(self, path: str, body: dict[str, Any],
                   retry_for: float | None = None) -> dict[str, Any]:
        """One request, to the current endpoint or, if it fails, the others
        in turn.  When every endpoint failed transiently, every one is tried
        again after a back-off until ``retry_for`` seconds (default: the
        client's) have passed since the call began; then
        :class:`EtcdUnavailable` names each endpoint and its last failure.
        A definite error (:class:`EtcdError`) is raised at once."""
        return (await self._post(path, body, retry_for))[0]

    async def _post(self, path: str, body: dict[str, Any], retry_for: float | None
                    ) -> tuple[dict[str, Any], bool]:
        """(etcd's answer, whether an earlier attempt went unanswered)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + (self.retry_for if retry_for is None else retry_for)
        backoff = RETRY_FIRST
        doubtful = False
        attempts = 0
        last: dict[str, str] = {}  # each endpoint's last failure
        while True:
            for _ in range(len(self.endpoints)):
                endpoint = self.endpoint
                timeout = self.timeout
                if attempts >= len(self.endpoints):  # after the first pass: by the deadline
                    timeout = min(timeout, deadline - loop.time())
                    if timeout < 0.05:
                        break
                attempts += 1
                try:
                    return await self._post_one(endpoint, path, body, timeout), doubtful
                except EtcdError as exc:
                    exc.doubtful = doubtful
                    raise
                except _Transient as exc:
                    last[endpoint] = str(exc)
                    # A read applies nothing: only a write can be in doubt.
                    doubtful = doubtful or (exc.doubtful and path != "/v3/kv/range")
                self.next_endpoint()
            pause = min(backoff, deadline - loop.time())
            if pause <= 0:
                break
            log.log(logging.WARNING if backoff == RETRY_FIRST else logging.DEBUG,
                    "etcd: no endpoint could answer (%s); trying every one again for up to "
                    "%.1f s more", "; ".join(last.values()), deadline - loop.time(),
                    extra={"event": "etcd-retry"})
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, RETRY_MAX)
        reasons = "; ".join(last[e] for e in self.endpoints if e in last)
        if attempts <= len(self.endpoints):
            message = "no etcd endpoint answered: " + reasons
        else:
            message = (f"no etcd endpoint answered in {loop.time() - began:.1f} s "
                       f"({attempts} attempts); the last from each: {reasons}")
        if doubtful:
            message += " (a request went unanswered: etcd may have applied it)"
        raise EtcdUnavailable(message, doubtful)

    # -- key-value ---------------------------------------------------------------
    async def range_prefix(self, prefix: bytes, revision: int = 0) -> Range:
        """Every key under ``prefix``, all read at one revision."""
        body: dict[str, Any] = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        if revision:
            body["revision"] = str(revision)
        doc = await self.post("/v3/kv/range", body)
        # The header gives the store's newest revision, not the one read at.
        return Range(revision or int(doc["header"]["revision"]),
                     tuple(decode_kv(kv) for kv in doc.get("kvs", ())))

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        doc = await self.post("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or ()
        return (decode_kv(kvs[0]) if kvs else None), int(doc["header"]["revision"])

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        doc = await self.post("/v3/kv/put", body)
        return int(doc["header"]["revision"])

    async def delete(self, key: bytes) -> int:
        doc = await self.post("/v3/kv/deleterange", {"key": _b64(key)})
        return int(doc["header"]["revision"])

    async def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
                  failure: Sequence[dict[str, Any]] = ()) -> tuple[bool, int]:
        """(whether every comparison held and ``success`` was applied, the revision)."""
        out = await self.txn_outcome(compare, success, failure)
        return out.succeeded, out.revision

    async def txn_outcome(self, compare: Sequence[dict[str, Any]],
                          success: Sequence[dict[str, Any]],
                          failure: Sequence[dict[str, Any]] = (),
                          retry_for: float | None = None) -> TxnOutcome:
        """A transaction, with the responses of the branch that ran and
        whether an earlier attempt of it went unanswered (then, if it was
        applied, this attempt's comparisons fail: only a compare-and-swap
        transaction is safe to send more than once)."""
        doc, doubtful = await self._post("/v3/kv/txn", {
            "compare": list(compare), "success": list(success), "failure": list(failure)},
            retry_for)
        return TxnOutcome(bool(doc.get("succeeded", False)), int(doc["header"]["revision"]),
                          tuple(doc.get("responses") or ()), doubtful)

    # -- leases ------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        doc = await self.post("/v3/lease/grant", {"TTL": str(ttl)})
        return int(doc["ID"])

    async def keepalive(self, lease: int) -> int:
        """Renew a lease; its new TTL, 0 when it has expired."""
        doc = await self.post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(doc.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        try:
            await self.post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "not found" not in str(exc):
                raise

    # -- watching ----------------------------------------------------------------
    async def watch(self, prefix: bytes, start_revision: int
                    ) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """Every change under ``prefix`` from ``start_revision`` on, in order,
        as (revision, events) batches, from the current endpoint.  Raises
        :class:`Compacted` when that revision is gone and
        :class:`EtcdUnavailable` when the stream breaks."""
        import aiohttp

        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        endpoint = self.endpoint
        try:
            async with self._http().post(endpoint + "/v3/watch", json=body) as resp:
                if resp.status != 200:
                    raise EtcdUnavailable(f"{endpoint}: watch answered HTTP {resp.status}")
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        batch = self._watch_message(json.loads(line), endpoint)
                        if batch is not None:
                            yield batch
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise EtcdUnavailable(f"{endpoint}: watch broke: {exc.__class__.__name__} {exc}"
                                  ) from None
        raise EtcdUnavailable(f"{endpoint}: watch ended")

    @staticmethod
    def _watch_message(doc: dict[str, Any], endpoint: str
                       ) -> tuple[int, list[WatchEvent]] | None:
        if "error" in doc and "result" not in doc:
            raise EtcdUnavailable(f"{endpoint}: watch: {doc['error']}")
        result = doc.get("result", {})
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise Compacted(compact)
        if result.get("canceled"):
            raise EtcdUnavailable(f"{endpoint}: watch cancelled: "
                                  f"{result.get('cancel_reason', 'no reason given')}")
        events = [WatchEvent(e.get("type") == "DELETE", decode_kv(e["kv"]))
                  for e in result.get("events", ())]
        if not events:
            return None
        return max(e.kv.mod_revision for e in events), events


__all__ = ["Compacted", "Etcd", "EtcdError", "EtcdUnavailable", "KeyValue", "Range",
           "TxnOutcome", "WatchEvent", "decode_kv", "delete_op", "prefix_end", "put_op",
           "range_op", "same_mod"]
