"""geodns: an authoritative DNS server that steers clients to the closest healthy PoP."""

__version__ = "0.1.0"
