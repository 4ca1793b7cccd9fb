"""``user:`` (``geodns serve --user``): a node started as root becomes that
user before it reads a zone, keeping CAP_NET_BIND_SERVICE only.

The pure parts (the setting, the look-ups, the decision, the capability
masks) run everywhere.  The rest runs a real ``geodns serve`` as root on a
privileged port of loopback and reads what the kernel says of every process
of the node (``/proc/PID/status``), before and after ``geodns restart``;
it is skipped when the tests do not run as root.

The node runs on an interpreter the user may run, in a directory it may
read (tests/privkit.py says why and how).
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from privkit import (
    AS_ROOT,
    NOBODY,
    NOGROUP,
    answers,
    as_nobody,
    assert_runs_as_nobody,
    node_config,
    node_pids,
    privileged_port,
    public_dir,
    shim_python,
    status,
    write_node,
)

from geodns import privileges
from geodns.cli import main
from geodns.config import load_config_text
from geodns.privileges import KEPT, RunAs, UserError
from geodns.snapshot import restart_needed
from geodns.yamlsrc import Problems
from tests.serveproc import Served

needs_root = pytest.mark.skipif(not AS_ROOT, reason="changing user needs root (run the tests "
                                "as root: CI does)")
DEADLINE = 20.0


# -- the setting and the look-ups (pure) --------------------------------------------------
@pytest.mark.parametrize(("text", "parsed"), [
    ("nobody", ("nobody", None)),
    ("nobody:nogroup", ("nobody", "nogroup")),
    ("65534:65534", ("65534", "65534")),
])
def test_parse_spec(text: str, parsed: tuple[str, str | None]) -> None:
    assert privileges.parse_spec(text) == parsed


@pytest.mark.parametrize("text", ["", ":", ":nogroup", "nobody:", "a:b:c", " nobody",
                                  "nobody :nogroup"])
def test_parse_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"USER|spaces"):
        privileges.parse_spec(text)


USERS = {"geodns": pwd.struct_passwd(("geodns", "x", 999, 998, "", "/var/lib/geodns", "/bin/false")),
         "root": pwd.struct_passwd(("root", "x", 0, 0, "", "/root", "/bin/sh"))}
GROUPS = {"geodns": grp.struct_group(("geodns", "x", 998, [])),
          "dns": grp.struct_group(("dns", "x", 53, ["geodns"]))}


def fake_resolve(text: str) -> RunAs:
    def by_uid(uid: int) -> pwd.struct_passwd:
        return next(u for u in USERS.values() if u.pw_uid == uid)

    def by_gid(gid: int) -> grp.struct_group:
        for g in GROUPS.values():
            if g.gr_gid == gid:
                return g
        raise KeyError(gid)

    return privileges.resolve(text, USERS.__getitem__,
                              lambda uid: _key_error(by_uid, uid),
                              GROUPS.__getitem__, by_gid)


def _key_error(find: Any, key: int) -> Any:
    try:
        return find(key)
    except StopIteration:
        raise KeyError(key) from None


@pytest.mark.parametrize(("text", "run_as"), [
    ("geodns", RunAs("geodns", 999, "geodns", 998, "/var/lib/geodns")),
    ("geodns:dns", RunAs("geodns", 999, "dns", 53, "/var/lib/geodns")),
    ("999:53", RunAs("geodns", 999, "dns", 53, "/var/lib/geodns")),
])
def test_resolve(text: str, run_as: RunAs) -> None:
    assert fake_resolve(text) == run_as


@pytest.mark.parametrize(("text", "message"), [
    ("nosuch", "unknown user 'nosuch'"),
    ("12345", "unknown user '12345'"),
    ("geodns:nosuch", "unknown group 'nosuch'"),
    ("geodns:4242", "unknown group '4242'"),
    ("root", "'root' is root"),
    ("0:geodns", "'0' is root"),
])
def test_resolve_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        fake_resolve(text)


def test_must_drop() -> None:
    run_as = RunAs("geodns", 999, "geodns", 998, "/")
    assert privileges.must_drop(run_as, 0, 0) is True  # root becomes the user
    assert privileges.must_drop(run_as, 999, 998) is False  # started so (systemd User=)
    for uid, gid in ((1000, 1000), (999, 1000)):  # someone else cannot change user
        with pytest.raises(UserError, match="cannot change user"):
            privileges.must_drop(run_as, uid, gid)


STATUS = """\
Name:\tpython
Uid:\t65534\t65534\t65534\t65534
Gid:\t65534\t65534\t65534\t65534
Groups:\t65534 4242
CapInh:\t0000000000000400
CapPrm:\t0000000000000400
CapEff:\t0000000000000400
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000400
NoNewPrivs:\t1
"""


def test_proc_status_parsing() -> None:
    assert privileges.capability_sets(STATUS) == {
        "CapInh": 0x400, "CapPrm": 0x400, "CapEff": 0x400, "CapBnd": 0x1ffffffffff,
        "CapAmb": 0x400}
    assert privileges.ids(STATUS) == {"Uid": (65534,) * 4, "Gid": (65534,) * 4,
                                      "Groups": (65534, 4242)}


def test_cap_words() -> None:
    assert KEPT == 0x400
    assert privileges.cap_words(KEPT) == (0x400, 0)
    assert privileges.cap_words(1 << 40 | 1) == (1, 1 << 8)  # CAP_CHECKPOINT_RESTORE: word 1
    with pytest.raises(ValueError):
        privileges.cap_words(1 << 64)


# -- the configuration and the command line -----------------------------------------------
def config_problems(text: str) -> tuple[str | None, list[str]]:
    problems = Problems()
    cfg = load_config_text(text, "geodns.yaml", Path("."), problems)
    return cfg.user, [str(p) for p in problems]


def test_user_setting() -> None:
    assert config_problems("user: nobody\n") == ("nobody", [])
    assert config_problems(f"user: {NOBODY.pw_uid}:{NOGROUP.gr_name}\n")[1] == []
    assert config_problems("user: null\n") == (None, [])
    assert config_problems("listen: [127.0.0.1:5300]\n") == (None, [])
    assert config_problems("\n\nuser: no-such-user-x\n")[1] == [
        "geodns.yaml:3:7: user: unknown user 'no-such-user-x' (not in the passwd database; "
        "create it, e.g. useradd --system --no-create-home no-such-user-x)"]
    assert config_problems("user: nobody:no-such-group-x\n")[1] == [
        "geodns.yaml:1:7: user: unknown group 'no-such-group-x' (not in the group database)"]
    assert config_problems("user: root\n")[1][0].startswith("geodns.yaml:1:7: user: 'root' "
                                                              "is root")
    # Rejected, but set: serve then reads nothing more as root.
    assert config_problems("user: [nobody]\n") == ("", ["geodns.yaml:1:7: user must be a "
                                                        "string"])


def test_user_needs_a_restart() -> None:
    problems = Problems()
    before = load_config_text("user: nobody\n", "geodns.yaml", Path("."), problems)
    after = load_config_text("listen: [127.0.0.1:5300]\n", "geodns.yaml", Path("."), problems)
    assert not problems
    assert restart_needed(before, after) == (
        "user changed in the configuration: needs a restart (still nobody)",)


def test_check_and_serve_reject_an_unknown_user(tmp_path: Path) -> None:
    cfg = write_node(tmp_path, "listen: [127.0.0.1:0]\nzones: zones\nuser: no-such-user-x\n")
    where = f"{cfg}:3:7: user: unknown user 'no-such-user-x'"
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["check", "--config", str(cfg)]) == 1
    assert err.getvalue().startswith(where), err.getvalue()
    node = Served(["--config", str(cfg)])
    try:
        assert node.exit_code(DEADLINE) == 2
    finally:
        node.stop()
    errors = [str(x["message"]) for x in node.find(lambda x: x.get("level") == "error")]
    assert errors[0].startswith(where), node.text()
    assert not node.find(lambda x: bool(x.get("raw"))), node.text()  # no traceback
    assert not node.find(lambda x: x.get("event") == "listening"), node.text()


def test_serve_rejects_an_unknown_user_option(tmp_path: Path) -> None:
    cfg = write_node(tmp_path, "listen: [127.0.0.1:0]\nzones: zones\n")
    node = Served(["--config", str(cfg), "--user", "nobody:no-such-group-x"])
    try:
        assert node.exit_code(DEADLINE) == 2
    finally:
        node.stop()
    errors = [str(x["message"]) for x in node.find(lambda x: x.get("level") == "error")]
    assert errors[0] == ("--user:1:1: --user: unknown group 'no-such-group-x' (not in the "
                         "group database)"), node.text()
    assert not node.find(lambda x: bool(x.get("raw"))), node.text()


@pytest.mark.skipif(AS_ROOT or os.getuid() == NOBODY.pw_uid, reason="needs a user other than "
                    "root and nobody (as root: test_another_user_cannot_change_user)")
def test_a_user_cannot_become_another(tmp_path: Path) -> None:
    cfg = write_node(tmp_path, "listen: [127.0.0.1:0]\nzones: zones\nuser: nobody\n")
    node = Served(["--config", str(cfg)])
    try:
        assert node.exit_code(DEADLINE) == 2
    finally:
        node.stop()
    assert "cannot change user" in node.text(), node.text()


# -- as root: the real thing --------------------------------------------------------------
@pytest.fixture(scope="module")
def shim() -> Iterator[str]:
    """A Python that the user nobody may run, with this venv's packages."""
    if not AS_ROOT:
        pytest.skip("changing user needs root")
    with shim_python() as python:
        yield python


