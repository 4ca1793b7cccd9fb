"""Logs: one line per event that matters, as text or as JSON.

Events that matter (start, listening, zone loads and reload errors, PoP
state changes, admin actions, errors) are logged at INFO or above; queries
are not, unless the sampled query log is switched on (see
:mod:`geodns.querylog`).  Call sites pass structured fields with
``extra={"event": "state-change", "pop": ..., ...}``: the text format shows
the message only, the JSON format adds every field to the object, so a log
shipper can index them without parsing messages.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")
# What every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds),
    level, logger, message, the caller's structured fields, and the
    exception when there is one."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(fmt: str, worker: str | None = None) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(worker)
    tag = f" {worker}" if worker else ""
    return logging.Formatter(f"%(asctime)s{tag} %(levelname)s %(name)s: %(message)s")


def setup(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log line to ``stream`` (stderr) in the chosen format."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def set_worker(index: int, fmt: str) -> None:
    """In a forked worker: tag every line with the worker's number."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(fmt, f"worker{index}"))
