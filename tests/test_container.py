"""The container image (docker/Dockerfile) and docker/compose.yaml (issue 13).

With podman, as root (the recipe of docker/README.md: the runc runtime, explicit ulimits, a
local Debian base made by debootstrap when ``localhost/debian:bookworm-slim`` is missing), the
image is built once per run (podman's layer cache makes an unchanged build take seconds) and
run twice:

* on the host's network, as an operator with their own files would: a configuration directory
  mounted read-only (free ports: DNS on a free *privileged* port, which the non-root user gets
  through ``--cap-add NET_BIND_SERVICE``), a GeoIP database mounted and named in
  ``geoip.database``, a state volume, JSON logs; then ``podman stop`` must end it gracefully
  (exit 0) within the default 10 s;
* on podman's bridge network with the image's own configuration, unchanged: port 53 inside
  the container through the ``net.ipv4.ip_unprivileged_port_start=0`` sysctl, published on a
  loopback port, the bundled GeoLite2 database, the HEALTHCHECK's default URL; and without the
  sysctl it must refuse to start (the process is not root).

Answers are checked with dnspython over UDP and TCP. Without podman (or root) these skip,
and fail instead with GEODNS_REQUIRE_REFERENCE=1 (.ci/run). The image size and the build
time are printed (``pytest -s``).

docker/compose.yaml cannot be run here (no compose, no registry for the Prometheus, Grafana
and etcd images): its structure is checked instead, without podman: every mounted file exists,
ports, service names and paths agree with the configurations they point at.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml
from refservers import find_binary, free_port, require_binary, skip_or_fail

from geodns.cli import main as geodns_main

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
IMAGE_CONFIG = DOCKER / "geodns.yaml"

BASE = "localhost/debian:bookworm-slim"
TAG = "localhost/geodns:test"
# The sandbox refuses podman's default limits (docker/README.md); a production node wants
# more open files than this (tcp.max_connections is 1000 by default).
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")  # the TLS proxy's CA is in it here
UID = 5353
TOKEN = "container-test-token-0123456789"
STOP_TIMEOUT = 10  # docker stop's and podman stop's default
LAMEDUCK = 6  # the host-network test's: time enough to see the node not ready but answering

pytestmark = pytest.mark.container


PODMAN = ["podman", "--runtime", "runc"]  # crun, podman's default, fails here


def _podman(*args: str, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# -- the image, built once ------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    id: str
    inspect: dict[str, Any]


def _make_base() -> None:
    """The Dockerfile's default base, made from Debian's archive (no registry here)."""
    if not find_binary("debootstrap"):
        skip_or_fail(f"{BASE} is missing and debootstrap, which makes it, is not installed "
                     "(apt install debootstrap)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="geodns-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}{proc.stderr}"
        # What debootstrap downloaded: not part of a slim base (every stage runs apt-get update).
        for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"),
                         *rootfs.glob("var/lib/apt/lists/*_*")]:
            leftover.unlink()
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."],
                              stdout=subprocess.PIPE) as tar:
            imported = subprocess.run([*PODMAN, "import", "-", BASE], stdin=tar.stdout,
                                      capture_output=True, text=True, timeout=600)
        assert tar.returncode == 0 and imported.returncode == 0, imported.stderr
    print(f"\nbase image {BASE} made with debootstrap in {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def image() -> Image:
    if os.geteuid() != 0:
        skip_or_fail("the container tests run podman as root (docker/README.md)")
    for tool in ("podman", "runc"):
        if not find_binary(tool):
            skip_or_fail(f"{tool} not installed (apt install podman runc debootstrap)")
    if _podman("image", "exists", BASE, check=False).returncode != 0:
        _make_base()
    build = ["build", "--format", "docker",  # the OCI format has no HEALTHCHECK
             "--network", "host", *ULIMITS, "--build-arg", f"BASE={BASE}",
             "-f", str(DOCKERFILE), "-t", TAG]
    if HOST_CA.is_file():
        build += ["--volume", f"{HOST_CA}:/host-ca.crt:ro", "--build-arg", "PIP_CERT=/host-ca.crt"]
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        started = time.monotonic()
        _podman(*build, "--iidfile", str(iidfile), str(ROOT), timeout=1200)
        took = time.monotonic() - started
        image_id = iidfile.read_text().strip()
    # By id: another checkout building the same tag at the same time cannot swap it under us.
    inspect = json.loads(_podman("image", "inspect", image_id).stdout)[0]
    base_size = int(_podman("image", "inspect", "--format", "{{.Size}}", BASE).stdout)
    size = int(inspect["Size"])
    short = image_id.removeprefix("sha256:")[:12]
    print(f"\nimage {TAG} ({short}) built in {took:.0f} s (podman's layer cache kept); "
          f"size {size / 1e6:.0f} MB, of which the base {base_size / 1e6:.0f} MB and "
          f"geodns's layers {(size - base_size) / 1e6:.0f} MB")
    return Image(image_id, inspect)


@pytest.mark.timeout(1500)  # the first build: debootstrap and the image, a few minutes
def test_image_metadata_and_contents(image: Image) -> None:
    config = image.inspect["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["geodns"]
    assert config["Cmd"] == ["serve", "--config", "/etc/geodns/geodns.yaml"]
    assert set(config["ExposedPorts"]) == {"53/udp", "53/tcp", "8053/tcp"}
    assert set(config["Volumes"]) == {"/etc/geodns", "/var/lib/geodns"}
    assert config["StopSignal"] == "SIGTERM"
    health = image.inspect["Healthcheck"]
    assert health["Test"][0] == "CMD" and "GEODNS_HEALTHCHECK_URL" in health["Test"][-1]
    assert "GEODNS_HEALTHCHECK_URL=http://127.0.0.1:8053/readyz" in config["Env"]

    probe = """
