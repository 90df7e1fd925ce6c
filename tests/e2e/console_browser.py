"""A real node process and a real browser for the console's tests.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$PLATYBUS_CHROMIUM``)
driven by Playwright; Playwright's own browser download is never used. When no
browser can be had, the tests skip and say why, loudly.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

PLATYBUS = [sys.executable, "-m", "platybus"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
_HTTP_LINE = re.compile(r"http API on http://127\.0\.0\.1:(\d+)/")


def chromium_path() -> str:
    """The system Chromium, or skip with the reason."""
    for candidate in (os.environ.get("PLATYBUS_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("BROWSER TESTS SKIPPED: no Chromium at /usr/bin/chromium (apt-get install "
                "chromium, or set PLATYBUS_CHROMIUM); the console was not tested in a browser")


def launch_browser() -> tuple[Any, Any]:
    """Start Playwright and the system Chromium; return both (stop them in reverse)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("BROWSER TESTS SKIPPED: playwright is not installed (pip install -e '.[dev]')")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    except Exception as error:
        playwright.stop()
        pytest.skip(f"BROWSER TESTS SKIPPED: Chromium at {executable} does not start: {error}")
    return playwright, browser


class NodeProcess:
    """``platybus run`` in its own process, its log in a file, its HTTP port read from it."""

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        self.directory = directory
        self.config_path = directory / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = directory / "node.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The node's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until it says it is ready."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLATYBUS_")}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([*PLATYBUS, "run", "-c", str(self.config_path)],
                                            cwd=self.directory, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")
            if " ready in " in text:
                found = _HTTP_LINE.search(text)
                assert found, text
                self.port = int(found.group(1))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("node never became ready:\n" + text)
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL) and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
