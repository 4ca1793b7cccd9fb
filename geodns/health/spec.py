"""A health check as configured: what to probe, how often, and what counts
as healthy.  Plain data (the zone model and steering keep it too), so no
network code here: :mod:`geodns.health.probes` runs it."""

from __future__ import annotations

from dataclasses import dataclass

from geodns.health.votes import DEFAULT_POLICY, Policy


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One check, hashable so that identical checks run once."""

    kind: str  # "http" (http:// or https:// URL), "tcp", "dns"
    target: str  # URL, HOST:PORT, or DNS server HOST:PORT
    interval: float = 1.0
    timeout: float = 0.8
    rise: int = 2
    fall: int = 2
    jitter: float = 0.1
    method: str = "GET"
    host: str | None = None  # Host header
    expect: tuple[int, ...] = (200,)
    contains: str | None = None
    verify_tls: bool = True
    name: str | None = None  # DNS: the question
    qtype: str = "A"
    rcode: str = "NOERROR"
    answer: str | None = None  # DNS: text one answer record must have

    def describe(self) -> str:
        if self.kind == "dns":
            return f"dns {self.name} {self.qtype} @{self.target}"
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class HealthSettings:
    """The ``health:`` settings that are not per check."""

    grace: float = 5.0  # seconds a PoP counts as up before its first verdict
    slow_ms: float = 250.0  # probe RTT above which a PoP's score is penalised
    concurrency: int = 64  # probes in flight at once
    flap_window: float = 60.0  # seconds isolated failures are remembered (0: no damping)
    up_votes: Policy = DEFAULT_POLICY  # a fleet's verdict from its nodes' votes