@pytest.fixture
def public() -> Iterator[Path]:
    with public_dir() as where:
        yield where


@needs_root
@pytest.mark.parametrize("workers", [1, 2])
def test_serves_a_privileged_port_as_nobody(shim: str, public: Path, workers: int) -> None:
    port = privileged_port()
    cfg = node_config(public, port, workers=workers)
    node = Served(["--config", str(cfg)], cwd=cfg.parent, python=shim)
    try:
        line = node.wait_for(lambda x: x.get("event") == "user", DEADLINE)
        assert line["uid"] == NOBODY.pw_uid and line["gid"] == NOGROUP.gr_gid
        assert "with no capability but CAP_NET_BIND_SERVICE" in str(line["message"])
        if workers > 1:
            assert len(node.worker_pids(DEADLINE)) == workers
        node.wait_for(lambda x: str(x.get("message")).startswith("serving zones"), DEADLINE)
        answers(port)
        pids = node_pids(node.proc.pid, workers)
        assert len(pids) == workers + (workers > 1)
        for pid in pids:
            assert_runs_as_nobody(pid)
        # What the node writes, it writes as the user.
        assert public.joinpath("run", "control.sock").stat().st_uid == NOBODY.pw_uid

        # geodns restart (run by root, as an operator would): the successor
        # is a new python -m geodns serve, exec'd by the user; it keeps the
        # capability through the ambient set, and binds the privileged port
        # added to the configuration meanwhile (the others are handed over).
        added = privileged_port(avoid=port)
        cfg.write_text(cfg.read_text().replace(f"listen: [127.0.0.1:{port}]",
                                               f"listen: [127.0.0.1:{port}, 127.0.0.1:{added}]"))
        mark = node.mark()
        restart = subprocess.run([sys.executable, "-m", "geodns", "restart", "--config",
                                  str(cfg)], capture_output=True, text=True, timeout=120)
        assert restart.returncode == 0, restart.stderr + node.text()
        successor = int(re.findall(r"process (\d+) serves now", restart.stdout)[0])
        assert successor != node.proc.pid
        node.wait_for(lambda x: x.get("event") == "user" and "(started so)" in
                      str(x.get("message")), DEADLINE, mark)
        answers(port)
        answers(added)
        pids = node_pids(successor, workers)
        assert len(pids) == workers + (workers > 1)
        for pid in pids:
            assert_runs_as_nobody(pid)
        assert node.proc.wait(DEADLINE) == 0  # the old node handed over and left
    finally:
        node.stop()


