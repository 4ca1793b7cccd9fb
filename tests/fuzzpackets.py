"""Fuzzed DNS packets, each one determined by (seed, index), and the check
every answer to one must pass.

Used by tests/test_fuzz_server.py (a few tens of thousands against a real
node) and bench/fuzz.py (a million).  :func:`packet` draws one packet from
its own ``random.Random((seed << 32) | index)``, so any packet of a run can
be made again alone: ``packet(seed, index)``.

The kinds (:data:`KINDS`, with their weights): random bytes; valid queries
for static, steered, wildcard, delegated, missing and foreign names; the
same queries with bits flipped, cut short, header counts or flags changed,
compression pointers that loop or point past the end, labels over 63 bytes
and names over 255; EDNS variants (unknown, many and overrunning options,
versions above 0, DO, payloads from 0 to 65535, two OPT records, an OPT not
owned by the root or in the wrong section); Client Subnet edge cases (family
0 to 3, source prefixes 0/24/32/33/128/129, addresses longer or shorter
than the prefix needs, bits set beyond it, a scope in the query, two
options); and junk after the last record.  A share of packets (``tcp``)
is meant to go over TCP.

:func:`check` is what an answer must be: the query's ID with QR set, never
an answer to a packet that gets none (shorter than a header, or QR set),
the question copied as it was sent (or none), no bigger than UDP allows,
and either a message dnspython parses whose rcode is not SERVFAIL (a
malformed query is not the server's fault), or a deliberate FORMERR,
NOTIMP, REFUSED or BADVERS.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode

__all__ = ["KINDS", "Barrage", "Wrong", "check", "node_files", "packet", "packets", "question_end"]

HERE = Path(__file__).resolve().parent

# Names the node of tests/zones serves (test.example. and steer.example.),
# and some it does not.
STATIC = ["www.test.example.", "test.example.", "alias.test.example.", "chain1.test.example.",
          "loop1.test.example.", "foo.wild.test.example.", "x.cwild.test.example.",
          "host.deleg.test.example.", "long.test.example.", "MiXeD.test.example.",
          "b.c.test.example.", "nothere.test.example.", "plain.steer.example.",
          "steer.example.", "example.org.", "."]
STEERED = ["www.steer.example.", "two.steer.example.", "ruled.steer.example.",
           "cdn.steer.example.", "x.wild.steer.example.", "chained.steer.example.",
           "fixed.steer.example."]
TYPES = [1, 28, 16, 255, 2, 6, 15, 5, 48, 43, 46, 33, 257, 41, 250, 251, 252, 0, 65535, 666]
OPT = 41
ECS = 8


def _name(text: str) -> bytes:
    labels = [part.encode() for part in text.rstrip(".").split(".") if part]
    return b"".join(bytes([len(lab)]) + lab for lab in labels) + b"\0"


def _opt(payload: int = 1232, version: int = 0, flags: int = 0, options: bytes = b"",
         rdlen: int | None = None, owner: bytes = b"\0", ext_rcode: int = 0) -> bytes:
    return owner + struct.pack("!HHBBHH", OPT, payload, ext_rcode, version, flags,
                               len(options) if rdlen is None else rdlen) + options


def _option(code: int, data: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HH", code, len(data) if length is None else length) + data


def _query(qname: bytes, qtype: int, flags: int = 0, additional: bytes = b"", ar: int = 0,
           qclass: int = 1) -> bytearray:
    return bytearray(struct.pack("!HHHHHH", 0, flags, 1, 0, 0, ar) + qname
                     + struct.pack("!HH", qtype, qclass) + additional)


def _base(rnd: random.Random) -> bytearray:
    """A valid query: a served or foreign name, a common or odd type, with
    or without EDNS (and then sometimes a valid Client Subnet option)."""
    name = rnd.choice(STEERED if rnd.random() < 0.35 else STATIC)
    if rnd.random() < 0.2:  # 0x20 letter case
        name = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
    qtype = rnd.choice(TYPES) if rnd.random() < 0.4 else rnd.choice((1, 1, 28))
    flags = 0x0100 if rnd.random() < 0.3 else 0
    roll = rnd.random()
    if roll < 0.3:
        return _query(_name(name), qtype, flags)
    options = b""
    if roll < 0.7:
        options = _option(ECS, _ecs_valid(rnd))
    do = 0x8000 if rnd.random() < 0.3 else 0
    return _query(_name(name), qtype, flags, _opt(rnd.choice((512, 1232, 4096)), 0, do, options),
                  ar=1)


def _ecs_valid(rnd: random.Random) -> bytes:
    if rnd.random() < 0.6:
        source = rnd.choice((24, 24, 16, 32, 20))
        addr = rnd.getrandbits(32) & ((0xFFFFFFFF << (32 - source)) & 0xFFFFFFFF)
        return struct.pack("!HBB", 1, source, 0) + addr.to_bytes(4, "big")[: (source + 7) // 8]
    source = rnd.choice((48, 56, 64, 128))
    addr = (0x2001 << 112 | rnd.getrandbits(112)) & (((1 << 128) - 1) << (128 - source))
    return struct.pack("!HBB", 2, source, 0) + addr.to_bytes(16, "big")[: (source + 7) // 8]


# -- the kinds --------------------------------------------------------------------------------
def _random_bytes(rnd: random.Random) -> bytearray:
    size = rnd.choice((rnd.randrange(0, 16), rnd.randrange(0, 64), rnd.randrange(0, 600)))
    data = bytearray(rnd.randbytes(size))
    if size >= 12 and rnd.random() < 0.5:  # a header that looks like a query's
        data[2] &= 0x7F
        data[4:12] = struct.pack("!HHHH", 1, 0, 0, rnd.randrange(0, 3))
    return data


def _valid(rnd: random.Random) -> bytearray:
    return _base(rnd)


def _bit_flips(rnd: random.Random) -> bytearray:
    data = _base(rnd)
    for _ in range(rnd.randrange(1, 9)):
        pos = rnd.randrange(2, len(data))  # not the ID: the ID matches answers to queries
        data[pos] ^= 1 << rnd.randrange(8)
    return data


def _truncated(rnd: random.Random) -> bytearray:
    data = _base(rnd)
    return data[: rnd.randrange(0, len(data))]


def _counts(rnd: random.Random) -> bytearray:
    data = _base(rnd)
    field = rnd.randrange(4)
    value = rnd.choice((0, 1, 2, 3, 255, 0xFFFF, rnd.randrange(0x10000)))
    data[4 + 2 * field : 6 + 2 * field] = struct.pack("!H", value)
    return data


def _header(rnd: random.Random) -> bytearray:
    data = _base(rnd)
    data[2:4] = struct.pack("!H", rnd.getrandbits(16) & ~(0x8000 if rnd.random() < 0.8 else 0))
    return data


def _pointers(rnd: random.Random) -> bytearray:
    """Compression where a query must not have it, or that goes nowhere."""
    roll = rnd.random()
    qtype = rnd.choice(TYPES)
    if roll < 0.25:  # the question is a pointer to itself
        return _query(b"\xc0\x0c", qtype)
    if roll < 0.45:  # a label, then a pointer back to the name's start
        return _query(b"\x03www\xc0\x0c", qtype)
    if roll < 0.6:  # a pointer past the end
        return _query(b"\x03www" + struct.pack("!H", 0xC000 | rnd.randrange(0x3FFF)), qtype)
    # An additional record owned by a pointer that loops, or points past the end.
    base = _query(_name(rnd.choice(STATIC + STEERED)), 1)
    here = len(base)
    owner = struct.pack("!H", 0xC000 | (here if roll < 0.8 else rnd.randrange(here, 0x3FFF)))
    base += _opt(owner=owner)
    base[10:12] = b"\x00\x01"
    return base


def _labels(rnd: random.Random) -> bytearray:
    roll = rnd.random()
    if roll < 0.3:  # a label length of 64..191 (the 0x40 and 0x80 label types)
        name = bytes([rnd.randrange(64, 192)]) + rnd.randbytes(rnd.randrange(0, 80)) + b"\0"
    elif roll < 0.6:  # a name over 255 bytes, of valid labels
        labels = [b"a" * rnd.randrange(1, 64) for _ in range(rnd.randrange(5, 12))]
        name = b"".join(bytes([len(x)]) + x for x in labels) + _name("test.example.")
    elif roll < 0.8:  # exactly 255 and 256 bytes
        total = rnd.choice((255, 256, 254))
        labels = []
        left = total - 1
        while left > 1:
            size = min(63, left - 1)
            labels.append(b"b" * size)
            left -= size + 1
        name = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    else:  # a name with no end
        name = bytes([63]) + b"c" * 63
        return _query(name, 1)[:-4]
    return _query(name, rnd.choice(TYPES))


def _edns(rnd: random.Random) -> bytearray:
    name = _name(rnd.choice(STATIC + STEERED))
    qtype = rnd.choice(TYPES)
    roll = rnd.randrange(12)
    payload = rnd.choice((0, 1, 511, 512, 1232, 4096, 65535))
    flags = rnd.choice((0, 0x8000, 0x0080, 0xFFFF, rnd.getrandbits(16)))
    if roll == 0:  # unknown option codes
        opts = b"".join(_option(rnd.choice((100, 65001, 65535, 0, rnd.randrange(0x10000))),
                                rnd.randbytes(rnd.randrange(0, 20))) for _ in range(3))
        return _query(name, qtype, 0, _opt(payload, 0, flags, opts), 1)
    if roll == 1:  # many options
        opts = b"".join(_option(rnd.randrange(0x10000), rnd.randbytes(rnd.randrange(0, 4)))
                        for _ in range(rnd.randrange(20, 200)))
        return _query(name, qtype, 0, _opt(payload, 0, flags, opts), 1)
    if roll == 2:  # an option overrunning the OPT
        opts = _option(rnd.choice((8, 10, 100, 3)), rnd.randbytes(4), rnd.randrange(5, 0x10000))
        return _query(name, qtype, 0, _opt(payload, 0, flags, opts), 1)
    if roll == 3:  # the OPT's RDLENGTH overrunning the packet, or short of it
        opts = _option(100, b"xy")
        rdlen = rnd.choice((0, 1, 3, len(opts) + 1, 0xFFFF))
        return _query(name, qtype, 0, _opt(payload, 0, flags, opts, rdlen), 1)
    if roll == 4:  # version above 0
        return _query(name, qtype, 0, _opt(payload, rnd.randrange(1, 256), flags,
                                           _option(100, b"") if rnd.random() < 0.5 else b""), 1)
    if roll == 5:  # DO, with big or tiny payloads
        return _query(name, rnd.choice((48, 255, 1, 16)), 0, _opt(payload, 0, 0x8000), 1)
    if roll == 6:  # two OPT records
        return _query(name, qtype, 0, _opt(payload) + _opt(rnd.choice((512, 4096))), 2)
    if roll == 7:  # an OPT not owned by the root
        return _query(name, qtype, 0, _opt(payload, owner=_name("x.example.")), 1)
    if roll == 8:  # an OPT in the answer or authority section
        query = _query(name, qtype, 0, _opt(payload))
        section = rnd.randrange(2)
        query[6 + 2 * section : 8 + 2 * section] = b"\x00\x01"
        return query
    if roll == 9:  # cookies of every length, NSID, padding, keepalive
        code = rnd.choice((10, 3, 12, 11, 15, 9))
        value = rnd.randbytes(rnd.choice((0, 7, 8, 16, 24, 40, 41, 100)))
        return _query(name, qtype, 0, _opt(payload, 0, flags, _option(code, value)), 1)
    if roll == 10:  # an extended rcode in the query's OPT
        return _query(name, qtype, 0, _opt(payload, ext_rcode=rnd.randrange(1, 256)), 1)
    # OPT then another record (a TSIG-like one, or random bytes)
    extra = _name(".") + struct.pack("!HHIH", 250, 255, 0, 4) + rnd.randbytes(4)
    return _query(name, qtype, 0, _opt(payload) + extra, 2)


def _ecs(rnd: random.Random) -> bytearray:
    name = _name(rnd.choice(STEERED + STEERED + STATIC))
    family = rnd.choice((0, 1, 1, 2, 2, 3, rnd.randrange(0x10000)))
    source = rnd.choice((0, 24, 32, 33, 128, 129, 56, 48, rnd.randrange(256)))
    scope = 0 if rnd.random() < 0.7 else rnd.choice((1, 24, 255))
    need = (source + 7) // 8
    roll = rnd.random()
    if roll < 0.5:
        size = need
    elif roll < 0.8:
        size = max(0, need + rnd.choice((-2, -1, 1, 2)))
    else:
        size = rnd.choice((0, 4, 16, 17, 40))
    addr = bytearray(rnd.randbytes(size))
    if addr and source % 8 and rnd.random() < 0.6:  # clear the bits beyond the prefix...
        addr[-1] &= (0xFF << (8 - source % 8)) & 0xFF
        if rnd.random() < 0.3:  # ...or set one
            addr[-1] |= 1 << rnd.randrange(8 - source % 8)
    data: bytes = struct.pack("!HBB", family, source & 0xFF, scope) + bytes(addr)
    if rnd.random() < 0.1:
        data = data[: rnd.randrange(4)]  # shorter than its fixed fields
    options = _option(ECS, data)
    if rnd.random() < 0.1:  # two Client Subnet options
        options += _option(ECS, _ecs_valid(rnd))
    if rnd.random() < 0.1:
        options = _option(100, b"abc") + options
    do = 0x8000 if rnd.random() < 0.3 else 0
    return _query(name, rnd.choice((1, 1, 28, 255, 5)), 0,
                  _opt(rnd.choice((512, 1232, 4096)), 0, do, options), 1)


def _trailing(rnd: random.Random) -> bytearray:
    return _base(rnd) + rnd.randbytes(rnd.randrange(1, 40))


KINDS = {"random": (_random_bytes, 10), "valid": (_valid, 8), "flips": (_bit_flips, 12),
         "truncated": (_truncated, 6), "counts": (_counts, 6), "header": (_header, 5),
         "pointers": (_pointers, 6), "labels": (_labels, 6), "edns": (_edns, 18),
         "ecs": (_ecs, 18), "trailing": (_trailing, 5)}
_NAMES = list(KINDS)
_WEIGHTS = list(itertools.accumulate(KINDS[k][1] for k in _NAMES))
TCP_SHARE = 0.03


def packet(seed: int, index: int) -> tuple[str, bytes, bool]:
    """The ``index``-th packet of the run ``seed``: (kind, bytes, over TCP).
    Its first two bytes (the ID) are ``index`` mod 65536, so that an answer
    can be matched with its query."""
    rnd = random.Random((seed << 32) | index)
    kind = rnd.choices(_NAMES, cum_weights=_WEIGHTS)[0]
    data = KINDS[kind][0](rnd)
    tcp = rnd.random() < TCP_SHARE
    if len(data) >= 2:
        data[0:2] = struct.pack("!H", index & 0xFFFF)
    return kind, bytes(data[:65535]), tcp


def packets(seed: int, count: int, start: int = 0) -> Iterator[tuple[int, str, bytes, bool]]:
    """(index, kind, bytes, over TCP) for ``count`` packets from ``start``."""
    for i in range(start, start + count):
        yield (i, *packet(seed, i))


class Wrong(AssertionError):
    """An answer that should not have been sent as it was."""


DELIBERATE = {dns.rcode.FORMERR, dns.rcode.NOTIMP, dns.rcode.REFUSED}


def question_end(wire: bytes) -> int | None:
    """Offset just past the first question of ``wire`` (no compression), or
    None when it cannot be read."""
    p = 12
    try:
        while wire[p]:
            if wire[p] > 63:
                return None
            p += wire[p] + 1
    except IndexError:
        return None
    return p + 5 if p + 5 <= len(wire) else None


def check(query: bytes, resp: bytes, tcp: bool) -> str:
    """The answer's rcode as text, or :class:`Wrong` with the reason."""
    if len(query) < 12 or query[2] & 0x80:
        raise Wrong("an answer to a packet that gets none (short, or QR set)")
    if len(resp) < 12:
        raise Wrong("an answer shorter than a header")
    if resp[:2] != query[:2]:
        raise Wrong("the answer's ID is not the query's")
    if not resp[2] & 0x80:
        raise Wrong("QR not set in the answer")
    if not tcp and (len(resp) > 1232 or (len(resp) > 512 and query[10:12] == b"\0\0")):
        raise Wrong(f"a UDP answer of {len(resp)} bytes")
    qd = (resp[4] << 8) | resp[5]
    if qd > 1:
        raise Wrong(f"QDCOUNT {qd} in the answer")
    if qd == 1:
        end = question_end(resp)
        if end is None or resp[12:end] != query[12:end]:
            raise Wrong("the answer's question is not the one asked")
    try:
        msg = dns.message.from_wire(resp)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
        rcode = resp[3] & 0xF
        if rcode in DELIBERATE:
            return dns.rcode.to_text(dns.rcode.Rcode(rcode)) + " (not parsed)"
        raise Wrong(f"dnspython cannot parse the answer ({exc!r})") from None
    rcode = msg.rcode()
    if rcode == dns.rcode.SERVFAIL:
        raise Wrong("SERVFAIL: the server's own fault")
    opcode = (query[2] >> 3) & 0xF
    if opcode and rcode not in (dns.rcode.NOTIMP, dns.rcode.FORMERR):
        raise Wrong(f"{dns.rcode.to_text(rcode)} to opcode {opcode}")
    return dns.rcode.to_text(rcode)


