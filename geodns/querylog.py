"""The optional sampled query log: one line for every Nth query.

Off by default.  With ``log.query_sample: 0.01`` the server builds its
responders from :class:`SampledQueryLog` instead of
:class:`~geodns.wire.Responder`, so that a server without the query log
pays nothing for it, and one with it pays a counter decrement per query
plus one log line per sample.  Sampling is every Nth query rather than
random: as fair for a steady stream, and cheaper.

Each line (logger ``geodns.query``, level INFO) carries: client address,
transport, query name, type, Client Subnet when present, rcode, answer size.
The query name appears here and only here: never in metrics.
"""

from __future__ import annotations

import ipaddress
import logging

from geodns import names
from geodns.compile import Tables
from geodns.cookies import Cookies
from geodns.ecs import Peer, peer_address
from geodns.geo import Locator
from geodns.parse import FormErr, find_ecs, skip_name
from geodns.rdata import type_name
from geodns.resolve import FORMERR, RCODE_NAMES
from geodns.steering import HealthView, Steering
from geodns.wire import Responder

log = logging.getLogger("geodns.query")


class SampledQueryLog(Responder):
    __slots__ = ("every", "left")
    planed = False  # every query counts towards the sample: none is answered by C alone

    def __init__(self, tables: Tables, steering: Steering | None = None,
                 locator: Locator | None = None, health: HealthView | None = None,
                 every: int = 100, cookies: Cookies | None = None) -> None:
        super().__init__(tables, steering, locator, health, cookies)
        self.every = max(1, every)
        self.left = self.every

    def respond(self, data: bytes, udp: bool = True, peer: Peer = None) -> bytes | None:
        resp = super().respond(data, udp, peer)
        self.left -= 1
        if self.left <= 0:
            self.left = self.every
            try:
                log_query(data, resp, udp, peer)
            except Exception:  # a log line must never cost an answer
                log.debug("query not logged", exc_info=True)
        return resp


def describe_query(data: bytes) -> dict[str, str]:
    """Name, type and Client Subnet of a query, as far as they can be read."""
    out: dict[str, str] = {}
    try:
        qend = skip_name(data, 12, allow_pointer=False)
        out["qname"] = names.to_text(data[12:qend])
        out["qtype"] = type_name(int.from_bytes(data[qend:qend + 2], "big"))
        p = qend + 4
        if data[11] and len(data) >= p + 11 and data[p] == 0 and data[p + 2] == 41:
            end = p + 11 + int.from_bytes(data[p + 9:p + 11], "big")
            ecs = find_ecs(data, p + 11, end)
            if ecs is not None and len(ecs) >= 4:
                size = 4 if ecs[1] == 1 else 16
                addr = ipaddress.ip_address(ecs[4:].ljust(size, b"\0"))
                out["ecs"] = f"{addr}/{ecs[2]}"
    except (FormErr, IndexError, ValueError):
        out.setdefault("qname", "?")
    return out


def log_query(data: bytes, resp: bytes | None, udp: bool, peer: Peer) -> None:
    client, _ = peer_address(peer)
    fields: dict[str, object] = {"event": "query", "client": str(ipaddress.ip_address(client)),
                                 "transport": "udp" if udp else "tcp", **describe_query(data)}
    if resp is None:
        fields["rcode"] = "dropped"
    else:
        rcode = resp[3] & 0xF if len(resp) > 3 else FORMERR
        fields["rcode"] = RCODE_NAMES.get(rcode, str(rcode))
        fields["size"] = len(resp)
    text = " ".join(f"{k}={v}" for k, v in fields.items() if k != "event")
    log.info("query %s", text, extra=fields)
