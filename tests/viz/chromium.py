"""A headless Chromium driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`: JSON messages
ended by NUL on file descriptors 3 and 4), so the browser tests need no WebSocket client or driver package.

The browser is Debian's `chromium` (`make browser-deps` installs it; `make test` tries to). Where it is missing,
`chromium_or_skip()` skips the browser tests with the install command as the reason, or fails them when
REQUIRE_CHROMIUM=1 is set (a CI image that should have the browser cannot report it as tested without one).
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time

import pytest

INSTALL_HINT = "install it with `make browser-deps` (apt-get install -y chromium)"
REQUIRE_ENV = "REQUIRE_CHROMIUM"


def find_chromium() -> str | None:
    """The first of chromium, chromium-browser, google-chrome on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip() -> str:
    """The browser's path; without one, skip the calling test with the reason (fail it when REQUIRE_CHROMIUM=1)."""
    path = find_chromium()
    if path is None:
        reason = f"no chromium on PATH (chromium, chromium-browser, google-chrome): {INSTALL_HINT}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 asks for the browser tests to run")
        pytest.skip(reason)
    return path


class Chromium:
    """One headless browser with one page; `errors` collects exceptions, console errors and failed loads."""

    def __init__(self, profile_dir: str, width: int = 1400, height: int = 1000):
        self._to_browser, self._from_browser = os.pipe(), os.pipe()
        to_read, from_write = self._to_browser[0], self._from_browser[1]

        def wire_pipes():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_read, 3)
            os.dup2(from_write, 4)

        self.process = subprocess.Popen(
            [chromium_or_skip(), "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", f"--user-data-dir={profile_dir}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
            preexec_fn=wire_pipes)
        os.close(to_read)
        os.close(from_write)
        self._buffer, self._next_id, self.events, self.errors = b"", 0, [], []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # ---- the protocol ----------------------------------------------------------------------------------------
    def _read_message(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.time()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError(f"no message from chromium within {timeout} s")
            if not select.select([self._from_browser[0]], [], [], min(left, 1.0))[0]:
                continue
            chunk = os.read(self._from_browser[0], 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _note(self, event: dict) -> None:
        self.events.append(event)
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("exception", {}).get("description", str(params)))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")

    def call(self, method: str, session: bool = False, timeout: float = 60, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser[1], json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for event in self.events:
            if event.get("method") == method:
                self.events.remove(event)
                return event
        while True:
            event = self._read_message(timeout)
            self._note(event)
            if event.get("method") == method:
                self.events.remove(event)
                return event

    # ---- what the tests use ----------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Load `url` afresh and wait for its load event (a change of the fragment alone reloads the page)."""
        if "loaderId" not in self.call("Page.navigate", session=True, url=url):  # same document, new fragment
            self.call("Page.reload", session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str) -> str:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        self.process.wait(timeout=30)
        for fd in (self._to_browser[1], self._from_browser[0]):
            os.close(fd)
