"""The operator's tool box: the Prometheus scrape configuration and alerting rules
(docs/prometheus) and the Grafana dashboard (docs/grafana).

promtool checks the configuration and the rules and runs the rules' unit tests; it also parses
every PromQL expression of the dashboard. Every metric name and label matcher used in a rule or
a panel is checked against what a real geodns server exports after some traffic (steered,
fail-open and SERVFAIL answers, TCP, truncation, malformed and short packets, failing probes,
admin requests), and, for the fleet and anycast metrics, against what the same server exports
with a made-up fleet and anycast routes (tests/fleetsample.py, tests/anycastsample.py), so a
renamed metric breaks this test instead of an alert silently never firing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anycastsample
import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import fleetsample
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from refservers import skip_or_fail

from geodns.config import Address, Config
from geodns.health.checker import HealthSettings
from geodns.health.probes import CheckSpec
from geodns.metrics import Metrics
from geodns.server.app import Server
from geodns.steering import Pop

ROOT = Path(__file__).parent.parent
PROMETHEUS = ROOT / "docs" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "geodns-dashboard.json"

# Families only a node in a fleet, or with anycast routes, exports: taken from the made-up ones.
SAMPLED = ("geodns_fleet_", "geodns_anycast_")
# Labels Prometheus adds to every series of a target (prometheus.yml), not geodns.
TARGET_LABELS = {"job", "instance", "node", "site"}
METRIC = re.compile(r"(?<![\w:])((?:geodns|process)_[A-Za-z0-9_:]*)")
SELECTOR = re.compile(r"(?<![\w:])((?:geodns|process)_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Label values that the test server cannot be made to produce over loopback.
UNPROVOKED = {("geodns_dns_dropped_packets_total", "reason", "send-failed")}
# Suffixes of the samples each metric type exposes.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("", "_sum", "_count"), "info": ("_info",)}


# -- promtool ---------------------------------------------------------------------------------

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        skip_or_fail("promtool is not installed (apt install prometheus)")
    return path


def run_promtool(*args: str | Path, cwd: Path | None = None) -> str:
    out = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{text}"
    return text


def test_scrape_config_is_valid_and_names_the_rules() -> None:
    out = run_promtool("check", "config", SCRAPE_CONFIG)
    assert "1 rule files found" in out, out  # alerts.yml was found and checked with it
    cfg = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "geodns"]
    assert job["metrics_path"] == "/metrics"
    groups = job["static_configs"]
    assert len(groups) >= 3
    for group in groups:
        assert {"node", "site"} <= set(group["labels"]), group
        for target in group["targets"]:
            assert target.endswith(":8053"), target  # the admin port of geodns.yaml


# -- alerting rules -----------------------------------------------------------------------------

def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_pass_promtool_check() -> None:
    out = run_promtool("check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in out, out


def test_alert_rules_unit_tests() -> None:
    out = run_promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS)
    assert "SUCCESS" in out, out


def test_every_alert_is_unit_tested_firing() -> None:
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired: set[str] = set()
    silent = 0
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert {"summary", "description"} <= set(alert["exp_annotations"]), case
            else:
                silent += 1
    assert {rule["alert"] for rule in alert_rules()} == fired
    assert silent >= 3  # and some look-alike series that must not fire


def test_alert_rules_have_durations_severities_and_instructions() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {"GeodnsDown", "GeodnsPopDown", "GeodnsPopFlapping", "GeodnsRecordAllPopsDown",
            "GeodnsZoneReloadFailing", "GeodnsZoneFileBroken", "GeodnsServfailRate",
            "GeodnsFailOpenAnswers", "GeodnsGeoipDatabaseOld"} <= set(names)
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]
    texts = " ".join(a for rule in rules for a in rule["annotations"].values())
    for command in ("geodns explain", "GET /status", "geodns drain {{ $labels.pop }}",
                    "geodns undrain {{ $labels.pop }}", "geodns check --config FILE"):
        assert command in texts, command
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["GeodnsDown"]["expr"].startswith('up{job="geodns"} == 0')


# -- the dashboard ------------------------------------------------------------------------------

def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # inside collapsed rows


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and template variable."""
    doc = dashboard()
    out = []
    for panel in all_panels(doc["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['id']} {panel['title']!r}", target["expr"]))
    for note in doc["annotations"]["list"]:
        if "expr" in note:
            out.append((f"annotation {note['name']!r}", note["expr"]))
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["definition"])
            assert m, var["definition"]
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def test_dashboard_structure() -> None:
    doc = dashboard()
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["uid"] and doc["title"]
    variables = {var["name"]: var for var in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "zone", "pop"):
        assert variables[name]["definition"].startswith("label_values("), name
    ids = [panel["id"] for panel in all_panels(doc["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used_cells: dict[tuple[int, int], str] = {}
    builtin = {"__rate_interval", "__interval", "__range"}
    for panel in all_panels(doc["panels"]):
        title = panel.get("title")
        assert title, panel["id"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, title
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in used_cells, f"{title!r} overlaps {used_cells[(x, y)]!r}"
                used_cells[(x, y)] = title
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("targets"), f"panel {title!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target["datasource"]["uid"] == "${datasource}", title
            for var in re.findall(r"\$\{?(\w+)", target["expr"]):
                assert var in variables or var in builtin, f"{title!r}: unknown ${var}"


def grafana_to_promql(expr: str) -> str:
    """What Prometheus receives from Grafana, near enough: durations for the interval
    variables and a regex matching everything for template variables."""
    for var, value in (("__rate_interval", "5m"), ("__interval", "1m"), ("__range", "1h")):
        expr = expr.replace("${" + var + "}", value).replace("$" + var, value)
    return re.sub(r"\$\{\w+\}|\$\w+", ".*", expr)


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(expr)}
             for i, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    try:
        run_promtool("check", "rules", path)
    except AssertionError as exc:
        index = "\n".join(f"rule {i}: {where}: {expr}" for i, (where, expr) in enumerate(exprs))
        raise AssertionError(f"{exc}\n{index}") from None
    panels = [p for p in all_panels(dashboard()["panels"]) if p["type"] != "row"]
    text = "\n".join(expr for _, expr in exprs)
    # Counters are only ever used through rate()/increase(), histograms through their buckets.
    for name in set(re.findall(r"\w+_total\b", text)):
        for m in re.finditer(re.escape(name) + r"\{[^}]*\}(\[[^\]]+\])?", text):
            assert m.group(1), f"{name} used without a range (rate/increase): {m.group(0)}"
    assert "histogram_quantile(" in text and "_bucket{" in text
    assert any(p["type"] == "heatmap" for p in panels)
    assert any(p["type"] == "state-timeline" for p in panels)


# -- metric names against a real server ----------------------------------------------------------

ZONE = """\
origin: ops.example.
soa: {mname: ns1, rname: hostmaster, serial: 3}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www:
    A:
      steer: {pops: {fra: 192.0.2.1, iad: 192.0.2.2}}
  only-iad:
    A:
      steer: {pops: {iad: 192.0.2.2}, all_down: fail-open}
  closed:
    A:
      steer: {pops: {iad: 192.0.2.2}, all_down: servfail}
  big:
    TXT:
""" + "".join(f'      - "{i:02d}{"x" * 200}"\n' for i in range(12))  # over 512 bytes: TC
TOKEN = "operator-docs-token-123"


@dataclass(frozen=True)
class Exported:
    names: frozenset[str]  # every sample name the scrape can hold
    labels: dict[str, dict[str, frozenset[str]]]  # sample name -> label -> values seen


def parse_exposition(text: str) -> Exported:
    names: set[str] = set()
    labels: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        # A labelled family with no sample yet still has its HELP/TYPE lines.
        names.update(family.name + s for s in SAMPLE_SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            names.add(sample.name)
            seen = labels.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                seen.setdefault(label, set()).add(value)
    return Exported(frozenset(names), {
        name: {label: frozenset(values) for label, values in seen.items()}
        for name, seen in labels.items()})


async def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _raw_udp(port: int, payload: bytes, reply: bool) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        if not reply:
            return None
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)


async def _busy_server_metrics(zones: Path) -> tuple[str, str]:
    """Start a server whose PoP fra is up and iad down, send it every kind of traffic, and
    return its /metrics, and the same with the made-up fleet of tests/fleetsample.py and the
    made-up anycast routes of tests/anycastsample.py."""
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    healthy = await asyncio.start_server(accept, "127.0.0.1", 0)
    fra_port = healthy.sockets[0].getsockname()[1]
    cfg = Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=zones,
                 admin=Address("127.0.0.1", 0), admin_token=TOKEN, reload_interval=0.2,
                 pops={"fra": Pop("fra", 50.1, 8.7, order=0),
                       "iad": Pop("iad", 38.9, -77.4, order=1)},
                 default_order=("fra", "iad"),
                 checks={"fra": [CheckSpec("tcp", f"127.0.0.1:{fra_port}", interval=0.1,
                                           timeout=0.5)],
                         "iad": [CheckSpec("tcp", "127.0.0.1:1", interval=0.1, timeout=0.05)]},
                 health=HealthSettings(grace=0.5))
    srv = Server(cfg)
    await srv.start()
    try:
        await _wait_for(lambda: srv.store.view().state("fra") == "up"
                        and srv.store.view().state("iad") == "down", "fra up and iad down")
        port = srv.bound[0].port

        async def ask(name: str, qtype: str = "A") -> dns.message.Message:
            query = dns.message.make_query(name, qtype, use_edns=False)
            return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)

        for _ in range(2):  # a cache miss, then a hit
            assert (await ask("www.ops.example.")).rcode() == dns.rcode.NOERROR
        assert (await ask("only-iad.ops.example.")).rcode() == dns.rcode.NOERROR  # fail-open
        assert (await ask("closed.ops.example.")).rcode() == dns.rcode.SERVFAIL
        assert (await ask("www.elsewhere.example.")).rcode() == dns.rcode.REFUSED
        assert (await ask("big.ops.example.", "TXT")).flags & dns.flags.TC
        answer = await dns.asyncquery.tcp(dns.message.make_query("ns1.ops.example.", "A"),
                                          "127.0.0.1", port=port, timeout=2)
        assert answer.rcode() == dns.rcode.NOERROR
        # A header announcing a question that is not there: FORMERR. Too short: dropped.
        formerr = await _raw_udp(port, bytes.fromhex("123401000001000000000000ff"), reply=True)
        assert formerr is not None and formerr[3] & 0x0F == dns.rcode.FORMERR
        await _raw_udp(port, b"\x00\x01\x02", reply=False)

        assert srv.admin is not None
        base = f"http://127.0.0.1:{srv.admin.port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/pops/fra/drain") as r:
                assert r.status == 401
            for action in ("drain", "undrain"):
                async with http.post(f"{base}/pops/fra/{action}", headers=auth) as r:
                    assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                text = await r.text()
        view = anycastsample.with_anycast(fleetsample.with_fleet(srv.view()))
        return text, Metrics(lambda: view).render().decode()
    finally:
        await srv.shutdown()
        healthy.close()
        await healthy.wait_closed()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    zones = tmp_path_factory.mktemp("zones")
    (zones / "ops.example.yaml").write_text(ZONE)
    # Its own event loop in its own thread, so that both tests below share one scrape.
    with ThreadPoolExecutor(max_workers=1) as pool:
        text, sample = pool.submit(asyncio.run, _busy_server_metrics(zones)).result(timeout=90)
    served, sampled = parse_exposition(text), parse_exposition(sample)
    assert not [n for n in served.names if n.startswith(SAMPLED)]
    names = {n for n in sampled.names if n.startswith(SAMPLED)}
    for prefix in SAMPLED:
        assert [n for n in names if n.startswith(prefix)], prefix
    return Exported(served.names | names, served.labels | {
        n: seen for n, seen in sampled.labels.items() if n in names})


