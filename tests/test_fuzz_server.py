"""A real node under fuzzed packets (tests/fuzzpackets.py): 30,000 of them,
over UDP and a share over TCP, the same generator bench/fuzz.py sends a
million of.  Whatever comes in, the node keeps running, logs no traceback
and no internal error, every answer passes :func:`fuzzpackets.check`, and
a normal query is answered afterwards."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import fuzzpackets as fp
import pytest
from serveproc import Served, ask, free_port

SEED = 15
COUNT = 30_000
RATE = 8_000  # packets a second


def _tracebacks(node: Served) -> list[str]:
    return [f"{line.get('message')}\n{line.get('exception', '')}" for line in node.lines
            if "Traceback" in str(line.get("exception", "")) + str(line.get("message"))
            or "internal error" in str(line.get("message"))]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Served, int]]:
    port = free_port()
    config = fp.node_files(tmp_path, port)
    served = Served(["--config", str(config)], cwd=tmp_path)
    try:
        assert served.dns_port() == port
        yield served, port
    finally:
        served.stop()


def test_fuzzed_packets_are_answered_or_dropped(node: tuple[Served, int]) -> None:
    served, port = node
    steered = ask(port, "www.steer.example.", tries=5)
    assert steered is not None and steered.rcode() == dns.rcode.NOERROR
    barrage = fp.Barrage("127.0.0.1", port, SEED)
    try:
        barrage.run(0, COUNT, RATE)
    finally:
        barrage.finish()
    assert served.proc.poll() is None, "the node died:\n" + served.text()[-3000:]
    assert not _tracebacks(served), _tracebacks(served)[:3]
    assert barrage.wrong_count == 0, barrage.wrong
    assert sum(barrage.kinds.values()) == COUNT and len(barrage.kinds) == len(fp.KINDS)
    # Not a loss test (the machine is shared), but a node that stopped
    # answering half-way would show here.
    assert barrage.answered > 0.5 * barrage.due, (barrage.answered, barrage.due)
    for rcode in ("NOERROR", "FORMERR", "NOTIMP", "REFUSED", "BADVERS", "NXDOMAIN"):
        assert barrage.rcodes.get(rcode), (rcode, barrage.rcodes)
    after = ask(port, "www.test.example.", tries=5)
    assert after is not None and after.rcode() == dns.rcode.NOERROR and after.answer


def test_generator_is_deterministic() -> None:
    first = [fp.packet(7, i) for i in range(300)]
    assert first == [fp.packet(7, i) for i in range(300)]
    assert first != [fp.packet(8, i) for i in range(300)]
    assert fp.packet(7, 1234) == next(iter(fp.packets(7, 1, start=1234)))[1:]


@pytest.mark.parametrize(("query", "resp", "reason"), [
    (b"\x00\x01" + b"\x80" + bytes(9), b"\x00\x01\x80\x00" + bytes(8), "gets none"),
    (fp.packet(1, 5)[1], b"\xff\xff\x80\x00" + bytes(8), "ID"),
])
def test_check_can_fail(query: bytes, resp: bytes, reason: str) -> None:
    with pytest.raises(fp.Wrong, match=reason):
        fp.check(query, resp, False)


def test_check_rejects_servfail_and_a_changed_question() -> None:
    query = fp._query(fp._name("www.test.example."), 1)
    query[0:2] = b"\x12\x34"
    good = bytes(query[:2]) + b"\x84\x00" + bytes(query[4:])
    assert fp.check(bytes(query), good, False) == "NOERROR"
    with pytest.raises(fp.Wrong, match="SERVFAIL"):
        fp.check(bytes(query), good[:3] + b"\x02" + good[4:], False)
    other = good.replace(b"www", b"xxx")
    with pytest.raises(fp.Wrong, match="question"):
        fp.check(bytes(query), other, False)


def test_tcp_answers_queries_before_a_message_it_drops(node: tuple[Served, int]) -> None:
    """Found by the fuzzer: a query and a message too short to answer in one
    TCP segment closed the connection without the query's answer."""
    _, port = node
    query = bytes(fp._query(fp._name("www.test.example."), 1))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(struct.pack("!H", len(query)) + query + b"\x00\x05short")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    assert len(data) >= 2 and len(data) == 2 + struct.unpack("!H", data[:2])[0], data
    answer = dns.message.from_wire(data[2:])
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
