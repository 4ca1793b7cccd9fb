"""A real etcd cluster (1 or 3 members) in child processes, for tests that
inject faults into the store geodns reads: kill or stop a member, restart it,
see who leads.

Every member listens on 127.0.0.1 with ports found free just before the start
(the whole start is retried with new ports when a member could not bind one:
a port free when asked can be taken before etcd binds it, e.g. by a peer's
outgoing connection), keeps its data under the given directory and writes its
log to ``<dir>/etcd-m<i>.log``.  Timings are short (heartbeat 100 ms, election
1 s) so that a new leader is elected within a few seconds.

HTTP goes through the standard library only (etcd 3.4's JSON gateway, keys and
values base64, 64-bit integers as strings), so this helper does not depend on
the geodns code it is used to test.  Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refservers import find_binary, skip_or_fail

__all__ = ["EtcdCluster", "EtcdError", "etcd_cluster", "gateway_call"]

HOST = "127.0.0.1"
START_ATTEMPTS = 3
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 1.0
# urllib would send 127.0.0.1 through $http_proxy if one is set: never use one.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EtcdError(RuntimeError):
    """The cluster did not start, or did not answer in time."""


class _BindFailed(EtcdError):
    """A member exited because one of its ports was taken."""


def gateway_call(endpoint: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """POST ``body`` as JSON to etcd's gateway (``path`` like
    ``/v3/kv/range``) and return the decoded answer.  The gateway takes POST
    only (GET is 405); urllib's errors (refused, timeout, HTTP status) pass
    through as OSError."""
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(endpoint + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with _OPENER.open(req, timeout=timeout) as resp:
        answer = json.loads(resp.read())
    if not isinstance(answer, dict):
        raise EtcdError(f"{endpoint}{path}: not a JSON object: {answer!r}")
    return answer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 just now (all sockets
    held open together, so the kernel cannot hand the same port out twice)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class _Member:
    """One etcd process's fixed settings; the process itself may come and go."""

    def __init__(self, name: str, data_dir: Path, log: Path, client_port: int,
                 peer_port: int) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log = log
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.member_id: str | None = None  # decimal string, as the gateway gives it
        self.log_start = 0  # where the running process's part of the log begins

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdCluster:
    """``members`` etcd processes forming one new cluster under ``workdir``.

    ``listen_hosts``: extra IPv4 addresses (e.g. the root side of a veth pair)
    on which every member's client port listens too; the advertised URL stays
    the 127.0.0.1 one.  Use as a context manager: ``__exit__`` stops every
    process, whatever happened."""

    def __init__(self, workdir: Path, members: int = 3,
                 listen_hosts: Sequence[str] = (), binary: str = "etcd") -> None:
        if members not in (1, 3):
            raise ValueError("an EtcdCluster has 1 or 3 members")
        self.workdir = Path(workdir)
        self.size = members
        self.listen_hosts = list(listen_hosts)
        self.binary = binary
        self.token = ""
        self._members: list[_Member] = []
        self.started = False

    # -- start and stop ----------------------------------------------------------
    def start(self, timeout: float = 15.0) -> EtcdCluster:
        """Start every member and wait (at most ``timeout`` s in all) until each
        answers maintenance/status and a leader exists."""
        if self.started:
            return self
        deadline = time.monotonic() + timeout
        last = ""
        for attempt in range(START_ATTEMPTS):
            self._layout(attempt)
            try:
                for i in range(self.size):
                    self._spawn(i, "new")
                self._wait_ready(range(self.size), deadline)
            except _BindFailed as e:
                last = str(e)
                self._kill_all()
                continue
            except BaseException:
                self._kill_all()
                raise
            self.started = True
            return self
        raise EtcdError(f"etcd could not bind its ports in {START_ATTEMPTS} attempts: {last}")

    def _layout(self, attempt: int) -> None:
        """New ports, a new token and empty data directories for one attempt."""
        ports = _free_ports(2 * self.size)
        self.token = f"gdns-test-{secrets.token_hex(6)}"
        self._members = []
        for i in range(self.size):
            name = f"m{i}"
            data_dir = self.workdir / f"etcd-{name}.data"
            shutil.rmtree(data_dir, ignore_errors=True)
            log = self.workdir / f"etcd-{name}.log"
            if attempt == 0:
                log.unlink(missing_ok=True)
            self._members.append(_Member(name, data_dir, log, ports[2 * i],
                                         ports[2 * i + 1]))

    def _argv(self, m: _Member, state: str) -> list[str]:
        listen = [m.endpoint] + [f"http://{h}:{m.client_port}" for h in self.listen_hosts]
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self._members)
        return [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", ",".join(listen),
            "--advertise-client-urls", m.endpoint,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]

    def _spawn(self, i: int, state: str) -> None:
        m = self._members[i]
        self.workdir.mkdir(parents=True, exist_ok=True)
        # ETCD_* variables would override the flags (and some conflict with them).
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(m.log, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} start ({state})\n".encode())
            log.flush()
            m.log_start = log.tell()
            m.proc = subprocess.Popen(self._argv(m, state), stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)

    def _wait_ready(self, which: range | list[int], deadline: float) -> None:
        """Until ``deadline``: every member in ``which`` answers status and
        reports a leader.  A member that exits fails the wait (as _BindFailed
        when its log says a port was taken)."""
        pending = list(which)
        while True:
            for i in list(pending):
                m = self._members[i]
                assert m.proc is not None
                if m.proc.poll() is not None:
                    tail = self.log_tail(i)
                    if "address already in use" in self._log_since_spawn(i):
                        raise _BindFailed(f"{m.name}: {tail.strip().splitlines()[-1]}")
                    raise EtcdError(f"etcd {m.name} exited with {m.proc.returncode}; "
                                    f"log:\n{tail}")
                status = self._status(i)
                if status is None:
                    continue
                m.member_id = str(status["header"]["member_id"])
                if status.get("leader", "0") != "0":
                    pending.remove(i)
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(self._members[i].name for i in pending)
                raise EtcdError(f"etcd {names} not ready in time; log of the first:\n"
                                + self.log_tail(pending[0]))
            time.sleep(0.05)

    def _status(self, i: int) -> dict[str, Any] | None:
        """Member ``i``'s maintenance/status, or None if it does not answer."""
        try:
            return gateway_call(self._members[i].endpoint, "/v3/maintenance/status")
        except (OSError, ValueError, EtcdError):
            return None

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and reap it (a crash: nothing flushed, no goodbye)."""
        self._signal(i, signal.SIGKILL)

    def stop(self, i: int) -> None:
        """SIGTERM member ``i`` and wait for it (SIGKILL if it takes too long)."""
        self._signal(i, signal.SIGTERM)

    def _signal(self, i: int, sig: signal.Signals, grace: float = STOP_TIMEOUT) -> None:
        """Send ``sig`` to member ``i`` and reap it (SIGKILL after ``grace`` s)."""
        proc = self._members[i].proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def restart(self, i: int, timeout: float = 15.0) -> None:
        """Start member ``i`` again (stopping it first if it runs) with its data
        directory and ports, and wait until it answers and knows a leader."""
        self.stop(i)
        self._spawn(i, "existing")
        try:
            self._wait_ready([i], time.monotonic() + timeout)
        except _BindFailed as e:  # the ports are fixed by the cluster: cannot retry
            raise EtcdError(f"restart of {self._members[i].name}: {e}") from None

    def restart_all(self, timeout: float = 15.0) -> None:
        """Start every stopped member again at once (one alone has no quorum,
        so they are started together) and wait until all know a leader."""
        down = [i for i in range(len(self._members)) if not self.alive(i)]
        for i in down:
            self._spawn(i, "existing")
        try:
            self._wait_ready(down, time.monotonic() + timeout)
        except _BindFailed as e:
            raise EtcdError(f"restart: {e}") from None

    def stop_all(self) -> None:
        """Stop every member, the leader first each time (always reaps).  A
        leader given SIGTERM hands leadership over before it exits; when its
        followers are already gone it waits until it notices it has no quorum
        (2 s) - and all at once, it may wait for a transfer nobody takes until
        SIGKILL."""
        for _ in range(len(self._members)):
            running = [i for i in range(len(self._members)) if self.alive(i)]
            if not running:
                break
            with contextlib.suppress(Exception):  # the others must still be stopped
                first = self._current_leader()
                self._signal(running[0] if first is None else first, signal.SIGTERM,
                             grace=2.0)
        self._kill_all()  # whatever is left, even after an error above

    def _kill_all(self) -> None:
        """SIGKILL and reap every member still running.  Used alone for a start
        that failed: members without a leader take seconds over a SIGTERM."""
        for m in self._members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(STOP_TIMEOUT)
        self.started = False

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- questions -------------------------------------------------------------
    def alive(self, i: int) -> bool:
        """Is member ``i``'s process running (not whether it answers)?"""
        proc = self._members[i].proc
        return proc is not None and proc.poll() is None

    @property
    def endpoints(self) -> list[str]:
        """``http://127.0.0.1:PORT`` of every member, in member order."""
        return [m.endpoint for m in self._members]

    def endpoints_on(self, host: str) -> list[str]:
        """Every member's client URL on one of the extra ``listen_hosts``."""
        if host not in self.listen_hosts:
            raise ValueError(f"{host} is not one of the listen_hosts {self.listen_hosts}")
        return [f"http://{host}:{m.client_port}" for m in self._members]

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the current leader: a running member that reports itself as
        leader (its ``header.member_id`` equals its ``leader``).  Waits up to
        ``timeout`` s, e.g. for an election after the leader was killed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._current_leader()
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise EtcdError(f"no leader among the running members within {timeout} s")
            time.sleep(0.05)

    def _current_leader(self) -> int | None:
        """One look (no waiting): the running member that says it leads."""
        for i in range(len(self._members)):
            if not self.alive(i):
                continue
            status = self._status(i)
            if status is not None and status.get("leader") == \
                    str(status["header"]["member_id"]):
                return i
        return None

    def log_tail(self, i: int, lines: int = 20) -> str:
        """The end of member ``i``'s log (for failure messages)."""
        try:
            text = self._members[i].log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _log_since_spawn(self, i: int) -> str:
        m = self._members[i]
        try:
            with open(m.log, "rb") as f:
                f.seek(m.log_start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- the key-value store ------------------------------------------------------
    def put(self, key: str, value: str, i: int = 0, timeout: float = 5.0) -> None:
        """Write ``key`` through member ``i``."""
        gateway_call(self._members[i].endpoint, "/v3/kv/put",
                     {"key": _b64(key), "value": _b64(value)}, timeout)

    def get(self, key: str, i: int = 0, timeout: float = 5.0) -> str | None:
        """``key``'s value read (linearizably) through member ``i``; None when
        absent (the gateway then leaves out ``kvs`` and ``count`` altogether)."""
        answer = gateway_call(self._members[i].endpoint, "/v3/kv/range",
                              {"key": _b64(key)}, timeout)
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", "")).decode()


def etcd_cluster(tmp_path: Path, members: int = 3,
                 listen_hosts: Sequence[str] = ()) -> EtcdCluster:
    """A started cluster under ``tmp_path``, or skip the test when etcd is not
    installed (fail instead with GEODNS_REQUIRE_REFERENCE=1).  The caller stops
    it: ``with etcd_cluster(tmp_path) as cluster: ...``."""
    binary = find_binary("etcd")
    if binary is None:
        skip_or_fail("etcd not installed (apt install etcd-server etcd-client)")
    return EtcdCluster(tmp_path, members, listen_hosts, binary).start()