import glob, json, os, shutil
import geodns._udpbatch, geolite2
print(json.dumps({
    "uid": os.getuid(),
    "compilers": [c for c in ("gcc", "cc", "cpp", "x86_64-linux-gnu-gcc-12")
                  if shutil.which(c)],
    "headers": glob.glob("/usr/include/python3*/Python.h"),
    "pip": shutil.which("pip") or shutil.which("pip3"),
    "geolite2": geolite2.__file__,
}))
"""
    out = _podman("run", "--rm", *ULIMITS, "--network", "none", "--entrypoint",
                  "/opt/geodns/bin/python", image.id, "-c", probe).stdout
    found = json.loads(out.splitlines()[-1])
    assert found["uid"] == UID
    assert found["compilers"] == [], "the final image must not have a compiler"
    assert found["headers"] == [], "the final image must not have python3-dev"
    assert found["pip"] is None
    assert found["geolite2"].startswith("/opt/geodns/")
    packages = _podman("run", "--rm", *ULIMITS, "--network", "none", "--entrypoint",
                       "dpkg-query", image.id, "-W", "-f", "${Package}\n").stdout.split()
    assert "python3" in packages
    built_only = {"gcc", "gcc-12", "cpp", "python3-dev", "libpython3.11-dev", "python3-venv",
                  "libc6-dev"}
    assert built_only.isdisjoint(packages), sorted(built_only & set(packages))


# -- running it -----------------------------------------------------------------------------


@contextmanager
def _container(*run_args: str) -> Iterator[str]:
    """A container started detached; stopped and removed (with its anonymous volumes) on the
    way out, whatever happens. Yields its name."""
    name = f"geodns-test-{uuid.uuid4().hex[:10]}"
    try:
        _podman("run", "-d", "--name", name, *ULIMITS, *run_args)
        yield name
    finally:
        _podman("rm", "--force", "--volumes", "--time", "2", name, check=False, timeout=60)


def _logs(name: str) -> str:
    proc = _podman("logs", name, check=False)
    return "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                     if "systemd" not in line)  # podman's healthcheck timers need systemd


def _running(name: str) -> bool:
    out = _podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout
    return out.strip() == "true"


def _http(url: str, *, method: str = "GET", token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_ready(name: str, admin: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        with suppress(OSError):
            status, body = _http(f"http://{admin}/readyz")
            if status == 200:
                return
            last = f"{status} {body}"
        if not _running(name):
            pytest.fail(f"the container stopped:\n{_logs(name)}")
        time.sleep(0.3)
    pytest.fail(f"not ready within {timeout} s ({last}):\n{_logs(name)}")


def _ask(host: str, port: int, qname: str, rdtype: str = "A", *, tcp: bool = False,
         ecs: str | None = None, rdclass: str = "IN") -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if ecs:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(qname, rdtype, rdclass, use_edns=0, options=options)
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=3)
    return dns.query.udp(query, host, port=port, timeout=3)


def _addresses(response: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in response.answer for rd in rrset}


def _check_answers(host: str, port: int) -> None:
    for tcp in (False, True):
        response = _ask(host, port, "static.example.com", tcp=tcp)
        assert response.flags & dns.flags.AA
        assert _addresses(response) == {"192.0.2.10", "192.0.2.11"}, response
        cname = _ask(host, port, "ftp.example.com", tcp=tcp)
        assert "static.example.com." in {rd.to_text() for rr in cname.answer for rd in rr}


def _free_privileged_port() -> int:
    """A port below 1024 free on 127.0.0.1 and [::1] for UDP and TCP right now (we are root)."""
    candidates = list(range(600, 1000))
    random.shuffle(candidates)
    for port in candidates:
        try:
            for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(family, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no free privileged port on loopback")


@pytest.mark.timeout(300)
def test_host_network_with_mounted_configuration(image: Image, tmp_path: Path) -> None:
    """An operator's set-up: their configuration (read-only), a current GeoIP database, the
    drains volume; the host's network, so port 53 (here a free privileged port) needs
    CAP_NET_BIND_SERVICE, which podman gives the non-root user as an ambient capability."""
    # Imported by name: mypy --strict would follow it into netaddr, which has no types.
    write = importlib.import_module("tests.geoip.make_mmdb").write
    dns_port, admin_port = _free_privileged_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    etc, state, geoip = tmp_path / "etc", tmp_path / "state", tmp_path / "geoip"
    for d in (etc, state, geoip):
        d.mkdir()
        d.chmod(0o755)
    os.chown(state, UID, UID)
    shutil.copytree(ROOT / "zones", etc / "zones")
    # 198.18.0.0/15 is in Frankfurt only in this database; GeoLite2 does not place it.
    write(geoip / "test.mmdb", {"198.18.0.0/15": "frankfurt"})
    config = yaml.safe_load(IMAGE_CONFIG.read_text())
    config["listen"] = [f"127.0.0.1:{dns_port}", f"[::1]:{dns_port}"]
    config["admin"]["listen"] = admin
    config["admin"]["token"] = TOKEN
    config["geoip"]["database"] = "/var/lib/GeoIP/test.mmdb"
    (etc / "geodns.yaml").write_text(yaml.safe_dump(config))
    for path in etc.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    with _container("--network", "host", "--cap-add", "NET_BIND_SERVICE",
                    "-v", f"{etc}:/etc/geodns:ro", "-v", f"{state}:/var/lib/geodns",
                    "-v", f"{geoip}:/var/lib/GeoIP:ro",
                    "-e", f"GEODNS_HEALTHCHECK_URL=http://{admin}/readyz",
                    image.id, "serve", "--config", "/etc/geodns/geodns.yaml",
                    "--log-format", "json", "--lameduck", str(LAMEDUCK)) as name:
        _wait_ready(name, admin)
        _check_answers("127.0.0.1", dns_port)
        _check_answers("::1", dns_port)
        steered = _ask("127.0.0.1", dns_port, "www.example.com", ecs="198.18.7.0/24")
        assert _addresses(steered) == {"192.0.2.11"}, "fra, from the mounted database"

        status, metrics = _http(f"http://{admin}/metrics")
        assert status == 200
        tcp_answers = r'^geodns_dns_queries_total\{.*transport="tcp".*\} [1-9]'
        assert re.search(tcp_answers, metrics, re.M), metrics[:2000]
        top = _podman("top", name, "user", "pid", "args").stdout
        assert re.search(r"^geodns\s+1\s+.*geodns serve", top, re.M), top
        assert _podman("exec", name, "id", "-u").stdout.strip() == str(UID)
        health = _podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{_logs(name)}"

        # geodns restart: the node is the container's process 1, which cannot hand over
        # (the container would end with it): refused, and the node goes on serving.
        done = _podman("exec", name, "geodns", "restart", "--config", "/etc/geodns/geodns.yaml",
                       check=False)
        assert done.returncode == 1 and "process 1" in done.stderr, done
        assert _running(name)
        _check_answers("127.0.0.1", dns_port)

        status, body = _http(f"http://{admin}/pops/fra/drain", method="POST", token=TOKEN)
        assert status == 200, body
        assert "fra" in (state / "state.json").read_text(), "drains are kept in the volume"

        # SIGTERM: not ready at once (the healthcheck fails), still answering (lameduck),
        # then a clean exit.
        _podman("kill", "--signal", "TERM", name)
        started = time.monotonic()
        health = _podman("healthcheck", "run", name, check=False)
        assert health.returncode != 0, "unhealthy from the moment a stop begins"
        _check_answers("127.0.0.1", dns_port)
        exit_code = _podman("wait", name, timeout=LAMEDUCK + 30).stdout.strip()
        took = time.monotonic() - started
        logs = _logs(name)
        assert exit_code == "0", f"not a clean stop (exit {exit_code}):\n{logs}"
        assert LAMEDUCK - 0.5 < took < LAMEDUCK + 5, f"stopped after {took:.1f} s"
        events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        assert events, logs
        assert any(e.get("message", "").startswith("stopping: lameduck") for e in events), logs


@pytest.mark.timeout(300)
def test_bridge_network_with_the_image_configuration(image: Image) -> None:
    """`docker run -p 53:53/udp ...` as docker/README.md says: the image's own configuration
    (port 53 inside, admin on 0.0.0.0:8053, the bundled GeoLite2), the sysctl that lets the
    non-root user bind port 53 in the container's own network namespace."""
    dns_port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    with _container("--hostname", "geodns-test-node",
                    "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
                    "-p", f"127.0.0.1:{dns_port}:53/udp", "-p", f"127.0.0.1:{dns_port}:53/tcp",
                    "-p", f"{admin}:8053/tcp", image.id) as name:
        _wait_ready(name, admin)
        _check_answers("127.0.0.1", dns_port)
        steered = _ask("127.0.0.1", dns_port, "www.example.com", ecs="200.160.0.0/24", tcp=True)
        assert _addresses(steered) == {"203.0.113.11"}, "Brazil -> gru (bundled GeoLite2)"
        identity = _ask("127.0.0.1", dns_port, "id.server", "TXT", rdclass="CH")
        assert _addresses(identity) == {'"geodns-test-node"'}, "chaos.identity: the hostname"
        health = _podman("healthcheck", "run", name, check=False)
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{_logs(name)}"
        status = _podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout
        assert status.strip() == "healthy"
        logs = _logs(name)
        assert "listening on 0.0.0.0:53" in logs and "listening on [::]:53" in logs, logs

        # What `docker stop` does: SIGTERM (STOPSIGNAL), SIGKILL after 10 s. The lameduck of
        # the image's configuration (3 s) must end well before.
        started = time.monotonic()
        _podman("stop", name, timeout=STOP_TIMEOUT + 30)
        took = time.monotonic() - started
        exit_code = _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0", f"not a clean stop (exit {exit_code}):\n{_logs(name)}"
        assert took < STOP_TIMEOUT - 3, f"podman stop took {took:.1f} s: too close to the kill"
        print(f"\npodman stop: clean (exit 0) in {took:.1f} s")

    # Without the sysctl the non-root user cannot bind port 53, and says so.
    refused = _podman("run", "--rm", *ULIMITS, image.id, check=False, timeout=120)
    assert refused.returncode != 0
    assert "cannot listen on 0.0.0.0:53" in refused.stderr, refused.stderr
    assert "Permission denied" in refused.stderr, refused.stderr


