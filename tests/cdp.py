"""A small Chrome DevTools Protocol client for tests: headless Chromium in its
own process group, one page, driven over aiohttp's websocket client.

Only what the status-page test needs: navigate, evaluate JavaScript, take a
screenshot, and wait (always with a deadline) until an expression holds.
Protocol events are kept in ``Page.events`` so that a test can look at the
requests the page made or the exceptions it threw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
         "--force-color-profile=srgb", "--remote-debugging-port=0")


class CDPError(Exception):
    pass


class Page:
    """One page target over its own websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                future = self._waiting.pop(data["id"], None) if "id" in data else None
                if future is not None and not future.done():
                    future.set_result(data)
                elif "method" in data:
                    self.events.append(data)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(CDPError("the DevTools connection closed"))
            self._waiting.clear()

    async def send(self, method: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        if self._reader.done():
            raise CDPError("the DevTools connection is closed")
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        await self.ws.send_str(json.dumps({"id": self._next_id, "method": method,
                                           "params": params}))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:80]!r} threw {text}")
        return result["result"].get("value")

    async def navigate(self, url: str, timeout: float = 10.0) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.href === {json.dumps(url)} && "
                            "document.readyState === 'complete'", timeout)

    async def wait_for(self, expression: str, timeout: float, interval: float = 0.1) -> Any:
        """Evaluate until the value is truthy; CDPError with the last value
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            with contextlib.suppress(CDPError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() >= deadline:
                raise CDPError(f"not true within {timeout} s: {expression} (last: {value!r})")
            await asyncio.sleep(interval)

    async def screenshot(self, full_page: bool = False) -> bytes:
        """The viewport (or the whole page) as PNG bytes, in device pixels."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        result = await self.send("Page.captureScreenshot", **params)
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError, CDPError):
            await self._reader


async def _devtools_port(profile: Path, proc: asyncio.subprocess.Process,
                         timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise CDPError(f"chromium exited with status {proc.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        await asyncio.sleep(0.05)
    raise CDPError(f"chromium wrote no {marker} within {timeout} s")


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    # The browser runs in its own session (start_new_session), so its
    # process group id is its pid: this reaches its helpers and nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@contextlib.asynccontextmanager
async def chromium(profile: Path, width: int = 1280, height: int = 900,
                   executable: str = CHROMIUM, timeout: float = 15.0) -> AsyncIterator[Page]:
    """Headless Chromium with one blank page; killed, with its whole process
    group, on the way out whatever happens."""
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # left by an earlier run
    log = (profile.parent / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
        "about:blank", stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True)
    try:
        async with aiohttp.ClientSession() as http:
            port = await _devtools_port(profile, proc, timeout)
            deadline = time.monotonic() + timeout
            targets: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                async with http.get(f"http://127.0.0.1:{port}/json",
                                    timeout=aiohttp.ClientTimeout(total=5)) as r:
                    targets = [t for t in await r.json() if t.get("type") == "page"]
                if targets:
                    break
                await asyncio.sleep(0.1)
            if not targets:
                raise CDPError("chromium has no page target")
            ws = await asyncio.wait_for(
                http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0), timeout)
            page = Page(ws)
            try:
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                await page.send("Network.enable")
                yield page
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.close(), 2)
    finally:
        _kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            _kill_group(proc, signal.SIGKILL)
            await proc.wait()
        _kill_group(proc, signal.SIGKILL)  # helpers that outlived the browser
        log.close()
