"""Headless Chromium for the browser tests, and a real `concord serve` for it to talk to.

Debian's chromium at /usr/bin/chromium, driven by Playwright through `executable_path`:
Playwright never downloads a browser here (no `playwright install`). Where chromium is
missing the tests skip on a laptop and fail under CI (`scripts/install-chromium` installs
it; `.ci/run` calls that). Every context blocks, and records, requests to any host but this
machine, and the browser cannot resolve other hosts at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.services import free_port, unavailable

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"  # screenshots; ignored by git
CONCORD = Path(sys.executable).with_name("concord")


class ConcordServer:
    """`concord serve` on one port and the embedded database in data_dir; can be restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CONCORD_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": "",
            "REDIS_URL": "",
        }
        self.process = subprocess.Popen(
            [str(CONCORD), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            cwd=self.data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, "concord serve exited"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "concord serve did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.process = None


@contextmanager
def concord_server(data_dir: Path) -> Iterator[ConcordServer]:
    """A started ConcordServer, stopped (by its pid) at the end."""
    server = ConcordServer(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium under Playwright, unable to resolve any other host."""
    if not CHROMIUM.exists():
        unavailable(f"Debian's chromium is not installed at {CHROMIUM} (scripts/install-chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            yield browser
        finally:
            browser.close()


def local_page(browser: Any, elsewhere: list[str], errors: list[str]) -> Any:
    """A page in a new context (its own storage) whose non-local requests are blocked and
    recorded in `elsewhere`; uncaught page errors are recorded in `errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname != "127.0.0.1":
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page
