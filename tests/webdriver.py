"""The few W3C WebDriver commands the browser test needs, spoken to Debian's chromedriver over HTTP (requests), so
the test needs no client package and downloads no browser: chromium and chromium-driver come from Debian."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_browser() -> tuple[str, str] | None:
    """(chromedriver, chromium) paths, or None when either is missing."""
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return (driver, browser) if driver and browser else None


class Browser:
    """A headless Chromium session; ``close()`` ends it and its chromedriver."""

    def __init__(self, driver: str, browser: str, width: int = 1400, height: int = 1000):
        port = free_port()
        self.process = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while True:
            try:
                requests.get(f"{self.base}/status", timeout=1)
                break
            except requests.ConnectionError:
                if time.time() > deadline:
                    self.process.kill()
                    raise
                time.sleep(0.1)
        options = {"binary": browser, "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                               "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                                               f"--window-size={width},{height}"]}
        session = requests.post(f"{self.base}/session", json={"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}}, timeout=60).json()["value"]
        if "sessionId" not in session:
            self.process.kill()
            raise RuntimeError(f"chromedriver refused the session: {session}")
        self.session = f"{self.base}/session/{session['sessionId']}"

    def command(self, method: str, path: str, body: dict | None = None):
        reply = requests.request(method, f"{self.session}{path}", json=body, timeout=60).json()["value"]
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"{path}: {reply['error']}: {reply.get('message', '')[:300]}")
        return reply

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        """Type into an input; for <input type=file>, ``text`` is the path of the file to choose."""
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def js(self, script: str, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float, *args):
        """Poll ``script`` until it returns something truthy; its last value on timeout (for the assertion)."""
        deadline = time.time() + timeout
        while True:
            value = self.js(script, *args)
            if value or time.time() > deadline:
                return value
            time.sleep(0.25)

    def screenshot(self, path: str | Path) -> None:
        Path(path).write_bytes(base64.b64decode(self.command("GET", "/screenshot")))

    def close(self) -> None:
        try:
            requests.delete(self.session, timeout=10)
        except requests.RequestException:
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
