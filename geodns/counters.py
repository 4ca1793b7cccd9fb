"""Query counters as the hot path keeps them: one small int per answer.

Theory of operation: every answer is counted by what it was (zone and
rcode; for a steered answer also its first PoP and the reason), the query
type and the transport.  Building a tuple of those per query and hashing it
twice (get, then set) cost about a fifth of a static answer's time, so the
key is an int instead: the label's number, the query type and the transport
packed into bits.  An int hashes to itself, so the per-query work is a few
shifts, one set membership test and one dict update.

Label numbers come from :data:`LABELS`, a process-wide intern table: they
are only meaningful inside one process, stay the same across reloads (so
counters keyed by them outlive snapshots), and are turned back into labels
when someone reads the counters (:func:`decode`), which is also how they
cross from one worker to another.  The table only grows by the labels the
zones and PoPs can produce, a bounded set.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from geodns.rdata import ANY, AXFR, DS, IXFR, SERVED_TYPES

# (zone, rcode), or for a steered answer (zone, rcode, first PoP, reason).
Label = tuple[str, int] | tuple[str, int, str, str]
# Query types counted by name; the rest share one slot (labels stay bounded).
COUNTED_QTYPES = frozenset((*SERVED_TYPES, ANY, DS, AXFR, IXFR, 64, 65, 99))
OTHER = 0x10000  # the query-type slot for every type not in COUNTED_QTYPES
LABEL_SHIFT = 18  # key = label number << 18 | query-type slot << 1 | udp


class LabelTable:
    def __init__(self) -> None:
        self._ids: dict[Label, int] = {}
        self._labels: list[Label] = []
        self._lock = threading.Lock()  # zones compile in a thread

    def cid(self, label: Label) -> int:
        """The label's number, already shifted into place for a key."""
        found = self._ids.get(label)
        if found is None:
            with self._lock:
                found = self._ids.get(label)
                if found is None:
                    found = len(self._labels) << LABEL_SHIFT
                    self._labels.append(label)
                    self._ids[label] = found
        return found

    def label(self, key: int) -> Label:
        return self._labels[key >> LABEL_SHIFT]


LABELS = LabelTable()



# Rare events, counted apart from the answers in ``Responder.events`` by
# (kind, reason): packets not answered, FORMERR answers by cause, UDP answers
# cut to fit, steering cache misses, COOKIE options by verdict
# (geodns.cookies.Verdict).  The values are metric label values.
class Event(StrEnum):
    DROPPED = "dropped"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    STEERING_MISS = "steer-miss"  # its reason is always ""
    COOKIE = "cookie"


class Dropped(StrEnum):
    """Why a packet got no answer at all."""

    SHORT = "short"  # under 12 bytes
    RESPONSE = "response"  # QR set
    SEND_FAILED = "send-failed"  # counted by the transports


class TcpClosed(StrEnum):
    """Why geodns closed a TCP connection (the limits of docs/abuse.md)."""

    IDLE = "idle"  # no query for tcp.idle_timeout
    INITIAL = "initial"  # no complete query within tcp.initial_timeout of the accept
    SLOW_QUERY = "slow-query"  # a message not complete within tcp.query_timeout
    UNREAD = "unread"  # answers left unread at the caps for tcp.send_timeout
    EVICTED = "evicted"  # the least recently active one, at tcp.max_connections
    NETWORK = "network"  # its network's least recently active, at max_connections_per_network


class Malformed(StrEnum):
    """Why a query was answered FORMERR."""

    QUESTION = "question"
    LABEL = "label"
    QDCOUNT = "qdcount"
    RECORD = "record"
    OPT = "opt"
    ECS = "ecs"
    COOKIE = "cookie"  # a COOKIE option of a length RFC 7873 5.2.2 forbids
    TRUNCATED = "truncated"  # the packet ends inside a field
    OTHER = "other"


class Truncated(StrEnum):
    """How a UDP answer was made to fit."""

    TC = "tc"  # TC set, only the question sent
    ADDITIONAL = "additional"  # the additional section left out


# What the hot path's counters decode to: (label, query type or OTHER, udp) -> count.
Decoded = dict[tuple[Label, int, bool], int]


def key(cid: int, qtype: int, udp: bool) -> int:
    """The counter key for a label number, a query type and a transport (the
    hot path inlines this)."""
    return cid | ((qtype if qtype in COUNTED_QTYPES else OTHER) << 1) | udp


def decode(counts: dict[int, int]) -> Decoded:
    out: Decoded = {}
    for k, n in list(counts.items()):
        out[(LABELS.label(k), (k >> 1) & 0x1FFFF, bool(k & 1))] = n
    return out
