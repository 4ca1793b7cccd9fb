"""The fast paths of zone loading give exactly what the general ones give:
addresses checked in C when already written as shown, names without
escapes split at once."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodns import names, rdata
from geodns.rdata import RDataError


def reference(version: int, text: str) -> bytes | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return addr.packed if addr.version == version else None


def ours(version: int, text: str) -> bytes | None:
    try:
        rd = (rdata.a if version == 4 else rdata.aaaa)(text)
    except RDataError:
        return None
    return rd.parts[0]


@pytest.mark.parametrize("text", [
    "192.0.2.1", " 192.0.2.1 ", "01.2.3.4", "1.2.3", "256.1.1.1", "1.2.3.4.5", "0x1.2.3.4",
    "2001:db8::1", "2001:DB8::1", "2001:0db8:0:0:0:0:0:1", "::ffff:1.2.3.4", "::ffff:102:304",
    "::", "::1", "fe80::1%eth0", "1::2::3", "2001:db8::1 ", "", "x"])
def test_addresses_as_ipaddress_reads_them(text: str) -> None:
    for version in (4, 6):
        assert ours(version, text) == reference(version, text), (version, text)


@given(st.ip_addresses())
def test_every_address_as_ipaddress_reads_it(addr: ipaddress.IPv4Address |
                                             ipaddress.IPv6Address) -> None:
    for text in (str(addr), addr.exploded):
        assert ours(addr.version, text) == reference(addr.version, text)


def slow_split(text: str) -> list[bytes] | str:
    try:
        return names._split_escaped(text)
    except names.NameError_ as exc:
        return str(exc)


@pytest.mark.parametrize("text", [
    "www.example.com", "www.example.com.", "", ".", "a..b", ".a", "a.", "*.x", "_sip._tcp.x.",
    "a.b.c.d.e.f"])
def test_names_split_as_the_loop_splits_them(text: str) -> None:
    try:
        fast: list[bytes] | str = names._split_text(text)
    except names.NameError_ as exc:
        fast = str(exc)
    assert fast == slow_split(text)
