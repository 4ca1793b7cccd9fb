"""Response rate limiting (RRL): the settings, and the limiter a server keeps.

The limiting itself is C (:class:`geodns._udpbatch.RateLimiter`, whose
comment is the theory of operation): one ``filter`` call per batch of UDP
answers, in :meth:`geodns.server.transport.DatagramHandler.answer_all`, so
that a Python call per answer does not cost a fifth of a fast-path query.
TCP answers never go through it, nor do answers that are not exactly
``bytes`` (:class:`geodns.wire.Vouched`: the query proved its address).

A server keeps its limiter across reloads while ``rate_limit`` is unchanged
(:class:`Limiting`); a changed one is replaced by a new, empty table, and the
old one's counts are kept so that the counters only grow.  Why these classes,
keys and defaults: docs/abuse.md, "Response rate limiting".
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geodns._udpbatch import RateLimiter

_udpbatch: ModuleType | None
try:
    import geodns._udpbatch as _udpbatch
except ImportError:  # pragma: no cover - the C helper is built wherever a compiler is
    _udpbatch = None

# The classes of answers, in the order of the C helper's CLASSES (checked by tests).
CLASSES = ("positive", "nodata", "nxdomain", "referral", "error", "large")
ACTIONS = ("dropped", "truncated")
TOP = 10  # networks shown on the status page
NO_HELPER = ("rate_limit needs the C helper geodns._udpbatch, which is not built here: it "
             "needs a C compiler and the Python headers when geodns is installed (apt install "
             "gcc python3-dev, then install geodns again); or remove rate_limit")


@dataclass(frozen=True)
class RateLimitConfig:
    """``rate_limit:`` (docs/configuration.md); absent: no rate limiting."""

    rate: int = 20  # answers a second per network, class (and name), as many in a burst
    slip: int = 2  # every slip-th limited answer goes out truncated; 0: all dropped
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    table_size: int = 393216  # entries (16 bytes each): 6 MiB a worker
    exempt: tuple[str, ...] = ()  # networks never limited
    class_rates: tuple[tuple[str, int], ...] = ()  # (class, rate) instead of ``rate``

    def rates(self) -> tuple[int, ...]:
        """The rate of each class, in the order of :data:`CLASSES`."""
        given = dict(self.class_rates)
        return tuple(given.get(c, self.rate) for c in CLASSES)


def available() -> bool:
    """Whether this installation can limit (the C helper is built)."""
    return _udpbatch is not None and hasattr(_udpbatch, "RateLimiter")


class Limiting:
    """A server's rate limiter (None: off), kept while its settings are the
    same, and the counts of the limiters it replaced."""

    def __init__(self) -> None:
        self.config: RateLimitConfig | None = None
        self.limiter: RateLimiter | None = None
        self.before: dict[tuple[str, str], int] = {}

    def use(self, cfg: RateLimitConfig | None) -> bool:
        """Limit as ``cfg`` says; True when the limiter was made or replaced
        (a changed configuration), False when it is kept."""
        if cfg == self.config:
            return False
        made: RateLimiter | None = None
        if cfg is not None:
            if _udpbatch is None or not available():  # refused by the configuration check
                raise RuntimeError(NO_HELPER)
            made = _udpbatch.RateLimiter(  # first: a failure here changes nothing
                cfg.rate, cfg.slip, cfg.ipv4_prefix, cfg.ipv6_prefix, cfg.table_size,
                cfg.exempt, cfg.rates())
        if self.limiter is not None:
            for key, n in self.limiter.counters().items():
                self.before[key] = self.before.get(key, 0) + n
        self.config = cfg
        self.limiter = made
        return True

    def counters(self) -> dict[tuple[str, str], int]:
        """Limited answers by (class, action) since the server started."""
        out = dict(self.before)
        if self.limiter is not None:
            for key, n in self.limiter.counters().items():
                out[key] = out.get(key, 0) + n
        return out

    def top(self, n: int = TOP) -> list[tuple[str, int]]:
        """The networks with the most limited answers in the last minute or so."""
        return self.limiter.top(n) if self.limiter is not None else []

__all__ = ["ACTIONS", "CLASSES", "TOP", "Limiting", "RateLimitConfig", "available"]