# -- the node they are sent to ----------------------------------------------------------------
ZONES = ("test.example.yaml", "steer.example.yaml")
NODE_CONFIG = """\
listen: [127.0.0.1:{port}]
zones: zones
workers: 1
admin: {{listen: "127.0.0.1:{admin}"}}
reload: {{interval: 60}}
geoip: {{database: null}}    # the GeoLite2 City file of maxminddb-geolite2
pops:
  fra: {{location: [50.11, 8.68]}}
  iad: {{location: [38.95, -77.45]}}
  sin: {{location: [1.35, 103.99]}}
  gru: {{location: [-23.43, -46.47]}}
  jnb: {{location: [-26.14, 28.25]}}
default_order: [iad, fra]
cookies: {{secrets: [e5e973e5a6b2a43f48e7dc849e37bfcf]}}  # the fuzzed COOKIE options meet the cookie stage
"""


def node_files(workdir: Path, port: int, admin: int = 0) -> Path:
    """A node's configuration in ``workdir``: the static zone and the
    steered one of tests/zones, five PoPs, one worker, DNS cookies on.
    Returns its path."""
    zones = workdir / "zones"
    zones.mkdir(exist_ok=True)
    for name in ZONES:
        shutil.copyfile(HERE / "zones" / name, zones / name)
    config = workdir / "geodns.yaml"
    config.write_text(NODE_CONFIG.format(port=port, admin=admin))
    return config


