"""The ``geodns`` command's entry point: for ``serve``, SIGHUP is made
harmless (:mod:`geodns.early`) before anything else is imported."""

from __future__ import annotations

import sys


def main() -> int:
    if "serve" in sys.argv[1:2]:
        from geodns import early

        early.install()
    from geodns.cli import main as cli_main

    return cli_main()


__all__ = ["main"]
