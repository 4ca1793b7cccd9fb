"""No input grows memory without bound: the only caches on the query path
(per-node memos for rare types behind CNAMEs and wildcards) are bounded."""

from __future__ import annotations

import random
import struct
import tracemalloc

import dnscompare as dc


def _queries(rnd: random.Random, count: int) -> list[bytes]:
    bases = ["alias.test.example", "x.cwild.test.example", "www.test.example",
             "foo.wild.test.example", "deleg.test.example", "nothere.test.example"]
    out = []
    for _ in range(count):
        kind = rnd.random()
        if kind < 0.4:  # random types at names where rare types are memoised
            out.append(dc.query_wire(rnd.choice(bases), rnd.randrange(1, 65536)))
        elif kind < 0.7:  # random names: NXDOMAIN and wildcard synthesis
            label = f"{rnd.getrandbits(32):08x}"
            out.append(dc.query_wire(f"{label}.{rnd.choice(['test.example', 'cwild.test.example'])}",
                                     rnd.randrange(1, 300)))
        else:  # random bytes after a valid header
            out.append(struct.pack("!HHHHHH", rnd.getrandbits(16), 0, 1, 0, 0, 0)
                       + rnd.randbytes(rnd.randrange(0, 60)))
    return out


def test_memory_stays_bounded(responder) -> None:
    rnd = random.Random(5)
    warm = _queries(rnd, 15000)
    for q in warm:
        responder.respond(q)
    batch = _queries(rnd, 25000)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for q in batch:
            responder.respond(q)
            responder.respond(q, False)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 50k answers later, at most a few memo entries more: far below a byte a query.
    assert after - before < 200_000, after - before