def promql_sources() -> list[tuple[str, str]]:
    return ([(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
            + dashboard_exprs())


def test_promql_uses_only_exported_metrics(exported: Exported) -> None:
    used: dict[str, list[str]] = {}
    for where, expr in promql_sources():
        for name in METRIC.findall(expr):
            used.setdefault(name, []).append(where)
    assert len(used) >= 25  # a sanity check of the extraction itself
    missing = sorted(set(used) - exported.names)
    assert not missing, "metrics used but not exported by geodns:\n" + "\n".join(
        f"  {name}  (in {', '.join(sorted(set(used[name])))})" for name in missing)


def test_promql_label_matchers_exist(exported: Exported) -> None:
    """Label names in selectors exist on the metric, and the values they ask for are values
    the server gives (checked where the server exported at least one sample of the metric)."""
    wrong: set[str] = set()
    for where, expr in promql_sources():
        for name, matchers in SELECTOR.findall(expr):
            seen = exported.labels.get(name)
            if seen is None:
                continue
            for label, op, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS:
                    continue
                if label not in seen:
                    wrong.add(f"  {where}: {name} has no label {label!r} "
                              f"(it has {', '.join(sorted(seen)) or 'none'})")
                    continue
                if op == "=~" and re.fullmatch(r"[\w.-]+(\|[\w.-]+)*", value):
                    wanted = value.split("|")
                elif op == "=" and "$" not in value:
                    wanted = [value]
                else:
                    continue  # a real regex, a negation or a Grafana variable
                for v in wanted:
                    if v not in seen[label] and (name, label, v) not in UNPROVOKED:
                        wrong.add(f"  {where}: {name}{{{label}={v!r}}} never seen (values: "
                                  f"{', '.join(sorted(seen[label]))})")
    assert not wrong, "label matchers that do not match what geodns exports:\n" + "\n".join(
        sorted(wrong))