# -- docker/compose.yaml, parsed (no compose here) ------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> bind source (resolved on the host), or the named volume."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = str((DOCKER / source).resolve())
        else:
            out[target] = source
    return out


def _published(service: dict[str, Any]) -> dict[str, str]:
    """Container port/protocol -> the host address it is published on."""
    out: dict[str, str] = {}
    for port in service.get("ports", []):
        *host, inner = port.split(":")
        if "/" not in inner:
            inner += "/tcp"
        out.setdefault(inner, ":".join(host))
    return out


def _geodns_servers() -> dict[str, Path]:
    """Every service that runs `geodns serve`, and the configuration file it serves."""
    out = {}
    for name, service in _services().items():
        if service.get("image") != "localhost/geodns:latest" or "entrypoint" in service:
            continue
        mounted = _mounts(service).get("/etc/geodns/geodns.yaml")
        out[name] = Path(mounted) if mounted else IMAGE_CONFIG
    return out


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_compose_mounts_exist_and_volumes_are_declared() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source} (for {target}) is missing"
                assert Path(source).is_relative_to(ROOT), f"{name}: {source} outside the repo"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        if "build" in service:
            assert (DOCKER / service["build"]["context"]).resolve() == ROOT
            assert (ROOT / service["build"]["dockerfile"]) == DOCKERFILE
    # The tool box is mounted from docs/, not copied.
    mounts = {t: s for svc in compose["services"].values() for t, s in _mounts(svc).items()}
    assert mounts["/etc/prometheus/alerts.yml"] == str(ROOT / "docs/prometheus/alerts.yml")
    dashboard = str(ROOT / "docs/grafana/geodns-dashboard.json")
    assert dashboard in mounts.values()


