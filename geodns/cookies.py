"""DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
what the *cookie* stage of the query path decides.  Pure: the time is
handed in.

Theory of operation: a client that speaks cookies sends an 8-byte client
cookie, and, once it has one from us, the server cookie we gave it.  A
server cookie that we can verify proves that the query came from the
address it says (an off-path attacker spoofing the address never saw our
answer), which is what lets such a query past response rate limiting.

The server cookie is RFC 9018's, so that every node of an anycast fleet,
and a Knot, BIND or PowerDNS beside them configured with the same secret,
accepts a cookie any of them made::

    Version 1 | Reserved 0 0 0 | Timestamp (32 bits, seconds) | Hash (8 bytes)
    Hash = SipHash-2-4(client cookie | version | reserved | timestamp
                       | client address (4 or 16 bytes), key = secret)

A server cookie verifies when its hash matches under one of the secrets
(the first mints, all verify: a rollover adds the new secret first and
keeps the old one for an hour) and its timestamp is at most an hour old and
at most five minutes ahead (RFC 9018 4.3, serial arithmetic on 32 bits).
A valid one is echoed, or replaced by a fresh one when it is older than
half an hour or was made with an older secret.  Every other case gets a
fresh one made with the first secret.

What the server then does with the verdict (FORMERR, BADCOOKIE, a normal
answer, a vouched one) is :meth:`geodns.wire.Responder.staged`'s.
"""

from __future__ import annotations

import hmac
import re
import struct
from collections.abc import Sequence
from enum import StrEnum

from siphash24 import siphash24

CODE = 10  # the EDNS option code (RFC 7873 4)
CLIENT_LEN = 8
SECRET_LEN = 16  # SipHash-2-4's 128-bit key
VERSION = 1
LIFETIME = 3600  # seconds: an older server cookie has expired (RFC 9018 4.3)
RENEW_AFTER = 1800  # seconds: an older one is replaced in the answer
MAX_AHEAD = 300  # seconds: a timestamp this far ahead is still accepted (clock skew)
_HEAD = struct.pack("!BBBB", VERSION, 0, 0, 0)
_HEX = re.compile(r"[0-9a-fA-F]*")


class Verdict(StrEnum):
    """What a query's COOKIE option turned out to be (the metric's label values)."""

    CLIENT_ONLY = "client-only"  # a client cookie alone: the client's first query to us
    VALID = "valid"  # a server cookie we made for this client and address, still fresh
    INVALID = "invalid"  # a server cookie we did not make (forged, another secret or address)
    EXPIRED = "expired"  # ours, but over an hour old or more than five minutes ahead
    MALFORMED = "malformed"  # not 8 bytes, nor 16 to 40 (RFC 7873 5.2.2): FORMERR


def well_formed(option: bytes) -> bool:
    """A client cookie alone (8 bytes), or with a server cookie of 8 to 32."""
    n = len(option)
    return n == CLIENT_LEN or 16 <= n <= 40


def age(timestamp: int, now: int) -> int:
    """Seconds from ``timestamp`` to ``now`` in 32-bit serial arithmetic
    (RFC 1982): negative when the timestamp is ahead."""
    d = (now - timestamp) & 0xFFFFFFFF
    return d - 0x100000000 if d & 0x80000000 else d


class Cookies:
    """Mints and verifies server cookies with the configured secrets."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(len(s) != SECRET_LEN for s in secrets):
            raise ValueError("cookie secrets: at least one, each of 16 bytes")
        self.secrets = tuple(secrets)

    def server_cookie(self, client: bytes, address: bytes, now: int) -> bytes:
        """A fresh server cookie for a client cookie and address, at ``now``
        (seconds since the epoch), made with the first secret."""
        head = _HEAD + struct.pack("!I", now & 0xFFFFFFFF)
        mac: bytes = siphash24(client + head + address, key=self.secrets[0]).digest()
        return head + mac

    def check(self, option: bytes, address: bytes, now: int) -> tuple[Verdict, bytes]:
        """The verdict on a query's COOKIE option data, and the COOKIE option
        (code, length and data) for the answer: the client cookie with the
        server cookie echoed or a fresh one (nothing for a malformed one)."""
        n = len(option)
        if n != CLIENT_LEN and not 16 <= n <= 40:
            return Verdict.MALFORMED, b""
        client = option[:CLIENT_LEN]
        verdict = Verdict.CLIENT_ONLY
        if n > CLIENT_LEN:
            verdict = Verdict.INVALID
            server = option[CLIENT_LEN:]
            if n == CLIENT_LEN + 16 and server[0] == VERSION:
                signed = client + server[:8] + address
                mac = server[8:]
                for i, secret in enumerate(self.secrets):
                    if hmac.compare_digest(siphash24(signed, key=secret).digest(), mac):
                        old = age(int.from_bytes(server[4:8], "big"), now)
                        if old > LIFETIME or old < -MAX_AHEAD:
                            verdict = Verdict.EXPIRED
                            break
                        if old <= RENEW_AFTER and i == 0:
                            return Verdict.VALID, struct.pack("!HH", CODE, n) + option
                        verdict = Verdict.VALID
                        break
        return verdict, struct.pack("!HH", CODE, CLIENT_LEN + 16) + client + \
            self.server_cookie(client, address, now)


def parse_secret(text: str) -> bytes:
    """A secret as an operator writes it: 32 hex characters, with or without
    Knot's ``0x`` in front.  Raises ValueError saying what is wrong."""
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if len(digits) != 2 * SECRET_LEN:
        raise ValueError(f"{len(digits)} characters; a secret is {2 * SECRET_LEN} hex "
                         "characters (128 bits), e.g. from: openssl rand -hex 16")
    if not _HEX.fullmatch(digits):
        raise ValueError("not hexadecimal (0-9, a-f)")
    return bytes.fromhex(digits)


__all__ = ["CODE", "Cookies", "Verdict", "age", "parse_secret", "well_formed"]
