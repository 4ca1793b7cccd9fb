"""What a node says about its install: without the C helper for batched UDP
(no C compiler when geodns was installed) it serves with recvfrom/sendto and
says so once, with what to install; the wheel itself is tested in
tests/test_wheel.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from geodns.config import Address, Config
from geodns.server import app
from geodns.server.app import Server


def _config(tmp_path: Path) -> Config:
    return Config(path=None, listen=[Address("127.0.0.1", 0)], zones_dir=tmp_path)


@pytest.mark.parametrize("env,worker,warned,mode", [
    (None, 0, True, "reader"),  # the default falls back, and says so
    ("batch", 0, True, "reader"),  # asked for by name: the same
    (None, 1, False, "reader"),  # one line per node, not one per worker
    ("reader", 0, False, "reader"),  # asked for: nothing to say
    ("protocol", 0, False, "protocol"),
])
def test_without_the_c_helper_udp_falls_back_and_says_so(
        env: str | None, worker: int, warned: bool, mode: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(app, "HAVE_UDPBATCH", False)
    monkeypatch.setattr(app, "UDP_MODE", env or "reader")  # as computed at import
    if env is None:
        monkeypatch.delenv("GEODNS_UDP_MODE", raising=False)
    else:
        monkeypatch.setenv("GEODNS_UDP_MODE", env)
    with caplog.at_level(logging.WARNING, logger="geodns.server"):
        server = Server(_config(tmp_path), worker_index=worker)
    assert server.udp_mode == mode
    said = [r.getMessage() for r in caplog.records if "geodns._udpbatch" in r.getMessage()]
    assert said == ([app.NO_UDPBATCH] if warned else []), said
    if warned:
        assert "apt install gcc python3-dev" in said[0] and "recvfrom/sendto" in said[0]


def test_with_the_c_helper_batch_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(app, "HAVE_UDPBATCH", True)
    monkeypatch.setattr(app, "UDP_MODE", "batch")
    monkeypatch.delenv("GEODNS_UDP_MODE", raising=False)
    with caplog.at_level(logging.WARNING, logger="geodns.server"):
        server = Server(_config(tmp_path))
    assert server.udp_mode == "batch"
    assert not [r for r in caplog.records if "geodns._udpbatch" in r.getMessage()]
