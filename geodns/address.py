"""Listen and target addresses: ``192.0.2.1:53``, ``[2001:db8::1]:53``.

IPv6 addresses always go in brackets.  Without them ``::1:5300`` is both a
valid IPv6 address and, to a reader, ``::1`` on port 5300; whichever way it
were read, one of the two would be silently wrong, so it is refused.

Who supplies the port when the text has none is the caller's decision: a DNS
listen address means port 53, a DNS check target too; an admin address or a
TCP check target has no standard port and must give one (``default_port``
None).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from geodns.errors import GeodnsError

DNS_PORT = 53
_BRACKETS = "IPv6 addresses go in brackets: [::1] or [::1]:5300"


class MissingPort(GeodnsError, ValueError):
    """The address has no port and the caller has no default for it."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family_v6 else f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int | None = DNS_PORT) -> Address:
    """``192.0.2.1:53``, ``[::1]:53``, ``192.0.2.1`` or ``[::1]`` -> Address.

    Raises ValueError with a reason (MissingPort when the port is left out
    and ``default_port`` is None)."""
    text = text.strip()
    port = default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], text)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: brackets hold an IPv6 address, "
                             f"and {host!r} is not one") from None
    elif ":" in text:
        host, _, p = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: {_BRACKETS}")
        port = _port(p, text)
    else:
        host = text
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if port is None:
        raise MissingPort(f"{text!r} has no port (write HOST:PORT or [IPv6]:PORT)")
    return Address(host, port)


def _port(text: str, whole: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port must be a number 0..65535")
    return int(text)
