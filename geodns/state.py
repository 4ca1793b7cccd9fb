"""The state file: administrative PoP states that outlive a process.

The admin API writes it (atomically: a temporary file, then rename); every
worker reads it when its signature changes, so a drain made through one
worker reaches all of them within a reload interval and survives restarts.
Format: ``{"version": 1, "pops": {"fra": "draining"}}``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from geodns.health.states import STATES

log = logging.getLogger("geodns.state")


def load(path: Path) -> dict[str, str]:
    """The admin states in the file; empty when there is no file.  A file that
    cannot be read or parsed is reported and treated as empty."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("state file %s not read: %s", path, exc)
        return {}
    pops = data.get("pops") if isinstance(data, dict) else None
    if not isinstance(pops, dict):
        log.error("state file %s: no 'pops' mapping", path)
        return {}
    return {str(k): v for k, v in pops.items() if isinstance(v, str) and v in STATES}


def save(path: Path, pops: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".geodns-state-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "pops": dict(sorted(pops.items()))}, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