@needs_root
def test_started_as_the_user_with_the_capability(shim: str, public: Path) -> None:
    """As systemd starts it (User=, AmbientCapabilities=CAP_NET_BIND_SERVICE):
    already the user, nothing to change; port 53 binds with the capability."""
    port = privileged_port()
    cfg = node_config(public, port, user="nobody")
    node = Served(["--config", str(cfg)], cwd=cfg.parent, python=shim,
                  wrap=as_nobody("net_bind_service"))
    try:
        line = node.wait_for(lambda x: x.get("event") == "user", DEADLINE)
        assert "(started so)" in str(line["message"])
        node.wait_for(lambda x: str(x.get("message")).startswith("serving zones"), DEADLINE)
        answers(port)
        assert_runs_as_nobody_without_nnp(node.proc.pid)
    finally:
        node.stop()


def assert_runs_as_nobody_without_nnp(pid: int) -> None:
    caps = privileges.capability_sets(status(pid))
    assert privileges.ids(status(pid))["Uid"] == (NOBODY.pw_uid,) * 4
    assert caps["CapEff"] == caps["CapAmb"] == 0x400


def refused(shim: str, cfg: Path, wrap: list[str] | None = None) -> Served:
    node = Served(["--config", str(cfg)], cwd=cfg.parent, python=shim, wrap=wrap or [])
    try:
        code = node.exit_code(DEADLINE)
    finally:
        node.stop()
    assert code == 2, node.text()
    assert not node.find(lambda x: x.get("event") == "listening"), node.text()
    assert not node.find(lambda x: bool(x.get("raw"))), node.text()  # no traceback
    return node


