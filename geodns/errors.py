"""The root of geodns's own exceptions.

Every error geodns raises on purpose derives from :class:`GeodnsError` and
knows how it ends: a command's exit status, or for a query the rcode it is
answered with (:class:`geodns.parse.QueryError` and its kinds: FORMERR,
NOTIMP, BADVERS).
"""

from __future__ import annotations


class GeodnsError(Exception):
    """Something geodns reports to an operator rather than a bug."""

    exit_status = 1


class StartupError(GeodnsError):
    """``geodns serve`` cannot start as configured: it names the file or the
    address, and nothing is served."""

    exit_status = 1


__all__ = ["GeodnsError", "StartupError"]