def test_compose_geodns_ports_agree_with_their_configurations(tmp_path: Path) -> None:
    services = _services()
    servers = _geodns_servers()
    assert set(servers) == {"geodns", "node-a", "node-b", "node-c"}
    for name, path in servers.items():
        service = services[name]
        config = yaml.safe_load(path.read_text())
        dns_ports = {_port(a) for a in config["listen"]}
        admin_port = _port(config["admin"]["listen"])
        assert dns_ports == {53}, f"{name}: {path} listens on {dns_ports}"
        published = _published(service)
        assert {"53/udp", "53/tcp", f"{admin_port}/tcp"} <= set(published), (name, published)
        for inner, host in published.items():
            assert host.startswith("127.0.0.1:"), f"{name}: {inner} published beyond loopback"
        assert config["admin"]["listen"].startswith("0.0.0.0:"), f"{name}: admin unreachable"
        # Port 53 as the non-root user, and a stop within the grace period.
        assert service["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 0
        lameduck = config.get("lifecycle", {}).get("lameduck", 3)
        assert int(service["stop_grace_period"].rstrip("s")) > lameduck + 5
        if "fleet" in config:
            assert service["profiles"] == ["fleet"]
            assert service["depends_on"]["publish"]["condition"] == \
                "service_completed_successfully"
        else:
            assert "profiles" not in service
    # The image's own configuration is valid with the example zones, as the image builds it.
    shutil.copy(IMAGE_CONFIG, tmp_path / "geodns.yaml")
    shutil.copytree(ROOT / "zones", tmp_path / "zones")
    assert geodns_main(["check", "--config", str(tmp_path / "geodns.yaml")]) == 0
    for name in ("node-a", "node-b", "node-c"):
        assert geodns_main(["check", "--config", str(servers[name])]) == 0, name


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def test_compose_fleet_names_agree() -> None:
    services = _services()
    etcd = {name: _flags(s["command"]) for name, s in services.items() if name.startswith("etcd")}
    assert len(etcd) == 3
    client_urls = set()
    for name, flags in etcd.items():
        assert flags["name"] == name
        assert flags["advertise-client-urls"] == f"http://{name}:2379"
        assert flags["initial-advertise-peer-urls"] == f"http://{name}:2380"
        assert _port(flags["listen-client-urls"]) == 2379
        members = dict(m.split("=") for m in flags["initial-cluster"].split(","))
        assert members == {n: f"http://{n}:2380" for n in etcd}
        assert services[name]["profiles"] == ["fleet"]
        client_urls.add(flags["advertise-client-urls"])
    servers = _geodns_servers()
    for node in ("node-a", "node-b", "node-c"):
        fleet = yaml.safe_load(servers[node].read_text())["fleet"]
        assert set(fleet["etcd"]) == client_urls, node
        assert fleet["node"] == node
        assert services[node]["hostname"] == node

    publish = services["publish"]
    args = publish["command"]
    assert set(args[args.index("--etcd") + 1].split(",")) == client_urls
    shared = Path(_mounts(publish)["/fleet"])
    assert shared == ROOT / "docs/fleet/shared"
    config_arg = PurePosixPath(args[args.index("--config") + 1])
    assert (shared / config_arg.relative_to("/fleet")).is_file()
    zones_arg = next(a for a in args if a.startswith("/fleet/") and a != str(config_arg))
    assert (shared / PurePosixPath(zones_arg).relative_to("/fleet")).is_dir()
    assert publish["restart"] == "no"
    assert {n: d["condition"] for n, d in publish["depends_on"].items()} == \
        dict.fromkeys(etcd, "service_healthy")

    # The health endpoints the shared configuration checks, served in each node's namespace.
    shared_config = yaml.safe_load((shared / "geodns.yaml").read_text())
    checked = {urlsplit(c["url"]) for pop in shared_config["pops"].values()
               for c in pop.get("checks", []) if c["type"] == "http"}
    assert checked
    sidecars = {s["network_mode"]: s for s in services.values()
                if s.get("network_mode", "").startswith("service:")}
    assert set(sidecars) == {f"service:{n}" for n in ("node-a", "node-b", "node-c")}
    for sidecar in sidecars.values():
        script = "\n".join(sidecar["command"])
        for url in checked:
            assert f'"{url.hostname}"' in script and f", {url.port})" in script, url


def test_compose_prometheus_and_grafana_agree() -> None:
    services = _services()
    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config = yaml.safe_load(Path(mounts["/etc/prometheus/prometheus.yml"]).read_text())
    for rule in config["rule_files"]:
        assert str(PurePosixPath("/etc/prometheus") / rule) in mounts, rule
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "geodns"  # alerts.yml and the dashboard select it
    (sd,) = job["dns_sd_configs"]
    servers = _geodns_servers()
    assert set(sd["names"]) == set(servers)
    for name, path in servers.items():
        assert _port(yaml.safe_load(path.read_text())["admin"]["listen"]) == sd["port"], name
    labels = {r["target_label"] for r in job["relabel_configs"]}
    assert {"node", "site"} <= labels  # the alert texts and the dashboard use both
    assert "9090/tcp" in _published(prometheus)

    grafana = services["grafana"]
    mounts = _mounts(grafana)
    datasources = Path(mounts["/etc/grafana/provisioning/datasources"])
    (source,) = yaml.safe_load((datasources / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"
    providers = Path(mounts["/etc/grafana/provisioning/dashboards"])
    (provider,) = yaml.safe_load((providers / "geodns.yml").read_text())["providers"]
    dashboard = next(t for t, s in mounts.items() if s.endswith("geodns-dashboard.json"))
    assert str(PurePosixPath(dashboard).parent) == provider["options"]["path"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard


def test_compose_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    """promtool on the configuration and rules laid out as the compose mounts put them."""
    promtool = require_binary("promtool")
    for target, source in _mounts(_services()["prometheus"]).items():
        shutil.copy(source, tmp_path / PurePosixPath(target).relative_to("/etc/prometheus"))
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout + proc.stderr