def error_lines(node: Served) -> list[str]:
    return [str(x["message"]) for x in node.find(lambda x: x.get("level") == "error")]


@needs_root
def test_another_user_cannot_change_user(shim: str, public: Path) -> None:
    cfg = node_config(public, privileged_port(), user="daemon")
    node = refused(shim, cfg, as_nobody())
    assert "cannot change user" in error_lines(node)[0], node.text()


@needs_root
def test_zones_are_read_as_the_user(shim: str, public: Path) -> None:
    """Root could read this zone; the user cannot, and reads it first."""
    cfg = node_config(public, privileged_port())
    zone = public / "zones" / "priv.example.yaml"
    zone.chmod(0o600)
    node = refused(shim, cfg)
    assert any(str(zone) in e and "Permission denied" in e for e in error_lines(node)), \
        node.text()


@needs_root
def test_files_the_user_cannot_write(shim: str, public: Path) -> None:
    cfg = node_config(public, privileged_port())
    text = cfg.read_text().replace("control_socket: run/control.sock",
                                   "control_socket: .geodns.sock")  # beside the file: root's
    cfg.write_text(text.replace("state_file: run/state.json", "state_file: state/state.json"))
    public.joinpath("state").mkdir(mode=0o755)
    node = refused(shim, cfg)
    errors = error_lines(node)
    assert any(e.startswith(f"lifecycle control_socket {public}/.geodns.sock: user nobody "
                            f"cannot create files in {public} (root:root mode 0755)")
               for e in errors), node.text()
    assert any(e.startswith(f"admin state_file {public}/state/state.json: user nobody cannot "
                            "create files in") for e in errors), node.text()
    assert "cannot use 2 file(s)" in errors[-1], node.text()


@needs_root
def test_a_python_the_user_cannot_run(shim: str, public: Path) -> None:
    """An interpreter under a directory only root may enter (pyenv in /root)."""
    private = public / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(Path(shim).parent.parent, private / "venv", symlinks=True)
    python = private / "venv" / "bin" / "python"
    cfg = node_config(public, privileged_port())
    node = refused(str(python), cfg)
    assert any(e.startswith(f"Python (geodns restart runs it) {python}: user nobody cannot run "
                            f"it ({private} is root:root mode 0700)")
               for e in error_lines(node)), node.text()
