"""Drive Debian's chromium headless over the DevTools protocol (a websocket), offline.

Every request the page makes passes through Fetch interception: loopback URLs continue, anything else is
failed and recorded, so a test can insist that nothing tried to leave the machine. Chromium also runs
with --disable-background-networking and a host resolver that resolves nothing but loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

# Recorded from inside the page before any of its own scripts run.
_PAGE_PROBE = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in {"data", "blob", "about", "chrome", "devtools"}:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and (parts.hostname or "") in {
        h.strip("[]") for h in LOOPBACK_HOSTS
    }


@dataclass
class Page:
    """One tab, attached with a flat session; events are recorded as they come."""

    ws: Any
    session_id: str
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)  # non-loopback URLs the page tried to fetch
    requested: list[str] = field(default_factory=list)  # every URL it fetched
    exceptions: list[str] = field(default_factory=list)  # uncaught JavaScript exceptions
    console_errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session_id
        await self.ws.send(json.dumps(message))
        return await asyncio.wait_for(future, timeout=60)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, ceiling: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy (no timed assertion: a generous ceiling)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ceiling
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {expression!r}; exceptions={self.exceptions} "
                    f"console={self.console_errors} blocked={self.blocked}"
                )
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (pressed and released)."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    async def type_into(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
        return path

    async def csp_violations(self) -> list[str]:
        return list(await self.evaluate("window.__cspViolations || []"))

    def dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            future = self._pending.pop(message["id"], None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(AssertionError(f"CDP error: {message['error']}"))
                else:
                    future.set_result(message.get("result", {}))
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Fetch.requestPaused":
            asyncio.ensure_future(self._decide(params))
        elif method == "Network.requestWillBeSent":
            self.requested.append(params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            self.failed_loads.append(f"{params.get('errorText')} {params.get('blockedReason', '')}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", {}).get("description") or details))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    async def _decide(self, params: dict[str, Any]) -> None:
        url = params["request"]["url"]
        if is_loopback(url):
            await self.send("Fetch.continueRequest", {"requestId": params["requestId"]})
        else:
            self.blocked.append(url)
            await self.send(
                "Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"}
            )


def _chromium_arguments(profile: Path) -> list[str]:
    arguments = [
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        # Belt and braces under the Fetch interception: no name resolves except loopback's.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ]
    if os.geteuid() == 0:
        arguments.append("--no-sandbox")  # chromium refuses to run as root with its sandbox
    return arguments


@contextlib.asynccontextmanager
async def offline_chromium(executable: str) -> AsyncIterator[Page]:
    profile = Path(tempfile.mkdtemp(prefix="keyward-chromium-"))
    process = await asyncio.create_subprocess_exec(
        executable,
        *_chromium_arguments(profile),
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    reader: asyncio.Task[None] | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # up to a minute on a loaded machine
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
            page = Page(ws=ws, session_id="")

            async def read() -> None:
                async for raw in ws:
                    page.dispatch(json.loads(raw))

            reader = asyncio.create_task(read())
            target = await page.send("Target.createTarget", {"url": "about:blank"}, session=False)
            attached = await page.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
            )
            page.session_id = attached["sessionId"]
            await page.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
            for domain in ("Network", "Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": _PAGE_PROBE})
            yield page
    finally:
        if reader is not None:
            reader.cancel()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)
