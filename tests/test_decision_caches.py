"""The per-client caches of the steer stage (geodns.decisions): bounded,
first in first out, and invisible to Python's cyclic collector once it has
passed over them, so that its full collections do not walk a full cache
(some 2 s for a million entries before; bench/memory_bound.py)."""

from __future__ import annotations

import gc

import pytest
from test_steering import addresses, ask, make

from geodns import decisions
from geodns.wire import Responder


def _fill(count: int, start: int = 0) -> Responder:
    r = make()
    for n in range(start, start + count):
        ask(r, "www.steer.example.", ecs=f"10.{1 + n % 5}.{n // 256 % 256}.{n % 256}/32")
    return r


def test_cached_entries_are_not_followed_by_the_collector() -> None:
    r = _fill(300)
    d = r.decisions
    assert len(d.cache) == 300 and len(d.places) == 300
    gc.collect()
    gc.collect()  # a tuple is let go once what it holds was let go: two passes at most
    for cache in (d.cache, d.places, d.by_location):
        assert type(cache) is dict and not gc.is_tracked(cache)
        assert not any(gc.is_tracked(k) or gc.is_tracked(v) for k, v in cache.items())
    # And the answers from the cache are those a fresh responder gives.
    for n in (0, 7, 299):
        ecs = f"10.{1 + n % 5}.{n // 256 % 256}.{n % 256}/32"
        assert addresses(ask(r, "www.steer.example.", ecs=ecs)) == \
            addresses(ask(make(), "www.steer.example.", ecs=ecs))


def test_caches_drop_their_oldest_entries_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decisions, "MAX_DECISIONS", 50)
    r = _fill(120)
    d = r.decisions
    assert len(d.cache) == 50 and len(d.places) == 50
    assert [len(o) for o in d.order] == [len(d.cache), len(d.places), len(d.by_location)]
    newest = set(list(d.cache)[-50:])
    assert set(d.cache) == newest == set(d.order[0])
    assert min(n for n, _, _ in d.cache.values()) >= 0 and len(d.answers) <= 5
    r.forget_decisions()
    assert not d.cache and not d.order[0] and not d.answers
    assert addresses(ask(r, "www.steer.example.", ecs="10.1.0.0/24")) == ["192.0.2.1"]
