"""Running nodes as another user in tests (tests/test_privileges.py,
tests/test_systemd.py): as root, a node that becomes the user nobody, or one
started as nobody with CAP_NET_BIND_SERVICE as systemd starts it.

This machine's Python may live where only root can go (pyenv under /root),
so :func:`shim_python` makes a small venv from a Python of the same version
that nobody may run (the system's), whose site-packages are the test venv's.
Everything a node uses then lies in a directory nobody may read
(:func:`public_dir`), not under pytest's tmp_path (0700).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import random
import re
import shutil
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
from refservers import skip_or_fail

from geodns import privileges

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)
AS_ROOT = os.geteuid() == 0
ZONE = """\
origin: priv.example.
soa: {mname: ns1, rname: h}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
"""

@contextlib.contextmanager
def shim_python() -> Iterator[str]:
    """A Python that the user nobody may run, with this venv's packages."""
    minor = f"python3.{sys.version_info.minor}"
    home = Path(tempfile.mkdtemp(prefix="geodns-shim-"))
    try:
        home.chmod(0o755)
        base_python = getattr(sys, "_base_executable", sys.executable)
        for base in (os.path.realpath(base_python), f"/usr/bin/{minor}",
                     f"/usr/local/bin/{minor}"):
            if not os.path.exists(base) or not nobody_runs([base, "-c", "pass"])[0]:
                continue
            venv = home / "venv"
            subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True,
                           capture_output=True)
            packages = venv / "lib" / minor / "site-packages"
            ours = site.getsitepackages()[0]
            (packages / "geodns-tests.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
            python = str(venv / "bin" / "python")
            check = [python, "-c", "import geodns, uvloop, aiohttp"]
            ok, why = nobody_runs(check)
            if not ok:  # a checkout where nobody may not go (CI's, in a 0700 directory)
                (packages / "geodns-tests.pth").unlink()
                _copy_runtime(packages)
                ok, why = nobody_runs(check)
            if not ok:
                skip_or_fail(f"the user nobody cannot import geodns from {ours}: {why}")
            yield python
            return
        skip_or_fail(f"no {minor} that the user nobody may run (this one, "
                     f"{base_python}, is out of its reach)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _copy_runtime(packages: Path) -> None:
    """Copy geodns and what it needs at run time (its requirements, and
    theirs) into ``packages``, readable by all."""
    import geodns

    shutil.copytree(Path(geodns.__file__).parent, packages / "geodns",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wanted, seen = ["geodns"], set()
    while wanted:
        name = wanted.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            if "extra ==" not in req:
                wanted.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
        if key == "geodns":
            continue  # an editable install: its files are the checkout's, copied above
        for file in dist.files or []:
            src = Path(str(file.locate()))
            dst = packages / file
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    for path in packages.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def nobody_runs(command: list[str]) -> tuple[bool, str]:
    """Does ``command`` run as the user nobody (and why not)?"""
    try:
        done = subprocess.run(command, user=NOBODY.pw_uid, group=NOGROUP.gr_gid,
                              extra_groups=[], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return False, str(exc)
    return done.returncode == 0, done.stderr.strip()[-300:]


def as_nobody(*caps: str) -> list[str]:
    """A command that runs what follows it as nobody (with these ambient
    capabilities), as systemd's User= and AmbientCapabilities= do."""
    extra = [f"--inh-caps=+{','.join(caps)}", f"--ambient-caps=+{','.join(caps)}"] if caps \
        else []
    return ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}",
            "--init-groups", *extra]


@contextlib.contextmanager
def public_dir() -> Iterator[Path]:
    """A directory the user may read (tmp_path is root's only)."""
    where = Path(tempfile.mkdtemp(prefix="geodns-priv-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def privileged_port(avoid: int = 0) -> int:
    """A port below 1024 free for UDP and TCP on 127.0.0.1 (53 if it is)."""
    for port in [53, *random.sample(range(600, 1024), 100)]:
        if port == avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no privileged port free on 127.0.0.1")


def node_config(public: Path, port: int, user: str | None = "nobody:nogroup",
                workers: int = 1, extra: str = "") -> Path:
    """A node in ``public``: its zones and configuration readable by all (root
    owns them), a ``run`` directory that the user owns for what it writes."""
    run = public / "run"
    run.mkdir(exist_ok=True)
    os.chown(run, NOBODY.pw_uid, NOGROUP.gr_gid)
    text = (f"listen: [127.0.0.1:{port}]\nzones: zones\nworkers: {workers}\n"
            "admin: {listen: 127.0.0.1:0, state_file: run/state.json}\n"
            "lifecycle: {control_socket: run/control.sock}\n" + extra)
    if user is not None:
        text += f"user: {user}\n"
    cfg = write_node(public, text)
    for path in (cfg, *public.joinpath("zones").rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    public.joinpath("zones").chmod(0o755)
    return cfg


def status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def assert_runs_as_nobody(pid: int) -> None:
    text = status(pid)
    got, caps = privileges.ids(text), privileges.capability_sets(text)
    assert got["Uid"] == (NOBODY.pw_uid,) * 4, (pid, got)
    assert got["Gid"] == (NOGROUP.gr_gid,) * 4, (pid, got)
    assert sorted(got["Groups"]) == sorted(set(os.getgrouplist("nobody", NOGROUP.gr_gid))), \
        (pid, got)
    for key in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
        assert caps[key] == 0x400, f"process {pid}: {key} {caps[key]:#x}, not 0x400 " \
                                   "(CAP_NET_BIND_SERVICE alone)"
    assert "NoNewPrivs:\t1" in text, pid


def answers(port: int) -> None:
    """The node answers over UDP and over TCP (dnspython, not our code)."""
    q = dns.message.make_query("ns1.priv.example.", "A")
    for ask in (dns.query.udp, dns.query.tcp):
        resp = ask(q, "127.0.0.1", port=port, timeout=3)
        assert resp.rcode() == dns.rcode.NOERROR and resp.answer, (ask, resp)
        assert resp.answer[0][0].to_text() == "192.0.2.53"


def node_pids(top: int, workers: int) -> list[int]:
    return [top, *children(top)] if workers > 1 else [top]


def write_node(where: Path, config: str) -> Path:
    (where / "zones").mkdir(parents=True, exist_ok=True)
    (where / "zones" / "priv.example.yaml").write_text(ZONE)
    cfg = where / "geodns.yaml"
    cfg.write_text(config)
    return cfg