# -- sending them --------------------------------------------------------------------------------
class Barrage:
    """Sends packets of a run to ``host:port`` at a fixed rate (UDP on one
    connected socket, the TCP share pipelined on one connection, opened
    again when the server closes it).  An answer is paired with its query
    (by ID) as it arrives, so an answer must come within 65,536 packets of
    its query; the pairs are checked with :func:`check` later
    (:meth:`check_pending`, :meth:`finish`): a checking thread beside the
    sender would hold the GIL for milliseconds at a time and break the pace.

    Counts: ``sent``, ``due`` (packets that must get an answer: a header's
    length, QR clear), ``answered`` (``due_tcp`` and ``answered_tcp`` of
    them over TCP), ``rcodes``, ``wrong`` (index, kind,
    reason; at most :attr:`KEEP` kept, all counted in ``wrong_count``) and
    ``tcp_reconnects``."""

    KEEP = 50

    def __init__(self, host: str, port: int, seed: int) -> None:
        self.host, self.port, self.seed = host, port, seed
        self.sent = self.due = self.answered = self.wrong_count = self.tcp_reconnects = 0
        self.due_tcp = self.answered_tcp = 0
        self.rcodes: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.wrong: list[tuple[int, str, str]] = []
        self._udp_sent: dict[bytes, tuple[int, str, bytes]] = {}
        self._tcp_sent: dict[bytes, tuple[int, str, bytes]] = {}
        # (query sent: index, kind, bytes, or None; the answer; over TCP)
        self._todo: collections.deque[tuple[tuple[int, str, bytes] | None, bytes, bool]] = \
            collections.deque()
        self._stop = threading.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.udp.connect((host, port))
        self.udp.settimeout(0.1)
        self.tcp: socket.socket | None = None
        self._tcp_eof: socket.socket | None = None
        self._reader = threading.Thread(target=self._read_udp, daemon=True)
        self._reader.start()

    # the sender
    def run(self, start: int, count: int, rate: float) -> float:
        """Send packets ``start`` .. ``start + count - 1`` at ``rate`` a
        second; returns the seconds it took."""
        began = time.monotonic()
        for n, (i, kind, data, tcp) in enumerate(packets(self.seed, count, start)):
            due = began + n / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if len(data) >= 12 and not data[2] & 0x80:
                self.due += 1
                self.due_tcp += tcp
            if tcp:
                self._send_tcp(i, kind, data)
            else:
                if len(data) >= 2:
                    self._udp_sent[data[:2]] = (i, kind, data)
                with contextlib.suppress(OSError):  # ECONNREFUSED from an earlier send
                    self.udp.send(data)
            self.sent += 1
        return time.monotonic() - began

    def _send_tcp(self, i: int, kind: str, data: bytes) -> None:
        for _ in range(2):
            if self.tcp is not None and self._tcp_eof is self.tcp:  # the server closed it
                self.tcp.close()
                self.tcp = None
            if self.tcp is None:
                try:
                    self.tcp = socket.create_connection((self.host, self.port), timeout=2)
                except OSError:
                    return
                self.tcp_reconnects += 1
                threading.Thread(target=self._read_tcp, args=(self.tcp,), daemon=True).start()
            if len(data) >= 2:
                self._tcp_sent[data[:2]] = (i, kind, data)
            try:
                self.tcp.sendall(struct.pack("!H", len(data)) + data)
                return
            except OSError:
                self.tcp.close()
                self.tcp = None

    # the receivers
    def _read_udp(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.udp.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            self._todo.append((self._udp_sent.get(resp[:2]), resp, False))

    def _read_tcp(self, sock: socket.socket) -> None:
        buf = b""
        try:
            sock.settimeout(0.2)
        except OSError:  # the sender closed it before this thread began (the server had)
            self._tcp_eof = sock
            return
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + ((buf[0] << 8) | buf[1]):
                size = (buf[0] << 8) | buf[1]
                resp = buf[2 : 2 + size]
                self._todo.append((self._tcp_sent.get(resp[:2]), resp, True))
                buf = buf[2 + size :]
        self._tcp_eof = sock  # the sender closes it: it owns the socket

    def check_pending(self) -> None:
        """Check the answers received so far (between runs: see the class)."""
        self._check_all()

    def _check_all(self) -> None:
        while self._todo:
            sent, resp, tcp = self._todo.popleft()
            self.answered += 1
            self.answered_tcp += tcp
            if sent is None:
                self._wrong(-1, "?", "an answer whose ID matches no query sent")
                continue
            i, kind, query = sent
            try:
                rcode = check(query, resp, tcp)
            except Wrong as exc:
                self._wrong(i, kind, str(exc))
                continue
            self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1

    def _wrong(self, i: int, kind: str, reason: str) -> None:
        self.wrong_count += 1
        if len(self.wrong) < self.KEEP:
            self.wrong.append((i, kind, reason))

    def finish(self, linger: float = 1.0) -> None:
        """Wait ``linger`` seconds for the last answers, then stop reading,
        check what came and close the sockets."""
        time.sleep(linger)
        self._stop.set()
        self._reader.join(5)
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        self._check_all()
