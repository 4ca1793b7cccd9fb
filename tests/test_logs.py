"""Logs: JSON lines with structured fields, no per-query lines unless the
sampled query log is on, and the query log itself."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query

from geodns import logs
from geodns.config import load_config
from geodns.querylog import describe_query
from geodns.yamlsrc import Problems

ZONE = """\
origin: log.example.
soa: {mname: ns1, rname: h, serial: 3}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
"""


def test_json_formatter_keeps_structured_fields_and_exceptions() -> None:
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    try:
        log = logging.getLogger("geodns.test")
        log.info("state change pop=%s", "fra", extra={"event": "state-change", "pop": "fra",
                                                      "old": "up", "new": "down"})
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    finally:
        logs.setup("warning", "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["message"] == "state change pop=fra" and first["level"] == "info"
    assert first["logger"] == "geodns.test" and first["event"] == "state-change"
    assert (first["pop"], first["old"], first["new"]) == ("fra", "up", "down")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_log_settings_are_validated(tmp_path: Path) -> None:
    cfg_file = tmp_path / "geodns.yaml"
    cfg_file.write_text("log:\n  level: info\n  format: xml\n  query_sample: 2\n")
    problems = Problems()
    load_config(cfg_file, problems)
    text = "\n".join(map(str, problems))
    assert "geodns.yaml:3:11: log format must be text or json" in text
    assert "geodns.yaml:4:" in text and "query_sample" in text


def test_describe_query_reads_name_type_and_client_subnet() -> None:
    q = dns.message.make_query("WWW.Example.COM.", "AAAA")
    q.use_edns(0, options=[dns.edns.ECSOption("198.51.100.0", 22)])
    assert describe_query(q.to_wire()) == {"qname": "WWW.Example.COM.", "qtype": "AAAA",
                                           "ecs": "198.51.100.0/22"}
    assert describe_query(b"\x00" * 12 + b"\x05ab")["qname"] == "?"


def run_server(tmp_path: Path, log_section: str, queries: int) -> list[dict[str, Any]]:
    """Run ``geodns serve`` with JSON logs, ask it ``queries`` questions,
    stop it, and return its log lines (each must be a JSON object)."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "log.example.yaml").write_text(ZONE)
    cfg = tmp_path / "geodns.yaml"
    cfg.write_text(f"listen: [127.0.0.1:0]\nzones: zones\nlog:\n{log_section}")
    proc = subprocess.Popen([sys.executable, "-m", "geodns", "serve", "--lameduck", "0", "--config", str(cfg),
                             "--log-format", "json"], stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, Any]] = []
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            raw = proc.stderr.readline()
            if not raw:
                break
            lines.append(json.loads(raw))
            if lines[-1].get("event") == "listening":
                port = int(lines[-1]["address"].rsplit(":", 1)[1])
        assert port is not None, lines
        for i in range(queries):
            q = dns.message.make_query("ns1.log.example." if i % 2 else "nope.log.example.",
                                       "A")
            dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=10)
    lines += [json.loads(raw) for raw in rest.splitlines() if raw.strip()]
    assert proc.returncode == 0
    return lines


def test_json_logs_have_one_line_per_event_and_no_query_lines(tmp_path: Path) -> None:
    lines = run_server(tmp_path, "  level: info\n", queries=20)
    events = [line.get("event") for line in lines]
    assert events[0] == "start"
    assert "zone-loaded" in events and "listening" in events and events[-1] is None
    assert "stop" in events
    loaded = next(line for line in lines if line.get("event") == "zone-loaded")
    assert loaded["zone"] == "log.example." and loaded["serial"] == 3
    assert not [line for line in lines if line["logger"] == "geodns.query"]
    assert len(lines) < 15  # a handful of lines for a start, 20 queries and a stop


def test_sampled_query_log(tmp_path: Path) -> None:
    lines = run_server(tmp_path, "  level: info\n  query_sample: 0.25\n", queries=20)
    queries = [line for line in lines if line.get("event") == "query"]
    assert len(queries) == 5  # every fourth query
    for q in queries:
        assert q["client"] == "127.0.0.1" and q["transport"] == "udp"
        assert q["qname"] in ("ns1.log.example.", "nope.log.example.") and q["qtype"] == "A"
        assert q["rcode"] == ("NOERROR" if q["qname"].startswith("ns1") else "NXDOMAIN")
        assert q["size"] > 12
