"""The state file: administrative PoP states that outlive a process.

The admin API writes it (atomically: a temporary file, then rename); every
worker reads it when its signature changes, so a drain made through one
worker reaches all of them within a reload interval and survives restarts.
Format: ``{"version": 1, "pops": {"fra": "draining"}, "node": {"drained": true, "who": ...,
"when": ..., "why": ...}}`` (``node``: the node is drained from anycast).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def load_node(path: Path) -> dict[str, Any] | None:
    """The node's own drain (who, when, why: it announces no anycast route),
    or None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    node = data.get("node") if isinstance(data, dict) else None
    return dict(node) if isinstance(node, dict) and node.get("drained") else None


def save_node(path: Path, drain: Mapping[str, Any] | None) -> None:
    """Keep (None: remove) the node's drain; the PoP states stay as they are."""
    _write(path, load(path), drain)


def save(path: Path, pops: Mapping[str, str]) -> None:
    """Keep the PoP states; the node's drain stays as it is."""
    _write(path, pops, load_node(path))


def _write(path: Path, pops: Mapping[str, str], node: Mapping[str, Any] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".geodns-state-", dir=path.parent)
    body: dict[str, Any] = {"version": 1, "pops": dict(sorted(pops.items()))}
    if node is not None:
        body["node"] = dict(node, drained=True)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
