"""The careful parse of a query packet: the *parse* stage of the query path.

Theory of operation: the hot path (:meth:`geodns.wire.Responder.respond`)
reads the common query shape in place and never comes here.  Everything
else (other opcodes and counts, compression, records in any section, EDNS
options, malformed input) is parsed here in full, and the outcome is one of
three, as Knot and NSD answer:

* :class:`NoAnswer`: the packet gets no answer at all (shorter than a
  header, or QR set: never answer a response);
* :class:`QueryError`: an error answer, with its rcode, the question when it
  could be read and the query's OPT when it had one: NOTIMP for an opcode
  other than QUERY, FORMERR for a question or record that cannot be parsed,
  a QDCOUNT other than 1, two OPT records, an OPT not owned by the root, an
  EDNS option overrunning the OPT or a bad Client Subnet option, BADVERS
  for an EDNS version above 0;
* a :class:`Query` to answer.

A COOKIE option (RFC 7873) is found here and handed on as it is: whether it
is well formed matters only to a server that does cookies (the *cookie*
stage, :mod:`geodns.cookies`); one that does not ignores the option.  Of
several, the first counts and the others are ignored (RFC 7873 5.2).

Records in the answer and authority sections, unknown EDNS options and bytes
after the last counted record are ignored, as NSD does.  Nothing here
allocates more than the question and the options it returns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from geodns import cookies, ecs
from geodns.counters import Dropped, Malformed
from geodns.errors import GeodnsError
from geodns.rdata import OPT
from geodns.resolve import BADVERS, FORMERR, NOTIMP, Rcode

MIN_UDP = 512
TCP_LIMIT = 65535


class NoAnswer(GeodnsError):
    """The packet gets no answer at all."""

    def __init__(self, reason: Dropped) -> None:
        super().__init__(reason)
        self.reason = reason


class QueryError(GeodnsError):
    """The query is answered with ``rcode`` and no records: the root of the
    errors a query can cause (our own faults are SERVFAIL, elsewhere)."""

    rcode: Rcode = FORMERR

    def __init__(self, message: str, reason: Malformed = Malformed.OTHER,
                 question: bytes | None = None, opt: Opt | None = None,
                 cookie: bytes | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.question = question  # name + type + class, as sent
        self.opt = opt
        self.cookie = cookie  # the COOKIE option's data, when the OPT could be read


class FormErr(QueryError):
    """The query cannot be parsed; ``reason`` is the bounded cause the
    malformed-query counter is labelled with."""

    rcode = FORMERR


class NotImp(QueryError):
    rcode = NOTIMP


class BadVers(QueryError):
    rcode = BADVERS


@dataclass(frozen=True, slots=True)
class Opt:
    """What a query's OPT record says."""

    payload: int
    version: int
    do: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: the question as sent, the OPT, the Client Subnet
    option's data (already checked) and the first COOKIE option's data (not
    checked: see :mod:`geodns.cookies`), if any."""

    question: bytes
    opt: Opt | None
    ecs: bytes | None
    cookie: bytes | None = None

    @property
    def key(self) -> bytes:
        """What the answer tables are keyed on: the lower-cased name, type
        and class."""
        end = len(self.question) - 4
        return self.question[:end].lower() + self.question[end:]

    @property
    def edns(self) -> int:
        return 0 if self.opt is None else 1

    @property
    def tail(self) -> int:
        """The EDNS form of the answer: 0 no EDNS, 1 OPT, 2 OPT with DO
        (the pieces of :data:`geodns.compile.Tails` sent: body, body and
        opt, do_body and do_opt)."""
        return 0 if self.opt is None else (2 if self.opt.do else 1)

    def limit(self, udp: bool, payload: int) -> int:
        """The largest answer we may send back."""
        if not udp:
            return TCP_LIMIT
        if self.opt is None:
            return MIN_UDP
        return min(max(self.opt.payload, MIN_UDP), payload)


def parse(data: bytes) -> Query:
    """Parse a query packet in full; raises :class:`NoAnswer` or
    :class:`QueryError` (see the module docstring)."""
    n = len(data)
    if n < 12:
        raise NoAnswer(Dropped.SHORT)
    _qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
    if flags & 0x8000:
        raise NoAnswer(Dropped.RESPONSE)
    opcode = (flags >> 11) & 0xF
    question: bytes | None = None
    opt: Opt | None = None
    option: bytes | None = None
    cookie: bytes | None = None
    try:
        p = 12
        if qd == 1:
            qend = skip_name(data, 12, allow_pointer=False)
            if qend + 4 > n:
                raise FormErr("question truncated", Malformed.QUESTION)
            question = data[12 : qend + 4]
            p = qend + 4
        if opcode != 0:
            raise NotImp(f"opcode {opcode}", question=question)
        if qd > 1:
            raise FormErr(f"QDCOUNT is {qd}", Malformed.QDCOUNT)
        for _ in range(an + ns):
            p = skip_rr(data, p)
        for _ in range(ar):
            start = p
            p = skip_name(data, p, allow_pointer=True)
            if p + 10 > n:
                raise FormErr("additional record truncated", Malformed.RECORD)
            rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", data[p : p + 10])
            end = p + 10 + rdlen
            if end > n:
                raise FormErr("additional record data truncated", Malformed.RECORD)
            if rtype == OPT:
                if opt is not None:
                    raise FormErr("more than one OPT record", Malformed.OPT)
                if data[start] != 0:
                    raise FormErr("OPT owner is not the root", Malformed.OPT)
                option, cookie = find_options(data, p + 10, end)
                opt = Opt(rclass, (ttl >> 16) & 0xFF, bool((ttl >> 15) & 1))
            p = end
    except FormErr as exc:  # an error in the records: the question is kept, not the OPT
        raise FormErr(str(exc), exc.reason, question) from None
    except IndexError:
        raise FormErr("packet ends inside a field", Malformed.TRUNCATED, question) from None
    if opt is not None and opt.version > 0:
        raise BadVers(f"EDNS version {opt.version}", question=question, opt=opt, cookie=cookie)
    if question is None:
        raise FormErr("QDCOUNT is 0", Malformed.QDCOUNT, None, opt, cookie)
    if option is not None:
        try:
            ecs.client_subnet(option)
        except ecs.BadClientSubnet as exc:
            raise FormErr(str(exc), Malformed.ECS, question, opt, cookie) from None
    return Query(question, opt, option, cookie)


def question_of(data: bytes) -> bytes | None:
    """The question of a packet when it can be read (for an answer that
    must say which question it is about), else None."""
    try:
        qend = skip_name(data, 12, allow_pointer=False)
    except (FormErr, IndexError):
        return None
    return data[12 : qend + 4] if qend + 4 <= len(data) else None


def skip_name(data: bytes, p: int, allow_pointer: bool) -> int:
    """Offset just past the name at ``p``; a pointer ends a name."""
    total = 0
    while True:
        ln = data[p]
        if ln == 0:
            return p + 1
        if ln & 0xC0 == 0xC0:
            if not allow_pointer:
                raise FormErr("compression pointer in the question", Malformed.QUESTION)
            data[p + 1]
            return p + 2
        if ln > 63:
            raise FormErr("bad label type", Malformed.LABEL)
        total += ln + 1
        if total > 254:
            raise FormErr("name longer than 255 bytes", Malformed.LABEL)
        p += ln + 1


def skip_rr(data: bytes, p: int) -> int:
    """Offset just past the resource record at ``p``."""
    p = skip_name(data, p, allow_pointer=True)
    if p + 10 > len(data):
        raise FormErr("record truncated", Malformed.RECORD)
    rdlen = (data[p + 8] << 8) | data[p + 9]
    end = p + 10 + rdlen
    if end > len(data):
        raise FormErr("record data truncated", Malformed.RECORD)
    return end


def find_ecs(data: bytes, p: int, end: int) -> bytes | None:
    """Check the framing of the EDNS options between ``p`` and ``end``;
    return the Client Subnet option's data (family, source, scope, address)
    if there is one."""
    return find_options(data, p, end)[0]


def find_options(data: bytes, p: int, end: int) -> tuple[bytes | None, bytes | None]:
    """Check the framing of the EDNS options between ``p`` and ``end``;
    return the Client Subnet option's data (family, source, scope, address)
    and the first COOKIE option's data, each if there is one."""
    found = cookie = None
    while p < end:
        if p + 4 > end:
            raise FormErr("EDNS option header truncated", Malformed.OPT)
        code = (data[p] << 8) | data[p + 1]
        olen = (data[p + 2] << 8) | data[p + 3]
        if p + 4 + olen > end:
            raise FormErr("EDNS option data truncated", Malformed.OPT)
        if code == ecs.CODE:
            if found is not None:
                raise FormErr("two Client Subnet options", Malformed.ECS)
            found = data[p + 4 : p + 4 + olen]
        elif code == cookies.CODE and cookie is None:
            cookie = data[p + 4 : p + 4 + olen]
        p += 4 + olen
    return found, cookie
